// Package flow asserts the end-to-end flow `make demo` shows, on the local
// stand-in cluster (test/e2e/localcluster): the real controller, webhook
// and agent binaries, a real kube-apiserver, and real DHCP clients in
// network namespaces. It needs root; without root the tests skip.
package flow

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/test/e2e/localcluster"
)

// cluster is shared by the tests of this package: starting one takes
// seconds, and the flow is one story told in order.
var (
	cluster    *localcluster.Cluster
	helmBin    string
	skipReason string
)

func TestMain(m *testing.M) {
	if testenv.NoTestSelected() { // hack/test.sh's compile step
		os.Exit(m.Run())
	}
	ctrllog.SetLogger(logr.Discard())
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e flow:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	if os.Geteuid() != 0 {
		skipReason = "needs root: it creates network namespaces"
		return m.Run(), nil
	}
	if _, err := exec.LookPath("udhcpc"); err != nil {
		skipReason = "udhcpc is not installed (hack/deps.sh installs it)"
		return m.Run(), nil
	}
	tmp, err := os.MkdirTemp("", "vm-dhcp-e2e-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	root := testenv.RepoRoot()
	bin := filepath.Join(tmp, "bin")
	// VM_DHCP_E2E_BIN: a folder with already built binaries (e.g. bin/ after
	// make build) instead of building them here.
	if dir := os.Getenv("VM_DHCP_E2E_BIN"); dir != "" {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(root, dir) // relative to the repository, not this package
		}
		bin = dir
	}
	for name, pkg := range map[string]string{
		"vm-dhcp-controller": "./cmd/vm-dhcp-controller",
		"vm-dhcp-webhook":    "./cmd/vm-dhcp-webhook",
		"vm-dhcp-agent":      "./coredhcp-build",
	} {
		if os.Getenv("VM_DHCP_E2E_BIN") != "" {
			break
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("build %s: %w\n%s", pkg, err, out)
		}
	}
	helmDir, err := exec.Command("bash", filepath.Join(root, "hack", "tools.sh"), "helm").Output()
	if err != nil {
		return 1, fmt.Errorf("install helm with hack/tools.sh: %w", err)
	}
	helmBin = filepath.Join(strings.TrimSpace(string(helmDir)), "helm")
	work := filepath.Join(tmp, "work")
	progress := &strings.Builder{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cluster, err = localcluster.Start(ctx, localcluster.Options{
		WorkDir:     work,
		BinDir:      bin,
		Helm:        helmBin,
		NetnsPrefix: fmt.Sprintf("vmdhcp-e2e%d-", os.Getpid()),
		ChartDir:    chartDir(root),
		Progress:    progress,
	})
	if err != nil {
		return 1, fmt.Errorf("start local cluster: %w\n%s", err, progress)
	}
	defer cluster.Stop()
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- local cluster progress:\n%s\n--- controller log:\n%s\n--- kubelet log:\n%s\n",
			progress, cluster.ProcessLog("controller"), cluster.ProcessLog("kubelet"))
	}
	return code, nil
}

// chartDir is VM_DHCP_E2E_CHART (relative to the repository) or, when
// unset, "" for the repository's chart.
func chartDir(root string) string {
	dir := os.Getenv("VM_DHCP_E2E_CHART")
	if dir != "" && !filepath.IsAbs(dir) {
		dir = filepath.Join(root, dir)
	}
	return dir
}

func needCluster(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
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
		time.Sleep(250 * time.Millisecond)
	}
}
