package harvesteroptions

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/plugins/internal/dhcptest"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// serveWith runs a DISCOVER of the known MAC through the options handler of
// a pool edited by edit, and returns the reply as the client reads it.
func serveWith(t *testing.T, edit func(c *v1alpha1.IPv4Config)) *dhcpv4.DHCPv4 {
	t.Helper()
	ipp := dhcptest.IPPool()
	edit(&ipp.Spec.IPv4Config)
	pool, _ := poolwatch.FromIPPool(ipp) // entries it refuses are reported, the rest served
	o := New(func() *poolwatch.Pool { return pool })
	resp := dhcptest.Serve(dhcptest.Packet(dhcpv4.MessageTypeDiscover, dhcptest.KnownMAC), o.Handle)
	wire, err := dhcpv4.FromBytes(resp.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse back: %v", err)
	}
	return wire
}

// Issue 12 item 14: option 119 as RFC 1035 and RFC 3397 write it, bytes
// written out by hand.
func TestDomainSearchWireFormat(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		name   string
		search []string
		want   []byte
	}{
		{name: "trailing dot is the same name, not an extra root entry",
			search: []string{"example.com."},
			want:   []byte("\x07example\x03com\x00")},
		{name: "a suffix already written is a compression pointer",
			search: []string{"example.com", "corp.example.com."},
			want:   []byte("\x07example\x03com\x00\x04corp\xc0\x00")},
		{name: "a label over 63 characters is left out, not written with a reserved length byte",
			search: []string{long + ".example", "corp.example"},
			want:   []byte("\x04corp\x07example\x00")},
		{name: "a 200-character label (which read as a pointer) is left out",
			search: []string{strings.Repeat("b", 200), "corp.example"},
			want:   []byte("\x04corp\x07example\x00")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := serveWith(t, func(c *v1alpha1.IPv4Config) { c.DomainSearch = tc.search })
			if got := r.Options.Get(dhcpv4.OptionDNSDomainSearchList); !bytes.Equal(got, tc.want) {
				t.Fatalf("option 119\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// Issue 12 item 15: T1 and T2 never overflow, never pass the lease, are at
// least a second when the lease allows, and are absent for an infinite
// lease.
func TestLeaseTimes(t *testing.T) {
	tests := []struct {
		lease      int
		want       uint32
		t1, t2     uint32 // 0: absent
		wantAbsent bool
	}{
		{lease: 600, want: 600, t1: 300, t2: 525},
		{lease: 1, want: 1, wantAbsent: true},
		{lease: 2, want: 2, t1: 1}, // no whole second for T2 between T1 and the lease: absent
		{lease: 4, want: 4, t1: 2, t2: 3},
		{lease: 3, want: 3, t1: 1, t2: 2},
		{lease: 1_400_000_000, want: 1_400_000_000, t1: 700_000_000, t2: 1_225_000_000},
		{lease: 4_294_967_294, want: 4_294_967_294, t1: 2_147_483_647, t2: 3_758_096_382},
		{lease: 4_294_967_295, want: 0xffffffff, wantAbsent: true},
		{lease: 9_000_000_000, want: 0xffffffff, wantAbsent: true}, // stored before admission refused it
	}
	for _, tc := range tests {
		r := serveWith(t, func(c *v1alpha1.IPv4Config) { c.LeaseTime = &tc.lease })
		get := func(code dhcpv4.OptionCode) (uint32, bool) {
			v := r.Options.Get(code)
			if len(v) != 4 {
				return 0, false
			}
			return binary.BigEndian.Uint32(v), true
		}
		lease, _ := get(dhcpv4.OptionIPAddressLeaseTime)
		t1, has1 := get(dhcpv4.OptionRenewTimeValue)
		t2, has2 := get(dhcpv4.OptionRebindingTimeValue)
		if lease != tc.want {
			t.Errorf("lease %d: option 51 = %d, want %d", tc.lease, lease, tc.want)
		}
		if tc.wantAbsent {
			if has1 || has2 {
				t.Errorf("lease %d: T1 %d T2 %d sent, want none", tc.lease, t1, t2)
			}
			continue
		}
		if t1 != tc.t1 || t2 != tc.t2 || has2 != (tc.t2 != 0) || (has2 && (t1 >= t2 || t2 >= lease)) {
			t.Errorf("lease %d: T1 %d T2 %d (sent: %v), want %d %d", tc.lease, t1, t2, has2, tc.t1, tc.t2)
		}
	}
}
