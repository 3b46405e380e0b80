package webhook

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

func harvesterPool() *v1alpha1.IPPool {
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "example"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "default/example", IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "192.168.100.2", CIDR: "192.168.100.0/24",
			Pool: v1alpha1.Pool{Start: "192.168.100.101", End: "192.168.100.200",
				Exclude: []v1alpha1.IPv4Address{"192.168.100.151", "192.168.100.187"}},
			Router: "192.168.100.1", DNS: []string{"1.1.1.1"},
			DomainName: ptr.To("example.com"), DomainSearch: []string{"example.com"},
			NTP: []string{"pool.ntp.org"}, LeaseTime: ptr.To(300),
		}},
	}
}

func harvesterVM() *v1alpha1.VirtualMachineNetworkConfig {
	return &v1alpha1.VirtualMachineNetworkConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "test-vm"},
		Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "test-vm", NetworkConfigs: []v1alpha1.NetworkConfig{
			{MACAddress: "22:37:37:82:93:7d", NetworkName: "default/example"},
		}},
	}
}

func TestHarvesterExamplesOffline(t *testing.T) {
	ctx := context.Background()
	lk := Objects{NADs: []string{"default/example"}}
	es, err := ValidateIPPool(ctx, lk, Options{}, admissionv1.Create, harvesterPool(), nil)
	if err != nil || len(es) > 0 {
		t.Fatalf("Harvester's IPPool refused: %v %v", es, err)
	}
	lk.IPPools = []v1alpha1.IPPool{*harvesterPool()}
	es, err = ValidateVMNetCfg(ctx, lk, admissionv1.Create, harvesterVM(), nil)
	if err != nil || len(es) > 0 {
		t.Fatalf("Harvester's VMNetCfg refused: %v %v", es, err)
	}
	// The same pool again (another name) is admitted, as Harvester admits
	// it, with a warning that it stays unregistered.
	other := harvesterPool()
	other.Name = "other"
	es, _ = ValidateIPPool(ctx, lk, Options{}, admissionv1.Create, other, nil)
	ws, _ := IPPoolWarnings(ctx, lk, admissionv1.Create, other, nil)
	if len(es) > 0 || !strings.Contains(strings.Join(ws, "; "), "spec.networkName: default/example is already served by IPPool default/example") {
		t.Errorf("second pool on the network: refusals %q, warnings %q", es.Error(), ws)
	}
}

func TestDefaultIPPoolFillsOnlyMissing(t *testing.T) {
	p := harvesterPool()
	if filled := DefaultIPPool(p); len(filled) != 0 {
		t.Errorf("filled %v on a complete pool", filled)
	}
	if p.Spec.IPv4Config.ServerIP != "192.168.100.2" || p.Spec.IPv4Config.Pool.Start != "192.168.100.101" {
		t.Errorf("changed a set field: %+v", p.Spec.IPv4Config)
	}

	p.Spec.IPv4Config.ServerIP, p.Spec.IPv4Config.Pool.Start, p.Spec.IPv4Config.Pool.End = "", "", ""
	p.Spec.IPv4Config.CIDR = "192.168.100.77/30" // host bits are tolerated, as in Harvester
	p.Spec.IPv4Config.Router = "192.168.100.77"
	p.Spec.IPv4Config.Pool.Exclude = nil
	filled := DefaultIPPool(p)
	c := p.Spec.IPv4Config
	if len(filled) != 3 || c.Pool.Start != "192.168.100.77" || c.Pool.End != "192.168.100.78" || c.ServerIP != "192.168.100.78" {
		t.Errorf("filled %v: start=%s end=%s server=%s; want .77 .78 .78", filled, c.Pool.Start, c.Pool.End, c.ServerIP)
	}

	// No host left for the server: nothing invented.
	p.Spec.IPv4Config.ServerIP = ""
	p.Spec.IPv4Config.Pool.Exclude = []v1alpha1.IPv4Address{"192.168.100.78"}
	if filled := DefaultIPPool(p); len(filled) != 0 || p.Spec.IPv4Config.ServerIP != "" {
		t.Errorf("invented a server IP %q", p.Spec.IPv4Config.ServerIP)
	}
}

func TestStrandedAllocations(t *testing.T) {
	old := harvesterPool()
	old.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{
		"192.168.100.120": "22:37:37:82:93:7d",
		"192.168.100.151": ipam.MarkExcluded,
		// An entry the old spec could not hold either: not this update's fault.
		"192.168.100.2": "22:37:37:82:93:7e",
	}}
	upd := old.DeepCopy()
	upd.Spec.IPv4Config.Pool.Exclude = append(upd.Spec.IPv4Config.Pool.Exclude, "192.168.100.120", "192.168.100.121")
	es, _ := ValidateIPPool(context.Background(), Objects{}, Options{}, admissionv1.Update, upd, old)
	if len(es) != 1 || es[0].Field != "spec.ipv4Config.pool.exclude" || es[0].Value != "192.168.100.120" {
		t.Fatalf("got %v; want one refusal of exclude 192.168.100.120", es)
	}
	upd.Spec.Paused = ptr.To(true)
	if es, _ := ValidateIPPool(context.Background(), Objects{}, Options{}, admissionv1.Update, upd, old); len(es) != 0 {
		t.Errorf("paused pool refused: %v", es)
	}
}

func TestValidateNeverNilFields(t *testing.T) {
	es, err := ValidateIPPool(context.Background(), Objects{}, Options{}, admissionv1.Create, &v1alpha1.IPPool{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"spec.networkName", "spec.ipv4Config.cidr", "spec.ipv4Config.serverIP", "spec.ipv4Config.pool.start", "spec.ipv4Config.pool.end"} {
		if !strings.Contains(es.Error(), want+":") {
			t.Errorf("empty pool: %q does not name %s", es.Error(), want)
		}
	}
	es, _ = ValidateVMNetCfg(context.Background(), Objects{}, admissionv1.Create, &v1alpha1.VirtualMachineNetworkConfig{}, nil)
	if !strings.Contains(es.Error(), "spec.vmName: is required") {
		t.Errorf("empty VMNetCfg: %q", es.Error())
	}
}

// A pool or VMNetCfg stored before the webhook existed may be invalid; the
// controller must still be able to add and remove its finalizers.
func TestMetadataOnlyUpdatesPass(t *testing.T) {
	ctx := context.Background()
	old := harvesterPool()
	old.Spec.IPv4Config.MTU = ptr.To(20) // invalid today
	upd := old.DeepCopy()
	upd.Finalizers = []string{"network.harvesterhci.io/ippool-controller"}
	if es, _ := ValidateIPPool(ctx, Objects{}, Options{}, admissionv1.Update, upd, old); len(es) != 0 {
		t.Errorf("finalizer update of a stored invalid pool refused: %v", es)
	}
	// Ratcheting (issue 14): a spec change that keeps the stored violation
	// as it was passes (pausing a migrated pool must); one that brings a
	// new violation is refused for that one only.
	upd.Spec.IPv4Config.DNS = []string{"8.8.8.8"}
	upd.Spec.Paused = ptr.To(true)
	if es, _ := ValidateIPPool(ctx, Objects{}, Options{}, admissionv1.Update, upd, old); len(es) != 0 {
		t.Errorf("pausing a stored invalid pool refused: %v", es)
	}
	// Ratcheting keeps the stranding check: an exclude that takes an
	// allocated address is refused, whatever the stored violations.
	strand := upd.DeepCopy()
	strand.Spec.Paused = nil
	strandOld := old.DeepCopy()
	strandOld.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: map[string]string{"192.168.100.120": "22:37:37:82:93:7d"}}
	strand.Spec.IPv4Config.Pool.Exclude = append(strand.Spec.IPv4Config.Pool.Exclude, "192.168.100.120")
	if es, _ := ValidateIPPool(ctx, Objects{}, Options{}, admissionv1.Update, strand, strandOld); len(es) != 1 || es[0].Value != "192.168.100.120" {
		t.Errorf("exclude of an allocated address in a stored invalid pool: got %v", es)
	}
	upd.Spec.IPv4Config.MTU = ptr.To(30)
	upd.Spec.IPv4Config.DNS = []string{"224.0.0.1", "8.8.8.8"}
	es, _ := ValidateIPPool(ctx, Objects{}, Options{}, admissionv1.Update, upd, old)
	if len(es) != 2 || !strings.Contains(es.Error(), "spec.ipv4Config.mtu: 30 is outside 68-65535") ||
		!strings.Contains(es.Error(), "spec.ipv4Config.dns[0]: 224.0.0.1 is not a unicast address") {
		t.Errorf("spec change adding violations to an invalid pool: got %q", es.Error())
	}

	oldVM := harvesterVM()
	oldVM.Spec.NetworkConfigs[0].MACAddress = "01:00:5e:00:00:01" // multicast, stored before the webhook
	updVM := oldVM.DeepCopy()
	updVM.Finalizers = []string{"x"}
	if es, _ := ValidateVMNetCfg(ctx, Objects{}, admissionv1.Update, updVM, oldVM); len(es) != 0 {
		t.Errorf("finalizer update of a stored invalid VMNetCfg refused: %v", es)
	}
	updVM.Spec.Paused = ptr.To(true)
	if es, _ := ValidateVMNetCfg(ctx, Objects{}, admissionv1.Update, updVM, oldVM); len(es) != 0 {
		t.Errorf("pausing a stored invalid VMNetCfg refused: %v", es)
	}
	updVM.Spec.NetworkConfigs = append(updVM.Spec.NetworkConfigs, v1alpha1.NetworkConfig{MACAddress: "03:00:00:00:00:01", NetworkName: "default/example"})
	if es, _ := ValidateVMNetCfg(ctx, Objects{}, admissionv1.Update, updVM, oldVM); len(es) != 1 || !strings.Contains(es.Error(), "spec.networkConfigs[1].macAddress: 03:00:00:00:00:01 is a multicast MAC address") {
		t.Errorf("spec change adding a violation to an invalid VMNetCfg: got %q", es.Error())
	}
}
