// Package dhcptest builds the IPPools and DHCP packets the plugin tests
// share, and runs a packet through a handler chain the way CoreDHCP's
// server does.
package dhcptest

import (
	"net"

	"github.com/coredhcp/coredhcp/handler"
	"github.com/insomniacslk/dhcp/dhcpv4"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Addresses of the example pool.
var (
	ServerIP = net.IPv4(192, 168, 100, 2).To4()
	Router   = net.IPv4(192, 168, 100, 1).To4()
	KnownMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x10}
	KnownIP  = net.IPv4(192, 168, 100, 10).To4()
	OtherMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x11}
	OtherIP  = net.IPv4(192, 168, 100, 11).To4()
	Unknown  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x99}
)

// IPPool is a pool default/example with every option set and two
// allocations (plus an excluded and a reserved address, which must be
// skipped).
func IPPool() *v1alpha1.IPPool {
	domain := "example.internal"
	lease, mtu := 600, 1450
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "example"},
		Spec: v1alpha1.IPPoolSpec{
			NetworkName: "default/net1",
			IPv4Config: v1alpha1.IPv4Config{
				ServerIP:     "192.168.100.2",
				CIDR:         "192.168.100.0/24",
				Pool:         v1alpha1.Pool{Start: "192.168.100.10", End: "192.168.100.200"},
				Router:       "192.168.100.1",
				DNS:          []string{"192.168.100.53", "1.1.1.1"},
				DomainName:   &domain,
				DomainSearch: []string{"example.internal", "corp.example"},
				NTP:          []string{"192.168.100.123", "ntp.example"},
				LeaseTime:    &lease,
				MTU:          &mtu,
				Routes:       []v1alpha1.Route{{Destination: "10.10.0.0/16", Gateway: "192.168.100.254"}},
			},
		},
		Status: v1alpha1.IPPoolStatus{IPv4: &v1alpha1.IPv4Status{Allocated: map[string]string{
			"192.168.100.10": KnownMAC.String(),
			"192.168.100.11": OtherMAC.String(),
			"192.168.100.12": v1alpha1.AllocatedExcluded,
			"192.168.100.2":  v1alpha1.AllocatedReserved,
		}}},
	}
}

// Packet builds a client message of type mt from hw with the modifiers.
func Packet(mt dhcpv4.MessageType, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	all := append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(mt)}, mods...)
	p, err := dhcpv4.New(all...)
	if err != nil {
		panic(err) // only fails when no random transaction ID can be read
	}
	return p
}

// Serve runs req through chain as CoreDHCP's server4 does: it builds the
// typed reply skeleton, stamps the server identifier (the server_id
// plugin's job) and calls each handler until one stops the chain. It
// returns nil when CoreDHCP would send nothing.
func Serve(req *dhcpv4.DHCPv4, chain ...handler.Handler4) *dhcpv4.DHCPv4 {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil
	}
	resp, err := dhcpv4.NewReplyFromRequest(req)
	if err != nil {
		return nil
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
	case dhcpv4.MessageTypeRelease:
	default:
		return nil
	}
	resp.UpdateOption(dhcpv4.OptServerIdentifier(ServerIP))
	for _, h := range chain {
		var stop bool
		resp, stop = h(req, resp)
		if stop {
			break
		}
	}
	return resp
}
