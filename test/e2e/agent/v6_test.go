package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// hook6 records every event of a DHCPv6 client as an env dump and puts a
// bound address on the interface, so that renewals come from it. It never
// touches the host's resolv.conf.
const hook6 = `#!/bin/sh
reason="${reason:-$1}"
env > "$EVENTS/$(date +%s%N)-$reason.env"
case "$reason" in
BOUND6|RENEW6|REBIND6) [ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/128" dev "$interface" nodad ;;
esac
exit 0
`

// lease6 is what a client reported: its address, DNS servers and search list.
type lease6 struct{ Reason, IP, DNS, Search string }

func events6(t *testing.T, dir string) []lease6 {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "events", "*.env"))
	sort.Strings(files)
	var out []lease6
	for _, f := range files {
		env := readEnv(t, f)
		l := lease6{Reason: env["reason"]}
		switch {
		case env["new_ip6_address"] != "": // dhclient
			l.IP, l.DNS = env["new_ip6_address"], env["new_dhcp6_name_servers"]
			l.Search = strings.TrimSuffix(strings.TrimSpace(env["new_dhcp6_domain_search"]), ".")
		case env["new_dhcp6_ia_na1_ia_addr1"] != "": // dhcpcd
			l.IP, l.DNS, l.Search = env["new_dhcp6_ia_na1_ia_addr1"], env["new_dhcp6_name_servers"], env["new_dhcp6_domain_search"]
		default:
			continue
		}
		out = append(out, l)
	}
	return out
}

func v6Pool(name string, alloc4, alloc6 map[string]string) *v1alpha1.IPPool {
	p := poolFor(name, 600, alloc4)
	p.Spec.IPv6Config = &v1alpha1.IPv6Config{CIDR: "fd00:198::/64", ServerIP: "fd00:198::2",
		Pool: v1alpha1.IPv6Pool{Start: "fd00:198::10", End: "fd00:198::ff"},
		DNS:  []v1alpha1.IPv6Address{"fd00:198::53"}, DomainSearch: []string{"example.internal"},
		NTP:               []string{"fd00:198::123"},
		PreferredLifetime: ptr.To(600), ValidLifetime: ptr.To(1200)}
	p.Status.IPv6 = &v1alpha1.IPv6Status{Allocated: alloc6}
	return p
}

// writeAgentConfig6 is writeAgentConfig with a server6 section serving the
// same pool on the link's DHCPv6 multicast group.
func writeAgentConfig6(t *testing.T, l *link, pool, kubeconfig, snapshot string) string {
	t.Helper()
	path := writeAgentConfig(t, l, pool, kubeconfig, snapshot)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b) + fmt.Sprintf(`server6:
  listen:
    - "[ff02::1:2%%%s]:547"
  plugins:
    - server_id: LL 02:00:00:00:aa:01
    - harvester-options: default/%s kubeconfig=%s
    - ippool-lease: default/%s snapshot=%s kubeconfig=%s
    - router-advertisement: default/%s interface=%s kubeconfig=%s
`, l.srvIf, pool, kubeconfig, pool, snapshot, kubeconfig, pool, l.srvIf, kubeconfig)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// noDAD makes the namespaces' link-local addresses usable at once: DHCPv6
// clients and servers wait for them otherwise.
func noDAD(t *testing.T, l *link) {
	t.Helper()
	for _, x := range []struct{ ns, ifc string }{{l.srvNS, l.srvIf}, {l.cliNS, l.cliIf}} {
		run(t, "ip", "netns", "exec", x.ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
			"net.ipv6.conf."+x.ifc+".accept_dad=0")
	}
}

// waitLinkLocal waits until the client's interface has its link-local
// address again (setClientMAC flushes it): dhclient -6 exits at once
// without one.
func waitLinkLocal(t *testing.T, l *link) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := run(t, "ip", "-n", l.cliNS, "-6", "addr", "show", "dev", l.cliIf, "scope", "link")
		if strings.Contains(out, "fe80::") && !strings.Contains(out, "tentative") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no link-local address on %s after 10s:\n%s", l.cliIf, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setClientMAC6 is setClientMAC for an IPv6 client: the kernel must make
// the link-local address again (dhcpcd turns that off while it runs).
func setClientMAC6(t *testing.T, l *link, mac string) {
	t.Helper()
	run(t, "ip", "netns", "exec", l.cliNS, "sysctl", "-qw", "net.ipv6.conf."+l.cliIf+".addr_gen_mode=0")
	l.setClientMAC(t, mac)
	waitLinkLocal(t, l)
}

var dhclient6 = func(t *testing.T, l *link, dir string) error {
	hook := filepath.Join(dir, "hook.sh")
	events := filepath.Join(dir, "events")
	_ = os.MkdirAll(events, 0o755)
	if err := os.WriteFile(hook, []byte(strings.Replace(hook6, "$EVENTS", events, 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// -D LL: a DUID-LL of the NIC's MAC, so no DUID from an earlier run is reused.
	conf := filepath.Join(dir, "dhclient6.conf") // give up after 10 s, not 60: an unknown MAC gets silence
	if err := os.WriteFile(conf, []byte("timeout 10;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runIn(ctx, l.cliNS, "dhclient", "-6", "-1", "-v", "-D", "LL", "-cf", conf, "-sf", hook, "-lf", filepath.Join(dir, "dhclient6.leases"),
		"-pf", filepath.Join(dir, "dhclient.pid"), l.cliIf).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dhclient -6: %w\n%s", err, out)
	}
	return nil
}

// runDHCPcd6 runs dhcpcd -6 once in the client namespace with the given
// dhcpcd.conf, a DUID-LL of the NIC (dhcpcd keeps its DUID on the host) and
// the event hook; it fails when dhcpcd gets no lease within timeout seconds.
func runDHCPcd6(t *testing.T, l *link, dir, config string, timeout int) error {
	hook := filepath.Join(dir, "hook.sh")
	events := filepath.Join(dir, "events")
	_ = os.MkdirAll(events, 0o755)
	if err := os.WriteFile(hook, []byte(strings.Replace(hook6, "$EVENTS", events, 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "dhcpcd.conf")
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	freshDHCPcdDUID(t)
	t.Cleanup(func() {
		_ = os.Remove("/var/lib/dhcpcd/" + l.cliIf + ".lease6")
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeout+15)*time.Second)
	defer cancel()
	cmd := runIn(ctx, l.cliNS, "dhcpcd", "-f", conf, "-6", "-1", "-B", "-t", strconv.Itoa(timeout), "-c", hook, l.cliIf)
	// dhcpcd's privilege-separated helpers inherit its output: do not wait
	// for them once dhcpcd itself is gone, and stop them (only this test's
	// processes live in the client namespace).
	cmd.WaitDelay = 3 * time.Second
	out, err := cmd.CombinedOutput()
	killNetnsPIDs(l.cliNS)
	if err != nil {
		return fmt.Errorf("dhcpcd -6: %w\n%s", err, out)
	}
	return nil
}

// dhcpcd6 starts DHCPv6 for an address at once: there is no router
// advertisement on this link.
var dhcpcd6 = func(t *testing.T, l *link, dir string) error {
	return runDHCPcd6(t, l, dir, "duid ll\nnoipv6rs\nia_na\noption dhcp6_name_servers, dhcp6_domain_search\n", 15)
}

// freshDHCPcdDUID makes dhcpcd derive its DUID from the NIC it runs on:
// dhcpcd keeps one DUID per host in /var/lib/dhcpcd/duid and reuses it
// whatever the MAC, so a file left by any earlier run (even a killed one)
// would make it claim another MAC. A file that was there is put back.
func freshDHCPcdDUID(t *testing.T) {
	const path = "/var/lib/dhcpcd/duid"
	saved, readErr := os.ReadFile(path)
	_ = os.Remove(path)
	t.Cleanup(func() {
		_ = os.Remove(path)
		if readErr == nil {
			_ = os.WriteFile(path, saved, 0o640)
		}
	})
}

// Real DHCPv6 clients in a network namespace get the IPv6 address the pool
// holds for their MAC, with DNS and search list; a client whose address
// moved away is told so on renewal.
func TestDHCPv6Clients(t *testing.T) {
	cp := startControlPlane(t)
	l := newLink(t)
	noDAD(t, l)
	proxyAPIServer(t, l.srvNS, cp.hostPort)
	macs := map[string]string{"dhclient": "02:00:00:00:00:32", "dhcpcd": "02:00:00:00:00:33"}
	ips := map[string]string{"dhclient": "fd00:198::32", "dhcpcd": "fd00:198::33"}
	alloc6 := map[string]string{"fd00:198::2": v1alpha1.AllocatedReserved}
	for c, ip := range ips {
		alloc6[ip] = macs[c]
	}
	pool := v6Pool("v6clients", map[string]string{"198.18.0.2": v1alpha1.AllocatedReserved}, alloc6)
	cp.createPool(t, pool)
	a := startAgent(t, l, writeAgentConfig6(t, l, "v6clients", cp.kubeconfig, filepath.Join(t.TempDir(), "snapshot.json")))
	a.waitReady(t)

	for _, c := range []struct {
		name  string
		start func(*testing.T, *link, string) error
	}{{"dhclient", dhclient6}, {"dhcpcd", dhcpcd6}} {
		t.Run(c.name, func(t *testing.T) {
			setClientMAC6(t, l, macs[c.name])
			dir := t.TempDir()
			defer stopDHClient(dir)
			if err := c.start(t, l, dir); err != nil {
				t.Fatal(err)
			}
			evs := events6(t, dir)
			if len(evs) == 0 {
				t.Fatalf("%s reported no IPv6 lease", c.name)
			}
			got := evs[len(evs)-1]
			if got.IP != ips[c.name] || got.DNS != "fd00:198::53" || got.Search != "example.internal" {
				t.Fatalf("%s got %+v; want %s with DNS fd00:198::53 and search example.internal", c.name, got, ips[c.name])
			}
		})
	}

	t.Run("unknown MAC gets nothing", func(t *testing.T) {
		setClientMAC6(t, l, "02:00:00:00:00:99")
		dir := t.TempDir()
		defer stopDHClient(dir)
		if err := dhclient6(t, l, dir); err == nil {
			t.Fatalf("dhclient -6 got a lease for an unknown MAC: %+v", events6(t, dir))
		}
	})

	// The address moves to another MAC: the client renewing it is told to
	// drop it (lifetime 0) and gets none of someone else's.
	t.Run("a client whose address moved gets the new one", func(t *testing.T) {
		setClientMAC6(t, l, macs["dhclient"])
		dir := t.TempDir()
		defer stopDHClient(dir)
		if err := dhclient6(t, l, dir); err != nil {
			t.Fatal(err)
		}
		var cur v1alpha1.IPPool
		if err := cp.c.Get(context.Background(), client.ObjectKeyFromObject(pool), &cur); err != nil {
			t.Fatal(err)
		}
		delete(cur.Status.IPv6.Allocated, ips["dhclient"])
		cur.Status.IPv6.Allocated["fd00:198::40"] = macs["dhclient"]
		if err := cp.c.Status().Update(context.Background(), &cur); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the agent's watch delivers the change
		stopDHClient(dir)
		// A fresh dhclient with the old lease file sends a REQUEST/CONFIRM
		// for the old address first; it must end up with the new one.
		if err := dhclient6(t, l, dir); err != nil {
			t.Fatal(err)
		}
		evs := events6(t, dir)
		if got := evs[len(evs)-1]; got.IP != "fd00:198::40" {
			t.Fatalf("after the move dhclient holds %+v, want fd00:198::40", got)
		}
	})
}

// startV6Agent starts a control plane, a link with DAD off, a dual-stack
// pool whose IPv6 half holds ip for mac, and an agent serving it on the
// link; the client end of the link has mac.
func startV6Agent(t *testing.T, pool, mac, ip string) (*controlPlane, *link, *agent, *v1alpha1.IPPool) {
	t.Helper()
	cp := startControlPlane(t)
	l := newLink(t)
	noDAD(t, l)
	proxyAPIServer(t, l.srvNS, cp.hostPort)
	p := v6Pool(pool, map[string]string{"198.18.0.2": v1alpha1.AllocatedReserved},
		map[string]string{"fd00:198::2": v1alpha1.AllocatedReserved, ip: mac})
	cp.createPool(t, p)
	a := startAgent(t, l, writeAgentConfig6(t, l, pool, cp.kubeconfig, filepath.Join(t.TempDir(), "snapshot.json")))
	a.waitReady(t)
	setClientMAC6(t, l, mac)
	return cp, l, a, p
}
