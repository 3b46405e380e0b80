package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// The real binary against a real apiserver: it serves health, metrics and
// the debug endpoints on the documented flags, and reconciles a pool.
func TestBinaryServesHealthMetricsAndDebug(t *testing.T) {
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	dir := t.TempDir()
	bin := filepath.Join(dir, "vm-dhcp-controller")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ns := range []string{"vm-dhcp-system", "demo"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	// The chart's ConfigMap that owns the leader Lease.
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "vm-dhcp-system", Name: "vm-dhcp-agent-values"}}
	if err := c.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	metricsAddr, probeAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "--kubeconfig", kcPath, "--namespace", "vm-dhcp-system", "--agent-image", "agent:smoke",
		"--leader-election-owner", owner.Name,
		"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", probeAddr)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("controller logs:\n%s", logs.String())
		}
	}()

	if err := c.Create(ctx, &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "net"}}); err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "pool"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "demo/net", IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "10.0.0.2", CIDR: "10.0.0.0/24", Pool: v1alpha1.Pool{Start: "10.0.0.10", End: "10.0.0.19"}}}}
	if err := c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	vnc := &v1alpha1.VirtualMachineNetworkConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "vm"},
		Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "vm", NetworkConfigs: []v1alpha1.NetworkConfig{{NetworkName: "demo/net", MACAddress: "02:00:00:00:00:01"}}}}
	if err := c.Create(ctx, vnc); err != nil {
		t.Fatal(err)
	}

	checks := []struct{ url, want string }{
		{"http://" + probeAddr + "/healthz", "ok"},
		{"http://" + probeAddr + "/readyz", "ok"},
		{"http://" + metricsAddr + "/metrics", `vmdhcpcontroller_ippool_used{cidr="10.0.0.0/24",ippool="demo/pool",network="demo/net"} 1`},
		{"http://" + metricsAddr + "/metrics", `vmdhcpcontroller_vmnetcfg_status{ip="10.0.0.10",mac="02:00:00:00:00:01",network="demo/net",state="Allocated",vmnetcfg="demo/vm"} 1`},
		{"http://" + metricsAddr + "/ipams/demo/pool", `"10.0.0.10": "02:00:00:00:00:01"`},
		{"http://" + metricsAddr + "/caches/demo/pool", `"02:00:00:00:00:01": "10.0.0.10"`},
	}
	for _, ch := range checks {
		deadline := time.Now().Add(60 * time.Second)
		for {
			code, body, err := get(ch.url)
			if err == nil && code == http.StatusOK && strings.Contains(body, ch.want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: want 200 with %q, got %d %v:\n%.2000s", ch.url, ch.want, code, err, body)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// The agent pod exists with the image from the flag.
	// The controller creates it asynchronously, after the pool's ConfigMap.
	pod := &corev1.Pod{}
	podKey := client.ObjectKey{Namespace: "vm-dhcp-system", Name: controller.AgentPodName(pool)}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		err := c.Get(ctx, podKey, pod)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent pod: %v", err)
		}
	}
	if img := pod.Spec.Containers[0].Image; img != "agent:smoke" {
		t.Errorf("agent image %s", img)
	}
	// The leader Lease is owned by the ConfigMap, so `helm uninstall`
	// (which deletes the ConfigMap) leaves no Lease behind.
	leaseKey := client.ObjectKey{Namespace: "vm-dhcp-system", Name: "vm-dhcp-controller.network.harvesterhci.io"}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var lease coordinationv1.Lease
		err := c.Get(ctx, leaseKey, &lease)
		if err == nil && len(lease.OwnerReferences) == 1 && lease.OwnerReferences[0].UID == owner.UID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leader lease: %v, owners %+v, want the ConfigMap %s (uid %s)", err, lease.OwnerReferences, owner.Name, owner.UID)
		}
	}
}
