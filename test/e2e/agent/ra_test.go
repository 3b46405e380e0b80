package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// dhcpcdAuto runs dhcpcd -6 left to its defaults: it solicits routers and
// starts DHCPv6 only when an advertisement carries the managed flag, as a
// guest does.
func dhcpcdAuto(t *testing.T, l *link, dir string, timeout int) error {
	err := runDHCPcd6(t, l, dir, "duid ll\noption dhcp6_name_servers, dhcp6_domain_search\n", timeout)
	if err != nil {
		t.Log(err)
	}
	return err
}

// Guests start DHCPv6 only when a router advertisement says so. With the
// pool's advertisements off, dhcpcd (defaults) waits for a router and gets
// nothing; turned on in the IPPool, the running agent advertises: the
// client's kernel puts the prefix on-link with the pool's MTU and no default
// route, and dhcpcd asks for and gets the address the pool holds for its MAC.
func TestRouterAdvertisementsStartDHCPv6(t *testing.T) {
	const mac, ip = "02:00:00:00:00:34", "fd00:198::34"
	cp, l, _, pool := startV6Agent(t, "ra", mac, ip)

	t.Run("off: no advertisement, dhcpcd gets nothing", func(t *testing.T) {
		dir := t.TempDir()
		defer stopDHClient(dir)
		if err := dhcpcdAuto(t, l, dir, 8); err == nil || len(events6(t, dir)) > 0 {
			t.Fatalf("dhcpcd got an IPv6 lease without a router advertisement: %+v", events6(t, dir))
		}
		if out := run(t, "ip", "-n", l.cliNS, "-6", "route", "show", "dev", l.cliIf); strings.Contains(out, "fd00:198::/64") {
			t.Fatalf("prefix on-link without an advertisement:\n%s", out)
		}
	})

	var cur v1alpha1.IPPool
	if err := cp.c.Get(context.Background(), client.ObjectKeyFromObject(pool), &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.IPv6Config.RouterAdvertisements = &v1alpha1.RouterAdvertisements{Enabled: true, Interval: ptr.To[int32](30)}
	if err := cp.c.Update(context.Background(), &cur); err != nil {
		t.Fatal(err)
	}

	t.Run("on: the client's kernel takes the prefix on-link, the MTU, no default route", func(t *testing.T) {
		run(t, "ip", "netns", "exec", l.cliNS, "sysctl", "-qw", "net.ipv6.conf."+l.cliIf+".accept_ra=1")
		var routes string
		waitFor(t, 30*time.Second, "the advertised prefix in the client's routes", func() bool {
			routes = run(t, "ip", "-n", l.cliNS, "-6", "route", "show", "dev", l.cliIf)
			// An RA-learned on-link prefix expires with its valid lifetime.
			return strings.Contains(routes, "fd00:198::/64") && strings.Contains(routes, "expires")
		})
		if def := run(t, "ip", "-n", l.cliNS, "-6", "route", "show", "default"); strings.TrimSpace(def) != "" {
			t.Errorf("the agent became a default router:\n%s", def)
		}
		if mtu := strings.TrimSpace(run(t, "ip", "netns", "exec", l.cliNS, "sysctl", "-n", "net.ipv6.conf."+l.cliIf+".mtu")); mtu != "1450" {
			t.Errorf("IPv6 MTU of the client's link %s, want the pool's 1450", mtu)
		}
		if addrs := run(t, "ip", "-n", l.cliNS, "-6", "addr", "show", "dev", l.cliIf, "scope", "global"); strings.Contains(addrs, "fd00:198:") {
			t.Errorf("the client made a SLAAC address from the prefix (autonomous flag must be off):\n%s", addrs)
		}
	})

	t.Run("on: dhcpcd starts DHCPv6 and gets the MAC's address", func(t *testing.T) {
		dir := t.TempDir()
		defer stopDHClient(dir)
		if err := dhcpcdAuto(t, l, dir, 40); err != nil {
			t.Fatal(err)
		}
		evs := events6(t, dir)
		if len(evs) == 0 {
			t.Fatal("dhcpcd reported no IPv6 lease")
		}
		if got := evs[len(evs)-1]; got.IP != ip || got.DNS != "fd00:198::53" {
			t.Fatalf("dhcpcd got %+v; want %s with DNS fd00:198::53", got, ip)
		}
	})
}
