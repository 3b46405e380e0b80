package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
	"github.com/vm-dhcp/vm-dhcp/test/e2e/vm"
)

// renewEvery makes the VM renew often (a real guest renews at T1, half the
// 300 s lease), so failover and upgrade are seen within seconds.
const renewEvery = 10 * time.Second

const (
	vmName      = "test-vm"       // examples/vm.yaml, in default
	poolServer  = "192.168.100.2" // examples/dual-stack-ippool.yaml (Harvester's example plus ipv6Config)
	poolFile    = "dual-stack-ippool.yaml"
	poolDNS6    = "2606:4700:4700::1111"
	poolServer6 = "fd00:100::2"
	agentLabel  = "app.kubernetes.io/name=vm-dhcp-agent"
)

// vmMAC is the MAC of the VirtualMachine's NIC, read from the object once
// it is applied; QEMU's guest NIC gets it.
var vmMAC string

// TestRealNode is issue 13's story on real nodes, step by step; the first
// failure ends it.
func TestRealNode(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	cs := cluster.Clientset()
	root := testenv.RepoRoot()
	chart := filepath.Join(root, "charts", "vm-dhcp-controller")
	var guest *vm.VM
	var lease vm.Event
	consoleLog := filepath.Join(cluster.opts.WorkDir, "logs", "vm-console.log")
	defer func() {
		if guest != nil {
			_ = guest.Stop()
		}
	}()

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"helm install: controller and webhook pods from our images Ready through their probes", func(t *testing.T) {
			// Third-party CRDs the controller watches (KubeVirt, Multus).
			if out, err := kubectl(ctx, "apply", "-f", filepath.Join(root, "test", "crds")); err != nil {
				t.Fatalf("kubectl apply test/crds: %v\n%s", err, out)
			}
			start := time.Now()
			out, err := helm(ctx, "install", release, chart, "--namespace", namespace, "--create-namespace",
				"--set", "controller.replicas=2", "--set", "controller.image.tag="+tag1,
				"--set", "webhook.image.tag="+tag1, "--set", "agent.image.tag="+tag1,
				"--wait", "--timeout", "5m")
			if err != nil {
				t.Fatalf("helm install: %v\n%s\n%s", err, out, describe(ctx))
			}
			t.Logf("helm install --wait took %s", time.Since(start).Round(time.Second))
			for _, d := range []string{"vm-dhcp-controller", "vm-dhcp-webhook"} {
				dep, err := cs.AppsV1().Deployments(namespace).Get(ctx, deploymentName(t, d), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				assertDeploymentOn(t, dep, tag1)
			}
		}},
		{"two controller replicas elect one leader", func(t *testing.T) {
			eventually(t, 60*time.Second, "leader lease held by a controller pod", func() error {
				lease, err := cs.CoordinationV1().Leases(namespace).Get(ctx, "vm-dhcp-controller.network.harvesterhci.io", metav1.GetOptions{})
				if err != nil {
					return err
				}
				holder := ""
				if lease.Spec.HolderIdentity != nil {
					holder = *lease.Spec.HolderIdentity
				}
				pods := podsOf(t, "app.kubernetes.io/component=controller")
				if len(pods) != 2 {
					return fmt.Errorf("%d controller pods", len(pods))
				}
				for _, p := range pods {
					if strings.HasPrefix(holder, p.Name) {
						t.Logf("leader: %s (of %s, %s)", holder, pods[0].Name, pods[1].Name)
						return nil
					}
				}
				return fmt.Errorf("lease holder %q is none of the controller pods", holder)
			})
		}},
		{"the apiserver calls the webhook through its Service", func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.yaml")
			if err := os.WriteFile(bad, []byte(`apiVersion: network.harvesterhci.io/v1alpha1
kind: IPPool
metadata: {name: bad, namespace: default}
spec:
  ipv4Config: {serverIP: 10.9.0.2, cidr: 10.9.0.0/24, router: 10.8.0.1}
  networkName: default/example
`), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := kubectl(ctx, "apply", "-f", bad)
			if err == nil || !strings.Contains(out, "admission webhook") || !strings.Contains(out, "denied the request") {
				t.Fatalf("kubectl apply of a pool with a router outside its CIDR: err %v, output\n%s\nwant a denial by the admission webhook", err, out)
			}
			t.Logf("webhook: %s", strings.TrimSpace(out))
			if _, err := kubectl(ctx, "get", "ippool", "-n", "default", "bad"); err == nil {
				t.Fatal("the refused pool was stored anyway")
			}
		}},
		{"a dual-stack IPPool on a bridge NAD: agent pod scheduled; attached by the CNI; Ready", func(t *testing.T) {
			nad, err := nadWithoutVLAN(filepath.Join(root, "examples", "nad.yaml"), workDir) // kubectl splits -f on commas: not t.TempDir()
			if err != nil {
				t.Fatal(err)
			}
			// Harvester's example pool with an IPv6 half (api/v1alpha1's
			// examples_test.go keeps the two files in step).
			for _, f := range []string{nad, filepath.Join(root, "examples", poolFile), filepath.Join(root, "examples", "vm.yaml")} {
				if out, err := kubectl(ctx, "apply", "-f", f); err != nil {
					t.Fatalf("kubectl apply -f %s: %v\n%s", f, err, out)
				}
			}
			agent := readyAgent(t, "", 3*time.Minute)
			assertAgentPod(t, agent, tag1)
			// The real scheduler placed it (the controller leaves nodeName
			// to it): its Scheduled event, from default-scheduler.
			eventually(t, 30*time.Second, "Scheduled event of "+agent.Name, func() error {
				evs, err := cs.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{
					FieldSelector: "involvedObject.uid=" + string(agent.UID) + ",reason=Scheduled"})
				if err != nil {
					return err
				}
				for _, e := range evs.Items {
					if e.ReportingController == "default-scheduler" || e.Source.Component == "default-scheduler" {
						t.Logf("scheduler: %s", e.Message)
						return nil
					}
				}
				return fmt.Errorf("no Scheduled event from default-scheduler among %d", len(evs.Items))
			})
			// The guest's MAC is the one the VirtualMachine object gives its
			// NIC, read back from the apiserver.
			out, err := kubectlOut(ctx, "get", "virtualmachines.kubevirt.io", "-n", "default", vmName,
				"-o", "jsonpath={.spec.template.spec.domain.devices.interfaces[0].macAddress}")
			if err != nil {
				t.Fatalf("read the VirtualMachine's MAC: %v\n%s", err, out)
			}
			vmMAC = strings.TrimSpace(out)
			if _, err := net.ParseMAC(vmMAC); err != nil {
				t.Fatalf("VirtualMachine %s NIC MAC %q: %v", vmName, vmMAC, err)
			}
		}},
		{"a real VM (QEMU) with the VirtualMachine's MAC gets address, router, DNS and MTU from the agent pod", func(t *testing.T) {
			// The pool gives an MTU too (an extension of Harvester's API).
			if out, err := kubectl(ctx, "patch", "ippool", "-n", "default", "example", "--type=merge",
				"-p", `{"spec":{"ipv4Config":{"mtu":1400}}}`); err != nil {
				t.Fatalf("set the pool's MTU: %v\n%s", err, out)
			}
			start := time.Now()
			v, err := vm.Start(ctx, vm.Options{MAC: vmMAC, Netns: cluster.Netns(), Bridge: "mgmt-br",
				RenewEvery: renewEvery, ConsoleLog: consoleLog})
			if err != nil {
				t.Fatal(err)
			}
			guest = v // stopped when the whole story ends, not this step
			wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			lease, err = v.WaitLease(wctx)
			if err != nil {
				t.Fatalf("VM got no lease: %v\n%s", err, tail(consoleLog, 3000))
			}
			t.Logf("VM console: %s (%s after QEMU started)", lease.Line, time.Since(start).Round(time.Second))
			if lease.ServerID.String() != poolServer || lease.Router.String() != "192.168.100.1" ||
				len(lease.DNS) != 1 || lease.DNS[0].String() != "1.1.1.1" || lease.MTU != 1400 || lease.Addr.Bits() != 24 {
				t.Fatalf("VM lease %q: want server %s, router 192.168.100.1, dns 1.1.1.1, mtu 1400, /24", lease.Line, poolServer)
			}
			assertAllocated(t, lease.Addr.Addr().String())

			// Dual stack: the guest's DHCPv6 client (dhclient -6, DUID-LL of
			// its NIC) gets the address the pool's status holds for its MAC.
			lease6, err := v.WaitLease6(wctx)
			if err != nil {
				t.Fatalf("VM got no IPv6 address: %v\n%s", err, tail(consoleLog, 3000))
			}
			t.Logf("VM console: %s (%s after QEMU started)", lease6.Line, time.Since(start).Round(time.Second))
			if want := allocatedTo(t, "ipv6", vmMAC); lease6.Addr6.Addr().String() != want {
				t.Fatalf("VM holds %s; the pool's status.ipv6.allocated has %q for %s", lease6.Addr6, want, vmMAC)
			}
			if len(lease6.DNS6) != 1 || lease6.DNS6[0].String() != poolDNS6 || !slices.Contains(lease6.Search, "example.com") {
				t.Fatalf("VM IPv6 lease %q: want dns6 %s and search example.com", lease6.Line, poolDNS6)
			}
			if lease6.ValidLifetime < 590*time.Second || lease6.ValidLifetime > 600*time.Second ||
				lease6.PreferredLifetime < 290*time.Second || lease6.PreferredLifetime > 300*time.Second {
				t.Fatalf("VM IPv6 lease %q: want the pool's lifetimes (valid 600 s, preferred 300 s)", lease6.Line)
			}
		}},
		{"node failure: the agent is replaced on the other node, which answers the VM's next renewal", func(t *testing.T) {
			old := readyAgent(t, "", 10*time.Second)
			start := time.Now()
			if err := cluster.FailNode(old.Spec.NodeName); err != nil {
				t.Fatal(err)
			}
			t.Logf("node %s failed (kubelet, containerd and its containers killed)", old.Spec.NodeName)
			agent := readyAgent(t, old.Spec.NodeName, 4*time.Minute)
			ready := time.Now()
			t.Logf("agent %s Ready on %s %s after the failure", agent.Name, agent.Spec.NodeName, ready.Sub(start).Round(time.Second))
			renew := waitRenewAfter(t, guest, ready, lease.Addr.Addr().String(), consoleLog)
			t.Logf("VM console after the failover: %s", renew.Line)
			// The old agent is dead: the answer came from the new pod, whose
			// metrics (read through the apiserver's pod proxy) count it.
			if n := agentACKs(t, agent.Name); n < 1 {
				t.Fatalf("the new agent %s sent %d ACKs", agent.Name, n)
			}
			// The node stays dead: remove it as an operator would (kubectl
			// delete node), so kube-controller-manager's pod GC deletes the
			// pods still bound to it (the Deployments' replicas there never
			// finish terminating otherwise, and helm uninstall would leave them).
			if out, err := kubectl(ctx, "delete", "node", old.Spec.NodeName); err != nil {
				t.Fatalf("delete the dead node: %v\n%s", err, out)
			}
			eventually(t, 3*time.Minute, "pods of the dead node garbage-collected", func() error {
				pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + old.Spec.NodeName})
				if err != nil {
					return err
				}
				if n := len(pods.Items); n > 0 {
					return fmt.Errorf("%d pods still on %s", n, old.Spec.NodeName)
				}
				return nil
			})
		}},
		{"helm upgrade to a new tag rolls controller, webhook and agent; the guest keeps its lease", func(t *testing.T) {
			// Only this step's events count: during the node failure the VM's
			// forced renewals (every 10 s) met no server for two minutes.
			before := len(guest.Events())
			out, err := helm(ctx, "upgrade", release, chart, "--namespace", namespace, "--reuse-values",
				"--set", "controller.image.tag="+tag2, "--set", "webhook.image.tag="+tag2, "--set", "agent.image.tag="+tag2,
				"--wait", "--timeout", "5m")
			if err != nil {
				t.Fatalf("helm upgrade: %v\n%s\n%s", err, out, describe(ctx))
			}
			for _, d := range []string{"vm-dhcp-controller", "vm-dhcp-webhook"} {
				dep, err := cs.AppsV1().Deployments(namespace).Get(ctx, deploymentName(t, d), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				assertDeploymentOn(t, dep, tag2)
			}
			var agent *corev1.Pod
			eventually(t, 3*time.Minute, "agent Ready on the new image", func() (err error) {
				if agent, err = findReadyAgent(""); err != nil {
					return err
				}
				if img := agent.Spec.Containers[0].Image; img != ImageRef("agent", tag2) && !strings.HasSuffix(img, "vm-dhcp-agent:"+tag2) {
					return fmt.Errorf("agent image %s", img)
				}
				return nil
			})
			ready := time.Now()
			assertAgentPod(t, agent, tag2)
			ip := lease.Addr.Addr().String()
			assertAllocated(t, ip)
			renew := waitRenewAfter(t, guest, ready, ip, consoleLog)
			t.Logf("VM console after the upgrade: %s", renew.Line)
			// The renewal was answered by the agent on the new image.
			if n := agentACKs(t, agent.Name); n < 1 {
				t.Fatalf("the upgraded agent %s sent %d ACKs", agent.Name, n)
			}
			for _, e := range guest.Events()[before:] {
				if e.Kind == vm.Deconfig || e.Kind == vm.Nak || e.Kind == vm.Bound || e.Kind == vm.Expire6 {
					t.Errorf("the VM lost its lease at some point: %s", e.Line)
				}
			}
		}},
		{"helm uninstall removes what the chart and the controller created", func(t *testing.T) {
			// The VM first: the webhook refuses to delete a pool while a
			// VMNetCfg (which the controller removes after the VM) uses it.
			if out, err := kubectl(ctx, "delete", "-f", filepath.Join(root, "examples", "vm.yaml"), "--wait=true", "--timeout=120s"); err != nil {
				t.Fatalf("delete the example VM: %v\n%s", err, out)
			}
			eventually(t, 2*time.Minute, "the VM's VMNetCfg removed by the controller", func() error {
				out, err := kubectl(ctx, "get", "vmnetcfg", "-n", "default", "-o", "name")
				if err != nil || strings.TrimSpace(out) != "" {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			})
			if out, err := kubectl(ctx, "delete", "-f", filepath.Join(root, "examples", poolFile), "--wait=true", "--timeout=120s"); err != nil {
				t.Fatalf("delete the example pool: %v\n%s", err, out)
			}
			out, err := helm(ctx, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "3m")
			if err != nil {
				t.Fatalf("helm uninstall: %v\n%s", err, out)
			}
			eventually(t, 2*time.Minute, "nothing of the release left", func() error {
				left, err := leftovers(ctx)
				if err != nil {
					return err
				}
				if len(left) > 0 {
					return fmt.Errorf("left: %s", strings.Join(left, ", "))
				}
				return nil
			})
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			t.FailNow()
		}
	}
}

// deploymentName finds the chart's Deployment whose name contains want.
func deploymentName(t *testing.T, want string) string {
	t.Helper()
	deps, err := cluster.Clientset().AppsV1().Deployments(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		if strings.Contains(d.Name, strings.TrimPrefix(want, "vm-dhcp-")) {
			return d.Name
		}
	}
	t.Fatalf("no Deployment like %s in %s", want, namespace)
	return ""
}

func podsOf(t *testing.T, selector string) []corev1.Pod {
	t.Helper()
	pods, err := cluster.Clientset().CoreV1().Pods(namespace).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// assertDeploymentOn checks every replica of the Deployment runs our image
// of the tag, is Ready and was started by a kubelet (container ID from
// containerd, on a node).
func assertDeploymentOn(t *testing.T, dep *appsv1.Deployment, tag string) {
	t.Helper()
	want := *dep.Spec.Replicas
	// Ready through the chart's probes: without a readiness probe the
	// kubelet reports Ready as soon as the process starts. A missing probe
	// is in the spec: no point waiting for it.
	if c := dep.Spec.Template.Spec.Containers[0]; c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Fatalf("Deployment %s: container %s has readiness probe %v, liveness probe %v; want both", dep.Name, c.Name, c.ReadinessProbe != nil, c.LivenessProbe != nil)
	}
	eventually(t, 3*time.Minute, "Deployment "+dep.Name+" rolled out on "+tag, func() error {
		sel := metav1.FormatLabelSelector(dep.Spec.Selector)
		pods := podsOf(t, sel)
		ready := 0
		for _, p := range pods {
			img := p.Spec.Containers[0].Image
			if !strings.HasSuffix(img, ":"+tag) {
				return fmt.Errorf("pod %s runs %s", p.Name, img)
			}
			if !podReady(&p) {
				return fmt.Errorf("pod %s not Ready", p.Name)
			}
			cs := p.Status.ContainerStatuses
			if len(cs) == 0 || !strings.HasPrefix(cs[0].ContainerID, "containerd://") || p.Spec.NodeName == "" {
				return fmt.Errorf("pod %s: container %v on node %q", p.Name, cs, p.Spec.NodeName)
			}
			ready++
		}
		if int32(ready) != want {
			return fmt.Errorf("%d of %d pods Ready on %s", ready, want, tag)
		}
		return nil
	})
}

// readyAgent waits for the example pool's agent pod to be Ready on a node
// other than notOn.
func readyAgent(t *testing.T, notOn string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var agent *corev1.Pod
	eventually(t, timeout, "agent pod Ready", func() (err error) {
		agent, err = findReadyAgent(notOn)
		if err != nil {
			return fmt.Errorf("%w\n%s", err, describe(context.Background()))
		}
		return nil
	})
	return agent
}

// findReadyAgent is the example pool's agent pod if one is Ready on a node
// other than notOn, else an error saying what the agent pods are doing. It
// never fails the test, so callers can wait on their own condition (e.g. the
// upgrade's image) around it.
func findReadyAgent(notOn string) (*corev1.Pod, error) {
	list, err := cluster.Clientset().CoreV1().Pods(namespace).List(context.Background(), metav1.ListOptions{LabelSelector: agentLabel})
	if err != nil {
		return nil, fmt.Errorf("list agent pods: %w", err)
	}
	var s []string
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp == nil && p.Spec.NodeName != "" && p.Spec.NodeName != notOn && podReady(p) {
			return p, nil
		}
		s = append(s, fmt.Sprintf("%s on %q phase %s ready %v terminating %v", p.Name, p.Spec.NodeName, p.Status.Phase, podReady(p), p.DeletionTimestamp != nil))
	}
	return nil, fmt.Errorf("no Ready agent pod (not on %q): %v", notOn, s)
}

// assertAgentPod checks what the node did with the controller's pod spec:
// our image, the extra interface on the NAD (Multus's network-status), and
// the running agent process holding exactly the capabilities the spec adds.
func assertAgentPod(t *testing.T, agent *corev1.Pod, tag string) {
	t.Helper()
	if img := agent.Spec.Containers[0].Image; !strings.HasSuffix(img, "vm-dhcp-agent:"+tag) {
		t.Errorf("agent image %s, want tag %s", img, tag)
	}
	var statuses []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(agent.Annotations[nadv1.NetworkStatusAnnot]), &statuses); err != nil {
		t.Fatalf("network-status of %s: %v (%q)", agent.Name, err, agent.Annotations[nadv1.NetworkStatusAnnot])
	}
	found := false
	for _, s := range statuses {
		if s.Name == "default/example" && s.Interface == "eth1" && s.Mac != "" {
			found = true
		}
	}
	if !found {
		t.Errorf("network-status %+v has no eth1 on default/example", statuses)
	}
	if c := agent.Spec.Containers[0]; c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Errorf("agent container %s: readiness probe %v, liveness probe %v; want both (Ready through its own probe)", c.Name, c.ReadinessProbe != nil, c.LivenessProbe != nil)
	}
	pid := agentPID(t, agent)
	// readOnlyRootFilesystem, as the running process sees its root.
	if opts, err := rootMountOptions(pid); err != nil {
		t.Errorf("agent process %d root mount: %v", pid, err)
	} else if !slices.Contains(strings.Split(opts, ","), "ro") {
		t.Errorf("agent process %d root filesystem mounted %q, want read-only (readOnlyRootFilesystem: true)", pid, opts)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	// CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13).
	const want = 1<<10 | 1<<12 | 1<<13
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			got, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil || got != want {
				t.Errorf("agent process %d CapEff %s, want %x (NET_BIND_SERVICE, NET_ADMIN, NET_RAW only)", pid, strings.TrimSpace(v), want)
			}
		}
		if v, ok := strings.CutPrefix(l, "NoNewPrivs:"); ok && strings.TrimSpace(v) != "1" {
			t.Errorf("agent process %d NoNewPrivs %s, want 1 (allowPrivilegeEscalation: false)", pid, strings.TrimSpace(v))
		}
	}
	assertAgentServes6(t, pid)
	t.Logf("agent %s on %s: eth1 on default/example with IPv6, capabilities as the controller's spec says, server6 listening", agent.Name, agent.Spec.NodeName)
}

// assertAgentServes6 checks the agent's side of DHCPv6 in its pod's network
// namespace, as the kernel shows it (/proc/PID/net): eth1 has a usable
// (not tentative) link-local address, which server6's replies come from,
// and the pool's IPv6 server address; a UDP socket listens on port 547
// (the listener of the server6 section the controller rendered,
// "[ff02::1:2%eth1]:547": nothing else in the pod uses that port).
func assertAgentServes6(t *testing.T, pid int) {
	t.Helper()
	eventually(t, 30*time.Second, "agent eth1 IPv6 addresses and server6 socket", func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/if_inet6", pid))
		if err != nil {
			return err
		}
		linkLocal, server := false, false
		for _, l := range strings.Split(string(b), "\n") {
			// address ifindex prefixlen scope flags name; IFA_F_TENTATIVE 0x40
			f := strings.Fields(l)
			if len(f) != 6 || f[5] != "eth1" {
				continue
			}
			flags, _ := strconv.ParseUint(f[4], 16, 32)
			if flags&0x40 != 0 {
				continue
			}
			if strings.HasPrefix(f[0], "fe80") && f[3] == "20" {
				linkLocal = true
			}
			if f[0] == hex6(poolServer6) {
				server = true
			}
		}
		if !linkLocal || !server {
			return fmt.Errorf("eth1 usable link-local %v, %s %v:\n%s", linkLocal, poolServer6, server, b)
		}
		u, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp6", pid))
		if err != nil {
			return err
		}
		// sl local_address:port remote_address:port ...; 547 is 0223.
		for _, l := range strings.Split(string(u), "\n") {
			if f := strings.Fields(l); len(f) > 2 && strings.HasSuffix(f[1], ":0223") {
				if a := strings.TrimSuffix(f[1], ":0223"); a != hex6proc("ff02::1:2") && a != hex6proc("::") {
					return fmt.Errorf("UDP port 547 bound to %s, not ff02::1:2 or any", a)
				}
				return nil
			}
		}
		return fmt.Errorf("no UDP socket on port 547 in the agent's namespace:\n%s", u)
	})
}

// hex6 is an IPv6 address as /proc/net/if_inet6 prints it.
func hex6(addr string) string {
	ip := net.ParseIP(addr).To16()
	return fmt.Sprintf("%x", []byte(ip))
}

// hex6proc is an IPv6 address as /proc/net/udp6 prints it: four 32-bit
// words, each in host (little-endian) byte order, upper-case hex.
func hex6proc(addr string) string {
	ip := net.ParseIP(addr).To16()
	var b strings.Builder
	for i := 0; i < 16; i += 4 {
		fmt.Fprintf(&b, "%02X%02X%02X%02X", ip[i+3], ip[i+2], ip[i+1], ip[i])
	}
	return b.String()
}

// rootMountOptions is the mount options of "/" as process pid sees it
// (its mount namespace): the fifth and sixth fields of /proc/PID/mountinfo.
// The last mount on "/" is the one in effect.
func rootMountOptions(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return "", err
	}
	opts := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == "/" {
			opts = f[5]
		}
	}
	if opts == "" {
		return "", fmt.Errorf("no mount on / in /proc/%d/mountinfo", pid)
	}
	return opts, nil
}

// agentPID finds the agent container's process: the one in the cgroup that
// the kubelet made for the container ID the pod's status reports (with the
// cgroupfs driver, a directory named after the ID), so it is this pod's
// agent even while an old agent of the same node is still stopping.
func agentPID(t *testing.T, agent *corev1.Pod) int {
	t.Helper()
	n := cluster.Node(agent.Spec.NodeName)
	if n == nil {
		t.Fatalf("agent on unknown node %s", agent.Spec.NodeName)
	}
	name := agent.Spec.Containers[0].Name
	var id string
	for _, cs := range agent.Status.ContainerStatuses {
		if cs.Name == name {
			id, _ = strings.CutPrefix(cs.ContainerID, "containerd://")
		}
	}
	if id == "" {
		t.Fatalf("agent %s: no containerd ID for container %s in %+v", agent.Name, name, agent.Status.ContainerStatuses)
	}
	var pid int
	eventually(t, 30*time.Second, "agent process", func() error {
		for _, p := range containerPIDs(n.cgroupRoot, id) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			if strings.HasPrefix(string(b), "/vm-dhcp-agent\x00") {
				pid = p
				return nil
			}
		}
		return fmt.Errorf("no /vm-dhcp-agent process in container %s's cgroup under %s", id, n.cgroupRoot)
	})
	return pid
}

// assertAllocated checks the pool's status (the one source of truth) holds
// ip for the VM's MAC.
func assertAllocated(t *testing.T, ip string) {
	t.Helper()
	alloc := allocated(t, "ipv4")
	if !strings.EqualFold(alloc[ip], vmMAC) {
		t.Fatalf("pool status allocates %s to %q, want %s", ip, alloc[ip], vmMAC)
	}
}

// allocated is the example pool's status.<family>.allocated (family ipv4
// or ipv6), read with kubectl.
func allocated(t *testing.T, family string) map[string]string {
	t.Helper()
	out, err := kubectl(context.Background(), "get", "ippool", "-n", "default", "example", "-o", "jsonpath={.status."+family+".allocated}")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var alloc map[string]string
	if err := json.Unmarshal([]byte(out), &alloc); err != nil {
		t.Fatalf("%s allocated %q: %v", family, out, err)
	}
	return alloc
}

// allocatedTo is the address the example pool's status.<family>.allocated
// holds for mac, "" when none.
func allocatedTo(t *testing.T, family, mac string) string {
	t.Helper()
	for ip, m := range allocated(t, family) {
		if strings.EqualFold(m, mac) {
			return ip
		}
	}
	return ""
}

// describe is what an operator would look at when something hangs.
func describe(ctx context.Context) string {
	out, _ := kubectl(ctx, "get", "pods,deploy,svc,endpointslices", "-A", "-o", "wide")
	ev, _ := kubectl(ctx, "get", "events", "-A", "--sort-by=.lastTimestamp")
	if len(ev) > 4000 {
		ev = ev[len(ev)-4000:]
	}
	return out + "\n" + ev
}

// agentACKs is the number of DHCPACKs the agent pod sent, from its
// /metrics through the apiserver's pod proxy.
func agentACKs(t *testing.T, pod string) int {
	t.Helper()
	out, err := kubectl(context.Background(), "get", "--raw",
		fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:8080/proxy/metrics", namespace, pod))
	if err != nil {
		t.Fatalf("metrics of %s: %v\n%s", pod, err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, `vmdhcp_agent_replies_total{type="ACK"} `); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(n)
		}
	}
	return 0
}

// nadWithoutVLAN writes examples/nad.yaml without its VLAN into dir: this
// machine's kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING),
// so the bridge plugin cannot create a VLAN-aware bridge. Everything else of
// the example (name, labels, bridge name) stays.
func nadWithoutVLAN(example, dir string) (string, error) {
	b, err := os.ReadFile(example)
	if err != nil {
		return "", err
	}
	s := strings.Replace(string(b), `"vlan":100,`, "", 1)
	if s == string(b) {
		return "", fmt.Errorf("%s no longer holds \"vlan\":100: update nadWithoutVLAN", example)
	}
	out := filepath.Join(dir, "nad.yaml")
	return out, os.WriteFile(out, []byte(s), 0o644)
}

// waitRenewAfter waits for the VM's first renewal printed after t that kept
// address ip.
func waitRenewAfter(t *testing.T, v *vm.VM, after time.Time, ip, consoleLog string) vm.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ev, err := v.WaitEvent(ctx, func(e vm.Event) bool {
		return e.Kind == vm.Renew && e.Received.After(after)
	})
	if err != nil {
		t.Fatalf("no renewal after %s: %v\n%s", after.Format(time.TimeOnly), err, tail(consoleLog, 3000))
	}
	if ev.Addr.Addr().String() != ip || ev.ServerID.String() != poolServer {
		t.Fatalf("renewal %q: want %s from %s", ev.Line, ip, poolServer)
	}
	return ev
}

// leftovers lists every object of every listable resource type the apiserver
// serves that the release or its controller may have made: everything in the
// release's namespace except what Kubernetes puts in every namespace
// (ServiceAccount default, ConfigMap kube-root-ca.crt, events), every object
// of the project's API group anywhere, and cluster-scoped objects named or
// labelled after the release. CRDs stay (Helm never deletes them), and so
// does the namespace helm --create-namespace made.
func leftovers(ctx context.Context) ([]string, error) {
	cfg := cluster.RESTConfig()
	cfg.WarningHandler = rest.NoWarnings{} // deprecated kinds (v1 Endpoints, ComponentStatus) are listed too
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	lists, err := disc.ServerPreferredResources()
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var left []string
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			return nil, err
		}
		for _, r := range l.APIResources {
			if !slices.Contains(r.Verbs, "list") || strings.Contains(r.Name, "/") || r.Name == "events" {
				continue
			}
			res := dyn.Resource(gv.WithResource(r.Name))
			ours := gv.Group == "network.harvesterhci.io"
			var items []unstructured.Unstructured
			switch {
			case r.Namespaced && ours:
				list, err := res.List(ctx, metav1.ListOptions{})
				if err != nil {
					return nil, fmt.Errorf("list %s: %w", r.Name, err)
				}
				items = list.Items
			case r.Namespaced:
				list, err := res.Namespace(namespace).List(ctx, metav1.ListOptions{})
				if err != nil {
					return nil, fmt.Errorf("list %s in %s: %w", r.Name, namespace, err)
				}
				items = list.Items
			case r.Name == "customresourcedefinitions" || r.Name == "namespaces":
				continue
			default:
				list, err := res.List(ctx, metav1.ListOptions{})
				if err != nil {
					return nil, fmt.Errorf("list %s: %w", r.Name, err)
				}
				for _, o := range list.Items {
					if strings.Contains(o.GetName(), release) || o.GetLabels()["app.kubernetes.io/instance"] == release {
						items = append(items, o)
					}
				}
			}
			for _, o := range items {
				if (r.Name == "serviceaccounts" && o.GetName() == "default") || (r.Name == "configmaps" && o.GetName() == "kube-root-ca.crt") {
					continue
				}
				name := r.Name + "/" + o.GetName()
				if o.GetNamespace() != "" {
					name = o.GetNamespace() + "/" + name
				}
				left = append(left, name)
			}
		}
	}
	return left, nil
}
