package webhook_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// In namespace "refuse6": NAD dual served by dual-stack IPPool dual (with an
// IPv6 allocation), used by VMNetCfg vm1; NAD v4 served by an IPv4-only
// pool; NAD free for new pools.
const refuse6NS = "refuse6"

func dualPool() *v1alpha1.IPPool {
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: refuse6NS, Name: "dual"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "refuse6/dual",
			IPv4Config: v1alpha1.IPv4Config{CIDR: "10.60.0.0/24", ServerIP: "10.60.0.2", Pool: v1alpha1.Pool{Start: "10.60.0.10", End: "10.60.0.100"}},
			IPv6Config: &v1alpha1.IPv6Config{CIDR: "fd00:60::/64", ServerIP: "fd00:60::2",
				Pool: v1alpha1.IPv6Pool{Start: "fd00:60::100", End: "fd00:60::1ff", Exclude: []v1alpha1.IPv6Address{"fd00:60::150"}}},
		},
	}
}

// newPool6 is a valid new IPv6-only pool on NAD free; each case breaks one thing.
func newPool6(mod func(*v1alpha1.IPv6Config, *v1alpha1.IPPoolSpec)) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: refuse6NS, Name: "new6"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "refuse6/free", IPv6Config: &v1alpha1.IPv6Config{
			CIDR: "fd00:70::/64", ServerIP: "fd00:70::2",
			Pool:              v1alpha1.IPv6Pool{Start: "fd00:70::100", End: "fd00:70::ffff"},
			DNS:               []v1alpha1.IPv6Address{"fd00:70::53", "2001:4860:4860::8888"},
			DomainSearch:      []string{"example.com"},
			NTP:               []string{"fd00:70::123", "pool.ntp.org"},
			PreferredLifetime: ptr.To(1800), ValidLifetime: ptr.To(3600),
		}},
	}
	mod(p.Spec.IPv6Config, &p.Spec)
	return p
}

func newVM6(mod func(*v1alpha1.VirtualMachineNetworkConfigSpec)) *v1alpha1.VirtualMachineNetworkConfig {
	v := &v1alpha1.VirtualMachineNetworkConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: refuse6NS, Name: "new-vm"},
		Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "new-vm", NetworkConfigs: []v1alpha1.NetworkConfig{
			{NetworkName: "refuse6/dual", MACAddress: "02:00:00:00:00:99", IPv6Address: addr6("fd00:60::180")},
		}},
	}
	mod(&v.Spec)
	return v
}

func addr6(s string) *v1alpha1.IPv6Address { a := v1alpha1.IPv6Address(s); return &a }

func TestRefusalsIPv6(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	for _, n := range []string{"dual", "v4", "free"} {
		nad(t, refuse6NS, n)
	}
	pool := dualPool()
	create(t, pool)
	pool.Status.IPv6 = &v1alpha1.IPv6Status{Allocated: map[string]string{"fd00:60::120": "02:00:00:00:00:01", "fd00:60::150": "EXCLUDED"}, Used: 1, Available: 254}
	if err := k8s.Status().Update(ctx, pool); err != nil {
		t.Fatal(err)
	}
	waitCached(t, pool, func(o client.Object) bool { return o.(*v1alpha1.IPPool).Status.IPv6 != nil })
	v4 := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: refuse6NS, Name: "v4"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "refuse6/v4", IPv4Config: v1alpha1.IPv4Config{CIDR: "10.61.0.0/24"}}}
	create(t, v4)
	vm1 := &v1alpha1.VirtualMachineNetworkConfig{ObjectMeta: metav1.ObjectMeta{Namespace: refuse6NS, Name: "vm1"},
		Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "vm1", NetworkConfigs: []v1alpha1.NetworkConfig{{NetworkName: "refuse6/dual", MACAddress: "02:00:00:00:00:01"}}}}
	create(t, vm1)

	t.Run("valid bases pass", func(t *testing.T) {
		for _, obj := range []client.Object{
			newPool6(func(*v1alpha1.IPv6Config, *v1alpha1.IPPoolSpec) {}),
			newVM6(func(*v1alpha1.VirtualMachineNetworkConfigSpec) {}),
		} {
			if err := k8s.Create(ctx, obj, client.DryRunAll); err != nil {
				t.Errorf("valid %T refused: %v", obj, err)
			}
		}
	})

	type c6 = v1alpha1.IPv6Config
	type sp = v1alpha1.IPPoolSpec
	type vs = v1alpha1.VirtualMachineNetworkConfigSpec
	ex := func(a ...string) []v1alpha1.IPv6Address {
		out := make([]v1alpha1.IPv6Address, len(a))
		for i := range a {
			out[i] = v1alpha1.IPv6Address(a[i])
		}
		return out
	}
	cases := []struct {
		name   string
		obj    client.Object
		op     string
		field  string
		value  string
		schema bool
	}{
		{name: "cidr /48", obj: newPool6(func(c *c6, _ *sp) { c.CIDR = "fd00:70::/48" }), field: "spec.ipv6Config.cidr", value: "fd00:70::/48"},
		{name: "cidr /127", obj: newPool6(func(c *c6, _ *sp) { c.CIDR = "fd00:70::/127" }), field: "spec.ipv6Config.cidr", value: "fd00:70::/127"},
		{name: "cidr link-local", obj: newPool6(func(c *c6, _ *sp) { c.CIDR = "fe80::/64" }), field: "spec.ipv6Config.cidr", value: "fe80::/64"},
		{name: "cidr multicast", obj: newPool6(func(c *c6, _ *sp) { c.CIDR = "ff02::/64" }), field: "spec.ipv6Config.cidr", value: "ff02::/64"},
		{name: "cidr IPv4", obj: newPool6(func(c *c6, _ *sp) { c.CIDR = "10.70.0.0/24" }), field: "spec.ipv6Config.cidr", schema: true},
		{name: "serverIP outside cidr", obj: newPool6(func(c *c6, _ *sp) { c.ServerIP = "fd00:71::2" }), field: "spec.ipv6Config.serverIP", value: "fd00:71::2"},
		{name: "serverIP is Subnet-Router anycast", obj: newPool6(func(c *c6, _ *sp) { c.ServerIP = "fd00:70::" }), field: "spec.ipv6Config.serverIP", value: "fd00:70::"},
		{name: "serverIP IPv4", obj: newPool6(func(c *c6, _ *sp) { c.ServerIP = "10.70.0.2" }), field: "spec.ipv6Config.serverIP", schema: true},
		{name: "start is Subnet-Router anycast", obj: newPool6(func(c *c6, _ *sp) { c.Pool.Start = "fd00:70::" }), field: "spec.ipv6Config.pool.start", value: "fd00:70::"},
		{name: "end outside cidr", obj: newPool6(func(c *c6, _ *sp) { c.Pool.End = "fd00:71::ffff" }), field: "spec.ipv6Config.pool.end", value: "fd00:71::ffff"},
		{name: "start after end", obj: newPool6(func(c *c6, _ *sp) { c.Pool.Start, c.Pool.End = "fd00:70::ffff", "fd00:70::100" }), field: "spec.ipv6Config.pool.start", value: "fd00:70::ffff"},
		{name: "exclude outside range", obj: newPool6(func(c *c6, _ *sp) { c.Pool.Exclude = ex("fd00:70::1:0") }), field: "spec.ipv6Config.pool.exclude[0]", value: "fd00:70::1:0"},
		{name: "exclude twice in two spellings", obj: newPool6(func(c *c6, _ *sp) { c.Pool.Exclude = ex("fd00:70::200", "fd00:70:0:0::200") }), field: "spec.ipv6Config.pool.exclude[1]", value: "fd00:70:0:0::200"},
		{name: "exclude IPv4-mapped", obj: newPool6(func(c *c6, _ *sp) { c.Pool.Exclude = ex("::ffff:10.0.0.1") }), field: "spec.ipv6Config.pool.exclude[0]", value: "::ffff:10.0.0.1"},
		{name: "dns IPv4", obj: newPool6(func(c *c6, _ *sp) { c.DNS = ex("1.1.1.1") }), field: "spec.ipv6Config.dns[0]", schema: true},
		{name: "dns multicast", obj: newPool6(func(c *c6, _ *sp) { c.DNS = ex("ff02::1") }), field: "spec.ipv6Config.dns[0]", value: "ff02::1"},
		{name: "dns unspecified", obj: newPool6(func(c *c6, _ *sp) { c.DNS = ex("fd00:70::53", "::") }), field: "spec.ipv6Config.dns[1]", value: "::"},
		{name: "dns loopback", obj: newPool6(func(c *c6, _ *sp) { c.DNS = ex("::1") }), field: "spec.ipv6Config.dns[0]", value: "::1"},
		{name: "dns Subnet-Router anycast", obj: newPool6(func(c *c6, _ *sp) { c.DNS = ex("fd00:70::") }), field: "spec.ipv6Config.dns[0]", value: "fd00:70::"},
		{name: "ntp IPv4 address", obj: newPool6(func(c *c6, _ *sp) { c.NTP = []string{"10.0.0.123"} }), field: "spec.ipv6Config.ntp[0]", value: "10.0.0.123"},
		{name: "ntp bad name", obj: newPool6(func(c *c6, _ *sp) { c.NTP = []string{"bad_name"} }), field: "spec.ipv6Config.ntp[0]", value: "bad_name"},
		{name: "domainSearch invalid", obj: newPool6(func(c *c6, _ *sp) { c.DomainSearch = []string{"-bad-"} }), field: "spec.ipv6Config.domainSearch[0]", value: "-bad-"},
		{name: "preferred longer than valid", obj: newPool6(func(c *c6, _ *sp) { c.PreferredLifetime, c.ValidLifetime = ptr.To(7200), ptr.To(3600) }), field: "spec.ipv6Config.preferredLifetime", value: "7200"},
		{name: "valid lifetime 59", obj: newPool6(func(c *c6, _ *sp) { c.PreferredLifetime, c.ValidLifetime = nil, ptr.To(59) }), field: "spec.ipv6Config.validLifetime", value: "59"},
		{name: "valid lifetime infinite", obj: newPool6(func(c *c6, _ *sp) { c.ValidLifetime = ptr.To(1<<32 - 1) }), field: "spec.ipv6Config.validLifetime", value: "4294967295"},
		{name: "no IPv4 half and an empty IPv6 one", obj: newPool6(func(c *c6, _ *sp) { *c = v1alpha1.IPv6Config{} }), field: "spec.ipv6Config.serverIP", schema: true},
		{name: "update excludes an allocated IPv6 address", op: "update", obj: func() client.Object {
			p := dualPool()
			p.Spec.IPv6Config.Pool.Exclude = ex("fd00:60::150", "fd00:60:0::120")
			return p
		}(), field: "spec.ipv6Config.pool.exclude", value: "fd00:60::120"},
		{name: "update removes ipv6Config with allocations", op: "update", obj: func() client.Object {
			p := dualPool()
			p.Spec.IPv6Config = nil
			return p
		}(), field: "spec.ipv6Config", value: ""},
		// VMNetCfg
		{name: "ipv6Address outside range", obj: newVM6(func(s *vs) { s.NetworkConfigs[0].IPv6Address = addr6("fd00:60::300") }), field: "spec.networkConfigs[0].ipv6Address", value: "fd00:60::300"},
		{name: "ipv6Address excluded", obj: newVM6(func(s *vs) { s.NetworkConfigs[0].IPv6Address = addr6("fd00:60::150") }), field: "spec.networkConfigs[0].ipv6Address", value: "fd00:60::150"},
		{name: "ipv6Address is server", obj: newVM6(func(s *vs) {
			s.NetworkConfigs[0].IPv6Address = addr6("fd00:60::2")
		}), field: "spec.networkConfigs[0].ipv6Address", value: "fd00:60::2"},
		{name: "ipv6Address on an IPv4-only pool", obj: newVM6(func(s *vs) { s.NetworkConfigs[0].NetworkName = "refuse6/v4" }), field: "spec.networkConfigs[0].ipv6Address", value: "fd00:60::180"},
		{name: "ipv6Address not IPv6", obj: newVM6(func(s *vs) { s.NetworkConfigs[0].IPv6Address = addr6("10.60.0.20") }), field: "spec.networkConfigs[0].ipv6Address", schema: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			switch tc.op {
			case "update":
				cur := tc.obj.DeepCopyObject().(client.Object)
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(tc.obj), cur); err != nil {
					t.Fatal(err)
				}
				tc.obj.SetResourceVersion(cur.GetResourceVersion())
				err = k8s.Update(ctx, tc.obj)
			default:
				err = k8s.Create(ctx, tc.obj)
			}
			assertRefused(t, err, tc.field, tc.value, !tc.schema)
			t.Logf("refused: %v", err)
		})
	}

	// The mutator fills an IPv6-only pool's serverIP and range.
	t.Run("defaults", func(t *testing.T) {
		p := newPool6(func(c *c6, _ *sp) {
			c.ServerIP, c.Pool.Start, c.Pool.End = "", "", ""
			c.Pool.Exclude = ex("fd00:70::1")
		})
		create(t, p)
		var got v1alpha1.IPPool
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), &got); err != nil {
			t.Fatal(err)
		}
		c := got.Spec.IPv6Config
		if c.ServerIP != "fd00:70::2" || c.Pool.Start != "fd00:70::1" || c.Pool.End != "fd00:70::ffff:ffff:ffff:ffff" {
			t.Errorf("filled serverIP=%s start=%s end=%s; want fd00:70::2 (after excluded ::1), fd00:70::1, fd00:70::ffff:ffff:ffff:ffff",
				c.ServerIP, c.Pool.Start, c.Pool.End)
		}
		if got.Spec.IPv4Config.CIDR != "" {
			t.Errorf("the mutator gave an IPv6-only pool an IPv4 half: %+v", got.Spec.IPv4Config)
		}
	})

	// A paused pool may drop its IPv6 half.
	t.Run("paused pool may remove ipv6Config", func(t *testing.T) {
		var cur v1alpha1.IPPool
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pool), &cur); err != nil {
			t.Fatal(err)
		}
		cur.Spec.Paused = ptr.To(true)
		cur.Spec.IPv6Config = nil
		if err := k8s.Update(ctx, &cur, client.DryRunAll); err != nil {
			t.Errorf("paused pool could not drop ipv6Config: %v", err)
		}
	})
}
