// Package routeradv is the CoreDHCP plugin router-advertisement: on a
// network without a router of its own, the pool's agent sends the router
// advertisements (RFC 4861) that make guests start DHCPv6. Guests run
// DHCPv6 for an address only when an RA carries the managed flag.
//
// It is off unless the IPPool says spec.ipv6Config.routerAdvertisements
// .enabled, and follows that field live through the shared pool watch. Its
// DHCPv6 handler passes every message on untouched.
package routeradv

import (
	"context"
	"fmt"

	"github.com/coredhcp/coredhcp/handler"
	"github.com/coredhcp/coredhcp/plugins"
	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// Name is the plugin's name in the CoreDHCP config file.
const Name = "router-advertisement"

// Plugin is the CoreDHCP plugin. Its line in a server6 section:
//
//   - router-advertisement: <namespace>/<pool> interface=eth1 [kubeconfig=<path>]
var Plugin = plugins.Plugin{Name: Name, Setup6: setup6}

func setup6(args ...string) (handler.Handler6, error) {
	return Setup6(context.Background(), poolwatch.Default, args...)
}

// Setup6 starts the sender for the pool and interface of args; it stops
// with ctx.
func Setup6(ctx context.Context, reg *poolwatch.Registry, args ...string) (handler.Handler6, error) {
	a, err := poolwatch.ParseArgs(Name, args, "interface", "kubeconfig")
	if err != nil {
		return nil, err
	}
	ifName := a.Options["interface"]
	if ifName == "" {
		return nil, fmt.Errorf("%s: option interface=<name> is required (the link the agent advertises on)", Name)
	}
	w, err := reg.Watch(a.Namespace, a.Name, a.Options["kubeconfig"])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	s := &Sender{
		Interface: ifName,
		Pool: func() (*poolwatch.Pool6, uint16) {
			p := w.Current()
			if p == nil {
				return nil, 0
			}
			p6, _ := p.IPv6() // entries it skipped are logged by ippool-lease
			return p6, p.MTU
		},
		Changed: w.Subscribe(),
		Log:     reg.Logger().WithName(Name).WithValues("pool", w.Key(), "interface", ifName),
	}
	go s.Run(ctx)
	return passThrough, nil
}

func passThrough(req, resp dhcpv6.DHCPv6) (dhcpv6.DHCPv6, bool) { return resp, false }
