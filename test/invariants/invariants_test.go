package invariants

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

func pool(allocated map[string]string, used, available int) v1alpha1.IPPool {
	return v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "net"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "default/net", IPv4Config: v1alpha1.IPv4Config{
			CIDR: "10.0.0.0/24", ServerIP: "10.0.0.1", Pool: v1alpha1.Pool{Start: "10.0.0.10", End: "10.0.0.19"},
		}},
		Status: v1alpha1.IPPoolStatus{IPv4: &v1alpha1.IPv4Status{Allocated: allocated, Used: used, Available: available}},
	}
}

func vmnc(name string, entries ...v1alpha1.NetworkConfigStatus) v1alpha1.VirtualMachineNetworkConfig {
	return v1alpha1.VirtualMachineNetworkConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Status:     v1alpha1.VirtualMachineNetworkConfigStatus{NetworkConfigs: entries},
	}
}

func deleting(v v1alpha1.VirtualMachineNetworkConfig) v1alpha1.VirtualMachineNetworkConfig {
	now := metav1.Now()
	v.DeletionTimestamp = &now
	return v
}

func alloc(ip, mac string) v1alpha1.NetworkConfigStatus {
	return v1alpha1.NetworkConfigStatus{AllocatedIPAddress: ip, MACAddress: mac, NetworkName: "default/net", State: v1alpha1.StateAllocated}
}

func TestEvaluate(t *testing.T) {
	cases := []struct {
		name  string
		pools []v1alpha1.IPPool
		cfgs  []v1alpha1.VirtualMachineNetworkConfig
		want  []string // kinds, in order
	}{
		{"consistent", []v1alpha1.IPPool{pool(map[string]string{"10.0.0.10": "aa:00:00:00:00:01"}, 1, 9)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", alloc("10.0.0.10", "AA:00:00:00:00:01"))}, nil},
		{"leak", []v1alpha1.IPPool{pool(map[string]string{"10.0.0.10": "aa:00:00:00:00:01"}, 1, 9)}, nil, []string{"leak"}},
		{"missing entry", []v1alpha1.IPPool{pool(nil, 0, 10)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", alloc("10.0.0.10", "aa:00:00:00:00:01"))}, []string{"missing-entry"}},
		{"mac with two addresses", []v1alpha1.IPPool{pool(map[string]string{"10.0.0.10": "aa:00:00:00:00:01", "10.0.0.11": "aa:00:00:00:00:01"}, 2, 8)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", alloc("10.0.0.10", "aa:00:00:00:00:01"))}, []string{"mac-two-addresses", "mismatch"}},
		{"address recorded by two VMs", []v1alpha1.IPPool{pool(map[string]string{"10.0.0.10": "aa:00:00:00:00:01"}, 1, 9)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", alloc("10.0.0.10", "aa:00:00:00:00:01")), vmnc("b", alloc("10.0.0.10", "aa:00:00:00:00:02"))},
			[]string{"address-two-macs", "missing-entry"}},
		{"bad counts", []v1alpha1.IPPool{pool(map[string]string{"10.0.0.10": "aa:00:00:00:00:01"}, 2, 9)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", alloc("10.0.0.10", "aa:00:00:00:00:01"))}, []string{"counts"}},
		{"bad available", []v1alpha1.IPPool{pool(map[string]string{"10.0.0.10": "aa:00:00:00:00:01"}, 1, 10)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", alloc("10.0.0.10", "aa:00:00:00:00:01"))}, []string{"counts"}},
		{"address of a VM being deleted is not a claim", []v1alpha1.IPPool{pool(map[string]string{"10.0.0.10": "aa:00:00:00:00:02"}, 1, 9)},
			[]v1alpha1.VirtualMachineNetworkConfig{deleting(vmnc("a", alloc("10.0.0.10", "aa:00:00:00:00:01"))), vmnc("b", alloc("10.0.0.10", "aa:00:00:00:00:02"))},
			[]string{"missing-entry"}}, // a's entry is released already: no address-two-macs
		{"pending entries are not claims", []v1alpha1.IPPool{pool(nil, 0, 10)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", v1alpha1.NetworkConfigStatus{MACAddress: "aa:00:00:00:00:01", NetworkName: "default/net", State: v1alpha1.StatePending})}, nil},
	}
	for _, tc := range cases {
		got := Evaluate(tc.pools, tc.cfgs)
		var kinds []string
		for _, v := range got {
			kinds = append(kinds, v.Kind)
		}
		if strings.Join(kinds, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: violations %v; want kinds %v", tc.name, got, tc.want)
		}
	}
}
