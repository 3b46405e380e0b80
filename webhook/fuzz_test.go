package webhook

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// checkRefusals asserts every refusal carries a field and a reason, and that
// its message names the field.
func checkRefusals(t *testing.T, es FieldErrors) {
	t.Helper()
	for _, e := range es {
		if e.Field == "" || e.Reason == "" || !strings.HasPrefix(e.Error(), e.Field+": ") {
			t.Fatalf("refusal without field or reason: %#v", e)
		}
	}
}

// FuzzValidateIPPool throws arbitrary pools at the defaulter and the
// validator. They must never panic, every refusal must name its field, and a
// pool the validator accepts must load into the IPAM the controller uses.
func FuzzValidateIPPool(f *testing.F) {
	f.Add("192.168.100.0/24", "192.168.100.2", "192.168.100.1", "192.168.100.101", "192.168.100.200", "192.168.100.151", "1.1.1.1", "default/example", 300, "192.168.100.120")
	f.Add("10.0.0.0/30", "", "", "", "", "", "", "a/b", 60, "")
	f.Add("10.0.0.5/8", "10.0.0.0", "10.255.255.255", "10.0.0.9", "10.0.0.1", "10.0.0.1", "224.0.0.1", "a//b", -5, "10.0.0.3")
	f.Add("0.0.0.0/0", "", "1.2.3.4", "", "", "::1", "0.0.0.0", "x", 1<<40, "zz")
	f.Add("1.2.3.4/32", "1.2.3.4", "1.2.3.4", "1.2.3.4", "1.2.3.4", "1.2.3.4", "1.2.3.4", "/", 0, "1.2.3.4")
	lk := Objects{NADs: []string{"default/example", "a/b"}, IPPools: []v1alpha1.IPPool{*harvesterPool()},
		VMNetCfgs: []v1alpha1.VirtualMachineNetworkConfig{*harvesterVM()}}
	opts := Options{}
	f.Fuzz(func(t *testing.T, cidr, server, router, start, end, exclude, dns, network string, lease int, allocated string) {
		pool := &v1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Namespace: "fuzz", Name: "pool"},
			Spec: v1alpha1.IPPoolSpec{NetworkName: network, IPv4Config: v1alpha1.IPv4Config{
				CIDR: cidr, ServerIP: v1alpha1.IPv4Address(server), Router: v1alpha1.IPv4Address(router),
				Pool:      v1alpha1.Pool{Start: v1alpha1.IPv4Address(start), End: v1alpha1.IPv4Address(end)},
				LeaseTime: &lease,
			}},
		}
		if exclude != "" {
			pool.Spec.IPv4Config.Pool.Exclude = []v1alpha1.IPv4Address{v1alpha1.IPv4Address(exclude), v1alpha1.IPv4Address(exclude)}[:1+len(exclude)%2]
		}
		if dns != "" {
			pool.Spec.IPv4Config.DNS = []string{dns}
		}
		if allocated != "" {
			pool.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{allocated: "02:00:00:00:00:01"}}
		}
		DefaultIPPool(pool)
		ctx := context.Background()
		es, err := ValidateIPPool(ctx, lk, opts, admissionv1.Create, pool, nil)
		if err != nil {
			t.Fatalf("Objects lookup cannot fail, got %v", err)
		}
		checkRefusals(t, es)
		if len(ValidateIPPoolSpec(pool, opts)) == 0 {
			if _, err := ipam.New(ipamConfig(pool)); err != nil {
				t.Fatalf("validator accepted a pool the IPAM refuses: %v (%+v)", err, pool.Spec.IPv4Config)
			}
		}
		upd := pool.DeepCopy()
		upd.Spec.IPv4Config.Pool.Exclude = append(upd.Spec.IPv4Config.Pool.Exclude, v1alpha1.IPv4Address(allocated))
		es, _ = ValidateIPPool(ctx, lk, opts, admissionv1.Update, upd, pool)
		checkRefusals(t, es)
		es, _ = ValidateIPPool(ctx, lk, opts, admissionv1.Delete, pool, nil)
		checkRefusals(t, es)

		// The same strings as a VM's NIC on the pool's network.
		lk2 := lk
		lk2.IPPools = append(lk2.IPPools[:1:1], *pool)
		ip := v1alpha1.IPv4Address(allocated)
		vm := &v1alpha1.VirtualMachineNetworkConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: "fuzz", Name: "vm"},
			Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: server, NetworkConfigs: []v1alpha1.NetworkConfig{
				{NetworkName: network, MACAddress: exclude, IPAddress: &ip},
				{NetworkName: "default/example", MACAddress: dns},
			}},
		}
		es, err = ValidateVMNetCfg(ctx, lk2, admissionv1.Create, vm, nil)
		if err != nil {
			t.Fatalf("Objects lookup cannot fail, got %v", err)
		}
		checkRefusals(t, es)
	})
}
