// Package linksource remembers where directly received DHCPv6 messages came
// from on the link: the IPv6 source address and the Ethernet source address
// of the frame that carried each one.
//
// CoreDHCP's server6 hands plugins the message but not its source, so a
// client whose DUID carries no MAC (DUID-EN, as systemd-networkd sends by
// default; DUID-UUID, as dhcpcd does on machines with a UUID) could not be
// matched to a VM's MAC without a relay. The agent's packet socket beside
// the server (plugins/declinewatch.Watcher6) sees every datagram to port
// 547 with its link-layer source, records it here under the message's
// (transaction ID, client DUID), and ippool-lease looks it up. The two run
// concurrently on the same datagram, so Lookup waits a little for Record.
package linksource

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Source is where one message came from.
type Source struct {
	Addr netip.Addr       // IPv6 source address (the client's link-local)
	MAC  net.HardwareAddr // Ethernet source address of its frame
}

// MaxEntries bounds the table: a flood of messages with made-up DUIDs
// evicts older entries instead of growing it. An entry is needed only for
// the milliseconds between the packet socket and the server seeing the
// same datagram.
const MaxEntries = 4096

// MaxDUIDLen is the longest DUID recorded (RFC 8415 11.1: 128 bytes after
// the 2-byte type), which bounds the table's memory too.
const MaxDUIDLen = 130

// entry is one key's record. A key seen from two different MACs (someone
// replaying another client's message from its own MAC) is conflicting: it
// identifies nobody, so Lookup reports it as unknown.
type entry struct {
	src        Source
	recorded   bool
	conflicted bool
	waiters    chan struct{} // closed when the key is recorded; nil if nobody waits
	nwait      int           // lookups waiting on it
}

// Table is safe for concurrent use.
type Table struct {
	mu      sync.Mutex
	entries map[string]*entry
	ring    []string // recorded keys in insertion order, for eviction
	next    int
	active  atomic.Bool // something records: worth waiting for
}

// New returns an empty table.
func New() *Table {
	return &Table{entries: map[string]*entry{}, ring: make([]string, MaxEntries)}
}

// SetActive says that a recorder runs (a packet socket is open): from then
// on Lookup waits for records. Without one it answers at once.
func (t *Table) SetActive() { t.active.Store(true) }

func key(txid [3]byte, duid []byte) string { return string(txid[:]) + string(duid) }

// Record remembers the source of the message with this transaction ID and
// client DUID (its raw bytes). Only the key's own waiters are woken.
func (t *Table) Record(txid [3]byte, duid []byte, s Source) {
	if len(duid) > MaxDUIDLen {
		return
	}
	k := key(txid, duid)
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[k]
	if !ok {
		e = &entry{}
		t.entries[k] = e
	}
	if !e.recorded {
		if old := t.ring[t.next]; old != "" {
			t.evict(old)
		}
		t.ring[t.next] = k
		t.next = (t.next + 1) % len(t.ring)
		e.recorded, e.src = true, s
		if e.waiters != nil {
			close(e.waiters)
			e.waiters = nil
		}
		return
	}
	if e.src.MAC.String() != s.MAC.String() {
		e.conflicted = true
	}
}

// evict drops a recorded key; a waiter-only entry stays for its waiters.
func (t *Table) evict(k string) {
	if e, ok := t.entries[k]; ok && e.recorded {
		delete(t.entries, k)
	}
}

// Lookup returns the source recorded for the message, waiting up to wait
// for it to be recorded. A conflicting key is not found.
func (t *Table) Lookup(txid [3]byte, duid []byte, wait time.Duration) (Source, bool) {
	k := key(txid, duid)
	t.mu.Lock()
	e, ok := t.entries[k]
	if ok && e.recorded {
		t.mu.Unlock()
		return e.src, !e.conflicted
	}
	if wait <= 0 || !t.active.Load() || len(duid) > MaxDUIDLen {
		t.mu.Unlock()
		return Source{}, false
	}
	if !ok {
		e = &entry{}
		t.entries[k] = e
	}
	if e.waiters == nil {
		e.waiters = make(chan struct{})
	}
	e.nwait++
	ch := e.waiters
	t.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e.nwait--
	if !e.recorded {
		// Nobody recorded it in time: the last waiter removes the entry
		// it made (a flood of lookups leaves nothing behind).
		if e.nwait == 0 && t.entries[k] == e {
			delete(t.entries, k)
		}
		return Source{}, false
	}
	return e.src, !e.conflicted
}

// Len is the number of recorded entries held.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, e := range t.entries {
		if e.recorded {
			n++
		}
	}
	return n
}
