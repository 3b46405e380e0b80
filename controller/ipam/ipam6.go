package ipam

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// MinIPv6PrefixBits is the shortest IPv6 prefix a pool may have. Every
// address of a /64 or longer prefix shares its upper 64 bits, so an offset
// in the range fits in a uint64.
const MinIPv6PrefixBits = 64

// Config6 is the part of an IPPool's spec.ipv6Config the IPAM needs.
type Config6 struct {
	CIDR     string
	Start    string
	End      string
	ServerIP string
	Exclude  []string
	// Quarantine is how long a released address is kept from other MACs
	// at least (the pool's current valid lifetime: a client may use its
	// address that long after its last reply); 0 disables quarantine.
	Quarantine time.Duration
	// LongerLeasesUntil, when set, is the latest end of a valid lifetime
	// given before the pool's valid lifetime was lowered (see Config).
	LongerLeasesUntil time.Time
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Pool6 is the IPAM of the IPv6 half of one pool. It is safe for concurrent
// use.
//
// A /64 range has 2^64 addresses, so unlike Pool there is no bitmap: the
// offsets that are taken (allocated, reserved, excluded) are kept in a
// sorted slice. Because the slice holds distinct offsets in order,
// taken[i]-i never decreases, and the lowest free offset is the first i with
// taken[i] > i: a binary search, whatever the size of the range. Memory and
// insertion cost grow with the number of allocations, not with the range.
//
// Holders and the quarantine of released addresses follow Pool's rules
// (the quarantine is the same code, quarantineSet). A quarantined offset is
// in taken too, so the lowest free address skips it in the same binary
// search; a quarantine that ends takes it out again unless the offset is
// allocated or blocked.
type Pool6 struct {
	mu sync.RWMutex

	prefix netip.Prefix
	hi     uint64 // upper 64 bits shared by every address of the prefix
	start  uint64 // lower 64 bits of the first address of the range
	last   uint64 // offset of the last address of the range (end - start)
	taken  []uint64
	marks  map[uint64]string // blocked offsets (marks never change after New6)
	allocTable[uint64]

	rel quarantineSet[uint64]
	// nQuarFree counts the quarantined offsets that are not blocked: they
	// are in taken but count as available, as in Pool.
	nQuarFree uint64
}

// New6 builds an empty IPv6 pool from its configuration.
func New6(c Config6) (*Pool6, error) {
	prefix, err := netip.ParsePrefix(c.CIDR)
	if err != nil || !prefix.Addr().Is6() || prefix.Addr().Is4In6() {
		return nil, fmt.Errorf("%w: cidr %q is not an IPv6 prefix", ErrInvalidConfig, c.CIDR)
	}
	if prefix.Bits() < MinIPv6PrefixBits {
		return nil, fmt.Errorf("%w: cidr %s is shorter than /%d", ErrInvalidConfig, c.CIDR, MinIPv6PrefixBits)
	}
	prefix = prefix.Masked()
	p := &Pool6{prefix: prefix, hi: halves(prefix.Addr())[0],
		marks: map[uint64]string{}, allocTable: newAllocTable[uint64]()}
	p.rel = newQuarantineSet(c.Quarantine, c.LongerLeasesUntil, c.Now,
		func(off uint64) {
			p.insert(off)
			if !p.blocked(off) {
				p.nQuarFree++
			}
		},
		func(off uint64) {
			if !p.blocked(off) {
				p.nQuarFree--
			}
			p.settle(off)
		})
	start, err := p.parseIn("pool.start", c.Start)
	if err != nil {
		return nil, err
	}
	end, err := p.parseIn("pool.end", c.End)
	if err != nil {
		return nil, err
	}
	if start > end {
		return nil, fmt.Errorf("%w: pool.start %s is after pool.end %s", ErrInvalidConfig, c.Start, c.End)
	}
	p.start, p.last = start, end-start
	// The prefix's first address is the Subnet-Router anycast address
	// (RFC 4291 section 2.6.1): routers answer it, no host may hold it.
	p.block(halves(prefix.Addr())[1], "")
	if c.ServerIP != "" {
		a, err := p.parseIn("serverIP", c.ServerIP)
		if err != nil {
			return nil, err
		}
		p.block(a, MarkReserved)
	}
	for _, e := range c.Exclude {
		a, err := p.parseIn("exclude", e)
		if err != nil {
			return nil, err
		}
		p.block(a, MarkExcluded)
	}
	return p, nil
}

func halves(a netip.Addr) [2]uint64 {
	b := a.As16()
	return [2]uint64{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (p *Pool6) addr(off uint64) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], p.hi)
	binary.BigEndian.PutUint64(b[8:], p.start+off)
	return netip.AddrFrom16(b)
}

// parseIn parses an address of the prefix and returns its lower 64 bits.
func (p *Pool6) parseIn(field, value string) (uint64, error) {
	a, err := netip.ParseAddr(value)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return 0, fmt.Errorf("%w: %s %q is not an IPv6 address", ErrInvalidConfig, field, value)
	}
	if !p.prefix.Contains(a) {
		return 0, fmt.Errorf("%w: %s %s is outside %s", ErrInvalidConfig, field, value, p.prefix)
	}
	return halves(a)[1], nil
}

// offset returns the offset of ip in the range, or an error naming why not.
func (p *Pool6) offset(ip string) (uint64, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return 0, fmt.Errorf("%w: %q is not an IPv6 address", ErrOutsidePool, ip)
	}
	h := halves(a)
	if h[0] != p.hi || h[1] < p.start || h[1]-p.start > p.last {
		return 0, fmt.Errorf("%w: %s is not in %s-%s", ErrOutsidePool, ip, p.addr(0), p.addr(p.last))
	}
	return h[1] - p.start, nil
}

func (p *Pool6) insert(off uint64) {
	if i, ok := slices.BinarySearch(p.taken, off); !ok {
		p.taken = slices.Insert(p.taken, i, off)
	}
}

// settle takes off out of taken unless it is allocated, blocked or
// quarantined.
func (p *Pool6) settle(off uint64) {
	if _, used := p.owner[off]; used || p.blocked(off) || p.rel.has(off) {
		return
	}
	if i, ok := slices.BinarySearch(p.taken, off); ok {
		p.taken = slices.Delete(p.taken, i, i+1)
	}
}

// blocked reports whether off is never handed out (reserved, excluded,
// Subnet-Router anycast).
func (p *Pool6) blocked(off uint64) bool {
	_, ok := p.marks[off]
	return ok
}

// block marks an address (inside or outside the range) as never handed out.
func (p *Pool6) block(lo uint64, mark string) {
	if lo < p.start || lo-p.start > p.last {
		return
	}
	off := lo - p.start
	p.insert(off)
	if mark != "" {
		if _, ok := p.marks[off]; !ok || mark == MarkReserved {
			p.marks[off] = mark
		}
	} else if _, ok := p.marks[off]; !ok {
		p.marks[off] = "" // blocked without a status mark (Subnet-Router anycast)
	}
}

// lowestFree is the lowest offset not taken, and false when the range is full.
func (p *Pool6) lowestFree() (uint64, bool) {
	// taken[i] >= i for distinct sorted offsets, and taken[i]-i never
	// decreases: the first i with taken[i] > i is the first gap.
	lo, hi := 0, len(p.taken)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.taken[m] > uint64(m) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if off := uint64(lo); off <= p.last {
		return off, true
	}
	return 0, false
}

// Allocate gives mac the lowest free address, or the one it already holds.
func (p *Pool6) Allocate(mac string) (string, error) {
	g, err := p.AllocateFor(mac, "")
	return g.IP, err
}

// AllocateFor gives mac an address for holder, with Pool.AllocateFor's
// rules: the one mac already holds (adopting an entry whose holder is
// unknown), else the one mac released last if still quarantined, else the
// lowest free address that is not quarantined, else (nothing else free) the
// address whose quarantine ends first, reported in Grant.Early. A MAC held
// for another holder is an error wrapping ErrHeldByOther.
func (p *Pool6) AllocateFor(mac, holder string) (Grant, error) {
	mac = NormalizeMAC(mac)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rel.prune()
	if off, ok := p.byMAC[mac]; ok {
		if err := p.claim(off, mac, holder); err != nil {
			return Grant{}, err
		}
		return Grant{IP: p.addr(off).String()}, nil
	}
	if off, ok := p.rel.forMAC(mac); ok && !p.blocked(off) {
		p.take(off, mac, holder)
		return Grant{IP: p.addr(off).String()}, nil
	}
	if off, ok := p.lowestFree(); ok {
		p.take(off, mac, holder)
		return Grant{IP: p.addr(off).String()}, nil
	}
	if off, r, ok := p.rel.oldest(func(off uint64) bool { return !p.blocked(off) }); ok {
		p.take(off, mac, holder)
		return Grant{IP: p.addr(off).String(), Early: &r}, nil
	}
	return Grant{}, fmt.Errorf("allocate for %s in %s-%s: %w", mac, p.addr(0), p.addr(p.last), ErrExhausted)
}

// claim checks that the allocation at off may be answered to holder and
// records holder when it was unknown.
func (p *Pool6) claim(off uint64, mac, holder string) error {
	return p.claimFor(off, p.addrOf(off), mac, holder)
}

func (p *Pool6) addrOf(off uint64) string { return p.addr(off).String() }

// AllocateIP gives mac the address ip. Asking again for the address mac
// already holds succeeds; asking for a second address for mac moves it.
func (p *Pool6) AllocateIP(ip, mac string) error {
	return p.AllocateIPFor(ip, mac, "")
}

// AllocateIPFor is AllocateIP for holder (see AllocateFor). An address
// quarantined for another MAC is refused with ErrQuarantined.
func (p *Pool6) AllocateIPFor(ip, mac, holder string) error {
	mac = NormalizeMAC(mac)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rel.prune()
	off, err := p.offset(ip)
	if err != nil {
		return fmt.Errorf("allocate %s for %s: %w", ip, mac, err)
	}
	if owner, ok := p.owner[off]; ok {
		if owner == mac {
			return p.claim(off, mac, holder)
		}
		return fmt.Errorf("allocate %s for %s: %w to MAC %s", ip, mac, ErrAllocated, owner)
	}
	if p.blocked(off) {
		what := p.marks[off]
		if what == "" {
			what = "Subnet-Router anycast address"
		}
		return fmt.Errorf("allocate %s for %s: %w (%s)", ip, mac, ErrUnavailable, what)
	}
	if err := p.rel.refuse(off, ip, mac); err != nil {
		return err
	}
	if old, ok := p.byMAC[mac]; ok {
		if err := p.claim(old, mac, holder); err != nil {
			return err
		}
		p.free(old)
	}
	p.take(off, mac, holder)
	return nil
}

func (p *Pool6) take(off uint64, mac, holder string) {
	p.rel.remove(off)
	p.insert(off)
	p.addAlloc(off, mac, holder)
}

// free releases the allocation at off and quarantines it for its MAC.
func (p *Pool6) free(off uint64) {
	mac := p.removeAlloc(off)
	p.rel.released(off, mac)
	p.settle(off)
}

// Release frees ip. Releasing a free address is an error wrapping ErrNotAllocated.
func (p *Pool6) Release(ip string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, err := p.offset(ip)
	if err != nil {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	if _, ok := p.owner[off]; !ok {
		return fmt.Errorf("release %s: %w", ip, ErrNotAllocated)
	}
	p.free(off)
	return nil
}

// ReleaseMAC frees the address held by mac and returns it ("" if none).
func (p *Pool6) ReleaseMAC(mac string) string {
	ip, _ := p.ReleaseFor(mac, "")
	return ip
}

// ReleaseFor frees the address mac holds for holder and returns it ("" if
// mac holds none). An address mac holds for another holder is left alone
// (ErrHeldByOther). An empty holder, given or recorded, matches any.
func (p *Pool6) ReleaseFor(mac, holder string) (string, error) {
	mac = NormalizeMAC(mac)
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.byMAC[mac]
	if !ok {
		return "", nil
	}
	ip := p.addrOf(off)
	if err := p.releasableFor(off, ip, mac, holder); err != nil {
		return "", err
	}
	p.free(off)
	return ip, nil
}

// ReleaseExact frees ip only if it is still allocated to mac for holder
// exactly (holder "" meaning none recorded): a compare-and-release for
// callers that decided from an earlier view (the orphan sweep).
func (p *Pool6) ReleaseExact(ip, mac, holder string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, err := p.offset(ip)
	if err != nil || !p.isExact(off, mac, holder) {
		return false
	}
	p.free(off)
	return true
}

// Holder returns the holder recorded for ip ("" if none or unknown).
func (p *Pool6) Holder(ip string) string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	off, err := p.offset(ip)
	if err != nil {
		return ""
	}
	return p.holder[off]
}

// Holders returns address -> holder for the allocations whose holder is known.
func (p *Pool6) Holders() map[string]string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.holderMap(p.addrOf)
}

// Quarantined returns the addresses still quarantined now, also those
// blocked or outside the range since their release, each with Until set to
// the end of its quarantine.
func (p *Pool6) Quarantined() map[string]Released {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rel.snapshot(p.addrOf)
}

// Quarantine is the pool's current quarantine (its valid lifetime).
func (p *Pool6) Quarantine() time.Duration { return p.rel.dur }

// LongerLeasesUntil is Config6.LongerLeasesUntil.
func (p *Pool6) LongerLeasesUntil() time.Time { return p.rel.longerUntil }

// Lookup returns the address held by mac.
func (p *Pool6) Lookup(mac string) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	off, ok := p.byMAC[NormalizeMAC(mac)]
	if !ok {
		return "", false
	}
	return p.addr(off).String(), true
}

// Owner returns the MAC that holds ip, or the mark of a reserved or excluded
// address, and whether there is one.
func (p *Pool6) Owner(ip string) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	off, err := p.offset(ip)
	if err != nil {
		return "", false
	}
	if mac, ok := p.owner[off]; ok {
		return mac, true
	}
	m, ok := p.marks[off]
	return m, ok && m != ""
}

// Contains reports whether ip lies in the range start..end.
func (p *Pool6) Contains(ip string) bool {
	_, err := p.offset(ip)
	return err == nil
}

// Used is the number of addresses allocated to MACs.
func (p *Pool6) Used() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.owner)
}

// Available is the number of addresses that can still be allocated, capped
// at the largest int64 (a /64 range holds up to 2^64-1).
func (p *Pool6) Available() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	// Cannot wrap: a range of all 2^64 offsets starts at the Subnet-Router
	// anycast address, which is then taken (and never quarantined free).
	// Quarantined addresses count as available, as in Pool.
	free := p.last - (uint64(len(p.taken)) - p.nQuarFree) + 1
	if free > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(free)
}

// Allocated returns the status map: address -> MAC for allocations, and the
// marks EXCLUDED / RESERVED, with addresses in canonical form (RFC 5952).
func (p *Pool6) Allocated() map[string]string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	m := make(map[string]string, len(p.owner)+len(p.marks))
	for off, mark := range p.marks {
		if mark != "" {
			m[p.addr(off).String()] = mark
		}
	}
	for off, mac := range p.owner {
		m[p.addr(off).String()] = mac
	}
	return m
}

// Restore loads the allocations recorded in status.ipv6.allocated, with the
// same rules as Pool.Restore: marks are skipped, entries that cannot be
// honoured are returned, the first entry of a MAC in address order wins,
// and a dropped entry is quarantined for its MAC as if released now (its
// guest keeps using the address until its valid lifetime ends).
func (p *Pool6) Restore(allocated map[string]string) []Conflict {
	p.mu.Lock()
	defer p.mu.Unlock()
	return restoreAllocated(allocated, family[uint64]{
		offsetOf: p.offset,
		canon:    canon6,
		addr:     p.addrOf,
		blocked:  p.blocked,
		take:     func(off uint64, mac string) { p.take(off, mac, "") },
	}, &p.allocTable, &p.rel)
}

// RestoreHolders records the holders of restored allocations (address ->
// holder); entries of addresses not allocated are ignored. Call after Restore.
func (p *Pool6) RestoreHolders(holders map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.restoreHolderMap(holders, p.offset)
}

// RestoreQuarantine loads recorded quarantines (address -> release) with
// Pool.RestoreQuarantine's rules. Call after Restore.
func (p *Pool6) RestoreQuarantine(released map[string]Released) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rel.restore(released, canon6, p.offset, func(off uint64) bool {
		_, used := p.owner[off]
		return used
	})
}

// canon6 is the canonical form (RFC 5952) of an IPv6 address, for
// quarantines kept outside the range.
func canon6(ip string) (string, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return "", false
	}
	return a.String(), true
}
