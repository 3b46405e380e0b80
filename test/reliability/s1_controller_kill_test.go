package reliability

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vm-dhcp/vm-dhcp/test/invariants"
)

// S1: the controller binary, a real process against a real API server, is
// SIGKILLed at random moments while 1,000 VMNetCfgs are created and 300
// deleted, and restarted each time. It runs without leader election: a
// SIGKILLed leader keeps its Lease for 15 s, so with election on every
// restart would mostly wait (S2 covers election and failover).
func TestS1ControllerKilledDuringChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("fault scenario")
	}
	const (
		n, deletes = 1000, 300
		minKills   = 10
	)
	r := newResult("s1", "controller SIGKILLed at random moments while 1,000 VMNetCfgs are created and 300 deleted")
	report(t, r)
	ctx := context.Background()
	cp := startControlPlane(t, nil)
	cs := newControllerSet(t, cp)
	pool := cp.network(t, "s1", bigPoolSpec())
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	r.Add("random seed", seed)

	var mu sync.Mutex
	cur := cs.start("controller-0", false)
	var kills, killsDuringWorkload int
	lastRestart := time.Now()
	workloadDone := make(chan struct{})
	killerDone := make(chan struct{})
	killRng := rand.New(rand.NewSource(seed + 1))
	go func() {
		defer close(killerDone)
		for {
			// Up for 0.2-1.2 s, so kills land during list/sync, allocation
			// and status writes alike.
			time.Sleep(time.Duration(200+killRng.Intn(1000)) * time.Millisecond)
			mu.Lock()
			select {
			case <-workloadDone:
				if kills >= minKills {
					mu.Unlock()
					return
				}
			default:
				killsDuringWorkload++
			}
			cur.kill()
			kills++
			cur = cs.start(fmt.Sprintf("controller-%d", kills), false)
			lastRestart = time.Now()
			mu.Unlock()
		}
	}()

	s := startSampler(cp.client, "s1", 250*time.Millisecond)
	stats, err := workload{ns: "s1", network: "s1/net", n: n, deletes: deletes, workers: 16, macPrefix: 0x11, rng: rng}.run(ctx, cp.client)
	close(workloadDone)
	<-killerDone
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	mu.Lock()
	final := cur
	settleFrom := lastRestart
	mu.Unlock()
	err = waitConverged(ctx, cp.client, "s1", client.ObjectKeyFromObject(pool), n-deletes, 180*time.Second, func() error {
		if ok, perr := final.exited(); ok {
			return fmt.Errorf("controller exited: %v", perr)
		}
		return nil
	})
	s.stop()
	convergence := time.Since(settleFrom)
	if err != nil {
		t.Errorf("no convergence: %v\ncontroller log:\n%s", err, tail(cs.logPath(final.name), 3000))
		r.Failure = "no convergence: " + err.Error()
	}
	violations, cerr := invariants.Check(ctx, cp.client)
	if cerr != nil {
		t.Fatal(cerr)
	}
	r.Add("VMNetCfgs created / deleted", fmt.Sprintf("%d / %d (16 writers, %s)", stats.created, stats.deleted, stats.elapsed.Round(time.Millisecond)))
	r.Add("SIGKILLs of the controller (during the workload)", fmt.Sprintf("%d (%d)", kills, killsDuringWorkload))
	r.Add("restarts", kills)
	r.Add("convergence after the last restart", convergence.Round(100*time.Millisecond))
	r.Add("VMNetCfgs / Allocated / pool used at the end (want 700 each)", endState(ctx, cp.client, "s1", client.ObjectKeyFromObject(pool)))
	r.Add("samples during the faults / addresses seen on two MACs", fmt.Sprintf("%d / %d", s.samples.Load(), s.doubled.Load()))
	r.Add("invariant violations", len(violations))
	if d := s.doubled.Load(); d != 0 {
		t.Errorf("an address was Allocated to two MACs during the faults: %v", s.first)
	}
	for i, v := range violations {
		t.Errorf("violation: %s", v)
		if i < 10 {
			r.Notes = append(r.Notes, "- violation: "+v.String())
		}
	}
}
