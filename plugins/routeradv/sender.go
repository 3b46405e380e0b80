package routeradv

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// Protocol constants of RFC 4861 section 10 (router side).
const (
	maxInitialInterval = 16 * time.Second       // MAX_INITIAL_RTR_ADVERT_INTERVAL
	initialCount       = 3                      // MAX_INITIAL_RTR_ADVERTISEMENTS
	minDelayBetween    = 3 * time.Second        // MIN_DELAY_BETWEEN_RAS
	maxResponseDelay   = 500 * time.Millisecond // MAX_RA_DELAY_TIME
	retryListen        = 2 * time.Second
)

var allNodes = netip.MustParseAddr("ff02::1")
var allRouters = netip.MustParseAddr("ff02::2")

// Sender advertises one pool's prefix on one interface while the pool asks
// for it. All its state lives in Run's frame: one Sender per plugin line.
type Sender struct {
	Interface string
	// Pool returns the pool's IPv6 view and its MTU (0 when unset); nil
	// before the first view.
	Pool func() (*poolwatch.Pool6, uint16)
	// Changed receives a value after every change of the pool.
	Changed <-chan struct{}
	Log     logr.Logger
}

// Advertisement is the RA for p: managed and other-configuration flags,
// router lifetime 0 (the agent forwards nothing: it must never become a
// default router), the prefix on-link without SLAAC (addresses come from
// DHCPv6, bound to MACs), the MTU when the pool sets one an IPv6 link can
// have, and the sender's link-layer address.
func Advertisement(p *poolwatch.Pool6, mtu uint16, mac net.HardwareAddr) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{ManagedConfiguration: true, OtherConfiguration: true}
	if p != nil && p.Prefix.IsValid() {
		ra.Options = append(ra.Options, &ndp.PrefixInformation{
			PrefixLength:      uint8(p.Prefix.Bits()),
			OnLink:            true,
			ValidLifetime:     p.ValidLifetime,
			PreferredLifetime: p.PreferredLifetime,
			Prefix:            p.Prefix.Addr(),
		})
	}
	if mtu >= 1280 { // IPv6's minimum link MTU (RFC 8200)
		ra.Options = append(ra.Options, ndp.NewMTU(uint32(mtu)))
	}
	if len(mac) == 6 {
		ra.Options = append(ra.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	}
	return ra
}

// Run advertises until ctx ends: unsolicited RAs at random times between
// 3/4 of the pool's interval and the interval (the first three at most 16 s
// apart, RFC 4861 6.2.4), and an answer to every router solicitation, at
// most one per 3 seconds (6.2.6). It sends nothing while the pool has no
// IPv6 half or its RAs are off.
func (s *Sender) Run(ctx context.Context) {
	conn, ifi := s.listen(ctx)
	if conn == nil {
		return
	}
	defer conn.Close()
	solicited := make(chan struct{}, 1)
	go s.readSolicitations(ctx, conn, solicited)

	var (
		last    time.Time // last RA sent
		sent    int       // RAs since the pool turned them on
		enabled bool
		timer   = time.NewTimer(0)
	)
	defer timer.Stop()
	next := func(p *poolwatch.Pool6) time.Duration {
		max := p.RAInterval
		if sent < initialCount && max > maxInitialInterval {
			max = maxInitialInterval
		}
		return max*3/4 + rand.N(max/4+1)
	}
	send := func(p *poolwatch.Pool6, mtu uint16) {
		ra := Advertisement(p, mtu, ifi.HardwareAddr)
		if err := conn.WriteTo(ra, nil, allNodes); err != nil {
			s.Log.Error(err, "send router advertisement")
			return
		}
		last, sent = time.Now(), sent+1
		s.Log.V(1).Info("router advertisement sent", "prefix", p.Prefix, "count", sent)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.Changed:
			p, _ := s.Pool()
			on := p != nil && p.SendRA && p.Prefix.IsValid()
			if on && !enabled {
				s.Log.Info("router advertisements on", "prefix", p.Prefix, "interval", p.RAInterval)
				sent = 0
				resetTimer(timer, 0)
			} else if !on && enabled {
				s.Log.Info("router advertisements off")
			}
			enabled = on
		case <-solicited:
			if !enabled {
				continue
			}
			// Answer after a random delay, never sooner than 3 s after the
			// last RA: one multicast answer serves every solicitor.
			wait := rand.N(maxResponseDelay)
			if since := time.Since(last); since+wait < minDelayBetween {
				wait = minDelayBetween - since
			}
			resetTimer(timer, wait)
		case <-timer.C:
			p, mtu := s.Pool()
			if !enabled || p == nil || !p.SendRA || !p.Prefix.IsValid() {
				continue
			}
			send(p, mtu)
			resetTimer(timer, next(p))
		}
	}
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	t.Reset(d)
}

// listen opens the ICMPv6 socket on the interface's link-local address,
// retrying while the interface or that address is missing (the agent may
// start before its network is attached or before DAD ends).
func (s *Sender) listen(ctx context.Context) (*ndp.Conn, *net.Interface) {
	logged := false
	for {
		ifi, err := net.InterfaceByName(s.Interface)
		if err == nil {
			var conn *ndp.Conn
			conn, _, err = ndp.Listen(ifi, ndp.LinkLocal)
			if err == nil {
				if err = conn.JoinGroup(allRouters); err == nil {
					var f ipv6.ICMPFilter
					f.SetAll(true)
					f.Accept(ipv6.ICMPTypeRouterSolicitation)
					if err = conn.SetICMPFilter(&f); err == nil {
						return conn, ifi
					}
				}
				conn.Close()
			}
		}
		if !logged {
			s.Log.Error(err, "cannot advertise yet; retrying", "every", retryListen)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(retryListen):
		}
	}
}

// readSolicitations signals every router solicitation received.
func (s *Sender) readSolicitations(ctx context.Context, conn *ndp.Conn, solicited chan<- struct{}) {
	for ctx.Err() == nil {
		m, _, _, err := conn.ReadFrom()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.Log.V(1).Info("read router solicitation", "error", err.Error())
			continue
		}
		if _, ok := m.(*ndp.RouterSolicitation); ok {
			select {
			case solicited <- struct{}{}:
			default:
			}
		}
	}
}
