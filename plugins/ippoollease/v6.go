package ippoollease

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/coredhcp/coredhcp/handler"
	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/vm-dhcp/vm-dhcp/plugins/linksource"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

func setup6(args ...string) (handler.Handler6, error) {
	return Setup6(poolwatch.Default, args...)
}

// Setup6 is Setup for DHCPv6: the same arguments and the same shared watch,
// serving status.ipv6.allocated as IA_NA addresses.
func Setup6(reg *poolwatch.Registry, args ...string) (handler.Handler6, error) {
	a, err := poolwatch.ParseArgs(Name, args, "snapshot", "kubeconfig")
	if err != nil {
		return nil, err
	}
	w, err := reg.Watch(a.Namespace, a.Name, a.Options["kubeconfig"])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if path := a.Options["snapshot"]; path != "" {
		if err := w.UseSnapshot(path); err != nil {
			return nil, fmt.Errorf("%s: %w", Name, err)
		}
	}
	l := &Leaser6{Pool: w.Current, Neighbors: NeighborMAC, Sources: reg.Sources6, Log: reg.Logger().WithName(Name).WithValues("pool", w.Key(), "family", 6)}
	return l.Handle, nil
}

// Leaser6 answers DHCPv6 for one pool. Like Leaser it has no mutable state.
type Leaser6 struct {
	Pool func() *poolwatch.Pool
	// Neighbors looks a link-local address up in the agent's neighbor
	// table; nil means no table.
	Neighbors func(netip.Addr) (net.HardwareAddr, bool)
	// Sources tells where a directly received message came from; nil
	// means unknown (then only relayed messages have a source).
	Sources *linksource.Table
	Log     logr.Logger
}

// SourceWait bounds how long a message waits for the packet socket's
// record of its source (the two see the same datagram at about the same
// time). Only messages whose DUID carries no MAC ever wait.
const SourceWait = 50 * time.Millisecond

// How a client's MAC was found, for logs and tests.
const (
	ByRelayOption79 = "relay option 79"
	ByDUID          = "DUID-LL/LLT"
	ByLinkSource    = "link-layer source"
	ByNeighbor      = "neighbor table"
	ByEUI64         = "modified EUI-64"
)

// ClientMAC finds the MAC of the client of req (the message as received,
// possibly relayed), in order: the client link-layer address option of the
// first-hop relay (RFC 6939), a DUID-LL or DUID-LLT with an Ethernet
// address, the neighbor entry of the client's link-local address, and a
// modified EUI-64 link-local address. For a relayed message the client's
// link-local address is the relay's peer-address. For a message received
// directly, CoreDHCP hands plugins no source, so the agent's packet socket
// records it (Sources): the Ethernet source address of the frame that
// carried the message (what a neighbor entry would say, known even before
// the kernel has one) comes in the neighbor table's place.
func (l *Leaser6) ClientMAC(req dhcpv6.DHCPv6, msg *dhcpv6.Message) (net.HardwareAddr, string) {
	var firstHop *dhcpv6.RelayMessage
	for d := req; d != nil && d.IsRelay(); {
		r, ok := d.(*dhcpv6.RelayMessage)
		if !ok {
			break
		}
		firstHop = r
		d = r.Options.RelayMessage()
	}
	if firstHop != nil {
		if ht, hw := firstHop.Options.ClientLinkLayerAddress(); ht == iana.HWTypeEthernet && len(hw) == 6 {
			return hw, ByRelayOption79
		}
	}
	switch d := msg.Options.ClientID().(type) {
	case *dhcpv6.DUIDLL:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return d.LinkLayerAddr, ByDUID
		}
	case *dhcpv6.DUIDLLT:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return d.LinkLayerAddr, ByDUID
		}
	}
	if firstHop == nil {
		// Received directly: the packet socket records only Ethernet
		// sources, so the frame's MAC is all there is to look at.
		if src, ok := l.source(msg); ok && len(src.MAC) == 6 {
			return src.MAC, ByLinkSource
		}
		return nil, ""
	}
	peer, _ := netip.AddrFromSlice(firstHop.PeerAddr)
	if !peer.Is6() || !peer.IsLinkLocalUnicast() {
		return nil, ""
	}
	if l.Neighbors != nil {
		if hw, ok := l.Neighbors(peer); ok && len(hw) == 6 {
			return hw, ByNeighbor
		}
	}
	if hw, ok := EUI64MAC(peer); ok {
		return hw, ByEUI64
	}
	return nil, ""
}

// source is where the directly received msg came from, as the packet
// socket recorded it.
func (l *Leaser6) source(msg *dhcpv6.Message) (linksource.Source, bool) {
	cid := msg.Options.ClientID()
	if l.Sources == nil || cid == nil {
		return linksource.Source{}, false
	}
	return l.Sources.Lookup(msg.TransactionID, cid.ToBytes(), SourceWait)
}

// clientLog is the logger for one client's message, built only when
// something is logged: WithValues and the MAC's string allocate, which the
// answer to a known client never needs.
func (l *Leaser6) clientLog(msg *dhcpv6.Message, mac net.HardwareAddr, how string) logr.Logger {
	return l.Log.WithValues("type", msg.Type().String(), "mac", mac.String(), "matched", how)
}

// EUI64MAC recovers the MAC of a modified EUI-64 interface identifier
// (RFC 4291 appendix A): xx:xx:xx:ff:fe:xx:xx:xx with the U/L bit flipped.
func EUI64MAC(a netip.Addr) (net.HardwareAddr, bool) {
	b := a.As16()
	if b[11] != 0xff || b[12] != 0xfe {
		return nil, false
	}
	return net.HardwareAddr{b[8] ^ 0x02, b[9], b[10], b[13], b[14], b[15]}, true
}

// Handle is the CoreDHCP handler for DHCPv6. A nil reply means "send nothing".
func (l *Leaser6) Handle(req, resp dhcpv6.DHCPv6) (dhcpv6.DHCPv6, bool) {
	msg, err := req.GetInnerMessage()
	if err != nil {
		return nil, true
	}
	out, ok := resp.(*dhcpv6.Message)
	if !ok {
		return nil, true
	}
	p6, _ := l.Pool().IPv6()
	if !p6.Prefix.IsValid() {
		return nil, true // no IPv6 half: another server may serve this link
	}
	// A message meant for another server is its business (RFC 8415 16).
	if sid := msg.Options.ServerID(); sid != nil {
		if ours := out.Options.ServerID(); ours != nil && !sid.Equal(ours) {
			return nil, true
		}
		if msg.Type() == dhcpv6.MessageTypeSolicit || msg.Type() == dhcpv6.MessageTypeRebind {
			return nil, true // must not carry one (RFC 8415 16.2, 16.7)
		}
	}
	mac, how := l.ClientMAC(req, msg)
	addr, known := p6.Lease(mac)

	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit:
		if !known {
			l.clientLog(msg, mac, how).V(1).Info("no allocation, not answering")
			return nil, true
		}
		l.assign(out, msg, p6, addr, false)
		if out.Type() == dhcpv6.MessageTypeReply {
			out.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
		}
		return out, false

	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew:
		if !known {
			// The client asks us by server ID: say why it gets nothing.
			code := iana.StatusNoAddrsAvail
			if msg.Type() == dhcpv6.MessageTypeRenew {
				code = iana.StatusNoBinding
			}
			l.clientLog(msg, mac, how).Info("no allocation for this client", "status", code.String())
			l.refuseIAs(out, msg, p6, code)
			return out, false
		}
		l.assign(out, msg, p6, addr, true)
		return out, false

	case dhcpv6.MessageTypeRebind:
		if !known {
			// Sent to every server: answer only to make the client drop an
			// address of our prefix (zero lifetimes, RFC 8415 18.3.5).
			if !l.zeroOurs(out, msg, p6) {
				return nil, true
			}
			return out, false
		}
		l.assign(out, msg, p6, addr, true)
		return out, false

	case dhcpv6.MessageTypeConfirm:
		// Success only when every address is this client's; an address
		// off the prefix or owned by nobody/another MAC is NotOnLink, so the
		// client starts over with a Solicit.
		listed := false
		for _, ia := range msg.Options.IANA() {
			for _, a := range ia.Options.Addresses() {
				listed = true
				got, ok := netip.AddrFromSlice(a.IPv6Addr)
				if !ok || !p6.Prefix.Contains(got) || !known || got != addr {
					out.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNotOnLink, StatusMessage: fmt.Sprintf("%s is not this client's address", a.IPv6Addr)})
					return out, false
				}
			}
		}
		if !listed {
			return nil, true // nothing to confirm: no reply (RFC 8415 18.3.3)
		}
		out.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess, StatusMessage: "all addresses on link"})
		return out, false

	case dhcpv6.MessageTypeRelease:
		// Addresses are static: the allocation stays, the client is told Success.
		l.clientLog(msg, mac, how).Info("release", "address", addr)
		out.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess, StatusMessage: "released (the address stays allocated to this VM)"})
		return out, false

	case dhcpv6.MessageTypeInformationRequest:
		if !known {
			return nil, true
		}
		return out, false // options only, added by harvester-options
	}
	return nil, true
}

// assign puts the client's address into the first IA_NA it sent (creating
// one when it sent none in a Solicit), with zero lifetimes for any other
// address the client listed, and NoAddrsAvail in further IA_NAs: a NIC has
// one address per pool.
func (l *Leaser6) assign(out *dhcpv6.Message, msg *dhcpv6.Message, p6 *poolwatch.Pool6, addr netip.Addr, drop bool) {
	pref, valid := p6.PreferredLifetime, p6.ValidLifetime
	ias := msg.Options.IANA()
	if len(ias) == 0 {
		ias = []*dhcpv6.OptIANA{{}}
	}
	for i, ia := range ias {
		reply := &dhcpv6.OptIANA{IaId: ia.IaId}
		if i > 0 {
			reply.Options.Add(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "one address per NIC"})
			out.AddOption(reply)
			continue
		}
		reply.T1, reply.T2 = pref/2, pref*4/5
		reply.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: addr.AsSlice(), PreferredLifetime: pref, ValidLifetime: valid})
		if drop {
			for _, a := range ia.Options.Addresses() {
				if got, ok := netip.AddrFromSlice(a.IPv6Addr); ok && got != addr {
					// No longer this client's: lifetimes 0 make it remove it.
					reply.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.IPv6Addr})
				}
			}
		}
		out.AddOption(reply)
	}
}

// refuseIAs answers each IA_NA of msg with code.
func (l *Leaser6) refuseIAs(out *dhcpv6.Message, msg *dhcpv6.Message, _ *poolwatch.Pool6, code iana.StatusCode) {
	for _, ia := range msg.Options.IANA() {
		reply := &dhcpv6.OptIANA{IaId: ia.IaId}
		reply.Options.Add(&dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: "no address for this client"})
		out.AddOption(reply)
	}
}

// zeroOurs lists, with zero lifetimes, the addresses of our prefix the
// client holds; it reports whether there was any.
func (l *Leaser6) zeroOurs(out *dhcpv6.Message, msg *dhcpv6.Message, p6 *poolwatch.Pool6) bool {
	found := false
	for _, ia := range msg.Options.IANA() {
		reply := &dhcpv6.OptIANA{IaId: ia.IaId}
		for _, a := range ia.Options.Addresses() {
			if got, ok := netip.AddrFromSlice(a.IPv6Addr); ok && p6.Prefix.Contains(got) {
				reply.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: a.IPv6Addr})
				found = true
			}
		}
		if len(reply.Options.Options) > 0 {
			out.AddOption(reply)
		}
	}
	return found
}
