package migrate

import (
	"context"
	"fmt"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The cluster Harvester's add-on leaves: facts from harvester/vm-dhcp-controller
// (pkg/controller/ippool, vmnetcfg, vm; pkg/util; wrangler's conditions).
const (
	harvesterNS          = "harvester-system"
	harvesterRelease     = "harvester-vm-dhcp-controller"
	harvesterAgentLabel  = "network.harvesterhci.io/vm-dhcp-controller" // = "agent"
	harvesterPoolFinal   = "wrangler.cattle.io/vm-dhcp-ippool-controller"
	harvesterVNCFinal    = "wrangler.cattle.io/vm-dhcp-vmnetcfg-controller"
	harvesterAgentImage  = "rancher/harvester-vm-dhcp-agent:v0.3.3"
	labelIPPoolNamespace = "network.harvesterhci.io/ippool-namespace"
	labelIPPoolName      = "network.harvesterhci.io/ippool-name"
)

// harvesterPool is one pool Harvester's add-on served, with what its
// controller recorded.
type harvesterPool struct {
	name, network, nad               string // network as written in spec.networkName
	cidr, server, router, start, end string
	exclude                          []string
	allocated                        map[string]string // ip -> MAC, as handed out by Harvester
	reserved                         []string          // server/router inside the range
	leaseTime                        int64
}

type harvesterVM struct {
	name string
	nics []harvesterNIC
}

type harvesterNIC struct {
	iface, network, mac, ip string // network as in the VM's multus networkName
}

// Two pools: one named namespace/name, one with a bare network name (which
// Harvester reads as default/<name>) and its server inside the range.
var (
	pools = []harvesterPool{
		{name: "pool-vlan100", network: "default/vlan100", nad: "vlan100",
			cidr: "192.168.50.0/24", server: "192.168.50.2", router: "192.168.50.1", start: "192.168.50.100", end: "192.168.50.200",
			exclude:   []string{"192.168.50.150", "192.168.50.250"},
			allocated: map[string]string{"192.168.50.120": "52:54:00:aa:01:01", "192.168.50.105": "52:54:00:aa:02:01"}, leaseTime: 300},
		{name: "pool-net200", network: "net200", nad: "net200",
			cidr: "10.200.0.0/24", server: "10.200.0.10", start: "10.200.0.10", end: "10.200.0.50",
			allocated: map[string]string{"10.200.0.33": "52:54:00:aa:01:02"}, reserved: []string{"10.200.0.10"}, leaseTime: 600},
	}
	vms = []harvesterVM{
		{"vm1", []harvesterNIC{{"nic-1", "default/vlan100", "52:54:00:aa:01:01", "192.168.50.120"}, {"nic-2", "net200", "52:54:00:aa:01:02", "10.200.0.33"}}},
		{"vm2", []harvesterNIC{{"nic-1", "default/vlan100", "52:54:00:aa:02:01", "192.168.50.105"}}},
	}
)

func gvk(group, version, kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: group, Version: version, Kind: kind}
}

// harvesterAddonThenUninstall writes the state of a cluster that ran
// Harvester's add-on (under Harvester's CRDs), then uninstalls the add-on as
// the guide says: its Deployments go (helm uninstall), and its agent pods,
// which no release owns, are deleted by label.
func harvesterAddonThenUninstall(ctx context.Context, c client.Client) error {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: harvesterNS}}); err != nil {
		return err
	}
	now := time.Now().UTC().Format(time.RFC3339)
	cond := func(t string) map[string]any { // wrangler: True with empty reason and message
		return map[string]any{"type": t, "status": "True", "lastUpdateTime": now}
	}
	for _, name := range []string{harvesterRelease, harvesterRelease + "-webhook"} {
		labels := map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/instance": harvesterRelease}
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: harvesterNS, Name: name, Labels: labels},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "harvester-vm-dhcp-controller", Image: "rancher/" + name + ":v0.3.3"}}}}}}
		if err := c.Create(ctx, d); err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
	}
	for _, p := range pools {
		nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: p.nad,
			Labels: map[string]string{"network.harvesterhci.io/clusternetwork": "mgmt", "network.harvesterhci.io/type": "L2VlanNetwork",
				labelIPPoolNamespace: "default", labelIPPoolName: p.name}},
			Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: fmt.Sprintf(`{"cniVersion":"0.3.1","name":%q,"type":"bridge","bridge":"mgmt-br","promiscMode":true,"vlan":100,"ipam":{}}`, p.nad)}}
		if err := c.Create(ctx, nad); err != nil {
			return fmt.Errorf("create NAD %s: %w", p.nad, err)
		}
		pool := &unstructured.Unstructured{}
		pool.SetGroupVersionKind(gvk("network.harvesterhci.io", "v1alpha1", "IPPool"))
		pool.SetNamespace("default")
		pool.SetName(p.name)
		pool.SetFinalizers([]string{harvesterPoolFinal})
		ipv4 := map[string]any{"cidr": p.cidr, "serverIP": p.server, "leaseTime": p.leaseTime,
			"pool": map[string]any{"start": p.start, "end": p.end}}
		if p.router != "" {
			ipv4["router"] = p.router
		}
		if len(p.exclude) > 0 {
			ex := []any{}
			for _, e := range p.exclude {
				ex = append(ex, e)
			}
			ipv4["pool"].(map[string]any)["exclude"] = ex
		}
		pool.Object["spec"] = map[string]any{"networkName": p.network, "ipv4Config": ipv4}
		if err := c.Create(ctx, pool); err != nil {
			return fmt.Errorf("create IPPool %s: %w", p.name, err)
		}
		allocated := map[string]any{}
		for ip, mac := range p.allocated {
			allocated[ip] = mac
		}
		for _, ip := range p.reserved {
			allocated[ip] = "RESERVED"
		}
		for _, ip := range p.exclude {
			allocated[ip] = "EXCLUDED"
		}
		agent := harvesterAgentName(p.name)
		pool.Object["status"] = map[string]any{
			"lastUpdate": now,
			"ipv4":       map[string]any{"allocated": allocated, "used": int64(len(p.allocated)), "available": int64(10)},
			"agentPodRef": map[string]any{"namespace": harvesterNS, "name": agent, "image": harvesterAgentImage,
				"uid": "0f5e2f5e-0000-4000-8000-00000000000" + fmt.Sprint(len(p.name)%10)},
			"conditions": []any{cond("Registered"), cond("CacheReady"), cond("AgentReady"),
				map[string]any{"type": "Stopped", "status": "False", "lastUpdateTime": now}},
		}
		if err := c.Status().Update(ctx, pool); err != nil {
			return fmt.Errorf("status of IPPool %s: %w", p.name, err)
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: harvesterNS, Name: agent,
			Labels:      map[string]string{harvesterAgentLabel: "agent", labelIPPoolNamespace: "default", labelIPPoolName: p.name},
			Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": fmt.Sprintf(`[{"namespace":"default","name":%q,"interface":"eth1"}]`, p.nad)}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: harvesterAgentImage,
				Args: []string{"--ippool-ref", "default/" + p.name}}}}}
		if err := c.Create(ctx, pod); err != nil {
			return fmt.Errorf("create agent pod %s: %w", agent, err)
		}
	}
	for _, v := range vms {
		vm := &kubevirtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: v.name},
			Spec: kubevirtv1.VirtualMachineSpec{Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{}}}
		spec := &vm.Spec.Template.Spec
		var ncs, sts []any
		for _, n := range v.nics {
			spec.Domain.Devices.Interfaces = append(spec.Domain.Devices.Interfaces, kubevirtv1.Interface{Name: n.iface, MacAddress: n.mac,
				InterfaceBindingMethod: kubevirtv1.InterfaceBindingMethod{Bridge: &kubevirtv1.InterfaceBridge{}}})
			spec.Networks = append(spec.Networks, kubevirtv1.Network{Name: n.iface,
				NetworkSource: kubevirtv1.NetworkSource{Multus: &kubevirtv1.MultusNetwork{NetworkName: n.network}}})
			ncs = append(ncs, map[string]any{"networkName": n.network, "macAddress": n.mac})
			sts = append(sts, map[string]any{"networkName": n.network, "macAddress": n.mac, "allocatedIPAddress": n.ip, "state": "Allocated"})
		}
		if err := c.Create(ctx, vm); err != nil {
			return fmt.Errorf("create VM %s: %w", v.name, err)
		}
		vnc := &unstructured.Unstructured{}
		vnc.SetGroupVersionKind(gvk("network.harvesterhci.io", "v1alpha1", "VirtualMachineNetworkConfig"))
		vnc.SetNamespace("default")
		vnc.SetName(v.name)
		vnc.SetLabels(map[string]string{"harvesterhci.io/vmName": v.name})
		vnc.SetFinalizers([]string{harvesterVNCFinal})
		// Harvester sets an owner reference without controller: true.
		vnc.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "kubevirt.io/v1", Kind: "VirtualMachine", Name: v.name, UID: vm.UID}})
		vnc.Object["spec"] = map[string]any{"vmName": v.name, "networkConfigs": ncs}
		if err := c.Create(ctx, vnc); err != nil {
			return fmt.Errorf("create VMNetCfg %s: %w", v.name, err)
		}
		vnc.Object["status"] = map[string]any{"networkConfigs": sts, "conditions": []any{cond("Allocated"), cond("InSynced"),
			map[string]any{"type": "Disabled", "status": "False", "lastUpdateTime": now}}}
		if err := c.Status().Update(ctx, vnc); err != nil {
			return fmt.Errorf("status of VMNetCfg %s: %w", v.name, err)
		}
	}

	// Uninstall the add-on: helm uninstall removes its Deployments; the
	// agent pods its controller created belong to no release.
	for _, name := range []string{harvesterRelease, harvesterRelease + "-webhook"} {
		if err := c.Delete(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: harvesterNS, Name: name}}); err != nil {
			return fmt.Errorf("uninstall %s: %w", name, err)
		}
	}
	if err := c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(harvesterNS), client.MatchingLabels{harvesterAgentLabel: "agent"},
		client.GracePeriodSeconds(0)); err != nil {
		return fmt.Errorf("delete Harvester's agent pods: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(harvesterNS)); err != nil {
			return err
		}
		if len(pods.Items) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Harvester's agent pods still there: %d", len(pods.Items))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// harvesterAgentName is Harvester's agent pod name for short names:
// <pool-namespace>-<pool-name>-agent.
func harvesterAgentName(pool string) string { return "default-" + pool + "-agent" }

var _ = apierrors.IsNotFound
