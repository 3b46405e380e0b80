package ipam

import (
	"errors"
	"math"
	"testing"
	"time"
)

// The issue-12 guarantees for the IPv6 half of a pool (issue 15: "the same
// guarantees must hold for both families").

const (
	mac6a = "02:00:00:00:00:0a"
	mac6b = "02:00:00:00:00:0b"
	mac6c = "02:00:00:00:00:0c"
	mac6d = "02:00:00:00:00:0d"
)

// rebuild6 makes a new IPv6 IPAM from cfg and what p would record in the
// status, as the controller does after a spec change, a restart or a
// leader change.
func rebuild6(t testing.TB, cfg Config6, p *Pool6) *Pool6 {
	t.Helper()
	q := mustNew6(t, cfg)
	q.Restore(p.Allocated())
	q.RestoreHolders(p.Holders())
	q.RestoreQuarantine(p.Quarantined())
	return q
}

func mustAlloc6(t testing.TB, p *Pool6, mac, holder, want string) Grant {
	t.Helper()
	g, err := p.AllocateFor(mac, holder)
	if err != nil || g.IP != want || g.Early != nil {
		t.Fatalf("AllocateFor(%s, %s) = %+v, %v; want %s", mac, holder, g, err, want)
	}
	return g
}

// #12 item 3 for IPv6: a released address does not go to another MAC
// before the valid lifetime has passed, unless nothing else is free; its
// own MAC gets it back; the quarantine survives a rebuild.
func TestIPv6Quarantine(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config6{CIDR: "fd00::/64", Start: "fd00::10", End: "fd00::14", ServerIP: "fd00::1", Quarantine: time.Hour, Now: clk.now}
	p := mustNew6(t, cfg)
	mustAlloc6(t, p, mac6a, "a", "fd00::10")
	mustAlloc6(t, p, mac6b, "b", "fd00::11")
	if ip, err := p.ReleaseFor(mac6a, "a"); err != nil || ip != "fd00::10" {
		t.Fatalf("ReleaseFor = %q, %v", ip, err)
	}
	if got := p.Available(); got != 4 {
		t.Fatalf("Available = %d, want 4 (a quarantined address counts as available, as in IPv4)", got)
	}
	clk.t = clk.t.Add(time.Minute)
	// Another MAC: not the lowest free ::10, which is quarantined.
	mustAlloc6(t, p, mac6c, "c", "fd00::12")
	if err := p.AllocateIPFor("fd00::10", mac6d, "d"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("AllocateIPFor of a quarantined address = %v, want ErrQuarantined", err)
	}
	// A restart or a leader change: the quarantine is restored.
	q := rebuild6(t, cfg, p)
	if got := q.Quarantined(); len(got) != 1 || got["fd00::10"].MAC != mac6a || !got["fd00::10"].Until.Equal(clk.t.Add(59*time.Minute)) {
		t.Fatalf("restored quarantine = %v", got)
	}
	mustAlloc6(t, q, mac6d, "d", "fd00::13")
	// The MAC that released it gets it back, even for another holder (the
	// VM was recreated).
	mustAlloc6(t, q, mac6a, "a2", "fd00::10")
	if _, err := q.ReleaseFor(mac6a, "a2"); err != nil {
		t.Fatal(err)
	}
	// Once the valid lifetime has passed it is the lowest free again.
	clk.t = clk.t.Add(time.Hour)
	r := rebuild6(t, cfg, q)
	if got := r.Quarantined(); len(got) != 0 {
		t.Fatalf("ended quarantine still listed: %v", got)
	}
	mustAlloc6(t, r, "02:00:00:00:00:0e", "e", "fd00::10")
}

// Nothing else free: the address whose quarantine ends first goes, and the
// grant says it is early.
func TestIPv6QuarantineLastResort(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := mustNew6(t, Config6{CIDR: "fd00::/64", Start: "fd00::10", End: "fd00::12", ServerIP: "fd00::1", Quarantine: time.Hour, Now: clk.now})
	mustAlloc6(t, p, mac6a, "a", "fd00::10")
	mustAlloc6(t, p, mac6b, "b", "fd00::11")
	mustAlloc6(t, p, mac6c, "c", "fd00::12")
	if err := p.Release("fd00::11"); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(time.Minute)
	if err := p.Release("fd00::10"); err != nil {
		t.Fatal(err)
	}
	g, err := p.AllocateFor(mac6d, "d")
	if err != nil || g.IP != "fd00::11" || g.Early == nil || g.Early.MAC != mac6b {
		t.Fatalf("AllocateFor in a pool with only quarantined addresses = %+v, %v; want fd00::11 (released first) as early", g, err)
	}
	g, err = p.AllocateFor("02:00:00:00:00:0e", "e")
	if err != nil || g.IP != "fd00::10" || g.Early == nil {
		t.Fatalf("next = %+v, %v; want fd00::10 as early", g, err)
	}
	if _, err := p.AllocateFor("02:00:00:00:00:0f", "f"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("full pool: %v, want ErrExhausted", err)
	}
}

// Lowering the valid lifetime never shortens a quarantine, and leases
// given under a longer one before the lowering are covered until
// LongerLeasesUntil (the semantics of status.ipv4.leaseTime).
func TestIPv6QuarantineValidLifetimeLowered(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	day := Config6{CIDR: "fd00::/64", Start: "fd00::10", End: "fd00::11", Quarantine: 24 * time.Hour, Now: clk.now}
	p := mustNew6(t, day)
	mustAlloc6(t, p, mac6a, "a", "fd00::10")
	if _, err := p.ReleaseFor(mac6a, "a"); err != nil {
		t.Fatal(err)
	}
	minute := day
	minute.Quarantine = time.Minute
	minute.LongerLeasesUntil = clk.t.Add(48 * time.Hour)
	q := rebuild6(t, minute, p)
	clk.t = clk.t.Add(2 * time.Hour)
	if err := q.AllocateIPFor("fd00::10", mac6b, "b"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("2 h after a release under a 24 h valid lifetime: %v, want ErrQuarantined", err)
	}
	// Released under the 1-minute lifetime, but before LongerLeasesUntil.
	mustAlloc6(t, q, mac6b, "b", "fd00::11")
	if _, err := q.ReleaseFor(mac6b, "b"); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(time.Hour)
	if err := q.AllocateIPFor("fd00::11", mac6c, "c"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("an hour after a release with longer leases still running: %v, want ErrQuarantined", err)
	}
	if q.Quarantine() != time.Minute || !q.LongerLeasesUntil().Equal(minute.LongerLeasesUntil) {
		t.Fatalf("Quarantine %s, LongerLeasesUntil %s", q.Quarantine(), q.LongerLeasesUntil())
	}
}

// #12 item 1 for IPv6: a release frees only the allocation it was meant
// to free. VMNetCfg a (MAC m) is deleted and its address released; b with
// the same MAC gets the address back; a's late release (the finalizer run
// again, the orphan sweep working from an older read) leaves b's alone.
func TestIPv6ReleaseOnlyOwnAllocation(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config6{CIDR: "fd00::/64", Start: "fd00::10", End: "fd00::14", Quarantine: time.Hour, Now: clk.now}
	p := mustNew6(t, cfg)
	mustAlloc6(t, p, mac6a, "a", "fd00::10")
	// While a holds it, b with the same MAC gets nothing.
	if _, err := p.AllocateFor(mac6a, "b"); !errors.Is(err, ErrHeldByOther) {
		t.Fatalf("AllocateFor another holder = %v, want ErrHeldByOther", err)
	}
	if err := p.AllocateIPFor("fd00::10", mac6a, "b"); !errors.Is(err, ErrHeldByOther) {
		t.Fatalf("AllocateIPFor another holder = %v, want ErrHeldByOther", err)
	}
	if ip, err := p.ReleaseFor(mac6a, "b"); !errors.Is(err, ErrHeldByOther) || ip != "" {
		t.Fatalf("ReleaseFor another holder = %q, %v; want ErrHeldByOther", ip, err)
	}
	if _, err := p.ReleaseFor(mac6a, "a"); err != nil {
		t.Fatal(err)
	}
	mustAlloc6(t, p, mac6a, "b", "fd00::10")
	if p.ReleaseExact("fd00::10", mac6a, "a") {
		t.Fatal("ReleaseExact for a freed b's allocation")
	}
	if ip, err := p.ReleaseFor(mac6a, "a"); !errors.Is(err, ErrHeldByOther) || ip != "" {
		t.Fatalf("a's late release = %q, %v; want ErrHeldByOther", ip, err)
	}
	// The holder survives a rebuild.
	q := rebuild6(t, cfg, p)
	if got := q.Holder("fd00::10"); got != "b" {
		t.Fatalf("restored holder %q, want b", got)
	}
	if ip, err := q.ReleaseFor(mac6a, "a"); !errors.Is(err, ErrHeldByOther) || ip != "" {
		t.Fatalf("a's release after a rebuild = %q, %v; want ErrHeldByOther", ip, err)
	}
	if !q.ReleaseExact("fd00::10", mac6a, "b") {
		t.Fatal("ReleaseExact of b's own allocation failed")
	}
	// An entry recorded without a holder (a dual-stack pool's IPv6 half)
	// is adopted by the first holder that claims its MAC.
	r := mustNew6(t, cfg)
	r.Restore(map[string]string{"fd00::12": mac6c})
	mustAlloc6(t, r, mac6c, "c", "fd00::12")
	if got := r.Holders(); len(got) != 1 || got["fd00::12"] != "c" {
		t.Fatalf("Holders = %v, want fd00::12 adopted by c", got)
	}
}

// #12 item 4 for IPv6: an allocation a rebuild drops (its address now
// excluded, or out of the range) is quarantined for its MAC, kept while
// excluded or outside, and never the last resort while excluded.
func TestIPv6DroppedAllocationQuarantined(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := Config6{CIDR: "fd00::/64", Start: "fd00::10", End: "fd00::12", ServerIP: "fd00::1", Quarantine: time.Hour, Now: clk.now}
	p := mustNew6(t, cfg)
	mustAlloc6(t, p, mac6a, "a", "fd00::10")
	ex := cfg
	ex.Exclude = []string{"fd00::10"}
	q := mustNew6(t, ex)
	if c := q.Restore(p.Allocated()); len(c) != 1 || !errors.Is(c[0].Err, ErrUnavailable) {
		t.Fatalf("conflicts %v, want fd00::10 dropped", c)
	}
	if got := q.Quarantined()["fd00::10"]; got.MAC != mac6a {
		t.Fatalf("dropped allocation not quarantined: %v", q.Quarantined())
	}
	if got := q.Available(); got != 2 {
		t.Fatalf("Available = %d, want 2 (the excluded address is not available)", got)
	}
	mustAlloc6(t, q, mac6a, "a", "fd00::11") // its MAC again, not on the excluded one
	mustAlloc6(t, q, mac6b, "b", "fd00::12")
	if g, err := q.AllocateFor(mac6c, "c"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("pool full but for the excluded quarantined address: %+v, %v; want ErrExhausted", g, err)
	}
	q2 := rebuild6(t, ex, q) // a restart while still excluded
	if got := q2.Quarantined()["fd00::10"]; got.MAC != mac6a {
		t.Fatalf("quarantine of the excluded address lost on rebuild: %v", q2.Quarantined())
	}
	// The exclude removed within the valid lifetime.
	r := rebuild6(t, cfg, q2)
	if err := r.AllocateIPFor("fd00::10", mac6c, "c"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("un-excluded address asked for by another MAC: %v, want ErrQuarantined", err)
	}

	// The range shrunk and grown back.
	small := cfg
	small.End = "fd00::11"
	s := mustNew6(t, small)
	if c := s.Restore(r.Allocated()); len(c) != 1 || !errors.Is(c[0].Err, ErrOutsidePool) {
		t.Fatalf("conflicts %v, want fd00::12 dropped", c)
	}
	s.RestoreHolders(r.Holders())
	s.RestoreQuarantine(r.Quarantined())
	if got := s.Quarantined()["fd00::12"]; got.MAC != mac6b {
		t.Fatalf("allocation dropped out of the range not quarantined: %v", s.Quarantined())
	}
	back := rebuild6(t, cfg, rebuild6(t, small, s))
	if err := back.AllocateIPFor("fd00::12", mac6d, "d"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("address back in the range asked for by another MAC: %v, want ErrQuarantined", err)
	}
	mustAlloc6(t, back, mac6b, "b", "fd00::12") // its MAC gets it back
	clk.t = clk.t.Add(time.Hour)
	if got := rebuild6(t, small, s).Quarantined(); len(got) != 0 {
		t.Fatalf("ended quarantines still recorded: %v", got)
	}
}

// A MAC recorded twice: the second entry is dropped and quarantined for it.
func TestIPv6DuplicateMACDroppedQuarantined(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := mustNew6(t, Config6{CIDR: "fd00::/64", Start: "fd00::10", End: "fd00::12", Quarantine: time.Hour, Now: clk.now})
	c := p.Restore(map[string]string{"fd00::10": mac6a, "fd00::11": mac6a})
	if len(c) != 1 || c[0].IP != "fd00::11" {
		t.Fatalf("conflicts %v, want fd00::11 dropped", c)
	}
	if got := p.Quarantined()["fd00::11"]; got.MAC != mac6a {
		t.Fatalf("dropped duplicate not quarantined: %v", p.Quarantined())
	}
	mustAlloc6(t, p, mac6b, "b", "fd00::12")
}

// A whole /64 with quarantines: the lowest free address skips them, and
// the count stays right.
func TestIPv6QuarantineWholeSlash64(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := mustNew6(t, Config6{CIDR: "fd00:100::/64", Start: "fd00:100::", End: "fd00:100::ffff:ffff:ffff:ffff",
		ServerIP: "fd00:100::1", Quarantine: time.Hour, Now: clk.now})
	mustAlloc6(t, p, mac6a, "a", "fd00:100::2")
	mustAlloc6(t, p, mac6b, "b", "fd00:100::3")
	if err := p.AllocateIPFor("fd00:100::ffff:ffff:ffff:ffff", mac6c, "c"); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{mac6a, mac6b, mac6c} {
		if _, err := p.ReleaseFor(m, ""); err != nil {
			t.Fatal(err)
		}
	}
	mustAlloc6(t, p, mac6d, "d", "fd00:100::4")
	if got := p.Available(); got != math.MaxInt64 {
		t.Fatalf("Available = %d, want capped at MaxInt64", got)
	}
	if got := len(p.Quarantined()); got != 3 {
		t.Fatalf("%d quarantined, want 3", got)
	}
}
