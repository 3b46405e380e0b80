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

// pool6 is pool with an IPv6 half (allocated6 given) and, when v4 is false,
// without its IPv4 half.
func pool6(v4 bool, allocated6 map[string]string, used6 int) v1alpha1.IPPool {
	p := pool(nil, 0, 10)
	if !v4 {
		p.Spec.IPv4Config, p.Status.IPv4 = v1alpha1.IPv4Config{}, nil
	}
	p.Spec.IPv6Config = &v1alpha1.IPv6Config{CIDR: "fd00::/64", ServerIP: "fd00::2", Pool: v1alpha1.IPv6Pool{Start: "fd00::10", End: "fd00::ff"}}
	p.Status.IPv6 = &v1alpha1.IPv6Status{Allocated: allocated6, Used: used6}
	return p
}

func alloc6(ip, mac string) v1alpha1.NetworkConfigStatus {
	s := alloc("", mac)
	s.AllocatedIPv6Address = ip
	return s
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
		{"IPv6-only: consistent", []v1alpha1.IPPool{pool6(false, map[string]string{"fd00::10": "aa:00:00:00:00:01", "fd00::2": "RESERVED"}, 1)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", alloc6("fd00::10", "aa:00:00:00:00:01"))}, nil},
		{"IPv6-only: leak and bad count", []v1alpha1.IPPool{pool6(false, map[string]string{"fd00::10": "aa:00:00:00:00:01", "fd00::11": "aa:00:00:00:00:02"}, 1)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", alloc6("fd00::10", "aa:00:00:00:00:01"))}, []string{"counts", "leak"}},
		{"IPv6-only: mismatch", []v1alpha1.IPPool{pool6(false, map[string]string{"fd00::10": "aa:00:00:00:00:01"}, 1)},
			[]v1alpha1.VirtualMachineNetworkConfig{vmnc("a", alloc6("fd00::11", "aa:00:00:00:00:01"))}, []string{"mismatch"}},
		{"dual stack: IPv6 address recorded by two VMs", []v1alpha1.IPPool{func() v1alpha1.IPPool {
			p := pool6(true, map[string]string{"fd00::10": "aa:00:00:00:00:01"}, 1)
			p.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{"10.0.0.10": "aa:00:00:00:00:01", "10.0.0.11": "aa:00:00:00:00:02"}, Used: 2, Available: 8}
			return p
		}()}, []v1alpha1.VirtualMachineNetworkConfig{
			vmnc("a", func() v1alpha1.NetworkConfigStatus {
				s := alloc6("fd00::10", "aa:00:00:00:00:01")
				s.AllocatedIPAddress = "10.0.0.10"
				return s
			}()),
			vmnc("b", func() v1alpha1.NetworkConfigStatus {
				s := alloc6("fd00::10", "aa:00:00:00:00:02")
				s.AllocatedIPAddress = "10.0.0.11"
				return s
			}()),
		}, []string{"address-two-macs", "missing-entry"}},
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
