package poolwatch

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// repeatEvery is how often an error that does not change is logged again
// while it lasts.
const repeatEvery = time.Minute

// errorReporter logs the failures of a pool's list and watch at error
// level, which the agent shows by default. client-go retries them on its
// own with backoff and logs them only through klog, which the agent does
// not show: without this an agent that cannot reach the API server (no
// route, wrong credentials, RBAC, a CRD of another version) said nothing
// but "dropping request because response is nil". An error is logged when
// it first happens, when it changes, and once a minute while it lasts; the
// recovery is logged once.
type errorReporter struct {
	log logr.Logger
	now func() time.Time

	mu sync.Mutex
	// failing holds, per operation (list, watch: client-go alternates
	// them while the API server is away), the last error and when it was
	// logged; an operation that works is absent.
	failing map[string]loggedError
}

type loggedError struct {
	key string
	at  time.Time
}

func (r *errorReporter) failed(op string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key, now := errorKey(err), r.now()
	if last, ok := r.failing[op]; ok && last.key == key && now.Sub(last.at) < repeatEvery {
		return
	}
	if r.failing == nil {
		r.failing = map[string]loggedError{}
	}
	r.failing[op] = loggedError{key: key, at: now}
	kv := []any{}
	if reason := apierrors.ReasonForError(err); reason != metav1.StatusReasonUnknown {
		kv = append(kv, "reason", reason)
	}
	r.log.Error(err, "cannot "+op+" the IPPool on the API server; serving the last view (if any) and retrying", kv...)
}

func (r *errorReporter) ok(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.failing[op]; !ok {
		return
	}
	delete(r.failing, op)
	r.log.Info("the IPPool " + op + " works again")
}

// errorKey is what makes two errors the same one: a request's URL carries
// a random watch timeout, so for a failed request only its cause counts.
func errorKey(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " " + ue.Err.Error()
	}
	return err.Error()
}

// reporting wraps lw so that every failed list and watch, and every error
// event inside a watch (e.g. an object that does not decode), reaches rep.
func reporting(lw cache.ListerWatcherWithContext, rep *errorReporter) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			obj, err := lw.ListWithContext(ctx, opts)
			if err != nil {
				rep.failed("list", err)
			} else {
				rep.ok("list")
			}
			return obj, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			wi, err := lw.WatchWithContext(ctx, opts)
			if err != nil {
				rep.failed("watch", err)
				return nil, err
			}
			rep.ok("watch")
			return watch.Filter(wi, func(e watch.Event) (watch.Event, bool) {
				if e.Type == watch.Error {
					rep.failed("watch", apierrors.FromObject(e.Object))
				}
				return e, true
			}), nil
		},
	}
}
