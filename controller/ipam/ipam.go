// Package ipam allocates the IPv4 addresses of one pool. It knows nothing of
// Kubernetes: the controller feeds it a pool's spec and the allocations
// recorded in the pool's status, and writes back what it returns.
//
// Addresses are kept in a bitmap over the range start..end, so allocation,
// release and lookup never scan a map; the lowest free address is found by
// scanning 64-bit words from a cursor that only moves back on release.
package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Errors callers can test for with errors.Is.
var (
	ErrExhausted     = errors.New("pool exhausted")
	ErrOutsidePool   = errors.New("address outside the pool")
	ErrUnavailable   = errors.New("address not available")
	ErrAllocated     = errors.New("address already allocated")
	ErrNotAllocated  = errors.New("address not allocated")
	ErrInvalidConfig = errors.New("invalid pool configuration")
)

// Marks recorded in place of a MAC address for addresses never handed out.
const (
	MarkExcluded = "EXCLUDED"
	MarkReserved = "RESERVED"
)

// MaxRangeSize is the largest range a pool may have: the addresses of a /8.
const MaxRangeSize = 1 << 24

// Config is the part of an IPPool's spec the IPAM needs.
type Config struct {
	CIDR     string
	Start    string
	End      string
	ServerIP string
	Router   string
	Exclude  []string
}

// Pool is the IPAM of one pool. It is safe for concurrent use.
type Pool struct {
	mu sync.RWMutex

	prefix   netip.Prefix
	start    uint32 // first address of the range
	size     uint32 // number of addresses in the range
	used     []uint64
	blocked  []uint64 // network, broadcast, server, router, excluded
	marks    map[uint32]string
	owner    map[uint32]string // offset -> MAC
	byMAC    map[string]uint32 // MAC -> offset
	nUsed    int
	nBlocked int
	cursor   uint32 // no free address below this offset
	// excludedOutside are excluded addresses outside the range (they may
	// even be outside the CIDR), reported as EXCLUDED by Allocated.
	excludedOutside map[string]bool
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
		owner:   map[uint32]string{},
		byMAC:   map[string]uint32{},
	}
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
		a, err := netip.ParseAddr(e)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%w: exclude %q is not an IPv4 address", ErrInvalidConfig, e)
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
	mac = NormalizeMAC(mac)
	p.mu.Lock()
	defer p.mu.Unlock()
	if off, ok := p.byMAC[mac]; ok {
		return addr(p.start + off).String(), nil
	}
	words := uint32(len(p.used))
	for w := p.cursor / 64; w < words; w++ {
		free := ^(p.used[w] | p.blocked[w])
		if free == 0 {
			continue
		}
		off := w*64 + uint32(bits.TrailingZeros64(free))
		p.take(off, mac)
		p.cursor = off + 1
		return addr(p.start + off).String(), nil
	}
	p.cursor = words * 64
	return "", fmt.Errorf("allocate for %s in %s-%s: %w", mac, addr(p.start), addr(p.start+p.size-1), ErrExhausted)
}

// AllocateIP gives mac the address ip. Asking again for the address mac
// already holds succeeds; asking for a second address for mac moves it.
func (p *Pool) AllocateIP(ip, mac string) error {
	mac = NormalizeMAC(mac)
	p.mu.Lock()
	defer p.mu.Unlock()
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
			return nil
		}
		return fmt.Errorf("allocate %s for %s: %w to MAC %s", ip, mac, ErrAllocated, p.owner[off])
	}
	if old, ok := p.byMAC[mac]; ok {
		p.free(old)
	}
	p.take(off, mac)
	return nil
}

func (p *Pool) take(off uint32, mac string) {
	p.used[off/64] |= 1 << (off % 64)
	p.owner[off] = mac
	p.byMAC[mac] = off
	p.nUsed++
}

func (p *Pool) free(off uint32) {
	p.used[off/64] &^= 1 << (off % 64)
	delete(p.byMAC, p.owner[off])
	delete(p.owner, off)
	p.nUsed--
	if off < p.cursor {
		p.cursor = off
	}
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
	mac = NormalizeMAC(mac)
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.byMAC[mac]
	if !ok {
		return ""
	}
	p.free(off)
	return addr(p.start + off).String()
}

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
// deterministic.
func (p *Pool) Restore(allocated map[string]string) []Conflict {
	type entry struct {
		off uint32
		ip  string
		mac string
	}
	entries := make([]entry, 0, len(allocated))
	var conflicts []Conflict
	p.mu.Lock()
	defer p.mu.Unlock()
	for ip, mac := range allocated {
		if mac == MarkExcluded || mac == MarkReserved {
			continue
		}
		off, err := p.offset(ip)
		if err != nil {
			conflicts = append(conflicts, Conflict{IP: ip, MAC: mac, Err: err})
			continue
		}
		entries = append(entries, entry{off, ip, NormalizeMAC(mac)})
	}
	// Sorting by offset makes "first wins" independent of map order.
	slices.SortFunc(entries, func(a, b entry) int { return cmp.Compare(a.off, b.off) })
	for _, e := range entries {
		switch {
		case p.isSet(p.blocked, e.off):
			conflicts = append(conflicts, Conflict{IP: e.ip, MAC: e.mac, Err: ErrUnavailable})
		case p.isSet(p.used, e.off):
			conflicts = append(conflicts, Conflict{IP: e.ip, MAC: e.mac, Err: fmt.Errorf("%w to MAC %s", ErrAllocated, p.owner[e.off])})
		default:
			if prev, dup := p.byMAC[e.mac]; dup {
				conflicts = append(conflicts, Conflict{IP: e.ip, MAC: e.mac,
					Err: fmt.Errorf("MAC already holds %s", addr(p.start+prev))})
				continue
			}
			p.take(e.off, e.mac)
		}
	}
	p.cursor = 0
	return conflicts
}

// NormalizeMAC lower-cases a MAC and writes it with colons, so that
// "22-37-37-82-93-7D" and "22:37:37:82:93:7d" are the same NIC.
func NormalizeMAC(mac string) string {
	return strings.ToLower(strings.ReplaceAll(mac, "-", ":"))
}
