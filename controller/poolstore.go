package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// ErrPoolGone is returned for operations on a pool that was deleted or whose
// writer stopped.
var ErrPoolGone = errors.New("ippool is gone")

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
	done  chan error
}

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
}

// NewPoolStore returns a store; add it to the manager so it starts.
func NewPoolStore(c client.Client, reader client.Reader, log logr.Logger) *PoolStore {
	return &PoolStore{client: c, reader: reader, log: log,
		pools: map[types.NamespacedName]*poolState{}, started: make(chan struct{})}
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
// (or failed). It loads the pool and builds its IPAM on first use.
func (s *PoolStore) Do(ctx context.Context, key types.NamespacedName, op PoolOp) error {
	ps, err := s.state(ctx, key)
	if err != nil {
		return err
	}
	p := &pendingOp{apply: op, done: make(chan error, 1)}
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
// recorded allocations.
func (s *PoolStore) reload(ctx context.Context, ps *poolState) error {
	fresh := &v1alpha1.IPPool{}
	if err := s.reader.Get(ctx, ps.key, fresh); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("load pool %s: %w", ps.key, ErrPoolGone)
		}
		return fmt.Errorf("load pool %s: %w", ps.key, err)
	}
	am, am6, err := s.buildIPAMs(ps.key, fresh)
	if err != nil {
		return err
	}
	ps.mu.Lock()
	ps.am, ps.am6, ps.obj, ps.stale = am, am6, fresh, false
	ps.mu.Unlock()
	return nil
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
			results[i] = p.run(obj, ps)
		}
		fillStatus(obj, ps.am, ps.am6)
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
			ps.mu.Unlock()
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

// fillIPv4 writes the IPAM's allocations, marks and counts into the status.
func fillIPv4(pool *v1alpha1.IPPool, am *ipam.Pool) {
	pool.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: am.Allocated(), Used: am.Used(), Available: am.Available()}
}

// AllocateOp gives mac an address: the requested one (wantIP, may be
// empty), else the one already recorded for mac, else the lowest free.
// A requested address that is taken, reserved or outside the range is an
// error rather than a silent substitute: the user asked for that address.
func AllocateOp(mac, wantIP string, got *string) PoolOp {
	return func(_ *v1alpha1.IPPool, am *ipam.Pool) error {
		if wantIP != "" {
			if err := am.AllocateIP(wantIP, mac); err != nil {
				return err
			}
			*got = wantIP
			return nil
		}
		ip, err := am.Allocate(mac)
		if err != nil {
			return err
		}
		*got = ip
		return nil
	}
}

// ReleaseOp frees the address of mac, if it holds one.
func ReleaseOp(mac string) PoolOp {
	return func(_ *v1alpha1.IPPool, am *ipam.Pool) error {
		am.ReleaseMAC(mac)
		return nil
	}
}
