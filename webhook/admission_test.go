package webhook_test

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Harvester's own examples, applied unchanged.
const harvesterIPPool = `
apiVersion: network.harvesterhci.io/v1alpha1
kind: IPPool
metadata: {name: example, namespace: default}
spec:
  ipv4Config:
    serverIP: 192.168.100.2
    cidr: 192.168.100.0/24
    pool: {start: 192.168.100.101, end: 192.168.100.200, exclude: [192.168.100.151, 192.168.100.187]}
    router: 192.168.100.1
    dns: [1.1.1.1]
    domainName: example.com
    domainSearch: [example.com]
    ntp: [pool.ntp.org]
    leaseTime: 300
  networkName: default/example
`

const harvesterVMNetCfg = `
apiVersion: network.harvesterhci.io/v1alpha1
kind: VirtualMachineNetworkConfig
metadata: {name: test-vm, namespace: default}
spec:
  networkConfigs:
  - {macAddress: "22:37:37:82:93:7d", networkName: default/example}
  vmName: test-vm
`

func fromYAML(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("parse YAML: %v", err)
	}
	return u
}

// TestHarvesterExamples applies Harvester's examples unchanged, then checks
// the pool cannot be deleted while the VM's network config uses it, and can
// once it is gone.
func TestHarvesterExamples(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	nad(t, "default", "example")
	pool := fromYAML(t, harvesterIPPool)
	create(t, pool)
	cfg := fromYAML(t, harvesterVMNetCfg)
	create(t, cfg)

	var got v1alpha1.IPPool
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "example"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.IPv4Config.ServerIP != "192.168.100.2" || got.Spec.IPv4Config.Pool.Start != "192.168.100.101" ||
		got.Spec.IPv4Config.Pool.End != "192.168.100.200" {
		t.Errorf("the mutator changed fields the user set: %+v", got.Spec.IPv4Config)
	}

	err := k8s.Delete(ctx, pool)
	assertRefused(t, err, "spec.networkName", "default/example", true)
	if !strings.Contains(err.Error(), "default/test-vm") {
		t.Errorf("refusal does not name the VirtualMachineNetworkConfig in use: %v", err)
	}

	if err := k8s.Delete(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitGone(t, cfg)
	if err := k8s.Delete(ctx, pool); err != nil {
		t.Fatalf("delete of an unused pool refused: %v", err)
	}
	waitGone(t, pool)
}

// TestMutatorFillsMissingFields applies the Harvester example without
// serverIP, pool.start and pool.end: the CRD requires them, so the create
// only passes because the mutating webhook fills them before the schema runs.
func TestMutatorFillsMissingFields(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	nad(t, "mutate", "example")
	pool := fromYAML(t, strings.NewReplacer(
		"namespace: default}", "namespace: mutate}",
		"networkName: default/example", "networkName: mutate/example",
		"    serverIP: 192.168.100.2\n", "",
		"pool: {start: 192.168.100.101, end: 192.168.100.200, exclude:", "pool: {exclude:",
	).Replace(harvesterIPPool))
	spec := pool.Object["spec"].(map[string]any)["ipv4Config"].(map[string]any)
	if _, has := spec["serverIP"]; has {
		t.Fatal("test setup: serverIP still in the manifest")
	}
	if p := spec["pool"].(map[string]any); p["start"] != nil || p["end"] != nil {
		t.Fatal("test setup: pool.start/end still in the manifest")
	}
	create(t, pool)

	var got v1alpha1.IPPool
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pool), &got); err != nil {
		t.Fatal(err)
	}
	c := got.Spec.IPv4Config
	// Router is .1, so the server gets the first host that is not the router.
	if c.Pool.Start != "192.168.100.1" || c.Pool.End != "192.168.100.254" || c.ServerIP != "192.168.100.2" {
		t.Errorf("filled start=%s end=%s serverIP=%s, want 192.168.100.1, 192.168.100.254, 192.168.100.2",
			c.Pool.Start, c.Pool.End, c.ServerIP)
	}
	if len(c.Pool.Exclude) != 2 || c.Router != "192.168.100.1" || *c.LeaseTime != 300 {
		t.Errorf("the mutator changed fields the user set: %+v", c)
	}

	// Only serverIP missing, and the first hosts are router and excluded:
	// start and end stay as written.
	nad(t, "mutate", "second")
	p2 := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "mutate", Name: "second"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "mutate/second", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "172.16.5.0/24", Router: "172.16.5.1",
			Pool: v1alpha1.Pool{Start: "172.16.5.2", End: "172.16.5.60", Exclude: []v1alpha1.IPv4Address{"172.16.5.2", "172.16.5.55"}},
		}},
	}
	create(t, p2)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(p2), &got); err != nil {
		t.Fatal(err)
	}
	c = got.Spec.IPv4Config
	if c.ServerIP != "172.16.5.3" || c.Pool.Start != "172.16.5.2" || c.Pool.End != "172.16.5.60" {
		t.Errorf("got serverIP=%s start=%s end=%s, want 172.16.5.3 (after router .1 and excluded .2), 172.16.5.2, 172.16.5.60",
			c.ServerIP, c.Pool.Start, c.Pool.End)
	}
}

// TestDeleteMatchesNADNamespace: the pool lives in one namespace, its NAD in
// another, the VM in a third. Harvester's add-on matched the VM's network
// against the pool's namespace and let such deletes through.
func TestDeleteMatchesNADNamespace(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	nad(t, "nads", "shared")
	namespace(t, "pools")
	namespace(t, "vms")
	pool := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "pools", Name: "shared"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "nads/shared", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "172.17.0.0/24", ServerIP: "172.17.0.2", Router: "172.17.0.1",
			Pool: v1alpha1.Pool{Start: "172.17.0.10", End: "172.17.0.20"},
		}},
	}
	create(t, pool)
	vm := &v1alpha1.VirtualMachineNetworkConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "vm"},
		Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "vm", NetworkConfigs: []v1alpha1.NetworkConfig{
			{NetworkName: "nads/shared", MACAddress: "02:aa:00:00:00:01"},
		}},
	}
	create(t, vm)
	assertRefused(t, k8s.Delete(ctx, pool), "spec.networkName", "nads/shared", true)

	if err := k8s.Delete(ctx, vm); err != nil {
		t.Fatal(err)
	}
	waitGone(t, vm)
	if err := k8s.Delete(ctx, pool); err != nil {
		t.Fatalf("delete of an unused pool refused: %v", err)
	}
}

// TestPausedPoolMayStrandAllocations: the stranding rule yields to a paused pool.
func TestPausedPoolMayStrandAllocations(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	nad(t, "paused", "net")
	pool := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "paused", Name: "pool"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "paused/net", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "172.18.0.0/24", ServerIP: "172.18.0.2", Router: "172.18.0.1",
			Pool: v1alpha1.Pool{Start: "172.18.0.10", End: "172.18.0.20"},
		}},
	}
	create(t, pool)
	pool.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{"172.18.0.12": "02:bb:00:00:00:01"}, Used: 1, Available: 10}
	if err := k8s.Status().Update(ctx, pool); err != nil {
		t.Fatal(err)
	}
	pool.Spec.IPv4Config.Pool.Exclude = []v1alpha1.IPv4Address{"172.18.0.12"}
	assertRefused(t, k8s.Update(ctx, pool.DeepCopy()), "spec.ipv4Config.pool.exclude", "172.18.0.12", true)

	pool.Spec.Paused = ptr.To(true)
	if err := k8s.Update(ctx, pool); err != nil {
		t.Fatalf("update of a paused pool refused: %v", err)
	}
}

// assertRefused checks err is a refusal whose message names field and value.
// byWebhook asks that the refusal came from our validating webhook rather
// than the CRD's schema.
func assertRefused(t *testing.T, err error, field, value string, byWebhook bool) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want a refusal naming %s", field)
	}
	msg := err.Error()
	if !strings.Contains(msg, field) {
		t.Errorf("refusal does not name the field %s: %s", field, msg)
	}
	if value != "" && !strings.Contains(msg, value) {
		t.Errorf("refusal does not name the value %s: %s", value, msg)
	}
	if byWebhook && !strings.Contains(msg, "denied the request") {
		t.Errorf("refused, but not by the webhook: %s", msg)
	}
}
