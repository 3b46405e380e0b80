package declinewatch

import (
	"testing"

	"golang.org/x/net/bpf"
)

// TestFilterKeepsOnlyDHCPServerDatagrams runs the socket filter in the bpf
// package's interpreter: only first fragments of UDP datagrams to port 67 may
// reach userspace; everything else the agent's interface sees stays in the
// kernel (the jump offsets once accepted every non-UDP packet).
func TestFilterKeepsOnlyDHCPServerDatagrams(t *testing.T) {
	vm, err := bpf.NewVM(declineFilter)
	if err != nil {
		t.Fatal(err)
	}
	ipv4 := func(proto byte, frag uint16, dport uint16) []byte {
		b := make([]byte, 40)
		b[0] = 0x45 // version 4, 20-byte header
		b[6], b[7] = byte(frag>>8), byte(frag)
		b[9] = proto
		b[22], b[23] = byte(dport>>8), byte(dport) // UDP destination port
		return b
	}
	for _, c := range []struct {
		name   string
		pkt    []byte
		accept bool
	}{
		{"udp to 67", ipv4(17, 0, 67), true},
		{"udp to 53", ipv4(17, 0, 53), false},
		{"tcp to 443", ipv4(6, 0, 443), false},
		{"icmp", ipv4(1, 0, 0), false},
		{"udp later fragment", ipv4(17, 100, 67), false},
	} {
		n, err := vm.Run(c.pkt)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := n > 0; got != c.accept {
			t.Errorf("%s: accepted %d bytes, want accept=%v", c.name, n, c.accept)
		}
	}
}
