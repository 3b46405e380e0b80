// Package node runs a real Kubernetes cluster on this machine, from real
// parts: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
// kube-proxy (iptables mode), and one or more nodes, each a real kubelet
// with its own containerd (own root, state, socket, runc root and cgroup
// root) running pods with runc and the CNI bridge/host-local plugins, plus
// the Multus stand-in (test/e2e/node/multus) for pods' extra networks.
//
// Everything runs inside one network namespace created for the cluster, so
// its bridges, routes and kube-proxy's iptables rules never touch the host's
// network: the host sees only a loopback port forwarded to the apiserver.
// The processes share the host's mount namespace (nsenter --net), which is
// what lets containerd see the volumes the kubelet mounts.
//
// Addresses inside the namespace: the apiserver on 10.200.0.1:6443, node i
// on 10.200.0.1i, Services in 10.96.0.0/16, node i's pods in 10.244.i.0/24.
package node

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	apiserverIP  = "10.200.0.1"
	serviceCIDR  = "10.96.0.0/16"
	clusterCIDR  = "10.244.0.0/16"
	hostLink     = "vmd-host" // link holding the control plane's and nodes' addresses
	adminToken   = "vm-dhcp-test-node-admin-token"
	pauseImage   = "docker.io/vm-dhcp/pause:test"
	readyTimeout = 3 * time.Minute
)

// Options configure a cluster. Zero values take the defaults noted.
type Options struct {
	// WorkDir holds certificates, data, logs and the nodes' folders.
	// Required; created if missing.
	WorkDir string
	// KubeBinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kube-proxy and kubelet (hack/envtest/node.sh).
	KubeBinDir string
	// CNIBinDir holds vmdhcp-multus; the Debian plugins come from
	// /usr/lib/cni.
	CNIBinDir string
	// Images are docker-archive tarballs imported into every node's
	// containerd; one of them must be the pause image named pauseImage.
	Images []string
	// Netns names the cluster's network namespace (required, unique).
	Netns string
	// Nodes are the node names (default: one node "node-a").
	Nodes []string
	// NodeLabels are given to every node.
	NodeLabels map[string]string
	// Progress receives one line per step (default: discarded).
	Progress io.Writer
}

// Cluster is a running cluster. Stop removes everything it created.
type Cluster struct {
	opts       Options
	runDir     string // short folder under /run for sockets
	pki        *pki
	kubeconfig string // admin, for the host (loopback forward)
	inNSConfig string // admin, for components inside the namespace
	restConfig *rest.Config
	clientset  *kubernetes.Clientset
	cancel     context.CancelFunc

	sysctls map[string]string // host values the kubelets overwrite, restored by Stop

	mu       sync.Mutex
	stopping bool
	control  []*process
	nodes    map[string]*Node
}

func (o *Options) defaults() error {
	if o.WorkDir == "" || o.KubeBinDir == "" || o.CNIBinDir == "" || o.Netns == "" {
		return fmt.Errorf("node cluster: WorkDir, KubeBinDir, CNIBinDir and Netns are required")
	}
	if len(o.Nodes) == 0 {
		o.Nodes = []string{"node-a"}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet"} {
		if _, err := os.Stat(filepath.Join(o.KubeBinDir, b)); err != nil {
			return fmt.Errorf("node cluster: %s missing in %s (hack/envtest/node.sh builds it): %w", b, o.KubeBinDir, err)
		}
	}
	return nil
}

func (c *Cluster) step(format string, args ...any) {
	fmt.Fprintf(c.opts.Progress, "==> "+format+"\n", args...)
}

// Start brings up the control plane and every node, and waits until the
// nodes are Ready. On error everything already started is stopped.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, nodes: map[string]*Node{}, runDir: filepath.Join("/run", opts.Netns)}
	for _, d := range []string{opts.WorkDir, filepath.Join(opts.WorkDir, "logs"), c.runDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	// Down (or a sweep after a crash) finds the work folder from here.
	if err := os.WriteFile(filepath.Join(c.runDir, "workdir"), []byte(opts.WorkDir), 0o644); err != nil {
		return nil, err
	}
	c.sysctls = readSysctls()
	fctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel

	c.step("network namespace %s (the cluster's whole network lives in it)", opts.Netns)
	if err := c.setupNetns(ctx); err != nil {
		return nil, err
	}
	if err := c.startControlPlane(ctx, fctx); err != nil {
		return nil, err
	}
	if err := c.writeCNIBin(); err != nil {
		return nil, err
	}
	for i, name := range opts.Nodes {
		n, err := c.startNode(ctx, name, i+1)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.nodes[name] = n
		c.mu.Unlock()
	}
	for _, name := range opts.Nodes {
		if err := c.WaitNodeReady(ctx, name, readyTimeout); err != nil {
			return nil, err
		}
	}
	c.step("nodes %s Ready", strings.Join(opts.Nodes, ", "))
	return c, nil
}

func (c *Cluster) setupNetns(ctx context.Context) error {
	ns := c.opts.Netns
	if err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		// A veth pair with both ends inside (this kernel has no dummy links).
		{"ip", "-n", ns, "link", "add", hostLink, "type", "veth", "peer", "name", hostLink + "-p"},
		{"ip", "-n", ns, "link", "set", hostLink, "up"},
		{"ip", "-n", ns, "link", "set", hostLink + "-p", "up"},
		{"ip", "-n", ns, "addr", "add", apiserverIP + "/32", "dev", hostLink},
		// Service IPs need a route for the kernel to send the packet that
		// kube-proxy's OUTPUT rules then rewrite; nothing leaves the namespace.
		{"ip", "-n", ns, "route", "add", serviceCIDR, "dev", hostLink, "src", apiserverIP},
		{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for i := range c.opts.Nodes {
		steps = append(steps, []string{"ip", "-n", ns, "addr", "add", nodeIP(i+1) + "/32", "dev", hostLink})
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

func nodeIP(i int) string { return fmt.Sprintf("10.200.0.1%d", i) }

func (c *Cluster) logPath(name string) string {
	return filepath.Join(c.opts.WorkDir, "logs", name+".log")
}

// LogPath is the log file of a component: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kube-proxy, or
// kubelet-NODE / containerd-NODE.
func (c *Cluster) LogPath(name string) string { return c.logPath(name) }

func (c *Cluster) startControl(name string, argv ...string) error {
	p, err := startProcess(name, c.opts.Netns, c.logPath(name), nil, argv...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.control = append(c.control, p)
	c.mu.Unlock()
	return nil
}

// superviseControl starts a control-plane component and starts it again
// whenever it exits, until Stop.
func (c *Cluster) superviseControl(name string, argv ...string) error {
	p, err := startProcess(name, c.opts.Netns, c.logPath(name), nil, argv...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.control = append(c.control, p)
	slot := len(c.control) - 1
	c.mu.Unlock()
	go func() {
		for {
			<-p.done
			time.Sleep(time.Second)
			c.mu.Lock()
			if c.stopping {
				c.mu.Unlock()
				return
			}
			next, err := startProcess(name, c.opts.Netns, c.logPath(name), nil, argv...)
			if err != nil {
				c.mu.Unlock()
				return
			}
			c.control[slot] = next
			p = next
			c.mu.Unlock()
		}
	}()
	return nil
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.KubeBinDir, name) }

func (c *Cluster) startControlPlane(ctx, fctx context.Context) error {
	w := c.opts.WorkDir
	var err error
	c.pki, err = writePKI(filepath.Join(w, "pki"), []string{"127.0.0.1", apiserverIP, "10.96.0.1", "kubernetes",
		"kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return err
	}
	tokens := filepath.Join(w, "pki", "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		return err
	}
	c.step("etcd and kube-apiserver (https://%s:6443 in the namespace)", apiserverIP)
	if err := c.startControl("etcd", c.bin("etcd"), "--data-dir", filepath.Join(w, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--name", "default", "--unsafe-no-fsync",
		"--log-level", "warn"); err != nil {
		return err
	}
	if err := c.startControl("kube-apiserver", c.bin("kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "0.0.0.0", "--secure-port", "6443", "--advertise-address", apiserverIP,
		"--tls-cert-file", c.pki.APICert, "--tls-private-key-file", c.pki.APIKey, "--client-ca-file", c.pki.CACert,
		"--token-auth-file", tokens, "--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", c.pki.SAPub, "--service-account-signing-key-file", c.pki.SAKey,
		"--service-cluster-ip-range", serviceCIDR, "--allow-privileged=true",
		"--kubelet-preferred-address-types", "InternalIP",
		// Pods' default tolerations of a failed node stay 5 minutes: the
		// controller moves its agent after its own grace (2 minutes).
	); err != nil {
		return err
	}
	// Kubeconfigs: one for the components in the namespace, one for the host
	// through a loopback forward.
	c.inNSConfig = filepath.Join(w, "admin-in-netns.kubeconfig")
	if err := c.writeKubeconfig(c.inNSConfig, "https://"+apiserverIP+":6443"); err != nil {
		return err
	}
	addr, err := forward(fctx, c.opts.Netns, apiserverIP+":6443")
	if err != nil {
		return fmt.Errorf("forward the apiserver to loopback: %w", err)
	}
	c.kubeconfig = filepath.Join(w, "kubeconfig")
	if err := c.writeKubeconfig(c.kubeconfig, "https://"+addr); err != nil {
		return err
	}
	c.restConfig, err = clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		return err
	}
	c.restConfig.QPS, c.restConfig.Burst = 50, 100
	c.clientset, err = kubernetes.NewForConfig(c.restConfig)
	if err != nil {
		return err
	}
	if err := c.waitAPIServer(ctx, 2*time.Minute); err != nil {
		return err
	}
	c.step("kube-controller-manager, kube-scheduler, kube-proxy")
	if err := c.startControl("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig", c.inNSConfig, "--leader-elect=false", "--bind-address", "127.0.0.1",
		"--service-account-private-key-file", c.pki.SAKey, "--root-ca-file", c.pki.CACert,
		"--use-service-account-credentials=false", "--cluster-cidr", clusterCIDR, "--service-cluster-ip-range", serviceCIDR,
		// Notice a stopped kubelet within ~10 s (defaults: 50 s).
		"--node-monitor-grace-period", "10s", "--node-monitor-period", "2s",
	); err != nil {
		return err
	}
	if err := c.startControl("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig", c.inNSConfig, "--leader-elect=false", "--bind-address", "127.0.0.1"); err != nil {
		return err
	}
	// One kube-proxy for the namespace: the nodes share it, so a second one
	// would fight over the same iptables. It runs as the first node and
	// exits when that Node object is deleted (a test removes a dead node);
	// restarted like its DaemonSet would be, it goes on without it.
	if err := c.superviseControl("kube-proxy", c.bin("kube-proxy"),
		"--kubeconfig", c.inNSConfig, "--hostname-override", c.opts.Nodes[0], "--proxy-mode", "iptables",
		"--cluster-cidr", clusterCIDR, "--conntrack-max-per-core", "0",
		"--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249"); err != nil {
		return err
	}
	return nil
}

func (c *Cluster) writeKubeconfig(path, server string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["node"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: c.pki.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: adminToken}
	cfg.Contexts["node"] = &clientcmdapi.Context{Cluster: "node", AuthInfo: "admin"}
	cfg.CurrentContext = "node"
	return clientcmd.WriteToFile(*cfg, path)
}

func (c *Cluster) waitAPIServer(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		var code int
		res := c.clientset.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code)
		if res.Error() == nil && code == 200 {
			c.step("apiserver ready; kubeconfig %s", c.kubeconfig)
			return nil
		}
		last = res.Error()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("apiserver not ready after %s: %v\n%s", timeout, last, tail(c.logPath("kube-apiserver"), 3000))
}

// writeCNIBin links the Debian CNI plugins and the Multus stand-in into one
// folder: containerd 1.6 takes a single bin_dir.
func (c *Cluster) writeCNIBin() error {
	dir := filepath.Join(c.opts.WorkDir, "cni-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	links := map[string]string{"vmdhcp-multus": filepath.Join(c.opts.CNIBinDir, "vmdhcp-multus")}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		links[p] = filepath.Join("/usr/lib/cni", p)
	}
	for name, target := range links {
		if _, err := os.Stat(target); err != nil {
			return fmt.Errorf("CNI plugin %s: %w (hack/deps.sh installs containernetworking-plugins)", name, err)
		}
		_ = os.Remove(filepath.Join(dir, name))
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// Kubeconfig is the admin kubeconfig for the host (loopback).
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// RESTConfig is the admin REST config for the host.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Clientset is an admin clientset.
func (c *Cluster) Clientset() *kubernetes.Clientset { return c.clientset }

// Netns is the cluster's network namespace.
func (c *Cluster) Netns() string { return c.opts.Netns }

// Stop stops every node and the control plane and removes the namespace,
// cgroups and runtime folders. Safe to call more than once.
func (c *Cluster) Stop() {
	c.mu.Lock()
	c.stopping = true
	nodes := c.nodes
	c.nodes = map[string]*Node{}
	control := c.control
	c.control = nil
	c.mu.Unlock()
	for _, n := range nodes {
		n.stop(true)
	}
	for i := len(control) - 1; i >= 0; i-- {
		control[i].stop(10 * time.Second)
	}
	if c.cancel != nil {
		c.cancel()
	}
	for _, n := range nodes {
		n.cleanup()
	}
	if _, err := os.Stat(filepath.Join(netnsDir, c.opts.Netns)); err == nil {
		_ = run(context.Background(), "ip", "netns", "del", c.opts.Netns)
	}
	_ = os.RemoveAll(c.runDir)
	removeCNIResults(cniResultsDir, c.opts.WorkDir)
	restoreSysctls(c.sysctls)
}

// hostSysctls are the kernel tunables every kubelet sets on start (its
// "kernel defaults"); they are the host's, not the namespace's, so Stop puts
// the values from before the cluster back.
var hostSysctls = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

func readSysctls() map[string]string {
	m := map[string]string{}
	for _, k := range hostSysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			m[k] = strings.TrimSpace(string(b))
		}
	}
	return m
}

func restoreSysctls(m map[string]string) {
	for k, v := range m {
		_ = os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644)
	}
}

// SweepStale removes what clusters in namespaces named prefix+PID left
// behind when their process (PID) died without Stop (SIGKILL, a go test
// timeout): containers, mounts, cgroups, the namespace and its work folder.
// It returns the work folders it removed.
func SweepStale(prefix string) []string {
	entries, _ := os.ReadDir(netnsDir)
	var swept []string
	for _, e := range entries {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), prefix))
		if !strings.HasPrefix(e.Name(), prefix) || err != nil || pid <= 0 {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // still running: someone else's cluster
		}
		b, _ := os.ReadFile(filepath.Join("/run", e.Name(), "workdir"))
		workDir := strings.TrimSpace(string(b))
		Down(workDir, e.Name())
		if workDir != "" {
			_ = os.RemoveAll(workDir)
			swept = append(swept, workDir)
		}
	}
	return swept
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// Down removes what a cluster whose process died left behind: processes in
// its nodes' cgroups (containers, shims), mounts under its folders, its
// network namespace and cgroups. The control plane and kubelets die with the
// process that started them (parent-death signal).
func Down(workDir, netns string) {
	prefix := netns + "-"
	entries, _ := os.ReadDir("/sys/fs/cgroup/pids")
	var cgroups []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			cgroups = append(cgroups, "/"+e.Name())
		}
	}
	for i := 0; i < 50; i++ {
		var pids []int
		for _, cg := range cgroups {
			pids = append(pids, cgroupPIDs(cg)...)
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	runDir := filepath.Join("/run", netns)
	if workDir != "" { // "" would be every mount of the host
		unmountUnder(workDir)
	}
	unmountUnder(runDir)
	for _, cg := range cgroups {
		removeCgroup(cg)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, netns)); err == nil {
		_ = run(context.Background(), "ip", "netns", "del", netns)
	}
	_ = os.RemoveAll(runDir)
	removeCNIResults(cniResultsDir, workDir)
}
