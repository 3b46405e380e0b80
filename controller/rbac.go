package controller

// RBAC of the controller, turned into charts/vm-dhcp-controller/generated/controller
// by `make generate`. Pods, ConfigMaps and leader-election Leases live only
// in the controller's own namespace, so they get a namespaced Role (the
// chart sets the real namespace); everything else is cluster-wide.
// virtualmachines/finalizers: the VMNetCfg's owner reference blocks the
// VM's deletion, which the OwnerReferencesPermissionEnforcement plugin checks.

// +kubebuilder:rbac:groups=network.harvesterhci.io,resources=ippools,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=network.harvesterhci.io,resources=ippools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=network.harvesterhci.io,resources=ippools/finalizers,verbs=update
// +kubebuilder:rbac:groups=k8s.cni.cncf.io,resources=network-attachment-definitions,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=vm-dhcp-system,resources=pods;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=vm-dhcp-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=network.harvesterhci.io,resources=virtualmachinenetworkconfigs,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=network.harvesterhci.io,resources=virtualmachinenetworkconfigs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=network.harvesterhci.io,resources=virtualmachinenetworkconfigs/finalizers,verbs=update
// +kubebuilder:rbac:groups=kubevirt.io,resources=virtualmachines,verbs=get;list;watch
// +kubebuilder:rbac:groups=kubevirt.io,resources=virtualmachines/finalizers,verbs=update
