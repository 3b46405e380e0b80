package reliability

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vm-dhcp/vm-dhcp/test/invariants"
)

const leaseName = "vm-dhcp-controller.network.harvesterhci.io"

// S2: two controller processes at once, with leader election on (the leader
// is SIGKILLed half-way and the standby takes over) and with it off on both
// (split brain: both allocate from the same pool at the same time, one is
// SIGKILLed and restarted half-way). Only the optimistic-concurrency writes
// stand between split brain and a doubled address.
func TestS2TwoControllers(t *testing.T) {
	if testing.Short() {
		t.Skip("fault scenario")
	}
	cp := startControlPlane(t, nil)
	t.Run("leader-election", func(t *testing.T) { twoControllers(t, cp, true) })
	t.Run("split-brain", func(t *testing.T) { twoControllers(t, cp, false) })
}

func twoControllers(t *testing.T, cp *controlPlane, leaderElect bool) {
	const n, deletes = 1000, 300
	ctx := context.Background()
	id, ns, title := "s2a", "s2a", "two controllers with leader election, the leader SIGKILLed half-way"
	if !leaderElect {
		id, ns, title = "s2b", "s2b", "split brain: two controllers with --leader-elect=false, one SIGKILLed and restarted half-way"
	}
	r := newResult(id, title)
	report(t, r)
	cs := newControllerSet(t, cp)
	pool := cp.network(t, ns, bigPoolSpec())
	seed := time.Now().UnixNano()
	r.Add("random seed", seed)

	a := cs.start("a", leaderElect)
	oldHolder := ""
	if leaderElect {
		// Let a win the election before b starts, so the leader is known.
		if err := eventually(ctx, 60*time.Second, 200*time.Millisecond, func() error {
			h, err := leaseHolder(ctx, cp.client)
			if err == nil && h == "" {
				err = fmt.Errorf("lease has no holder")
			}
			oldHolder = h
			return err
		}); err != nil {
			t.Fatalf("no leader: %v\n%s", err, tail(cs.logPath("a"), 3000))
		}
	}
	b := cs.start("b", leaderElect)

	var once sync.Once
	var failover time.Duration
	var failoverErr error
	faultDone := make(chan struct{})
	half := func(created int) {
		if created < n/2 {
			return
		}
		once.Do(func() {
			go func() {
				defer close(faultDone)
				killed := time.Now()
				a.kill()
				if leaderElect {
					// The standby takes the Lease once it expires.
					failoverErr = eventually(ctx, 60*time.Second, 100*time.Millisecond, func() error {
						h, err := leaseHolder(ctx, cp.client)
						if err == nil && (h == oldHolder || h == "") {
							err = fmt.Errorf("lease still held by %q", h)
						}
						return err
					})
					failover = time.Since(killed)
				}
				a = cs.start("a-restarted", leaderElect)
			}()
		})
	}
	s := startSampler(cp.client, ns, 250*time.Millisecond)
	stats, err := workload{ns: ns, network: ns + "/net", n: n, deletes: deletes, workers: 16, macPrefix: 0x20 + byte(len(id)),
		rng: rand.New(rand.NewSource(seed)), onProgress: half}.run(ctx, cp.client)
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	<-faultDone
	if failoverErr != nil {
		t.Fatalf("no failover: %v", failoverErr)
	}
	start := time.Now()
	err = waitConverged(ctx, cp.client, ns, client.ObjectKeyFromObject(pool), n-deletes, 180*time.Second, func() error { return nil })
	s.stop()
	if err != nil {
		t.Errorf("no convergence: %v", err)
		r.Failure = "no convergence: " + err.Error()
	}
	for _, p := range []*process{a, b} {
		if ok, perr := p.exited(); ok {
			t.Errorf("controller %s exited: %v", p.name, perr)
		}
	}
	violations, err := invariants.Check(ctx, cp.client)
	if err != nil {
		t.Fatal(err)
	}
	r.Add("controller processes at once", 2)
	r.Add("leader election", leaderElect)
	r.Add("VMNetCfgs created / deleted", fmt.Sprintf("%d / %d (16 writers, %s)", stats.created, stats.deleted, stats.elapsed.Round(time.Millisecond)))
	if leaderElect {
		r.Add("faults", "leader SIGKILLed at 500 creates, restarted as standby")
		r.Add("failover (kill to new Lease holder)", failover.Round(100*time.Millisecond))
	} else {
		r.Add("faults", "one of the two SIGKILLed at 500 creates and restarted at once")
	}
	r.Add("convergence after the workload", time.Since(start).Round(100*time.Millisecond))
	r.Add("VMNetCfgs / Allocated / pool used at the end (want 700 each)", endState(ctx, cp.client, ns, client.ObjectKeyFromObject(pool)))
	r.Add("samples during the run / addresses seen on two MACs", fmt.Sprintf("%d / %d", s.samples.Load(), s.doubled.Load()))
	r.Add("invariant violations", len(violations))
	if d := s.doubled.Load(); d != 0 {
		t.Errorf("an address was Allocated to two MACs: %v", s.first)
	}
	for i, v := range violations {
		t.Errorf("violation: %s", v)
		if i < 10 {
			r.Notes = append(r.Notes, "- violation: "+v.String())
		}
	}
}

func leaseHolder(ctx context.Context, c client.Client) (string, error) {
	var l coordinationv1.Lease
	if err := c.Get(ctx, client.ObjectKey{Namespace: agentNamespace, Name: leaseName}, &l); err != nil {
		return "", fmt.Errorf("get lease: %w", err)
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}
