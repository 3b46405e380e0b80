package ipam

import "testing"

// BenchmarkAllocate6 gives 65,536 MACs an address each in a whole /64.
func BenchmarkAllocate6(b *testing.B) {
	macs := make([]string, 1<<16)
	for i := range macs {
		macs[i] = macOf(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		p := whole64(b)
		for _, m := range macs {
			if _, err := p.Allocate(m); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkRestore6 rebuilds a /64 from a status of 60,000 allocations.
func BenchmarkRestore6(b *testing.B) {
	src := whole64(b)
	for i := 0; i < 60000; i++ {
		if _, err := src.Allocate(macOf(i)); err != nil {
			b.Fatal(err)
		}
	}
	status := src.Allocated()
	b.ReportAllocs()
	for b.Loop() {
		p := whole64(b)
		if c := p.Restore(status); len(c) != 0 {
			b.Fatal(c)
		}
	}
}

// BenchmarkChurn6 releases and reallocates in a /64 holding 60,000
// allocations: the freed address is found again by the binary search.
func BenchmarkChurn6(b *testing.B) {
	p := whole64(b)
	for i := 0; i < 60000; i++ {
		if _, err := p.Allocate(macOf(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		mac := macOf(i % 60000)
		p.ReleaseMAC(mac)
		if _, err := p.Allocate(mac); err != nil {
			b.Fatal(err)
		}
		i += 7919
	}
}
