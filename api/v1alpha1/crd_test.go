package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

func readExample(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &u.Object); err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return u
}

func TestCRDs(t *testing.T) {
	_, _, c := testenv.Start(t)
	ctx := context.Background()

	// Harvester's manifests apply unchanged (sent as-is, not through our Go types).
	pool := readExample(t, "harvester-ippool.yaml")
	vmnc := readExample(t, "harvester-vmnetcfg.yaml")
	for _, u := range []*unstructured.Unstructured{pool, vmnc} {
		if err := c.Create(ctx, u); err != nil {
			t.Fatalf("create Harvester example %s: %v", u.GetKind(), err)
		}
	}
	var got v1alpha1.IPPool
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "example"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.IPv4Config.ServerIP != "192.168.100.2" || len(got.Spec.IPv4Config.Pool.Exclude) != 2 ||
		got.Spec.NetworkName != "default/example" || *got.Spec.IPv4Config.LeaseTime != 300 {
		t.Fatalf("IPPool read back differs: %+v", got.Spec)
	}

	// The status subresource takes allocations and counts.
	got.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{"192.168.100.101": "22:37:37:82:93:7d"}, Used: 1, Available: 97}
	if err := c.Status().Update(ctx, &got); err != nil {
		t.Fatalf("status update: %v", err)
	}

	t.Run("invalid objects are refused with a message naming the field", func(t *testing.T) {
		cases := []struct {
			name  string
			obj   func() *unstructured.Unstructured
			field string
		}{
			{"bad CIDR", func() *unstructured.Unstructured {
				u := pool.DeepCopy()
				u.SetName("bad-cidr")
				_ = unstructured.SetNestedField(u.Object, "192.168.100.0/40", "spec", "ipv4Config", "cidr")
				return u
			}, "spec.ipv4Config.cidr"},
			{"five DNS servers", func() *unstructured.Unstructured {
				u := pool.DeepCopy()
				u.SetName("five-dns")
				_ = unstructured.SetNestedStringSlice(u.Object, []string{"1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4", "9.9.9.9"}, "spec", "ipv4Config", "dns")
				return u
			}, "spec.ipv4Config.dns"},
			{"DNS item not an address", func() *unstructured.Unstructured {
				u := pool.DeepCopy()
				u.SetName("dns-item")
				_ = unstructured.SetNestedStringSlice(u.Object, []string{"1.1.1.1", "one.one"}, "spec", "ipv4Config", "dns")
				return u
			}, "spec.ipv4Config.dns[1]"},
			{"MTU too small", func() *unstructured.Unstructured {
				u := pool.DeepCopy()
				u.SetName("mtu")
				_ = unstructured.SetNestedField(u.Object, int64(20), "spec", "ipv4Config", "mtu")
				return u
			}, "spec.ipv4Config.mtu"},
			{"bad MAC", func() *unstructured.Unstructured {
				u := vmnc.DeepCopy()
				u.SetName("bad-mac")
				_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"macAddress": "22:37:37:82:93", "networkName": "default/example"}}, "spec", "networkConfigs")
				return u
			}, "spec.networkConfigs[0].macAddress"},
			{"missing networkName", func() *unstructured.Unstructured {
				u := pool.DeepCopy()
				u.SetName("no-network")
				unstructured.RemoveNestedField(u.Object, "spec", "networkName")
				return u
			}, "spec.networkName"},
		}
		for _, tc := range cases {
			err := c.Create(ctx, tc.obj())
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("%s: got %v; want Invalid naming %s", tc.name, err, tc.field)
			}
		}
	})

	t.Run("immutable fields cannot change", func(t *testing.T) {
		for _, tc := range []struct {
			path  []string
			value string
			field string
		}{
			{[]string{"spec", "ipv4Config", "cidr"}, "192.168.0.0/16", "spec.ipv4Config.cidr is immutable"},
			{[]string{"spec", "ipv4Config", "serverIP"}, "192.168.100.3", "spec.ipv4Config.serverIP is immutable"},
			{[]string{"spec", "ipv4Config", "pool", "start"}, "192.168.100.100", "spec.ipv4Config.pool.start is immutable"},
			{[]string{"spec", "ipv4Config", "router"}, "192.168.100.254", "spec.ipv4Config.router is immutable"},
			{[]string{"spec", "networkName"}, "default/other", "spec.networkName is immutable"},
		} {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("IPPool"))
			if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "example"}, u); err != nil {
				t.Fatal(err)
			}
			_ = unstructured.SetNestedField(u.Object, tc.value, tc.path...)
			err := c.Update(ctx, u)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("change %s: got %v; want Invalid with %q", strings.Join(tc.path, "."), err, tc.field)
			}
		}
		// Removing the router once set is refused too.
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("IPPool"))
		_ = c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "example"}, u)
		unstructured.RemoveNestedField(u.Object, "spec", "ipv4Config", "router")
		if err := c.Update(ctx, u); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "router is immutable once set") {
			t.Errorf("remove router: got %v", err)
		}
		// Mutable fields still change.
		var p v1alpha1.IPPool
		_ = c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "example"}, &p)
		p.Spec.IPv4Config.DNS = []v1alpha1.IPv4Address{"9.9.9.9"}
		if err := c.Update(ctx, &p); err != nil {
			t.Errorf("change DNS: %v", err)
		}
		var v v1alpha1.VirtualMachineNetworkConfig
		_ = c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "test-vm"}, &v)
		v.Spec.VMName = "other"
		if err := c.Update(ctx, &v); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.vmName is immutable") {
			t.Errorf("change vmName: got %v", err)
		}
	})

	t.Run("kubectl columns", func(t *testing.T) {
		var crd unstructured.Unstructured
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		if err := c.Get(ctx, client.ObjectKey{Name: "ippools.network.harvesterhci.io"}, &crd); err != nil {
			t.Fatal(err)
		}
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		cols, _, _ := unstructured.NestedSlice(versions[0].(map[string]any), "additionalPrinterColumns")
		var names []string
		for _, col := range cols {
			names = append(names, col.(map[string]any)["name"].(string))
		}
		if strings.Join(names, ",") != "NETWORK,AVAILABLE,USED,REGISTERED,CACHEREADY,AGENTREADY,AGE" {
			t.Fatalf("IPPool columns = %v", names)
		}
		short, _, _ := unstructured.NestedStringSlice(crd.Object, "spec", "names", "shortNames")
		if strings.Join(short, ",") != "ippl,ippls" {
			t.Fatalf("short names = %v", short)
		}
	})
}
