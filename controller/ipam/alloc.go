package ipam

import (
	"cmp"
	"fmt"
	"slices"
)

// allocTable is the allocations of one family of a pool: which MAC holds
// each offset, and for which holder when known. Pool and Pool6 embed one,
// so the holder rules (adopt an unknown holder, refuse and keep another's)
// and the rebuild from a status are written once. Callers hold the pool's
// lock.
type allocTable[O offset] struct {
	owner  map[O]string // offset -> MAC
	holder map[O]string // offset -> holder identity, when known
	byMAC  map[string]O // MAC -> offset
}

func newAllocTable[O offset]() allocTable[O] {
	return allocTable[O]{owner: map[O]string{}, holder: map[O]string{}, byMAC: map[string]O{}}
}

// addAlloc records off as held by mac for holder ("" unknown).
func (t *allocTable[O]) addAlloc(off O, mac, holder string) {
	t.owner[off] = mac
	if holder != "" {
		t.holder[off] = holder
	}
	t.byMAC[mac] = off
}

// removeAlloc forgets the allocation at off and returns its MAC.
func (t *allocTable[O]) removeAlloc(off O) string {
	mac := t.owner[off]
	delete(t.byMAC, mac)
	delete(t.owner, off)
	delete(t.holder, off)
	return mac
}

// holderConflict reports whether an allocation recorded for cur may not be
// answered to (or released for) holder: both known and different. An empty
// holder, given or recorded, matches any.
func holderConflict(cur, holder string) bool {
	return holder != "" && cur != "" && cur != holder
}

// claimFor checks that the allocation at off (the address ip) may be
// answered to holder and records holder when it was unknown.
func (t *allocTable[O]) claimFor(off O, ip, mac, holder string) error {
	switch cur := t.holder[off]; {
	case holderConflict(cur, holder):
		return fmt.Errorf("allocate for %s: %w: it holds %s for %s", mac, ErrHeldByOther, ip, cur)
	case cur == "" && holder != "":
		t.holder[off] = holder
	}
	return nil
}

// releasableFor checks that the allocation at off (the address ip, held
// by mac) may be released for holder.
func (t *allocTable[O]) releasableFor(off O, ip, mac, holder string) error {
	if cur := t.holder[off]; holderConflict(cur, holder) {
		return fmt.Errorf("release %s of %s: %w: it holds it for %s", ip, mac, ErrHeldByOther, cur)
	}
	return nil
}

// isExact reports whether off is allocated to mac for holder exactly
// (holder "" meaning none recorded).
func (t *allocTable[O]) isExact(off O, mac, holder string) bool {
	cur, ok := t.owner[off]
	return ok && cur == NormalizeMAC(mac) && t.holder[off] == holder
}

// holderMap returns address -> holder for the allocations whose holder is known.
func (t *allocTable[O]) holderMap(addr func(O) string) map[string]string {
	m := make(map[string]string, len(t.holder))
	for off, h := range t.holder {
		m[addr(off)] = h
	}
	return m
}

// restoreHolderMap records the holders of restored allocations (address ->
// holder); entries of addresses not allocated are ignored.
func (t *allocTable[O]) restoreHolderMap(holders map[string]string, offsetOf func(string) (O, error)) {
	for ip, h := range holders {
		off, err := offsetOf(ip)
		if _, used := t.owner[off]; err == nil && h != "" && used {
			t.holder[off] = h
		}
	}
}

// family is what restoreAllocated needs of a pool's family.
type family[O offset] struct {
	offsetOf func(string) (O, error)     // offset in the range, or why not
	canon    func(string) (string, bool) // canonical form of an address of the family
	addr     func(O) string              // address of an offset
	blocked  func(O) bool                // never handed out
	take     func(off O, mac string)     // record a restored allocation
}

// restoreAllocated is the body of Restore for either family: marks are
// skipped, entries that cannot be restored (outside the range, blocked, an
// address recorded twice, a MAC recorded twice) are returned; the first
// entry for a MAC wins in address order, so a rebuild is deterministic. A
// dropped entry is quarantined for its MAC as if released now (its guest
// keeps using the address until its lease ends), outside the range too.
func restoreAllocated[O offset](allocated map[string]string, f family[O], t *allocTable[O], q *quarantineSet[O]) []Conflict {
	type entry struct {
		off O
		ip  string
		mac string
	}
	entries := make([]entry, 0, len(allocated))
	var conflicts []Conflict
	for ip, mac := range allocated {
		if mac == MarkExcluded || mac == MarkReserved {
			continue
		}
		off, err := f.offsetOf(ip)
		if err != nil {
			conflicts = append(conflicts, Conflict{IP: ip, MAC: mac, Err: err})
			if a, ok := f.canon(ip); ok {
				q.droppedOutside(a, NormalizeMAC(mac))
			}
			continue
		}
		entries = append(entries, entry{off, ip, NormalizeMAC(mac)})
	}
	// Sorting by offset makes "first wins" independent of map order.
	slices.SortFunc(entries, func(a, b entry) int { return cmp.Compare(a.off, b.off) })
	var dropped []entry
	for _, e := range entries {
		owner, used := t.owner[e.off]
		switch {
		case f.blocked(e.off):
			conflicts = append(conflicts, Conflict{IP: e.ip, MAC: e.mac, Err: ErrUnavailable})
			dropped = append(dropped, e)
		case used: // the same address spelled twice
			conflicts = append(conflicts, Conflict{IP: e.ip, MAC: e.mac, Err: fmt.Errorf("%w to MAC %s", ErrAllocated, owner)})
		default:
			if prev, dup := t.byMAC[e.mac]; dup {
				conflicts = append(conflicts, Conflict{IP: e.ip, MAC: e.mac,
					Err: fmt.Errorf("MAC already holds %s", f.addr(prev))})
				dropped = append(dropped, e)
				continue
			}
			f.take(e.off, e.mac)
		}
	}
	// Its MAC gets it back (forMAC) only if it is not blocked.
	for _, e := range dropped {
		q.released(e.off, e.mac)
	}
	return conflicts
}
