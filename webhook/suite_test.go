package webhook_test

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/webhook"
)

// The suite runs one real kube-apiserver with our webhook configurations
// installed, pointing at a webhook server started in this process.
var (
	k8s      client.Client // talks to the apiserver, like kubectl
	restCfg  *rest.Config  // for clients that need more (warning handlers)
	webhookC client.Client // the webhook's own cached client
)

// Cluster facts given to the webhook, as the --service-cidr/--pod-cidr flags would.
var testOptions = webhook.Options{
	ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16"),
	PodCIDR:     netip.MustParsePrefix("10.42.0.0/16"),
}

func TestMain(m *testing.M) {
	if testenv.NoTestSelected() { // hack/test.sh's compile step
		os.Exit(m.Run())
	}
	flag.Parse()
	// Fuzzing (and its worker processes) needs no control plane: starting
	// one per worker would only slow the fuzzer down.
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run())
	}
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run())
	}
	os.Exit(runSuite(m))
}

// needCluster skips a test when the suite runs without a control plane.
func needCluster(t *testing.T) {
	t.Helper()
	if k8s == nil {
		t.Skip("no control plane in fuzzing mode")
	}
}

func runSuite(m *testing.M) int {
	ctrl.SetLogger(logr.Discard())
	if os.Getenv("VM_DHCP_TEST_DEBUG") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	}
	env, err := testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mut, val := webhook.Configurations("vm-dhcp-webhook", "default", "vm-dhcp-webhook", nil)
	env.WebhookInstallOptions = envtest.WebhookInstallOptions{
		MutatingWebhooks:   []*admissionregv1.MutatingWebhookConfiguration{mut},
		ValidatingWebhooks: []*admissionregv1.ValidatingWebhookConfiguration{val},
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		return 1
	}
	defer env.Stop() //nolint:errcheck // best effort at exit

	wio := &env.WebhookInstallOptions
	srv := ctrlwebhook.NewServer(ctrlwebhook.Options{
		Host: wio.LocalServingHost, Port: wio.LocalServingPort, CertDir: wio.LocalServingCertDir,
	})
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:        webhook.Scheme(),
		Metrics:       metricsserver.Options{BindAddress: "0"},
		WebhookServer: srv,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "build manager:", err)
		return 1
	}
	webhook.Register(mgr.GetWebhookServer(), webhook.Handlers{
		Lookup:  webhook.ClientLookup{Reader: mgr.GetClient()},
		Options: testOptions,
		Decoder: admission.NewDecoder(mgr.GetScheme()),
		Log:     ctrl.Log.WithName("webhook"),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	if err := waitTLS(net.JoinHostPort(wio.LocalServingHost, strconv.Itoa(wio.LocalServingPort)), 30*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	restCfg = cfg
	k8s, err = client.New(cfg, client.Options{Scheme: webhook.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "build client:", err)
		return 1
	}
	webhookC = mgr.GetClient()
	if err := waitWebhooksEffective(ctx, 60*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// waitWebhooksEffective waits until the apiserver calls our webhooks: it
// loads webhook configurations asynchronously, so a request right after
// envtest's start may still be admitted without them. A dry-run IPPool that
// only the validating webhook refuses (start after end) tells.
func waitWebhooksEffective(ctx context.Context, timeout time.Duration) error {
	probe := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "webhook-probe"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "default/webhook-probe", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "10.250.0.0/24", ServerIP: "10.250.0.2", Pool: v1alpha1.Pool{Start: "10.250.0.100", End: "10.250.0.10"}}}}
	deadline := time.Now().Add(timeout)
	for {
		err := k8s.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), "is after spec.ipv4Config.pool.end") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the apiserver does not call the webhooks after %s (last answer: %v)", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitTLS(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only waiting for the listener
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("webhook server at %s not up after %s: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// create creates obj through the apiserver and waits until the webhook's
// cache sees it, so the next admission decides on it.
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
	waitCached(t, obj, func(client.Object) bool { return true })
}

// waitCached waits until the webhook's cache holds obj in a state that ok accepts.
func waitCached(t *testing.T, obj client.Object, ok func(client.Object) bool) {
	t.Helper()
	got := obj.DeepCopyObject().(client.Object)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := webhookC.Get(context.Background(), client.ObjectKeyFromObject(obj), got)
		if err == nil && ok(got) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook cache never saw %T %s/%s as expected (last error %v)", obj, obj.GetNamespace(), obj.GetName(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitGone waits until the webhook's cache no longer holds obj.
func waitGone(t *testing.T, obj client.Object) {
	t.Helper()
	got := obj.DeepCopyObject().(client.Object)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := webhookC.Get(context.Background(), client.ObjectKeyFromObject(obj), got)
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook cache still holds %T %s/%s", obj, obj.GetNamespace(), obj.GetName())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func namespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

func nad(t *testing.T, ns, name string) {
	t.Helper()
	namespace(t, ns)
	create(t, &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"0.3.1","type":"bridge","bridge":"br0"}`},
	})
}
