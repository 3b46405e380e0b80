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
			// Harvester's schema refuses it too (maxItems 3).
			{"five DNS servers", func() *unstructured.Unstructured {
				u := pool.DeepCopy()
				u.SetName("five-dns")
				_ = unstructured.SetNestedStringSlice(u.Object, []string{"1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4", "9.9.9.9"}, "spec", "ipv4Config", "dns")
				return u
			}, "spec.ipv4Config.dns"},
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
		p.Spec.IPv4Config.DNS = []string{"9.9.9.9"}
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

// readManifest reads a YAML manifest kept under test/manifests.
func readManifest(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "test", "manifests", name))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &u.Object); err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return u
}

// TestSchemaAdmitsWhatHarvestersAdmits (issue 14): every IPPool and
// VMNetCfg Harvester's published CRDs admit, ours admit too. Each manifest
// is sent, unchanged, to a kube-apiserver serving Harvester's CRDs and to
// one serving ours (server-side dry run; the webhook's own rules are
// tested in webhook/): where Harvester's schema refuses, ours may refuse
// too (the same maxItems), never the other way round.
func TestSchemaAdmitsWhatHarvestersAdmits(t *testing.T) {
	_, _, ours := testenv.Start(t)
	harvester := startHarvesterCRDs(t)
	ctx := context.Background()

	pool := func(edit func(u *unstructured.Unstructured)) *unstructured.Unstructured {
		u := readManifest(t, "harvester-ippool-max-options.yaml")
		if edit != nil {
			edit(u)
		}
		return u
	}
	set := func(value any, path ...string) func(u *unstructured.Unstructured) {
		return func(u *unstructured.Unstructured) {
			if err := unstructured.SetNestedField(u.Object, value, append([]string{"spec", "ipv4Config"}, path...)...); err != nil {
				t.Fatal(err)
			}
		}
	}
	vmnc := func(vmName, mac string) *unstructured.Unstructured {
		u := readExample(t, "harvester-vmnetcfg.yaml")
		_ = unstructured.SetNestedField(u.Object, vmName, "spec", "vmName")
		_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"macAddress": mac, "networkName": "default/example"}}, "spec", "networkConfigs")
		return u
	}
	cases := []struct {
		name string
		obj  *unstructured.Unstructured
	}{
		{"each list at Harvester's maximum, with entries no option can carry", pool(nil)},
		{"DNS host name and IPv6 address", pool(set([]any{"dns.google", "2001:4860:4860::8888"}, "dns"))},
		{"NTP entries that are no host names", pool(set([]any{"ntp server", "-x-", "", "999.1.1.1"}, "ntp"))},
		{"domain name of 300 characters", pool(set(strings.Repeat("a", 300), "domainName"))},
		{"search domain of 300 characters", pool(set([]any{strings.Repeat("b", 300)}, "domainSearch"))},
		{"leaseTime beyond 32 bits", pool(set(int64(5000000000), "leaseTime"))},
		{"four DNS servers", pool(set([]any{"1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"}, "dns"))},
		{"five NTP servers", pool(set([]any{"a.example", "b.example", "c.example", "d.example", "e.example"}, "ntp"))},
		{"VMNetCfg as Harvester writes it", vmnc("test-vm", "22:37:37:82:93:7d")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errH := harvester.Create(ctx, tc.obj.DeepCopy(), client.DryRunAll)
			errO := ours.Create(ctx, tc.obj.DeepCopy(), client.DryRunAll)
			switch {
			case errH == nil && errO != nil:
				t.Fatalf("Harvester's schema admits it, ours refuses: %v", errO)
			case errH != nil && errO == nil:
				t.Logf("Harvester's schema refuses it (%v), ours admits it", errH)
			case errH != nil:
				t.Logf("both refuse: Harvester %v; ours %v", errH, errO)
			}
		})
	}
}

// startHarvesterCRDs starts a kube-apiserver serving Harvester's published
// CRDs (test/crds/harvester) and returns a client of it.
func startHarvesterCRDs(t *testing.T) client.Client {
	t.Helper()
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	env.CRDDirectoryPaths = []string{filepath.Join(testenv.RepoRoot(), "test", "crds", "harvester")}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver with Harvester's CRDs: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
