package certs_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/webhook"
	"github.com/vm-dhcp/vm-dhcp/webhook/certs"
)

const ns = "vm-dhcp-system"

var k8s client.Client

func TestMain(m *testing.M) {
	if testenv.NoTestSelected() { // hack/test.sh's compile step
		os.Exit(m.Run())
	}
	env, err := testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		os.Exit(1)
	}
	k8s, err = client.New(cfg, client.Options{Scheme: webhook.Scheme()})
	if err == nil {
		err = k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	_ = env.Stop()
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// preCreateConfigs installs our configurations as a chart would, without a
// caBundle, pointing at a local URL since the apiserver cannot reach a
// Service here.
func preCreateConfigs(t *testing.T, name string, port int) {
	t.Helper()
	mut, val := webhook.Configurations(name, ns, "vm-dhcp-webhook", nil)
	toURL := func(cc *admissionregv1.WebhookClientConfig) {
		cc.URL = ptr.To("https://127.0.0.1:" + strconv.Itoa(port) + *cc.Service.Path)
		cc.Service = nil
	}
	for i := range mut.Webhooks {
		toURL(&mut.Webhooks[i].ClientConfig)
	}
	for i := range val.Webhooks {
		toURL(&val.Webhooks[i].ClientConfig)
	}
	ctx := context.Background()
	for _, o := range []client.Object{mut, val} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), o) })
	}
}

func newManager(secret, configName string, certLife, check time.Duration) *certs.Manager {
	return certs.New(certs.Options{
		Client: k8s, Namespace: ns, ServiceName: "vm-dhcp-webhook", SecretName: secret,
		WebhookConfigName: configName, CertLifetime: certLife, CheckInterval: check, Log: logr.Discard(),
	})
}

func secretData(t *testing.T, name string) map[string][]byte {
	t.Helper()
	var s corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	return s.Data
}

// servedCert connects to addr trusting only caPEM and verifying serverName,
// and returns the certificate the server presented.
func servedCert(addr, serverName string, caPEM []byte) (*x509.Certificate, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no CA in %q", caPEM)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: serverName})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// TestSelfManagedTLS: the Secret is created, the CA lands in the caBundle of
// both pre-created configurations, a client trusting that CA reaches the
// server under the Service's name and 127.0.0.1, and the apiserver itself
// calls the webhook through it.
func TestSelfManagedTLS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	port := freePort(t)
	preCreateConfigs(t, "vm-dhcp-webhook", port)

	certDir := t.TempDir()
	mgr := certs.New(certs.Options{
		Client: k8s, Namespace: ns, ServiceName: "vm-dhcp-webhook", SecretName: "vm-dhcp-webhook-tls",
		WebhookConfigName: "vm-dhcp-webhook", CertDir: certDir, Log: logr.Discard(),
	})
	if err := mgr.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	data := secretData(t, "vm-dhcp-webhook-tls")
	for _, k := range []string{certs.KeyCA, certs.KeyCAKey, certs.KeyCert, certs.KeyKey} {
		if len(data[k]) == 0 {
			t.Errorf("Secret lacks %s", k)
		}
	}
	onDisk, err := os.ReadFile(certDir + "/tls.crt")
	if err != nil || !bytes.Equal(onDisk, data[certs.KeyCert]) {
		t.Errorf("cert-dir tls.crt differs from the Secret (err %v)", err)
	}

	var vwc admissionregv1.ValidatingWebhookConfiguration
	var mwc admissionregv1.MutatingWebhookConfiguration
	if err := k8s.Get(ctx, client.ObjectKey{Name: "vm-dhcp-webhook"}, &vwc); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Name: "vm-dhcp-webhook"}, &mwc); err != nil {
		t.Fatal(err)
	}
	// helm uninstall deletes the configuration; the garbage collector then
	// deletes the Secret Helm never knew of.
	var secret corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "vm-dhcp-webhook-tls"}, &secret); err != nil {
		t.Fatal(err)
	}
	if refs := secret.OwnerReferences; len(refs) != 1 || refs[0].UID != vwc.UID || refs[0].Kind != "ValidatingWebhookConfiguration" {
		t.Errorf("Secret owners %+v, want the ValidatingWebhookConfiguration %s (uid %s)", refs, vwc.Name, vwc.UID)
	}
	for _, cc := range []admissionregv1.WebhookClientConfig{vwc.Webhooks[0].ClientConfig, vwc.Webhooks[1].ClientConfig, mwc.Webhooks[0].ClientConfig} {
		if !bytes.Equal(cc.CABundle, data[certs.KeyCA]) {
			t.Errorf("caBundle of %s not the Secret's CA", *cc.URL)
		}
	}

	srv := ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: port,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.GetCertificate = mgr.GetCertificate }}})
	webhook.Register(srv, webhook.Handlers{Lookup: webhook.ClientLookup{Reader: k8s}, Decoder: admission.NewDecoder(webhook.Scheme()), Log: logr.Discard()})
	go func() { _ = srv.Start(ctx) }()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var cert *x509.Certificate
	deadline := time.Now().Add(10 * time.Second)
	for {
		cert, err = servedCert(addr, "vm-dhcp-webhook.vm-dhcp-system.svc", vwc.Webhooks[0].ClientConfig.CABundle)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("TLS client trusting the published CA cannot reach the server as the Service: %v", err)
	}
	if _, err := servedCert(addr, "127.0.0.1", data[certs.KeyCA]); err != nil {
		t.Errorf("TLS client cannot reach the server as 127.0.0.1: %v", err)
	}
	if _, err := servedCert(addr, "vm-dhcp-webhook.other.svc", data[certs.KeyCA]); err == nil {
		t.Errorf("certificate also verifies for another namespace's Service")
	}
	if !cert.NotAfter.After(time.Now().Add(300 * 24 * time.Hour)) {
		t.Errorf("serving certificate expires %s, want about a year", cert.NotAfter)
	}

	// The apiserver trusts the published CA: a bad pool is refused by our webhook.
	bad := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "vm-dhcp-system/net", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "10.5.0.0/24", ServerIP: "10.5.0.2", Pool: v1alpha1.Pool{Start: "10.5.0.10", End: "10.5.0.20"},
			LeaseTime: ptr.To(10),
		}},
	}
	// Refused by our webhook (no such NAD), which proves the TLS path.
	err = k8s.Create(ctx, bad)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(`admission webhook "validate-ippool.network.harvesterhci.io" denied the request`)) {
		t.Fatalf("apiserver did not get our webhook's refusal through TLS: %v", err)
	}

	// A second replica converges on the same Secret without rewriting it.
	before := secretData(t, "vm-dhcp-webhook-tls")
	again := newManager("vm-dhcp-webhook-tls", "vm-dhcp-webhook", 0, 0)
	if err := again.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	c2, _ := again.GetCertificate(nil)
	if !bytes.Equal(c2.Certificate[0], cert.Raw) || !bytes.Equal(secretData(t, "vm-dhcp-webhook-tls")[certs.KeyCert], before[certs.KeyCert]) {
		t.Error("second replica did not reuse the Secret's certificate")
	}

	// A chart upgrade that resets the caBundle is repaired on the next round.
	keeper := newManager("vm-dhcp-webhook-tls", "vm-dhcp-webhook", 0, 100*time.Millisecond)
	if err := keeper.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { _ = keeper.Start(ctx) }()
	if err := k8s.Get(ctx, client.ObjectKey{Name: "vm-dhcp-webhook"}, &vwc); err != nil {
		t.Fatal(err)
	}
	for i := range vwc.Webhooks {
		vwc.Webhooks[i].ClientConfig.CABundle = nil
	}
	if err := k8s.Update(ctx, &vwc); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		if err := k8s.Get(ctx, client.ObjectKey{Name: "vm-dhcp-webhook"}, &vwc); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(vwc.Webhooks[0].ClientConfig.CABundle, before[certs.KeyCA]) &&
			bytes.Equal(vwc.Webhooks[1].ClientConfig.CABundle, before[certs.KeyCA]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("reset caBundle never restored")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplicasConverge: replicas starting at once on an absent Secret end
// up serving one certificate.
func TestReplicasConverge(t *testing.T) {
	ctx := context.Background()
	const replicas = 4
	mgrs := make([]*certs.Manager, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range mgrs {
		mgrs[i] = newManager("converge-tls", "absent-config", 0, 0)
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = mgrs[i].Ensure(ctx) }()
	}
	wg.Wait()
	want := secretData(t, "converge-tls")[certs.KeyCert]
	for i, m := range mgrs {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		c, err := m.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(c.Certificate[0])
		wantLeaf := mustParsePEM(t, want)
		if !leaf.Equal(wantLeaf) {
			t.Errorf("replica %d serves a certificate other than the Secret's", i)
		}
	}
}

// TestRotation: with a short lifetime the certificate is renewed before it
// expires, the CA is kept, and the server presents the new certificate
// without a restart.
func TestRotation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := newManager("rotate-tls", "absent-config", 3*time.Second, 100*time.Millisecond)
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	first := secretData(t, "rotate-tls")
	c1, _ := m.GetCertificate(nil)
	go func() { _ = m.Start(ctx) }()

	deadline := time.Now().Add(15 * time.Second)
	for {
		now := secretData(t, "rotate-tls")
		c2, _ := m.GetCertificate(nil)
		if !bytes.Equal(now[certs.KeyCert], first[certs.KeyCert]) && !bytes.Equal(c2.Certificate[0], c1.Certificate[0]) {
			if !bytes.Equal(now[certs.KeyCA], first[certs.KeyCA]) {
				t.Error("CA replaced although it was far from expiry")
			}
			leaf := mustParsePEM(t, now[certs.KeyCert])
			old := mustParsePEM(t, first[certs.KeyCert])
			if !leaf.NotAfter.After(old.NotAfter) {
				t.Errorf("renewed certificate expires %s, not after the old %s", leaf.NotAfter, old.NotAfter)
			}
			if time.Now().After(old.NotAfter) {
				t.Errorf("renewed only after the old certificate expired")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("certificate never renewed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustParsePEM(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(p)
	if block == nil {
		t.Fatalf("no PEM in %q", p)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
