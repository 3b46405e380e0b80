package poolwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Watch follows one IPPool. Readers call Current, which is a single atomic
// load of an immutable Pool: the packet path takes no lock. Writers (the
// informer's handler goroutine and UseSnapshot) serialize on mu.
type Watch struct {
	namespace, name string
	log             logr.Logger
	now             func() time.Time

	current atomic.Pointer[Pool]
	ready   atomic.Bool
	// snapshotSavedAt is the UnixNano time the served snapshot was written,
	// 0 when there is none; read by the metrics collector.
	snapshotSavedAt atomic.Int64

	mu           sync.Mutex
	synced       bool // the API server's view has been published
	snapshotPath string
	subscribers  []chan struct{}
	// lastSkipped is the entries skipped in the last view from the API
	// server, as logged ("" for none).
	lastSkipped string
}

func newWatch(namespace, name string, log logr.Logger) *Watch {
	return &Watch{namespace: namespace, name: name, log: log, now: time.Now}
}

// Key is namespace/name of the watched pool.
func (w *Watch) Key() string { return w.namespace + "/" + w.name }

// Current is the pool being served, nil until the API server or a snapshot
// has provided one.
func (w *Watch) Current() *Pool { return w.current.Load() }

// Ready is true once the pool has been synced from the API server or
// loaded from a snapshot.
func (w *Watch) Ready() bool { return w.ready.Load() }

// Subscribe returns a channel that receives a value after every change of
// Current. Sends never block: a slow reader sees one pending notice.
func (w *Watch) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.subscribers = append(w.subscribers, ch)
	if w.current.Load() != nil {
		ch <- struct{}{}
	}
	return ch
}

// UseSnapshot makes the watch save every change to path. If the API server
// has not answered yet, the snapshot at path (if any) is served at once; the
// first view from the API server replaces it. A missing file is not an
// error (first start); an unreadable one is reported and ignored.
func (w *Watch) UseSnapshot(path string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.snapshotPath != "" && w.snapshotPath != path {
		return fmt.Errorf("pool %s: snapshot already written to %s, cannot also use %s", w.Key(), w.snapshotPath, path)
	}
	w.snapshotPath = path
	if w.synced {
		// Already live: bring the file up to date now.
		if p := w.current.Load(); p != nil {
			w.saveLocked(p)
		}
		return nil
	}
	p, savedAt, err := ReadSnapshot(path, w.namespace, w.name)
	if errors.Is(err, os.ErrNotExist) {
		w.log.Info("no snapshot yet, waiting for the API server", "path", path)
		return nil
	}
	if p == nil {
		w.log.Error(err, "snapshot not loaded", "path", path)
		return nil
	}
	if err != nil {
		w.log.Error(err, "snapshot loaded with skipped entries", "path", path)
	}
	w.snapshotSavedAt.Store(savedAt.UnixNano())
	w.publishLocked(p)
	w.log.Info("serving from snapshot until the API server answers", "path", path, "leases", len(p.Leases), "savedAt", savedAt)
	return nil
}

// fromAPI publishes a view received from the API server (nil: the pool does
// not exist) and saves it to the snapshot.
func (w *Watch) fromAPI(ipp *v1alpha1.IPPool) {
	var p *Pool
	var skipped string
	if ipp == nil {
		p = emptyPool(w.namespace, w.name)
	} else {
		var err error
		p, err = FromIPPool(ipp)
		if err != nil {
			skipped = err.Error()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// Every status write (each allocation) brings a new view: log skipped
	// entries when they change, not once per view.
	if skipped != w.lastSkipped {
		if skipped != "" {
			w.log.Error(errors.New(skipped), "pool served with entries skipped")
		} else if ipp != nil {
			w.log.Info("pool served with no entry skipped")
		}
		w.lastSkipped = skipped
	}
	w.synced = true
	w.publishLocked(p)
	if w.snapshotPath != "" {
		w.saveLocked(p)
	}
}

func (w *Watch) publishLocked(p *Pool) {
	w.current.Store(p)
	w.ready.Store(true)
	for _, ch := range w.subscribers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	w.log.V(1).Info("pool published", "leases", len(p.Leases), "resourceVersion", p.ResourceVersion, "fromSnapshot", p.FromSnapshot)
}

func (w *Watch) saveLocked(p *Pool) {
	now := w.now()
	if err := WriteSnapshot(w.snapshotPath, p, now); err != nil {
		// Serving goes on from memory; the next change retries the write.
		w.log.Error(err, "snapshot not saved")
		return
	}
	w.snapshotSavedAt.Store(now.UnixNano())
}

// run lists and watches the one IPPool named by the watch (field selector
// metadata.name, so RBAC can be limited to that object) until ctx ends.
// client-go's reflector retries with backoff forever; the packet path
// never waits for it.
func (w *Watch) run(ctx context.Context, cfg *rest.Config) error {
	rc, err := ippoolRESTClient(cfg)
	if err != nil {
		return fmt.Errorf("watch pool %s: %w", w.Key(), err)
	}
	lw := reporting(cache.NewListWatchFromClient(rc, "ippools", w.namespace, fields.OneTermEqualSelector("metadata.name", w.name)),
		&errorReporter{log: w.log, now: time.Now})
	// client-go's own lines (e.g. "Failed to watch") go to the agent's log
	// too, not to klog.
	cglog := w.log.WithName("client-go")
	store, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		Logger:        &cglog,
		ListerWatcher: lw,
		ObjectType:    &v1alpha1.IPPool{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.onObject(obj) },
			UpdateFunc: func(_, obj any) { w.onObject(obj) },
			DeleteFunc: func(any) { w.fromAPI(nil) },
		},
	})
	go ctrl.RunWithContext(ctx)
	go func() {
		if !cache.WaitForCacheSync(ctx.Done(), ctrl.HasSynced) {
			return
		}
		// The pool may not exist: then no Add arrives and the API server's
		// answer is "nothing to serve". Publishing from the store is
		// idempotent if an Add raced with us.
		obj, exists, err := store.GetByKey(w.Key())
		if err != nil || !exists {
			w.fromAPI(nil)
			return
		}
		w.onObject(obj)
		w.log.Info("pool synced from the API server")
	}()
	return nil
}

func (w *Watch) onObject(obj any) {
	ipp, ok := obj.(*v1alpha1.IPPool)
	if !ok {
		w.log.Error(fmt.Errorf("unexpected object %T", obj), "ignored watch event")
		return
	}
	w.fromAPI(ipp)
}

// ippoolRESTClient is a REST client for network.harvesterhci.io/v1alpha1.
func ippoolRESTClient(cfg *rest.Config) (*rest.RESTClient, error) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register %s: %w", v1alpha1.GroupVersion, err)
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1alpha1.GroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = "vm-dhcp-agent"
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("rest client for %s: %w", v1alpha1.GroupVersion, err)
	}
	return rc, nil
}
