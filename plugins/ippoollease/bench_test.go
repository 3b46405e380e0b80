package ippoollease

import (
	"fmt"
	"net"
	"testing"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/vm-dhcp/vm-dhcp/plugins/harvesteroptions"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/dhcptest"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// BenchmarkChain measures both plugins on one packet, as the agent runs them
// (options, then lease), over a pool of 4,096 allocations.
func BenchmarkChain(b *testing.B) {
	ipp := dhcptest.IPPool()
	ipp.Spec.IPv4Config.CIDR = "10.250.0.0/16"
	ipp.Spec.IPv4Config.NTP = []string{"10.250.0.123"}
	ipp.Status.IPv4.Allocated = map[string]string{}
	macs := make([]net.HardwareAddr, 4096)
	for i := range macs {
		macs[i] = net.HardwareAddr{0x02, 0, 0, 1, byte(i >> 8), byte(i)}
		ipp.Status.IPv4.Allocated[fmt.Sprintf("10.250.%d.%d", 16+i>>8, i&0xff)] = macs[i].String()
	}
	pool, err := poolwatch.FromIPPool(ipp)
	if err != nil || len(pool.Leases) != 4096 {
		b.Fatalf("pool: %v, %d leases", err, len(pool.Leases))
	}
	get := func() *poolwatch.Pool { return pool }
	reg := poolwatch.NewRegistry(logr.Discard())
	l := &Leaser{Pool: get, Metrics: reg.Metrics, Log: logr.Discard()}
	o := harvesteroptions.New(get)
	for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest} {
		reqs := make([]*dhcpv4.DHCPv4, len(macs))
		for i, hw := range macs {
			reqs[i] = dhcptest.Packet(mt, hw, dhcpv4.WithClientIP(pool.Leases[string(hw)].AsSlice()))
		}
		b.Run(mt.String(), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if dhcptest.Serve(reqs[i%len(reqs)], o.Handle, l.Handle) == nil {
						b.Fatal("no reply")
					}
					i++
				}
			})
		})
	}
}
