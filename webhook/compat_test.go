package webhook_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
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
