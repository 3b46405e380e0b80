package v1alpha1_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

// An IPv4-only pool and VMNetCfg written from Go are the bytes they were
// before the IPv6 half existed: no ipv6Config, no status.ipv6, no
// allocatedIPv6Address.
func TestIPv4OnlyJSONUnchanged(t *testing.T) {
	lt := 300
	pool := v1alpha1.IPPool{
		Spec: v1alpha1.IPPoolSpec{NetworkName: "default/example", IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "192.168.100.2", CIDR: "192.168.100.0/24", LeaseTime: &lt,
			Pool: v1alpha1.Pool{Start: "192.168.100.101", End: "192.168.100.200"}}},
		Status: v1alpha1.IPPoolStatus{IPv4: &v1alpha1.IPv4Status{Allocated: map[string]string{"192.168.100.101": "22:37:37:82:93:7d"}, Used: 1, Available: 98}},
	}
	b, err := json.Marshal(pool)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"metadata":{},"spec":{"ipv4Config":{"serverIP":"192.168.100.2","cidr":"192.168.100.0/24","pool":{"start":"192.168.100.101","end":"192.168.100.200"},"leaseTime":300},"networkName":"default/example"},"status":{"lastUpdate":null,"ipv4":{"allocated":{"192.168.100.101":"22:37:37:82:93:7d"},"used":1,"available":98}}}`
	if string(b) != want {
		t.Fatalf("IPv4-only pool JSON changed:\n got %s\nwant %s", b, want)
	}
	vnc := v1alpha1.VirtualMachineNetworkConfig{Status: v1alpha1.VirtualMachineNetworkConfigStatus{NetworkConfigs: []v1alpha1.NetworkConfigStatus{{
		AllocatedIPAddress: "192.168.100.101", MACAddress: "22:37:37:82:93:7d", NetworkName: "default/example", State: v1alpha1.StateAllocated}}}}
	b, _ = json.Marshal(vnc.Status)
	if want := `{"networkConfigs":[{"allocatedIPAddress":"192.168.100.101","macAddress":"22:37:37:82:93:7d","networkName":"default/example","state":"Allocated"}]}`; string(b) != want {
		t.Fatalf("IPv4-only VMNetCfg status JSON changed:\n got %s\nwant %s", b, want)
	}
}

// An IPv6-only pool sent from Go carries no empty ipv4Config, which the
// schema would refuse (serverIP "" is not an IPv4 address).
func TestIPv6OnlyOmitsIPv4Config(t *testing.T) {
	pool := v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: "default/v6", IPv6Config: &v1alpha1.IPv6Config{
		ServerIP: "fd00:100::2", CIDR: "fd00:100::/64", Pool: v1alpha1.IPv6Pool{Start: "fd00:100::100", End: "fd00:100::ffff"}}}}
	b, err := json.Marshal(pool.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "ipv4Config") {
		t.Fatalf("IPv6-only spec has an ipv4Config: %s", b)
	}
	if !pool.HasIPv6() || pool.HasIPv4() {
		t.Fatalf("HasIPv4=%v HasIPv6=%v for an IPv6-only pool", pool.HasIPv4(), pool.HasIPv6())
	}
}

func v6Pool(name string) *v1alpha1.IPPool {
	pl, vl := 1800, 3600
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "default/" + name, IPv6Config: &v1alpha1.IPv6Config{
			ServerIP: "fd00:100::2", CIDR: "fd00:100::/64",
			Pool:              v1alpha1.IPv6Pool{Start: "fd00:100::100", End: "fd00:100::ffff", Exclude: []v1alpha1.IPv6Address{"fd00:100::150"}},
			DNS:               []v1alpha1.IPv6Address{"fd00:100::53"},
			DomainSearch:      []string{"example.com"},
			NTP:               []string{"fd00:100::123", "pool.ntp.org"},
			PreferredLifetime: &pl, ValidLifetime: &vl}},
	}
}

func TestCRDsIPv6(t *testing.T) {
	_, _, c := testenv.Start(t)
	ctx := context.Background()

	// IPv6-only and dual-stack pools are stored and read back.
	only := v6Pool("v6only")
	if err := c.Create(ctx, only); err != nil {
		t.Fatalf("create IPv6-only pool: %v", err)
	}
	dual := v6Pool("dual")
	dual.Spec.IPv4Config = v1alpha1.IPv4Config{ServerIP: "192.168.100.2", CIDR: "192.168.100.0/24",
		Pool: v1alpha1.Pool{Start: "192.168.100.101", End: "192.168.100.200"}}
	if err := c.Create(ctx, dual); err != nil {
		t.Fatalf("create dual-stack pool: %v", err)
	}
	var got v1alpha1.IPPool
	if err := c.Get(ctx, client.ObjectKeyFromObject(dual), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.IPv6Config == nil || got.Spec.IPv6Config.CIDR != "fd00:100::/64" || *got.Spec.IPv6Config.ValidLifetime != 3600 ||
		got.Spec.IPv4Config.CIDR != "192.168.100.0/24" {
		t.Fatalf("dual-stack pool read back differs: %+v", got.Spec)
	}
	got.Status.IPv6 = &v1alpha1.IPv6Status{Allocated: map[string]string{"fd00:100::100": "22:37:37:82:93:7d"}, Used: 1,
		Available: 1<<63 - 1}
	if err := c.Status().Update(ctx, &got); err != nil {
		t.Fatalf("status update with ipv6: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(dual), &got); err != nil || got.Status.IPv6 == nil ||
		got.Status.IPv6.Available != 1<<63-1 || got.Status.IPv6.Allocated["fd00:100::100"] != "22:37:37:82:93:7d" {
		t.Fatalf("status.ipv6 read back: %+v %v", got.Status.IPv6, err)
	}

	vnc := &v1alpha1.VirtualMachineNetworkConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "vm6"},
		Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "vm6", NetworkConfigs: []v1alpha1.NetworkConfig{{
			NetworkName: "default/dual", MACAddress: "22:37:37:82:93:7d", IPv6Address: ptr(v1alpha1.IPv6Address("fd00:100::200"))}}}}
	if err := c.Create(ctx, vnc); err != nil {
		t.Fatalf("create vmnetcfg with ipv6Address: %v", err)
	}
	vnc.Status.NetworkConfigs = []v1alpha1.NetworkConfigStatus{{NetworkName: "default/dual", MACAddress: "22:37:37:82:93:7d",
		AllocatedIPAddress: "192.168.100.101", AllocatedIPv6Address: "fd00:100::200", State: v1alpha1.StateAllocated}}
	if err := c.Status().Update(ctx, vnc); err != nil {
		t.Fatalf("vmnetcfg status with ipv6: %v", err)
	}

	t.Run("invalid IPv6 halves are refused naming the field", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			edit  func(*v1alpha1.IPv6Config)
			field string
		}{
			{"IPv4 cidr", func(c *v1alpha1.IPv6Config) { c.CIDR = "192.168.0.0/24" }, "spec.ipv6Config.cidr must be an IPv6 prefix"},
			{"prefix too long", func(c *v1alpha1.IPv6Config) { c.CIDR = "fd00::/129" }, "spec.ipv6Config.cidr"},
			{"IPv4 serverIP", func(c *v1alpha1.IPv6Config) { c.ServerIP = "192.168.0.2" }, "spec.ipv6Config.serverIP"},
			{"DNS not an address", func(c *v1alpha1.IPv6Config) { c.DNS = []v1alpha1.IPv6Address{"dns.example"} }, "spec.ipv6Config.dns[0]"},
			{"four DNS", func(c *v1alpha1.IPv6Config) {
				c.DNS = []v1alpha1.IPv6Address{"fd00::1", "fd00::2", "fd00::3", "fd00::4"}
			}, "spec.ipv6Config.dns"},
			{"exclude not an address", func(c *v1alpha1.IPv6Config) { c.Pool.Exclude = []v1alpha1.IPv6Address{"x"} }, "spec.ipv6Config.pool.exclude[0]"},
		} {
			p := v6Pool("bad-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-"))
			tc.edit(p.Spec.IPv6Config)
			err := c.Create(ctx, p)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("%s: got %v; want Invalid naming %s", tc.name, err, tc.field)
			}
		}
	})

	t.Run("IPv6 immutable fields cannot change", func(t *testing.T) {
		for _, tc := range []struct {
			path  []string
			value string
			msg   string
		}{
			{[]string{"spec", "ipv6Config", "cidr"}, "fd00:200::/64", "spec.ipv6Config.cidr is immutable"},
			{[]string{"spec", "ipv6Config", "serverIP"}, "fd00:100::3", "spec.ipv6Config.serverIP is immutable"},
			{[]string{"spec", "ipv6Config", "pool", "start"}, "fd00:100::101", "spec.ipv6Config.pool.start is immutable"},
			{[]string{"spec", "ipv6Config", "pool", "end"}, "fd00:100::fffe", "spec.ipv6Config.pool.end is immutable"},
		} {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("IPPool"))
			if err := c.Get(ctx, client.ObjectKeyFromObject(only), u); err != nil {
				t.Fatal(err)
			}
			_ = unstructured.SetNestedField(u.Object, tc.value, tc.path...)
			err := c.Update(ctx, u)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("change %s: got %v; want Invalid with %q", strings.Join(tc.path, "."), err, tc.msg)
			}
		}
		var p v1alpha1.IPPool
		_ = c.Get(ctx, client.ObjectKeyFromObject(only), &p)
		p.Spec.IPv6Config.DNS = []v1alpha1.IPv6Address{"fd00:100::54"}
		if err := c.Update(ctx, &p); err != nil {
			t.Errorf("change IPv6 DNS: %v", err)
		}
	})
}

func ptr[T any](v T) *T { return &v }
