package routeradv

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/mdlayher/ndp"

	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// The advertisement as it goes on the wire (marshalled and parsed back):
// managed + other flags, never a default router, the prefix on-link without
// SLAAC, the pool's lifetimes, the MTU only when an IPv6 link can have it.
func TestAdvertisementOnTheWire(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0xaa, 0x01}
	p := &poolwatch.Pool6{Prefix: netip.MustParsePrefix("fd00:198::/64"),
		PreferredLifetime: 600 * time.Second, ValidLifetime: 1200 * time.Second}
	for _, tc := range []struct {
		mtu     uint16
		wantMTU uint32
	}{{0, 0}, {1279, 0}, {1280, 1280}, {9000, 9000}} {
		b, err := ndp.MarshalMessage(Advertisement(p, tc.mtu, mac))
		if err != nil {
			t.Fatal(err)
		}
		m, err := ndp.ParseMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		ra, ok := m.(*ndp.RouterAdvertisement)
		if !ok {
			t.Fatalf("parsed %T, want a router advertisement", m)
		}
		if !ra.ManagedConfiguration || !ra.OtherConfiguration || ra.RouterLifetime != 0 {
			t.Errorf("flags M=%v O=%v router lifetime %s: want M, O and lifetime 0", ra.ManagedConfiguration, ra.OtherConfiguration, ra.RouterLifetime)
		}
		var gotPrefix *ndp.PrefixInformation
		var gotMTU uint32
		var gotMAC net.HardwareAddr
		for _, o := range ra.Options {
			switch o := o.(type) {
			case *ndp.PrefixInformation:
				gotPrefix = o
			case *ndp.MTU:
				gotMTU = o.MTU
			case *ndp.LinkLayerAddress:
				if o.Direction == ndp.Source {
					gotMAC = o.Addr
				}
			}
		}
		if gotPrefix == nil || gotPrefix.Prefix != p.Prefix.Addr() || gotPrefix.PrefixLength != 64 || !gotPrefix.OnLink ||
			gotPrefix.AutonomousAddressConfiguration || gotPrefix.ValidLifetime != p.ValidLifetime || gotPrefix.PreferredLifetime != p.PreferredLifetime {
			t.Errorf("prefix information %+v: want fd00:198::/64 on-link, no SLAAC, lifetimes 600/1200 s", gotPrefix)
		}
		if gotMTU != tc.wantMTU {
			t.Errorf("pool MTU %d: RA MTU option %d, want %d", tc.mtu, gotMTU, tc.wantMTU)
		}
		if gotMAC.String() != mac.String() {
			t.Errorf("source link-layer address %s, want %s", gotMAC, mac)
		}
	}
}

func TestSetupRefusesMissingInterface(t *testing.T) {
	reg := poolwatch.NewRegistry(testr.New(t))
	defer reg.Stop()
	for _, args := range [][]string{{"default/p"}, {"default/p", "iface=eth1"}, {"p", "interface=eth1"}} {
		if _, err := Setup6(t.Context(), reg, args...); err == nil {
			t.Errorf("Setup6(%q) accepted", args)
		}
	}
}
