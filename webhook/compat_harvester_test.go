package webhook_test

import (
	"context"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// TestSameMACOnTwoNetworksAdmitted: Harvester's CRD and webhook admit
// a VM whose two NICs carry the same MAC on two different networks (its
// IPAM is one per network, keyed by MAC, so both are served). The migration
// guide says vm-dhcp refuses "a MAC twice on one network"; the webhook
// refuses a MAC twice in one VMNetCfg whatever the networks.
func TestSameMACOnTwoNetworksAdmitted(t *testing.T) {
	needCluster(t)
	const ns = "harvester-mac"
	for i, n := range []string{"neta", "netb"} {
		nad(t, ns, n)
		cidr := []string{"10.71.0.0/24", "10.72.0.0/24"}[i]
		p := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: ns + "/" + n, IPv4Config: v1alpha1.IPv4Config{CIDR: cidr}}}
		p.Namespace, p.Name = ns, n
		create(t, p)
	}
	vm := &v1alpha1.VirtualMachineNetworkConfig{Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "vm",
		NetworkConfigs: []v1alpha1.NetworkConfig{
			{NetworkName: ns + "/neta", MACAddress: "02:00:00:00:71:01"},
			{NetworkName: ns + "/netb", MACAddress: "02:00:00:00:71:01"},
		}}}
	vm.Namespace, vm.Name = ns, "vm"
	if err := k8s.Create(context.Background(), vm, client.DryRunAll); err != nil {
		t.Fatalf("refused a VMNetCfg Harvester admits and serves (same MAC on two networks): %v", err)
	}
}

// TestExcludeCIDRAdmittedWithWarning: Harvester admits an exclude
// entry that is a CIDR (items are plain strings; its controller revokes the
// key as a no-op and serves the pool). vm-dhcp's schema refuses it, so the
// manifest does not apply unchanged; it could be admitted with a warning
// ("not an address: has no effect") as entries outside the range are.
func TestExcludeCIDRAdmittedWithWarning(t *testing.T) {
	needCluster(t)
	const ns = "harvester-excl"
	nad(t, ns, "net")
	p := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: ns + "/net", IPv4Config: v1alpha1.IPv4Config{
		CIDR: "10.73.0.0/24", Pool: v1alpha1.Pool{Exclude: []v1alpha1.IPv4Address{"10.73.0.0/28"}}}}}
	p.Namespace, p.Name = ns, "pool"
	if err := k8s.Create(context.Background(), p, client.DryRunAll); err != nil {
		t.Fatalf("refused an IPPool Harvester admits and serves (exclude 10.73.0.0/28): %v", err)
	}
}

// TestMappedIPAddressAdmitted: Harvester's CRD (format ipv4, no length
// limit) admits a requested ipAddress in IPv4-mapped form and its IPAM
// reads the IPv4 address: the same manifest applies here.
func TestMappedIPAddressAdmitted(t *testing.T) {
	needCluster(t)
	const ns = "harvester-mapped"
	nad(t, ns, "net")
	p := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{NetworkName: ns + "/net", IPv4Config: v1alpha1.IPv4Config{CIDR: "10.74.0.0/24"}}}
	p.Namespace, p.Name = ns, "pool"
	create(t, p)
	ip := v1alpha1.IPv4Address("::ffff:10.74.0.15")
	vm := &v1alpha1.VirtualMachineNetworkConfig{Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: "vm",
		NetworkConfigs: []v1alpha1.NetworkConfig{{NetworkName: ns + "/net", MACAddress: "02:00:00:00:74:01", IPAddress: &ip}}}}
	vm.Namespace, vm.Name = ns, "vm"
	if err := k8s.Create(context.Background(), vm, client.DryRunAll); err != nil {
		t.Fatalf("refused a VMNetCfg Harvester admits and serves (ipAddress %s): %v", ip, err)
	}
}
