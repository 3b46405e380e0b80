package declinewatch

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/vm-dhcp/vm-dhcp/plugins/linksource"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// CoreDHCP's server6 drops a DHCPv6 DECLINE before any plugin sees it (it
// builds replies only for SOLICIT, REQUEST, CONFIRM, RENEW, REBIND,
// RELEASE and INFORMATION-REQUEST). A client whose address is in use by
// another host (duplicate address detection failed) then retransmits the
// DECLINE (RFC 8415 18.2.8: up to DEC_MAX_RC = 4 times) and nothing in the
// agent's log or metrics shows the conflict. Watcher6 answers it beside
// the server: a packet socket receives a copy of every UDP datagram to port
// 547 on the served interfaces, and each DECLINE addressed to this server
// is logged, counted and answered with a REPLY carrying Status Success
// (RFC 8415 18.3.8), sent from port 547 through a raw socket so that the
// server's own socket is left alone. The same socket records the source
// of every directly received message whose DUID names no MAC (Sources):
// the link-layer address that ippool-lease matches such a client by.

// declineFilter6 keeps IPv6 UDP datagrams to port 547 whose UDP header
// follows the fixed IPv6 header (DHCPv6 clients and relays send no
// extension headers). The socket is SOCK_DGRAM: offset 0 is the IPv6 header.
var declineFilter6 = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 6, Size: 1}, // next header
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 3},
	bpf.LoadAbsolute{Off: 40 + 2, Size: 2}, // UDP destination port
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: dhcpv6.DefaultServerPort, SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
}

// Watcher6 observes and answers DHCPv6 DECLINEs on a set of interfaces.
type Watcher6 struct {
	Metrics *poolwatch.Metrics
	Log     logr.Logger
	// ServerID is the DUID of the server6 section (its server_id plugin):
	// a DECLINE naming another server is not ours to answer.
	ServerID dhcpv6.DUID
	// Send transmits a reply datagram from port 547; nil: a raw socket.
	Send func(payload []byte, to netip.AddrPort, ifindex int) error
	// Sources, when set, receives the source (IPv6 address, Ethernet
	// address) of every directly received message whose DUID carries no
	// Ethernet address, for ippool-lease to match the client to its MAC.
	Sources *linksource.Table
}

// ServerIDOf is the DUID a server6 section's server_id plugin configures
// ("LL <mac>" or "LLT <mac>", as CoreDHCP's serverid plugin reads them),
// nil when it has none.
func ServerIDOf(name string, args []string) dhcpv6.DUID {
	if name != "server_id" || len(args) < 2 {
		return nil
	}
	mac, err := net.ParseMAC(args[1])
	if err != nil {
		return nil
	}
	switch strings.ToLower(args[0]) {
	case "ll", "duid-ll", "duid_ll":
		return &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}
	case "llt", "duid-llt", "duid_llt":
		return &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}
	}
	return nil
}

// Start opens one packet socket per interface and reads from them until
// ctx ends. An interface that cannot be watched (no CAP_NET_RAW, no such
// device) is reported; serving goes on without the watch.
func (w *Watcher6) Start(ctx context.Context, ifaces []string) {
	if w.ServerID == nil {
		w.Log.Info("no server_id in the server6 section: DHCPv6 DECLINEs will not be answered, logged nor counted")
	}
	if w.Send == nil {
		fd, err := openReplySocket6()
		if err != nil {
			w.Log.Error(err, "DHCPv6 DECLINEs will be logged and counted but not answered")
			w.Send = func([]byte, netip.AddrPort, int) error { return err }
		} else {
			go func() { <-ctx.Done(); unix.Close(fd) }()
			w.Send = func(payload []byte, to netip.AddrPort, ifindex int) error {
				return sendUDP6(fd, payload, to, ifindex)
			}
		}
	}
	for _, name := range ifaces {
		fd, err := openPacketSocket(name, unix.ETH_P_IPV6, declineFilter6)
		if err != nil {
			w.Log.Error(err, "DHCPv6 DECLINEs will not be answered, logged nor counted", "interface", name)
			continue
		}
		go func() { <-ctx.Done(); unix.Close(fd) }()
		go readPackets(ctx, fd, func(b []byte, ll *unix.SockaddrLinklayer) {
			var mac net.HardwareAddr
			if ll.Halen == 6 {
				mac = net.HardwareAddr(append([]byte(nil), ll.Addr[:6]...))
			}
			w.Packet(b, name, ll.Ifindex, mac)
		})
		if w.Sources != nil {
			w.Sources.SetActive()
		}
	}
}

// Packet handles one IPv6 datagram (from its IP header on) that passed the
// filter, received on ifindex from the link-layer address src.
func (w *Watcher6) Packet(ip []byte, iface string, ifindex int, src net.HardwareAddr) {
	// IPv6 header, UDP header, and at least a DHCPv6 message header.
	if len(ip) < 48+4 || ip[0]>>4 != 6 || ip[6] != unix.IPPROTO_UDP ||
		uint16(ip[42])<<8|uint16(ip[43]) != dhcpv6.DefaultServerPort {
		return
	}
	from, _ := netip.AddrFromSlice(ip[8:24])
	payload := ip[48:]
	t := dhcpv6.MessageType(payload[0])
	if w.Sources != nil && len(src) == 6 && t != dhcpv6.MessageTypeRelayForward && t != dhcpv6.MessageTypeRelayReply {
		if duid, ok := rawClientID(payload[4:]); ok && !carriesEthernetMAC(duid) {
			w.Sources.Record([3]byte(payload[1:4]), duid, linksource.Source{Addr: from, MAC: src})
		}
	}
	// Cheap test before parsing: only DECLINEs, direct or relayed.
	if t != dhcpv6.MessageTypeDecline && t != dhcpv6.MessageTypeRelayForward {
		return
	}
	d, err := dhcpv6.FromBytes(payload)
	if err != nil {
		return
	}
	msg, err := d.GetInnerMessage()
	if err != nil || msg.Type() != dhcpv6.MessageTypeDecline {
		return
	}
	reply := w.Reply(msg)
	if reply == nil {
		return
	}
	w.logDecline(msg, iface, from, src, d.IsRelay())
	// To the datagram's source port, as CoreDHCP's server6 answers: 546
	// from a client, 547 from a relay, or the relay's own (RFC 8357).
	out := dhcpv6.DHCPv6(reply)
	to := netip.AddrPortFrom(from, uint16(ip[40])<<8|uint16(ip[41]))
	if d.IsRelay() {
		// To the relay agent that sent it, re-wrapped (RFC 8415 18.3.10).
		rr, err := dhcpv6.NewRelayReplFromRelayForw(d.(*dhcpv6.RelayMessage), reply)
		if err != nil {
			return
		}
		out = rr
	}
	if err := w.Send(out.ToBytes(), to, ifindex); err != nil {
		w.Log.Error(err, "answer DHCPv6 DECLINE", "to", to.String(), "interface", iface)
	}
}

// rawClientID finds the Client Identifier (option 1) among a message's
// options still in wire form, without parsing the rest.
func rawClientID(opts []byte) ([]byte, bool) {
	for len(opts) >= 4 {
		code := uint16(opts[0])<<8 | uint16(opts[1])
		n := int(opts[2])<<8 | int(opts[3])
		if len(opts) < 4+n {
			return nil, false
		}
		if code == uint16(dhcpv6.OptionClientID) {
			return opts[4 : 4+n], true
		}
		opts = opts[4+n:]
	}
	return nil, false
}

// carriesEthernetMAC says whether a DUID is a DUID-LLT or DUID-LL of an
// Ethernet address: ippool-lease takes the MAC from it and needs no source.
func carriesEthernetMAC(duid []byte) bool {
	if len(duid) < 4 || duid[2] != 0 || duid[3] != byte(iana.HWTypeEthernet) {
		return false
	}
	switch uint16(duid[0])<<8 | uint16(duid[1]) {
	case uint16(dhcpv6.DUID_LLT):
		return len(duid) == 2+2+4+6
	case uint16(dhcpv6.DUID_LL):
		return len(duid) == 2+2+6
	}
	return false
}

// Reply is the REPLY to a DECLINE addressed to this server (RFC 8415
// 18.3.8: Status Success, the server's and the client's DUIDs, the same
// transaction ID), or nil for one that must be discarded (16.7: no Client
// Identifier, no Server Identifier, or another server's).
func (w *Watcher6) Reply(msg *dhcpv6.Message) *dhcpv6.Message {
	cid, sid := msg.Options.ClientID(), msg.Options.ServerID()
	if cid == nil || sid == nil || w.ServerID == nil || !sid.Equal(w.ServerID) {
		return nil
	}
	reply := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply, TransactionID: msg.TransactionID}
	reply.AddOption(dhcpv6.OptClientID(cid))
	reply.AddOption(dhcpv6.OptServerID(w.ServerID))
	reply.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess,
		StatusMessage: "declined address noted; the address stays allocated to this client's MAC: find the other host"})
	return reply
}

// logDecline logs and counts one DECLINE.
func (w *Watcher6) logDecline(msg *dhcpv6.Message, iface string, from netip.Addr, src net.HardwareAddr, relayed bool) {
	w.Metrics.Declines.Inc()
	var addrs []string
	for _, ia := range msg.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			addrs = append(addrs, a.IPv6Addr.String())
		}
	}
	kv := []any{"addresses", strings.Join(addrs, ","), "duid", msg.Options.ClientID().String(), "from", from.String()}
	if src != nil && !relayed {
		kv = append(kv, "mac", src.String())
	}
	if iface != "" {
		kv = append(kv, "interface", iface)
	}
	if relayed {
		kv = append(kv, "relayed", true)
	}
	w.Log.Info("DHCPv6 DECLINE: the client found its address in use by another host; find that host, or exclude the address from the pool", kv...)
}

// openReplySocket6 is a raw IPv6 socket for UDP that sends datagrams with
// a UDP header of our own (source port 547, which CoreDHCP's socket holds)
// and lets the kernel fill in the checksum. It receives nothing: a filter
// drops every incoming datagram.
func openReplySocket6() (int, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("raw IPv6 UDP socket for DECLINE replies: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM, 6); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("raw IPv6 UDP socket: IPV6_CHECKSUM: %w", err)
	}
	if err := attachFilter(fd, []bpf.Instruction{bpf.RetConstant{Val: 0}}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func sendUDP6(fd int, payload []byte, to netip.AddrPort, ifindex int) error {
	b := make([]byte, 8+len(payload))
	port := dhcpv6.DefaultServerPort
	b[0], b[1] = byte(port>>8), byte(port)
	b[2], b[3] = byte(to.Port()>>8), byte(to.Port())
	b[4], b[5] = byte(len(b)>>8), byte(len(b))
	copy(b[8:], payload)
	sa := &unix.SockaddrInet6{Addr: to.Addr().As16(), ZoneId: uint32(ifindex)}
	if err := unix.Sendto(fd, b, 0, sa); err != nil {
		return fmt.Errorf("send to %s: %w", to, err)
	}
	return nil
}
