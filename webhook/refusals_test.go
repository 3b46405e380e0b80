package webhook_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// In namespace "refuse": NAD net1 served by IPPool pool1 (with an
// allocation), used by VMNetCfg vm1; NAD net2 with no pool; NAD net3 free
// for new pools.
const refuseNS = "refuse"

func refusePool1() *v1alpha1.IPPool {
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: refuseNS, Name: "pool1"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "refuse/net1", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "10.10.0.0/24", ServerIP: "10.10.0.2", Router: "10.10.0.1",
			Pool: v1alpha1.Pool{Start: "10.10.0.10", End: "10.10.0.100", Exclude: []v1alpha1.IPv4Address{"10.10.0.50"}},
		}},
	}
}

func refuseVM1() *v1alpha1.VirtualMachineNetworkConfig {
	return &v1alpha1.VirtualMachineNetworkConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: refuseNS, Name: "vm1"},
		Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "vm1", NetworkConfigs: []v1alpha1.NetworkConfig{
			{NetworkName: "refuse/net1", MACAddress: "02:00:00:00:00:01"},
		}},
	}
}

// newPool is a valid new pool on net3; each case breaks one thing.
func newPool(mod func(*v1alpha1.IPv4Config, *v1alpha1.IPPoolSpec)) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: refuseNS, Name: "new"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "refuse/net3", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "10.20.0.0/24", ServerIP: "10.20.0.2", Router: "10.20.0.1",
			Pool:      v1alpha1.Pool{Start: "10.20.0.10", End: "10.20.0.100"},
			LeaseTime: ptr.To(300),
		}},
	}
	mod(&p.Spec.IPv4Config, &p.Spec)
	return p
}

// newVM is a valid new VMNetCfg on net1; each case breaks one thing.
func newVM(mod func(*v1alpha1.VirtualMachineNetworkConfigSpec)) *v1alpha1.VirtualMachineNetworkConfig {
	v := &v1alpha1.VirtualMachineNetworkConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: refuseNS, Name: "new-vm"},
		Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "new-vm", NetworkConfigs: []v1alpha1.NetworkConfig{
			{NetworkName: "refuse/net1", MACAddress: "02:00:00:00:00:99"},
		}},
	}
	mod(&v.Spec)
	return v
}

func addr(s string) *v1alpha1.IPv4Address { a := v1alpha1.IPv4Address(s); return &a }

func TestRefusals(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	for _, n := range []string{"net1", "net2", "net3"} {
		nad(t, refuseNS, n)
	}
	pool1 := refusePool1()
	create(t, pool1)
	pool1.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{"10.10.0.20": "02:00:00:00:00:01"}, Used: 1, Available: 89}
	if err := k8s.Status().Update(ctx, pool1); err != nil {
		t.Fatal(err)
	}
	waitCached(t, pool1, func(o client.Object) bool { return o.(*v1alpha1.IPPool).Status.IPv4 != nil })
	create(t, refuseVM1())

	// The valid bases must pass, or every refusal below proves nothing.
	t.Run("valid bases pass", func(t *testing.T) {
		for _, obj := range []client.Object{newPool(func(*v1alpha1.IPv4Config, *v1alpha1.IPPoolSpec) {}), newVM(func(*v1alpha1.VirtualMachineNetworkConfigSpec) {})} {
			if err := k8s.Create(ctx, obj, client.DryRunAll); err != nil {
				t.Errorf("valid %T refused: %v", obj, err)
			}
		}
	})

	type ipc = v1alpha1.IPv4Config
	type sp = v1alpha1.IPPoolSpec
	type vs = v1alpha1.VirtualMachineNetworkConfigSpec
	cases := []struct {
		name   string
		obj    client.Object
		op     string // create (default), update, delete
		field  string
		value  string
		schema bool // refused by the CRD's schema before our validating webhook
	}{
		// IPPool: network
		{name: "cidr /31", obj: newPool(func(c *ipc, _ *sp) { c.CIDR = "10.20.0.0/31" }), field: "spec.ipv4Config.cidr", value: "10.20.0.0/31"},
		{name: "cidr /32", obj: newPool(func(c *ipc, _ *sp) { c.CIDR = "10.20.0.2/32" }), field: "spec.ipv4Config.cidr", value: "10.20.0.2/32"},
		{name: "cidr overlaps service CIDR", obj: newPool(func(c *ipc, _ *sp) { c.CIDR = "10.43.0.0/24" }), field: "spec.ipv4Config.cidr", value: "10.43.0.0/24"},
		{name: "cidr overlaps pod CIDR", obj: newPool(func(c *ipc, _ *sp) { c.CIDR = "10.0.0.0/8" }), field: "spec.ipv4Config.cidr", value: "10.0.0.0/8"},
		{name: "cidr not IPv4", obj: newPool(func(c *ipc, _ *sp) { c.CIDR = "300.1.1.0/24" }), field: "spec.ipv4Config.cidr", schema: true},
		// A bare name is read as default/<name> (as Harvester does): no such NAD there.
		{name: "networkName without namespace names no NAD in default", obj: newPool(func(_ *ipc, s *sp) { s.NetworkName = "net3" }), field: "spec.networkName", value: "net3"},
		{name: "networkName not a name", obj: newPool(func(_ *ipc, s *sp) { s.NetworkName = "a/b/c" }), field: "spec.networkName", schema: true},
		{name: "no such NAD", obj: newPool(func(_ *ipc, s *sp) { s.NetworkName = "refuse/missing" }), field: "spec.networkName", value: "refuse/missing"},
		// IPPool: addresses
		{name: "start outside cidr", obj: newPool(func(c *ipc, _ *sp) { c.Pool.Start = "10.21.0.10" }), field: "spec.ipv4Config.pool.start", value: "10.21.0.10"},
		{name: "end outside cidr", obj: newPool(func(c *ipc, _ *sp) { c.Pool.End = "10.21.0.100" }), field: "spec.ipv4Config.pool.end", value: "10.21.0.100"},
		{name: "serverIP outside cidr", obj: newPool(func(c *ipc, _ *sp) { c.ServerIP = "192.168.7.2" }), field: "spec.ipv4Config.serverIP", value: "192.168.7.2"},
		{name: "router outside cidr", obj: newPool(func(c *ipc, _ *sp) { c.Router = "192.168.7.1" }), field: "spec.ipv4Config.router", value: "192.168.7.1"},
		{name: "serverIP is network address", obj: newPool(func(c *ipc, _ *sp) { c.ServerIP = "10.20.0.0" }), field: "spec.ipv4Config.serverIP", value: "10.20.0.0"},
		{name: "router is broadcast", obj: newPool(func(c *ipc, _ *sp) { c.Router = "10.20.0.255" }), field: "spec.ipv4Config.router", value: "10.20.0.255"},
		{name: "start is network address", obj: newPool(func(c *ipc, _ *sp) { c.Pool.Start = "10.20.0.0" }), field: "spec.ipv4Config.pool.start", value: "10.20.0.0"},
		{name: "end is broadcast", obj: newPool(func(c *ipc, _ *sp) { c.Pool.End = "10.20.0.255" }), field: "spec.ipv4Config.pool.end", value: "10.20.0.255"},
		{name: "start after end", obj: newPool(func(c *ipc, _ *sp) { c.Pool.Start, c.Pool.End = "10.20.0.100", "10.20.0.10" }), field: "spec.ipv4Config.pool.start", value: "10.20.0.100"},
		{name: "serverIP equals router", obj: newPool(func(c *ipc, _ *sp) { c.ServerIP = "10.20.0.1" }), field: "spec.ipv4Config.serverIP", value: "10.20.0.1"},
		{name: "router not an address", obj: newPool(func(c *ipc, _ *sp) { c.Router = "10.0.0.300" }), field: "spec.ipv4Config.router", schema: true},
		{name: "dns broadcast of cidr", obj: newPool(func(c *ipc, _ *sp) { c.DNS = []string{"10.20.0.255"} }), field: "spec.ipv4Config.dns[0]", value: "10.20.0.255"},
		{name: "dns unspecified", obj: newPool(func(c *ipc, _ *sp) { c.DNS = []string{"1.1.1.1", "0.0.0.0"} }), field: "spec.ipv4Config.dns[1]", value: "0.0.0.0"},
		{name: "dns multicast", obj: newPool(func(c *ipc, _ *sp) { c.DNS = []string{"224.0.0.1"} }), field: "spec.ipv4Config.dns[0]", value: "224.0.0.1"},
		// IPPool: options
		{name: "mtu too small", obj: newPool(func(c *ipc, _ *sp) { c.MTU = ptr.To(67) }), field: "spec.ipv4Config.mtu", schema: true},
		{name: "mtu too large", obj: newPool(func(c *ipc, _ *sp) { c.MTU = ptr.To(65536) }), field: "spec.ipv4Config.mtu", schema: true},
		{name: "route destination with host bits", obj: newPool(func(c *ipc, _ *sp) {
			c.Routes = []v1alpha1.Route{{Destination: "10.9.0.1/16", Gateway: "10.20.0.1"}}
		}), field: "spec.ipv4Config.routes[0].destination", value: "10.9.0.1/16"},
		{name: "route gateway outside cidr", obj: newPool(func(c *ipc, _ *sp) {
			c.Routes = []v1alpha1.Route{{Destination: "10.9.0.0/16", Gateway: "10.30.0.1"}}
		}), field: "spec.ipv4Config.routes[0].gateway", value: "10.30.0.1"},
		{name: "route destination not a network", obj: newPool(func(c *ipc, _ *sp) {
			c.Routes = []v1alpha1.Route{{Destination: "bogus", Gateway: "10.20.0.1"}}
		}), field: "spec.ipv4Config.routes[0].destination", schema: true},
		// IPPool: update and delete
		{name: "update excludes an allocated address", op: "update", obj: func() client.Object {
			p := refusePool1()
			p.Spec.IPv4Config.Pool.Exclude = append(p.Spec.IPv4Config.Pool.Exclude, "10.10.0.20")
			return p
		}(), field: "spec.ipv4Config.pool.exclude", value: "10.10.0.20"},
		{name: "delete while a VM uses the network", op: "delete", obj: refusePool1(), field: "spec.networkName", value: "refuse/net1"},
		// VMNetCfg
		{name: "mac malformed", obj: newVM(func(s *vs) { s.NetworkConfigs[0].MACAddress = "zz:00:00:00:00:01" }), field: "spec.networkConfigs[0].macAddress", schema: true},
		{name: "mac multicast", obj: newVM(func(s *vs) { s.NetworkConfigs[0].MACAddress = "01:00:5e:00:00:01" }), field: "spec.networkConfigs[0].macAddress", value: "01:00:5e:00:00:01"},
		{name: "mac all zero", obj: newVM(func(s *vs) { s.NetworkConfigs[0].MACAddress = "00:00:00:00:00:00" }), field: "spec.networkConfigs[0].macAddress", value: "00:00:00:00:00:00"},
		{name: "mac twice", obj: newVM(func(s *vs) {
			s.NetworkConfigs = append(s.NetworkConfigs, v1alpha1.NetworkConfig{NetworkName: "refuse/net1", MACAddress: "02-00-00-00-00-99"})
		}), field: "spec.networkConfigs[1].macAddress", value: "02-00-00-00-00-99"},
		{name: "network without pool", obj: newVM(func(s *vs) { s.NetworkConfigs[0].NetworkName = "refuse/net2" }), field: "spec.networkConfigs[0].networkName", value: "refuse/net2"},
		{name: "ipAddress outside range", obj: newVM(func(s *vs) { s.NetworkConfigs[0].IPAddress = addr("10.10.0.200") }), field: "spec.networkConfigs[0].ipAddress", value: "10.10.0.200"},
		{name: "ipAddress excluded", obj: newVM(func(s *vs) { s.NetworkConfigs[0].IPAddress = addr("10.10.0.50") }), field: "spec.networkConfigs[0].ipAddress", value: "10.10.0.50"},
		{name: "ipAddress is server", obj: newVM(func(s *vs) { s.NetworkConfigs[0].IPAddress = addr("10.10.0.2") }), field: "spec.networkConfigs[0].ipAddress", value: "10.10.0.2"},
		{name: "ipAddress is router", obj: newVM(func(s *vs) { s.NetworkConfigs[0].IPAddress = addr("10.10.0.1") }), field: "spec.networkConfigs[0].ipAddress", value: "10.10.0.1"},
		{name: "ipAddress malformed", obj: newVM(func(s *vs) { s.NetworkConfigs[0].IPAddress = addr("10.10.0.999") }), field: "spec.networkConfigs[0].ipAddress", schema: true},
		{name: "mac used by another VM on the network", obj: newVM(func(s *vs) { s.NetworkConfigs[0].MACAddress = "02:00:00:00:00:01" }), field: "spec.networkConfigs[0].macAddress", value: "02:00:00:00:00:01"},
		{name: "update to a multicast mac", op: "update", obj: func() client.Object {
			v := refuseVM1()
			v.Spec.NetworkConfigs[0].MACAddress = "03:00:00:00:00:01"
			return v
		}(), field: "spec.networkConfigs[0].macAddress", value: "03:00:00:00:00:01"},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d bad inputs", len(cases))
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
			case "delete":
				err = k8s.Delete(ctx, tc.obj)
			default:
				err = k8s.Create(ctx, tc.obj)
			}
			assertRefused(t, err, tc.field, tc.value, !tc.schema)
			t.Logf("refused: %v", err)
		})
	}

	// Nothing refused was stored.
	var pools v1alpha1.IPPoolList
	if err := k8s.List(ctx, &pools, client.InNamespace(refuseNS)); err != nil {
		t.Fatal(err)
	}
	if len(pools.Items) != 1 || pools.Items[0].Name != "pool1" || len(pools.Items[0].Spec.IPv4Config.Pool.Exclude) != 1 {
		t.Errorf("refused changes were stored: %+v", pools.Items)
	}
}
