package poolwatch

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

// logLines is a logger that keeps what it is given, at the verbosity the
// agent shows by default (0).
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, prefix+" "+args)
	}, funcr.Options{Verbosity: 0})
}

func (l *logLines) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *logLines) find(sub ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range l.lines {
		for _, s := range sub {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		return line
	}
	return ""
}

// watchWith starts a watch of default/example through cfg, logging to a
// fresh logLines.
func watchWith(t *testing.T, cfg *rest.Config) *logLines {
	t.Helper()
	logs := &logLines{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.all())
		}
	})
	reg := NewRegistry(logs.logger())
	t.Cleanup(reg.Stop)
	reg.restConfig = func(string) (*rest.Config, error) { return cfg, nil }
	if _, err := reg.Watch("default", "example", ""); err != nil {
		t.Fatal(err)
	}
	return logs
}

// TestWatchErrorsReachTheLog: whatever keeps the agent from its pool (no
// route to the API server, RBAC, an answer it cannot decode), the reason
// is in the agent's log at the default level, not only in client-go's
// klog lines.
func TestWatchErrorsReachTheLog(t *testing.T) {
	t.Run("unreachable API server", func(t *testing.T) {
		// A loopback port nothing listens on: the connection is refused.
		ln := httptest.NewServer(http.NotFoundHandler())
		addr := ln.URL
		ln.Close()
		logs := watchWith(t, &rest.Config{Host: addr})
		eventually(t, 20*time.Second, "no log line saying the list failed with connection refused", func() bool {
			return logs.find("the IPPool on the API server", "connection refused") != ""
		})
		// One line per distinct error: the retries do not flood the log.
		time.Sleep(3 * time.Second)
		if n := strings.Count(logs.all(), "connection refused"); n > 3 {
			t.Errorf("%d lines for one lasting error:\n%s", n, logs.all())
		}
	})
	t.Run("answer that does not decode", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"kind":"IPPoolList","items":[{"spec":{"ipv4Config":{"leaseTime":"soon"}}}]}`))
		}))
		t.Cleanup(srv.Close)
		logs := watchWith(t, &rest.Config{Host: srv.URL})
		eventually(t, 20*time.Second, "no log line saying the list could not be decoded", func() bool {
			return logs.find("the IPPool on the API server", "leaseTime") != ""
		})
	})
	t.Run("RBAC forbids reading pools", func(t *testing.T) {
		env, _, _ := testenv.Start(t)
		user, err := env.ControlPlane.AddUser(envtest.User{Name: "no-rights"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		logs := watchWith(t, user.Config())
		eventually(t, 20*time.Second, "no log line saying the list is forbidden", func() bool {
			return logs.find("the IPPool on the API server", "forbidden", `"reason"="Forbidden"`) != ""
		})
	})
}

// TestErrorReporterRepeatsOnlyWhatChanges: an error that lasts is logged
// once a minute, a new one at once, the recovery once.
func TestErrorReporterRepeatsOnlyWhatChanges(t *testing.T) {
	logs := &logLines{}
	now := time.Unix(0, 0)
	r := &errorReporter{log: logs.logger(), now: func() time.Time { return now }}
	count := func() int { logs.mu.Lock(); defer logs.mu.Unlock(); return len(logs.lines) }
	r.failed("list", errString("connection refused"))
	r.failed("list", errString("connection refused"))
	if n := count(); n != 1 {
		t.Fatalf("same error twice logged %d lines, want 1", n)
	}
	now = now.Add(repeatEvery)
	r.failed("list", errString("connection refused"))
	r.failed("list", errString("no route to host"))
	if n := count(); n != 3 {
		t.Fatalf("repeat after a minute and a new error: %d lines, want 3", n)
	}
	// client-go alternates a failing watch and list: each is its own.
	r.failed("watch", errString("no route to host"))
	r.failed("list", errString("no route to host"))
	r.failed("watch", errString("no route to host"))
	if n := count(); n != 4 {
		t.Fatalf("alternating watch and list: %d lines, want 4", n)
	}
	r.ok("list")
	r.ok("list")
	if n := count(); n != 5 || logs.find("list works again") == "" {
		t.Fatalf("recovery: %d lines %q", n, logs.lines)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
