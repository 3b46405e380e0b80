package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Conditions of a VirtualMachineNetworkConfig.
const (
	// Allocated: every network config has an address.
	Allocated ConditionType = "Allocated"
	// Disabled: the object is paused.
	Disabled ConditionType = "Disabled"
	// InSynced: status matches the spec.
	InSynced ConditionType = "InSynced"
)

// NetworkConfigState is the state of one network config of a VM.
type NetworkConfigState string

// States of a network config.
const (
	StateAllocated NetworkConfigState = "Allocated"
	StatePending   NetworkConfigState = "Pending"
	StateStale     NetworkConfigState = "Stale"
)

// VirtualMachineNetworkConfig lists the NICs of one VM that get addresses
// from IPPools.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmnetcfg;vmnetcfgs,scope=Namespaced
// +kubebuilder:printcolumn:name="VMNAME",type=string,JSONPath=`.spec.vmName`
// +kubebuilder:printcolumn:name="ALLOCATED",type=string,JSONPath=`.status.conditions[?(@.type=='Allocated')].status`
// +kubebuilder:printcolumn:name="DISABLED",type=string,JSONPath=`.status.conditions[?(@.type=='Disabled')].status`
// +kubebuilder:printcolumn:name="INSYNCED",type=string,JSONPath=`.status.conditions[?(@.type=='InSynced')].status`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachineNetworkConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineNetworkConfigSpec   `json:"spec,omitempty"`
	Status VirtualMachineNetworkConfigStatus `json:"status,omitempty"`
}

// VirtualMachineNetworkConfigSpec lists a VM's NICs on DHCP-managed networks.
type VirtualMachineNetworkConfigSpec struct {
	// VMName is the name of the VirtualMachine in the same namespace.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.vmName is immutable"
	VMName string `json:"vmName"`

	// NetworkConfigs are the VM's NICs, one per network.
	// +optional
	// +kubebuilder:validation:MaxItems=4
	NetworkConfigs []NetworkConfig `json:"networkConfigs,omitempty"`

	// Paused releases the addresses from the IPAM cache and keeps them recorded.
	// +optional
	Paused *bool `json:"paused,omitempty"`
}

// MaxNetworkConfigs is the most NICs one VirtualMachineNetworkConfig holds
// (the MaxItems of spec.networkConfigs, kept as Harvester has it so that
// every object stays valid for both controllers).
const MaxNetworkConfigs = 4

// NetworkConfig is one NIC of a VM.
type NetworkConfig struct {
	// NetworkName is the NetworkAttachmentDefinition, as namespace/name.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:MinLength=1
	NetworkName string `json:"networkName"`

	// MACAddress of the NIC, e.g. 22:37:37:82:93:7d.
	// +kubebuilder:validation:MaxLength=17
	// +kubebuilder:validation:Pattern=`^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$`
	MACAddress string `json:"macAddress"`

	// IPAddress asks for this address; empty means any free one. An
	// IPv4-mapped form (::ffff:192.168.100.15, 22 characters at most) is
	// admitted, as by Harvester, and read as its IPv4 address.
	// +optional
	// +kubebuilder:validation:Format=ipv4
	// +kubebuilder:validation:MaxLength=22
	IPAddress *IPv4Address `json:"ipAddress,omitempty"`

	// IPv6Address asks for this IPv6 address in a dual-stack pool; empty
	// means any free one.
	// +optional
	IPv6Address *IPv6Address `json:"ipv6Address,omitempty"`
}

// VirtualMachineNetworkConfigStatus reports the address of each NIC.
type VirtualMachineNetworkConfigStatus struct {
	// +optional
	NetworkConfigs []NetworkConfigStatus `json:"networkConfigs,omitempty"`
	// +optional
	Conditions []Condition `json:"conditions,omitempty"`
}

// NetworkConfigStatus is the allocation of one NIC.
type NetworkConfigStatus struct {
	AllocatedIPAddress string             `json:"allocatedIPAddress,omitempty"`
	MACAddress         string             `json:"macAddress,omitempty"`
	NetworkName        string             `json:"networkName,omitempty"`
	State              NetworkConfigState `json:"state,omitempty"`

	// AllocatedIPv6Address is the NIC's address in the pool's IPv6 half.
	// +optional
	AllocatedIPv6Address string `json:"allocatedIPv6Address,omitempty"`
}

// +kubebuilder:object:root=true

// VirtualMachineNetworkConfigList is a list of VirtualMachineNetworkConfigs.
type VirtualMachineNetworkConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineNetworkConfig `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachineNetworkConfig{}, &VirtualMachineNetworkConfigList{})
}

// IsPaused reports whether spec.paused is set and true.
func (v *VirtualMachineNetworkConfig) IsPaused() bool { return v.Spec.Paused != nil && *v.Spec.Paused }
