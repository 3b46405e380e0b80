package ipam

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

func mustNew6(t testing.TB, c Config6) *Pool6 {
	t.Helper()
	p, err := New6(c)
	if err != nil {
		t.Fatalf("New6(%+v): %v", c, err)
	}
	return p
}

// A whole /64: start at the Subnet-Router anycast address, end at the last.
func whole64(t testing.TB) *Pool6 {
	return mustNew6(t, Config6{CIDR: "fd00:100::/64", Start: "fd00:100::", End: "fd00:100::ffff:ffff:ffff:ffff",
		ServerIP: "fd00:100::1", Exclude: []string{"fd00:100::3"}})
}

func TestIPv6WholeSlash64(t *testing.T) {
	p := whole64(t)
	// 2^64 addresses minus anycast, server and exclude: more than an int64 holds.
	if got := p.Available(); got != math.MaxInt64 {
		t.Fatalf("Available = %d, want capped at MaxInt64", got)
	}
	want := []string{"fd00:100::2", "fd00:100::4", "fd00:100::5"}
	for i, w := range want {
		got, err := p.Allocate(fmt.Sprintf("02:00:00:00:00:%02x", i))
		if err != nil || got != w {
			t.Fatalf("Allocate #%d = %q, %v; want %s (anycast, server and exclude skipped)", i, got, err, w)
		}
	}
	if again, _ := p.Allocate("02:00:00:00:00:01"); again != "fd00:100::4" {
		t.Fatalf("second Allocate for the same MAC = %s, want its address fd00:100::4", again)
	}
	m := p.Allocated()
	if len(m) != 5 || m["fd00:100::1"] != MarkReserved || m["fd00:100::3"] != MarkExcluded || m["fd00:100::2"] != "02:00:00:00:00:00" {
		t.Fatalf("Allocated = %v", m)
	}
	if _, ok := p.Owner("fd00:100::"); ok {
		t.Fatal("the Subnet-Router anycast address has an owner")
	}
	// The last address of the /64 can be asked for.
	if err := p.AllocateIP("fd00:100::ffff:ffff:ffff:ffff", "02:00:00:00:01:00"); err != nil {
		t.Fatalf("AllocateIP(last of /64): %v", err)
	}
}

func TestIPv6RequestedAddress(t *testing.T) {
	p := mustNew6(t, Config6{CIDR: "fd00:100::/64", Start: "fd00:100::100", End: "fd00:100::1ff",
		ServerIP: "fd00:100::100", Exclude: []string{"fd00:100::150"}})
	mac := "22-37-37-82-93-7D"
	// Any spelling of the address and of the MAC is the same one.
	if err := p.AllocateIP("FD00:100:0:0::180", mac); err != nil {
		t.Fatal(err)
	}
	if got, ok := p.Lookup("22:37:37:82:93:7d"); !ok || got != "fd00:100::180" {
		t.Fatalf("Lookup = %s %v", got, ok)
	}
	if err := p.AllocateIP("fd00:100::180", "22:37:37:82:93:7d"); err != nil {
		t.Fatalf("asking again for the held address: %v", err)
	}
	for _, tc := range []struct {
		ip   string
		want error
	}{
		{"fd00:100::180", ErrAllocated},
		{"fd00:100::150", ErrUnavailable},
		{"fd00:100::100", ErrUnavailable},
		{"fd00:100::200", ErrOutsidePool},
		{"fd00:200::180", ErrOutsidePool},
		{"192.168.0.1", ErrOutsidePool},
		{"::ffff:192.168.0.1", ErrOutsidePool},
		{"fe80::1%eth0", ErrOutsidePool},
	} {
		if err := p.AllocateIP(tc.ip, "02:00:00:00:00:01"); !errors.Is(err, tc.want) {
			t.Errorf("AllocateIP(%s) = %v, want %v", tc.ip, err, tc.want)
		}
	}
	// A second address for the MAC moves it; the old one is free again.
	if err := p.AllocateIP("fd00:100::181", mac); err != nil {
		t.Fatal(err)
	}
	if owner, ok := p.Owner("fd00:100::180"); ok {
		t.Fatalf("fd00:100::180 still owned by %s after the MAC moved", owner)
	}
	if got := p.Used(); got != 1 {
		t.Fatalf("Used = %d, want 1", got)
	}
	if got := p.ReleaseMAC(mac); got != "fd00:100::181" {
		t.Fatalf("ReleaseMAC = %q", got)
	}
	if err := p.Release("fd00:100::181"); !errors.Is(err, ErrNotAllocated) {
		t.Fatalf("Release of a free address = %v", err)
	}
}

func TestIPv6ExhaustAndReuse(t *testing.T) {
	p := mustNew6(t, Config6{CIDR: "fd00::/120", Start: "fd00::10", End: "fd00::17", ServerIP: "fd00::1", Exclude: []string{"fd00::12"}})
	if got := p.Available(); got != 7 {
		t.Fatalf("Available = %d, want 7", got)
	}
	for i := 0; i < 7; i++ {
		if _, err := p.Allocate(fmt.Sprintf("02:00:00:00:00:%02x", i)); err != nil {
			t.Fatalf("Allocate #%d: %v", i, err)
		}
	}
	if _, err := p.Allocate("02:00:00:00:01:00"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate in a full range = %v, want ErrExhausted", err)
	}
	if err := p.Release("fd00::14"); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Allocate("02:00:00:00:01:00"); err != nil || got != "fd00::14" {
		t.Fatalf("Allocate after release = %s, %v; want the freed fd00::14", got, err)
	}
}

func TestIPv6RestoreDeterministic(t *testing.T) {
	cfg := Config6{CIDR: "fd00:100::/64", Start: "fd00:100::100", End: "fd00:100::1ff", ServerIP: "fd00:100::2", Exclude: []string{"fd00:100::150"}}
	status := map[string]string{
		"fd00:100::101":     "02:00:00:00:00:01",
		"fd00:100:0::102":   "02:00:00:00:00:01", // same MAC twice: the lower address wins
		"fd00:100::150":     "02:00:00:00:00:02", // now excluded
		"fd00:100::300":     "02:00:00:00:00:03", // outside the range
		"fd00:100::103":     MarkExcluded,        // marks are recomputed, not restored
		"not-an-address":    "02:00:00:00:00:04",
		"fd00:100::1ff":     "02:00:00:00:00:05",
		"FD00:100::0:0:1fe": "02:00:00:00:00:06",
	}
	for i := 0; i < 20; i++ {
		p := mustNew6(t, cfg)
		conflicts := p.Restore(status)
		if len(conflicts) != 4 {
			t.Fatalf("conflicts = %v, want 4", conflicts)
		}
		if got, _ := p.Lookup("02:00:00:00:00:01"); got != "fd00:100::101" {
			t.Fatalf("MAC recorded twice kept %s, want the lower fd00:100::101", got)
		}
		m := p.Allocated()
		if m["fd00:100::1fe"] != "02:00:00:00:00:06" || m["fd00:100::1ff"] != "02:00:00:00:00:05" || m["fd00:100::103"] != "" {
			t.Fatalf("Allocated after restore = %v", m)
		}
		// The next allocation skips everything restored.
		if got, _ := p.Allocate("02:00:00:00:00:07"); got != "fd00:100::100" {
			t.Fatalf("first free after restore = %s", got)
		}
		if got, _ := p.Allocate("02:00:00:00:00:08"); got != "fd00:100::102" {
			t.Fatalf("second free after restore = %s", got)
		}
	}
}

func TestIPv6InvalidConfig(t *testing.T) {
	for _, c := range []Config6{
		{CIDR: "10.0.0.0/24", Start: "10.0.0.1", End: "10.0.0.2"},
		{CIDR: "fd00::/48", Start: "fd00::1", End: "fd00::2"},
		{CIDR: "fd00::/64", Start: "fd00::9", End: "fd00::2"},
		{CIDR: "fd00::/64", Start: "fd00::1", End: "fd00:1::2"},
		{CIDR: "fd00::/64", Start: "fd00::1", End: "fd00::2", ServerIP: "fd01::1"},
		{CIDR: "fd00::/64", Start: "fd00::1", End: "fd00::2", Exclude: []string{"x"}},
	} {
		if _, err := New6(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New6(%+v) = %v, want ErrInvalidConfig", c, err)
		}
	}
}
