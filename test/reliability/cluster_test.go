package reliability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

const agentNamespace = "vm-dhcp-system"

// controlPlane is a real etcd + kube-apiserver with our CRDs. Its API
// server keeps its certificates and port in a folder of ours, so it can be
// stopped and started again while clients keep their kubeconfig.
type controlPlane struct {
	env        *envtest.Environment
	cfg        *rest.Config
	client     client.Client
	kubeconfig string // admin kubeconfig file, for the processes under test
	dir        string
}

// startControlPlane starts a control plane; it stops when the test ends.
// Pass webhooks to have the API server call a local webhook server.
func startControlPlane(t testing.TB, webhooks *envtest.WebhookInstallOptions) *controlPlane {
	t.Helper()
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "vm-dhcp-rel-cp-")
	if err != nil {
		t.Fatal(err)
	}
	// A CertDir of our own is not removed by Stop, so Start serves the same
	// certificates on the same port again (see apiServerDown).
	env.ControlPlane.APIServer = &envtest.APIServer{CertDir: dir, StartTimeout: 90 * time.Second, StopTimeout: apiServerGrace}
	if webhooks != nil {
		env.WebhookInstallOptions = *webhooks
	}
	cfg, err := env.Start()
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("start control plane: %v", err)
	}
	cp := &controlPlane{env: env, cfg: cfg, dir: dir}
	t.Cleanup(func() {
		_ = env.Stop()
		_ = os.RemoveAll(dir)
	})
	cfg.QPS, cfg.Burst = 500, 1000
	cp.client, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatalf("add admin user: %v", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	cp.kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(cp.kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cp.client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: agentNamespace}}); err != nil {
		t.Fatal(err)
	}
	return cp
}

// apiPort is the API server's secure port on loopback.
func (cp *controlPlane) apiPort() int {
	p, _ := strconv.Atoi(cp.env.ControlPlane.APIServer.SecureServing.Port)
	return p
}

// apiServerGrace is how long kube-apiserver gets after SIGTERM before
// envtest SIGKILLs it: with watches open it does not finish its graceful
// shutdown in any useful time.
const apiServerGrace = 3 * time.Second

// stopAPIServer stops kube-apiserver (SIGTERM, SIGKILL after
// apiServerGrace); etcd keeps running.
func (cp *controlPlane) stopAPIServer() error {
	err := cp.env.ControlPlane.APIServer.Stop()
	if err != nil && strings.Contains(err.Error(), "timeout waiting for process kube-apiserver to stop") {
		return nil // envtest has SIGKILLed it
	}
	return err
}

// startAPIServer starts kube-apiserver again with the same certificates and port.
func (cp *controlPlane) startAPIServer() error {
	return cp.env.ControlPlane.APIServer.Start()
}

// network creates namespace ns with a NAD "net" and an IPPool "pool" for it.
func (cp *controlPlane) network(t testing.TB, ns string, spec v1alpha1.IPv4Config) *v1alpha1.IPPool {
	t.Helper()
	return cp.networkWith(t, ns, v1alpha1.IPPoolSpec{IPv4Config: spec})
}

// networkWith is network for any pool spec (its network name is filled in):
// dual stack, IPv6-only.
func (cp *controlPlane) networkWith(t testing.TB, ns string, spec v1alpha1.IPPoolSpec) *v1alpha1.IPPool {
	t.Helper()
	ctx := context.Background()
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "net"},
			Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"0.3.1","type":"bridge","bridge":"br0"}`}},
	}
	spec.NetworkName = ns + "/net"
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pool"}, Spec: spec}
	for _, o := range append(objs, pool) {
		if err := cp.client.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
	return pool
}

func vmNetCfg(ns, name, network, mac string) *v1alpha1.VirtualMachineNetworkConfig {
	return &v1alpha1.VirtualMachineNetworkConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.VirtualMachineNetworkConfigSpec{VMName: name,
			NetworkConfigs: []v1alpha1.NetworkConfig{{NetworkName: network, MACAddress: mac}}},
	}
}

// process is a binary under test run as a child process.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProcess starts argv with its output appended to logPath.
func startProcess(t testing.TB, name, logPath string, argv ...string) *process {
	t.Helper()
	p, err := spawn(name, logPath, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func spawn(name, logPath string, argv ...string) (*process, error) {
	return spawnEnv(name, logPath, nil, argv...)
}

// spawnEnv is spawn with extra environment variables (KEY=value).
func spawnEnv(name, logPath string, env []string, argv ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	fmt.Fprintf(logf, "\n=== %s start %s: %v\n", time.Now().Format(time.RFC3339Nano), name, argv)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// Own process group, and killed with us if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended (and how).
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks politely, then kills after grace.
func (p *process) stop(grace time.Duration) {
	if ok, _ := p.exited(); ok {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// controllerSet runs vm-dhcp-controller processes against a control plane.
type controllerSet struct {
	t        testing.TB
	cp       *controlPlane
	bin, dir string
	mu       sync.Mutex
	seq      int
}

func newControllerSet(t testing.TB, cp *controlPlane) *controllerSet {
	return &controllerSet{t: t, cp: cp, bin: controllerBinary(t), dir: t.TempDir()}
}

// start runs one controller; leaderElect false gives a lone (or split-brain)
// controller. The process is killed when the test ends.
func (s *controllerSet) start(name string, leaderElect bool) *process {
	s.mu.Lock()
	s.seq++
	s.mu.Unlock()
	p := startProcess(s.t, name, s.logPath(name), s.bin,
		"--kubeconfig", s.cp.kubeconfig,
		"--namespace", agentNamespace,
		"--agent-image", "vm-dhcp-agent:reliability",
		"--leader-elect="+strconv.FormatBool(leaderElect),
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", "0",
		"--zap-log-level", "error",
	)
	s.t.Cleanup(func() { p.stop(5 * time.Second) })
	return p
}

func (s *controllerSet) logPath(name string) string { return filepath.Join(s.dir, name+".log") }

// tail is the end of a log file, for failure messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, err := io.ReadAll(f)
	if err != nil && !errors.Is(err, io.EOF) {
		return err.Error()
	}
	return string(b)
}

func namespaceObj(name string) client.Object {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func lookupNAD(ns string) client.Object {
	return &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "net"},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"0.3.1","type":"bridge","bridge":"br0"}`}}
}
