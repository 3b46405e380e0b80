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

// Table is safe for concurrent use.
type Table struct {
	mu      sync.Mutex
	entries map[string]Source
	ring    []string // keys in insertion order, for eviction
	next    int
	changed chan struct{} // closed and replaced by every Record
	active  atomic.Bool   // something records: worth waiting for
}

// SetActive says that a recorder runs (a packet socket is open): from then
// on Lookup waits for records. Without one it answers at once.
func (t *Table) SetActive() { t.active.Store(true) }

// New returns an empty table.
func New() *Table {
	return &Table{entries: map[string]Source{}, ring: make([]string, MaxEntries), changed: make(chan struct{})}
}

func key(txid [3]byte, duid []byte) string { return string(txid[:]) + string(duid) }

// Record remembers the source of the message with this transaction ID and
// client DUID (its raw bytes).
func (t *Table) Record(txid [3]byte, duid []byte, s Source) {
	k := key(txid, duid)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.entries[k]; !ok {
		if old := t.ring[t.next]; old != "" {
			delete(t.entries, old)
		}
		t.ring[t.next] = k
		t.next = (t.next + 1) % len(t.ring)
	}
	t.entries[k] = s
	close(t.changed)
	t.changed = make(chan struct{})
}

// Lookup returns the source recorded for the message, waiting up to wait
// for it to be recorded.
func (t *Table) Lookup(txid [3]byte, duid []byte, wait time.Duration) (Source, bool) {
	k := key(txid, duid)
	var timeout <-chan time.Time
	for {
		t.mu.Lock()
		s, ok := t.entries[k]
		changed := t.changed
		t.mu.Unlock()
		if ok || wait <= 0 || !t.active.Load() {
			return s, ok
		}
		if timeout == nil {
			timer := time.NewTimer(wait)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-changed:
		case <-timeout:
			return Source{}, false
		}
	}
}

// Len is the number of entries held.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}
