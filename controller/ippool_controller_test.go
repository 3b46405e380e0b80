package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/agentconfig"
)

func agentPod(t testing.TB, pool *v1alpha1.IPPool) (*corev1.Pod, error) {
	t.Helper()
	pod := &corev1.Pod{}
	err := k8s.Get(context.Background(), types.NamespacedName{Namespace: agentNS, Name: AgentPodName(pool)}, pod)
	return pod, err
}

func agentConfigMap(pool *v1alpha1.IPPool) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{}
	err := k8s.Get(context.Background(), types.NamespacedName{Namespace: agentNS, Name: AgentConfigMapName(pool)}, cm)
	return cm, err
}

// waitNewPod waits for an agent pod whose UID differs from old.
func waitNewPod(t testing.TB, pool *v1alpha1.IPPool, old types.UID) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 20*time.Second, "a new agent pod", func() error {
		p, err := agentPod(t, pool)
		if err != nil {
			return err
		}
		if p.UID == old || !p.DeletionTimestamp.IsZero() {
			return fmt.Errorf("still the old pod %s", p.UID)
		}
		pod = p
		return nil
	})
	return pod
}

func setPodStatus(t testing.TB, pod *corev1.Pod, phase corev1.PodPhase, ready bool) {
	t.Helper()
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	pod.Status.Phase = phase
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.Now()}}
	if err := k8s.Status().Update(context.Background(), pod); err != nil {
		t.Fatalf("set pod status: %v", err)
	}
}

func TestIPPoolLifecycle(t *testing.T) {
	ctx := context.Background()
	ctl := startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", map[string]string{LabelClusterNetwork: "mgmt"})
	// Router .1 and server .2 inside the range: RESERVED; .20 excluded.
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.1", "192.168.100.30", "192.168.100.20")
	create(t, pool)
	key := client.ObjectKeyFromObject(pool)

	p := waitPoolCondition(t, key, v1alpha1.CacheReady, corev1.ConditionTrue)
	if got := condition(p.Status.Conditions, v1alpha1.Registered); got != "True/"+ReasonRegistered {
		t.Errorf("Registered = %s", got)
	}
	if !slices.Contains(p.Finalizers, Finalizer) {
		t.Errorf("no finalizer on pool: %v", p.Finalizers)
	}
	wantAlloc := map[string]string{"192.168.100.1": "RESERVED", "192.168.100.2": "RESERVED", "192.168.100.20": "EXCLUDED"}
	if p.Status.IPv4 == nil || !mapsEqual(p.Status.IPv4.Allocated, wantAlloc) || p.Status.IPv4.Used != 0 || p.Status.IPv4.Available != 27 {
		t.Errorf("status.ipv4 = %+v, want allocated %v used 0 available 27", p.Status.IPv4, wantAlloc)
	}
	if p.Status.LastUpdate.IsZero() {
		t.Error("status.lastUpdate not set")
	}
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "net"}, nad); err != nil {
		t.Fatal(err)
	}
	if nad.Labels[LabelIPPoolNamespace] != ns || nad.Labels[LabelIPPoolName] != "pool" {
		t.Errorf("NAD labels = %v", nad.Labels)
	}

	// The agent: ConfigMap with the generated config, pod as documented.
	var cm *corev1.ConfigMap
	eventually(t, 10*time.Second, "agent config", func() (err error) { cm, err = agentConfigMap(pool); return })
	wantCfg, _ := agentconfig.Render(agentconfig.Params{ServerIP: "192.168.100.2", PoolNamespace: ns, PoolName: "pool"})
	if cm.Data[ConfigKey] != wantCfg {
		t.Errorf("config = %q, want %q", cm.Data[ConfigKey], wantCfg)
	}
	var pod *corev1.Pod
	eventually(t, 10*time.Second, "agent pod", func() (err error) { pod, err = agentPod(t, pool); return })
	checkAgentPod(t, pod, pool, ns, cm)

	p = waitPoolCondition(t, key, v1alpha1.AgentReady, corev1.ConditionFalse)
	if p.Status.AgentPodRef == nil || p.Status.AgentPodRef.Name != pod.Name || p.Status.AgentPodRef.UID != pod.UID || p.Status.AgentPodRef.Image != "vm-dhcp-agent:test" {
		t.Errorf("agentPodRef = %+v, pod %s %s", p.Status.AgentPodRef, pod.Name, pod.UID)
	}
	setPodStatus(t, pod, corev1.PodRunning, true)
	waitPoolCondition(t, key, v1alpha1.AgentReady, corev1.ConditionTrue)
	setPodStatus(t, pod, corev1.PodRunning, false)
	waitPoolCondition(t, key, v1alpha1.AgentReady, corev1.ConditionFalse)

	// Deleted pod: recreated, with an event.
	if err := k8s.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod2 := waitNewPod(t, pool, pod.UID)
	eventually(t, 10*time.Second, "deploy event", func() error { return hasEvent(ns, "pool", "AgentDeployed", pod2.Name) })
	// A Failed pod is replaced.
	setPodStatus(t, pod2, corev1.PodFailed, false)
	pod3 := waitNewPod(t, pool, pod2.UID)
	eventually(t, 10*time.Second, "redeploy event", func() error { return hasEvent(ns, "pool", "AgentRedeploy", "Failed") })
	eventually(t, 10*time.Second, "agentPodRef follows", func() error {
		if r := getPool(t, key).Status.AgentPodRef; r == nil || r.UID != pod3.UID {
			return fmt.Errorf("agentPodRef %+v", r)
		}
		return nil
	})

	// Metrics follow the pool.
	eventually(t, 10*time.Second, "metrics", func() error {
		got := gaugeValue(ctl.metrics.PoolAvailable, key.String(), "192.168.100.0/24", ns+"/net")
		if got != 27 {
			return fmt.Errorf("available gauge = %v", got)
		}
		return nil
	})

	// Pause: the agent goes, its config and the allocations stay, Stopped.
	setPaused(t, key, true)
	p = waitPoolCondition(t, key, v1alpha1.Stopped, corev1.ConditionTrue)
	eventually(t, 10*time.Second, "agent removed on pause", func() error {
		if _, err := agentPod(t, pool); !isNotFound(err) {
			return fmt.Errorf("pod still there: %v", err)
		}
		return nil
	})
	if _, err := agentConfigMap(pool); err != nil {
		t.Errorf("config removed on pause: %v", err)
	}
	if !mapsEqual(p.Status.IPv4.Allocated, wantAlloc) {
		t.Errorf("allocations changed on pause: %v", p.Status.IPv4.Allocated)
	}
	if condition(p.Status.Conditions, v1alpha1.AgentReady) != "False/"+ReasonPaused {
		t.Errorf("AgentReady on pause = %s", condition(p.Status.Conditions, v1alpha1.AgentReady))
	}
	setPaused(t, key, false)
	waitPoolCondition(t, key, v1alpha1.Stopped, corev1.ConditionFalse)
	eventually(t, 10*time.Second, "agent back on unpause", func() error {
		if _, err := agentConfigMap(pool); err != nil {
			return err
		}
		_, err := agentPod(t, pool)
		return err
	})

	// Delete: nothing left behind.
	if err := k8s.Delete(ctx, pool); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "pool and agent gone", func() error {
		if err := k8s.Get(ctx, key, &v1alpha1.IPPool{}); !isNotFound(err) {
			return fmt.Errorf("pool still there: %v", err)
		}
		if _, err := agentPod(t, pool); !isNotFound(err) {
			return fmt.Errorf("pod still there: %v", err)
		}
		if _, err := agentConfigMap(pool); !isNotFound(err) {
			return fmt.Errorf("configmap still there: %v", err)
		}
		nad := &nadv1.NetworkAttachmentDefinition{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "net"}, nad); err != nil {
			return err
		}
		if _, ok := nad.Labels[LabelIPPoolName]; ok {
			return fmt.Errorf("NAD still labelled: %v", nad.Labels)
		}
		if _, ok := ctl.store.IPAM(key); ok {
			return fmt.Errorf("IPAM still loaded")
		}
		return nil
	})
}

func checkAgentPod(t *testing.T, pod *corev1.Pod, pool *v1alpha1.IPPool, ns string, cm *corev1.ConfigMap) {
	t.Helper()
	for k, v := range map[string]string{LabelAppName: AgentAppName, LabelIPPoolNamespace: ns, LabelIPPoolName: pool.Name} {
		if pod.Labels[k] != v || cm.Labels[k] != v {
			t.Errorf("label %s: pod %q configmap %q, want %q", k, pod.Labels[k], cm.Labels[k], v)
		}
	}
	var multus []map[string]string
	if err := json.Unmarshal([]byte(pod.Annotations[AnnotationMultus]), &multus); err != nil ||
		len(multus) != 1 || multus[0]["namespace"] != ns || multus[0]["name"] != "net" || multus[0]["interface"] != "eth1" {
		t.Errorf("multus annotation = %q", pod.Annotations[AnnotationMultus])
	}
	if pod.Annotations[AnnotationConfigHash] != agentconfig.Hash(cm.Data[ConfigKey]) {
		t.Errorf("config hash annotation %q, config hash %q", pod.Annotations[AnnotationConfigHash], agentconfig.Hash(cm.Data[ConfigKey]))
	}
	c := pod.Spec.Containers[0]
	wantArgs := []string{"--conf", "/etc/coredhcp/config.yaml", "--health-addr", ":8080", "--interface-address", "eth1=192.168.100.2/24"}
	if c.Name != "agent" || !slices.Equal(c.Args, wantArgs) || c.Image != "vm-dhcp-agent:test" {
		t.Errorf("container %s image %s args %v", c.Name, c.Image, c.Args)
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("probes or requests missing: %+v", c)
	}
	if c.SecurityContext == nil || !slices.Equal(c.SecurityContext.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities = %+v", c.SecurityContext)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	if m, ok := mounts["/etc/coredhcp"]; !ok || !m.ReadOnly {
		t.Errorf("config mount = %+v", mounts)
	}
	if _, ok := mounts["/var/lib/vm-dhcp"]; !ok {
		t.Errorf("no snapshot mount: %+v", mounts)
	}
	if pod.Spec.ServiceAccountName != "vm-dhcp-agent" {
		t.Errorf("service account %q", pod.Spec.ServiceAccountName)
	}
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil ||
		a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Key != "network.harvesterhci.io/mgmt" {
		t.Errorf("node affinity = %+v", a)
	}
}

func setPaused(t testing.TB, key types.NamespacedName, paused bool) {
	t.Helper()
	p := getPool(t, key)
	p.Spec.Paused = ptr.To(paused)
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestSecondPoolOnSameNetworkIsRefused(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	first := newPool(ns, "first", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, first)
	waitPoolCondition(t, client.ObjectKeyFromObject(first), v1alpha1.Registered, corev1.ConditionTrue)
	second := newPool(ns, "second", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, second)
	p := waitPoolCondition(t, client.ObjectKeyFromObject(second), v1alpha1.Registered, corev1.ConditionFalse)
	if c := v1alpha1.FindCondition(p.Status.Conditions, v1alpha1.Registered); c.Reason != ReasonNetworkTaken {
		t.Errorf("reason %s", c.Reason)
	}
	eventually(t, 10*time.Second, "refusal event", func() error { return hasEvent(ns, "second", ReasonNetworkTaken, "first") })
	// No loop: the refused pool's resourceVersion settles.
	rv := getPool(t, client.ObjectKeyFromObject(second)).ResourceVersion
	time.Sleep(2 * time.Second)
	if now := getPool(t, client.ObjectKeyFromObject(second)).ResourceVersion; now != rv {
		t.Errorf("refused pool keeps being written: %s -> %s", rv, now)
	}
	if _, err := agentPod(t, second); !isNotFound(err) {
		t.Errorf("refused pool has an agent: %v", err)
	}
	// When the first goes, the second takes over.
	if err := k8s.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitPoolCondition(t, client.ObjectKeyFromObject(second), v1alpha1.Registered, corev1.ConditionTrue)
}

func TestUserEditedConfigIsKeptAndRollsTheAgent(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, pool)
	var pod *corev1.Pod
	eventually(t, 20*time.Second, "agent pod", func() (err error) { pod, err = agentPod(t, pool); return })
	cm, err := agentConfigMap(pool)
	if err != nil {
		t.Fatal(err)
	}
	generated := cm.Data[ConfigKey]
	edited := generated + "    - mtu: 9000\n"
	cm.Data[ConfigKey] = edited
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	pod2 := waitNewPod(t, pool, pod.UID)
	if pod2.Annotations[AnnotationConfigHash] != agentconfig.Hash(edited) {
		t.Errorf("new pod config hash %s, want hash of edited config %s", pod2.Annotations[AnnotationConfigHash], agentconfig.Hash(edited))
	}
	eventually(t, 10*time.Second, "user-edit event", func() error {
		return hasEvent(ns, "pool", "ConfigEditedByUser", "config edited by user, keeping it")
	})
	// The edit survives later reconciles (poke the pool to force one).
	p := getPool(t, client.ObjectKeyFromObject(pool))
	p.Annotations = map[string]string{"poke": "1"}
	if err := k8s.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if cm, err = agentConfigMap(pool); err != nil || cm.Data[ConfigKey] != edited {
		t.Fatalf("user edit overwritten: %v %q", err, cm.Data[ConfigKey])
	}
	// Deleting the ConfigMap brings the generated default back, and rolls the agent.
	if err := k8s.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "generated config back", func() error {
		cm, err := agentConfigMap(pool)
		if err != nil {
			return err
		}
		if cm.Data[ConfigKey] != generated {
			return fmt.Errorf("config %q", cm.Data[ConfigKey])
		}
		return nil
	})
	pod3 := waitNewPod(t, pool, pod2.UID)
	eventually(t, 20*time.Second, "agent on generated config", func() error {
		p, err := agentPod(t, pool)
		if err != nil {
			return err
		}
		if p.Annotations[AnnotationConfigHash] != agentconfig.Hash(generated) {
			return fmt.Errorf("pod %s has config hash %s", p.UID, p.Annotations[AnnotationConfigHash])
		}
		return nil
	})
	_ = pod3
}

func TestAgentImageUpgradeAndHold(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	held := newPool(ns, "held", ns+"/net", "192.168.100.10", "192.168.100.20")
	held.Annotations = map[string]string{AnnotationHoldUpgrade: "true"}
	createNAD(t, ns, "net2", nil)
	free := newPool(ns, "free", ns+"/net2", "192.168.100.10", "192.168.100.20")
	old := startController(t, managerOpts{image: "agent:v1"})
	create(t, held)
	create(t, free)
	var heldPod, freePod *corev1.Pod
	eventually(t, 20*time.Second, "agent pods", func() (err error) {
		if heldPod, err = agentPod(t, held); err != nil {
			return err
		}
		freePod, err = agentPod(t, free)
		return err
	})
	old.stop()
	startController(t, managerOpts{image: "agent:v2"})
	newFree := waitNewPod(t, free, freePod.UID)
	if img := newFree.Spec.Containers[0].Image; img != "agent:v2" {
		t.Errorf("upgraded agent runs %s", img)
	}
	time.Sleep(time.Second)
	p, err := agentPod(t, held)
	if err != nil || p.UID != heldPod.UID || p.Spec.Containers[0].Image != "agent:v1" {
		t.Errorf("held agent changed: %v %s %s", err, p.UID, p.Spec.Containers[0].Image)
	}
	_ = ctx
}

func TestAgentRecreatedWhenItsNodeDies(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{nodeGrace: time.Second})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, pool)
	var pod *corev1.Pod
	eventually(t, 20*time.Second, "agent pod", func() (err error) { pod, err = agentPod(t, pool); return })
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-" + ns}}
	create(t, node)
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now(), LastHeartbeatTime: metav1.Now()}}
	if err := k8s.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	// Bind the pod as the scheduler would.
	if err := k8s.SubResource("binding").Create(ctx, pod, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node.Name},
	}); err != nil {
		t.Fatalf("bind pod: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	if p, err := agentPod(t, pool); err != nil || p.UID != pod.UID {
		t.Fatalf("agent on a ready node was replaced: %v", err)
	}
	node.Status.Conditions[0].Status = corev1.ConditionFalse
	node.Status.Conditions[0].LastTransitionTime = metav1.Now()
	if err := k8s.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	waitNewPod(t, pool, pod.UID)
	eventually(t, 10*time.Second, "node event", func() error { return hasEvent(ns, "pool", "AgentRedeploy", "not ready") })
	_ = k8s.Delete(ctx, node)
}

func TestExcludeAddedToRunningPool(t *testing.T) {
	ctx := context.Background()
	startController(t, managerOpts{})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := newPool(ns, "pool", ns+"/net", "192.168.100.10", "192.168.100.20")
	create(t, pool)
	key := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, key, v1alpha1.CacheReady, corev1.ConditionTrue)
	p := getPool(t, key)
	p.Spec.IPv4Config.Pool.Exclude = []v1alpha1.IPv4Address{"192.168.100.15"}
	if err := k8s.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "new exclude in status", func() error {
		p := getPool(t, key)
		if p.Status.IPv4 == nil || p.Status.IPv4.Allocated["192.168.100.15"] != "EXCLUDED" || p.Status.IPv4.Available != 10 {
			return fmt.Errorf("status %+v", p.Status.IPv4)
		}
		return nil
	})
}
