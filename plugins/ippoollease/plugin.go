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
	addr, known := p.Lease(req.ClientHWAddr)
	if !known {
		// Unlike CoreDHCP's file plugin (which answers 0.0.0.0), stay
		// silent: another server on the segment may own this client.
		l.Metrics.UnknownMAC.Inc()
		l.Log.V(1).Info("no allocation, not answering", "mac", req.ClientHWAddr.String(), "type", mt.String())
		return nil, true
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		resp.YourIPAddr = addr.AsSlice()
		return resp, false

	case dhcpv4.MessageTypeRequest:
		// A REQUEST naming another server (SELECTING state) is that
		// server's business.
		if sid, ok := wire.IPv4(req.Options, dhcpv4.OptionServerIdentifier); ok && !sid.IsUnspecified() && sid != ourServerID(resp, p) {
			return nil, true
		}
		wantAddr, ok := wire.IPv4(req.Options, dhcpv4.OptionRequestedIPAddress)
		if !ok || wantAddr.IsUnspecified() {
			wantAddr, ok = netip.AddrFromSlice(req.ClientIPAddr.To4())
		}
		switch {
		case !ok || !wantAddr.IsValid() || wantAddr.IsUnspecified():
			return nil, true
		case wantAddr == addr:
			resp.YourIPAddr = addr.AsSlice()
			return resp, false
		case p.Subnet.Contains(wantAddr):
			// The client holds an address of our subnet that is not its
			// own (e.g. the VM moved pools): make it start over.
			l.Metrics.NAKs.Inc()
			l.Log.Info("NAK: address is not this MAC's", "mac", req.ClientHWAddr.String(), "requested", wantAddr, "allocated", addr)
			return nak(req, resp, fmt.Sprintf("%s is not the address of %s", wantAddr, req.ClientHWAddr)), true
		default:
			return nil, true
		}

	case dhcpv4.MessageTypeInform:
		// Options only: the client has its address; no lease is given.
		resp.YourIPAddr = net.IPv4zero
		resp.Options.Del(dhcpv4.OptionIPAddressLeaseTime)
		resp.Options.Del(dhcpv4.OptionRenewTimeValue)
		resp.Options.Del(dhcpv4.OptionRebindingTimeValue)
		return resp, false

	case dhcpv4.MessageTypeRelease:
		// Addresses are static: the allocation stays, nothing is sent.
		l.Log.Info("release", "mac", req.ClientHWAddr.String(), "address", req.ClientIPAddr.String())
		return nil, true

	default:
		return nil, true
	}
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
// and a message.
func nak(req, resp *dhcpv4.DHCPv4, msg string) *dhcpv4.DHCPv4 {
	sid := resp.ServerIdentifier()
	resp.YourIPAddr = net.IPv4zero
	resp.ClientIPAddr = net.IPv4zero
	resp.ServerIPAddr = net.IPv4zero
	resp.ServerHostName = ""
	resp.BootFileName = ""
	resp.Options = dhcpv4.Options{}
	resp.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeNak))
	if sid != nil {
		resp.UpdateOption(dhcpv4.OptServerIdentifier(sid))
	}
	resp.UpdateOption(dhcpv4.OptMessage(msg))
	if !req.GatewayIPAddr.IsUnspecified() {
		// RFC 2131 4.3.2: the relay must broadcast a NAK to the client.
		resp.SetBroadcast()
	}
	return resp
}
