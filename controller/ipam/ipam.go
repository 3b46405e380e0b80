// Package ipam allocates the IPv4 addresses of one pool. It knows nothing of
// Kubernetes: the controller feeds it a pool's spec and the allocations
// recorded in the pool's status, and writes back what it returns.
//
// Addresses are kept in a bitmap over the range start..end, so allocation,
// release and lookup never scan a map; the lowest free address is found by
// scanning 64-bit words from a cursor that only moves back on release.
//
// Each allocation may carry its holder (the identity of what it was made
// for, the VMNetCfg's UID in the controller), so that a release frees only
// the allocation it was meant to free. A released address is quarantined
// while its previous client may still hold a lease on it (see Released), so
// it goes to another MAC only when nothing else is free. So is an allocation
// a rebuild has to drop (its address is now excluded or out of the range):
// the guest keeps using that address until its lease ends.
package ipam

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Errors callers can test for with errors.Is.
var (
	ErrExhausted     = errors.New("pool exhausted")
	ErrOutsidePool   = errors.New("address outside the pool")
	ErrUnavailable   = errors.New("address not available")
	ErrAllocated     = errors.New("address already allocated")
	ErrNotAllocated  = errors.New("address not allocated")
	ErrInvalidConfig = errors.New("invalid pool configuration")
	// ErrHeldByOther: the MAC holds an address for another holder (another
	// VMNetCfg lists the same MAC, or one being deleted still holds it).
	ErrHeldByOther = errors.New("MAC holds an address for another owner")
	// ErrQuarantined: the requested address was released by another MAC
	// less than the quarantine ago. It wraps ErrUnavailable.
	ErrQuarantined = fmt.Errorf("%w: recently released by another MAC", ErrUnavailable)
)

// Marks recorded in place of a MAC address for addresses never handed out.
const (
	MarkExcluded = "EXCLUDED"
	MarkReserved = "RESERVED"
)

// MaxRangeSize is the largest range a pool may have: the addresses of a /8.
const MaxRangeSize = 1 << 24

// MaxStatusAddresses is the largest range a new pool may have (a /18): the
// status of such a pool, every address allocated, must fit in one etcd
// object (1.5 MiB by default). Per address at most 81 bytes: 38 for its
// "allocated" entry ("255.255.255.255":"02:00:00:00:00:0a",) and 43 for its
// "owners" entry (a 22-character token); a quarantined address (74 bytes,
// up to 93 with its own lease once the lease time was lowered) has no
// allocation. Both maps are atomic, so managedFields add nothing per
// address. 16384 x 81 = 1.33 MB, leaving 0.24 MB for metadata, spec and
// conditions (TestFullPoolStatusFits writes such a status to a real etcd);
// every address quarantined with its own lease is 1.52 MB. An allocation
// dropped because its address was excluded (pool paused) becomes an
// EXCLUDED mark plus a quarantine, 22 to 41 bytes more than the
// allocation: excluding more than about 11,000 of a full /18's allocated
// addresses at once (6,000 just after the lease time was lowered) makes
// the rebuilt status too large to write; exclude in smaller steps.
const MaxStatusAddresses = 1 << 14

// MaxObjectBytes is etcd's default object size limit (--max-request-bytes,
// 1.5 MiB): a pool, as JSON, must stay under it for its status to be written.
const MaxObjectBytes = 1572864

// Config is the part of an IPPool's spec the IPAM needs.
type Config struct {
	CIDR     string
	Start    string
	End      string
	ServerIP string
	Router   string
	Exclude  []string
	// Quarantine is how long a released address is kept from other MACs
	// at least (the pool's current lease time); 0 disables quarantine.
	Quarantine time.Duration
	// LongerLeasesUntil, when set, is the latest end of a lease granted
	// before the pool's lease time was lowered: an address released before
	// then stays quarantined until then at least.
	LongerLeasesUntil time.Time
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Released is a quarantined address: who released it, when, and until when
// that MAC may still hold a lease on it. The quarantine ends at the later of
// Until and At plus the pool's current quarantine: lowering the lease time
// never shortens the quarantine of an address released under a longer one.
// A zero Until (recorded by an older version) counts as At plus the
// quarantine of the pool that restores it.
type Released struct {
	MAC   string
	At    time.Time
	Until time.Time
}

// Grant is the result of an allocation.
type Grant struct {
	IP string
	// Early is set when the address was still quarantined for another MAC
	// and was handed out because no other address was free.
	Early *Released
}

// Pool is the IPAM of one pool. It is safe for concurrent use.
type Pool struct {
	mu sync.RWMutex

	prefix  netip.Prefix
	start   uint32 // first address of the range
	size    uint32 // number of addresses in the range
	used    []uint64
	blocked []uint64 // network, broadcast, server, router, excluded
	marks   map[uint32]string
	allocTable[uint32]
	nUsed    int
	nBlocked int
	cursor   uint32 // no free address below this offset

	// quar marks quarantined addresses: free, or blocked since the release
	// (excluded after it), but kept from other MACs (rel).
	quar []uint64
	rel  quarantineSet[uint32]
	// excludedOutside are excluded addresses outside the range (they may
	// even be outside the CIDR), reported as EXCLUDED by Allocated.
	excludedOutside map[string]bool
	// ignoredExclude are exclude entries that are no address (skipped).
	ignoredExclude []string
}

// New builds an empty pool from its configuration.
func New(c Config) (*Pool, error) {
	prefix, err := netip.ParsePrefix(c.CIDR)
	if err != nil || !prefix.Addr().Is4() {
		return nil, fmt.Errorf("%w: cidr %q is not an IPv4 network", ErrInvalidConfig, c.CIDR)
	}
	prefix = prefix.Masked()
	start, err := parseIn(prefix, "pool.start", c.Start)
	if err != nil {
		return nil, err
	}
	end, err := parseIn(prefix, "pool.end", c.End)
	if err != nil {
		return nil, err
	}
	if start > end {
		return nil, fmt.Errorf("%w: pool.start %s is after pool.end %s", ErrInvalidConfig, c.Start, c.End)
	}
	// Bounded so the bitmap stays small (2 MiB at most) and the arithmetic
	// below cannot overflow uint32.
	if uint64(end)-uint64(start)+1 > MaxRangeSize {
		return nil, fmt.Errorf("%w: range %s-%s holds more than %d addresses (a /8)", ErrInvalidConfig, c.Start, c.End, MaxRangeSize)
	}
	size := end - start + 1
	words := (size + 63) / 64
	p := &Pool{
		prefix:  prefix,
		start:   start,
		size:    size,
		used:    make([]uint64, words),
		blocked: make([]uint64, words),
		marks:   map[uint32]string{},
		quar:    make([]uint64, words),

		allocTable: newAllocTable[uint32](),
	}
	p.rel = newQuarantineSet(c.Quarantine, c.LongerLeasesUntil, c.Now,
		func(off uint32) { p.quar[off/64] |= 1 << (off % 64) },
		func(off uint32) {
			p.quar[off/64] &^= 1 << (off % 64)
			if off < p.cursor {
				p.cursor = off
			}
		})
	// Bits past the end of the range count as blocked so word scans skip them.
	for i := size; i < words*64; i++ {
		p.blocked[i/64] |= 1 << (i % 64)
	}
	network := u32(prefix.Addr())
	broadcast := network | ^uint32(0)>>prefix.Bits()
	if prefix.Bits() < 31 {
		p.block(network, "")
		p.block(broadcast, "")
	}
	for _, r := range []struct{ name, value string }{{"serverIP", c.ServerIP}, {"router", c.Router}} {
		if r.value == "" {
			continue
		}
		a, err := parseIn(prefix, r.name, r.value)
		if err != nil {
			return nil, err
		}
		p.block(a, MarkReserved)
	}
	for _, e := range c.Exclude {
		a, ok := ParseIPv4(e)
		if !ok {
			// Harvester admits any string here and its IPAM ignores what
			// is no address: a stored pool must keep being served.
			p.ignoredExclude = append(p.ignoredExclude, e)
			continue
		}
		if off := u32(a); off >= start && off <= end {
			p.block(off, MarkExcluded)
			continue
		}
		// Outside the range nothing is handed out anyway, but Harvester's
		// status lists every excluded address as EXCLUDED: so do we.
		if p.excludedOutside == nil {
			p.excludedOutside = map[string]bool{}
		}
		p.excludedOutside[a.String()] = true
	}
	return p, nil
}

// ParseIPv4 reads an address a Harvester manifest may hold (exclude
// entries, a VMNetCfg's ipAddress) as Harvester's IPAM (net.ParseIP) does:
// an IPv4-mapped IPv6 form ("::ffff:192.168.100.15") is its IPv4 address.
// ok is false for anything that is no IPv4 address (a CIDR, a name, IPv6).
// The controller and the webhook both read those fields with it.
func ParseIPv4(s string) (a netip.Addr, ok bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	return a, a.Is4()
}

// IgnoredExclude lists the exclude entries New skipped because they are no
// IPv4 address (they exclude nothing, as in Harvester).
func (p *Pool) IgnoredExclude() []string { return slices.Clone(p.ignoredExclude) }

func parseIn(prefix netip.Prefix, field, value string) (uint32, error) {
	a, err := netip.ParseAddr(value)
	if err != nil || !a.Is4() {
		return 0, fmt.Errorf("%w: %s %q is not an IPv4 address", ErrInvalidConfig, field, value)
	}
	if !prefix.Contains(a) {
		return 0, fmt.Errorf("%w: %s %s is outside %s", ErrInvalidConfig, field, value, prefix)
	}
	return u32(a), nil
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// block marks an address (inside or outside the range) as never handed out.
// Only addresses inside the range get a bit and a mark.
func (p *Pool) block(a uint32, mark string) {
	if a < p.start || a-p.start >= p.size {
		return
	}
	off := a - p.start
	if p.blocked[off/64]&(1<<(off%64)) == 0 {
		p.blocked[off/64] |= 1 << (off % 64)
		p.nBlocked++
	}
	if mark != "" {
		if _, ok := p.marks[off]; !ok || mark == MarkReserved {
			p.marks[off] = mark
		}
	}
}

func (p *Pool) isSet(bm []uint64, off uint32) bool { return bm[off/64]&(1<<(off%64)) != 0 }

// offset returns the offset of ip in the range, or an error naming why not.
func (p *Pool) offset(ip string) (uint32, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		return 0, fmt.Errorf("%w: %q is not an IPv4 address", ErrOutsidePool, ip)
	}
	v := u32(a)
	if v < p.start || v-p.start >= p.size {
		return 0, fmt.Errorf("%w: %s is not in %s-%s", ErrOutsidePool, ip, addr(p.start), addr(p.start+p.size-1))
	}
	return v - p.start, nil
}

// Allocate gives mac the lowest free address, or the one it already holds.
func (p *Pool) Allocate(mac string) (string, error) {
	g, err := p.AllocateFor(mac, "")
	return g.IP, err
}

// AllocateFor gives mac an address for holder: the one mac already holds
// (adopting an entry whose holder is unknown), else the one mac released
// last if it is still quarantined, else the lowest free address that is not
// quarantined for another MAC, else (nothing else free) the address whose
// quarantine is oldest, reported in Grant.Early. A MAC held for another
// holder is an error wrapping ErrHeldByOther. An empty holder matches any.
func (p *Pool) AllocateFor(mac, holder string) (Grant, error) {
	mac = NormalizeMAC(mac)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rel.prune()
	if off, ok := p.byMAC[mac]; ok {
		if err := p.claim(off, mac, holder); err != nil {
			return Grant{}, err
		}
		return Grant{IP: addr(p.start + off).String()}, nil
	}
	if off, ok := p.rel.forMAC(mac); ok && !p.isSet(p.blocked, off) {
		p.take(off, mac, holder)
		return Grant{IP: addr(p.start + off).String()}, nil
	}
	words := uint32(len(p.used))
	for w := p.cursor / 64; w < words; w++ {
		free := ^(p.used[w] | p.blocked[w] | p.quar[w])
		if free == 0 {
			continue
		}
		off := w*64 + uint32(bits.TrailingZeros64(free))
		p.take(off, mac, holder)
		p.cursor = off + 1
		return Grant{IP: addr(p.start + off).String()}, nil
	}
	p.cursor = words * 64
	// Last resort: the quarantined address whose quarantine ends soonest,
	// never one blocked since (its quarantine is kept for when it is not).
	if off, r, ok := p.rel.oldest(func(off uint32) bool { return !p.isSet(p.blocked, off) }); ok {
		p.take(off, mac, holder)
		return Grant{IP: addr(p.start + off).String(), Early: &r}, nil
	}
	return Grant{}, fmt.Errorf("allocate for %s in %s-%s: %w", mac, addr(p.start), addr(p.start+p.size-1), ErrExhausted)
}

// claim checks that the allocation at off may be answered to holder and
// records holder when it was unknown.
func (p *Pool) claim(off uint32, mac, holder string) error {
	return p.claimFor(off, addr(p.start+off).String(), mac, holder)
}

// AllocateIP gives mac the address ip. Asking again for the address mac
// already holds succeeds; asking for a second address for mac moves it.
func (p *Pool) AllocateIP(ip, mac string) error {
	return p.AllocateIPFor(ip, mac, "")
}

// AllocateIPFor is AllocateIP for holder (see AllocateFor). An address
// quarantined for another MAC is refused with ErrQuarantined: the user
// asked for that one address, so there is no other to give instead.
func (p *Pool) AllocateIPFor(ip, mac, holder string) error {
	mac = NormalizeMAC(mac)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rel.prune()
	off, err := p.offset(ip)
	if err != nil {
		return fmt.Errorf("allocate %s for %s: %w", ip, mac, err)
	}
	if p.isSet(p.blocked, off) {
		what := p.marks[off]
		if what == "" {
			what = "network or broadcast address"
		}
		return fmt.Errorf("allocate %s for %s: %w (%s)", ip, mac, ErrUnavailable, what)
	}
	if p.isSet(p.used, off) {
		if p.owner[off] == mac {
			return p.claim(off, mac, holder)
		}
		return fmt.Errorf("allocate %s for %s: %w to MAC %s", ip, mac, ErrAllocated, p.owner[off])
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

func (p *Pool) take(off uint32, mac, holder string) {
	p.rel.remove(off)
	p.used[off/64] |= 1 << (off % 64)
	p.addAlloc(off, mac, holder)
	p.nUsed++
}

func (p *Pool) free(off uint32) {
	mac := p.removeAlloc(off)
	p.used[off/64] &^= 1 << (off % 64)
	p.nUsed--
	if off < p.cursor {
		p.cursor = off
	}
	p.rel.released(off, mac)
}

// Release frees ip. Releasing a free address is an error wrapping ErrNotAllocated.
func (p *Pool) Release(ip string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, err := p.offset(ip)
	if err != nil {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	if !p.isSet(p.used, off) {
		return fmt.Errorf("release %s: %w", ip, ErrNotAllocated)
	}
	p.free(off)
	return nil
}

// ReleaseMAC frees the address held by mac and returns it ("" if none).
func (p *Pool) ReleaseMAC(mac string) string {
	ip, _ := p.ReleaseFor(mac, "")
	return ip
}

// ReleaseFor frees the address mac holds for holder and returns it ("" if
// mac holds none). An address mac holds for another holder is left alone
// (ErrHeldByOther): that allocation is not the one the caller made. An
// empty holder, given or recorded, matches any.
func (p *Pool) ReleaseFor(mac, holder string) (string, error) {
	mac = NormalizeMAC(mac)
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.byMAC[mac]
	if !ok {
		return "", nil
	}
	ip := addr(p.start + off).String()
	if err := p.releasableFor(off, ip, mac, holder); err != nil {
		return "", err
	}
	p.free(off)
	return ip, nil
}

// ReleaseExact frees ip only if it is still allocated to mac for holder
// exactly (holder "" meaning none recorded): a compare-and-release for
// callers that decided from an earlier view.
func (p *Pool) ReleaseExact(ip, mac, holder string) bool {
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
func (p *Pool) Holder(ip string) string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	off, err := p.offset(ip)
	if err != nil {
		return ""
	}
	return p.holder[off]
}

// Holders returns address -> holder for the allocations whose holder is known.
func (p *Pool) Holders() map[string]string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.holderMap(p.addrOf)
}

func (p *Pool) addrOf(off uint32) string { return addr(p.start + off).String() }

// Quarantined returns the addresses still quarantined now, also those
// blocked or outside the range since their release, each with Until set to
// the end of its quarantine.
func (p *Pool) Quarantined() map[string]Released {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rel.snapshot(p.addrOf)
}

// Quarantine is the pool's current quarantine (its lease time).
func (p *Pool) Quarantine() time.Duration { return p.rel.dur }

// LongerLeasesUntil is Config.LongerLeasesUntil.
func (p *Pool) LongerLeasesUntil() time.Time { return p.rel.longerUntil }

// Lookup returns the address held by mac.
func (p *Pool) Lookup(mac string) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	off, ok := p.byMAC[NormalizeMAC(mac)]
	if !ok {
		return "", false
	}
	return addr(p.start + off).String(), true
}

// Owner returns the MAC that holds ip, or the mark of a reserved or excluded
// address, and whether there is one.
func (p *Pool) Owner(ip string) (string, bool) {
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
	return m, ok
}

// Contains reports whether ip lies in the range start..end.
func (p *Pool) Contains(ip string) bool {
	_, err := p.offset(ip)
	return err == nil
}

// Used is the number of addresses allocated to MACs.
func (p *Pool) Used() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.nUsed
}

// Available is the number of addresses that can still be allocated.
func (p *Pool) Available() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return int(p.size) - p.nBlocked - p.nUsed
}

// Allocated returns the status map: address -> MAC for allocations, the
// marks EXCLUDED / RESERVED for addresses of the range never handed out, and
// EXCLUDED for every excluded address outside the range (as Harvester does).
func (p *Pool) Allocated() map[string]string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	m := make(map[string]string, len(p.owner)+len(p.marks)+len(p.excludedOutside))
	for ip := range p.excludedOutside {
		m[ip] = MarkExcluded
	}
	for off, mark := range p.marks {
		m[addr(p.start+off).String()] = mark
	}
	for off, mac := range p.owner {
		m[addr(p.start+off).String()] = mac
	}
	return m
}

// Conflict is an entry of a recorded status that could not be restored.
type Conflict struct {
	IP, MAC string
	Err     error
}

func (c Conflict) Error() string { return fmt.Sprintf("restore %s=%s: %v", c.IP, c.MAC, c.Err) }

// Restore loads the allocations recorded in a pool's status (marks are
// recomputed from the config and skipped). Entries that cannot be restored,
// such as an address outside the range or a MAC recorded twice, are
// returned; the first entry for a MAC wins in address order, so a rebuild is
// deterministic. A dropped entry is quarantined for its MAC as if released
// now: its guest keeps using the address until its lease ends, so it must
// not go to another MAC before then (should it become free again: the
// exclude removed, the range grown back).
func (p *Pool) Restore(allocated map[string]string) []Conflict {
	p.mu.Lock()
	defer p.mu.Unlock()
	conflicts := restoreAllocated(allocated, family[uint32]{
		offsetOf: p.offset,
		canon:    canon4,
		addr:     p.addrOf,
		blocked:  func(off uint32) bool { return p.isSet(p.blocked, off) },
		take:     func(off uint32, mac string) { p.take(off, mac, "") },
	}, &p.allocTable, &p.rel)
	p.cursor = 0
	return conflicts
}

// RestoreHolders records the holders of restored allocations (address ->
// holder); entries of addresses not allocated are ignored. Call after Restore.
func (p *Pool) RestoreHolders(holders map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.restoreHolderMap(holders, p.offset)
}

// RestoreQuarantine loads recorded quarantines (address -> release). Those
// ended, of addresses allocated, or not IPv4 are skipped. Those of
// addresses blocked or outside the range are kept until they end: the
// exclude may be removed, or the range grown back, while the previous
// client still holds its lease. A zero Until counts as At plus the
// quarantine, pinned from now on (see Released). Call after Restore; an
// address Restore quarantined keeps the quarantine that ends later.
func (p *Pool) RestoreQuarantine(released map[string]Released) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rel.restore(released, canon4, p.offset, func(off uint32) bool { return p.isSet(p.used, off) })
}

// canon4 is the canonical form of an IPv4 address, for quarantines kept
// outside the range.
func canon4(ip string) (string, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		return "", false
	}
	return a.String(), true
}

// NormalizeMAC lower-cases a MAC and writes it with colons, so that
// "22-37-37-82-93-7D" and "22:37:37:82:93:7d" are the same NIC.
func NormalizeMAC(mac string) string {
	return strings.ToLower(strings.ReplaceAll(mac, "-", ":"))
}
