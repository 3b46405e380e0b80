package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/agentconfig"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// Condition reasons of an IPPool.
const (
	ReasonRegistered     = "Registered"
	ReasonNetworkTaken   = "NetworkTaken"
	ReasonNetworkMissing = "NetworkNotFound"
	ReasonCacheBuilt     = "CacheBuilt"
	ReasonInvalidConfig  = "InvalidConfig"
	ReasonPaused         = "Paused"
	ReasonRunning        = "Running"
	ReasonAgentReady     = "AgentReady"
	ReasonAgentNotReady  = "AgentNotReady"
	ReasonNotRegistered  = "NotRegistered"
)

// IPPoolReconciler links pools to their networks, keeps their IPAM and runs
// one agent (ConfigMap + Pod) per active pool.
type IPPoolReconciler struct {
	client.Client
	Reader   client.Reader
	Store    *PoolStore
	Recorder recorder.EventRecorder
	Agent    AgentOptions
	Metrics  *Metrics
	// NodeGracePeriod is how long the agent's node may be NotReady before
	// the agent is recreated elsewhere.
	NodeGracePeriod time.Duration
}

func (r *IPPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	pool := &v1alpha1.IPPool{}
	if err := r.Get(ctx, req.NamespacedName, pool); err != nil {
		if apierrors.IsNotFound(err) {
			r.Store.Forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get ippool %s: %w", req.NamespacedName, err)
	}
	if !pool.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, pool)
	}
	if !controllerutil.ContainsFinalizer(pool, Finalizer) {
		controllerutil.AddFinalizer(pool, Finalizer)
		if err := r.Update(ctx, pool); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer to ippool %s: %w", req.NamespacedName, err)
		}
	}

	// Registration: the oldest pool on a network owns it; others are refused
	// with a condition and one event, and wait (no retry loop) until the
	// owner goes away, which the sibling watch reports.
	owner, err := networkOwner(ctx, r.Client, pool.Network())
	if err != nil {
		return ctrl.Result{}, err
	}
	var conds []condUpdate
	if owner == nil {
		// Our own pool is not in the cache's index yet: look again shortly.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	if owner.Namespace != pool.Namespace || owner.Name != pool.Name {
		msg := fmt.Sprintf("network %s is already served by ippool %s/%s", pool.Network(), owner.Namespace, owner.Name)
		if !conditionIs(pool.Status.Conditions, v1alpha1.Registered, corev1.ConditionFalse, ReasonNetworkTaken) {
			r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, ReasonNetworkTaken, "Register", msg)
		}
		if _, err := r.removeAgentPods(ctx, pool, "the pool is not registered"); err != nil {
			return ctrl.Result{}, err
		}
		r.Store.Forget(req.NamespacedName)
		return ctrl.Result{}, r.writeStatusDirect(ctx, req.NamespacedName, func(p *v1alpha1.IPPool) {
			setConds(p, condUpdate{v1alpha1.Registered, corev1.ConditionFalse, ReasonNetworkTaken, msg},
				condUpdate{v1alpha1.CacheReady, corev1.ConditionFalse, ReasonNotRegistered, "the pool is not registered"},
				condUpdate{v1alpha1.AgentReady, corev1.ConditionFalse, ReasonNotRegistered, "the pool is not registered"})
			p.Status.AgentPodRef = nil
		})
	}
	nad, err := r.registerNAD(ctx, pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	if nad == nil {
		msg := fmt.Sprintf("NetworkAttachmentDefinition %s not found", pool.Network())
		if !conditionIs(pool.Status.Conditions, v1alpha1.Registered, corev1.ConditionFalse, ReasonNetworkMissing) {
			r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, ReasonNetworkMissing, "Register", msg)
		}
		conds = append(conds, condUpdate{v1alpha1.Registered, corev1.ConditionFalse, ReasonNetworkMissing, msg})
	} else {
		conds = append(conds, condUpdate{v1alpha1.Registered, corev1.ConditionTrue, ReasonRegistered, ""})
	}

	// The IPAM: built from spec and status on first use by the store, and
	// rebuilt when the spec moved on (excludes may change).
	r.Store.Refresh(req.NamespacedName, pool.Generation)
	if err := r.Store.Do(ctx, req.NamespacedName, func(*v1alpha1.IPPool, *ipam.Pool) error { return nil }); err != nil {
		if errors.Is(err, ipam.ErrInvalidConfig) {
			if !conditionIs(pool.Status.Conditions, v1alpha1.CacheReady, corev1.ConditionFalse, ReasonInvalidConfig) {
				r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, ReasonInvalidConfig, "BuildIPAM", err.Error())
			}
			conds = append(conds, condUpdate{v1alpha1.CacheReady, corev1.ConditionFalse, ReasonInvalidConfig, err.Error()})
			return ctrl.Result{}, r.writeStatusDirect(ctx, req.NamespacedName, func(p *v1alpha1.IPPool) { setConds(p, conds...) })
		}
		return ctrl.Result{}, err
	}
	conds = append(conds, condUpdate{v1alpha1.CacheReady, corev1.ConditionTrue, ReasonCacheBuilt, ""})

	var podRef *v1alpha1.PodReference
	var result ctrl.Result
	switch {
	case pool.IsPaused():
		// The agent stops; its ConfigMap stays, with the user's edits.
		wait, err := r.removeAgentPods(ctx, pool, "the pool is paused")
		if err != nil {
			return ctrl.Result{}, err
		}
		result.RequeueAfter = wait
		conds = append(conds,
			condUpdate{v1alpha1.Stopped, corev1.ConditionTrue, ReasonPaused, "spec.paused is true"},
			condUpdate{v1alpha1.AgentReady, corev1.ConditionFalse, ReasonPaused, "the pool is paused"})
	case nad == nil:
		// No network to attach to: the agent would serve a network that is
		// no longer defined. The NAD watch brings it back with the NAD.
		wait, err := r.removeAgentPods(ctx, pool, "its network attachment definition is gone")
		if err != nil {
			return ctrl.Result{}, err
		}
		result.RequeueAfter = wait
		conds = append(conds,
			condUpdate{v1alpha1.Stopped, corev1.ConditionFalse, ReasonRunning, ""},
			condUpdate{v1alpha1.AgentReady, corev1.ConditionFalse, ReasonNetworkMissing, "no network to attach the agent to"})
	default:
		conds = append(conds, condUpdate{v1alpha1.Stopped, corev1.ConditionFalse, ReasonRunning, ""})
		hash, err := r.ensureConfigMap(ctx, pool)
		if err != nil {
			return ctrl.Result{}, err
		}
		pod, res, err := r.ensurePod(ctx, pool, hash, nad)
		if err != nil {
			return ctrl.Result{}, err
		}
		result = res
		if pod == nil {
			conds = append(conds, condUpdate{v1alpha1.AgentReady, corev1.ConditionFalse, ReasonAgentNotReady, "agent pod is being recreated"})
		} else {
			podRef = &v1alpha1.PodReference{Namespace: pod.Namespace, Name: pod.Name, Image: pod.Spec.Containers[0].Image, UID: pod.UID}
			if podReady(pod) {
				conds = append(conds, condUpdate{v1alpha1.AgentReady, corev1.ConditionTrue, ReasonAgentReady, ""})
			} else {
				conds = append(conds, condUpdate{v1alpha1.AgentReady, corev1.ConditionFalse, ReasonAgentNotReady,
					fmt.Sprintf("agent pod %s/%s is %s and not ready", pod.Namespace, pod.Name, pod.Status.Phase)})
			}
		}
	}
	err = r.Store.Do(ctx, req.NamespacedName, func(p *v1alpha1.IPPool, _ *ipam.Pool) error {
		setConds(p, conds...)
		ref := podRef
		if ref == nil && p.Status.AgentPodRef != nil && p.Status.AgentPodRef.Image != "" {
			// No pod now: keep the image the agent last ran, which a held
			// upgrade runs again (agentImage).
			ref = &v1alpha1.PodReference{Image: p.Status.AgentPodRef.Image}
		}
		if !equality.Semantic.DeepEqual(p.Status.AgentPodRef, ref) {
			p.Status.AgentPodRef = ref
		}
		return nil
	})
	if err != nil {
		return ctrl.Result{}, err
	}
	r.updatePoolMetrics(pool)
	logger.V(1).Info("ippool reconciled", "paused", pool.IsPaused())
	return result, nil
}

func (r *IPPoolReconciler) updatePoolMetrics(pool *v1alpha1.IPPool) {
	if r.Metrics == nil {
		return
	}
	am, ok := r.Store.IPAM(types.NamespacedName{Namespace: pool.Namespace, Name: pool.Name})
	if !ok {
		return
	}
	labels := []string{pool.Namespace + "/" + pool.Name, pool.Spec.IPv4Config.CIDR, pool.Network()}
	r.Metrics.PoolUsed.WithLabelValues(labels...).Set(float64(am.Used()))
	r.Metrics.PoolAvailable.WithLabelValues(labels...).Set(float64(am.Available()))
}

// finalize removes everything the pool made: agent, config, NAD labels,
// IPAM, metrics; then lets the pool go.
func (r *IPPoolReconciler) finalize(ctx context.Context, pool *v1alpha1.IPPool) error {
	key := types.NamespacedName{Namespace: pool.Namespace, Name: pool.Name}
	r.Store.Forget(key)
	// Pods still terminating are not waited for: the pool's deletion must
	// not hang on a node.
	if _, err := r.removeAgentPods(ctx, pool, "the pool is deleted"); err != nil {
		return err
	}
	if err := r.removeAgentConfigs(ctx, pool); err != nil {
		return err
	}
	if err := r.unregisterNAD(ctx, pool); err != nil {
		return err
	}
	if r.Metrics != nil {
		labels := []string{key.String(), pool.Spec.IPv4Config.CIDR, pool.Network()}
		r.Metrics.PoolUsed.DeleteLabelValues(labels...)
		r.Metrics.PoolAvailable.DeleteLabelValues(labels...)
	}
	// Our cleanup above is also what Harvester's handler did for its own.
	ours := controllerutil.RemoveFinalizer(pool, Finalizer)
	harvesters := controllerutil.RemoveFinalizer(pool, HarvesterIPPoolFinalizer)
	if ours || harvesters {
		if err := r.Update(ctx, pool); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove finalizer of ippool %s: %w", key, err)
		}
	}
	return nil
}

// networkOwner is the pool that serves network: the oldest live pool on it
// (ties broken by namespace/name), so that every controller agrees.
func networkOwner(ctx context.Context, c client.Reader, network string) (*v1alpha1.IPPool, error) {
	var list v1alpha1.IPPoolList
	if err := c.List(ctx, &list, client.MatchingFields{indexPoolByNetwork: network}); err != nil {
		return nil, fmt.Errorf("list ippools of network %s: %w", network, err)
	}
	var live []*v1alpha1.IPPool
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			live = append(live, &list.Items[i])
		}
	}
	if len(live) == 0 {
		return nil, nil
	}
	slices.SortFunc(live, func(a, b *v1alpha1.IPPool) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return live[0], nil
}

// registerNAD labels the pool's NAD with the pool; nil if there is no NAD.
func (r *IPPoolReconciler) registerNAD(ctx context.Context, pool *v1alpha1.IPPool) (*nadv1.NetworkAttachmentDefinition, error) {
	ns, name, err := splitNetwork(pool.Network())
	if err != nil {
		return nil, err
	}
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, nad); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get network %s: %w", pool.Network(), err)
	}
	if nad.Labels[LabelIPPoolNamespace] == pool.Namespace && nad.Labels[LabelIPPoolName] == pool.Name {
		return nad, nil
	}
	patch := client.MergeFrom(nad.DeepCopy())
	if nad.Labels == nil {
		nad.Labels = map[string]string{}
	}
	nad.Labels[LabelIPPoolNamespace], nad.Labels[LabelIPPoolName] = pool.Namespace, pool.Name
	if err := r.Patch(ctx, nad, patch); err != nil {
		return nil, fmt.Errorf("label network %s with ippool %s/%s: %w", pool.Network(), pool.Namespace, pool.Name, err)
	}
	return nad, nil
}

func (r *IPPoolReconciler) unregisterNAD(ctx context.Context, pool *v1alpha1.IPPool) error {
	ns, name, err := splitNetwork(pool.Network())
	if err != nil {
		return nil
	}
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, nad); err != nil {
		return client.IgnoreNotFound(err)
	}
	if nad.Labels[LabelIPPoolNamespace] != pool.Namespace || nad.Labels[LabelIPPoolName] != pool.Name {
		return nil
	}
	patch := client.MergeFrom(nad.DeepCopy())
	delete(nad.Labels, LabelIPPoolNamespace)
	delete(nad.Labels, LabelIPPoolName)
	if err := r.Patch(ctx, nad, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("unlabel network %s: %w", pool.Network(), err)
	}
	return nil
}

// agentPods lists the pool's agent pods by label, so that pods named by an
// older version of the controller are found too.
func (r *IPPoolReconciler) agentPods(ctx context.Context, pool *v1alpha1.IPPool) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := r.List(ctx, &list, client.InNamespace(r.Agent.Namespace), client.MatchingLabels(agentLabels(pool))); err != nil {
		return nil, fmt.Errorf("list agent pods of ippool %s/%s: %w", pool.Namespace, pool.Name, err)
	}
	return list.Items, nil
}

// agentConfigMaps lists the pool's agent ConfigMaps by label.
func (r *IPPoolReconciler) agentConfigMaps(ctx context.Context, pool *v1alpha1.IPPool) ([]corev1.ConfigMap, error) {
	var list corev1.ConfigMapList
	if err := r.List(ctx, &list, client.InNamespace(r.Agent.Namespace), client.MatchingLabels(agentLabels(pool))); err != nil {
		return nil, fmt.Errorf("list agent configs of ippool %s/%s: %w", pool.Namespace, pool.Name, err)
	}
	return list.Items, nil
}

// removeAgentPods deletes the pool's agent pods and says when to look
// again while some are still terminating (0 when none is left). The
// ConfigMap stays: it may hold the user's config, which a paused pool or a
// pool whose network comes back must keep.
func (r *IPPoolReconciler) removeAgentPods(ctx context.Context, pool *v1alpha1.IPPool, why string) (time.Duration, error) {
	pods, err := r.agentPods(ctx, pool)
	if err != nil {
		return 0, err
	}
	var wait time.Duration
	name := AgentPodName(pool)
	if !slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Name == name }) {
		// Not in the cache (yet): a pod created just now must not be left behind.
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: r.Agent.Namespace, Name: name}}
		if err := r.Delete(ctx, pod); err == nil {
			r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "AgentRemoved", "RemoveAgent", "deleting agent pod %s/%s: %s", pod.Namespace, name, why)
			wait = time.Second
		} else if !apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("delete agent pod %s/%s of ippool %s/%s: %w", pod.Namespace, name, pool.Namespace, pool.Name, err)
		}
	}
	for i := range pods {
		w, err := r.retirePod(ctx, pool, &pods[i], "AgentRemoved", why)
		if err != nil {
			return 0, err
		}
		wait = minWait(wait, w)
	}
	return wait, nil
}

// removeAgentConfigs deletes the pool's agent ConfigMaps (the pool is gone).
func (r *IPPoolReconciler) removeAgentConfigs(ctx context.Context, pool *v1alpha1.IPPool) error {
	cms, err := r.agentConfigMaps(ctx, pool)
	if err != nil {
		return err
	}
	name := AgentConfigMapName(pool)
	if !slices.ContainsFunc(cms, func(c corev1.ConfigMap) bool { return c.Name == name }) {
		// Not in the cache (yet), maybe just created.
		cms = append(cms, corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: r.Agent.Namespace, Name: name}})
	}
	for i := range cms {
		if err := r.Delete(ctx, &cms[i]); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("remove agent config %s/%s of ippool %s/%s: %w", cms[i].Namespace, cms[i].Name, pool.Namespace, pool.Name, err)
		}
		r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "AgentRemoved", "RemoveAgent",
			"removed ConfigMap %s/%s", cms[i].Namespace, cms[i].Name)
	}
	return nil
}

// retirePod deletes pod (why says for what) and, while it terminates, says
// when to look again. A pod whose node is gone or has been NotReady for the
// node grace period is force-deleted: no kubelet will ever confirm its
// graceful delete, and until it is gone the pool has no agent.
func (r *IPPoolReconciler) retirePod(ctx context.Context, pool *v1alpha1.IPPool, pod *corev1.Pod, reason, why string) (time.Duration, error) {
	down, wait, err := r.nodeDown(ctx, pod.Spec.NodeName)
	if err != nil {
		return 0, err
	}
	key := client.ObjectKeyFromObject(pod)
	opts := []client.DeleteOption{client.Preconditions{UID: &pod.UID}}
	switch {
	case down != "":
		opts = append(opts, client.GracePeriodSeconds(0))
		why = fmt.Sprintf("%s (forced: %s)", why, down)
	case !pod.DeletionTimestamp.IsZero():
		// The kubelet is finishing it (the delete event brings us back), or
		// its node may still come back: look again when the grace is over.
		if wait == 0 {
			wait = terminatingRecheck
		}
		return wait, nil
	}
	if err := r.Delete(ctx, pod, opts...); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return time.Second, nil
		}
		return 0, fmt.Errorf("delete agent pod %s of ippool %s/%s: %w", key, pool.Namespace, pool.Name, err)
	}
	r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, reason, "RemoveAgent", "deleting agent pod %s: %s", key, why)
	return time.Second, nil
}

// terminatingRecheck is how often a terminating agent pod on a ready node is
// looked at again (its deletion also wakes the pool).
const terminatingRecheck = 5 * time.Second

// nodeDown says why the node is to be considered dead ("" if it is not),
// and otherwise how long until it would be (0: not counting down). A pod
// not bound to a node has no kubelet to wait for either, but the apiserver
// deletes such pods at once, so it needs no force.
func (r *IPPoolReconciler) nodeDown(ctx context.Context, nodeName string) (string, time.Duration, error) {
	if nodeName == "" {
		return "", 0, nil
	}
	node := &corev1.Node{}
	if err := r.Get(ctx, types.NamespacedName{Name: nodeName}, node); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("node %s is gone", nodeName), 0, nil
		}
		return "", 0, fmt.Errorf("get node %s of agent pod: %w", nodeName, err)
	}
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady || c.Status == corev1.ConditionTrue {
			continue
		}
		down := time.Since(c.LastTransitionTime.Time)
		if down >= r.NodeGracePeriod {
			return fmt.Sprintf("node %s is not ready for %s", node.Name, down.Round(time.Second)), 0, nil
		}
		return "", r.NodeGracePeriod - down + time.Second, nil
	}
	return "", 0, nil
}

func minWait(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// ensureConfigMap makes sure the pool's ConfigMap exists and returns the
// hash of its current content. Content the controller did not generate is
// the user's and is kept, also across a rename of the ConfigMap by an
// upgrade of the controller.
func (r *IPPoolReconciler) ensureConfigMap(ctx context.Context, pool *v1alpha1.IPPool) (string, error) {
	gen, err := generatedConfig(pool)
	if err != nil {
		return "", err
	}
	genHash := agentconfig.Hash(gen)
	key := types.NamespacedName{Namespace: r.Agent.Namespace, Name: AgentConfigMapName(pool)}
	all, err := r.agentConfigMaps(ctx, pool)
	if err != nil {
		return "", err
	}
	var legacy []corev1.ConfigMap
	for _, c := range all {
		if c.Name != key.Name {
			legacy = append(legacy, c)
		}
	}
	cm := &corev1.ConfigMap{}
	if err := r.Get(ctx, key, cm); err != nil {
		if !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("get agent config %s: %w", key, err)
		}
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: agentLabels(pool),
				Annotations: map[string]string{AnnotationGeneratedHash: genHash}, OwnerReferences: r.Agent.owners()},
			Data: map[string]string{ConfigKey: gen},
		}
		// A ConfigMap under the name an older controller gave it, edited by
		// the user: its content carries over.
		var from string
		for _, old := range legacy {
			if c, ok := old.Data[ConfigKey]; ok && agentconfig.Hash(c) != old.Annotations[AnnotationGeneratedHash] {
				cm.Data[ConfigKey] = c
				cm.Annotations[AnnotationUserHash] = agentconfig.Hash(c)
				from = old.Name
				break
			}
		}
		if err := r.Create(ctx, cm); err != nil {
			return "", fmt.Errorf("create agent config %s: %w", key, err)
		}
		if from != "" {
			r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "ConfigCarriedOver", "DeployAgent",
				"agent config %s is now %s; the user's content is kept", from, key)
		} else {
			r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "ConfigGenerated", "DeployAgent", "generated agent config %s", key)
		}
	}
	for i := range legacy {
		if err := r.Delete(ctx, &legacy[i]); err != nil && !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("remove renamed agent config %s/%s: %w", legacy[i].Namespace, legacy[i].Name, err)
		}
	}
	content := cm.Data[ConfigKey]
	h := agentconfig.Hash(content)
	orig := cm.DeepCopy()
	for k, v := range agentLabels(pool) {
		if cm.Labels[k] != v {
			if cm.Labels == nil {
				cm.Labels = map[string]string{}
			}
			cm.Labels[k] = v
		}
	}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	// A ConfigMap made before the chart passed an owner gets it too.
	if o := r.Agent.Owner; o != nil && !slices.ContainsFunc(cm.OwnerReferences, func(x metav1.OwnerReference) bool { return x.UID == o.UID }) {
		cm.OwnerReferences = append(cm.OwnerReferences, *o)
	}
	switch {
	case h == cm.Annotations[AnnotationGeneratedHash]:
		// Ours: keep it current with what we generate now.
		if h != genHash {
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			cm.Data[ConfigKey] = gen
			cm.Annotations[AnnotationGeneratedHash] = genHash
			h = genHash
		}
		delete(cm.Annotations, AnnotationUserHash)
	case cm.Annotations[AnnotationUserHash] != h:
		r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "ConfigEditedByUser", "DeployAgent",
			"config edited by user, keeping it (ConfigMap %s; delete it to get the generated default back)", key)
		cm.Annotations[AnnotationUserHash] = h
	}
	if !equality.Semantic.DeepEqual(orig, cm) {
		if err := r.Update(ctx, cm); err != nil {
			return "", fmt.Errorf("update agent config %s: %w", key, err)
		}
	}
	return h, nil
}

// agentImage is the image the pool's agent is to run. With the hold
// annotation it is the image the agent runs now, or, while there is no pod
// (recreated after a config edit, node death, eviction, pause), the one it
// last ran, recorded in status.agentPodRef.image as Harvester does.
func (r *IPPoolReconciler) agentImage(pool *v1alpha1.IPPool, pod *corev1.Pod) string {
	if pool.Annotations[AnnotationHoldUpgrade] != "true" {
		return r.Agent.Image
	}
	if pod != nil && len(pod.Spec.Containers) > 0 {
		return pod.Spec.Containers[0].Image
	}
	if ref := pool.Status.AgentPodRef; ref != nil && ref.Image != "" {
		return ref.Image
	}
	return r.Agent.Image
}

// ensurePod makes sure the agent pod exists and matches what it should run.
// A pod that must change is deleted, and the new one is created only when
// the old one is gone (both would claim the server IP); the delete event
// brings the next reconcile. It returns nil while no pod exists.
func (r *IPPoolReconciler) ensurePod(ctx context.Context, pool *v1alpha1.IPPool, configHash string, nad *nadv1.NetworkAttachmentDefinition) (*corev1.Pod, ctrl.Result, error) {
	key := types.NamespacedName{Namespace: r.Agent.Namespace, Name: AgentPodName(pool)}
	pods, err := r.agentPods(ctx, pool)
	if err != nil {
		return nil, ctrl.Result{}, err
	}
	// Pods under another name (an older controller's) go first.
	var wait time.Duration
	for i := range pods {
		if pods[i].Name != key.Name {
			w, err := r.retirePod(ctx, pool, &pods[i], "AgentRedeploy", "the agent's name is now "+key.Name)
			if err != nil {
				return nil, ctrl.Result{}, err
			}
			wait = minWait(wait, w)
		}
	}
	if wait != 0 {
		return nil, ctrl.Result{RequeueAfter: wait}, nil
	}
	pod := &corev1.Pod{}
	if err := r.Get(ctx, key, pod); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, ctrl.Result{}, fmt.Errorf("get agent pod %s: %w", key, err)
		}
		pod = nil
	}
	image := r.agentImage(pool, pod)
	desired, err := r.Agent.desiredPod(pool, configHash, nad, image)
	if err != nil {
		return nil, ctrl.Result{}, err
	}
	if pod == nil {
		if err := r.Create(ctx, desired); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil, ctrl.Result{RequeueAfter: time.Second}, nil
			}
			return nil, ctrl.Result{}, fmt.Errorf("create agent pod %s: %w", key, err)
		}
		r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "AgentDeployed", "DeployAgent", "deployed agent pod %s (image %s)", key, image)
		return desired, ctrl.Result{}, nil
	}
	if !pod.DeletionTimestamp.IsZero() {
		// Being deleted (by us, a drain, an eviction): replaced once gone.
		w, err := r.retirePod(ctx, pool, pod, "AgentRedeploy", "it is terminating")
		if err != nil {
			return nil, ctrl.Result{}, err
		}
		return nil, ctrl.Result{RequeueAfter: w}, nil
	}
	reason := replaceReason(pod, desired, image)
	if reason == "" {
		down, wait, err := r.nodeDown(ctx, pod.Spec.NodeName)
		if err != nil {
			return nil, ctrl.Result{}, err
		}
		if down == "" {
			return pod, ctrl.Result{RequeueAfter: wait}, nil
		}
		reason = down
	}
	if _, err := r.retirePod(ctx, pool, pod, "AgentRedeploy", "redeploying: "+reason); err != nil {
		return nil, ctrl.Result{}, err
	}
	return nil, ctrl.Result{RequeueAfter: time.Second}, nil
}

// replaceReason says why pod must be replaced by desired ("" if not).
func replaceReason(pod, desired *corev1.Pod, image string) string {
	switch {
	case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
		return fmt.Sprintf("pod is %s", pod.Status.Phase)
	case pod.Annotations[AnnotationConfigHash] != desired.Annotations[AnnotationConfigHash]:
		return "config changed"
	case pod.Annotations[AnnotationNetworkHash] != desired.Annotations[AnnotationNetworkHash]:
		return "network attachment config changed"
	case pod.Annotations[AnnotationSpecHash] != desired.Annotations[AnnotationSpecHash]:
		return "pod spec changed"
	case len(pod.Spec.Containers) == 0 || pod.Spec.Containers[0].Image != image:
		return fmt.Sprintf("image changed to %s", image)
	}
	return ""
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

type condUpdate struct {
	t       v1alpha1.ConditionType
	status  corev1.ConditionStatus
	reason  string
	message string
}

func setConds(p *v1alpha1.IPPool, conds ...condUpdate) {
	now := metav1.Now()
	for _, c := range conds {
		v1alpha1.SetCondition(&p.Status.Conditions, c.t, c.status, c.reason, c.message, now)
	}
}

func conditionIs(conds []v1alpha1.Condition, t v1alpha1.ConditionType, status corev1.ConditionStatus, reason string) bool {
	c := v1alpha1.FindCondition(conds, t)
	return c != nil && c.Status == status && c.Reason == reason
}

// writeStatusDirect writes a pool's status outside the store (for pools the
// store does not hold), with the same optimistic concurrency.
func (r *IPPoolReconciler) writeStatusDirect(ctx context.Context, key types.NamespacedName, mutate func(*v1alpha1.IPPool)) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := &v1alpha1.IPPool{}
		if err := r.Reader.Get(ctx, key, p); err != nil {
			return err
		}
		before := p.Status.DeepCopy()
		mutate(p)
		if equality.Semantic.DeepEqual(before, &p.Status) {
			return nil
		}
		p.Status.LastUpdate = metav1.Now()
		return r.Status().Update(ctx, p)
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("write status of ippool %s: %w", key, err)
	}
	return nil
}

var _ = ptr.To[int]
