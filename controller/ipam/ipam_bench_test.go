package ipam

import (
	"fmt"
	"testing"
)

func slash16(b *testing.B) *Pool {
	return mustNew(b, Config{CIDR: "10.20.0.0/16", Start: "10.20.0.1", End: "10.20.255.254", ServerIP: "10.20.0.1"})
}

func macOf(i int) string {
	return fmt.Sprintf("02:00:00:%02x:%02x:%02x", (i>>16)&0xff, (i>>8)&0xff, i&0xff)
}

// BenchmarkAllocateSlash16 allocates every address of a /16 one by one.
func BenchmarkAllocateSlash16(b *testing.B) {
	macs := make([]string, 65533)
	for i := range macs {
		macs[i] = macOf(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		p := slash16(b)
		for _, m := range macs {
			if _, err := p.Allocate(m); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkRestoreSlash16 rebuilds a /16 from a status of 60,000 allocations.
func BenchmarkRestoreSlash16(b *testing.B) {
	src := slash16(b)
	for i := 0; i < 60000; i++ {
		if _, err := src.Allocate(macOf(i)); err != nil {
			b.Fatal(err)
		}
	}
	status := src.Allocated()
	b.ReportAllocs()
	for b.Loop() {
		p := slash16(b)
		if c := p.Restore(status); len(c) != 0 || p.Used() != 60000 {
			b.Fatalf("restore: %d conflicts, used %d", len(c), p.Used())
		}
	}
}

// BenchmarkChurn allocates and releases on a half-full /16.
func BenchmarkChurn(b *testing.B) {
	p := slash16(b)
	for i := 0; i < 30000; i++ {
		if _, err := p.Allocate(macOf(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m := macOf(100000 + i%50000)
		if _, err := p.Allocate(m); err != nil {
			b.Fatal(err)
		}
		if p.ReleaseMAC(m) == "" {
			b.Fatal("release lost the address")
		}
		i++
	}
}
