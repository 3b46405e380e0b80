package linksource

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

var mac = net.HardwareAddr{2, 0, 0, 0, 0, 0x52}

func TestRecordThenLookup(t *testing.T) {
	tab := New()
	src := Source{Addr: netip.MustParseAddr("fe80::1"), MAC: mac}
	tab.Record([3]byte{1, 2, 3}, []byte{0, 2, 9}, src)
	if got, ok := tab.Lookup([3]byte{1, 2, 3}, []byte{0, 2, 9}, 0); !ok || got.Addr != src.Addr || got.MAC.String() != mac.String() {
		t.Fatalf("lookup gave %+v %v, want %+v", got, ok, src)
	}
	// Another transaction of the same client, or another client of the
	// same transaction ID, is not that message.
	if _, ok := tab.Lookup([3]byte{1, 2, 4}, []byte{0, 2, 9}, 0); ok {
		t.Error("found another transaction's source")
	}
	if _, ok := tab.Lookup([3]byte{1, 2, 3}, []byte{0, 2, 8}, 0); ok {
		t.Error("found another client's source")
	}
}

// The server may look the message up before the packet socket's goroutine
// has recorded it: Lookup waits for the Record.
func TestLookupWaitsForRecord(t *testing.T) {
	tab := New()
	tab.SetActive()
	go func() {
		time.Sleep(20 * time.Millisecond)
		tab.Record([3]byte{9, 9, 9}, []byte{0, 4}, Source{MAC: mac})
	}()
	if got, ok := tab.Lookup([3]byte{9, 9, 9}, []byte{0, 4}, 5*time.Second); !ok || got.MAC.String() != mac.String() {
		t.Fatalf("lookup gave %+v %v, want the record made while it waited", got, ok)
	}
	if _, ok := tab.Lookup([3]byte{8, 8, 8}, []byte{0, 4}, 10*time.Millisecond); ok {
		t.Fatal("found a message never recorded")
	}
}

// A flood of made-up DUIDs keeps the table at MaxEntries, the newest kept.
func TestTableBounded(t *testing.T) {
	tab := New()
	for i := range 3 * MaxEntries {
		tab.Record([3]byte{byte(i >> 16), byte(i >> 8), byte(i)}, []byte{0, 2}, Source{MAC: mac})
	}
	if n := tab.Len(); n != MaxEntries {
		t.Fatalf("table holds %d entries after %d records, want %d", n, 3*MaxEntries, MaxEntries)
	}
	last := 3*MaxEntries - 1
	if _, ok := tab.Lookup([3]byte{byte(last >> 16), byte(last >> 8), byte(last)}, []byte{0, 2}, 0); !ok {
		t.Error("newest entry evicted")
	}
	if _, ok := tab.Lookup([3]byte{0, 0, 0}, []byte{0, 2}, 0); ok {
		t.Error("oldest entry kept")
	}
}

// Without a recorder (no packet socket) nothing will be recorded: no wait.
func TestLookupWithoutRecorderDoesNotWait(t *testing.T) {
	tab := New()
	done := make(chan bool)
	go func() {
		_, ok := tab.Lookup([3]byte{1}, []byte{0, 2}, time.Hour)
		done <- ok
	}()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("found a message never recorded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Lookup waited for a recorder that does not exist")
	}
}

// A key recorded from two MACs (another host replaying a client's message
// from its own MAC) identifies nobody; a record of the same MAC again is
// fine. DUIDs longer than RFC 8415 allows are not recorded.
func TestConflictingAndOversizedRecords(t *testing.T) {
	tab := New()
	other := net.HardwareAddr{2, 0, 0, 0, 0, 0x66}
	tab.Record([3]byte{1}, []byte{0, 2, 1}, Source{MAC: mac})
	tab.Record([3]byte{1}, []byte{0, 2, 1}, Source{MAC: mac})
	if _, ok := tab.Lookup([3]byte{1}, []byte{0, 2, 1}, 0); !ok {
		t.Fatal("a key recorded twice from the same MAC is lost")
	}
	tab.Record([3]byte{1}, []byte{0, 2, 1}, Source{MAC: other})
	if got, ok := tab.Lookup([3]byte{1}, []byte{0, 2, 1}, 0); ok {
		t.Fatalf("a key recorded from two MACs found as %s", got.MAC)
	}
	long := make([]byte, MaxDUIDLen+1)
	tab.Record([3]byte{2}, long, Source{MAC: mac})
	if _, ok := tab.Lookup([3]byte{2}, long, 0); ok || tab.Len() != 1 {
		t.Fatalf("an oversized DUID recorded (table holds %d)", tab.Len())
	}
}

// Waiting lookups that find nothing leave nothing behind, and a Record
// wakes only its own key's waiters.
func TestWaitersCleanedUp(t *testing.T) {
	tab := New()
	tab.SetActive()
	done := make(chan bool, 100)
	for i := range 100 {
		go func() {
			_, ok := tab.Lookup([3]byte{byte(i)}, []byte{0, 4}, 20*time.Millisecond)
			done <- ok
		}()
	}
	for range 100 {
		if <-done {
			t.Fatal("found a message never recorded")
		}
	}
	tab.mu.Lock()
	n := len(tab.entries)
	tab.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d entries left by lookups that found nothing", n)
	}
}
