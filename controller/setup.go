package controller

import (
	"context"
	"fmt"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// Field indexes of the manager's cache.
const (
	indexPoolByNetwork     = "spec.networkName"
	indexVMNetCfgByNetwork = "vmnetcfg.networks"
	indexVMByNetwork       = "vm.multusNetworks"
)

// Options configure the controllers.
type Options struct {
	Agent AgentOptions
	// Metrics may be nil (no metrics).
	Metrics *Metrics
	// NodeGracePeriod: how long an agent's node may be NotReady before the
	// agent is recreated. Default 2 minutes.
	NodeGracePeriod time.Duration
	// VMNetCfgWorkers is how many VMNetCfgs are reconciled at once. Many
	// workers wait on the same pool write, which is what batches them.
	VMNetCfgWorkers int
	// OrphanSweepInterval is how often allocations whose VMNetCfg is gone
	// are looked for and released. Default 15 seconds.
	OrphanSweepInterval time.Duration
	// SkipNameValidation allows several managers in one process (tests).
	SkipNameValidation bool
}

// CacheOptions restricts the cache to what the controller may see: pods and
// ConfigMaps only in its own namespace (a namespaced Role), agent pods only.
func CacheOptions(agentNamespace string) cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:       {Namespaces: map[string]cache.Config{agentNamespace: {}}},
		&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{agentNamespace: {}}},
	}}
}

// Setup adds the store, the three reconcilers and the debug endpoints to mgr.
func Setup(mgr ctrl.Manager, o Options) (*PoolStore, error) {
	if o.NodeGracePeriod == 0 {
		o.NodeGracePeriod = 2 * time.Minute
	}
	if o.VMNetCfgWorkers == 0 {
		o.VMNetCfgWorkers = 64
	}
	if err := setupIndexes(mgr); err != nil {
		return nil, err
	}
	store := NewPoolStore(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetLogger().WithName("poolstore"))
	rec := mgr.GetEventRecorder("vm-dhcp-controller")
	store.Recorder, store.Metrics = rec, o.Metrics
	// The VMNetCfgs of a pool whose rebuild dropped allocations are woken
	// to be allocated again. Sent from a goroutine: the pool's writer must
	// never wait on the VMNetCfg controller (which runs only on the leader).
	dropped := make(chan event.GenericEvent, 64)
	store.OnDropped = func(key types.NamespacedName, network string, _ []ipam.Conflict) {
		pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
			Spec: v1alpha1.IPPoolSpec{NetworkName: network}}
		go func() { dropped <- event.GenericEvent{Object: pool} }()
	}
	if err := mgr.Add(store); err != nil {
		return nil, fmt.Errorf("add pool store: %w", err)
	}
	skip := &o.SkipNameValidation

	pools := &IPPoolReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Store: store, Recorder: rec,
		Agent: o.Agent, Metrics: o.Metrics, NodeGracePeriod: o.NodeGracePeriod}
	agentObj := handler.EnqueueRequestsFromMapFunc(mapAgentObject(o.Agent.Namespace))
	err := ctrl.NewControllerManagedBy(mgr).Named("ippool").
		For(&v1alpha1.IPPool{}, builder.WithPredicates(specOrLifecycleChanged())).
		Watches(&v1alpha1.IPPool{}, handler.EnqueueRequestsFromMapFunc(mapPoolSiblings(mgr.GetClient())),
			builder.WithPredicates(lifecycleChanged())).
		Watches(&corev1.Pod{}, agentObj).
		Watches(&corev1.ConfigMap{}, agentObj).
		Watches(&nadv1.NetworkAttachmentDefinition{}, handler.EnqueueRequestsFromMapFunc(mapNAD(mgr.GetClient()))).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(mapNode(mgr.GetClient(), o.Agent.Namespace))).
		WithOptions(controller.Options{SkipNameValidation: skip}).
		Complete(pools)
	if err != nil {
		return nil, fmt.Errorf("set up ippool controller: %w", err)
	}

	vncs := &VMNetCfgReconciler{Client: mgr.GetClient(), Store: store, Recorder: rec, Metrics: o.Metrics}
	err = ctrl.NewControllerManagedBy(mgr).Named("vmnetcfg").
		For(&v1alpha1.VirtualMachineNetworkConfig{}, builder.WithPredicates(specOrLifecycleChanged())).
		Watches(&v1alpha1.IPPool{}, handler.EnqueueRequestsFromMapFunc(mapPoolToVMNetCfgs(mgr.GetClient())),
			builder.WithPredicates(poolMayFreeAddresses())).
		WatchesRawSource(source.Channel(dropped, handler.EnqueueRequestsFromMapFunc(mapPoolToAllVMNetCfgs(mgr.GetClient())))).
		WithOptions(controller.Options{MaxConcurrentReconciles: o.VMNetCfgWorkers, SkipNameValidation: skip}).
		Complete(vncs)
	if err != nil {
		return nil, fmt.Errorf("set up vmnetcfg controller: %w", err)
	}

	vms := &VMReconciler{Client: mgr.GetClient(), Recorder: rec}
	err = ctrl.NewControllerManagedBy(mgr).Named("virtualmachine").
		For(&kubevirtv1.VirtualMachine{}).
		Owns(&v1alpha1.VirtualMachineNetworkConfig{}).
		Watches(&v1alpha1.IPPool{}, handler.EnqueueRequestsFromMapFunc(mapPoolToVMs(mgr.GetClient())),
			builder.WithPredicates(lifecycleChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: 8, SkipNameValidation: skip}).
		Complete(vms)
	if err != nil {
		return nil, fmt.Errorf("set up virtualmachine controller: %w", err)
	}

	if o.OrphanSweepInterval == 0 {
		o.OrphanSweepInterval = 15 * time.Second
	}
	sweeper := &OrphanSweeper{Reader: mgr.GetAPIReader(), Store: store, Interval: o.OrphanSweepInterval,
		Log: mgr.GetLogger().WithName("orphans")}
	if err := mgr.Add(sweeper); err != nil {
		return nil, fmt.Errorf("add orphan sweeper: %w", err)
	}

	for path, h := range debugHandlers(store, mgr.GetClient()) {
		if err := mgr.AddMetricsServerExtraHandler(path, h); err != nil {
			return nil, fmt.Errorf("add debug endpoint %s: %w", path, err)
		}
	}
	return store, nil
}

func setupIndexes(mgr ctrl.Manager) error {
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1alpha1.IPPool{}, indexPoolByNetwork, func(o client.Object) []string {
		return []string{o.(*v1alpha1.IPPool).Network()}
	}); err != nil {
		return fmt.Errorf("index ippools by network: %w", err)
	}
	if err := idx.IndexField(ctx, &v1alpha1.VirtualMachineNetworkConfig{}, indexVMNetCfgByNetwork, func(o client.Object) []string {
		v := o.(*v1alpha1.VirtualMachineNetworkConfig)
		var out []string
		for _, nc := range v.Spec.NetworkConfigs {
			out = append(out, normalizeNetwork(nc.NetworkName, v.Namespace))
		}
		for _, st := range v.Status.NetworkConfigs {
			out = append(out, normalizeNetwork(st.NetworkName, v.Namespace))
		}
		return out
	}); err != nil {
		return fmt.Errorf("index vmnetcfgs by network: %w", err)
	}
	if err := idx.IndexField(ctx, &kubevirtv1.VirtualMachine{}, indexVMByNetwork, func(o client.Object) []string {
		vm := o.(*kubevirtv1.VirtualMachine)
		if vm.Spec.Template == nil {
			return nil
		}
		var out []string
		for _, n := range vm.Spec.Template.Spec.Networks {
			if n.Multus != nil && n.Multus.NetworkName != "" {
				out = append(out, normalizeNetwork(n.Multus.NetworkName, vm.Namespace))
			}
		}
		return out
	}); err != nil {
		return fmt.Errorf("index virtualmachines by network: %w", err)
	}
	return nil
}

// specOrLifecycleChanged passes creations, deletions and updates of the
// spec, labels, annotations or deletion timestamp, but not our own status
// or finalizer writes (which would wake every reconcile again, against a
// cache that may not have the status yet, for a conflict and a retry).
func specOrLifecycleChanged() predicate.Predicate {
	return predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{},
		predicate.LabelChangedPredicate{}, predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			return !e.ObjectNew.GetDeletionTimestamp().Equal(e.ObjectOld.GetDeletionTimestamp())
		}})
}

// lifecycleChanged passes creations, deletions and spec changes.
func lifecycleChanged() predicate.Predicate {
	return predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return !e.ObjectNew.GetDeletionTimestamp().Equal(e.ObjectOld.GetDeletionTimestamp())
	}})
}

// poolMayFreeAddresses passes pool events after which a VMNetCfg that is
// waiting may now get its address: creation, deletion, spec changes
// (unpause) and a rise of the available count of either family.
func poolMayFreeAddresses() predicate.Predicate {
	return predicate.Or[client.Object](lifecycleChanged(), predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*v1alpha1.IPPool), e.ObjectNew.(*v1alpha1.IPPool)
		rose4 := n.Status.IPv4 != nil && (o.Status.IPv4 == nil || n.Status.IPv4.Available > o.Status.IPv4.Available)
		rose6 := n.Status.IPv6 != nil && (o.Status.IPv6 == nil || n.Status.IPv6.Available > o.Status.IPv6.Available)
		return rose4 || rose6
	}})
}

func poolRequest(namespace, name string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}}
}

func mapAgentObject(agentNamespace string) handler.MapFunc {
	return func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		if o.GetNamespace() != agentNamespace || l[LabelAppName] != AgentAppName || l[LabelIPPoolName] == "" {
			return nil
		}
		return []reconcile.Request{poolRequest(l[LabelIPPoolNamespace], l[LabelIPPoolName])}
	}
}

func poolsOnNetwork(ctx context.Context, c client.Reader, network string) []reconcile.Request {
	var list v1alpha1.IPPoolList
	if err := c.List(ctx, &list, client.MatchingFields{indexPoolByNetwork: network}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, p := range list.Items {
		out = append(out, poolRequest(p.Namespace, p.Name))
	}
	return out
}

func mapPoolSiblings(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		return poolsOnNetwork(ctx, c, o.(*v1alpha1.IPPool).Network())
	}
}

func mapNAD(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		return poolsOnNetwork(ctx, c, o.GetNamespace()+"/"+o.GetName())
	}
}

func mapNode(c client.Reader, agentNamespace string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(agentNamespace), client.MatchingLabels{LabelAppName: AgentAppName}); err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, p := range pods.Items {
			if p.Spec.NodeName == o.GetName() {
				out = append(out, poolRequest(p.Labels[LabelIPPoolNamespace], p.Labels[LabelIPPoolName]))
			}
		}
		return out
	}
}

// mapPoolToVMNetCfgs wakes the VMNetCfgs of the pool's network that do not
// have all their addresses.
func mapPoolToVMNetCfgs(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list v1alpha1.VirtualMachineNetworkConfigList
		if err := c.List(ctx, &list, client.MatchingFields{indexVMNetCfgByNetwork: o.(*v1alpha1.IPPool).Network()}); err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, v := range list.Items {
			if !v1alpha1.IsConditionTrue(v.Status.Conditions, v1alpha1.Allocated) || o.GetDeletionTimestamp() != nil {
				out = append(out, poolRequest(v.Namespace, v.Name))
			}
		}
		return out
	}
}

// mapPoolToAllVMNetCfgs wakes every VMNetCfg of the pool's network.
func mapPoolToAllVMNetCfgs(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list v1alpha1.VirtualMachineNetworkConfigList
		if err := c.List(ctx, &list, client.MatchingFields{indexVMNetCfgByNetwork: o.(*v1alpha1.IPPool).Spec.NetworkName}); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for _, v := range list.Items {
			out = append(out, poolRequest(v.Namespace, v.Name))
		}
		return out
	}
}

func mapPoolToVMs(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list kubevirtv1.VirtualMachineList
		if err := c.List(ctx, &list, client.MatchingFields{indexVMByNetwork: o.(*v1alpha1.IPPool).Network()}); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for _, v := range list.Items {
			out = append(out, poolRequest(v.Namespace, v.Name))
		}
		return out
	}
}

// Scheme knows the built-in kinds, ours, NADs and KubeVirt VirtualMachines.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, v1alpha1.AddToScheme, nadv1.AddToScheme, kubevirtv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("build scheme: %v", err))
		}
	}
	return s
}
