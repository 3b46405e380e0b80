package reliability

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// transientAttempts and transientMaxWait bound how long a churn operation
// retries an API call that failed because the API server is overloaded or
// restarting: about a minute in all, then the error counts.
const (
	transientAttempts = 8
	transientMaxWait  = 16 * time.Second
)

// isTransient reports whether err says only that the API server did not
// answer in time or the connection to it broke: the request may be sent
// again. An answer about the object (conflict, not found, invalid,
// forbidden) is never transient.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	if apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || utilnet.IsConnectionReset(err) || utilnet.IsConnectionRefused(err) ||
		utilnet.IsProbableEOF(err) || utilnet.IsTimeout(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// Errors client-go and net/http only give as text.
	msg := err.Error()
	for _, s := range []string{"client connection lost", "TLS handshake timeout", "connection reset by peer",
		"http2: server sent GOAWAY", "the server is currently unable to handle the request"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// retryTransient runs op until it returns nil or an error that is not
// transient, waiting 250 ms, 500 ms, ... (at most transientMaxWait)
// between attempts, at most transientAttempts times.
func retryTransient(ctx context.Context, what string, op func() error) error {
	wait := 250 * time.Millisecond
	var err error
	for i := 0; i < transientAttempts; i++ {
		if err = op(); !isTransient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, transientMaxWait)
	}
	return fmt.Errorf("%s: still failing after %d attempts: %w", what, transientAttempts, err)
}
