package webhook_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/webhook"
)

// warningRecorder collects the warnings the apiserver sends back, as kubectl
// prints them.
type warningRecorder struct {
	mu sync.Mutex
	ws []string
}

func (r *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ws = append(r.ws, text)
}

func (r *warningRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := r.ws
	r.ws = nil
	return ws
}

// TestHarvesterAdmitsWeAdmit: manifests Harvester's add-on admits that an
// earlier vm-dhcp refused are admitted (through the real apiserver, CRD
// schema and webhook), with a warning that says how vm-dhcp reads them.
func TestHarvesterAdmitsWeAdmit(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	const ns = "compat"
	for _, n := range []string{"net1", "net2"} {
		nad(t, ns, n)
	}
	nad(t, "default", "compat-bare")
	served := &v1alpha1.IPPool{
		Spec: v1alpha1.IPPoolSpec{NetworkName: ns + "/net1", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "10.60.0.0/24", ServerIP: "10.60.0.2", Pool: v1alpha1.Pool{Start: "10.60.0.10", End: "10.60.0.100"}}},
	}
	served.Namespace, served.Name = ns, "served"
	create(t, served)

	rec := &warningRecorder{}
	cfg := rest.CopyConfig(restCfg)
	cfg.WarningHandler = rec
	c, err := client.New(cfg, client.Options{Scheme: webhook.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	pool := func(name, network string, mod func(*v1alpha1.IPv4Config)) *v1alpha1.IPPool {
		p := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: network, IPv4Config: v1alpha1.IPv4Config{
			CIDR: "10.61.0.0/24", ServerIP: "10.61.0.2", Pool: v1alpha1.Pool{Start: "10.61.0.10", End: "10.61.0.100"}}}}
		p.Namespace, p.Name = ns, name
		if mod != nil {
			mod(&p.Spec.IPv4Config)
		}
		return p
	}
	vm := &v1alpha1.VirtualMachineNetworkConfig{Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "vm-bare",
		NetworkConfigs: []v1alpha1.NetworkConfig{{NetworkName: "net1", MACAddress: "02:00:00:00:60:01"}}}}
	vm.Namespace, vm.Name = ns, "vm-bare"
	for _, tc := range []struct {
		name    string
		obj     client.Object
		warning string // "" for none
	}{
		{"networkName without namespace", pool("bare", "compat-bare", nil),
			"spec.networkName: compat-bare has no namespace: read as default/compat-bare"},
		{"leaseTime below 60", pool("short", ns+"/net2", func(c *v1alpha1.IPv4Config) { c.LeaseTime = ptr.To(30) }),
			"spec.ipv4Config.leaseTime: 30 is shorter than 60 seconds"},
		{"leaseTime 0", pool("zero", ns+"/net2", func(c *v1alpha1.IPv4Config) { c.LeaseTime = ptr.To(0) }),
			"spec.ipv4Config.leaseTime: 0 is not positive"},
		{"second pool on a network", pool("second", ns+"/net1", nil),
			"spec.networkName: compat/net1 is already served by IPPool compat/served"},
		{"exclude outside the range", pool("excl-out", ns+"/net2", func(c *v1alpha1.IPv4Config) {
			c.Pool.Exclude = []v1alpha1.IPv4Address{"10.61.0.200", "10.99.0.1"}
		}), "spec.ipv4Config.pool.exclude[1]: 10.99.0.1 is outside the range 10.61.0.10-10.61.0.100 and has no effect"},
		{"exclude twice", pool("excl-twice", ns+"/net2", func(c *v1alpha1.IPv4Config) {
			c.Pool.Exclude = []v1alpha1.IPv4Address{"10.61.0.20", "10.61.0.20"}
		}), "spec.ipv4Config.pool.exclude[1]: 10.61.0.20 is listed twice"},
		{"exclude that is no address", pool("excl-cidr", ns+"/net2", func(c *v1alpha1.IPv4Config) {
			c.Pool.Exclude = []v1alpha1.IPv4Address{"10.61.0.0/28"}
		}), "spec.ipv4Config.pool.exclude[0]: 10.61.0.0/28 is not an address: has no effect"},
		{"VMNetCfg networkName without namespace", vm,
			"spec.networkConfigs[0].networkName: net1 has no namespace: read as compat/net1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.take()
			if err := c.Create(ctx, tc.obj, client.DryRunAll); err != nil {
				t.Fatalf("refused: %v", err)
			}
			ws := strings.Join(rec.take(), "\n")
			if !strings.Contains(ws, tc.warning) {
				t.Errorf("warnings %q, want one containing %q", ws, tc.warning)
			}
			t.Logf("admitted with warning: %s", ws)
		})
	}
}

// TestHarvesterMaxOptions (issue 14): an IPPool written for Harvester with
// every option list at the most Harvester's schema admits, and entries no
// DHCP option can carry (a DNS host name, an NTP entry that is no host name,
// a search domain with an underscore, a lease time beyond 32 bits), applies
// unchanged through the real API server, our CRD and our webhook; the
// warnings say what the agent leaves out or how it sends it.
func TestHarvesterMaxOptions(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "test", "manifests", "harvester-ippool-max-options.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	u := fromYAML(t, string(doc))
	nad(t, u.GetNamespace(), "max-options")
	rec := &warningRecorder{}
	cfg := rest.CopyConfig(restCfg)
	cfg.WarningHandler = rec
	c, err := client.New(cfg, client.Options{Scheme: webhook.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, u); err != nil {
		t.Fatalf("refused: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, u) })
	ws := strings.Join(rec.take(), "\n")
	for _, want := range []string{
		"spec.ipv4Config.dns[2]: dns.google is not an IPv4 address",
		"spec.ipv4Config.ntp[3]: ntp_server is neither an IPv4 address nor a host name",
		"spec.ipv4Config.ntp: pool.ntp.org., time.example.com: option 42 carries IPv4 addresses only, so the agent resolves host names",
		"spec.ipv4Config.domainSearch[39]",
		"spec.ipv4Config.leaseTime: 4294967295 does not fit option 51's 32 bits",
	} {
		if !strings.Contains(ws, want) {
			t.Errorf("warnings lack %q:\n%s", want, ws)
		}
	}
	t.Logf("admitted with warnings:\n%s", ws)

	// Stored as written: nothing dropped or rewritten.
	var got v1alpha1.IPPool
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(u), &got); err != nil {
		t.Fatal(err)
	}
	gc := got.Spec.IPv4Config
	if len(gc.DNS) != 3 || len(gc.NTP) != 4 || gc.NTP[0] != "pool.ntp.org." || len(gc.DomainSearch) != 40 || *gc.LeaseTime != 4294967295 {
		t.Errorf("stored differently: %+v", gc)
	}

	// One entry more than fits any reply is refused, saying what to shorten.
	big := u.DeepCopy()
	big.SetName("max-options-big")
	big.SetResourceVersion("")
	var search []any
	for i := range 40 {
		search = append(search, fmt.Sprintf("team-%02d-%s.example.org", i, strings.Repeat("x", 30)))
	}
	_ = unstructured.SetNestedSlice(big.Object, search, "spec", "ipv4Config", "domainSearch")
	err = c.Create(ctx, big, client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), "at most 1000 fit in one reply: remove") || !strings.Contains(err.Error(), "entries of spec.ipv4Config.domainSearch") {
		t.Fatalf("options too large for a reply: got %v", err)
	}
	t.Logf("refused: %v", err)
}
