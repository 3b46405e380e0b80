package reliability

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// What the wire scenarios count as a violation, precisely:
//
//   - duplicate: two guests have the same address configured on their eth0
//     at one instant. A sweep reads every guest; a candidate (two guests
//     showing the same address) is confirmed by reading A, then B, then A
//     again within milliseconds: A held the address before and after B was
//     seen holding it, so both held it at that instant. A handover (A drops
//     the address, then B gets it) never shows A holding it after B.
//   - not NAKed: a guest dropped an address by timing out (udhcpc's hook
//     got deconfig without a nak before it: busybox 1.35 with -T 1 sends
//     one unicast renewal and 3 broadcast rebinds a second apart and drops
//     the address a second after the last, none answered) while the pool
//     had not given that address to the guest's MAC at any read from 5 s
//     before the drop to 1 s after: every request of that renewal was sent
//     after the loss, the last three at least wireAgentLag after it, and
//     each should have been NAKed.
//   - ACK of a lost address: udhcpc's hook got bound/renew for an address
//     the pool had not given to the guest's MAC at any read from
//     wireAgentLag before to 1 s after.
//   - duplicate found by DAD (IPv6): a guest's address is dadfailed, the
//     kernel's duplicate address detection having found another node of the
//     link using it when it was configured: two guests were given it. The
//     kernel keeps a dadfailed address only when it is permanent; one with
//     lifetimes, as the DHCPv6 hook sets, it deletes when DAD fails (about
//     a second after it was added, and again after every renewal re-adds
//     it): such a duplicate shows as the second guest's tentative copy
//     beside the first one's, a duplicate above (a run with the IPv6
//     quarantine deliberately removed found its duplicates this way).
//   - overstay: a guest held an address its MAC did not have (by the latest
//     pool read) for longer than the family's grace, the lease time (IPv4)
//     or valid lifetime (IPv6) plus wireAgentLag: even a guest whose
//     renewals all went unanswered must have dropped it by then, so a longer
//     hold means something renewed an address that was not its MAC's.
//   - DHCPv6 has no NAK: the agent answers a renewal of an address that is
//     no longer the client's with lifetime 0 (the hook records "drop"), but
//     a MAC with no address at all gets NoBinding, after which the guest
//     keeps the address until its valid lifetime ends ("expire"), exactly
//     what the controller's quarantine waits for. The not-NAKed rule is
//     therefore IPv4's; the overstay rule bounds both families.
//   - end state: once the workload stops and the controller has converged,
//     every guest must hold exactly the address the pool and its VMNetCfg
//     give its MAC (a lost allocation shows as a guest with nothing, a leak
//     as an entry no VMNetCfg claims: test/invariants).
//
// A window with a gap of more than maxPoolReadGap between pool reads
// counts as unknown, never as a violation.
const maxPoolReadGap = time.Second

// poolRead is one read of the pool: address -> MAC.
type poolRead struct {
	at     time.Time
	owners map[string]string
}

// poolTimeline is every read of the pool during a scenario, in order.
type poolTimeline struct {
	mu    sync.Mutex
	reads []poolRead
}

func (pt *poolTimeline) add(at time.Time, owners map[string]string) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.reads = append(pt.reads, poolRead{at: at, owners: owners})
}

func (pt *poolTimeline) latest() map[string]string {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if len(pt.reads) == 0 {
		return nil
	}
	return pt.reads[len(pt.reads)-1].owners
}

// neverOwned reports whether every pool read that describes [from, to]
// (the last read at or before from and every read up to to) shows ip not
// given to mac, with no gap between reads above maxPoolReadGap. Anything
// uncertain (no read before from, a gap, no read after to) is false.
func (pt *poolTimeline) neverOwned(ip, mac string, from, to time.Time) bool {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	mac = ipam.NormalizeMAC(mac)
	i := sort.Search(len(pt.reads), func(i int) bool { return pt.reads[i].at.After(from) })
	if i == 0 || i == len(pt.reads) {
		return false
	}
	prev := pt.reads[i-1].at
	for j := i - 1; j < len(pt.reads); j++ {
		r := pt.reads[j]
		if r.at.Sub(prev) > maxPoolReadGap {
			return false
		}
		if r.owners[ip] == mac {
			return false
		}
		prev = r.at
		if r.at.After(to) {
			return true
		}
	}
	return false // no read after to yet
}

// startPoolTimeline reads the pool every 200 ms until stopped.
func (e *wireEnv) startPoolTimeline() (*poolTimeline, func()) {
	pt := &poolTimeline{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last map[string]string
		lastRV := ""
		for ctx.Err() == nil {
			owners, rv, err := e.poolOwners(ctx)
			if err == nil {
				if rv == lastRV {
					owners = last // same object: share the map
				}
				pt.add(time.Now(), owners)
				last, lastRV = owners, rv
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return pt, func() { cancel(); <-done }
}

// wireSampler reads the address of every guest continuously.
type wireSampler struct {
	e          *wireEnv
	pool       *poolTimeline
	samples    atomic.Int64
	candidates atomic.Int64
	mu         sync.Mutex
	dupSamples int
	dupEvents  []string
	episodes   map[string]bool // ip + guests, counted once
	dadSamples int
	dadEvents  []string             // ip + guest, once each
	stale      map[string]time.Time // "guest ip" -> first seen held without its MAC owning it
	staleMax   time.Duration
	staleWho   string
	overstays  []string // stale beyond the family's grace, once per guest and address
	readErrs   int
	stop       func()
}

func (e *wireEnv) startWireSampler(pool *poolTimeline, every time.Duration) *wireSampler {
	s := &wireSampler{e: e, pool: pool, episodes: map[string]bool{}, stale: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.stop = func() { cancel(); <-done }
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			s.sweep()
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
	}()
	return s
}

func (s *wireSampler) sweep() {
	at := time.Now()
	byIP := map[string][]*guest{}
	held := map[int][]string{}
	var dad []string
	for _, g := range s.e.guests {
		h, err := g.held()
		if err != nil {
			s.mu.Lock()
			s.readErrs++
			s.mu.Unlock()
			return // the whole sample is void
		}
		for _, a := range h.ips {
			byIP[a] = append(byIP[a], g)
		}
		held[g.idx] = h.ips
		for _, a := range h.dadFailed {
			dad = append(dad, fmt.Sprintf("%s on guest %d (%s, MAC %s)", a, g.idx, g.vm.name, g.MAC()))
		}
	}
	s.samples.Add(1)
	dup := false
	for ip, gs := range byIP {
		if len(gs) < 2 {
			continue
		}
		s.candidates.Add(1)
		for i := 1; i < len(gs); i++ {
			if s.confirm(ip, gs[0], gs[i]) {
				dup = true
			}
		}
	}
	owners := s.pool.latest()
	s.mu.Lock()
	defer s.mu.Unlock()
	if dup {
		s.dupSamples++
	}
	if len(dad) > 0 {
		s.dadSamples++
		for _, d := range dad {
			if !s.episodes["dad "+d] {
				s.episodes["dad "+d] = true
				s.dadEvents = append(s.dadEvents, at.UTC().Format("15:04:05.000")+" "+d)
			}
		}
	}
	if owners == nil {
		return
	}
	seen := map[string]bool{}
	for _, g := range s.e.guests {
		mac := ipam.NormalizeMAC(g.MAC())
		for _, a := range held[g.idx] {
			if owners[a] == mac {
				continue
			}
			key := fmt.Sprintf("%d %s", g.idx, a)
			seen[key] = true
			since, ok := s.stale[key]
			if !ok {
				s.stale[key] = at
				continue
			}
			d := at.Sub(since)
			if d > s.staleMax {
				s.staleMax = d
				s.staleWho = fmt.Sprintf("guest %d (%s) held %s", g.idx, g.vm.name, a)
			}
			if d > s.e.family.grace() && !s.episodes["overstay "+key] {
				s.episodes["overstay "+key] = true
				s.overstays = append(s.overstays, fmt.Sprintf("%s guest %d (%s, MAC %s) has held %s for %s without its MAC having it",
					at.UTC().Format("15:04:05.000"), g.idx, g.vm.name, mac, a, d.Round(100*time.Millisecond)))
			}
		}
	}
	for key := range s.stale {
		if !seen[key] {
			delete(s.stale, key) // dropped, or its MAC's again
		}
	}
}

// confirm reads a, b, a: both held ip at the instant b was read.
func (s *wireSampler) confirm(ip string, a, b *guest) bool {
	a1, err1 := a.held()
	bb, err2 := b.held()
	a2, err3 := a.held()
	if err1 != nil || err2 != nil || err3 != nil || !slices.Contains(a1.ips, ip) || !slices.Contains(bb.ips, ip) || !slices.Contains(a2.ips, ip) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := fmt.Sprintf("%s %d %d", ip, a.idx, b.idx)
	if !s.episodes[key] {
		s.episodes[key] = true
		s.dupEvents = append(s.dupEvents, fmt.Sprintf("%s %s held by guest %d (%s, MAC %s) and guest %d (%s, MAC %s)",
			time.Now().UTC().Format("15:04:05.000"), ip, a.idx, a.vm.name, a.MAC(), b.idx, b.vm.name, b.MAC()))
	}
	return true
}

// eventStats is what the hooks of the guests saw.
type eventStats struct {
	bound, renewed, naks, deconfigs int
	naked                           int // bound guests that got a NAK (and dropped their address)
	expired                         int // IPv6: addresses whose valid lifetime ran out unrenewed
	timedOutOwned                   int // dropped by timeout although the MAC still had the address
	notNAKed                        []string
	ackedLost                       []string
}

// analyzeEvents walks one guest's hook events (see the top of this file).
func analyzeEvents(idx int, mac0 string, evs []clientEvent, pool *poolTimeline, st *eventStats) {
	mac, held, prev := mac0, "", ""
	for _, ev := range evs {
		switch ev.kind {
		case "reboot":
			mac, held = ev.ip, ""
		case "bound", "renew":
			if ev.kind == "bound" {
				st.bound++
			} else {
				st.renewed++
			}
			if validIP(ev.ip) && pool.neverOwned(ev.ip, mac, ev.at.Add(-wireAgentLag), ev.at.Add(time.Second)) {
				st.ackedLost = append(st.ackedLost, fmt.Sprintf("%s guest %d (MAC %s) got %s for %s, which the pool had not given its MAC for %s",
					ev.at.UTC().Format("15:04:05.000"), idx, mac, strings.ToUpper(ev.kind[:1])+ev.kind[1:], ev.ip, wireAgentLag))
			}
			held = ev.ip
		case "nak":
			st.naks++
			if held != "" {
				st.naked++
			}
		case "drop": // IPv6: lifetime 0 for an address the guest had
			st.naks++
			st.naked++
			if ev.ip == held {
				held = ""
			}
		case "expire": // IPv6: its valid lifetime ran out (see the top)
			st.expired++
			if ev.ip == held {
				held = ""
			}
		case "deconfig":
			st.deconfigs++
			if held != "" && prev != "nak" {
				if pool.neverOwned(held, mac, ev.at.Add(-5*time.Second), ev.at.Add(time.Second)) {
					st.notNAKed = append(st.notNAKed, fmt.Sprintf("%s guest %d (MAC %s) dropped %s by timeout: its renewals got no NAK although the pool no longer gave it that address",
						ev.at.UTC().Format("15:04:05.000"), idx, mac, held))
				} else {
					st.timedOutOwned++
				}
			}
			held = ""
		}
		prev = ev.kind
	}
}

// analyzeGuests reads every guest's events.
func (e *wireEnv) analyzeGuests(pool *poolTimeline) (eventStats, error) {
	var st eventStats
	for _, g := range e.guests {
		evs, err := (&udhcpcClient{events: g.events}).read()
		if err != nil {
			return st, fmt.Errorf("events of guest %d: %w", g.idx, err)
		}
		analyzeEvents(g.idx, g.mac0, evs, pool, &st)
	}
	return st, nil
}
