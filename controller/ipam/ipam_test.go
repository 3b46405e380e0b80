package ipam

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func mustNew(t testing.TB, c Config) *Pool {
	t.Helper()
	p, err := New(c)
	if err != nil {
		t.Fatalf("New(%+v): %v", c, err)
	}
	return p
}

func harvesterExample(t testing.TB) *Pool {
	return mustNew(t, Config{
		CIDR: "192.168.100.0/24", Start: "192.168.100.101", End: "192.168.100.200",
		ServerIP: "192.168.100.2", Router: "192.168.100.1",
		Exclude: []string{"192.168.100.151", "192.168.100.187"},
	})
}

func TestCountsAndMarks(t *testing.T) {
	p := harvesterExample(t)
	// 100 addresses in the range, 2 excluded; server and router are outside it.
	if got := p.Available(); got != 98 {
		t.Fatalf("Available = %d, want 98", got)
	}
	if got := p.Used(); got != 0 {
		t.Fatalf("Used = %d, want 0", got)
	}
	m := p.Allocated()
	if len(m) != 2 || m["192.168.100.151"] != MarkExcluded || m["192.168.100.187"] != MarkExcluded {
		t.Fatalf("Allocated = %v, want the two excludes", m)
	}

	// Server and router inside the range are RESERVED and never handed out.
	q := mustNew(t, Config{CIDR: "10.0.0.0/29", Start: "10.0.0.1", End: "10.0.0.6", ServerIP: "10.0.0.1", Router: "10.0.0.2"})
	if got := q.Available(); got != 4 {
		t.Fatalf("Available = %d, want 4", got)
	}
	if m := q.Allocated(); m["10.0.0.1"] != MarkReserved || m["10.0.0.2"] != MarkReserved {
		t.Fatalf("Allocated = %v, want server and router RESERVED", m)
	}
}

func TestLowestFreeFirstAndIdempotent(t *testing.T) {
	p := mustNew(t, Config{CIDR: "10.0.0.0/24", Start: "10.0.0.0", End: "10.0.0.255", ServerIP: "10.0.0.1", Exclude: []string{"10.0.0.3"}})
	want := []string{"10.0.0.2", "10.0.0.4", "10.0.0.5"}
	for i, w := range want {
		got, err := p.Allocate(fmt.Sprintf("02:00:00:00:00:%02x", i))
		if err != nil || got != w {
			t.Fatalf("Allocate #%d = %q, %v; want %s (network, server and exclude skipped)", i, got, err, w)
		}
	}
	again, err := p.Allocate("02:00:00:00:00:01")
	if err != nil || again != "10.0.0.4" {
		t.Fatalf("second Allocate for the same MAC = %q, %v; want its address 10.0.0.4", again, err)
	}
	// Upper-case or dashed MACs are the same NIC.
	again, _ = p.Allocate("02-00-00-00-00-01")
	if again != "10.0.0.4" {
		t.Fatalf("dashed MAC got %q, want 10.0.0.4", again)
	}
	if err := p.Release("10.0.0.2"); err != nil {
		t.Fatal(err)
	}
	got, _ := p.Allocate("02:00:00:00:00:99")
	if got != "10.0.0.2" {
		t.Fatalf("after release, Allocate = %s; want the lowest free 10.0.0.2", got)
	}
	if p.Used() != 3 {
		t.Fatalf("Used = %d, want 3", p.Used())
	}
}

func TestErrors(t *testing.T) {
	p := harvesterExample(t)
	if err := p.AllocateIP("192.168.100.120", "aa:aa:aa:aa:aa:01"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, ip, mac string
		want          error
		text          string
	}{
		{"taken", "192.168.100.120", "aa:aa:aa:aa:aa:02", ErrAllocated, "aa:aa:aa:aa:aa:01"},
		{"outside", "192.168.100.50", "aa:aa:aa:aa:aa:02", ErrOutsidePool, "192.168.100.101-192.168.100.200"},
		{"excluded", "192.168.100.151", "aa:aa:aa:aa:aa:02", ErrUnavailable, "EXCLUDED"},
		{"not an address", "nope", "aa:aa:aa:aa:aa:02", ErrOutsidePool, "nope"},
	}
	for _, c := range cases {
		err := p.AllocateIP(c.ip, c.mac)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: AllocateIP(%s) = %v; want %v mentioning %q", c.name, c.ip, err, c.want, c.text)
		}
	}
	if err := p.Release("192.168.100.130"); !errors.Is(err, ErrNotAllocated) {
		t.Errorf("Release of a free address = %v, want ErrNotAllocated", err)
	}

	small := mustNew(t, Config{CIDR: "10.0.0.0/30", Start: "10.0.0.1", End: "10.0.0.2", ServerIP: "10.0.0.1"})
	if _, err := small.Allocate("aa:aa:aa:aa:aa:01"); err != nil {
		t.Fatal(err)
	}
	_, err := small.Allocate("aa:aa:aa:aa:aa:02")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "pool exhausted") {
		t.Fatalf("Allocate on a full pool = %v, want pool exhausted", err)
	}
}

func TestBadConfig(t *testing.T) {
	cases := []Config{
		{CIDR: "10.0.0.0/33", Start: "10.0.0.1", End: "10.0.0.2"},
		{CIDR: "fd00::/64", Start: "10.0.0.1", End: "10.0.0.2"},
		{CIDR: "10.0.0.0/24", Start: "10.0.1.1", End: "10.0.0.2"},
		{CIDR: "10.0.0.0/24", Start: "10.0.0.9", End: "10.0.0.2"},
		{CIDR: "10.0.0.0/24", Start: "10.0.0.1", End: "10.0.0.9", ServerIP: "10.9.0.1"},
		{CIDR: "0.0.0.0/0", Start: "0.0.0.0", End: "255.255.255.255"}, // would overflow the bitmap size
		{CIDR: "10.0.0.0/7", Start: "10.0.0.1", End: "11.255.255.254"},
	}
	for _, c := range cases {
		if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", c, err)
		}
	}
}

func TestAllocateIPMovesMAC(t *testing.T) {
	p := harvesterExample(t)
	mac := "aa:aa:aa:aa:aa:01"
	if _, err := p.Allocate(mac); err != nil {
		t.Fatal(err)
	}
	if err := p.AllocateIP("192.168.100.150", mac); err != nil {
		t.Fatal(err)
	}
	if ip, _ := p.Lookup(mac); ip != "192.168.100.150" || p.Used() != 1 {
		t.Fatalf("after move: Lookup = %s, Used = %d; want 192.168.100.150 and 1", ip, p.Used())
	}
	if _, held := p.Owner("192.168.100.101"); held {
		t.Fatal("the old address is still held after the MAC moved")
	}
}

func TestRestoreRoundTripAndConflicts(t *testing.T) {
	p := harvesterExample(t)
	for i := 0; i < 40; i++ {
		if _, err := p.Allocate(fmt.Sprintf("aa:aa:aa:aa:00:%02x", i)); err != nil {
			t.Fatal(err)
		}
	}
	status := p.Allocated()
	q := harvesterExample(t)
	if c := q.Restore(status); len(c) != 0 {
		t.Fatalf("Restore of a clean status gave conflicts: %v", c)
	}
	if fmt.Sprint(q.Allocated()) != fmt.Sprint(status) || q.Used() != 40 || q.Available() != 58 {
		t.Fatalf("restored pool differs: used %d available %d", q.Used(), q.Available())
	}
	// The next allocation after a rebuild is the same as before it.
	a, _ := p.Allocate("bb:bb:bb:bb:bb:bb")
	b, _ := q.Allocate("bb:bb:bb:bb:bb:bb")
	if a != b {
		t.Fatalf("next allocation after rebuild = %s, before = %s", b, a)
	}

	bad := map[string]string{
		"192.168.100.101": "cc:cc:cc:cc:cc:01",
		"192.168.100.102": "cc:cc:cc:cc:cc:01", // same MAC twice
		"192.168.100.5":   "cc:cc:cc:cc:cc:02", // outside the range
		"192.168.100.151": "cc:cc:cc:cc:cc:03", // excluded
		"192.168.100.187": MarkExcluded,
	}
	r := harvesterExample(t)
	conflicts := r.Restore(bad)
	if len(conflicts) != 3 || r.Used() != 1 {
		t.Fatalf("Restore(bad) = %v, used %d; want 3 conflicts and 1 used", conflicts, r.Used())
	}
	if ip, _ := r.Lookup("cc:cc:cc:cc:cc:01"); ip != "192.168.100.101" {
		t.Fatalf("duplicate MAC kept %s, want the lowest address", ip)
	}
}

func TestNoDoubleAllocationUnderChurn(t *testing.T) {
	p := mustNew(t, Config{CIDR: "10.1.0.0/20", Start: "10.1.0.10", End: "10.1.15.250", ServerIP: "10.1.0.1"})
	seen := map[string]string{}
	for i := 0; i < 3000; i++ {
		mac := fmt.Sprintf("aa:00:00:00:%02x:%02x", i/256, i%256)
		ip, err := p.Allocate(mac)
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := seen[ip]; dup {
			t.Fatalf("%s given to %s and %s", ip, prev, mac)
		}
		seen[ip] = mac
		if i%3 == 0 {
			if err := p.Release(ip); err != nil {
				t.Fatal(err)
			}
			delete(seen, ip)
		}
	}
	if p.Used() != len(seen) {
		t.Fatalf("Used = %d, want %d", p.Used(), len(seen))
	}
}

// TestEveryExcludeIsMarked: like Harvester's controller, the status lists
// every excluded address as EXCLUDED, also those outside the range or even
// outside the CIDR, which only the range's own excludes affect allocation.
func TestEveryExcludeIsMarked(t *testing.T) {
	p := mustNew(t, Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.20", ServerIP: "10.0.0.2",
		Exclude: []string{"10.0.0.15", "10.0.0.200", "10.9.9.9"}})
	want := map[string]string{"10.0.0.15": MarkExcluded, "10.0.0.200": MarkExcluded, "10.9.9.9": MarkExcluded}
	if got := p.Allocated(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Allocated = %v, want %v", got, want)
	}
	if p.Available() != 10 {
		t.Fatalf("Available = %d, want 10 (11 in the range, one excluded)", p.Available())
	}
}

// TestExcludeReadAsHarvester: exclude entries Harvester admits are read as
// its IPAM (net.ParseIP) reads them: an IPv4-mapped form excludes its IPv4
// address, an entry that is no address (a CIDR, a name) excludes nothing
// and does not make the pool unusable.
func TestExcludeReadAsHarvester(t *testing.T) {
	p := mustNew(t, Config{CIDR: "10.0.0.0/24", Start: "10.0.0.10", End: "10.0.0.12", ServerIP: "10.0.0.1",
		Exclude: []string{"::ffff:10.0.0.10", "10.0.0.0/28", "x", "fd00::1"}})
	if got := p.IgnoredExclude(); !slices.Equal(got, []string{"10.0.0.0/28", "x", "fd00::1"}) {
		t.Errorf("IgnoredExclude = %v", got)
	}
	if got, err := p.Allocate("aa:aa:aa:aa:aa:01"); err != nil || got != "10.0.0.11" {
		t.Errorf("Allocate = %q, %v; want 10.0.0.11 (10.0.0.10 excluded in mapped form)", got, err)
	}
	if m := p.Allocated(); m["10.0.0.10"] != MarkExcluded || len(m) != 2 {
		t.Errorf("Allocated = %v, want 10.0.0.10 EXCLUDED and one allocation", m)
	}
}
