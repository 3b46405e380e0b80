package wire

import (
	"math"
	"time"
)

// Infinite is the lease time that never ends (RFC 2131 3.3).
const Infinite = math.MaxUint32

// LeaseTimes are the seconds of options 51 (lease), 58 (T1, renew) and 59
// (T2, rebind). T1 or T2 is 0 when it must not be sent.
type LeaseTimes struct {
	Lease, T1, T2 uint32
}

// LeaseTimesOf computes the lease times of a lease of d: T1 half the
// lease and T2 seven eighths of it (RFC 2131 4.4.5), rounded down to whole
// seconds so that no lease, however long, overflows; from a 3 s lease on,
// 0 < T1 < T2 < lease. A lease beyond 32 bits of seconds is infinite. An
// infinite lease has no renewal, and a lease under 2 s no whole second to
// renew at: neither gets T1 and T2 (a T1 of 0 would make the client renew
// at once, forever). A 2 s lease has no whole second between T1 (1 s) and
// the lease: it gets no T2, which the client then takes as 1.75 s (RFC 2131
// 4.4.5) rather than skipping its unicast RENEWING state at T1 = T2.
func LeaseTimesOf(d time.Duration) LeaseTimes {
	secs := uint64(max(d/time.Second, 0))
	if secs >= Infinite {
		return LeaseTimes{Lease: Infinite}
	}
	lt := LeaseTimes{Lease: uint32(secs)}
	if secs >= 2 {
		lt.T1 = uint32(secs / 2)
	}
	if t2 := uint32(secs * 7 / 8); t2 > lt.T1 && lt.T1 > 0 {
		lt.T2 = t2
	}
	return lt
}
