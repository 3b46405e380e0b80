package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// ReasonTooManyNICs is the event on a VM with more NICs on managed networks
// than a VirtualMachineNetworkConfig holds.
const ReasonTooManyNICs = "TooManyNICs"

// VMReconciler keeps one VirtualMachineNetworkConfig per KubeVirt
// VirtualMachine that has NICs on networks with an IPPool.
type VMReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
}

func (r *VMReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	vm := &kubevirtv1.VirtualMachine{}
	if err := r.Get(ctx, req.NamespacedName, vm); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("get virtualmachine %s: %w", req.NamespacedName, err)
		}
		vm = nil
	}
	existing := &v1alpha1.VirtualMachineNetworkConfig{}
	if err := r.Get(ctx, req.NamespacedName, existing); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("get vmnetcfg %s: %w", req.NamespacedName, err)
		}
		existing = nil
	}
	if existing != nil && existing.Labels[LabelVMName] != req.Name {
		// Not one we made (e.g. created by hand): leave it alone.
		existing = nil
		if vm == nil {
			return ctrl.Result{}, nil
		}
		logger.Info("a vmnetcfg with the VM's name exists and was not made from the VM; leaving it alone")
		return ctrl.Result{}, nil
	}
	var configs []v1alpha1.NetworkConfig
	if vm != nil && vm.DeletionTimestamp.IsZero() {
		var err error
		if configs, err = r.networkConfigs(ctx, vm, existing); err != nil {
			return ctrl.Result{}, err
		}
	}
	if len(configs) == 0 {
		// No VM (the garbage collector may not run, e.g. without
		// kube-controller-manager) or no NIC left on a managed network.
		if existing != nil && existing.DeletionTimestamp.IsZero() {
			if err := r.Delete(ctx, existing); err != nil && !apierrors.IsNotFound(err) {
				return ctrl.Result{}, fmt.Errorf("delete vmnetcfg %s: %w", req.NamespacedName, err)
			}
		}
		return ctrl.Result{}, nil
	}
	if existing == nil {
		vnc := &v1alpha1.VirtualMachineNetworkConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: vm.Namespace, Name: vm.Name, Labels: map[string]string{LabelVMName: vm.Name},
				// Set at creation so the allocation needs no extra write for it.
				Finalizers: []string{Finalizer}},
			Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: vm.Name, NetworkConfigs: configs},
		}
		if err := controllerutil.SetControllerReference(vm, vnc, r.Scheme()); err != nil {
			return ctrl.Result{}, fmt.Errorf("own vmnetcfg %s: %w", req.NamespacedName, err)
		}
		if err := r.Create(ctx, vnc); err != nil {
			return ctrl.Result{}, fmt.Errorf("create vmnetcfg %s: %w", req.NamespacedName, err)
		}
		return ctrl.Result{}, nil
	}
	if !existing.DeletionTimestamp.IsZero() {
		// Being deleted (e.g. the last NIC went and came back): wait until it is gone.
		return ctrl.Result{Requeue: true}, nil
	}
	if equality.Semantic.DeepEqual(existing.Spec.NetworkConfigs, configs) {
		return ctrl.Result{}, nil
	}
	existing.Spec.NetworkConfigs = configs
	if err := r.Update(ctx, existing); err != nil {
		return ctrl.Result{}, fmt.Errorf("update vmnetcfg %s: %w", req.NamespacedName, err)
	}
	return ctrl.Result{}, nil
}

// networkConfigs lists the VM's multus NICs on networks that have an
// IPPool, sorted by network and MAC so the spec never flaps. A requested
// address already set in the existing VMNetCfg is kept.
func (r *VMReconciler) networkConfigs(ctx context.Context, vm *kubevirtv1.VirtualMachine, existing *v1alpha1.VirtualMachineNetworkConfig) ([]v1alpha1.NetworkConfig, error) {
	if vm.Spec.Template == nil {
		return nil, nil
	}
	macs := map[string]string{}
	if a := vm.Annotations[AnnotationMACAddresses]; a != "" {
		if err := json.Unmarshal([]byte(a), &macs); err != nil {
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "BadMACAnnotation", "BuildNetworkConfig",
				"annotation %s is not a JSON map of NIC name to MAC: %v", AnnotationMACAddresses, err)
			macs = map[string]string{}
		}
	}
	for _, iface := range vm.Spec.Template.Spec.Domain.Devices.Interfaces {
		if iface.MacAddress != "" {
			macs[iface.Name] = iface.MacAddress
		}
	}
	requested := map[nicKey]*v1alpha1.IPv4Address{}
	if existing != nil {
		for _, nc := range existing.Spec.NetworkConfigs {
			requested[nicKey{nc.NetworkName, ipam.NormalizeMAC(nc.MACAddress)}] = nc.IPAddress
		}
	}
	var out []v1alpha1.NetworkConfig
	var nics []string // NIC name of each item of out
	for _, n := range vm.Spec.Template.Spec.Networks {
		if n.Multus == nil || n.Multus.NetworkName == "" {
			continue // pod network: not ours
		}
		network := normalizeNetwork(n.Multus.NetworkName, vm.Namespace)
		mac := macs[n.Name]
		if mac == "" {
			continue // no MAC yet: KubeVirt or Harvester sets it, and the update brings us back
		}
		pool, err := networkOwner(ctx, r.Client, network)
		if err != nil {
			return nil, err
		}
		if pool == nil {
			continue // not a DHCP-managed network; the IPPool watch brings us back if one appears
		}
		out = append(out, v1alpha1.NetworkConfig{NetworkName: network, MACAddress: mac,
			IPAddress: requested[nicKey{network, ipam.NormalizeMAC(mac)}]})
		nics = append(nics, fmt.Sprintf("%s (%s)", n.Name, network))
	}
	if len(out) > v1alpha1.MaxNetworkConfigs {
		// The API refuses more (as Harvester's): serve the first NICs in the
		// VM's order rather than none, and say which are left out.
		r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, ReasonTooManyNICs, "BuildNetworkConfig",
			"%d NICs are on DHCP-managed networks but a VirtualMachineNetworkConfig holds at most %d: no address for %s",
			len(out), v1alpha1.MaxNetworkConfigs, strings.Join(nics[v1alpha1.MaxNetworkConfigs:], ", "))
		out = out[:v1alpha1.MaxNetworkConfigs]
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].NetworkName != out[j].NetworkName {
			return out[i].NetworkName < out[j].NetworkName
		}
		return out[i].MACAddress < out[j].MACAddress
	})
	return out, nil
}
