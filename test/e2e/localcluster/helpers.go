package localcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NIC is one multus NIC of a KubeVirt VM.
type NIC struct {
	Name    string // interface name in the VM spec
	MAC     string
	Network string // namespace/name of the NetworkAttachmentDefinition
}

// VMNICs lists the multus NICs of vm in spec order; NICs without a fixed
// MAC are left out (KubeVirt would pick one, the stand-in cannot).
func VMNICs(vm *kubevirtv1.VirtualMachine) []NIC {
	if vm.Spec.Template == nil {
		return nil
	}
	networks := map[string]string{}
	for _, n := range vm.Spec.Template.Spec.Networks {
		if n.Multus != nil {
			name := n.Multus.NetworkName
			if !strings.Contains(name, "/") {
				name = vm.Namespace + "/" + name
			}
			networks[n.Name] = name
		}
	}
	var nics []NIC
	for _, i := range vm.Spec.Template.Spec.Domain.Devices.Interfaces {
		if net, ok := networks[i.Name]; ok && i.MacAddress != "" {
			nics = append(nics, NIC{Name: i.Name, MAC: i.MacAddress, Network: net})
		}
	}
	return nics
}

// AgentPod returns the agent pod of a pool once the stand-in reports it
// Ready, or an error naming what it last saw.
func (c *Cluster) AgentPod(ctx context.Context, poolNamespace, poolName string, timeout time.Duration) (*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	last := "no pod yet"
	for {
		var pods corev1.PodList
		err := c.client.List(ctx, &pods, client.InNamespace(c.opts.Namespace), client.MatchingLabels{
			AgentLabel: AgentLabelValue, poolNSLabel: poolNamespace, poolNameLabel: poolName})
		if err != nil {
			last = err.Error()
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp != nil {
				continue
			}
			last = fmt.Sprintf("pod %s phase %s", p.Name, p.Status.Phase)
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					return p, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent of pool %s/%s not ready after %s: %s\n--- controller log:\n%s\n--- kubelet log:\n%s",
				poolNamespace, poolName, timeout, last, tail(c.logPath("controller"), 2000), tail(c.logPath("kubelet"), 2000))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// AgentLog is the tail of the log of the agent pod named name.
func (c *Cluster) AgentLog(name string) string { return tail(c.logPath("agent-"+name), 4000) }

// ProcessLog is the tail of the log of "controller", "webhook" or "kubelet".
func (c *Cluster) ProcessLog(name string) string { return tail(c.logPath(name), 4000) }

// Kubectl runs the real kubectl against the cluster and returns its
// combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		return "", fmt.Errorf("kubectl not found: %w", err)
	}
	cmd := exec.CommandContext(ctx, kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	out, err := cmd.CombinedOutput()
	// kubectl 1.32 warns about its version skew against 1.37; that line is noise here.
	var kept []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, "version difference") && !strings.Contains(l, "WARNING: version") {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "\n"), err
}
