// Command vm-dhcp-node runs `make demo` on a real Kubernetes cluster on this
// machine (package test/e2e/node): a real control plane, two nodes (real
// kubelets with containerd, runc and the CNI bridge), the chart installed
// with helm from images built from build/, the examples applied (the pool
// dual-stack: examples/dual-stack-ippool.yaml), and a real QEMU VM with the
// example VirtualMachine's MAC whose console shows the IPv4 lease and the
// IPv6 address the agent pod gave it.
//
//	vm-dhcp-node up   [--workdir .demo] [--bin bin]
//	vm-dhcp-node down [--workdir .demo]
//
// `up` keeps everything running until Ctrl-C or SIGTERM, then removes it
// all; `down` stops a running `up` (its pid is in the work folder) and
// removes what an `up` that died left behind.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vm-dhcp/vm-dhcp/test/e2e/node"
	"github.com/vm-dhcp/vm-dhcp/test/e2e/vm"
)

// netns is the demo cluster's network namespace; tests use their own.
const netns = "vmdhcp-demo"

// renewEvery makes the guest renew while the demo runs, so its console shows
// the agent answering (a real guest renews at T1, half its 300 s lease).
const renewEvery = 30 * time.Second

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vm-dhcp-node up|down [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	workDir := fs.String("workdir", ".demo", "folder for the cluster, images, kubeconfig and logs")
	binDir := fs.String("bin", "bin", "folder with vm-dhcp-controller, vm-dhcp-webhook and vm-dhcp-agent (make build)")
	_ = fs.Parse(os.Args[2:])
	abs, err := filepath.Abs(*workDir)
	if err == nil {
		*workDir = abs
	}
	if b, err := filepath.Abs(*binDir); err == nil {
		*binDir = b
	}
	switch os.Args[1] {
	case "up":
		err = up(*workDir, *binDir)
	case "down":
		stopRunning(*workDir)
		node.Down(filepath.Join(*workDir, "cluster"), netns)
		fmt.Println("==> demo cluster removed")
	default:
		err = fmt.Errorf("unknown command %q: want up or down", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

// prefixed copies console lines to stdout, each marked as the VM's.
type prefixed struct{ w io.Writer }

func (p prefixed) Write(b []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l != "" {
			fmt.Fprint(p.w, "    vm | "+l)
		}
	}
	return len(b), nil
}

// pidFile holds the pid of a running `up`, for `down` from another terminal.
func pidFile(workDir string) string { return filepath.Join(workDir, "vm-dhcp-node.pid") }

// stopRunning asks a running `up` to stop (SIGTERM: it removes its cluster
// itself) and waits until it has exited.
func stopRunning(workDir string) {
	b, err := os.ReadFile(pidFile(workDir))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return
	}
	// Only our own process: a stale pid may now be someone else's.
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(cmdline), "vm-dhcp-node") {
		return
	}
	step("stopping the running demo (pid %d)", pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return
	}
	for i := 0; i < 600; i++ {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "pid %d did not exit within 60s: removing its cluster anyway\n", pid)
}

func up(workDir, binDir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	if err := os.WriteFile(pidFile(workDir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile(workDir))
	tag, err := appVersion("charts/vm-dhcp-controller/Chart.yaml")
	if err != nil {
		return err
	}
	step("images from build/*.Dockerfile (prebuilt stage, bin/), tag %s; Kubernetes binaries, helm", tag)
	assets, err := node.PrepareAssets(ctx, workDir, binDir, []string{tag})
	if err != nil {
		return err
	}
	cluster, err := node.Start(ctx, node.Options{
		WorkDir: filepath.Join(workDir, "cluster"), KubeBinDir: assets.KubeBinDir, CNIBinDir: assets.CNIBinDir,
		Images: assets.Images, Netns: netns, Nodes: []string{"node-a", "node-b"},
		NodeLabels: map[string]string{"network.harvesterhci.io/mgmt": "true"}, Progress: os.Stdout,
	})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping the cluster and removing everything it created")
		cluster.Stop()
	}()
	kc := cluster.Kubeconfig()
	sh := func(name string, args ...string) error {
		fmt.Printf("$ %s %s\n", filepath.Base(name), strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, name, append([]string{"--kubeconfig", kc}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	if err := sh("kubectl", "apply", "-f", "test/crds"); err != nil {
		return err
	}
	step("helm install of the chart, unmodified (two controller replicas elect a leader)")
	if err := sh(assets.Helm, "install", "vm-dhcp", "charts/vm-dhcp-controller", "-n", "vm-dhcp-system",
		"--create-namespace", "--set", "controller.replicas=2", "--wait", "--timeout", "5m"); err != nil {
		return err
	}
	if err := sh("kubectl", "get", "pods", "-n", "vm-dhcp-system", "-o", "wide"); err != nil {
		return err
	}
	step("the examples: the VM network (NAD; without its VLAN: this kernel has no bridge VLAN filtering), its IPPool (Harvester's example plus an IPv6 half), a VirtualMachine")
	nad, err := os.ReadFile("examples/nad.yaml")
	if err != nil {
		return err
	}
	nadFile := filepath.Join(workDir, "nad.yaml")
	if err := os.WriteFile(nadFile, []byte(strings.Replace(string(nad), `"vlan":100,`, "", 1)), 0o644); err != nil {
		return err
	}
	for _, f := range []string{nadFile, "examples/dual-stack-ippool.yaml", "examples/vm.yaml"} {
		if err := sh("kubectl", "apply", "-f", f); err != nil {
			return err
		}
	}
	if err := sh("kubectl", "wait", "pod", "-n", "vm-dhcp-system", "-l", "app.kubernetes.io/name=vm-dhcp-agent",
		"--for=condition=Ready", "--timeout=180s"); err != nil {
		return err
	}
	if err := sh("kubectl", "get", "pods", "-n", "vm-dhcp-system", "-l", "app.kubernetes.io/name=vm-dhcp-agent", "-o", "wide"); err != nil {
		return err
	}
	// The guest's NIC gets the MAC the VirtualMachine object gives it.
	macArgs := []string{"get", "virtualmachines.kubevirt.io", "-n", "default", "test-vm",
		"-o", "jsonpath={.spec.template.spec.domain.devices.interfaces[0].macAddress}"}
	fmt.Printf("$ kubectl %s\n", strings.Join(macArgs, " "))
	out, err := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kc}, macArgs...)...).Output()
	if err != nil {
		return fmt.Errorf("read the VirtualMachine's MAC: %w", err)
	}
	vmMAC := strings.TrimSpace(string(out))
	if _, err := net.ParseMAC(vmMAC); err != nil {
		return fmt.Errorf("VirtualMachine test-vm NIC MAC %q: %w", vmMAC, err)
	}
	fmt.Println(vmMAC)
	step("a real VM: QEMU, MAC %s (the VirtualMachine's NIC), tap on the NAD's bridge mgmt-br; its console:", vmMAC)
	consoleLog := filepath.Join(workDir, "cluster", "logs", "vm-console.log")
	v, err := vm.Start(ctx, vm.Options{MAC: vmMAC, Netns: netns, Bridge: "mgmt-br", ConsoleLog: consoleLog,
		Console: prefixed{os.Stdout}, RenewEvery: renewEvery})
	if err != nil {
		return err
	}
	defer v.Stop()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	lease, err := v.WaitLease(wctx)
	if err != nil {
		return fmt.Errorf("the VM got no lease: %w", err)
	}
	step("the VM holds %s (router %s, dns %v, mtu %d) from server %s; %s after the start",
		lease.Addr, lease.Router, lease.DNS, lease.MTU, lease.ServerID, time.Since(t0).Round(time.Second))
	lease6, err := v.WaitLease6(wctx)
	if err != nil {
		return fmt.Errorf("the VM got no IPv6 address: %w", err)
	}
	step("the VM holds %s (dns %v, search %v, valid %s, preferred %s) by DHCPv6; %s after the start",
		lease6.Addr6, lease6.DNS6, lease6.Search, lease6.ValidLifetime, lease6.PreferredLifetime, time.Since(t0).Round(time.Second))
	for _, family := range []string{"ipv4", "ipv6"} {
		if err := sh("kubectl", "get", "ippool", "-n", "default", "example", "-o", "jsonpath={.status."+family+".allocated}{\"\\n\"}"); err != nil {
			return err
		}
	}
	fmt.Printf("\nRunning. Try:\n  export KUBECONFIG=%s\n  kubectl get nodes,pods -A -o wide\n  kubectl logs -n vm-dhcp-system -l app.kubernetes.io/name=vm-dhcp-agent\nCtrl-C stops and removes everything.\n", kc)
	<-ctx.Done()
	return nil
}

func appVersion(chartYAML string) (string, error) {
	f, err := os.Open(chartYAML)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"`), nil
		}
	}
	return "", fmt.Errorf("%s has no appVersion", chartYAML)
}
