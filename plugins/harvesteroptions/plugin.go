// Package harvesteroptions is the CoreDHCP plugin `harvester-options`: it
// puts the DHCP options of one IPPool's spec.ipv4Config into every OFFER and
// ACK, live, from the same watch as ippool-lease.
//
//	harvester-options: <namespace>/<name> [kubeconfig=<path>]
package harvesteroptions

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredhcp/coredhcp/handler"
	"github.com/coredhcp/coredhcp/plugins"
	"github.com/go-logr/logr"
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/vm-dhcp/vm-dhcp/internal/dnsname"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/wire"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// Name is the plugin's name in a CoreDHCP config.
const Name = "harvester-options"

// NTPRefresh is how often NTP host names are resolved again.
const NTPRefresh = 5 * time.Minute

// Plugin registers harvester-options with CoreDHCP.
var Plugin = plugins.Plugin{Name: Name, Setup4: setup4, Setup6: setup6}

func setup4(args ...string) (handler.Handler4, error) {
	return Setup(poolwatch.Default, args...)
}

// Setup parses the arguments, joins (or starts) the pool's watch in reg,
// starts the NTP name resolver and returns the handler.
func Setup(reg *poolwatch.Registry, args ...string) (handler.Handler4, error) {
	a, err := poolwatch.ParseArgs(Name, args, "kubeconfig")
	if err != nil {
		return nil, err
	}
	w, err := reg.Watch(a.Namespace, a.Name, a.Options["kubeconfig"])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	o := New(w.Current)
	log := reg.Logger().WithName(Name).WithValues("pool", w.Key())
	go o.ResolveNTP(context.Background(), w.Subscribe(), NTPRefresh, net.DefaultResolver.LookupNetIP, log)
	return o.Handle, nil
}

// Options holds one plugin instance's state: the pool view and the NTP host
// names resolved in the background. Both are swapped atomically.
type Options struct {
	pool func() *poolwatch.Pool
	// ntp maps an NTP host name to its resolved IPv4 addresses; replaced
	// as a whole by ResolveNTP, read-only afterwards.
	ntp atomic.Pointer[map[string][]net.IP]
	// enc caches the encoded options of the last pool view served.
	enc atomic.Pointer[encodedOptions]

	// reportMu guards reported: what was last logged about each NTP entry
	// that could not be used, so that a lasting failure is logged once,
	// not on every pool change and refresh.
	reportMu sync.Mutex
	reported map[string]string
}

// New returns options served from pool.
func New(pool func() *poolwatch.Pool) *Options {
	o := &Options{pool: pool}
	empty := map[string][]net.IP{}
	o.ntp.Store(&empty)
	return o
}

// LookupFunc resolves a host name, like net.Resolver.LookupNetIP.
type LookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// ResolveNTP resolves the pool's NTP host names after every pool change and
// every refresh period, until ctx ends. A failed lookup keeps the previous
// answer for that name, so a DNS hiccup does not drop NTP servers.
func (o *Options) ResolveNTP(ctx context.Context, changed <-chan struct{}, refresh time.Duration, lookup LookupFunc, log logr.Logger) {
	t := time.NewTicker(refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
		o.ResolveOnce(ctx, lookup, log)
	}
}

// ResolveOnce resolves the current pool's NTP host names once.
func (o *Options) ResolveOnce(ctx context.Context, lookup LookupFunc, log logr.Logger) {
	p := o.pool()
	if p == nil {
		return
	}
	prev := *o.ntp.Load()
	next := map[string][]net.IP{}
	problems := map[string]string{}
	for _, s := range p.NTP {
		if a, err := netip.ParseAddr(s); err == nil {
			if !a.Is4() {
				problems[s] = "is an IPv6 address; option 42 carries IPv4 addresses only: left out"
			}
			continue // literal address, used as is
		}
		if err := dnsname.Check(s); err != nil || isDottedQuad(s) {
			// Admitted as Harvester admits it (with a warning); nothing
			// to look up.
			problems[s] = "is neither an IPv4 address nor a host name: left out of option 42"
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := lookup(lctx, "ip4", s)
		cancel()
		var ips []net.IP
		for _, a := range addrs {
			if a = a.Unmap(); a.Is4() {
				ips = append(ips, a.AsSlice())
			}
		}
		if err != nil || len(ips) == 0 {
			msg := "resolves to no IPv4 address"
			if err != nil {
				msg = err.Error()
			}
			problems[s] = "cannot be resolved (" + msg + "); keeping the previous answer"
			ips = prev[s]
		}
		if len(ips) > 0 {
			next[s] = ips
		}
	}
	o.ntp.Store(&next)
	o.report(problems, log)
}

// report logs each NTP entry's problem when it is new or changed, and that
// an entry works again when its problem is gone: once per change, however
// often the names are resolved.
func (o *Options) report(problems map[string]string, log logr.Logger) {
	o.reportMu.Lock()
	defer o.reportMu.Unlock()
	for s, msg := range problems {
		if o.reported[s] != msg {
			log.Error(nil, "NTP server "+msg, "ntp", s)
		}
	}
	for s := range o.reported {
		if _, still := problems[s]; !still {
			log.Info("NTP server usable again (or removed from the pool)", "ntp", s)
		}
	}
	o.reported = problems
}

// isDottedQuad is four dot-separated numbers that are no valid address
// (999.1.1.1, 010.0.0.1): not a host name either, so never looked up.
func isDottedQuad(s string) bool {
	return strings.Count(s, ".") == 3 && strings.Trim(s, "0123456789.") == ""
}

// Handle is the CoreDHCP handler: it sets the pool's options on OFFERs and
// ACKs. When the client sent a parameter request list, only the options it
// asked for are added (plus the subnet mask and lease times, which RFC 2131
// servers always send); without a list, all of them are.
//
// The options are encoded once per pool view (see encodedOptions), so a
// reply costs one allocation for all of their bytes and no parsing.
func (o *Options) Handle(req, resp *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, bool) {
	p := o.pool()
	if p == nil || !p.Subnet.IsValid() {
		return resp, false
	}
	if mt := wire.MessageType(resp.Options); mt != dhcpv4.MessageTypeOffer && mt != dhcpv4.MessageTypeAck {
		return resp, false
	}
	e := o.encodedFor(p)
	// Raw option 55: one byte per code, looked up without decoding.
	prl := req.Options.Get(dhcpv4.OptionParameterRequestList)
	inform := wire.MessageType(req.Options) == dhcpv4.MessageTypeInform
	if n := len(resp.Options) + len(e.opts); resp.Options == nil || (len(resp.Options) <= smallMap && n > smallMap) {
		// A Go map holds 8 entries before it turns into a hash table,
		// and a reply (type, server ID, client ID, ours) usually ends
		// up just past that: growing it in place rehashed every entry
		// and was the largest cost of this handler. Size it once.
		sized := make(dhcpv4.Options, n)
		for code, v := range resp.Options {
			sized[code] = v
		}
		resp.Options = sized
	}
	// One backing array per reply: the encoded values stay read-only and
	// are never handed out, so nothing downstream can change them.
	buf := make([]byte, 0, e.size)
	for _, opt := range e.opts {
		if inform && opt.leaseOnly {
			continue // RFC 2131: lease times are forbidden in an ACK to INFORM
		}
		if !opt.always && len(prl) > 0 && bytes.IndexByte(prl, opt.code) < 0 {
			continue
		}
		at := len(buf)
		buf = append(buf, opt.value...)
		resp.Options[opt.code] = buf[at:len(buf):len(buf)]
	}
	return resp, false
}

// smallMap is how many entries a Go map keeps in its single inline group.
const smallMap = 8

// encodedOption is one option's wire value.
type encodedOption struct {
	code  uint8
	value []byte
	// always: sent whether or not the client asked (subnet mask, lease
	// times); leaseOnly: not sent in reply to INFORM.
	always, leaseOnly bool
}

// encodedOptions are the options of one pool view with one NTP resolution,
// in wire form. Immutable once built.
type encodedOptions struct {
	pool *poolwatch.Pool
	ntp  *map[string][]net.IP
	opts []encodedOption
	size int // sum of len(value)
}

// encodedFor returns p's encoded options, building them when the pool view
// or the NTP resolution changed since the last build. Two goroutines may
// build the same view at once; both results are equal, either may stay.
func (o *Options) encodedFor(p *poolwatch.Pool) *encodedOptions {
	ntp := o.ntp.Load()
	if e := o.enc.Load(); e != nil && e.pool == p && e.ntp == ntp {
		return e
	}
	e := encode(p, ntpServers(p, *ntp))
	e.ntp = ntp
	o.enc.Store(e)
	return e
}

// encode builds the wire values, with the library's own option constructors
// where they are right, so the bytes are what UpdateOption would have
// produced.
func encode(p *poolwatch.Pool, ntp []net.IP) *encodedOptions {
	e := &encodedOptions{pool: p}
	add := func(opt dhcpv4.Option, always, leaseOnly bool) {
		v := opt.Value.ToBytes()
		e.opts = append(e.opts, encodedOption{code: opt.Code.Code(), value: v, always: always, leaseOnly: leaseOnly})
		e.size += len(v)
	}
	add(dhcpv4.OptSubnetMask(net.CIDRMask(p.Subnet.Bits(), 32)), true, false)
	if p.Router.IsValid() {
		add(dhcpv4.OptRouter(p.Router.AsSlice()), false, false)
	}
	if len(p.DNS) > 0 {
		add(dhcpv4.OptDNS(p.DNS...), false, false)
	}
	if p.DomainName != "" {
		add(dhcpv4.OptDomainName(p.DomainName), false, false)
	}
	if len(p.DomainSearch) > 0 {
		// Not the library's encoder: it turns a trailing dot into an extra
		// empty name and writes labels over 63 bytes with length bytes that
		// read as compression pointers. Invalid names were reported when
		// the pool was loaded (poolwatch) and are left out here.
		if v, _ := dnsname.SearchList(p.DomainSearch); len(v) > 0 {
			add(dhcpv4.OptGeneric(dhcpv4.OptionDNSDomainSearchList, v), false, false)
		}
	}
	if len(ntp) > 0 {
		add(dhcpv4.OptNTPServers(ntp...), false, false)
	}
	if p.MTU != 0 {
		add(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, p.MTU)), false, false)
	}
	if len(p.Routes) > 0 {
		add(dhcpv4.OptClasslessStaticRoute(classlessRoutes(p)...), false, false)
	}
	lt := wire.LeaseTimesOf(p.LeaseTime)
	add(dhcpv4.OptGeneric(dhcpv4.OptionIPAddressLeaseTime, binary.BigEndian.AppendUint32(nil, lt.Lease)), true, true)
	if lt.T1 != 0 {
		add(dhcpv4.OptGeneric(dhcpv4.OptionRenewTimeValue, binary.BigEndian.AppendUint32(nil, lt.T1)), true, true)
	}
	if lt.T2 != 0 {
		add(dhcpv4.OptGeneric(dhcpv4.OptionRebindingTimeValue, binary.BigEndian.AppendUint32(nil, lt.T2)), true, true)
	}
	return e
}

// classlessRoutes are the pool's routes and, when a router is set, the
// default route through it: RFC 3442 clients ignore option 3 once they
// receive option 121.
func classlessRoutes(p *poolwatch.Pool) []*dhcpv4.Route {
	routes := make([]*dhcpv4.Route, 0, len(p.Routes)+1)
	hasDefault := false
	for _, r := range p.Routes {
		hasDefault = hasDefault || r.Destination.Bits() == 0
		routes = append(routes, &dhcpv4.Route{
			Dest:   &net.IPNet{IP: r.Destination.Addr().AsSlice(), Mask: net.CIDRMask(r.Destination.Bits(), 32)},
			Router: r.Gateway.AsSlice(),
		})
	}
	if p.Router.IsValid() && !hasDefault {
		routes = append(routes, &dhcpv4.Route{
			Dest:   &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			Router: p.Router.AsSlice(),
		})
	}
	return routes
}

// ntpServers are the pool's NTP servers as addresses: literals as written,
// host names as last resolved (never resolved here, on the packet path).
func ntpServers(p *poolwatch.Pool, resolved map[string][]net.IP) []net.IP {
	var ips []net.IP
	for _, s := range p.NTP {
		if a, err := netip.ParseAddr(s); err == nil {
			if a.Is4() {
				ips = append(ips, a.AsSlice())
			}
			continue
		}
		ips = append(ips, resolved[s]...)
	}
	return ips
}
