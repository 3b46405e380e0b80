package reliability

import (
	"context"
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestIsTransient: an overloaded or restarting API server is retried; an
// answer about the object never is.
func TestIsTransient(t *testing.T) {
	gr := schema.GroupResource{Group: "network.harvesterhci.io", Resource: "ippools"}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{apierrors.NewServerTimeout(gr, "update", 1), true},
		{apierrors.NewTimeoutError("request did not complete", 1), true},
		{apierrors.NewTooManyRequests("slow down", 1), true},
		{apierrors.NewServiceUnavailable("starting"), true},
		{fmt.Errorf("get pool: %w", context.DeadlineExceeded), true},
		{apierrors.NewInternalError(errors.New("unable to decode an event from the watch stream: http2: client connection lost")), true},
		{errors.New(`Put "https://127.0.0.1:6443/apis": net/http: TLS handshake timeout`), true},
		{nil, false},
		{apierrors.NewConflict(gr, "pool", errors.New("modified")), false},
		{apierrors.NewNotFound(gr, "pool"), false},
		{apierrors.NewAlreadyExists(gr, "pool"), false},
		{apierrors.NewBadRequest("invalid exclude"), false},
		{apierrors.NewForbidden(gr, "pool", errors.New("denied")), false},
		{errors.New("two guests hold 10.40.0.10"), false},
	} {
		if got := isTransient(tc.err); got != tc.want {
			t.Errorf("isTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
