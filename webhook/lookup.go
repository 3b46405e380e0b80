package webhook

import (
	"context"
	"fmt"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// Lookup answers what validation asks of the cluster. The webhook reads
// through the manager's cache (ClientLookup); tests and fuzzers that run
// without a server use Objects.
type Lookup interface {
	// NADExists reports whether the NetworkAttachmentDefinition exists.
	NADExists(ctx context.Context, namespace, name string) (bool, error)
	// IPPoolsForNetwork lists the IPPools (of any namespace) whose
	// spec.networkName is network.
	IPPoolsForNetwork(ctx context.Context, network string) ([]v1alpha1.IPPool, error)
	// VMNetCfgsForNetwork lists the VirtualMachineNetworkConfigs (of any
	// namespace) with a network config on network.
	VMNetCfgsForNetwork(ctx context.Context, network string) ([]v1alpha1.VirtualMachineNetworkConfig, error)
}

// ClientLookup reads through a controller-runtime reader, normally the
// manager's cache.
type ClientLookup struct {
	Reader client.Reader
}

// NADExists implements Lookup.
func (l ClientLookup) NADExists(ctx context.Context, namespace, name string) (bool, error) {
	var nad nadv1.NetworkAttachmentDefinition
	err := l.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &nad)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("get NetworkAttachmentDefinition %s/%s: %w", namespace, name, err)
	}
	return true, nil
}

// IPPoolsForNetwork implements Lookup.
func (l ClientLookup) IPPoolsForNetwork(ctx context.Context, network string) ([]v1alpha1.IPPool, error) {
	var list v1alpha1.IPPoolList
	if err := l.Reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list IPPools: %w", err)
	}
	return Objects{IPPools: list.Items}.IPPoolsForNetwork(ctx, network)
}

// VMNetCfgsForNetwork implements Lookup.
func (l ClientLookup) VMNetCfgsForNetwork(ctx context.Context, network string) ([]v1alpha1.VirtualMachineNetworkConfig, error) {
	var list v1alpha1.VirtualMachineNetworkConfigList
	if err := l.Reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list VirtualMachineNetworkConfigs: %w", err)
	}
	return Objects{VMNetCfgs: list.Items}.VMNetCfgsForNetwork(ctx, network)
}

// Objects is a Lookup over objects held in memory, for validating without
// a cluster.
type Objects struct {
	NADs      []string // namespace/name
	IPPools   []v1alpha1.IPPool
	VMNetCfgs []v1alpha1.VirtualMachineNetworkConfig
}

// NADExists implements Lookup.
func (o Objects) NADExists(_ context.Context, namespace, name string) (bool, error) {
	for _, n := range o.NADs {
		if n == namespace+"/"+name {
			return true, nil
		}
	}
	return false, nil
}

// IPPoolsForNetwork implements Lookup.
func (o Objects) IPPoolsForNetwork(_ context.Context, network string) ([]v1alpha1.IPPool, error) {
	var out []v1alpha1.IPPool
	for _, p := range o.IPPools {
		if p.Network() == network {
			out = append(out, p)
		}
	}
	return out, nil
}

// VMNetCfgsForNetwork implements Lookup.
func (o Objects) VMNetCfgsForNetwork(_ context.Context, network string) ([]v1alpha1.VirtualMachineNetworkConfig, error) {
	var out []v1alpha1.VirtualMachineNetworkConfig
	for _, v := range o.VMNetCfgs {
		for _, nc := range v.Spec.NetworkConfigs {
			if vmNetwork(nc.NetworkName, v.Namespace) == network {
				out = append(out, v)
				break
			}
		}
	}
	return out, nil
}
