package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// guest is a VM guest's NIC on a VM network of the cluster: a network
// namespace with a veth carrying the NIC's MAC, plugged into the network's
// bridge (in the cluster's namespace) as an untagged port of its VLAN, where
// the real udhcpc asks for an address.
type guest struct {
	netns, hostEnd string
	dir            string
}

const udhcpcHook = `#!/bin/sh
case "$1" in
bound|renew)
  env | grep -E '^(ip|mask|router|dns|domain|mtu|lease|serverid)=' | sort > "$LEASE_FILE.tmp" && mv "$LEASE_FILE.tmp" "$LEASE_FILE"
  ;;
esac
exit 0
`

func newGuest(t *testing.T, mac, bridge string, vlan int) *guest {
	t.Helper()
	ctx := context.Background()
	g := &guest{netns: fmt.Sprintf("vmdg%d", os.Getpid()), hostEnd: fmt.Sprintf("vmdg%dh", os.Getpid()), dir: t.TempDir()}
	ns := cluster.Netns()
	steps := [][]string{
		{"ip", "netns", "add", g.netns},
		{"ip", "-n", g.netns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "link", "add", g.hostEnd, "type", "veth", "peer", "name", "eth0", "netns", g.netns},
		{"ip", "-n", g.netns, "link", "set", "eth0", "address", mac},
		{"ip", "-n", g.netns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "link", "set", g.hostEnd, "master", bridge},
		{"ip", "-n", ns, "link", "set", g.hostEnd, "up"},
		{"ip", "netns", "exec", ns, "bridge", "vlan", "del", "dev", g.hostEnd, "vid", "1"},
		{"ip", "netns", "exec", ns, "bridge", "vlan", "add", "dev", g.hostEnd, "vid", fmt.Sprint(vlan), "pvid", "untagged"},
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "pids", g.netns).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				_ = exec.Command("kill", "-9", pid).Run()
			}
		}
		_ = exec.Command("ip", "netns", "del", g.netns).Run()
	})
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(g.dir, "hook"), []byte(udhcpcHook), 0o755); err != nil {
		t.Fatal(err)
	}
	return g
}

// dhcp runs udhcpc once in the guest and returns the lease it obtained.
func (g *guest) dhcp(t *testing.T, timeout time.Duration) map[string]string {
	t.Helper()
	leaseFile := filepath.Join(g.dir, "lease")
	_ = os.Remove(leaseFile)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []byte
	var err error
	for ctx.Err() == nil {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", g.netns, "udhcpc", "-i", "eth0", "-f", "-q", "-n",
			"-t", "5", "-T", "1", "-O", "mtu", "-s", filepath.Join(g.dir, "hook"))
		cmd.Env = append(os.Environ(), "LEASE_FILE="+leaseFile)
		out, err = cmd.CombinedOutput()
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("udhcpc got no lease within %s: %v\n%s", timeout, err, out)
	}
	b, err := os.ReadFile(leaseFile)
	if err != nil {
		t.Fatalf("udhcpc succeeded but wrote no lease: %v\n%s", err, out)
	}
	lease := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			lease[k] = v
		}
	}
	return lease
}
