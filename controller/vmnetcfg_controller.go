package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// Reasons of a VMNetCfg's Allocated condition and events.
const (
	ReasonAllocated        = "Allocated"
	ReasonNoIPPool         = "NoIPPool"
	ReasonPoolPaused       = "IPPoolPaused"
	ReasonPoolExhausted    = "IPPoolExhausted"
	ReasonAddressTaken     = "AddressUnavailable"
	ReasonAllocationFailed = "AllocationFailed"
	ReasonVMNetCfgPaused   = "Paused"
	ReasonMACHeldByOther   = "MACHeldByOther"
	ReasonStatusFull       = "IPPoolStatusTooLarge"
	// ReasonReallocated: the NIC's recorded address was dropped from its
	// pool and it was given another one.
	ReasonReallocated = "Reallocated"
	// ReasonEarlyReuse: the pool had no other free address and gave one
	// released by another MAC less than a lease time ago.
	ReasonEarlyReuse = "RecentlyReleasedAddressReused"
)

// safetyRequeue is how long a VMNetCfg that could not get every address
// waits before looking again on its own; changes of its pool (unpause,
// release, creation) wake it earlier through the IPPool watch. Long, so a
// failure is never a hot loop.
const safetyRequeue = 5 * time.Minute

// VMNetCfgReconciler allocates the addresses of VirtualMachineNetworkConfigs.
type VMNetCfgReconciler struct {
	client.Client
	Store    *PoolStore
	Recorder recorder.EventRecorder
	Metrics  *Metrics
}

// nicKey identifies a NIC across spec and status.
type nicKey struct{ network, mac string }

func (r *VMNetCfgReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vnc := &v1alpha1.VirtualMachineNetworkConfig{}
	if err := r.Get(ctx, req.NamespacedName, vnc); err != nil {
		if apierrors.IsNotFound(err) {
			r.deleteMetrics(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get vmnetcfg %s: %w", req.NamespacedName, err)
	}
	if !vnc.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, vnc)
	}
	if !controllerutil.ContainsFinalizer(vnc, Finalizer) {
		// Before any address is recorded: a deletion must find it to release.
		controllerutil.AddFinalizer(vnc, Finalizer)
		if err := r.Update(ctx, vnc); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer to vmnetcfg %s: %w", req.NamespacedName, err)
		}
	}

	wanted := map[nicKey]bool{}
	for _, nc := range vnc.Spec.NetworkConfigs {
		wanted[nicKey{normalizeNetwork(nc.NetworkName, vnc.Namespace), ipam.NormalizeMAC(nc.MACAddress)}] = true
	}
	prev := map[nicKey]v1alpha1.NetworkConfigStatus{}
	var statuses []v1alpha1.NetworkConfigStatus
	// NICs gone from the spec: Stale, released, then dropped. One that
	// cannot be released yet stays Stale in the status and is retried.
	for _, st := range vnc.Status.NetworkConfigs {
		k := nicKey{normalizeNetwork(st.NetworkName, vnc.Namespace), ipam.NormalizeMAC(st.MACAddress)}
		if wanted[k] {
			prev[k] = st
			continue
		}
		if err := r.release(ctx, k, ownerToken(vnc.UID)); err != nil {
			st.State = v1alpha1.StateStale
			statuses = append(statuses, st)
			continue
		}
		r.Recorder.Eventf(vnc, nil, corev1.EventTypeNormal, "Released", "Release", "released %s of %s on %s", st.AllocatedIPAddress, st.MACAddress, k.network)
	}

	var problems, notes []string
	reason := ReasonAllocated
	for _, nc := range vnc.Spec.NetworkConfigs {
		k := nicKey{normalizeNetwork(nc.NetworkName, vnc.Namespace), ipam.NormalizeMAC(nc.MACAddress)}
		st := v1alpha1.NetworkConfigStatus{NetworkName: nc.NetworkName, MACAddress: nc.MACAddress,
			AllocatedIPAddress: prev[k].AllocatedIPAddress, AllocatedIPv6Address: prev[k].AllocatedIPv6Address, State: v1alpha1.StatePending}
		why, msg, note, err := r.allocate(ctx, vnc, k, nc, &st)
		if err != nil {
			return ctrl.Result{}, err
		}
		if why != "" {
			reason = why
			problems = append(problems, msg)
			r.Recorder.Eventf(vnc, nil, corev1.EventTypeWarning, why, "Allocate", msg)
		}
		if note != "" {
			notes = append(notes, note)
		}
		statuses = append(statuses, st)
	}

	now := metav1.Now()
	newStatus := vnc.Status.DeepCopy()
	newStatus.NetworkConfigs = statuses
	switch {
	case len(problems) == 0 && len(notes) > 0:
		v1alpha1.SetCondition(&newStatus.Conditions, v1alpha1.Allocated, corev1.ConditionTrue, ReasonReallocated, strings.Join(notes, "; "), now)
	case len(problems) == 0:
		v1alpha1.SetCondition(&newStatus.Conditions, v1alpha1.Allocated, corev1.ConditionTrue, ReasonAllocated, "", now)
	default:
		v1alpha1.SetCondition(&newStatus.Conditions, v1alpha1.Allocated, corev1.ConditionFalse, reason, strings.Join(problems, "; "), now)
	}
	if vnc.IsPaused() {
		v1alpha1.SetCondition(&newStatus.Conditions, v1alpha1.Disabled, corev1.ConditionTrue, ReasonVMNetCfgPaused, "spec.paused is true", now)
	} else {
		v1alpha1.SetCondition(&newStatus.Conditions, v1alpha1.Disabled, corev1.ConditionFalse, "", "", now)
	}
	v1alpha1.SetCondition(&newStatus.Conditions, v1alpha1.InSynced, corev1.ConditionTrue, "", "", now)
	if !equality.Semantic.DeepEqual(newStatus, &vnc.Status) {
		vnc.Status = *newStatus
		// Update with the resourceVersion read: a concurrent change means
		// our view is old; the next reconcile redoes it (allocations are
		// idempotent per MAC, so nothing is taken twice).
		if err := r.Status().Update(ctx, vnc); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{Requeue: true}, nil
			}
			return ctrl.Result{}, fmt.Errorf("write status of vmnetcfg %s: %w", req.NamespacedName, err)
		}
	}
	r.setMetrics(vnc)
	if len(problems) > 0 {
		return ctrl.Result{RequeueAfter: safetyRequeue}, nil
	}
	return ctrl.Result{}, nil
}

// allocate fills st for one NIC. It returns a reason and message when the
// NIC cannot have an address now, a note when its recorded address was
// dropped and replaced, or an error to retry.
func (r *VMNetCfgReconciler) allocate(ctx context.Context, vnc *v1alpha1.VirtualMachineNetworkConfig, k nicKey, nc v1alpha1.NetworkConfig, st *v1alpha1.NetworkConfigStatus) (string, string, string, error) {
	pool, err := networkOwner(ctx, r.Client, k.network)
	if err != nil {
		return "", "", "", err
	}
	if pool == nil {
		st.AllocatedIPAddress, st.AllocatedIPv6Address = "", ""
		return ReasonNoIPPool, fmt.Sprintf("network %s has no IPPool", k.network), "", nil
	}
	poolKey := types.NamespacedName{Namespace: pool.Namespace, Name: pool.Name}
	prev, prev6 := st.AllocatedIPAddress, st.AllocatedIPv6Address
	if pool.IsPaused() || vnc.IsPaused() {
		// The address stays recorded for the MAC in the pool (so it is not
		// handed to anyone else and comes back on unpause); the NIC is
		// Pending. Unless the pool no longer records it (a spec change
		// while paused dropped it): then the NIC must not show it.
		ip, ip6, found, err := r.lookup(ctx, poolKey, k.mac)
		if err != nil {
			return "", "", "", err
		}
		st.AllocatedIPv6Address = ip6
		var lost []string
		if prev != "" && (!found || ip != prev) {
			st.AllocatedIPAddress = ""
			lost = append(lost, prev)
		}
		if prev6 != "" && ip6 != prev6 {
			lost = append(lost, prev6)
		}
		if len(lost) > 0 {
			msg := fmt.Sprintf("address %s of %s was dropped from ippool %s; a new one is allocated when the NIC and the pool are unpaused", strings.Join(lost, " and "), nc.MACAddress, poolKey)
			if pool.IsPaused() {
				return ReasonAllocationDropped, msg, "", nil
			}
			r.Recorder.Eventf(vnc, nil, corev1.EventTypeWarning, ReasonAllocationDropped, "Allocate", msg)
			return "", "", "", nil
		}
		if found {
			st.AllocatedIPAddress = ip
		}
		if pool.IsPaused() {
			// Allocations of a paused pool are kept as they are; nothing new.
			return ReasonPoolPaused, fmt.Sprintf("ippool %s/%s of network %s is paused", pool.Namespace, pool.Name, k.network), "", nil
		}
		return "", "", "", nil
	}
	want := ""
	if nc.IPAddress != nil {
		want = string(*nc.IPAddress)
		// Harvester's CRD admits an IPv4-mapped form and its IPAM gives
		// the IPv4 address: so do we (a migrated VMNetCfg keeps it).
		if a, ok := ipam.ParseIPv4(want); ok {
			want = a.String()
		}
	}
	var g, g6 ipam.Grant
	want6 := wantIPv6(nc)
	err = r.Store.DoDualAllocate(ctx, poolKey, AllocateDualOp(k.mac, ownerToken(vnc.UID), want, want6, &g, &g6))
	if !errors.Is(err, ErrStatusTooLarge) {
		// The op ran: g6.IP is what the pool now records for this NIC (""
		// when that half failed or the MAC is another VMNetCfg's).
		st.AllocatedIPv6Address = g6.IP
	}
	// A family that succeeded is reported even when the other failed.
	var notes []string
	for _, f := range []struct {
		g          ipam.Grant
		prev, want string
		lifetime   string
	}{{g, prev, want, "lease time"}, {g6, prev6, canonicalIPv6(want6), "valid lifetime"}} {
		if f.g.IP == "" {
			continue
		}
		if f.g.Early != nil {
			msg := fmt.Sprintf("ippool %s has no other free address: gave %s to %s, released by %s at %s, before the %s passed",
				poolKey, f.g.IP, nc.MACAddress, f.g.Early.MAC, f.g.Early.At.UTC().Format(time.RFC3339), f.lifetime)
			r.Recorder.Eventf(vnc, nil, corev1.EventTypeWarning, ReasonEarlyReuse, "Allocate", msg)
			r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, ReasonEarlyReuse, "Allocate", msg)
		}
		if f.prev != "" && f.prev != f.g.IP && f.want != f.g.IP {
			// The pool no longer had the address this NIC showed.
			n := fmt.Sprintf("address %s of %s was dropped from ippool %s; allocated %s", f.prev, nc.MACAddress, poolKey, f.g.IP)
			r.Recorder.Eventf(vnc, nil, corev1.EventTypeWarning, ReasonAllocationDropped, "Allocate", n)
			notes = append(notes, n)
		}
	}
	if g.IP != "" {
		st.AllocatedIPAddress = g.IP
	}
	note := strings.Join(notes, "; ")
	switch {
	case err == nil:
		st.AllocatedIPAddress, st.State = g.IP, v1alpha1.StateAllocated
		return "", "", note, nil
	case errors.Is(err, ipam.ErrExhausted):
		return ReasonPoolExhausted, fmt.Sprintf("ippool %s has no free address for %s", poolKey, nc.MACAddress), "", nil
	case errors.Is(err, ipam.ErrHeldByOther):
		return ReasonMACHeldByOther, fmt.Sprintf("ippool %s: %v (another VirtualMachineNetworkConfig with this MAC, maybe one being deleted)", poolKey, err), "", nil
	case errors.Is(err, ErrStatusTooLarge):
		return ReasonStatusFull, fmt.Sprintf("ippool %s: %v", poolKey, err), "", nil
	case errors.Is(err, ipam.ErrAllocated), errors.Is(err, ipam.ErrUnavailable), errors.Is(err, ipam.ErrOutsidePool), errors.Is(err, ErrNoFamily):
		return ReasonAddressTaken, fmt.Sprintf("requested address for %s in ippool %s: %v", nc.MACAddress, poolKey, err), "", nil
	case errors.Is(err, ipam.ErrInvalidConfig), errors.Is(err, ErrPoolGone):
		return ReasonAllocationFailed, fmt.Sprintf("ippool %s cannot allocate: %v", poolKey, err), "", nil
	default:
		return "", "", "", fmt.Errorf("allocate for %s in %s: %w", nc.MACAddress, poolKey, err)
	}
}

// lookup returns the addresses the pool records for mac, and whether it
// records an IPv4 one. A pool that is gone or cannot build its IPAM records
// nothing.
func (r *VMNetCfgReconciler) lookup(ctx context.Context, poolKey types.NamespacedName, mac string) (string, string, bool, error) {
	var ip, ip6 string
	err := r.Store.DoDual(ctx, poolKey, lookupDualOp(mac, &ip, &ip6))
	if errors.Is(err, ErrPoolGone) || errors.Is(err, ipam.ErrInvalidConfig) {
		return "", "", false, nil
	}
	return ip, ip6, ip != "", err
}

// release frees the addresses a NIC holds for owner (the VMNetCfg's UID) in
// its network's pool; one its MAC holds for another VMNetCfg is left alone
// (ReleaseDualOp). A network without a pool has nothing to release.
func (r *VMNetCfgReconciler) release(ctx context.Context, k nicKey, owner string) error {
	pool, err := networkOwner(ctx, r.Client, k.network)
	if err != nil || pool == nil {
		return err
	}
	err = r.Store.DoDual(ctx, types.NamespacedName{Namespace: pool.Namespace, Name: pool.Name}, ReleaseDualOp(k.mac, owner))
	if errors.Is(err, ErrPoolGone) || errors.Is(err, ipam.ErrInvalidConfig) {
		return nil
	}
	return err
}

func (r *VMNetCfgReconciler) finalize(ctx context.Context, vnc *v1alpha1.VirtualMachineNetworkConfig) error {
	seen := map[nicKey]bool{}
	for _, nc := range vnc.Spec.NetworkConfigs {
		seen[nicKey{normalizeNetwork(nc.NetworkName, vnc.Namespace), ipam.NormalizeMAC(nc.MACAddress)}] = true
	}
	for _, st := range vnc.Status.NetworkConfigs {
		seen[nicKey{normalizeNetwork(st.NetworkName, vnc.Namespace), ipam.NormalizeMAC(st.MACAddress)}] = true
	}
	keys := make([]nicKey, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].network+keys[i].mac < keys[j].network+keys[j].mac })
	for _, k := range keys {
		if err := r.release(ctx, k, ownerToken(vnc.UID)); err != nil {
			return fmt.Errorf("release %s on %s for deleted vmnetcfg %s/%s: %w", k.mac, k.network, vnc.Namespace, vnc.Name, err)
		}
	}
	r.deleteMetrics(types.NamespacedName{Namespace: vnc.Namespace, Name: vnc.Name})
	// The addresses are released above, which is what Harvester's handler
	// did for its own finalizer.
	ours := controllerutil.RemoveFinalizer(vnc, Finalizer)
	harvesters := controllerutil.RemoveFinalizer(vnc, HarvesterVMNetCfgFinalizer)
	if ours || harvesters {
		if err := r.Update(ctx, vnc); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove finalizer of vmnetcfg %s/%s: %w", vnc.Namespace, vnc.Name, err)
		}
	}
	return nil
}

func (r *VMNetCfgReconciler) setMetrics(vnc *v1alpha1.VirtualMachineNetworkConfig) {
	if r.Metrics == nil {
		return
	}
	key := types.NamespacedName{Namespace: vnc.Namespace, Name: vnc.Name}
	r.deleteMetrics(key)
	for _, st := range vnc.Status.NetworkConfigs {
		r.Metrics.VMNetCfg.WithLabelValues(key.String(), st.NetworkName, st.MACAddress, st.AllocatedIPAddress, string(st.State)).Set(1)
	}
}

func (r *VMNetCfgReconciler) deleteMetrics(key types.NamespacedName) {
	if r.Metrics != nil {
		r.Metrics.VMNetCfg.DeletePartialMatch(map[string]string{"vmnetcfg": key.String()})
	}
}
