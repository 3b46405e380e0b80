package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A guest whose DHCPv6 DUID carries no MAC (a DUID-EN, what
// systemd-networkd sends by default), talking to the agent directly with no
// relay, still gets the address the pool holds for its NIC's MAC: the agent
// matches it by the Ethernet source of the frames it sends. A real dhclient
// -6 is given that DUID through its lease file (default-duid).
func TestDHCPv6ClientWithoutMACInDUID(t *testing.T) {
	const mac, ip = "02:00:00:00:00:54", "fd00:198::54"
	_, l, a, _ := startV6Agent(t, "duiden", mac, ip)

	dir := t.TempDir()
	defer stopDHClient(dir)
	events := filepath.Join(dir, "events")
	_ = os.MkdirAll(events, 0o755)
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte(strings.Replace(hook6, "$EVENTS", events, 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	// DUID-EN (type 2), enterprise 43793 (systemd's), an 8-byte identifier.
	duid := []byte{0, 2, 0, 0, 0xab, 0x11, 1, 2, 3, 4, 5, 6, 7, 8}
	var esc strings.Builder
	for _, b := range duid {
		fmt.Fprintf(&esc, "\\%03o", b)
	}
	leases := filepath.Join(dir, "dhclient6.leases")
	if err := os.WriteFile(leases, []byte(fmt.Sprintf("default-duid \"%s\";\n", esc.String())), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "dhclient6.conf")
	if err := os.WriteFile(conf, []byte("timeout 10;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := runIn(ctx, l.cliNS, "dhclient", "-6", "-1", "-v", "-cf", conf, "-sf", hook, "-lf", leases,
		"-pf", filepath.Join(dir, "dhclient.pid"), l.cliIf).CombinedOutput()
	if err != nil {
		t.Fatalf("dhclient -6 with a DUID-EN got no lease: %v\n%s\nagent log:\n%s", err, out, readFile(a.logPath))
	}
	// The client really sent the DUID-EN (not one made from the MAC).
	if b, _ := os.ReadFile(leases); !strings.Contains(string(b), esc.String()) {
		t.Fatalf("dhclient did not keep the DUID-EN; lease file:\n%s", b)
	}
	evs := events6(t, dir)
	if len(evs) == 0 || evs[len(evs)-1].IP != ip {
		t.Fatalf("dhclient with a DUID-EN holds %+v, want %s", evs, ip)
	}

	// The agent's link goes down and up (a flap): its packet socket gets
	// ENETDOWN once and must keep watching, or the next DUID-EN client is
	// never matched again.
	stopDHClient(dir)
	run(t, "ip", "-n", l.srvNS, "link", "set", l.srvIf, "down")
	time.Sleep(time.Second)
	run(t, "ip", "-n", l.srvNS, "link", "set", l.srvIf, "up")
	waitLinkLocal(t, l)
	_ = os.Remove(filepath.Join(dir, "dhclient6.leases"))
	if err := os.WriteFile(leases, []byte(fmt.Sprintf("default-duid \"%s\";\n", esc.String())), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err = runIn(ctx, l.cliNS, "dhclient", "-6", "-1", "-v", "-cf", conf, "-sf", hook, "-lf", leases,
			"-pf", filepath.Join(dir, "dhclient.pid"), l.cliIf).CombinedOutput()
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) { // the server's own socket may need the link back first
			t.Fatalf("after a link flap, dhclient -6 with a DUID-EN got no lease: %v\n%s\nagent log:\n%s", err, out, readFile(a.logPath))
		}
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
