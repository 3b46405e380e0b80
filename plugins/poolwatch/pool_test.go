package poolwatch

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

func testPool(allocated map[string]string) *v1alpha1.IPPool {
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "example"},
		Spec: v1alpha1.IPPoolSpec{IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "192.168.100.2", CIDR: "192.168.100.0/24", Router: "192.168.100.1",
			Pool: v1alpha1.Pool{Start: "192.168.100.10", End: "192.168.100.200"},
		}},
		Status: v1alpha1.IPPoolStatus{IPv4: &v1alpha1.IPv4Status{Allocated: allocated}},
	}
}

func mac(s string) string { hw, _ := net.ParseMAC(s); return string(hw) }

func TestFromIPPool(t *testing.T) {
	tests := []struct {
		name      string
		allocated map[string]string
		want      map[string]string // mac -> ip
		wantErr   string
	}{
		{name: "marks are skipped",
			allocated: map[string]string{"192.168.100.10": "02:00:00:00:00:10", "192.168.100.11": "EXCLUDED", "192.168.100.2": "RESERVED"},
			want:      map[string]string{"02:00:00:00:00:10": "192.168.100.10"}},
		{name: "mac case does not matter",
			allocated: map[string]string{"192.168.100.10": "02:AA:00:00:00:10"},
			want:      map[string]string{"02:aa:00:00:00:10": "192.168.100.10"}},
		{name: "bad mac is skipped, rest served",
			allocated: map[string]string{"192.168.100.10": "not-a-mac", "192.168.100.11": "02:00:00:00:00:11"},
			want:      map[string]string{"02:00:00:00:00:11": "192.168.100.11"}, wantErr: "not-a-mac"},
		{name: "address outside the subnet is skipped",
			allocated: map[string]string{"10.0.0.1": "02:00:00:00:00:10"},
			want:      map[string]string{}, wantErr: "outside 192.168.100.0/24"},
		{name: "bad address is skipped",
			allocated: map[string]string{"192.168.100.300": "02:00:00:00:00:10"},
			want:      map[string]string{}, wantErr: "192.168.100.300"},
		{name: "mac listed twice keeps the lowest address",
			allocated: map[string]string{"192.168.100.20": "02:00:00:00:00:10", "192.168.100.9": "02:00:00:00:00:10"},
			want:      map[string]string{"02:00:00:00:00:10": "192.168.100.9"}, wantErr: "already has 192.168.100.9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := FromIPPool(testPool(tc.allocated))
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
			if len(p.Leases) != len(tc.want) {
				t.Fatalf("leases %v, want %v", p.Leases, tc.want)
			}
			for m, ip := range tc.want {
				if got := p.Leases[mac(m)]; got != netip.MustParseAddr(ip) {
					t.Errorf("lease of %s = %s, want %s", m, got, ip)
				}
			}
		})
	}
}

func TestFromIPPoolOptionsAndDefaults(t *testing.T) {
	ipp := testPool(nil)
	p, err := FromIPPool(ipp)
	if err != nil {
		t.Fatal(err)
	}
	if p.LeaseTime != DefaultLeaseTime || p.MTU != 0 || p.Router != netip.MustParseAddr("192.168.100.1") ||
		p.Subnet != netip.MustParsePrefix("192.168.100.0/24") || p.ServerIP != netip.MustParseAddr("192.168.100.2") {
		t.Fatalf("unexpected pool %+v", p)
	}
	bad := -5
	ipp.Spec.IPv4Config.LeaseTime = &bad
	ipp.Spec.IPv4Config.CIDR = "192.168.100.7/24"
	p, err = FromIPPool(ipp)
	if err == nil || !strings.Contains(err.Error(), "leaseTime -5") || p.LeaseTime != DefaultLeaseTime {
		t.Fatalf("negative lease time: err %v, lease %s", err, p.LeaseTime)
	}
	if p.Subnet != netip.MustParsePrefix("192.168.100.0/24") {
		t.Fatalf("subnet not masked: %s", p.Subnet)
	}
	ipp.Spec.IPv4Config.CIDR = "fd00::/64"
	if _, err := FromIPPool(ipp); err == nil {
		t.Fatal("IPv6 CIDR accepted")
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "snapshot.json")
	domain := "example.internal"
	ipp := testPool(map[string]string{"192.168.100.10": "02:00:00:00:00:10"})
	ipp.Spec.IPv4Config.DNS = []string{"192.168.100.53"}
	ipp.Spec.IPv4Config.DomainName = &domain
	p, err := FromIPPool(ipp)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := WriteSnapshot(path, p, now); err != nil {
		t.Fatal(err)
	}
	got, savedAt, err := ReadSnapshot(path, "default", "example")
	if err != nil {
		t.Fatal(err)
	}
	if !savedAt.Equal(now) || !got.FromSnapshot || got.DomainName != domain || len(got.DNS) != 1 ||
		got.Leases[mac("02:00:00:00:00:10")] != netip.MustParseAddr("192.168.100.10") {
		t.Fatalf("round trip lost data: %+v saved %s", got, savedAt)
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files left in snapshot folder: %v", entries)
	}
	if _, _, err := ReadSnapshot(path, "default", "other"); err == nil {
		t.Fatal("snapshot of another pool accepted")
	}
	if err := os.WriteFile(path, []byte("{truncated"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadSnapshot(path, "default", "example"); err == nil {
		t.Fatal("corrupt snapshot accepted")
	}
	// A deleted pool round-trips as "serve nothing".
	if err := WriteSnapshot(path, emptyPool("default", "example"), now); err != nil {
		t.Fatal(err)
	}
	got, _, err = ReadSnapshot(path, "default", "example")
	if err != nil || len(got.Leases) != 0 {
		t.Fatalf("empty pool: %v %+v", err, got)
	}
}

func TestParseArgs(t *testing.T) {
	a, err := ParseArgs("p", []string{"ns1/pool-a", "snapshot=/x/y.json"}, "snapshot", "kubeconfig")
	if err != nil || a.Namespace != "ns1" || a.Name != "pool-a" || a.Options["snapshot"] != "/x/y.json" {
		t.Fatalf("ParseArgs = %+v, %v", a, err)
	}
	for _, bad := range [][]string{nil, {"pool"}, {"/pool"}, {"ns/"}, {"a/b/c"}, {"ns/p", "x=1"}, {"ns/p", "snapshot"},
		{"ns/p", "snapshot=a", "snapshot=b"}} {
		if _, err := ParseArgs("p", bad, "snapshot", "kubeconfig"); err == nil {
			t.Errorf("ParseArgs(%q) accepted", bad)
		}
	}
}

// A raise of spec.ipv4Config.leaseTime is served only once the controller
// has recorded it in status.ipv4.leaseTime (it counts quarantines from it);
// a lowering is served at once; a pool without a recorded lease time gets
// the spec's.
func TestFromIPPoolLeaseTimeCappedByStatus(t *testing.T) {
	for _, c := range []struct {
		name     string
		spec     *int
		recorded *int64
		want     time.Duration
	}{
		{"raise not recorded yet", ptrTo(86400), ptrTo[int64](60), time.Minute},
		{"raise recorded", ptrTo(86400), ptrTo[int64](86400), 24 * time.Hour},
		{"lowering served at once", ptrTo(60), ptrTo[int64](86400), time.Minute},
		{"no recorded lease time", ptrTo(86400), nil, 24 * time.Hour},
		{"spec unset, recorded lower", nil, ptrTo[int64](600), 10 * time.Minute},
		{"recorded zero ignored", ptrTo(120), ptrTo[int64](0), 2 * time.Minute},
	} {
		ipp := testPool(nil)
		ipp.Spec.IPv4Config.LeaseTime = c.spec
		ipp.Status.IPv4.LeaseTime = c.recorded
		p, err := FromIPPool(ipp)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.LeaseTime != c.want {
			t.Errorf("%s: serves %s, want %s", c.name, p.LeaseTime, c.want)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
