package main_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/webhook"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestBinary builds vm-dhcp-webhook, runs it in self-managed TLS mode
// against a real apiserver with the configurations pre-created as the chart
// would (no caBundle), and checks what a cluster relies on: probes, the
// caBundle, refusals and defaults through the apiserver, and metrics.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "vm-dhcp-webhook")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k8s, err := client.New(cfg, client.Options{Scheme: webhook.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"vm-dhcp-system", "vms"} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}

	port, metricsPort, probePort := freePort(t), freePort(t), freePort(t)
	mut, val := webhook.Configurations("vm-dhcp-webhook", "vm-dhcp-system", "vm-dhcp-webhook", nil)
	for _, cc := range []*admissionregv1.WebhookClientConfig{&mut.Webhooks[0].ClientConfig, &val.Webhooks[0].ClientConfig, &val.Webhooks[1].ClientConfig} {
		cc.URL = ptr.To(fmt.Sprintf("https://127.0.0.1:%d%s", port, *cc.Service.Path))
		cc.Service = nil
	}
	for _, o := range []client.Object{mut, val} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	var logs bytes.Buffer
	cmd := exec.Command(bin, "--kubeconfig", kcPath, "--namespace", "vm-dhcp-system",
		"--port", strconv.Itoa(port), "--cert-dir", t.TempDir(),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", probePort),
		"--service-cidr", "10.43.0.0/16")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("webhook logs:\n%s", logs.String())
		}
	})

	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := get(fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort))
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never 200: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _ := get(fmt.Sprintf("http://127.0.0.1:%d/healthz", probePort)); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}

	var secret corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "vm-dhcp-system", Name: "vm-dhcp-webhook-tls"}, &secret); err != nil {
		t.Fatalf("TLS Secret not created: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(val), val); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(val.Webhooks[1].ClientConfig.CABundle, secret.Data["ca.crt"]) {
		t.Error("caBundle not published")
	}

	// Refusal through the apiserver, from the binary.
	nadObj := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "net"}}
	if err := k8s.Create(ctx, nadObj); err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "pool"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "vms/net", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "10.43.7.0/24", Router: "10.43.7.1",
		}},
	}
	err = k8s.Create(ctx, pool.DeepCopy())
	if err == nil || !strings.Contains(err.Error(), "spec.ipv4Config.cidr: 10.43.7.0/24 overlaps the cluster's service CIDR") {
		t.Fatalf("pool overlapping --service-cidr: got %v", err)
	}
	// Defaults filled by the binary's mutator; the NAD may take a moment to
	// reach its cache.
	pool.Spec.IPv4Config.CIDR, pool.Spec.IPv4Config.Router = "192.168.9.0/24", "192.168.9.1"
	deadline = time.Now().Add(10 * time.Second)
	for {
		err = k8s.Create(ctx, pool)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("valid pool refused: %v", err)
	}
	if c := pool.Spec.IPv4Config; c.ServerIP != "192.168.9.2" || c.Pool.Start != "192.168.9.1" || c.Pool.End != "192.168.9.254" {
		t.Errorf("defaults: %+v", c)
	}

	code, body := get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if code != http.StatusOK || !strings.Contains(body, `controller_runtime_webhook_requests_total{code="200",webhook="/validate-ippool"}`) ||
		!strings.Contains(body, `controller_runtime_webhook_requests_total{code="200",webhook="/mutate-ippool"}`) {
		t.Errorf("admission metrics missing (%d):\n%s", code, grepLines(body, "webhook"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
