package harvesteroptions

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/coredhcp/coredhcp/handler"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

func setup6(args ...string) (handler.Handler6, error) {
	return Setup6(poolwatch.Default, args...)
}

// Setup6 joins the pool's watch and returns the DHCPv6 handler, which puts
// spec.ipv6Config's DNS (option 23), search list (24) and NTP servers (56)
// into Advertise and Reply messages. NTP host names go on the wire as names
// (suboption 3): DHCPv6 needs no resolution for them.
func Setup6(reg *poolwatch.Registry, args ...string) (handler.Handler6, error) {
	a, err := poolwatch.ParseArgs(Name, args, "kubeconfig")
	if err != nil {
		return nil, err
	}
	w, err := reg.Watch(a.Namespace, a.Name, a.Options["kubeconfig"])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return New6(w.Current).Handle, nil
}

// Options6 serves the IPv6 options of one pool view; no mutable state.
type Options6 struct {
	pool func() *poolwatch.Pool
}

// New6 returns IPv6 options served from pool.
func New6(pool func() *poolwatch.Pool) *Options6 { return &Options6{pool: pool} }

// Handle adds the options the client asked for in its Option Request
// option (all of them when it sent none) to replies that configure it.
func (o *Options6) Handle(req, resp dhcpv6.DHCPv6) (dhcpv6.DHCPv6, bool) {
	out, ok := resp.(*dhcpv6.Message)
	if !ok {
		return resp, false
	}
	msg, err := req.GetInnerMessage()
	if err != nil {
		return resp, false
	}
	switch msg.Type() {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew,
		dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeInformationRequest:
	default:
		return resp, false // Confirm, Release: status only
	}
	p6, _ := o.pool().IPv6()
	if !p6.Prefix.IsValid() {
		return resp, false
	}
	oro := msg.Options.RequestedOptions()
	wants := func(c dhcpv6.OptionCode) bool { return len(oro) == 0 || slices.Contains(oro, c) }
	if len(p6.DNS) > 0 && wants(dhcpv6.OptionDNSRecursiveNameServer) {
		out.UpdateOption(dhcpv6.OptDNS(p6.DNS...))
	}
	if len(p6.DomainSearch) > 0 && wants(dhcpv6.OptionDomainSearchList) {
		out.UpdateOption(dhcpv6.OptDomainSearchList(&rfc1035label.Labels{Labels: slices.Clone(p6.DomainSearch)}))
	}
	if len(p6.NTP) > 0 && wants(dhcpv6.OptionNTPServer) {
		out.UpdateOption(ntpOption(p6.NTP))
	}
	if msg.Type() == dhcpv6.MessageTypeInformationRequest {
		// RFC 8415 21.23: how long the options hold without an address lease.
		out.UpdateOption(dhcpv6.OptInformationRefreshTime(p6.PreferredLifetime))
	}
	return out, false
}

// ntpOption encodes option 56: addresses as suboption 1, names as 3.
func ntpOption(servers []string) *dhcpv6.OptNTPServer {
	opt := &dhcpv6.OptNTPServer{}
	for _, s := range servers {
		if a, err := netip.ParseAddr(s); err == nil {
			if a.Is6() && !a.Is4In6() {
				addr := dhcpv6.NTPSuboptionSrvAddr(net.IP(a.AsSlice()))
				opt.Suboptions.Add(&addr)
			}
			continue
		}
		opt.Suboptions.Add(&dhcpv6.NTPSuboptionSrvFQDN{Labels: rfc1035label.Labels{Labels: []string{s}}})
	}
	return opt
}
