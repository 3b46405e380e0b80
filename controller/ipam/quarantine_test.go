package ipam

import (
	"errors"
	"testing"
	"time"
)

// rebuild makes a new IPAM from cfg and what p would record in the status,
// as the controller does after a spec change or a restart.
func rebuild(t testing.TB, cfg Config, p *Pool) *Pool {
	t.Helper()
	q := mustNew(t, cfg)
	q.Restore(p.Allocated())
	q.RestoreHolders(p.Holders())
	q.RestoreQuarantine(p.Quarantined())
	return q
}

// Review of issue 12 (B1): the lease time lowered after a release must not
// shorten the quarantine: the previous client holds a lease of the old
// length.
func TestQuarantineKeepsLeaseOfRelease(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	day := Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.11", ServerIP: "10.0.0.1", Quarantine: 24 * time.Hour, Now: clk.now}
	p := mustNew(t, day)
	mustAlloc(t, p, "02:00:00:00:00:0a", "a", "10.0.0.10")
	if _, err := p.ReleaseFor("02:00:00:00:00:0a", "a"); err != nil {
		t.Fatal(err)
	}
	minute := day
	minute.Quarantine = time.Minute // spec.leaseTime edited
	q := rebuild(t, minute, p)
	clk.t = clk.t.Add(61 * time.Second)
	if err := q.AllocateIPFor("10.0.0.10", "02:00:00:00:00:0b", "b"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("61 s after a release under a 24 h lease, another MAC asking for it: %v, want ErrQuarantined", err)
	}
	mustAlloc(t, q, "02:00:00:00:00:0b", "b", "10.0.0.11")
	// Recorded as such, so that yet another rebuild keeps it.
	if got := q.Quarantined()["10.0.0.10"]; !got.Until.Equal(clk.t.Add(-61 * time.Second).Add(24 * time.Hour)) {
		t.Fatalf("recorded quarantine %+v, want it to end 24 h after the release", got)
	}
	r := rebuild(t, minute, q)
	if g, err := r.AllocateFor("02:00:00:00:00:0c", "c"); !errors.Is(err, ErrExhausted) && g.Early == nil {
		t.Fatalf("third MAC got %+v, %v: the quarantined address without saying it is early", g, err)
	}
	// Ends 24 h after the release.
	clk.t = clk.t.Add(24*time.Hour - 61*time.Second)
	s := rebuild(t, minute, q)
	if len(s.Quarantined()) != 0 {
		t.Fatalf("quarantine still listed after 24 h: %v", s.Quarantined())
	}
	mustAlloc(t, s, "02:00:00:00:00:0c", "c", "10.0.0.10")
}

// An entry written by an older version (no end recorded) ends at its
// release plus the lease time of the first rebuild that reads it, and keeps
// that end when the lease time is lowered afterwards.
func TestQuarantineLegacyEntryPinned(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.11", ServerIP: "10.0.0.1", Quarantine: time.Hour, Now: clk.now}
	p := mustNew(t, cfg)
	p.RestoreQuarantine(map[string]Released{"10.0.0.10": {MAC: "02:00:00:00:00:0a", At: clk.t}})
	cfg.Quarantine = time.Minute
	q := rebuild(t, cfg, p)
	clk.t = clk.t.Add(59 * time.Minute)
	if err := q.AllocateIPFor("10.0.0.10", "02:00:00:00:00:0b", "b"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("legacy entry after the lease time was lowered: %v, want ErrQuarantined", err)
	}
}

// The lease time was lowered shortly before a release: the client may
// still hold a lease of the old length, granted before the change.
func TestQuarantineLongerLeasesUntil(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.11", ServerIP: "10.0.0.1",
		Quarantine: time.Minute, LongerLeasesUntil: clk.t.Add(24 * time.Hour), Now: clk.now}
	p := mustNew(t, cfg)
	mustAlloc(t, p, "02:00:00:00:00:0a", "a", "10.0.0.10")
	clk.t = clk.t.Add(time.Hour)
	if _, err := p.ReleaseFor("02:00:00:00:00:0a", "a"); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(2 * time.Hour)
	if err := p.AllocateIPFor("10.0.0.10", "02:00:00:00:00:0b", "b"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("2 h after a release with longer leases still running: %v, want ErrQuarantined", err)
	}
	clk.t = clk.t.Add(21 * time.Hour)
	if err := p.AllocateIPFor("10.0.0.10", "02:00:00:00:00:0b", "b"); err != nil {
		t.Fatalf("after the longer leases ended: %v", err)
	}
}

// Review of issue 12 (B2): an allocation a rebuild drops (its address now
// excluded) is quarantined for its MAC; the quarantine survives rebuilds
// while the address stays excluded, so removing the exclude within the
// lease time does not give the address to another MAC.
func TestDroppedAllocationQuarantined(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.12", ServerIP: "10.0.0.1", Quarantine: time.Hour, Now: clk.now}
	p := mustNew(t, cfg)
	mustAlloc(t, p, "02:00:00:00:00:0a", "a", "10.0.0.10")
	ex := cfg
	ex.Exclude = []string{"10.0.0.10"}
	q := mustNew(t, ex)
	if c := q.Restore(p.Allocated()); len(c) != 1 || !errors.Is(c[0].Err, ErrUnavailable) {
		t.Fatalf("conflicts %v, want .10 dropped", c)
	}
	q.RestoreQuarantine(p.Quarantined())
	// Its MAC is allocated again, not on the excluded address.
	mustAlloc(t, q, "02:00:00:00:00:0a", "a", "10.0.0.11")
	mustAlloc(t, q, "02:00:00:00:00:0b", "b", "10.0.0.12")
	// Nothing free: the excluded address is never the last resort.
	if g, err := q.AllocateFor("02:00:00:00:00:0c", "c"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("pool full but for the excluded quarantined address: got %+v, %v, want ErrExhausted", g, err)
	}
	clk.t = clk.t.Add(time.Minute)
	if _, err := q.ReleaseFor("02:00:00:00:00:0b", "b"); err != nil {
		t.Fatal(err)
	}
	q2 := rebuild(t, ex, q) // another spec change, a restart: still excluded
	if got := q2.Quarantined()["10.0.0.10"]; got.MAC != "02:00:00:00:00:0a" {
		t.Fatalf("quarantine of the excluded address lost on rebuild: %v", q2.Quarantined())
	}
	// The exclude is removed within the lease time.
	r := rebuild(t, cfg, q2)
	if err := r.AllocateIPFor("10.0.0.10", "02:00:00:00:00:0c", "c"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("un-excluded address asked for by another MAC: %v, want ErrQuarantined", err)
	}
	// .12 is quarantined for b; .10 for a: c gets the one ending first, as early.
	g, err := r.AllocateFor("02:00:00:00:00:0c", "c")
	if err != nil || g.Early == nil {
		t.Fatalf("third MAC got %+v, %v, want an early grant", g, err)
	}
	if g.IP != "10.0.0.10" || g.Early.MAC != "02:00:00:00:00:0a" {
		t.Fatalf("early grant %+v, want .10 (dropped a minute before .12 was released)", g)
	}
}

// The same for the range shrunk and grown back within the lease time.
func TestDroppedAllocationOutsideRangeQuarantined(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.12", ServerIP: "10.0.0.1", Quarantine: time.Hour, Now: clk.now}
	p := mustNew(t, cfg)
	mustAlloc(t, p, "02:00:00:00:00:0a", "a", "10.0.0.10")
	mustAlloc(t, p, "02:00:00:00:00:0b", "b", "10.0.0.11")
	mustAlloc(t, p, "02:00:00:00:00:0c", "c", "10.0.0.12")
	small := cfg
	small.End = "10.0.0.11"
	q := rebuild(t, small, p)
	if got := q.Quarantined()["10.0.0.12"]; got.MAC != "02:00:00:00:00:0c" {
		t.Fatalf("allocation dropped out of the range not quarantined: %v", q.Quarantined())
	}
	clk.t = clk.t.Add(time.Minute)
	q2 := rebuild(t, small, q)
	r := rebuild(t, cfg, q2)
	if err := r.AllocateIPFor("10.0.0.12", "02:00:00:00:00:0d", "d"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("address back in the range asked for by another MAC: %v, want ErrQuarantined", err)
	}
	mustAlloc(t, r, "02:00:00:00:00:0c", "c", "10.0.0.12") // its MAC gets it back
	clk.t = clk.t.Add(time.Hour)
	if got := rebuild(t, small, q2).Quarantined(); len(got) != 0 {
		t.Fatalf("ended quarantine outside the range still recorded: %v", got)
	}
}
