// Package v1alpha1 holds the network.harvesterhci.io/v1alpha1 API: IPPool and
// VirtualMachineNetworkConfig, wire-compatible with Harvester's managed DHCP
// add-on so that its manifests apply unchanged.
//
// +kubebuilder:object:generate=true
// +groupName=network.harvesterhci.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "network.harvesterhci.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
