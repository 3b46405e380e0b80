package ipam

import (
	"errors"
	"testing"
	"time"
)

// fakeClock is a settable clock for quarantine tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func quarantined(t testing.TB, clk *fakeClock) *Pool {
	t.Helper()
	// .10-.14: five addresses.
	return mustNew(t, Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.14", ServerIP: "10.0.0.1",
		Quarantine: time.Hour, Now: clk.now})
}

func mustAlloc(t testing.TB, p *Pool, mac, holder, want string) Grant {
	t.Helper()
	g, err := p.AllocateFor(mac, holder)
	if err != nil || g.IP != want {
		t.Fatalf("AllocateFor(%s, %s) = %+v, %v; want %s", mac, holder, g, err, want)
	}
	return g
}

// A released address does not go to another MAC before the quarantine has
// passed, unless nothing else is free; its own MAC gets it back.
func TestQuarantine(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := quarantined(t, clk)
	mustAlloc(t, p, "02:00:00:00:00:0a", "a", "10.0.0.10")
	mustAlloc(t, p, "02:00:00:00:00:0b", "b", "10.0.0.11")
	if ip, err := p.ReleaseFor("02:00:00:00:00:0a", "a"); err != nil || ip != "10.0.0.10" {
		t.Fatalf("ReleaseFor = %q, %v", ip, err)
	}
	clk.t = clk.t.Add(time.Minute)
	// Another MAC: not the lowest free .10, which is quarantined.
	mustAlloc(t, p, "02:00:00:00:00:0c", "c", "10.0.0.12")
	// Asking for it by address is refused, naming when it is free again.
	err := p.AllocateIPFor("10.0.0.10", "02:00:00:00:00:0d", "d")
	if !errors.Is(err, ErrQuarantined) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("AllocateIPFor of a quarantined address = %v, want ErrQuarantined", err)
	}
	// The MAC that released it gets it back, even under another holder
	// (the VM was recreated).
	mustAlloc(t, p, "02:00:00:00:00:0a", "a2", "10.0.0.10")
	if _, err := p.ReleaseFor("02:00:00:00:00:0a", "a2"); err != nil {
		t.Fatal(err)
	}
	// The state survives a rebuild from what the status records.
	q := quarantined(t, clk)
	q.Restore(p.Allocated())
	q.RestoreHolders(p.Holders())
	q.RestoreQuarantine(p.Quarantined())
	if got := q.Quarantined(); len(got) != 1 || got["10.0.0.10"].MAC != "02:00:00:00:00:0a" {
		t.Fatalf("restored quarantine = %v", got)
	}
	for _, pool := range []*Pool{p, q} {
		mustAlloc(t, pool, "02:00:00:00:00:0d", "d", "10.0.0.13")
		mustAlloc(t, pool, "02:00:00:00:00:0e", "e", "10.0.0.14")
		// Nothing else free: the quarantined address, reported as early.
		g := mustAlloc(t, pool, "02:00:00:00:00:0f", "f", "10.0.0.10")
		if g.Early == nil || g.Early.MAC != "02:00:00:00:00:0a" {
			t.Fatalf("last-resort grant %+v, want Early naming the releasing MAC", g)
		}
		if len(pool.Quarantined()) != 0 {
			t.Fatalf("quarantine still lists a taken address: %v", pool.Quarantined())
		}
	}

	// After the quarantine the address is free for anyone, and the entry is gone.
	r := quarantined(t, clk)
	mustAlloc(t, r, "02:00:00:00:00:0a", "a", "10.0.0.10")
	if _, err := r.ReleaseFor("02:00:00:00:00:0a", "a"); err != nil {
		t.Fatal(err)
	}
	mustAlloc(t, r, "02:00:00:00:00:0b", "b", "10.0.0.11")
	clk.t = clk.t.Add(time.Hour)
	if got := r.Quarantined(); len(got) != 0 {
		t.Fatalf("expired quarantine still listed: %v", got)
	}
	mustAlloc(t, r, "02:00:00:00:00:0c", "c", "10.0.0.10")
	// Expired entries are not restored.
	s := quarantined(t, clk)
	s.RestoreQuarantine(map[string]Released{"10.0.0.10": {MAC: "02:00:00:00:00:0a", At: clk.t.Add(-2 * time.Hour)}})
	mustAlloc(t, s, "02:00:00:00:00:0c", "c", "10.0.0.10")
}

// A release frees only the allocation made for its holder; an allocation
// whose holder is unknown (written by Harvester) is adopted by the first
// holder that claims its MAC.
func TestHolders(t *testing.T) {
	p := mustNew(t, Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.20", ServerIP: "10.0.0.1"})
	mac := "02:00:00:00:00:0a"
	mustAlloc(t, p, mac, "uid-a", "10.0.0.10")
	if _, err := p.ReleaseFor(mac, "uid-b"); !errors.Is(err, ErrHeldByOther) {
		t.Fatalf("release by another holder = %v, want ErrHeldByOther", err)
	}
	if _, err := p.AllocateFor(mac, "uid-b"); !errors.Is(err, ErrHeldByOther) {
		t.Fatalf("allocate by another holder = %v, want ErrHeldByOther", err)
	}
	if ip, ok := p.Lookup(mac); !ok || ip != "10.0.0.10" {
		t.Fatalf("allocation lost: %q %v", ip, ok)
	}
	// A compare-and-release against an older view (other holder) does nothing.
	if p.ReleaseExact("10.0.0.10", mac, "uid-old") || p.ReleaseExact("10.0.0.10", mac, "") {
		t.Fatal("ReleaseExact freed an allocation of another holder")
	}
	if ip, err := p.ReleaseFor(mac, "uid-a"); err != nil || ip != "10.0.0.10" {
		t.Fatalf("release by its holder = %q, %v", ip, err)
	}

	// Legacy status: no holders recorded.
	q := mustNew(t, Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.20", ServerIP: "10.0.0.1"})
	q.Restore(map[string]string{"10.0.0.15": mac})
	mustAlloc(t, q, mac, "uid-b", "10.0.0.15")
	if got := q.Holders(); got["10.0.0.15"] != "uid-b" {
		t.Fatalf("holders after adoption = %v", got)
	}
	if q.ReleaseExact("10.0.0.15", mac, "") {
		t.Fatal("a release decided on the legacy (holderless) entry freed the adopted allocation")
	}
	if !q.ReleaseExact("10.0.0.15", mac, "uid-b") {
		t.Fatal("exact release of the adopted allocation failed")
	}
	// RestoreHolders ignores addresses not allocated.
	q.RestoreHolders(map[string]string{"10.0.0.16": "uid-x"})
	if len(q.Holders()) != 0 {
		t.Fatalf("holder recorded for a free address: %v", q.Holders())
	}
}
