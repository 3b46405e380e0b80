package node

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Node is one kubelet with its own containerd.
type Node struct {
	Name       string
	IP         string
	dir        string // work folder of the node
	runDir     string // sockets and runtime state
	cgroupRoot string // kubelet's cgroup root (pods)
	rtCgroup   string // cgroup of containerd, its shims and the kubelet
	containerd *process
	kubelet    *process
}

func (n *Node) socket() string { return filepath.Join(n.runDir, "containerd.sock") }

// cgroupControllers are the cgroup v1 hierarchies mounted on this machine.
func cgroupControllers() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range entries {
		if e.Name() == "unified" {
			continue
		}
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if st, err := os.Lstat(p); err == nil && st.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// makeCgroup creates a cgroup in every v1 hierarchy; a new cpuset has no
// CPUs or memory nodes, so it copies its parent's.
func makeCgroup(name string) error {
	for _, h := range cgroupControllers() {
		p := filepath.Join(h, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", p, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(p, f), b, 0o644); err != nil {
					return fmt.Errorf("write %s/%s: %w", p, f, err)
				}
			}
		}
	}
	return nil
}

// cgroupPIDs lists every process in a cgroup tree (pids hierarchy).
func cgroupPIDs(name string) []int {
	var pids []int
	_ = filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", name), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// containerPIDs are the processes of one container under a kubelet's
// cgroup root: the cgroupfs driver names a container's cgroup after its ID.
func containerPIDs(cgroupRoot, id string) []int {
	var pids []int
	_ = filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", cgroupRoot), func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || d.Name() != id {
			return nil
		}
		pids = append(pids, cgroupPIDs(strings.TrimPrefix(p, "/sys/fs/cgroup/pids"))...)
		return filepath.SkipDir
	})
	return pids
}

// removeCgroup removes a cgroup tree, deepest first, in every hierarchy.
func removeCgroup(name string) {
	for _, h := range cgroupControllers() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, name), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}

func (c *Cluster) startNode(ctx context.Context, name string, index int) (*Node, error) {
	n := &Node{
		Name: name, IP: nodeIP(index),
		dir:        filepath.Join(c.opts.WorkDir, name),
		runDir:     filepath.Join(c.runDir, name),
		cgroupRoot: "/" + c.opts.Netns + "-" + name,
		rtCgroup:   "/" + c.opts.Netns + "-" + name + "-runtime",
	}
	for _, d := range []string{n.dir, n.runDir, filepath.Join(n.dir, "cni", "net.d"), filepath.Join(n.dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	for _, cg := range []string{n.cgroupRoot, n.rtCgroup} {
		if err := makeCgroup(cg); err != nil {
			return nil, err
		}
	}
	c.step("node %s (%s): containerd, CNI (bridge + host-local 10.244.%d.0/24, then the Multus stand-in), kubelet", name, n.IP, index)
	if err := c.writeNodeConfig(n, index); err != nil {
		return nil, err
	}
	var err error
	n.containerd, err = c.startInCgroup(n, "containerd-"+name, "containerd", "--config", filepath.Join(n.dir, "containerd.toml"))
	if err != nil {
		return nil, err
	}
	if err := waitFile(n.socket(), 60*time.Second); err != nil {
		return nil, fmt.Errorf("containerd of %s: %w\n%s", name, err, tail(c.logPath("containerd-"+name), 3000))
	}
	for _, img := range c.opts.Images {
		if err := n.importImage(ctx, img); err != nil {
			return nil, err
		}
	}
	labels := []string{}
	for k, v := range c.opts.NodeLabels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	args := []string{"kubelet", "--config", filepath.Join(n.dir, "kubelet.yaml"), "--kubeconfig", c.inNSConfig,
		"--hostname-override", name, "--node-ip", n.IP, "--root-dir", filepath.Join(n.dir, "kubelet")}
	if len(labels) > 0 {
		args = append(args, "--node-labels", strings.Join(labels, ","))
	}
	args[0] = c.bin("kubelet")
	n.kubelet, err = c.startInCgroup(n, "kubelet-"+name, args...)
	if err != nil {
		return nil, err
	}
	return n, nil
}

// startInCgroup starts a node's process with its pid in the node's runtime
// cgroup, so that its children (containerd's shims) can be found and killed
// with it.
func (c *Cluster) startInCgroup(n *Node, name string, argv ...string) (*process, error) {
	p, err := startProcess(name, c.opts.Netns, c.logPath(name), nil, argv...)
	if err != nil {
		return nil, err
	}
	for _, h := range cgroupControllers() {
		// nsenter execs the component in the same process: same pid.
		_ = os.WriteFile(filepath.Join(h, n.rtCgroup, "cgroup.procs"), []byte(strconv.Itoa(p.pid())), 0o644)
	}
	return p, nil
}

func (n *Node) importImage(ctx context.Context, tarball string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.socket(), "-n", "k8s.io", "images", "import", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import %s into %s's containerd: %w: %s", tarball, n.Name, err, out)
	}
	return nil
}

func (c *Cluster) writeNodeConfig(n *Node, index int) error {
	cniBin := filepath.Join(c.opts.WorkDir, "cni-bin")
	containerd := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # root here lacks CAP_SYS_RESOURCE: without this runc fails to set the
  # containers' oom_score_adj ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
`, filepath.Join(n.dir, "containerd"), filepath.Join(n.runDir, "state"), n.socket(),
		filepath.Join(n.dir, "opt"), pauseImage, cniBin, filepath.Join(n.dir, "cni", "net.d"), filepath.Join(n.runDir, "runc"))
	if err := os.WriteFile(filepath.Join(n.dir, "containerd.toml"), []byte(containerd), 0o644); err != nil {
		return err
	}
	// The primary network: a bridge per node with host-local addresses, then
	// the Multus stand-in for the networks a pod's annotation asks for.
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {"type": "bridge", "bridge": "pods-%d", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.%d.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": %q}},
    {"type": "vmdhcp-multus", "kubeconfig": %q, "cacheDir": %q}
  ]
}
`, index, index, filepath.Join(n.dir, "cni", "ipam"), c.inNSConfig, filepath.Join(n.dir, "cni", "multus"))
	if err := os.WriteFile(filepath.Join(n.dir, "cni", "net.d", "10-pods.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has hybrid cgroups (v1 controllers).
failCgroupV1: false
cgroupDriver: cgroupfs
# Each node's pods in their own cgroup tree, so two kubelets never see
# each other's pods as orphans.
cgroupRoot: %s
failSwapOn: false
containerRuntimeEndpoint: unix://%s
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
podLogsDir: %s
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
# Report a stopped node within seconds (kube-controller-manager watches the lease).
nodeLeaseDurationSeconds: 8
nodeStatusUpdateFrequency: 2s
oomScoreAdj: 0
resolvConf: /etc/resolv.conf
# A shared machine: never evict for the host's disk or memory use, never
# collect the imported images (they cannot be pulled again).
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, n.cgroupRoot, n.socket(), n.IP, 10240+index, 10250+index, filepath.Join(n.dir, "pod-logs"))
	return os.WriteFile(filepath.Join(n.dir, "kubelet.yaml"), []byte(kubelet), 0o644)
}

func waitFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s did not appear within %s", path, timeout)
}

// WaitNodeReady waits until the node reports Ready.
func (c *Cluster) WaitNodeReady(ctx context.Context, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "not registered"
	for time.Now().Before(deadline) {
		node, err := c.clientset.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					if cond.Status == corev1.ConditionTrue {
						return nil
					}
					last = cond.Reason + ": " + cond.Message
				}
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("node %s not Ready after %s (%s)\n--- kubelet:\n%s\n--- containerd:\n%s", name, timeout, last,
		tail(c.logPath("kubelet-"+name), 4000), tail(c.logPath("containerd-"+name), 2000))
}

// FailNode stops a node the way a crash does: the kubelet, containerd, the
// shims and every container of its pods are killed at once; its API objects
// are left for the control plane to deal with.
func (c *Cluster) FailNode(name string) error {
	c.mu.Lock()
	n := c.nodes[name]
	c.mu.Unlock()
	if n == nil {
		return fmt.Errorf("no node %s", name)
	}
	n.stop(false)
	return nil
}

// stop kills the node's processes (graceful: SIGTERM first for the kubelet
// and containerd) and every process left in its cgroups.
func (n *Node) stop(graceful bool) {
	if graceful {
		n.kubelet.stop(5 * time.Second)
	} else {
		n.kubelet.kill()
	}
	n.containerd.kill()
	for i := 0; i < 50; i++ {
		pids := append(cgroupPIDs(n.rtCgroup), cgroupPIDs(n.cgroupRoot)...)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cleanup unmounts what the kubelet and containerd mounted under the node's
// folders (volumes, rootfs, pod network namespaces) and removes its cgroups.
func (n *Node) cleanup() {
	for _, dir := range []string{n.dir, n.runDir} {
		unmountUnder(dir)
	}
	removeCgroup(n.cgroupRoot)
	removeCgroup(n.rtCgroup)
}

// unmountUnder lazily unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// Node returns a running node by name.
func (c *Cluster) Node(name string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name]
}
