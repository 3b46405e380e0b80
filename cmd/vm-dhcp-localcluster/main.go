// Command vm-dhcp-localcluster runs the project's local stand-in for a
// cluster (package test/e2e/localcluster) for `make demo-local`:
//
//	vm-dhcp-localcluster up   [--workdir .demo-local] [--bin bin] [--helm PATH]
//	vm-dhcp-localcluster down [--workdir .demo-local]
//	vm-dhcp-localcluster dhcp [--workdir .demo-local] [--vm test-vm] [--iface eth0]
//
// `up` starts the control plane, the controller, the webhook and the
// kubelet stand-in, applies the examples, boots the example VM's guest on
// the VM network and prints the address it obtained by DHCP; then it keeps
// everything running until Ctrl-C (or `down`), and removes it all.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller"
	"github.com/vm-dhcp/vm-dhcp/test/e2e/localcluster"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vm-dhcp-localcluster up|down|dhcp [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	workDir := fs.String("workdir", ".demo-local", "folder for the kubeconfig, logs and state")
	binDir := fs.String("bin", "bin", "folder with vm-dhcp-controller, vm-dhcp-webhook and vm-dhcp-agent")
	helm := fs.String("helm", "", "helm binary (default: helm from $PATH)")
	examples := fs.String("examples", "examples", "folder with nad.yaml, harvester-ippool.yaml and vm.yaml")
	namespace := fs.String("namespace", "vm-dhcp-system", "namespace of the controller, webhook and agents")
	chart := fs.String("chart", "charts/vm-dhcp-controller", "the chart to render")
	vmName := fs.String("vm", "test-vm", "dhcp: the VM whose guest asks for an address")
	iface := fs.String("iface", "eth0", "dhcp: the guest's interface (eth0 is the VM's first multus NIC)")
	admin := fs.Bool("admin", false, "run the controller, webhook and agents as admin instead of with their service accounts")
	_ = fs.Parse(os.Args[2:])

	var err error
	switch os.Args[1] {
	case "up":
		err = up(*workDir, *binDir, *helm, *chart, *examples, *namespace, *admin)
	case "down":
		var did []string
		did, err = localcluster.Down(*workDir)
		for _, d := range did {
			fmt.Println("==> " + d)
		}
	case "dhcp":
		// The demo's VM guest is the namespace <prefix>vm-<name>; ask again
		// from there with the same hook, and print what the agent answers.
		var lease *localcluster.Lease
		lease, err = localcluster.RunDHCP(context.Background(), localcluster.DemoNetnsPrefix+"vm-"+*vmName, *iface,
			filepath.Join(*workDir, "vms", *vmName), 5*time.Second)
		if err == nil {
			fmt.Printf("VM %s got by DHCP  %s\n", *vmName, lease)
		}
	default:
		err = fmt.Errorf("unknown command %q: want up, down or dhcp", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func up(workDir, binDir, helm, chart, examples, namespace string, admin bool) error {
	ctrllog.SetLogger(logr.Discard()) // progress goes to stdout; component logs go to files
	workDir, _ = filepath.Abs(workDir)
	binDir, _ = filepath.Abs(binDir)
	if helm == "" {
		helm = "helm"
	}
	if _, err := os.Stat(filepath.Join(workDir, "state")); err == nil {
		return fmt.Errorf("a demo is already recorded in %s: run `make demo-local-down` first", workDir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c, err := localcluster.Start(ctx, localcluster.Options{
		WorkDir: workDir, BinDir: binDir, Helm: helm, ChartDir: chart, Namespace: namespace,
		AdminEverywhere: admin, Progress: os.Stdout,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("==> stopping: agents, VM, controller, webhook, control plane; removing network namespaces")
		c.Stop()
		fmt.Println("==> stopped; nothing left running")
	}()

	if err := runExample(ctx, c, examples); err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	fmt.Printf(`
The demo is running. In another terminal:

  export KUBECONFIG=%[1]s/kubeconfig
  kubectl get ippools,vmnetcfg -A
  kubectl get pods -n %[2]s -o wide            # the pool's agent, run by the kubelet stand-in
  kubectl edit ippool -n default example       # e.g. change dns; the agent serves it at the next request
  kubectl edit cm -n %[2]s %[3]s   # the pool's CoreDHCP config
  bin/vm-dhcp-localcluster dhcp --workdir %[1]s   # the VM asks for its address again
  ip netns exec vmdhcp-demo-vm-test-vm ip -4 addr show eth0           # the address the VM configured

Logs: %[1]s/logs/ (controller.log, webhook.log, kubelet.log, agent-*.log)
Stop with Ctrl-C here, or run: make demo-local-down
`, workDir, namespace, controller.AgentConfigMapName(&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "example"}}))
	<-ctx.Done()
	return nil
}

// runExample applies the examples, waits for the pool's agent and gives the
// example VM's guest its addresses, printing them next to kubectl's view.
func runExample(ctx context.Context, c *localcluster.Cluster, examples string) error {
	for _, f := range []string{"nad.yaml", "harvester-ippool.yaml", "vm.yaml"} {
		path := filepath.Join(examples, f)
		fmt.Printf("==> kubectl apply -f %s\n", path)
		if out, err := c.Kubectl(ctx, "apply", "-f", path); err != nil {
			return fmt.Errorf("apply %s: %w\n%s", path, err, out)
		} else {
			fmt.Print(indent(out))
		}
	}
	fmt.Println("==> waiting for the controller to create the pool's agent pod and the kubelet stand-in to run it")
	pod, err := c.AgentPod(ctx, "default", "example", 2*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("==> agent pod %s/%s is Ready (pod IP %s); its log: %s/logs/agent-%s.log\n",
		pod.Namespace, pod.Name, pod.Status.PodIP, c.WorkDir(), pod.Name)

	vmObj := &kubevirtv1.VirtualMachine{}
	if err := c.Client().Get(ctx, types.NamespacedName{Namespace: "default", Name: "test-vm"}, vmObj); err != nil {
		return fmt.Errorf("read the example VM: %w", err)
	}
	vm, err := c.StartVM(ctx, vmObj.Name)
	if err != nil {
		return err
	}
	for i, nic := range localcluster.VMNICs(vmObj) {
		iface := fmt.Sprintf("eth%d", i)
		if err := vm.AddNIC(ctx, iface, nic.MAC, nic.Network); err != nil {
			return err
		}
		fmt.Printf("==> VM %s: NIC %s (MAC %s) is %s in network namespace %s, on network %s; running udhcpc\n",
			vm.Name, nic.Name, nic.MAC, iface, vm.Netns, nic.Network)
		var lease *localcluster.Lease
		deadline := time.Now().Add(90 * time.Second)
		for {
			lease, err = vm.DHCP(ctx, iface, 5*time.Second)
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			fmt.Println("    no lease yet (the controller may still be allocating); retrying")
		}
		if err != nil {
			return fmt.Errorf("%w\n--- agent log:\n%s", err, c.AgentLog(pod.Name))
		}
		fmt.Printf("==> VM %s got by DHCP  %s\n", vm.Name, lease)
	}
	out, err := c.Kubectl(ctx, "get", "vmnetcfg,ippool", "-A")
	if err != nil {
		return fmt.Errorf("kubectl get: %w\n%s", err, out)
	}
	fmt.Println("==> kubectl get vmnetcfg,ippool -A")
	fmt.Print(indent(out))
	return nil
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}
