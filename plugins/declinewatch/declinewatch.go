// Package declinewatch makes DHCPDECLINEs visible in the agent's log and
// metrics.
//
// CoreDHCP's server drops a DHCPDECLINE before any plugin sees it (it
// only knows DISCOVER, REQUEST, INFORM and RELEASE), so a VM whose address
// is used by another host loops DISCOVER, OFFER, REQUEST, ACK, DECLINE with
// nothing in the agent's log or metrics. A Watcher sees them beside the
// server: a packet socket receives a copy of every UDP datagram to port 67
// on the served interfaces (a kernel filter keeps the rest out), and the
// DECLINEs among them are logged and counted. It never answers (RFC 2131
// 4.3.3: a DECLINE gets no reply) and never takes a packet from the server.
package declinewatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/vm-dhcp/vm-dhcp/plugins/internal/wire"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// declineFilter keeps IPv4 UDP datagrams to port 67 that are not later
// fragments. The socket is SOCK_DGRAM, so offset 0 is the IPv4 header.
var declineFilter = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 9, Size: 1}, // protocol
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 6},
	bpf.LoadAbsolute{Off: 6, Size: 2},                           // flags and fragment offset
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 4}, // a later fragment has no UDP header
	bpf.LoadMemShift{Off: 0},                                    // X = IPv4 header length
	bpf.LoadIndirect{Off: 2, Size: 2},                           // UDP destination port
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: dhcpv4.ServerPort, SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
}

// Watcher observes DHCPDECLINEs on a set of interfaces.
type Watcher struct {
	Metrics *poolwatch.Metrics
	Log     logr.Logger
}

// InterfacesOf are the interfaces CoreDHCP's DHCPv4 listeners are bound to;
// "" (every interface) when one of them is not bound to a device.
func InterfacesOf(addrs []net.UDPAddr) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range addrs {
		if a.Zone == "" {
			return []string{""}
		}
		if !seen[a.Zone] {
			seen[a.Zone] = true
			out = append(out, a.Zone)
		}
	}
	return out
}

// Start opens one packet socket per interface and reads from them until
// ctx ends. An interface that cannot be watched (no CAP_NET_RAW, no such
// device) is reported; serving goes on without the watch.
func (d *Watcher) Start(ctx context.Context, ifaces []string) {
	for _, name := range ifaces {
		fd, err := openPacketSocket(name, unix.ETH_P_IP, declineFilter)
		if err != nil {
			d.Log.Error(err, "DHCPDECLINEs will not be logged nor counted", "interface", name)
			continue
		}
		go func() { <-ctx.Done(); unix.Close(fd) }()
		go readPackets(ctx, fd, func(b []byte, _ *unix.SockaddrLinklayer) { d.Packet(b, name) })
	}
}

// openPacketSocket opens a packet socket on iface ("" for every
// interface) for one Ethernet protocol whose datagrams pass filter.
func openPacketSocket(iface string, ethProto uint16, filter []bpf.Instruction) (int, error) {
	ifindex := 0
	if iface != "" {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return -1, fmt.Errorf("watch DHCP declines on %s: %w", iface, err)
		}
		ifindex = ifi.Index
	}
	proto := htons(ethProto)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return -1, fmt.Errorf("watch DHCP declines on %q: packet socket: %w", iface, err)
	}
	// The filter goes on before the bind, so nothing else is queued.
	if err := attachFilter(fd, filter); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("watch DHCP declines on %q: %w", iface, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("watch DHCP declines on %q: bind: %w", iface, err)
	}
	return fd, nil
}

// attachFilter attaches a classic BPF program to a socket.
func attachFilter(fd int, prog []bpf.Instruction) error {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("assemble socket filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
		return fmt.Errorf("attach socket filter: %w", err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// readPackets hands every datagram the packet socket fd receives to handle
// until ctx ends (Start then closes fd). An error before that (ENETDOWN
// when the interface goes down: the socket works again once it is back up)
// is waited out, not taken for the end: the watch must outlive a link flap.
// Frames the host sent, or that were addressed to another host (seen in
// promiscuous mode), are not the server's and are skipped.
func readPackets(ctx context.Context, fd int, handle func(b []byte, from *unix.SockaddrLinklayer)) {
	buf := make([]byte, 1<<16)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, unix.EBADF) {
				return
			}
			if !errors.Is(err, unix.EINTR) {
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING || ll.Pkttype == unix.PACKET_OTHERHOST {
			continue
		}
		handle(buf[:n], ll)
	}
}

// Packet handles one IPv4 datagram (from its IP header on) that passed the
// filter.
func (d *Watcher) Packet(ip []byte, iface string) {
	if len(ip) < 20 {
		return
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || len(ip) < ihl+8 || binary.BigEndian.Uint16(ip[ihl+2:]) != dhcpv4.ServerPort {
		return
	}
	payload := ip[ihl+8:]
	if wire.RawMessageType(payload) != dhcpv4.MessageTypeDecline {
		return
	}
	msg, err := dhcpv4.FromBytes(payload)
	if err != nil || msg.OpCode != dhcpv4.OpcodeBootRequest {
		return
	}
	d.decline(msg, iface)
}

// decline logs and counts one DHCPDECLINE.
func (d *Watcher) decline(msg *dhcpv4.DHCPv4, iface string) {
	d.Metrics.Request(dhcpv4.MessageTypeDecline)
	d.Metrics.Declines.Inc()
	addr, _ := wire.IPv4(msg.Options, dhcpv4.OptionRequestedIPAddress)
	kv := []any{"mac", msg.ClientHWAddr.String(), "address", addrString(addr)}
	if sid, ok := wire.IPv4(msg.Options, dhcpv4.OptionServerIdentifier); ok {
		kv = append(kv, "serverID", sid.String())
	}
	if m := msg.Message(); m != "" {
		kv = append(kv, "message", m)
	}
	if iface != "" {
		kv = append(kv, "interface", iface)
	}
	if !msg.GatewayIPAddr.IsUnspecified() {
		kv = append(kv, "relay", msg.GatewayIPAddr.String())
	}
	d.Log.Info("DHCPDECLINE: the client found its address in use by another host; find that host, or exclude the address from the pool", kv...)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "(none given)"
	}
	return a.String()
}
