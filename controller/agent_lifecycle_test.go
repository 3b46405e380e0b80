package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/agentconfig"
)

func TestAgentNamesAreUniquePerPoolAndValid(t *testing.T) {
	long := strings.Repeat("n", 63)
	pools := []*v1alpha1.IPPool{
		newPool("default-prod", "net", "", "", ""),
		newPool("default", "prod-net", "", "", ""),
		newPool(long, strings.Repeat("p.q-", 60)+"r", "", "", ""),
		newPool(long, strings.Repeat("p.q-", 60)+"s", "", "", ""),
		newPool("a", "b.c", "", "", ""),
		newPool("a", "b-c", "", "", ""),
	}
	seen := map[string]string{}
	for _, p := range pools {
		for _, name := range []string{AgentPodName(p), AgentConfigMapName(p)} {
			if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
				t.Errorf("%s/%s: name %q is not a DNS label: %v", p.Namespace, p.Name, name, errs)
			}
			if other, ok := seen[name]; ok {
				t.Errorf("%s/%s and %s share the name %q", p.Namespace, p.Name, other, name)
			}
			seen[name] = p.Namespace + "/" + p.Name
		}
	}
	if got := AgentPodName(pools[0]); !strings.HasPrefix(got, "default-prod-net-") || !strings.HasSuffix(got, "-agent") {
		t.Errorf("pod name %q is not <ns>-<pool>-<hash>-agent", got)
	}
	if AgentConfigMapName(pools[0]) != AgentPodName(pools[0])+"-config" {
		t.Errorf("ConfigMap %q is not the pod name %q + -config", AgentConfigMapName(pools[0]), AgentPodName(pools[0]))
	}
}

// Two pools whose <ns>-<pool> is the same get an agent each, and keep it.
func TestPoolsWithCollidingReadableNamesGetTheirOwnAgents(t *testing.T) {
	startController(t, managerOpts{})
	base := newNamespace(t)
	nsA := base + "-prod"
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsA}})
	createNAD(t, nsA, "net", nil)
	createNAD(t, base, "prod-net", nil)
	a := newPool(nsA, "net", nsA+"/net", "192.168.100.10", "192.168.100.20")
	b := newPool(base, "prod-net", base+"/prod-net", "192.168.100.10", "192.168.100.20")
	create(t, a)
	create(t, b)
	pods := map[*v1alpha1.IPPool]*corev1.Pod{}
	for _, p := range []*v1alpha1.IPPool{a, b} {
		eventually(t, 20*time.Second, "agent of "+p.Namespace+"/"+p.Name, func() error {
			pod, err := agentPod(t, p)
			if err != nil {
				return err
			}
			if _, err := agentConfigMap(p); err != nil {
				return err
			}
			pods[p] = pod
			return nil
		})
	}
	time.Sleep(2 * time.Second) // the pools would now be fighting over one pod and ConfigMap
	for _, p := range []*v1alpha1.IPPool{a, b} {
		pod, err := agentPod(t, p)
		if err != nil || pod.UID != pods[p].UID || pod.Labels[LabelIPPoolNamespace] != p.Namespace || pod.Labels[LabelIPPoolName] != p.Name {
			t.Errorf("agent of %s/%s replaced or taken: %v %+v", p.Namespace, p.Name, err, pod.ObjectMeta)
		}
		cm, err := agentConfigMap(p)
		want, _ := generatedConfig(p)
		if err != nil || cm.Data[ConfigKey] != want {
			t.Errorf("config of %s/%s: %v %q", p.Namespace, p.Name, err, cm.Data[ConfigKey])
		}
	}
}

// An upgrade from a controller that named the agent <ns>-<pool>-agent:
// the old pod goes, the user's config under the old name carries over.
func TestAgentRenameOnUpgradeKeepsUserConfig(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	gen, err := generatedConfig(pool)
	if err != nil {
		t.Fatal(err)
	}
	edited := gen + "    - mtu: 9000\n"
	oldCM := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: agentNS, Name: ns + "-pool-agent-config", Labels: agentLabels(pool),
			Annotations: map[string]string{AnnotationGeneratedHash: agentconfig.Hash(gen)}},
		Data: map[string]string{ConfigKey: edited},
	}
	create(t, oldCM)
	oldPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: agentNS, Name: ns + "-pool-agent", Labels: agentLabels(pool)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: AgentContainer, Image: "agent:old"}}},
	}
	create(t, oldPod)
	create(t, pool)
	startController(t, managerOpts{})

	var pod *corev1.Pod
	eventually(t, 20*time.Second, "agent under the new name", func() (err error) { pod, err = agentPod(t, pool); return })
	if pod.Annotations[AnnotationConfigHash] != agentconfig.Hash(edited) {
		t.Errorf("new agent runs config %s, want the user's %s", pod.Annotations[AnnotationConfigHash], agentconfig.Hash(edited))
	}
	cm, err := agentConfigMap(pool)
	if err != nil || cm.Data[ConfigKey] != edited {
		t.Fatalf("user config not carried over: %v %q", err, cm.Data[ConfigKey])
	}
	for _, obj := range []client.Object{&corev1.Pod{}, &corev1.ConfigMap{}} {
		name := oldPod.Name
		if _, ok := obj.(*corev1.ConfigMap); ok {
			name = oldCM.Name
		}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: agentNS, Name: name}, obj); !isNotFound(err) {
			t.Errorf("old %T %s still there: %v", obj, name, err)
		}
	}
	eventually(t, 10*time.Second, "carry-over event", func() error { return hasEvent(ns, "pool", "ConfigCarriedOver", oldCM.Name) })
}

// createNode makes a Ready node and binds pod to it, as the scheduler would.
func bindToNewNode(t *testing.T, pod *corev1.Pod, name string) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	create(t, node)
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), node) })
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now(), LastHeartbeatTime: metav1.Now()}}
	if err := k8s.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	if err := k8s.SubResource("binding").Create(ctx, pod, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node.Name},
	}); err != nil {
		t.Fatalf("bind pod: %v", err)
	}
	return node
}

func setNodeReady(t *testing.T, node *corev1.Node, ready corev1.ConditionStatus) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(node), node); err != nil {
		t.Fatal(err)
	}
	node.Status.Conditions[0].Status = ready
	node.Status.Conditions[0].LastTransitionTime = metav1.Now()
	if err := k8s.Status().Update(context.Background(), node); err != nil {
		t.Fatal(err)
	}
}

// An agent pod deleted (drain, eviction, taint manager) on a node that then
// stays NotReady never finishes terminating: no kubelet confirms it. It is
// force-deleted after the node grace period and a new agent created.
func TestTerminatingAgentOnDeadNodeIsReplaced(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{nodeGrace: time.Second})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, pool)
	var pod *corev1.Pod
	eventually(t, 20*time.Second, "agent pod", func() (err error) { pod, err = agentPod(t, pool); return })
	node := bindToNewNode(t, pod, "node-"+ns)
	if err := k8s.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// On a ready node the kubelet finishes the delete: nothing is forced.
	time.Sleep(1500 * time.Millisecond)
	p, err := agentPod(t, pool)
	if err != nil || p.UID != pod.UID || p.DeletionTimestamp.IsZero() {
		t.Fatalf("want the old pod still terminating on a ready node: %v %+v", err, p.ObjectMeta)
	}
	setNodeReady(t, node, corev1.ConditionUnknown)
	waitNewPod(t, pool, pod.UID)
	eventually(t, 10*time.Second, "forced delete event", func() error { return hasEvent(ns, "pool", "AgentRedeploy", "terminating (forced: node") })
}

// Pausing keeps the user's config; unpausing runs it again.
func TestPauseKeepsUserConfig(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, pool)
	key := client.ObjectKeyFromObject(pool)
	var pod *corev1.Pod
	eventually(t, 20*time.Second, "agent pod", func() (err error) { pod, err = agentPod(t, pool); return })
	cm, err := agentConfigMap(pool)
	if err != nil {
		t.Fatal(err)
	}
	edited := cm.Data[ConfigKey] + "    - mtu: 9000\n"
	cm.Data[ConfigKey] = edited
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	pod = waitNewPod(t, pool, pod.UID)
	setPaused(t, key, true)
	eventually(t, 20*time.Second, "agent stopped on pause", func() error {
		if _, err := agentPod(t, pool); !isNotFound(err) {
			return fmt.Errorf("pod still there: %v", err)
		}
		return nil
	})
	if cm, err := agentConfigMap(pool); err != nil || cm.Data[ConfigKey] != edited {
		t.Fatalf("user config lost on pause: %v", err)
	}
	setPaused(t, key, false)
	eventually(t, 20*time.Second, "agent back on the user's config", func() error {
		p, err := agentPod(t, pool)
		if err != nil {
			return err
		}
		if p.Annotations[AnnotationConfigHash] != agentconfig.Hash(edited) {
			return fmt.Errorf("pod runs config %s", p.Annotations[AnnotationConfigHash])
		}
		return nil
	})
	if cm, err := agentConfigMap(pool); err != nil || cm.Data[ConfigKey] != edited {
		t.Fatalf("user config lost on unpause: %v", err)
	}
}

// The hold annotation keeps the image through every recreation of the pod.
func TestHeldImageSurvivesRecreation(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "held", ns+"/net", "192.168.100.10", "192.168.100.20")
	pool.Annotations = map[string]string{AnnotationHoldUpgrade: "true"}
	key := client.ObjectKeyFromObject(pool)
	old := startController(t, managerOpts{image: "agent:v1"})
	create(t, pool)
	var pod *corev1.Pod
	eventually(t, 20*time.Second, "agent pod", func() (err error) { pod, err = agentPod(t, pool); return })
	eventually(t, 10*time.Second, "agentPodRef", func() error {
		if r := getPool(t, key).Status.AgentPodRef; r == nil || r.Image != "agent:v1" {
			return fmt.Errorf("agentPodRef %+v", r)
		}
		return nil
	})
	old.stop()
	startController(t, managerOpts{image: "agent:v2"})
	wantV1 := func(p *corev1.Pod, after string) {
		t.Helper()
		if img := p.Spec.Containers[0].Image; img != "agent:v1" {
			t.Errorf("after %s the held agent runs %s", after, img)
		}
	}
	// Deleted (eviction, node death): the new pod keeps the held image.
	if err := k8s.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod = waitNewPod(t, pool, pod.UID)
	wantV1(pod, "a delete")
	// Config edit.
	cm, err := agentConfigMap(pool)
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[ConfigKey] += "    - mtu: 9000\n"
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	pod = waitNewPod(t, pool, pod.UID)
	wantV1(pod, "a config edit")
	// Pause and unpause.
	setPaused(t, key, true)
	eventually(t, 20*time.Second, "agent stopped", func() error {
		if _, err := agentPod(t, pool); !isNotFound(err) {
			return fmt.Errorf("pod still there: %v", err)
		}
		return nil
	})
	setPaused(t, key, false)
	pod = waitNewPod(t, pool, pod.UID)
	wantV1(pod, "a pause")
	// Lifting the hold upgrades.
	// The controller writes the pool's status concurrently: retry a
	// stale read, as any client must.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := getPool(t, key)
		delete(p.Annotations, AnnotationHoldUpgrade)
		return k8s.Update(ctx, p)
	}); err != nil {
		t.Fatal(err)
	}
	pod = waitNewPod(t, pool, pod.UID)
	if img := pod.Spec.Containers[0].Image; img != "agent:v2" {
		t.Errorf("hold lifted, agent runs %s", img)
	}
}

// A change of the NAD's CNI config (bridge, VLAN) needs a new agent pod.
func TestNADConfigChangeRollsTheAgent(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, pool)
	var pod *corev1.Pod
	eventually(t, 20*time.Second, "agent pod", func() (err error) { pod, err = agentPod(t, pool); return })
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "net"}, nad); err != nil {
		t.Fatal(err)
	}
	nad.Spec.Config = `{"cniVersion":"0.3.1","type":"bridge","bridge":"br1","vlan":100}`
	if err := k8s.Update(ctx, nad); err != nil {
		t.Fatal(err)
	}
	pod = waitNewPod(t, pool, pod.UID)
	if pod.Annotations[AnnotationNetworkHash] != agentconfig.Hash(nad.Spec.Config) {
		t.Errorf("new pod network hash %q, want %q", pod.Annotations[AnnotationNetworkHash], agentconfig.Hash(nad.Spec.Config))
	}
	eventually(t, 10*time.Second, "redeploy event", func() error {
		return hasEvent(ns, "pool", "AgentRedeploy", "network attachment config changed")
	})
}

// A deleted NAD takes the agent away (the pool says why); the agent comes
// back with the NAD.
func TestDeletedNADRemovesTheAgentUntilItReturns(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, pool)
	key := client.ObjectKeyFromObject(pool)
	var pod *corev1.Pod
	eventually(t, 20*time.Second, "agent pod", func() (err error) { pod, err = agentPod(t, pool); return })
	if err := k8s.Delete(ctx, &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "net"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "agent removed", func() error {
		if _, err := agentPod(t, pool); !isNotFound(err) {
			return fmt.Errorf("pod still there: %v", err)
		}
		return nil
	})
	p := waitPoolCondition(t, key, v1alpha1.Registered, corev1.ConditionFalse)
	if got := condition(p.Status.Conditions, v1alpha1.AgentReady); got != "False/"+ReasonNetworkMissing {
		t.Errorf("AgentReady = %s", got)
	}
	eventually(t, 10*time.Second, "event", func() error { return hasEvent(ns, "pool", ReasonNetworkMissing, ns+"/net") })
	createNAD(t, ns, "net", nil)
	waitNewPod(t, pool, pod.UID)
	waitPoolCondition(t, key, v1alpha1.Registered, corev1.ConditionTrue)
}

// A VM with more NICs on managed networks than a VMNetCfg holds: the first
// ones (in the VM's order) get addresses, the VM gets an event naming the rest.
func TestVMWithMoreNICsThanAVMNetCfgHolds(t *testing.T) {
	startController(t, managerOpts{})
	ns := newNamespace(t)
	n := v1alpha1.MaxNetworkConfigs + 1
	var nets []kubevirtv1.Network
	var ifaces []kubevirtv1.Interface
	want := map[string]string{}
	for i := range n {
		net := fmt.Sprintf("net-%d", i)
		createNAD(t, ns, net, nil)
		create(t, newPool(ns, "pool-"+net, ns+"/"+net, "192.168.100.10", "192.168.100.20"))
		nicName := fmt.Sprintf("nic%d", i)
		// The VM's order is not the sorted one, so that "the first NICs" is tested.
		nets = append([]kubevirtv1.Network{multusNet(nicName, ns+"/"+net)}, nets...)
		mac := fmt.Sprintf("02:00:00:00:00:%02x", i)
		ifaces = append(ifaces, kubevirtv1.Interface{Name: nicName, MacAddress: mac})
		if i > 0 { // nic0 is last in the VM's order
			want[mac] = "192.168.100.10"
		}
	}
	for i := range n {
		waitPoolCondition(t, types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("pool-net-%d", i)}, v1alpha1.CacheReady, corev1.ConditionTrue)
	}
	vm := newVM(ns, "vm", "", nets...)
	vm.Spec.Template.Spec.Domain.Devices.Interfaces = ifaces
	create(t, vm)
	waitVMNetCfg(t, types.NamespacedName{Namespace: ns, Name: "vm"}, "first NICs allocated",
		allocatedIs(corev1.ConditionTrue, ReasonAllocated, want, v1alpha1.StateAllocated))
	eventually(t, 10*time.Second, "event on the VM", func() error {
		return hasEvent(ns, "vm", ReasonTooManyNICs, "no address for nic0 ("+ns+"/net-0)")
	})
}

// helm uninstall removes the agents of pools left behind: every agent pod
// and agent ConfigMap is owned by the chart's ConfigMap (--agent-owner), so
// the garbage collector deletes them with it. A ConfigMap made before the
// owner was passed gets it too.
func TestAgentsOwnedByTheChart(t *testing.T) {
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: agentNS, Name: "vm-dhcp-agent-values-" + newNamespace(t)}}
	create(t, owner)
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "net", ns+"/net", "192.168.100.10", "192.168.100.20")
	// The ConfigMap an older controller made, without owner.
	gen, err := generatedConfig(pool)
	if err != nil {
		t.Fatal(err)
	}
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: agentNS, Name: AgentConfigMapName(pool), Labels: agentLabels(pool),
		Annotations: map[string]string{AnnotationGeneratedHash: agentconfig.Hash(gen)}}, Data: map[string]string{ConfigKey: gen}})
	ref := metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}
	startController(t, managerOpts{owner: &ref})
	create(t, pool)
	owned := func(refs []metav1.OwnerReference) bool {
		return slices.ContainsFunc(refs, func(r metav1.OwnerReference) bool { return r.UID == owner.UID && r.Kind == "ConfigMap" })
	}
	eventually(t, 20*time.Second, "agent pod and ConfigMap owned by the chart's ConfigMap", func() error {
		pod, err := agentPod(t, pool)
		if err != nil {
			return err
		}
		cm, err := agentConfigMap(pool)
		if err != nil {
			return err
		}
		if !owned(pod.OwnerReferences) || !owned(cm.OwnerReferences) {
			return fmt.Errorf("owners: pod %+v, ConfigMap %+v", pod.OwnerReferences, cm.OwnerReferences)
		}
		return nil
	})
}
