// Package migrate is the migration from Harvester's managed-DHCP add-on
// (harvester/vm-dhcp-controller) as docs/migrating-from-harvester.md tells
// it, on the local stand-in cluster (test/e2e/localcluster): a real
// kube-apiserver holding the state Harvester's add-on leaves (its published
// CRDs; pools, VMNetCfgs and agent pods shaped as its controller writes
// them), the add-on uninstalled, the chart's CRDs applied in place, the chart
// installed, and real DHCP clients in network namespaces asking our agents.
// It needs root; without root the tests skip.
package migrate

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

var (
	cluster    *localcluster.Cluster
	skipReason string
)

func TestMain(m *testing.M) {
	if testenv.NoTestSelected() { // hack/test.sh's compile step
		os.Exit(m.Run())
	}
	ctrllog.SetLogger(logr.Discard())
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e migrate:", err)
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
	tmp, err := os.MkdirTemp("", "vm-dhcp-migrate-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	root := testenv.RepoRoot()
	bin := filepath.Join(tmp, "bin")
	if dir := os.Getenv("VM_DHCP_E2E_BIN"); dir != "" {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(root, dir)
		}
		bin = dir
	} else {
		for name, pkg := range map[string]string{
			"vm-dhcp-controller": "./cmd/vm-dhcp-controller",
			"vm-dhcp-webhook":    "./cmd/vm-dhcp-webhook",
			"vm-dhcp-agent":      "./coredhcp-build",
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
			cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				return 1, fmt.Errorf("build %s: %w\n%s", pkg, err, out)
			}
		}
	}
	helmDir, err := exec.Command("bash", filepath.Join(root, "hack", "tools.sh"), "helm").Output()
	if err != nil {
		return 1, fmt.Errorf("install helm with hack/tools.sh: %w", err)
	}
	progress := &strings.Builder{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cluster, err = localcluster.Start(ctx, localcluster.Options{
		WorkDir:      filepath.Join(tmp, "work"),
		BinDir:       bin,
		Helm:         filepath.Join(strings.TrimSpace(string(helmDir)), "helm"),
		NetnsPrefix:  fmt.Sprintf("vmdhcp-mig%d-", os.Getpid()),
		Progress:     progress,
		PriorCRDDirs: []string{filepath.Join(root, "test", "crds", "harvester")},
		Prior:        harvesterAddonThenUninstall,
	})
	if err != nil {
		return 1, fmt.Errorf("start local cluster: %w\n%s", err, progress)
	}
	defer cluster.Stop()
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- local cluster progress:\n%s\n--- controller log:\n%s\n--- webhook log:\n%s\n--- kubelet log:\n%s\n",
			progress, cluster.ProcessLog("controller"), cluster.ProcessLog("webhook"), cluster.ProcessLog("kubelet"))
	}
	return code, nil
}

func needCluster(t *testing.T) {
	t.Helper()
	if cluster == nil {
		t.Skip(skipReason)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %v", what, timeout, err)
}
