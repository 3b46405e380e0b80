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
		if err := r.removeAgent(ctx, pool); err != nil {
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
		if err := r.removeAgent(ctx, pool); err != nil {
			return ctrl.Result{}, err
		}
		conds = append(conds,
			condUpdate{v1alpha1.Stopped, corev1.ConditionTrue, ReasonPaused, "spec.paused is true"},
			condUpdate{v1alpha1.AgentReady, corev1.ConditionFalse, ReasonPaused, "the pool is paused"})
	case nad == nil:
		conds = append(conds,
			condUpdate{v1alpha1.Stopped, corev1.ConditionFalse, ReasonRunning, ""},
			condUpdate{v1alpha1.AgentReady, corev1.ConditionFalse, ReasonNetworkMissing, "no network to attach the agent to"})
	default:
		conds = append(conds, condUpdate{v1alpha1.Stopped, corev1.ConditionFalse, ReasonRunning, ""})
		hash, err := r.ensureConfigMap(ctx, pool)
		if err != nil {
			return ctrl.Result{}, err
		}
		pod, res, err := r.ensurePod(ctx, pool, hash, nad.Labels[LabelClusterNetwork])
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
		if !equality.Semantic.DeepEqual(p.Status.AgentPodRef, podRef) {
			p.Status.AgentPodRef = podRef
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
	if err := r.removeAgent(ctx, pool); err != nil {
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

// removeAgent deletes the pool's agent pod and ConfigMap, if any.
func (r *IPPoolReconciler) removeAgent(ctx context.Context, pool *v1alpha1.IPPool) error {
	for _, obj := range []client.Object{
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: r.Agent.Namespace, Name: AgentPodName(pool)}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: r.Agent.Namespace, Name: AgentConfigMapName(pool)}},
	} {
		err := r.Delete(ctx, obj)
		if err == nil {
			r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "AgentRemoved", "RemoveAgent",
				"removed %T %s/%s", obj, obj.GetNamespace(), obj.GetName())
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove agent of ippool %s/%s: %w", pool.Namespace, pool.Name, err)
		}
	}
	return nil
}

// ensureConfigMap makes sure the pool's ConfigMap exists and returns the
// hash of its current content. Content the controller did not generate is
// the user's and is kept.
func (r *IPPoolReconciler) ensureConfigMap(ctx context.Context, pool *v1alpha1.IPPool) (string, error) {
	gen, err := generatedConfig(pool)
	if err != nil {
		return "", err
	}
	genHash := agentconfig.Hash(gen)
	cm := &corev1.ConfigMap{}
	key := types.NamespacedName{Namespace: r.Agent.Namespace, Name: AgentConfigMapName(pool)}
	if err := r.Get(ctx, key, cm); err != nil {
		if !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("get agent config %s: %w", key, err)
		}
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: agentLabels(pool),
				Annotations: map[string]string{AnnotationGeneratedHash: genHash}},
			Data: map[string]string{ConfigKey: gen},
		}
		if err := r.Create(ctx, cm); err != nil {
			return "", fmt.Errorf("create agent config %s: %w", key, err)
		}
		r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "ConfigGenerated", "DeployAgent", "generated agent config %s", key)
		return genHash, nil
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
	switch {
	case h == cm.Annotations[AnnotationGeneratedHash]:
		// Ours: keep it current with what we generate now.
		if h != genHash {
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

// ensurePod makes sure the agent pod exists and matches what it should run.
// A pod that must change is deleted; the delete event brings the next
// reconcile, which creates the new one. It returns nil while no pod exists.
func (r *IPPoolReconciler) ensurePod(ctx context.Context, pool *v1alpha1.IPPool, configHash, clusterNetwork string) (*corev1.Pod, ctrl.Result, error) {
	key := types.NamespacedName{Namespace: r.Agent.Namespace, Name: AgentPodName(pool)}
	pod := &corev1.Pod{}
	found := true
	if err := r.Get(ctx, key, pod); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, ctrl.Result{}, fmt.Errorf("get agent pod %s: %w", key, err)
		}
		found = false
	}
	image := r.Agent.Image
	if found && pool.Annotations[AnnotationHoldUpgrade] == "true" && len(pod.Spec.Containers) > 0 {
		image = pod.Spec.Containers[0].Image
	}
	desired, err := r.Agent.desiredPod(pool, configHash, clusterNetwork, image)
	if err != nil {
		return nil, ctrl.Result{}, err
	}
	if !found {
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
		return nil, ctrl.Result{RequeueAfter: 2 * time.Second}, nil
	}
	reason, force, wait, err := r.replaceReason(ctx, pod, desired, image)
	if err != nil {
		return nil, ctrl.Result{}, err
	}
	if reason == "" {
		return pod, ctrl.Result{RequeueAfter: wait}, nil
	}
	opts := []client.DeleteOption{client.Preconditions{UID: &pod.UID}}
	if force {
		// The node is gone or dead: no kubelet will ever confirm a graceful delete.
		opts = append(opts, client.GracePeriodSeconds(0))
	}
	if err := r.Delete(ctx, pod, opts...); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return nil, ctrl.Result{}, fmt.Errorf("delete agent pod %s to redeploy it: %w", key, err)
	}
	r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "AgentRedeploy", "DeployAgent", "redeploying agent pod %s: %s", key, reason)
	return nil, ctrl.Result{RequeueAfter: time.Second}, nil
}

// replaceReason says why pod must be replaced ("" if not), whether the
// delete must be forced, and otherwise when to look again.
func (r *IPPoolReconciler) replaceReason(ctx context.Context, pod, desired *corev1.Pod, image string) (string, bool, time.Duration, error) {
	switch {
	case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
		return fmt.Sprintf("pod is %s", pod.Status.Phase), false, 0, nil
	case pod.Annotations[AnnotationConfigHash] != desired.Annotations[AnnotationConfigHash]:
		return "config changed", false, 0, nil
	case pod.Annotations[AnnotationSpecHash] != desired.Annotations[AnnotationSpecHash]:
		return "pod spec changed", false, 0, nil
	case len(pod.Spec.Containers) == 0 || pod.Spec.Containers[0].Image != image:
		return fmt.Sprintf("image changed to %s", image), false, 0, nil
	}
	if pod.Spec.NodeName == "" {
		return "", false, 0, nil
	}
	node := &corev1.Node{}
	if err := r.Get(ctx, types.NamespacedName{Name: pod.Spec.NodeName}, node); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("node %s is gone", pod.Spec.NodeName), true, 0, nil
		}
		return "", false, 0, fmt.Errorf("get node %s of agent pod: %w", pod.Spec.NodeName, err)
	}
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady || c.Status == corev1.ConditionTrue {
			continue
		}
		down := time.Since(c.LastTransitionTime.Time)
		if down >= r.NodeGracePeriod {
			return fmt.Sprintf("node %s is not ready for %s", node.Name, down.Round(time.Second)), true, 0, nil
		}
		return "", false, r.NodeGracePeriod - down + time.Second, nil
	}
	return "", false, 0, nil
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
