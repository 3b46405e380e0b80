package reliability

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

// Paths of the package: fragments go to resultsDir, the report to reportPath.
// A plain test run never rewrites tracked files: both live in a temporary
// directory (seeded with the tracked fragments, so the report still covers
// every scenario) unless VM_DHCP_RELIABILITY_REPORT=1, which `make
// reliability-report` sets to refresh the committed figures.
var (
	trackedResultsDir = filepath.Join(testenv.RepoRoot(), "test", "reliability", "results")
	trackedReportPath = filepath.Join(testenv.RepoRoot(), "docs", "reliability.md")
	resultsDir        string
	reportPath        string
)

// outputPaths chooses where this run's fragments and report go.
func outputPaths() (results, report string, err error) {
	if os.Getenv("VM_DHCP_RELIABILITY_REPORT") == "1" {
		return trackedResultsDir, trackedReportPath, nil
	}
	dir, err := os.MkdirTemp("", "vm-dhcp-reliability-report-")
	if err != nil {
		return "", "", fmt.Errorf("create report dir: %w", err)
	}
	results = filepath.Join(dir, "results")
	if err := os.MkdirAll(results, 0o755); err != nil {
		return "", "", fmt.Errorf("create results dir: %w", err)
	}
	tracked, err := filepath.Glob(filepath.Join(trackedResultsDir, "*.json"))
	if err != nil {
		return "", "", fmt.Errorf("list tracked results: %w", err)
	}
	for _, f := range tracked {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", "", fmt.Errorf("seed results: %w", err)
		}
		if err := os.WriteFile(filepath.Join(results, filepath.Base(f)), b, 0o644); err != nil {
			return "", "", fmt.Errorf("seed results: %w", err)
		}
	}
	return results, filepath.Join(dir, "reliability.md"), nil
}

var (
	binDir     string // binaries built by the tests, removed at exit
	runCommit  string
	runDate    string
	wroteSome  bool // a scenario wrote a fragment in this run
	wroteMu    sync.Mutex
	cleanupsMu sync.Mutex
	cleanups   []func() // package-level fixtures, undone after m.Run
)

func TestMain(m *testing.M) {
	if testenv.NoTestSelected() { // hack/test.sh's compile step
		os.Exit(m.Run())
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	logf.SetLogger(logr.Discard()) // the processes under test log to their own files
	var err error
	binDir, err = os.MkdirTemp("", "vm-dhcp-reliability-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "create bin dir:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	if resultsDir, reportPath, err = outputPaths(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	runDate = time.Now().UTC().Format(time.RFC3339)
	if out, err := exec.Command("git", "-C", testenv.RepoRoot(), "rev-parse", "--short", "HEAD").Output(); err == nil {
		runCommit = strings.TrimSpace(string(out))
	}
	code := m.Run()
	cleanupsMu.Lock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanupsMu.Unlock()
	wroteMu.Lock()
	defer wroteMu.Unlock()
	if wroteSome {
		results, err := ReadResults(resultsDir)
		if err == nil {
			err = os.WriteFile(reportPath, Render(results), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "render report:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "reliability: wrote %s from %d results\n", reportPath, len(results))
	}
	return code
}

// atExit runs fn after every test of the package (fixtures shared by tests).
func atExit(fn func()) {
	cleanupsMu.Lock()
	defer cleanupsMu.Unlock()
	cleanups = append(cleanups, fn)
}

// newResult starts the result of a scenario; record it with report.
func newResult(id, title string) *Result {
	return &Result{ID: id, Title: title, Date: runDate, Commit: runCommit,
		Machine: fmt.Sprintf("%d CPUs, %s %s/%s", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)}
}

// report writes r's fragment when the test ends, passed or not, unless the
// test was skipped (a skip keeps the figures of the last real run).
func report(t *testing.T, r *Result) {
	t.Cleanup(func() {
		if t.Skipped() {
			return
		}
		r.Passed = !t.Failed()
		if t.Failed() && r.Failure == "" {
			r.Failure = "see the test log"
		}
		if err := WriteResult(resultsDir, *r); err != nil {
			t.Errorf("record figures: %v", err)
			return
		}
		wroteMu.Lock()
		wroteSome = true
		wroteMu.Unlock()
		for _, f := range r.Figures {
			t.Logf("figure %-45s %s", f.Name, f.Value)
		}
	})
}

var (
	buildMu  sync.Mutex
	builtBin = map[string]error{}
)

// binary builds (once per run) the main package pkg into binDir/name.
func binary(t testing.TB, name, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	out := filepath.Join(binDir, name)
	err, done := builtBin[name]
	if !done {
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = testenv.RepoRoot()
		b, berr := cmd.CombinedOutput()
		if berr != nil {
			err = fmt.Errorf("go build %s: %w\n%s", pkg, berr, b)
		}
		builtBin[name] = err
		t.Logf("built %s in %s", name, time.Since(start).Round(time.Millisecond))
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func controllerBinary(t testing.TB) string {
	return binary(t, "vm-dhcp-controller", "./cmd/vm-dhcp-controller")
}
func webhookBinary(t testing.TB) string { return binary(t, "vm-dhcp-webhook", "./cmd/vm-dhcp-webhook") }
func agentBinary(t testing.TB) string   { return binary(t, "vm-dhcp-agent", "./coredhcp-build") }

// eventually polls cond every interval until it returns nil or timeout passes.
func eventually(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
