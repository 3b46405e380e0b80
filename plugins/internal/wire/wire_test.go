package wire

import (
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// MessageType must agree with the library's decoder on every value it
// accepts, and say None where the library fails.
func TestMessageTypeMatchesLibrary(t *testing.T) {
	cases := []dhcpv4.Options{
		{},
		{53: nil},
		{53: {}},
		{53: {1, 2}},
	}
	for v := 0; v < 256; v++ {
		cases = append(cases, dhcpv4.Options{53: {byte(v)}})
	}
	for _, opts := range cases {
		want := (&dhcpv4.DHCPv4{Options: opts}).MessageType()
		if got := MessageType(opts); got != want {
			t.Errorf("options % x: MessageType %v, library %v", opts[53], got, want)
		}
	}
}

func BenchmarkMessageType(b *testing.B) {
	p := &dhcpv4.DHCPv4{Options: dhcpv4.Options{53: {byte(dhcpv4.MessageTypeRequest)}}}
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if MessageType(p.Options) != dhcpv4.MessageTypeRequest {
				b.Fatal("wrong type")
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p.MessageType() != dhcpv4.MessageTypeRequest {
				b.Fatal("wrong type")
			}
		}
	})
}

// IPv4 must agree with the library's GetIP on lengths 0 to 6.
func TestIPv4MatchesLibrary(t *testing.T) {
	for n := 0; n <= 6; n++ {
		v := []byte{10, 0, 0, 1, 7, 7}[:n]
		opts := dhcpv4.Options{54: v}
		want := dhcpv4.GetIP(dhcpv4.OptionServerIdentifier, opts)
		got, ok := IPv4(opts, dhcpv4.OptionServerIdentifier)
		switch {
		case want == nil && ok:
			t.Errorf("% x: got %v, library has none", v, got)
		case want != nil && (!ok || got.String() != want.String()):
			t.Errorf("% x: got %v %v, library %v", v, got, ok, want)
		}
	}
	if _, ok := IPv4(dhcpv4.Options{}, dhcpv4.OptionServerIdentifier); ok {
		t.Error("absent option reported present")
	}
}

// RawMessageType agrees with the library on every packet it builds, and
// never reads past the end of a truncated one.
func TestRawMessageType(t *testing.T) {
	for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeRequest} {
		p, err := dhcpv4.New(dhcpv4.WithMessageType(mt), dhcpv4.WithOption(dhcpv4.OptHostName("vm1")),
			dhcpv4.WithRequestedOptions(dhcpv4.OptionRouter))
		if err != nil {
			t.Fatal(err)
		}
		b := p.ToBytes()
		if got := RawMessageType(b); got != mt {
			t.Errorf("RawMessageType = %s, want %s", got, mt)
		}
		for n := range len(b) {
			_ = RawMessageType(b[:n])
		}
	}
	if got := RawMessageType(make([]byte, 300)); got != dhcpv4.MessageTypeNone {
		t.Errorf("no magic cookie: %s", got)
	}
}

// Review of issue 12 (item 15): RFC 2131 4.4.5 wants T1 < T2 < lease. With
// whole seconds that holds from a 3 s lease on; a 2 s lease gets T1 only.
func TestLeaseTimesOrdered(t *testing.T) {
	check := func(secs uint64) {
		lt := LeaseTimesOf(time.Duration(secs) * time.Second)
		switch {
		case secs >= Infinite:
			if lt.Lease != Infinite || lt.T1 != 0 || lt.T2 != 0 {
				t.Errorf("lease %d: %+v, want infinite without T1/T2", secs, lt)
			}
		case secs < 2:
			if lt.T1 != 0 || lt.T2 != 0 {
				t.Errorf("lease %d: %+v, want no T1/T2", secs, lt)
			}
		case secs == 2:
			if lt.T1 != 1 || lt.T2 != 0 {
				t.Errorf("lease 2: %+v, want T1 1 and no T2", lt)
			}
		default:
			if !(0 < lt.T1 && lt.T1 < lt.T2 && lt.T2 < lt.Lease) {
				t.Errorf("lease %d: %+v, want 0 < T1 < T2 < lease", secs, lt)
			}
		}
	}
	for secs := uint64(0); secs <= 100_000; secs++ {
		check(secs)
	}
	for secs := uint64(Infinite - 100_000); secs <= Infinite+10; secs++ {
		check(secs)
	}
}
