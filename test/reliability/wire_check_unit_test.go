package reliability

import (
	"testing"
	"time"
)

// The classification of hook events must not call a legitimate handover a
// violation: these cases pin what counts.
func TestWireClassification(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const a, b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
	// The pool, read every 200 ms for 30 s: 10.0.0.5 belongs to a until
	// 10 s, to nobody until 20 s, then to b.
	pt := &poolTimeline{}
	for s := 0.0; s <= 30; s += 0.2 {
		owners := map[string]string{}
		switch {
		case s < 10:
			owners["10.0.0.5"] = a
		case s >= 20:
			owners["10.0.0.5"] = b
		}
		pt.add(at(s), owners)
	}

	tests := []struct {
		name            string
		evs             []clientEvent
		notNAKed, acked int
		naked, timedOut int
	}{
		{"renewed while owned", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(8), "renew", "10.0.0.5"}}, 0, 0, 0, 0},
		{"ACK just after the loss: the agent may lag", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(11), "renew", "10.0.0.5"}}, 0, 0, 0, 0},
		{"ACK well after the loss", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(13), "renew", "10.0.0.5"}}, 0, 1, 0, 0},
		{"NAKed after the loss", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(13), "nak", ""}, {at(13), "deconfig", ""}}, 0, 0, 1, 0},
		{"timed out well after the loss", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(17), "deconfig", ""}}, 1, 0, 0, 0},
		{"timed out while owned (agent down)", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(9), "deconfig", ""}}, 0, 0, 0, 1},
		{"timed out across the loss", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(13), "deconfig", ""}}, 0, 0, 0, 1},
		{"start-up deconfig is not a drop", []clientEvent{{at(0), "deconfig", ""}, {at(1), "bound", "10.0.0.5"}}, 0, 0, 0, 0},
		{"IPv6: lifetime 0 after the loss is its NAK", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(13), "drop", "10.0.0.5"}}, 0, 0, 1, 0},
		{"IPv6: expired after the loss (NoBinding) is no violation", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(17), "expire", "10.0.0.5"}}, 0, 0, 0, 0},
		{"IPv6: renewed well after the loss", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(14), "renew", "10.0.0.5"}}, 0, 1, 0, 0},
		{"another MAC after a reboot", []clientEvent{{at(1), "bound", "10.0.0.5"}, {at(12), "reboot", b}, {at(12.1), "deconfig", ""}, {at(25), "bound", "10.0.0.5"}}, 0, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st eventStats
			analyzeEvents(0, a, tc.evs, pt, &st)
			if len(st.notNAKed) != tc.notNAKed || len(st.ackedLost) != tc.acked || st.naked != tc.naked || st.timedOutOwned != tc.timedOut {
				t.Errorf("not NAKed %d, ACKed lost %d, NAKed %d, timed out owned %d; want %d, %d, %d, %d (%v %v)",
					len(st.notNAKed), len(st.ackedLost), st.naked, st.timedOutOwned, tc.notNAKed, tc.acked, tc.naked, tc.timedOut, st.notNAKed, st.ackedLost)
			}
		})
	}

	// A gap in the pool reads is no evidence.
	gap := &poolTimeline{}
	gap.add(at(0), map[string]string{})
	gap.add(at(5), map[string]string{})
	if gap.neverOwned("10.0.0.5", a, at(1), at(4)) {
		t.Errorf("a window without reads counted as not owned")
	}
	if pt.neverOwned("10.0.0.5", a, at(29), at(31)) {
		t.Errorf("a window reaching past the last read counted as not owned")
	}
}
