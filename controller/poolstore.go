package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
)

// ErrPoolGone is returned for operations on a pool that was deleted or whose
// writer stopped.
var ErrPoolGone = errors.New("ippool is gone")

// ErrStatusTooLarge is returned for an allocation refused because the pool's
// status no longer fits in etcd (its write was refused as too large).
var ErrStatusTooLarge = errors.New("ippool status is too large to record another allocation")

// Reasons of the pool conditions and events the store writes.
const (
	ReasonAllocationDropped = "AllocationDropped"
	ReasonNoneDropped       = "NoneDropped"
	ReasonStatusTooLarge    = "StatusTooLarge"
	ReasonStatusFits        = "StatusFits"
)

// maxBatch bounds how many operations go into one IPPool status write, so a
// write stays well under the apiserver's request limits.
const maxBatch = 512

// maxConflictRetries bounds the re-read/re-apply loop of one batch.
const maxConflictRetries = 50

// PoolOp changes a pool: it may allocate or release in am and edit the
// status of pool (a private copy). The IPv4 part of the status is filled from
// am afterwards. An error is the operation's own result (e.g. the pool is
// exhausted): the operation must then leave am as it found it.
type PoolOp func(pool *v1alpha1.IPPool, am *ipam.Pool) error

type pendingOp struct {
	apply PoolOp
	dual  DualOp // set instead of apply by DoDual
	// allocates: the op may grow the status; it is refused (not applied)
	// while the status is too large, so the releases of its batch go on.
	allocates bool
	done      chan error
}

// DroppedFunc is told, after the write that erased them, of the recorded
// allocations a rebuild of the pool's IPAM could not keep.
type DroppedFunc func(pool types.NamespacedName, network string, dropped []ipam.Conflict)

// PoolStore holds the IPAM of every pool and is the only writer of IPPool
// status in this process. Each pool has one goroutine that takes the
// operations queued for it, applies as many as are waiting to the IPAM and to
// a copy of the pool, and writes the status once with the resourceVersion it
// was built on (optimistic concurrency). On a conflict it re-reads the pool,
// rebuilds the IPAM from the status (the source of truth) and re-applies the
// batch; callers hear of their operation only once the write that holds it
// succeeded. So two controllers (or a user) writing the same pool can never
// make an address be given twice: the later write fails and is redone on top
// of the earlier one.
type PoolStore struct {
	client client.Client // status writes
	reader client.Reader // uncached reads: a conflict must be resolved with the latest object
	log    logr.Logger

	mu      sync.Mutex
	pools   map[types.NamespacedName]*poolState
	ctx     context.Context
	started chan struct{}

	writes atomic.Int64

	// Optional, set before Start.
	Recorder  recorder.EventRecorder // events on the pool (dropped allocations, status too large)
	Metrics   *Metrics               // ippool used/available, refreshed after every write
	OnDropped DroppedFunc
	// now is the clock of the quarantine (time.Now).
	now func() time.Time
	// testHookQueue, when set, runs in Do between finding the pool and
	// queueing the operation (tests of the Forget race).
	testHookQueue func(*poolState)
}

type poolState struct {
	key  types.NamespacedName
	ops  chan *pendingOp
	done chan struct{}
	stop context.CancelFunc

	// Read by the debug endpoints and lookups; written by the pool's goroutine.
	mu    sync.RWMutex
	am    *ipam.Pool
	am6   *ipam.Pool6      // nil when the pool has no spec.ipv6Config
	obj   *v1alpha1.IPPool // the pool as last read or written
	stale bool             // am/obj must be re-read before the next batch

	// Written by the pool's goroutine only.
	dropped      []ipam.Conflict // recorded allocations the last rebuild could not keep
	clearDropped bool            // a rebuild for a newer spec dropped nothing
	tooLarge     bool            // the last write had to refuse allocations
}

// NewPoolStore returns a store; add it to the manager so it starts.
func NewPoolStore(c client.Client, reader client.Reader, log logr.Logger) *PoolStore {
	return &PoolStore{client: c, reader: reader, log: log,
		pools: map[types.NamespacedName]*poolState{}, started: make(chan struct{}), now: time.Now}
}

// Start implements manager.Runnable: it gives the pool goroutines their
// context and stops them when the manager stops.
func (s *PoolStore) Start(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	close(s.started)
	<-ctx.Done()
	return nil
}

// StatusWrites is the number of IPPool status writes done by this store.
func (s *PoolStore) StatusWrites() int64 { return s.writes.Load() }

// Do queues op on the pool and waits until it is durably in the IPPool status
// (or failed). It loads the pool and builds its IPAM on first use. An op
// that may allocate goes through DoAllocate instead.
func (s *PoolStore) Do(ctx context.Context, key types.NamespacedName, op PoolOp) error {
	return s.do(ctx, key, &pendingOp{apply: op})
}

// DoAllocate is Do for an op that may add allocations: while the pool's
// status is too large to be written it fails with ErrStatusTooLarge without
// being applied, so that the releases queued with it are still written.
func (s *PoolStore) DoAllocate(ctx context.Context, key types.NamespacedName, op PoolOp) error {
	return s.do(ctx, key, &pendingOp{apply: op, allocates: true})
}

func (s *PoolStore) do(ctx context.Context, key types.NamespacedName, p *pendingOp) error {
	ps, err := s.state(ctx, key)
	if err != nil {
		return err
	}
	if s.testHookQueue != nil {
		s.testHookQueue(ps)
	}
	p.done = make(chan error, 1)
	select {
	case ps.ops <- p:
	case <-ps.done:
		return fmt.Errorf("pool %s: %w", key, ErrPoolGone)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-p.done:
		return err
	case <-ps.done:
		// The pool's goroutine stopped (Forget). The send above may have
		// won its select against the closed done channel and put p into
		// the buffer after the last drain: then nobody will ever answer.
		// Every op the goroutine took is answered before done is closed.
		select {
		case err := <-p.done:
			return err
		default:
			return fmt.Errorf("pool %s: %w", key, ErrPoolGone)
		}
	case <-ctx.Done():
		// The operation may still be applied; every operation is idempotent
		// per MAC, so the caller's retry finds its result.
		return ctx.Err()
	}
}

// Forget stops the pool's goroutine and drops its IPAM (pool deleted).
func (s *PoolStore) Forget(key types.NamespacedName) {
	s.mu.Lock()
	ps := s.pools[key]
	delete(s.pools, key)
	s.mu.Unlock()
	if ps != nil {
		ps.stop()
	}
}

// Refresh makes the pool's next batch start from a fresh read when the
// caller has seen a newer generation of its spec (e.g. a new exclude):
// without a conflict the store would not notice the change.
func (s *PoolStore) Refresh(key types.NamespacedName, generation int64) {
	s.mu.Lock()
	ps := s.pools[key]
	s.mu.Unlock()
	if ps == nil {
		return
	}
	ps.mu.Lock()
	if ps.obj == nil || ps.obj.Generation < generation {
		ps.stale = true
	}
	ps.mu.Unlock()
}

// IPAM returns the pool's IPAM if loaded. It may include the batch being
// written; use it for reading only (debug endpoints, metrics).
func (s *PoolStore) IPAM(key types.NamespacedName) (*ipam.Pool, bool) {
	s.mu.Lock()
	ps := s.pools[key]
	s.mu.Unlock()
	if ps == nil {
		return nil, false
	}
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	return ps.am, ps.am != nil
}

// Keys lists the loaded pools.
func (s *PoolStore) Keys() []types.NamespacedName {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]types.NamespacedName, 0, len(s.pools))
	for k := range s.pools {
		keys = append(keys, k)
	}
	return keys
}

func (s *PoolStore) state(ctx context.Context, key types.NamespacedName) (*poolState, error) {
	select {
	case <-s.started:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ps, ok := s.pools[key]; ok {
		return ps, nil
	}
	ps := &poolState{key: key, ops: make(chan *pendingOp, maxBatch), done: make(chan struct{}), stale: true}
	// Load now so that a pool whose spec cannot make an IPAM is reported to
	// the caller instead of failing every operation later.
	if err := s.reload(ctx, ps); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(s.ctx)
	ps.stop = cancel
	s.pools[key] = ps
	go s.run(pctx, ps)
	return ps, nil
}

// reload reads the pool from the apiserver and rebuilds its IPAM from the
// recorded allocations, their owners and the quarantined addresses.
func (s *PoolStore) reload(ctx context.Context, ps *poolState) error {
	fresh := &v1alpha1.IPPool{}
	if err := s.reader.Get(ctx, ps.key, fresh); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("load pool %s: %w", ps.key, ErrPoolGone)
		}
		return fmt.Errorf("load pool %s: %w", ps.key, err)
	}
	am, am6, dropped, err := s.buildIPAMs(ps.key, fresh)
	if err != nil {
		return err
	}
	ps.mu.Lock()
	if len(dropped) > 0 {
		ps.dropped, ps.clearDropped = dropped, false
	} else if ps.obj != nil && ps.obj.Generation != fresh.Generation {
		ps.dropped, ps.clearDropped = nil, true
	}
	ps.am, ps.am6, ps.obj, ps.stale = am, am6, fresh, false
	ps.mu.Unlock()
	return nil
}

// buildIPAM builds a pool's IPAM from its spec and rebuilds from its status
// the allocations, their owners and the quarantined addresses. It returns
// the recorded allocations it could not keep.
func buildIPAM(pool *v1alpha1.IPPool, now func() time.Time) (*ipam.Pool, []ipam.Conflict, error) {
	cfg := ipamConfig(pool)
	cfg.Quarantine, cfg.Now = leaseTime(pool), now
	cfg.LongerLeasesUntil = longerLeasesUntil(pool, now())
	am, err := ipam.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	st := pool.Status.IPv4
	if st == nil {
		return am, nil, nil
	}
	dropped := am.Restore(st.Allocated)
	am.RestoreHolders(st.Owners)
	am.RestoreQuarantine(restoredReleases(st.Released, st.LeaseTime))
	return am, dropped, nil
}

// restoredReleases reads the quarantines of status.ipv4.released or
// status.ipv6.released, written under the lease time (IPv6: valid
// lifetime) recorded beside them.
func restoredReleases(released map[string]v1alpha1.ReleasedAddress, recorded *int64) map[string]ipam.Released {
	rel := make(map[string]ipam.Released, len(released))
	for ip, r := range released {
		// The lease the entry counts from: its own, else the one the
		// status was written under (else, in a status written by an older
		// version, the IPAM takes the current one).
		lease := r.Lease
		if lease == nil {
			lease = recorded
		}
		var until time.Time
		if lease != nil {
			until = r.At.Add(time.Duration(*lease) * time.Second)
		}
		rel[ip] = ipam.Released{MAC: r.MAC, At: r.At.Time, Until: until}
	}
	return rel
}

// leaseTime is the lease the pool's agent gives: a released address may be
// in use that long after its release.
func leaseTime(pool *v1alpha1.IPPool) time.Duration {
	if lt := pool.Spec.IPv4Config.LeaseTime; lt != nil && *lt > 0 {
		return time.Duration(*lt) * time.Second
	}
	return poolwatch.DefaultLeaseTime
}

// agentLagMargin is how long after the controller's rebuild an agent may
// still apply a lowered lease time: its watch can lag the controller's
// (apiserver restart, its node briefly cut from the control plane) and
// meanwhile it grants leases of the old length. An agent later than this is
// not covered (controller/README.md).
const agentLagMargin = 15 * time.Minute

// longerLeasesUntil is the latest end, after now, of a lease the agent may
// have granted under a lease time longer than the spec's current one (zero
// if none): the recorded status.ipv4.longerLeasesUntil, or now plus the
// lease time the status was last written under plus agentLagMargin if the
// spec has lowered it since. The lowering is noticed at the first rebuild
// after it (the pool's reconcile rebuilds on every spec change); the agent
// may apply it later than that, by up to the margin.
func longerLeasesUntil(pool *v1alpha1.IPPool, now time.Time) time.Time {
	st := pool.Status.IPv4
	if st == nil {
		return time.Time{}
	}
	return longerUntil(st.LeaseTime, st.LongerLeasesUntil, leaseTime(pool), now)
}

// longerUntil is longerLeasesUntil for either family: recorded and
// recordedUntil are the lease time (IPv6: valid lifetime) and the
// longerLeasesUntil the status was written with, current the spec's.
func longerUntil(recorded *int64, recordedUntil *metav1.Time, current time.Duration, now time.Time) time.Time {
	var until time.Time
	if recordedUntil != nil {
		until = recordedUntil.Time
	}
	if recorded != nil {
		if prev := time.Duration(*recorded) * time.Second; prev > current && now.Add(prev+agentLagMargin).After(until) {
			until = now.Add(prev + agentLagMargin)
		}
	}
	if !until.After(now) {
		return time.Time{}
	}
	return ceilSecond(until)
}

func (s *PoolStore) run(ctx context.Context, ps *poolState) {
	defer close(ps.done)
	for {
		var batch []*pendingOp
		select {
		case p := <-ps.ops:
			batch = append(batch, p)
		case <-ctx.Done():
			s.drain(ps)
			return
		}
		// Whatever queued up while the previous write was in flight goes
		// into this one: batching comes from the apiserver's latency itself,
		// with no timer to tune.
	collect:
		for len(batch) < maxBatch {
			select {
			case p := <-ps.ops:
				batch = append(batch, p)
			default:
				break collect
			}
		}
		s.commit(ctx, ps, batch)
	}
}

func (s *PoolStore) drain(ps *poolState) {
	for {
		select {
		case p := <-ps.ops:
			p.done <- fmt.Errorf("pool %s: %w", ps.key, ErrPoolGone)
		default:
			return
		}
	}
}

func (s *PoolStore) commit(ctx context.Context, ps *poolState, batch []*pendingOp) {
	reply := func(results []error, err error) {
		for i, p := range batch {
			if err != nil {
				p.done <- err
			} else {
				p.done <- results[i]
			}
		}
	}
	// degraded: the write of this batch was refused as too large; it is
	// redone without the ops that allocate, so releases still get written.
	degraded := false
	for attempt := 0; ; attempt++ {
		ps.mu.RLock()
		stale := ps.stale
		ps.mu.RUnlock()
		fresh := false
		if stale {
			if err := s.reload(ctx, ps); err != nil {
				reply(nil, err)
				return
			}
			fresh = true
		}
		ps.mu.Lock()
		obj := ps.obj.DeepCopy()
		results := make([]error, len(batch))
		for i, p := range batch {
			if degraded && p.allocates {
				results[i] = fmt.Errorf("pool %s: %w", ps.key, ErrStatusTooLarge)
				continue
			}
			results[i] = p.run(obj, ps)
		}
		fillPoolStatus(obj, ps.am, ps.am6)
		dropped := ps.dropped
		s.statusConditions(obj, ps, degraded)
		unchanged := equality.Semantic.DeepEqual(obj.Status, ps.obj.Status)
		ps.mu.Unlock()
		if unchanged {
			// No write means no resourceVersion check proved our view
			// current: another controller (split brain, or a leader that
			// just lost its lease) may have written since. A release that
			// found nothing, or a lookup, answered from an old view could
			// leak or double an address, so confirm on a fresh read.
			if !fresh {
				ps.mu.Lock()
				ps.stale = true
				ps.mu.Unlock()
				continue
			}
			reply(results, nil)
			return
		}
		obj.Status.LastUpdate = metav1.Now()
		err := s.client.Status().Update(ctx, obj)
		if err == nil {
			s.writes.Add(1)
			ps.mu.Lock()
			ps.obj = obj
			wasTooLarge := ps.tooLarge
			ps.tooLarge = degraded
			ps.dropped, ps.clearDropped = nil, false
			ps.mu.Unlock()
			s.written(ps.key, obj, dropped, degraded && !wasTooLarge)
			reply(results, nil)
			return
		}
		// The IPAM now holds changes that are not in etcd: throw it away.
		ps.mu.Lock()
		ps.stale = true
		ps.mu.Unlock()
		switch {
		case apierrors.IsConflict(err) && attempt < maxConflictRetries:
			continue
		case isTooLarge(err) && !degraded:
			s.log.Info("ippool status too large, refusing this batch's allocations", "ippool", ps.key, "error", err.Error())
			degraded = true
			continue
		case apierrors.IsNotFound(err):
			reply(nil, fmt.Errorf("write status of pool %s: %w", ps.key, ErrPoolGone))
		default:
			reply(nil, fmt.Errorf("write status of pool %s: %w", ps.key, err))
		}
		if ctx.Err() == nil {
			// Do not spin on an apiserver that keeps failing.
			time.Sleep(100 * time.Millisecond)
		}
		return
	}
}

// isTooLarge reports whether a write failed because the object is larger
// than the apiserver or etcd accept.
func isTooLarge(err error) bool {
	return apierrors.IsRequestEntityTooLargeError(err) || strings.Contains(err.Error(), "request is too large")
}

// statusConditions sets the store's own conditions on obj: dropped
// allocations and a status too large to grow. Called with ps.mu held.
func (s *PoolStore) statusConditions(obj *v1alpha1.IPPool, ps *poolState, degraded bool) {
	now := metav1.Now()
	switch {
	case len(ps.dropped) > 0:
		v1alpha1.SetCondition(&obj.Status.Conditions, v1alpha1.AllocationsDropped, corev1.ConditionTrue,
			ReasonAllocationDropped, droppedMessage(ps.dropped), now)
	case ps.clearDropped && v1alpha1.FindCondition(obj.Status.Conditions, v1alpha1.AllocationsDropped) != nil:
		v1alpha1.SetCondition(&obj.Status.Conditions, v1alpha1.AllocationsDropped, corev1.ConditionFalse,
			ReasonNoneDropped, "", now)
	}
	switch {
	case degraded:
		v1alpha1.SetCondition(&obj.Status.Conditions, v1alpha1.StatusTooLarge, corev1.ConditionTrue, ReasonStatusTooLarge,
			fmt.Sprintf("the status (%d allocations) no longer fits in etcd: new allocations are refused, releases go on", ps.am.Used()), now)
	case ps.tooLarge:
		v1alpha1.SetCondition(&obj.Status.Conditions, v1alpha1.StatusTooLarge, corev1.ConditionFalse, ReasonStatusFits, "", now)
	}
}

// droppedMessage names the dropped allocations (at most 10) and why.
func droppedMessage(dropped []ipam.Conflict) string {
	parts := make([]string, 0, len(dropped))
	for _, c := range dropped {
		parts = append(parts, fmt.Sprintf("%s=%s (%v)", c.IP, c.MAC, c.Err))
	}
	slices.Sort(parts)
	more := ""
	if len(parts) > 10 {
		more = fmt.Sprintf(" and %d more", len(parts)-10)
		parts = parts[:10]
	}
	return fmt.Sprintf("dropped %d recorded allocation(s) the spec no longer allows, their VMNetCfgs are allocated again: %s%s",
		len(dropped), strings.Join(parts, ", "), more)
}

// written tells the world of a successful status write: metrics, events,
// and the VMNetCfgs whose allocation was dropped.
func (s *PoolStore) written(key types.NamespacedName, obj *v1alpha1.IPPool, dropped []ipam.Conflict, tooLarge bool) {
	if s.Metrics != nil && obj.Status.IPv4 != nil {
		labels := []string{key.String(), obj.Spec.IPv4Config.CIDR, obj.Network()} // namespace/name, as updatePoolMetrics and finalize write it
		s.Metrics.PoolUsed.WithLabelValues(labels...).Set(float64(obj.Status.IPv4.Used))
		s.Metrics.PoolAvailable.WithLabelValues(labels...).Set(float64(obj.Status.IPv4.Available))
	}
	if s.Recorder != nil {
		if len(dropped) > 0 {
			s.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonAllocationDropped, "RebuildIPAM", "%s", droppedMessage(dropped))
		}
		if tooLarge {
			s.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonStatusTooLarge, "WriteStatus",
				"the status no longer fits in etcd: new allocations are refused until addresses are released")
		}
	}
	if len(dropped) > 0 && s.OnDropped != nil {
		s.OnDropped(key, obj.Spec.NetworkName, dropped)
	}
}

// fillIPv4 writes the IPAM's allocations, marks, owners, quarantine and
// counts into the status.
func fillIPv4(pool *v1alpha1.IPPool, am *ipam.Pool) {
	st := &v1alpha1.IPv4Status{Allocated: am.Allocated(), Used: am.Used(), Available: am.Available()}
	if h := am.Holders(); len(h) > 0 {
		st.Owners = h
	}
	lt := int64(am.Quarantine() / time.Second)
	st.Released = releasedStatus(am.Quarantined(), lt)
	// The lease time in force, so that a rebuild under a lower one knows
	// that longer leases may still run (longerLeasesUntil).
	st.LeaseTime = &lt
	st.LongerLeasesUntil = longerStatus(am.LongerLeasesUntil())
	pool.Status.IPv4 = st
}

// releasedStatus is the status form of an IPAM's quarantines (nil when
// there are none), written under the lease time (IPv6: valid lifetime) lt
// in seconds.
func releasedStatus(q map[string]ipam.Released, lt int64) map[string]v1alpha1.ReleasedAddress {
	if len(q) == 0 {
		return nil
	}
	out := make(map[string]v1alpha1.ReleasedAddress, len(q))
	for ip, r := range q {
		// Whole seconds, as the status stores them (the IPAM keeps its
		// times so): a rebuilt IPAM compares equal to the one that wrote
		// it. The lease is written only when it is longer than the
		// status's lease time: the common entry stays small.
		e := v1alpha1.ReleasedAddress{MAC: r.MAC, At: metav1.NewTime(r.At.Truncate(time.Second))}
		if lease := int64(ceilSecond(r.Until).Sub(e.At.Time) / time.Second); lease > lt {
			e.Lease = &lease
		}
		out[ip] = e
	}
	return out
}

// longerStatus is the status form of an IPAM's LongerLeasesUntil.
func longerStatus(u time.Time) *metav1.Time {
	if u.IsZero() {
		return nil
	}
	return &metav1.Time{Time: ceilSecond(u)}
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}

// AllocateOp gives mac an address for owner (the VMNetCfg's UID): the
// requested one (wantIP, may be empty), else the one already recorded for
// mac, else one mac released recently, else the lowest free address not
// quarantined. A requested address that is taken, reserved, quarantined or
// outside the range is an error rather than a silent substitute: the user
// asked for that address. Run it with DoAllocate.
func AllocateOp(mac, owner, wantIP string, got *ipam.Grant) PoolOp {
	return func(_ *v1alpha1.IPPool, am *ipam.Pool) error {
		if wantIP != "" {
			if err := am.AllocateIPFor(wantIP, mac, owner); err != nil {
				return err
			}
			*got = ipam.Grant{IP: wantIP}
			return nil
		}
		g, err := am.AllocateFor(mac, owner)
		if err != nil {
			return err
		}
		*got = g
		return nil
	}
}

// ReleaseOp frees the address of mac if it holds one for owner; an address
// mac holds for another owner (another VMNetCfg with the same MAC) is not
// this release's to free, and is left alone.
func ReleaseOp(mac, owner string) PoolOp {
	return func(_ *v1alpha1.IPPool, am *ipam.Pool) error {
		if _, err := am.ReleaseFor(mac, owner); err != nil && !errors.Is(err, ipam.ErrHeldByOther) {
			return err
		}
		return nil
	}
}
