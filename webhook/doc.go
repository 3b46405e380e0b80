// Package webhook is the admission webhook of vm-dhcp: it fills defaults
// into new IPPools and refuses IPPools and VirtualMachineNetworkConfigs that
// the controller or the DHCP agent could not serve, each refusal naming the
// field and the value at fault. The checks are plain functions
// (ValidateIPPool, ValidateVMNetCfg, DefaultIPPool) so they run without a
// server too.
package webhook

// What the webhook reads through the manager's cache.
// +kubebuilder:rbac:groups=network.harvesterhci.io,resources=ippools;virtualmachinenetworkconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups=k8s.cni.cncf.io,resources=network-attachment-definitions,verbs=get;list;watch
