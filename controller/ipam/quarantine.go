package ipam

import (
	"cmp"
	"container/heap"
	"fmt"
	"slices"
	"time"
)

// offset is an address's position in a pool's range: uint32 for IPv4 (a
// bitmap index), uint64 for IPv6 (the lower half of the address).
type offset interface{ ~uint32 | ~uint64 }

// quarantineSet holds the quarantined addresses of one family of a pool:
// who released each, when, and until when that MAC may still use it. Both
// Pool and Pool6 keep theirs in one, so the rules (how long, which MAC gets
// an address back, which one goes first when nothing else is free, what a
// rebuild restores) are written once. The pool marks a quarantined offset
// as not free through onAdd / onRemove (a bitmap bit for IPv4, an entry of
// the taken slice for IPv6); callers hold the pool's lock.
type quarantineSet[O offset] struct {
	dur         time.Duration // the pool's current lease time (IPv6: valid lifetime); 0 disables
	longerUntil time.Time     // Config.LongerLeasesUntil
	now         func() time.Time

	byOff map[O]Released // offset -> who released it, when, until when
	byMAC map[string]O   // MAC -> its quarantined offset (latest)
	heap  relHeap[O]     // quarantines by end, soonest first; may hold stale items
	// outside are quarantined addresses outside the range (a dropped
	// allocation after the range shrank): kept, and recorded, so that they
	// are still quarantined if the range grows back before they expire.
	outside map[string]Released

	onAdd, onRemove func(O)
}

func newQuarantineSet[O offset](dur time.Duration, longerUntil time.Time, now func() time.Time, onAdd, onRemove func(O)) quarantineSet[O] {
	if now == nil {
		now = time.Now
	}
	return quarantineSet[O]{dur: dur, longerUntil: ceilSecond(longerUntil), now: now,
		byOff: map[O]Released{}, byMAC: map[string]O{}, outside: map[string]Released{},
		onAdd: onAdd, onRemove: onRemove}
}

// relItem is a quarantine in relHeap: it is current while byOff[off] still
// holds the release it was pushed for (same At and end).
type relItem[O offset] struct {
	off O
	at  time.Time
	end time.Time
}

type relHeap[O offset] []relItem[O]

func (h relHeap[O]) Len() int { return len(h) }
func (h relHeap[O]) Less(i, j int) bool {
	if c := h[i].end.Compare(h[j].end); c != 0 {
		return c < 0
	}
	return h[i].off < h[j].off
}
func (h relHeap[O]) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *relHeap[O]) Push(x any)   { *h = append(*h, x.(relItem[O])) }
func (h *relHeap[O]) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func (q *quarantineSet[O]) enabled() bool { return q.dur > 0 }

// releasedNow is the quarantine of an address mac stops holding now: its
// lease may run for the current lease time, or until the end of a lease
// granted under a longer lease time in force before.
func (q *quarantineSet[O]) releasedNow(mac string) Released {
	// Whole seconds, as the status records them, rounded up so that
	// recording never shortens a quarantine.
	now := ceilSecond(q.now())
	until := now.Add(q.dur)
	if q.longerUntil.After(until) {
		until = q.longerUntil
	}
	return Released{MAC: mac, At: now, Until: until}
}

// end is when the quarantine r ends: the later of its recorded end and its
// release plus the current quarantine.
func (q *quarantineSet[O]) end(r Released) time.Time {
	e := r.At.Add(q.dur)
	if r.Until.After(e) {
		return r.Until
	}
	return e
}

// current returns the release a heap item was pushed for, if it is still
// the address's quarantine.
func (q *quarantineSet[O]) current(it relItem[O]) (Released, bool) {
	r, ok := q.byOff[it.off]
	return r, ok && r.At.Equal(it.at) && q.end(r).Equal(it.end)
}

func (q *quarantineSet[O]) has(off O) bool {
	_, ok := q.byOff[off]
	return ok
}

// forMAC returns the offset mac released last, if still quarantined.
func (q *quarantineSet[O]) forMAC(mac string) (O, bool) {
	off, ok := q.byMAC[mac]
	return off, ok
}

// add quarantines off for r (replacing an older quarantine of off).
func (q *quarantineSet[O]) add(off O, r Released) {
	q.remove(off)
	q.byOff[off] = r
	// A MAC gets back only its latest address; an older one stays
	// quarantined for everyone else until it expires.
	q.byMAC[r.MAC] = off
	heap.Push(&q.heap, relItem[O]{off, r.At, q.end(r)})
	q.onAdd(off)
}

// remove ends the quarantine of off, if any.
func (q *quarantineSet[O]) remove(off O) {
	r, ok := q.byOff[off]
	if !ok {
		return
	}
	delete(q.byOff, off)
	if q.byMAC[r.MAC] == off {
		delete(q.byMAC, r.MAC)
	}
	q.onRemove(off)
}

// refuse is the error for giving off (the address ip) to mac while it is
// quarantined for another MAC, nil when it is not.
func (q *quarantineSet[O]) refuse(off O, ip, mac string) error {
	if r, ok := q.byOff[off]; ok && r.MAC != mac {
		return fmt.Errorf("allocate %s for %s: %w: released by %s at %s, free for other MACs from %s",
			ip, mac, ErrQuarantined, r.MAC, r.At.UTC().Format(time.RFC3339), q.end(r).UTC().Format(time.RFC3339))
	}
	return nil
}

// released quarantines off for mac as released now, if quarantine is on.
func (q *quarantineSet[O]) released(off O, mac string) {
	if q.enabled() {
		q.add(off, q.releasedNow(mac))
	}
}

// droppedOutside quarantines an address outside the range (canonical form)
// for mac as released now, if quarantine is on.
func (q *quarantineSet[O]) droppedOutside(ip, mac string) {
	if q.enabled() {
		q.outside[ip] = q.releasedNow(mac)
	}
}

// prune ends the quarantines that have ended by now.
func (q *quarantineSet[O]) prune() {
	now := q.now()
	for q.heap.Len() > 0 {
		it := q.heap[0]
		_, ok := q.current(it)
		if ok && now.Before(it.end) {
			break
		}
		heap.Pop(&q.heap)
		if ok {
			q.remove(it.off)
		}
	}
	for ip, r := range q.outside {
		if !now.Before(q.end(r)) {
			delete(q.outside, ip)
		}
	}
}

// oldest removes and returns the quarantine that ends soonest among those
// usable says may be handed out now (a blocked address never is: its
// quarantine is kept for when it is not).
func (q *quarantineSet[O]) oldest(usable func(O) bool) (O, Released, bool) {
	var keep []relItem[O]
	defer func() {
		for _, it := range keep {
			heap.Push(&q.heap, it)
		}
	}()
	for q.heap.Len() > 0 {
		it := heap.Pop(&q.heap).(relItem[O])
		r, ok := q.current(it)
		if !ok {
			continue // stale: taken or released again since
		}
		if !usable(it.off) {
			keep = append(keep, it)
			continue
		}
		q.remove(it.off)
		return it.off, r, true
	}
	var zero O
	return zero, Released{}, false
}

// snapshot returns the quarantines still running now, by address, each with
// Until set to its end.
func (q *quarantineSet[O]) snapshot(addr func(O) string) map[string]Released {
	q.prune()
	m := make(map[string]Released, len(q.byOff)+len(q.outside))
	for ip, r := range q.outside {
		r.Until = q.end(r)
		m[ip] = r
	}
	for off, r := range q.byOff {
		r.Until = q.end(r)
		m[addr(off)] = r
	}
	return m
}

// restore loads recorded quarantines (address -> release). Those ended, of
// addresses allocated (used), or not of the family (canon fails) are
// skipped. Those of addresses blocked or outside the range (offset fails)
// are kept until they end: the exclude may be removed, or the range grown
// back, while the previous client still holds its lease. A zero Until
// counts as At plus the quarantine, pinned from now on. An address already
// quarantined keeps the quarantine that ends later.
func (q *quarantineSet[O]) restore(released map[string]Released, canon func(string) (string, bool), offsetOf func(string) (O, error), used func(O) bool) {
	type entry struct {
		off O
		r   Released
	}
	if !q.enabled() {
		return
	}
	now := q.now()
	entries := make([]entry, 0, len(released))
	for ip, r := range released {
		r.MAC = NormalizeMAC(r.MAC)
		if r.Until.IsZero() {
			r.Until = r.At.Add(q.dur)
		}
		if !now.Before(q.end(r)) {
			continue
		}
		off, err := offsetOf(ip)
		if err != nil {
			if c, ok := canon(ip); ok {
				if cur, ok := q.outside[c]; !ok || q.end(cur).Before(q.end(r)) {
					q.outside[c] = r
				}
			}
			continue
		}
		if used(off) {
			continue
		}
		if cur, ok := q.byOff[off]; ok && !q.end(cur).Before(q.end(r)) {
			continue
		}
		entries = append(entries, entry{off, r})
	}
	// Oldest first, as they were released; ties in address order.
	slices.SortFunc(entries, func(a, b entry) int {
		if c := a.r.At.Compare(b.r.At); c != 0 {
			return c
		}
		return cmp.Compare(a.off, b.off)
	})
	for _, e := range entries {
		q.add(e.off, e.r)
	}
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}
