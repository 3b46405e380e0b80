package node

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

// The cluster is shared by the tests of this package, which tell one story
// in order (TestRealNode): bringing it up takes minutes.
var (
	cluster *Cluster
	assets  *Assets
	workDir string
)

const (
	// netnsPrefix + PID names the cluster's network namespace; SweepStale
	// finds dead runs' by it.
	netnsPrefix   = "vmdn"
	workDirPrefix = "vmdhcp-node-"

	namespace = "vm-dhcp-system"
	release   = "vm-dhcp"
	tag1      = "e2e-1"
	tag2      = "e2e-2"
)

// testStart is when the test binary started; -timeout counts from about then.
var testStart = time.Now()

// testTimeout is go test's -timeout (0: none).
func testTimeout() time.Duration {
	flag.Parse()
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil {
			return d
		}
	}
	return 0
}

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "real node:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	if os.Getenv("VM_DHCP_SKIP_REAL_NODE") != "" {
		// For developers iterating on something else; `make test` and CI
		// run it.
		fmt.Fprintln(os.Stderr, "real node: VM_DHCP_SKIP_REAL_NODE is set: skipped")
		return m.Run(), nil
	}
	if testenv.NoTestSelected() {
		// hack/test.sh compiles every test binary with -run '^$': starting
		// a two-node cluster (minutes, under go test's default 10 min
		// -timeout, beside the parallel compiles) would test nothing.
		return m.Run(), nil
	}
	if os.Geteuid() != 0 {
		// CI runs as root; a developer without root still gets the rest of
		// `go test ./...`.
		fmt.Fprintln(os.Stderr, "real node: needs root (network namespaces, containerd, kubelet): skipped")
		return m.Run(), nil
	}
	// A run that died without its cleanup (SIGKILL, a crash) left a
	// namespace, containers, mounts and cgroups: remove them first.
	for _, dir := range SweepStale(netnsPrefix) {
		fmt.Fprintf(os.Stderr, "real node: removed what a dead run left in %s\n", dir)
		if parent := filepath.Dir(dir); strings.HasPrefix(filepath.Base(parent), workDirPrefix) {
			os.RemoveAll(parent)
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	root := testenv.RepoRoot()
	if out, err := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "deps.sh")).CombinedOutput(); err != nil {
		return 1, fmt.Errorf("hack/deps.sh: %w\n%s", err, out)
	}
	// The VM boots from hack/vm-artifacts.sh's kernel and busybox:
	// hack/test.sh prepares them, but `go test ./test/e2e/node/` alone must
	// work too (the script is a no-op on a warm cache).
	if os.Getenv("VMDHCP_VM_ARTIFACTS") == "" {
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "vm-artifacts.sh"))
		cmd.Stderr = os.Stderr // its progress; stdout is the folder
		out, err := cmd.Output()
		if err != nil {
			return 1, fmt.Errorf("hack/vm-artifacts.sh: %w", err)
		}
		os.Setenv("VMDHCP_VM_ARTIFACTS", strings.TrimSpace(string(out)))
	}
	var err error
	// Short: containerd's socket paths must stay under 108 bytes.
	workDir, err = os.MkdirTemp("", workDirPrefix)
	if err != nil {
		return 1, err
	}
	keep := os.Getenv("VM_DHCP_NODE_KEEP") != ""
	defer func() {
		if !keep {
			os.RemoveAll(workDir)
		}
	}()
	// Ctrl-C, SIGTERM, or the end of go test's -timeout (which panics
	// without running deferred calls) still remove the cluster, also while
	// it is being built (images imported, nodes starting): then Down removes
	// whatever of it exists (processes in its cgroups, mounts, namespace).
	netns := fmt.Sprintf("%s%d", netnsPrefix, os.Getpid())
	clusterDir := filepath.Join(workDir, "cluster")
	progress := &lockedBuilder{} // written by the cluster, read by the watchdog goroutine
	var up atomic.Pointer[Cluster]
	hostSysctlsBefore := readSysctls()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var watchdog <-chan time.Time
	if d := testTimeout(); d > 5*time.Minute {
		watchdog = time.After(time.Until(testStart.Add(d - 2*time.Minute)))
	}
	go func() {
		select {
		case <-sigs:
			fmt.Fprintln(os.Stderr, "real node: signal: removing the cluster")
		case <-watchdog:
			fmt.Fprintf(os.Stderr, "real node: go test -timeout is 2 minutes away: removing the cluster\n--- cluster progress:\n%s\n", progress)
		}
		cancel()
		if c := up.Load(); c != nil {
			c.Stop()
		} else {
			Down(clusterDir, netns)
			// A kubelet may have started and set its kernel defaults:
			// Down does not put them back, Stop would have.
			restoreSysctls(hostSysctlsBefore)
		}
		if !keep {
			os.RemoveAll(workDir)
		}
		os.Exit(1)
	}()
	binDir := os.Getenv("VM_DHCP_E2E_BIN")
	if binDir != "" && !filepath.IsAbs(binDir) {
		binDir = filepath.Join(root, binDir)
	}
	assets, err = PrepareAssets(ctx, workDir, binDir, []string{tag1, tag2})
	if err != nil {
		return 1, err
	}
	fmt.Fprintf(os.Stderr, "real node: assets ready in %s\n", time.Since(start).Round(time.Second))
	cluster, err = Start(ctx, Options{
		WorkDir:    clusterDir,
		KubeBinDir: assets.KubeBinDir,
		CNIBinDir:  assets.CNIBinDir,
		Images:     assets.Images,
		Netns:      netns,
		Nodes:      []string{"node-a", "node-b"},
		// The example NAD is on the mgmt cluster network: agents may run
		// only on nodes attached to it.
		NodeLabels: map[string]string{"network.harvesterhci.io/mgmt": "true"},
		Progress:   progress,
	})
	if err != nil {
		return 1, fmt.Errorf("start cluster: %w\n%s", err, progress)
	}
	up.Store(cluster)
	defer cluster.Stop()
	fmt.Fprintf(os.Stderr, "real node: cluster with 2 nodes Ready %s after the start\n", time.Since(start).Round(time.Second))
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- cluster progress:\n%s\n(logs in %s; set VM_DHCP_NODE_KEEP=1 to keep them)\n", progress, cluster.opts.WorkDir)
	}
	return code, nil
}

func needCluster(t *testing.T) {
	t.Helper()
	if cluster == nil {
		t.Skip("needs root")
	}
}

// kubectl runs the real kubectl against the cluster.
func kubectl(ctx context.Context, args ...string) (string, error) {
	// The kubectl hack/envtest/node.sh built with the cluster, not one from
	// the PATH (none on a fresh machine, or another version).
	cmd := exec.CommandContext(ctx, filepath.Join(assets.KubeBinDir, "kubectl"), append([]string{"--kubeconfig", cluster.Kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kubectlOut is kubectl's standard output alone, for a value the test
// parses (a warning on standard error must not end up in it).
func kubectlOut(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(assets.KubeBinDir, "kubectl"), append([]string{"--kubeconfig", cluster.Kubeconfig()}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

// helm runs the real helm against the cluster.
func helm(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, assets.Helm, append([]string{"--kubeconfig", cluster.Kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// eventually retries f until it succeeds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// lockedBuilder is a strings.Builder that one goroutine may write while
// another (the watchdog, a signal) reads it.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
