package reliability

import (
	"testing"
	"time"
)

// TestS7Wire6 runs the wire scenarios of issue 12 for IPv6 (issue 15): 20
// real dhclient -6 guests (DUID-LL of their NIC's MAC; 18 VMs with one NIC,
// 2 with two) renew their IPv6 address every 5 s (T1) under the churn of
// S7A (S7C, on a dual-stack pool) and the faults of S7B (S7D, on an
// IPv6-only pool), so both ways the controller keeps the IPv6 half (owners
// of the IPv4 half, owners of its own) are exercised. Every guest's global
// IPv6 address is sampled all along, duplicate address detection stays on
// in the guests, and the same checker as IPv4 applies (see
// wire_check_test.go). Fewer guests than S7A/S7B keep the two scenarios
// within about four minutes.
//
// The assertions are the shared ones of s7_wire_test.go: wireRun.finish
// fails the test on any address held by two guests, any failed duplicate
// address detection, any address held past the valid lifetime after its
// MAC lost it, failed churn operations or no convergence. Shown to fail
// with an agent that handed one address to two MACs (90 violations in
// S7C) and with the IPv6 quarantine removed (docs/reliability.md).
func TestS7Wire6(t *testing.T) {
	needRootAndTools(t, "ip", "dhclient")
	cp := startControlPlane(t, nil)
	t.Run("S7C-v6-vm-churn", func(t *testing.T) {
		vmChurn(t, cp, wireScenario{id: "s7c", family: wireDualIPv6, vms: wire6VMs, dual: wire6Dual, ops: 80, maxTime: 60 * time.Second,
			title: "IPv6: 20 dhclient -6 guests on a dual-stack pool renewing while VMs are deleted and recreated with the same MAC, NICs removed and re-added, MACs changed"})
	})
	t.Run("S7D-v6-pools-and-kills", func(t *testing.T) {
		poolsAndKills(t, cp, wireScenario{id: "s7d", family: wireOnlyIPv6, vms: wire6VMs, dual: wire6Dual, ops: 12, maxTime: 60 * time.Second,
			title: "IPv6: 20 dhclient -6 guests on an IPv6-only pool renewing while the pool is paused, edited and unpaused and the controller and the agent are SIGKILLed, during VM churn"})
	})
}

const (
	wire6VMs  = 18 // VMNetCfgs of the IPv6 scenarios
	wire6Dual = 2  // of which with two NICs: 20 guests
)
