// Package testenv starts a real kube-apiserver + etcd (controller-runtime's
// envtest) with the project's CRDs and the third-party CRDs it watches, for
// integration tests. The binaries come from hack/envtest/setup.sh.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// RepoRoot is the root of the repository, found from this file's path.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// CRDPaths are the folders of CRDs a test control plane gets: ours (as the
// chart ships them) and minimal NAD and KubeVirt VirtualMachine CRDs.
func CRDPaths() []string {
	root := RepoRoot()
	return []string{
		filepath.Join(root, "charts", "vm-dhcp-controller", "crds"),
		filepath.Join(root, "test", "crds"),
	}
}

// Scheme knows the built-in kinds, ours, NADs and KubeVirt VirtualMachines.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, v1alpha1.AddToScheme, nadv1.AddToScheme, kubevirtv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("build scheme: %v", err))
		}
	}
	return s
}

// AssetsDir returns the folder with etcd and kube-apiserver: KUBEBUILDER_ASSETS
// if set, else the cache hack/envtest/setup.sh fills (building it if needed).
func AssetsDir() (string, error) {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d, nil
	}
	out, err := exec.Command("bash", filepath.Join(RepoRoot(), "hack", "envtest", "setup.sh")).Output()
	if err != nil {
		return "", fmt.Errorf("build envtest binaries with hack/envtest/setup.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// New returns an envtest environment with our CRDs installed, not yet started.
func New() (*envtest.Environment, error) {
	dir, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	return &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDDirectoryPaths:     CRDPaths(),
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
	}, nil
}

// Start starts a control plane for one test, stops it when the test ends,
// and returns it with a client that knows Scheme().
func Start(t testing.TB) (*envtest.Environment, *rest.Config, client.Client) {
	t.Helper()
	env, err := New()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatalf("client for envtest: %v", err)
	}
	return env, cfg, c
}
