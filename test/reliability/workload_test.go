package reliability

import (
	"context"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/test/invariants"
)

// bigPoolSpec is a /16 with 3,833 addresses to give out: room for every VM
// of a workload without exhausting the pool.
func bigPoolSpec() v1alpha1.IPv4Config {
	return v1alpha1.IPv4Config{ServerIP: "10.20.0.2", CIDR: "10.20.0.0/16", Router: "10.20.0.1",
		Pool: v1alpha1.Pool{Start: "10.20.0.10", End: "10.20.15.250"}}
}

// workload creates n VMNetCfgs from several goroutines and deletes a random
// `deletes` of them, each shortly after its creation (some before and some
// after the controller has allocated them).
type workload struct {
	ns, network string
	n, deletes  int
	workers     int
	macPrefix   byte
	rng         *rand.Rand
	// onProgress is called after every create with the count so far.
	onProgress func(created int)
}

type workloadStats struct {
	created, deleted int
	elapsed          time.Duration
}

func vmName(i int) string { return fmt.Sprintf("vm-%04d", i) }

func (w workload) mac(i int) string {
	return fmt.Sprintf("02:%02x:00:00:%02x:%02x", w.macPrefix, i>>8&0xff, i&0xff)
}

// run performs the workload; API errors other than the expected races are
// returned (the apiserver is up all along in these scenarios).
func (w workload) run(ctx context.Context, c client.Client) (workloadStats, error) {
	start := time.Now()
	doomed := map[int]bool{}
	for _, i := range w.rng.Perm(w.n)[:w.deletes] {
		doomed[i] = true
	}
	delays := make([]time.Duration, w.n)
	for i := range delays {
		delays[i] = time.Duration(w.rng.Intn(800)) * time.Millisecond
	}
	var created, deleted atomic.Int64
	var firstErr error
	var errMu sync.Mutex
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	next := make(chan int)
	toDelete := make(chan int, w.n)
	var creators, deleters sync.WaitGroup
	for range w.workers {
		creators.Go(func() {
			for i := range next {
				if err := c.Create(ctx, vmNetCfg(w.ns, vmName(i), w.network, w.mac(i))); err != nil {
					fail(fmt.Errorf("create vmnetcfg %s/%s: %w", w.ns, vmName(i), err))
					continue
				}
				n := created.Add(1)
				if w.onProgress != nil {
					w.onProgress(int(n))
				}
				if doomed[i] {
					toDelete <- i
				}
			}
		})
	}
	for range w.workers / 2 {
		deleters.Go(func() {
			for i := range toDelete {
				time.Sleep(delays[i])
				v := vmNetCfg(w.ns, vmName(i), w.network, w.mac(i))
				if err := c.Delete(ctx, v); err != nil && !apierrors.IsNotFound(err) {
					fail(fmt.Errorf("delete vmnetcfg %s/%s: %w", w.ns, vmName(i), err))
					continue
				}
				deleted.Add(1)
			}
		})
	}
	for i := range w.n {
		next <- i
	}
	close(next)
	creators.Wait()
	close(toDelete)
	deleters.Wait()
	return workloadStats{created: int(created.Load()), deleted: int(deleted.Load()), elapsed: time.Since(start)}, firstErr
}

// waitConverged waits (up to timeout) until every VMNetCfg is gone or
// Allocated, then (up to 30 s more) for the pool's count to agree: a count
// that stays wrong once the objects have settled is a leak, not slowness.
func waitConverged(ctx context.Context, c client.Client, ns string, pool types.NamespacedName, want int, timeout time.Duration, alive func() error) error {
	err := eventually(ctx, timeout, 500*time.Millisecond, func() error {
		if err := alive(); err != nil {
			return err
		}
		err := converged(ctx, c, ns, pool, want)
		if err != nil && strings.HasPrefix(err.Error(), fmt.Sprintf("%d vmnetcfgs (0 being deleted, 0 not Allocated)", want)) {
			return nil // objects settled; the count is checked below
		}
		return err
	})
	if err != nil {
		return err
	}
	return eventually(ctx, 30*time.Second, 500*time.Millisecond, func() error {
		return converged(ctx, c, ns, pool, want)
	})
}

// converged reports nil once every VMNetCfg of ns is gone or Allocated,
// exactly want remain, and the pool counts want addresses in use.
func converged(ctx context.Context, c client.Client, ns string, pool types.NamespacedName, want int) error {
	var list v1alpha1.VirtualMachineNetworkConfigList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("list vmnetcfgs: %w", err)
	}
	deleting, notAllocated := 0, 0
	for _, v := range list.Items {
		switch {
		case v.DeletionTimestamp != nil:
			deleting++
		case !v1alpha1.IsConditionTrue(v.Status.Conditions, v1alpha1.Allocated):
			notAllocated++
		}
	}
	var p v1alpha1.IPPool
	if err := c.Get(ctx, pool, &p); err != nil {
		return fmt.Errorf("get ippool: %w", err)
	}
	used := -1
	if p.Status.IPv4 != nil {
		used = p.Status.IPv4.Used
	}
	if len(list.Items) != want || deleting != 0 || notAllocated != 0 || used != want {
		return fmt.Errorf("%d vmnetcfgs (%d being deleted, %d not Allocated), pool used %d; want %d Allocated and used %d",
			len(list.Items), deleting, notAllocated, used, want, want)
	}
	return nil
}

// sampler lists the VMNetCfgs of ns over and over while faults are injected
// and counts the moments an address was Allocated to two MACs.
type sampler struct {
	samples, doubled atomic.Int64
	mu               sync.Mutex
	first            []invariants.Violation
	stop             func()
}

func startSampler(c client.Client, ns string, every time.Duration) *sampler {
	s := &sampler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.stop = func() { cancel(); <-done }
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var list v1alpha1.VirtualMachineNetworkConfigList
			if err := c.List(ctx, &list, client.InNamespace(ns)); err == nil {
				s.samples.Add(1)
				if v := invariants.EvaluateClaims(list.Items); len(v) > 0 {
					s.doubled.Add(int64(len(v)))
					s.mu.Lock()
					if s.first == nil {
						s.first = v
					}
					s.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
	}()
	return s
}

// percentiles formats p50/p99/max of ds.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration { return s[int(q*float64(len(s)-1))] }
	r := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	return fmt.Sprintf("p50 %s, p99 %s, max %s (n=%d)", r(at(0.5)), r(at(0.99)), r(s[len(s)-1]), len(s))
}

// endState describes what is left: VMNetCfgs, how many Allocated, pool used.
func endState(ctx context.Context, c client.Client, ns string, pool types.NamespacedName) string {
	var list v1alpha1.VirtualMachineNetworkConfigList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err.Error()
	}
	allocated := 0
	for _, v := range list.Items {
		if v.DeletionTimestamp == nil && v1alpha1.IsConditionTrue(v.Status.Conditions, v1alpha1.Allocated) {
			allocated++
		}
	}
	var p v1alpha1.IPPool
	if err := c.Get(ctx, pool, &p); err != nil || p.Status.IPv4 == nil {
		return fmt.Sprintf("%d / %d / ? (%v)", len(list.Items), allocated, err)
	}
	return fmt.Sprintf("%d / %d / %d", len(list.Items), allocated, p.Status.IPv4.Used)
}
