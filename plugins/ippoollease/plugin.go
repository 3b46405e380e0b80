// Package ippoollease is the CoreDHCP plugin `ippool-lease`: it answers with
// the static address status.ipv4.allocated of one IPPool gives a MAC, and
// says nothing to MACs it does not know.
//
//	ippool-lease: <namespace>/<name> [snapshot=<path>] [kubeconfig=<path>]
package ippoollease

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/coredhcp/coredhcp/handler"
	"github.com/coredhcp/coredhcp/plugins"
	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/vm-dhcp/vm-dhcp/plugins/internal/wire"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// Name is the plugin's name in a CoreDHCP config.
const Name = "ippool-lease"

// Plugin registers ippool-lease with CoreDHCP.
var Plugin = plugins.Plugin{Name: Name, Setup4: setup4, Setup6: setup6}

func setup4(args ...string) (handler.Handler4, error) {
	return Setup(poolwatch.Default, args...)
}

// Setup parses the plugin's arguments, joins (or starts) the pool's watch in
// reg and returns the handler. Exposed for tests that use their own Registry.
func Setup(reg *poolwatch.Registry, args ...string) (handler.Handler4, error) {
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
	l := &Leaser{Pool: w.Current, Metrics: reg.Metrics, Log: reg.Logger().WithName(Name).WithValues("pool", w.Key())}
	return l.Handle, nil
}

// Leaser holds one plugin instance's state. It has no mutable fields: the
// pool comes from Pool, an atomic load of an immutable view.
type Leaser struct {
	Pool    func() *poolwatch.Pool
	Metrics *poolwatch.Metrics
	Log     logr.Logger
}

// Handle is the CoreDHCP handler. A nil reply means "send nothing".
func (l *Leaser) Handle(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	start := time.Now()
	out, stop := l.handle(req, resp)
	l.Metrics.HandleSeconds.Observe(time.Since(start).Seconds())
	if out != nil {
		l.Metrics.Reply(wire.MessageType(out.Options))
	}
	return out, stop
}

func (l *Leaser) handle(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	mt := wire.MessageType(req.Options)
	l.Metrics.Request(mt)
	p := l.Pool()
	if p == nil {
		// CoreDHCP's own line for this drop says only "response is nil":
		// say why, at a level shown by default.
		l.Log.Info("not answering: no view of the pool yet (the API server has not answered and there is no snapshot); see the pool watch errors",
			"mac", req.ClientHWAddr.String(), "type", mt.String())
		return nil, true
	}
	addr, known := p.Lease(req.ClientHWAddr)
	if mt == dhcpv4.MessageTypeRequest {
		// Before the unknown-MAC check: a client whose address was freed
		// or given to another MAC must be told (RFC 2131 4.3.2).
		return l.request(req, resp, p, addr, known)
	}
	if !known {
		l.unknown(req, mt)
		return nil, true
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		resp.YourIPAddr = addr.AsSlice()
		return l.fit(req, resp, p), false

	case dhcpv4.MessageTypeInform:
		// Options only: the client has its address; no lease is given.
		resp.YourIPAddr = net.IPv4zero
		resp.Options.Del(dhcpv4.OptionIPAddressLeaseTime)
		resp.Options.Del(dhcpv4.OptionRenewTimeValue)
		resp.Options.Del(dhcpv4.OptionRebindingTimeValue)
		return l.fit(req, resp, p), false

	case dhcpv4.MessageTypeRelease:
		// Addresses are static: the allocation stays, nothing is sent.
		l.Log.Info("release", "mac", req.ClientHWAddr.String(), "address", req.ClientIPAddr.String())
		return nil, true

	default:
		return nil, true
	}
}

// unknown counts and reports a message from a MAC with no allocation.
// Unlike CoreDHCP's file plugin (which answers 0.0.0.0), the agent stays
// silent: another server on the segment may own this client.
func (l *Leaser) unknown(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) {
	l.Metrics.UnknownMAC.Inc()
	l.Log.Info("not answering: MAC has no allocation in this pool", "mac", req.ClientHWAddr.String(), "type", mt.String())
}

// request answers a DHCPREQUEST (RFC 2131 4.3.2). The pool's subnet is
// this agent's alone (one pool serves a network), so any REQUEST for an
// address of it that the MAC does not own is NAKed, whatever the state
// the client is in and whether or not the MAC is known: the old holder of
// a freed or reassigned address learns it at its next renewal instead of
// using the address until its lease ends. Outside the subnet the agent
// speaks only to MACs it knows (a known VM on the wrong network must start
// over); an unknown client there may be another server's.
func (l *Leaser) request(req, resp *dhcpv4.DHCPv4, p *poolwatch.Pool, addr netip.Addr, known bool) (*dhcpv4.DHCPv4, bool) {
	mac := req.ClientHWAddr.String()
	// SELECTING with another server's identifier: that server's business.
	if sid, ok := wire.IPv4(req.Options, dhcpv4.OptionServerIdentifier); ok && !sid.IsUnspecified() && sid != ourServerID(resp, p) {
		if !known {
			l.unknown(req, dhcpv4.MessageTypeRequest)
		}
		return nil, true
	}
	// Option 50 in SELECTING and INIT-REBOOT, ciaddr in RENEWING and
	// REBINDING.
	want, ok := wire.IPv4(req.Options, dhcpv4.OptionRequestedIPAddress)
	if !ok || want.IsUnspecified() {
		want, ok = netip.AddrFromSlice(req.ClientIPAddr.To4())
	}
	if !ok || !want.IsValid() || want.IsUnspecified() {
		if !known {
			l.unknown(req, dhcpv4.MessageTypeRequest)
		}
		return nil, true // malformed: no address asked for
	}
	inSubnet := p.Subnet.IsValid() && p.Subnet.Contains(want)
	switch {
	case known && want == addr:
		resp.YourIPAddr = addr.AsSlice()
		return l.fit(req, resp, p), false
	case known:
		// Inside the subnet: another MAC's or nobody's address. Outside:
		// the VM is on this network with an address of another.
		l.Metrics.NAKs.Inc()
		l.Log.Info("NAK: address is not this MAC's", "mac", mac, "requested", want, "allocated", addr)
		return nak(req, resp, fmt.Sprintf("%s is not the address of %s", want, req.ClientHWAddr)), true
	case inSubnet:
		l.Metrics.NAKs.Inc()
		l.Log.Info("NAK: MAC has no allocation in this pool", "mac", mac, "requested", want)
		return nak(req, resp, fmt.Sprintf("%s has no address in %s", req.ClientHWAddr, p.Subnet)), true
	default:
		l.unknown(req, dhcpv4.MessageTypeRequest)
		return nil, true
	}
}

// fit bounds the reply to what the client accepts (see wire.Fit).
func (l *Leaser) fit(req, resp *dhcpv4.DHCPv4, p *poolwatch.Pool) *dhcpv4.DHCPv4 {
	dropped := wire.Fit(req, resp, wire.MaxReplySize(req, p.MTU))
	for _, code := range dropped {
		l.Metrics.OptionDropped(code)
	}
	if len(dropped) > 0 {
		l.Log.V(1).Info("options dropped to fit the client's maximum message size", "mac", req.ClientHWAddr.String(), "dropped", dropped)
	}
	return resp
}

// ourServerID is the server identifier the reply carries (set by the
// server_id plugin), else the pool's server IP (invalid when neither is set,
// so no identifier matches it).
func ourServerID(resp *dhcpv4.DHCPv4, p *poolwatch.Pool) netip.Addr {
	if sid, ok := wire.IPv4(resp.Options, dhcpv4.OptionServerIdentifier); ok {
		return sid
	}
	return p.ServerIP
}

// nak turns resp into a DHCPNAK: per RFC 2131 table 3 it carries no
// address and no configuration, only the message type, server identifier
// and a message, plus what every reply must echo: the relay agent
// information (RFC 3046 2.2), without which a relay routing by circuit-id
// cannot deliver it, and the client identifier (RFC 6842).
func nak(req, resp *dhcpv4.DHCPv4, msg string) *dhcpv4.DHCPv4 {
	keep := dhcpv4.Options{}
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionServerIdentifier, dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := resp.Options.Get(code); v != nil {
			keep[code.Code()] = v
		} else if v := req.Options.Get(code); v != nil && code != dhcpv4.OptionServerIdentifier {
			keep[code.Code()] = v
		}
	}
	resp.YourIPAddr = net.IPv4zero
	resp.ClientIPAddr = net.IPv4zero
	resp.ServerIPAddr = net.IPv4zero
	resp.ServerHostName = ""
	resp.BootFileName = ""
	resp.Options = keep
	resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeNak))
	resp.UpdateOption(dhcpv4.OptMessage(msg))
	if !req.GatewayIPAddr.IsUnspecified() {
		// RFC 2131 4.3.2: the relay must broadcast a NAK to the client.
		resp.SetBroadcast()
	}
	return resp
}
