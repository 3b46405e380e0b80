// Package localcluster is the project's local stand-in for a Kubernetes
// cluster, built from real parts: a real etcd and kube-apiserver on loopback
// (envtest's control plane), the chart's CRDs, RBAC and webhook
// configurations rendered by helm, the real controller and webhook binaries
// run as local processes with the flags the chart's Deployments give them, a
// kubelet stand-in that runs each agent pod the controller creates as the
// real agent binary inside its own network namespace, and "VMs" that are
// network namespaces running a real DHCP client. `make demo-local` and the e2e
// flow tests both use it.
//
// Network layout: one namespace (<prefix>net) holds a Linux bridge per VM
// network; every agent pod and VM NIC is a veth pair from its own namespace
// into that bridge. Nothing touches the root namespace's links or routes;
// the control plane and the local processes use loopback only.
package localcluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

// NodeName is the one node the stand-in pretends to be.
const NodeName = "localcluster"

// DemoNetnsPrefix is the default start of the cluster's network namespace
// names.
const DemoNetnsPrefix = "vmdhcp-demo-"

// Options configure a local cluster. Zero values take the defaults noted.
type Options struct {
	// WorkDir holds the kubeconfig, logs, agent folders and the state file
	// `Down` reads. Required; it is created if missing.
	WorkDir string
	// BinDir holds vm-dhcp-controller, vm-dhcp-webhook and vm-dhcp-agent.
	// Required.
	BinDir string
	// Helm is the helm binary used to render the chart. Required.
	Helm string
	// Namespace is where the controller, webhook and agents live
	// (default vm-dhcp-system).
	Namespace string
	// NetnsPrefix starts the name of every network namespace created, so
	// several clusters (a demo and a test) do not collide (default
	// vmdhcp-demo-). Only the namespaces the cluster recorded creating are
	// ever removed, never others that merely share the prefix.
	NetnsPrefix string
	// ChartDir is the chart to render (default charts/vm-dhcp-controller).
	ChartDir string
	// HelmSet are extra `--set` values for rendering the chart.
	HelmSet []string
	// AdminEverywhere runs the controller, webhook and agents with the admin
	// kubeconfig instead of their service accounts' tokens.
	AdminEverywhere bool
	// Progress receives one line per step a newcomer can follow (default:
	// discarded).
	Progress io.Writer
	// PriorCRDDirs and Prior set up what another product left in the
	// cluster before this chart is installed (the migration from
	// Harvester's add-on): the control plane starts with the CRDs of
	// PriorCRDDirs instead of the chart's, Prior runs on it, and then the
	// chart's CRDs replace those in place, as `kubectl apply -f crds/`
	// does, before the rest of the chart is installed.
	PriorCRDDirs []string
	Prior        func(ctx context.Context, c client.Client) error
}

// Cluster is a running local cluster. Stop it to remove everything.
type Cluster struct {
	opts       Options
	env        *envtest.Environment
	restConfig *rest.Config
	client     client.Client
	kubeconfig string
	apiPort    int
	state      *stateFile

	mu    sync.Mutex
	procs []*process

	netNS   string // namespace holding the bridges
	network *vmNetwork
	kubelet *kubelet
	cancel  context.CancelFunc

	WebhookPort           int
	ControllerMetricsAddr string
	kubeVersion           string
}

// KubeVersion is the version of the cluster's kube-apiserver (e.g. v1.37.2),
// for `helm template --kube-version`.
func (c *Cluster) KubeVersion() string { return c.kubeVersion }

func (o *Options) defaults() error {
	if o.WorkDir == "" || o.BinDir == "" || o.Helm == "" {
		return fmt.Errorf("local cluster: WorkDir, BinDir and Helm are required")
	}
	if o.Namespace == "" {
		o.Namespace = "vm-dhcp-system"
	}
	if o.NetnsPrefix == "" {
		o.NetnsPrefix = DemoNetnsPrefix
	}
	if o.ChartDir == "" {
		o.ChartDir = filepath.Join(testenv.RepoRoot(), "charts", "vm-dhcp-controller")
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	for _, b := range []string{"vm-dhcp-controller", "vm-dhcp-webhook", "vm-dhcp-agent"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return fmt.Errorf("local cluster: binary %s missing in %s (run make build): %w", b, o.BinDir, err)
		}
	}
	return nil
}

func (c *Cluster) step(format string, args ...any) {
	fmt.Fprintf(c.opts.Progress, "==> "+format+"\n", args...)
}

// Start brings the whole local cluster up. On error everything already
// started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "pods", "vms"} {
		if err := os.MkdirAll(filepath.Join(opts.WorkDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("create work folder: %w", err)
		}
	}
	c := &Cluster{opts: opts, netNS: opts.NetnsPrefix + "net"}
	c.state, err = openState(filepath.Join(opts.WorkDir, "state"))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	assets, err := testenv.AssetsDir()
	if err != nil {
		return nil, err
	}
	if c.kubeVersion, err = apiserverVersion(assets); err != nil {
		return nil, err
	}
	c.step("rendering the chart %s with helm for Kubernetes %s", opts.ChartDir, c.kubeVersion)
	chart, err := renderChart(opts.Helm, opts.ChartDir, "vm-dhcp", opts.Namespace, c.kubeVersion, opts.HelmSet)
	if err != nil {
		return nil, err
	}
	if len(chart.CRDs) == 0 {
		return nil, fmt.Errorf("the chart rendered no CRDs")
	}

	if err := c.startControlPlane(chart); err != nil {
		return nil, err
	}
	if err := c.runPrior(ctx, chart); err != nil {
		return nil, err
	}
	if err := c.install(ctx, chart); err != nil {
		return nil, err
	}
	if err := c.startNetwork(ctx); err != nil {
		return nil, err
	}
	if err := c.startWebhook(ctx, chart); err != nil {
		return nil, err
	}
	if err := c.startController(ctx, chart); err != nil {
		return nil, err
	}
	kctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.step("starting the kubelet stand-in for agent pods (label app.kubernetes.io/name=vm-dhcp-agent in %s)", opts.Namespace)
	c.kubelet, err = startKubelet(kctx, c)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) startControlPlane(chart *renderedChart) error {
	assets, err := testenv.AssetsDir()
	if err != nil {
		return err
	}
	c.step("starting etcd and kube-apiserver on 127.0.0.1 (binaries from %s)", assets)
	c.env = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDs:                  chart.CRDs,
		CRDDirectoryPaths:     []string{filepath.Join(testenv.RepoRoot(), "test", "crds")},
		ErrorIfCRDPathMissing: true,
		Scheme:                testenv.Scheme(),
	}
	if c.opts.Prior != nil {
		c.env.CRDs = nil
		c.env.CRDDirectoryPaths = append(c.env.CRDDirectoryPaths, c.opts.PriorCRDDirs...)
	}
	before := pidSet(childPIDs())
	if _, err := c.env.Start(); err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	for _, pid := range childPIDs() {
		if !before[pid] {
			c.state.addPID(pid)
		}
	}
	admin, err := c.env.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("add admin user: %w", err)
	}
	c.restConfig = admin.Config()
	kc, err := admin.KubeConfig()
	if err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	c.kubeconfig = filepath.Join(c.opts.WorkDir, "kubeconfig")
	if err := os.WriteFile(c.kubeconfig, kc, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	c.apiPort, err = strconv.Atoi(c.env.ControlPlane.APIServer.SecureServing.Port)
	if err != nil {
		return fmt.Errorf("apiserver port: %w", err)
	}
	c.client, err = client.New(c.restConfig, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	c.step("control plane ready at %s; kubeconfig %s", c.restConfig.Host, c.kubeconfig)
	return nil
}

// runPrior runs Options.Prior, then replaces the CRDs it ran with by the
// chart's, in place: the objects stored under the old CRDs stay.
func (c *Cluster) runPrior(ctx context.Context, chart *renderedChart) error {
	if c.opts.Prior == nil {
		return nil
	}
	c.step("setting up the prior state (CRDs from %s)", strings.Join(c.opts.PriorCRDDirs, ", "))
	if err := c.opts.Prior(ctx, c.client); err != nil {
		return fmt.Errorf("prior state: %w", err)
	}
	c.step("replacing the CRDs in place with the chart's (kubectl apply -f crds/)")
	if err := envtest.CreateCRDs(c.restConfig, chart.CRDs); err != nil {
		return fmt.Errorf("replace CRDs with the chart's: %w", err)
	}
	if err := envtest.WaitForCRDs(c.restConfig, chart.CRDs, envtest.CRDInstallOptions{PollInterval: 100 * time.Millisecond, MaxTime: 30 * time.Second}); err != nil {
		return fmt.Errorf("chart CRDs not established: %w", err)
	}
	return nil
}

// install creates the namespace, the node and the chart's objects.
func (c *Cluster) install(ctx context.Context, chart *renderedChart) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.opts.Namespace}}
	if err := c.client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", c.opts.Namespace, err)
	}
	if err := c.createNode(ctx); err != nil {
		return err
	}
	var err error
	c.WebhookPort, err = freePort()
	if err != nil {
		return err
	}
	var names []string
	for _, obj := range chart.Objects {
		if _, err := rewriteWebhookClientConfig(obj, c.WebhookPort); err != nil {
			return err
		}
		if obj.GetNamespace() == "" && isNamespaced(obj.GetKind()) {
			obj.SetNamespace(c.opts.Namespace)
		}
		if err := c.client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("install %s %s from the chart: %w", obj.GetKind(), obj.GetName(), err)
		}
		names = append(names, obj.GetKind()+"/"+obj.GetName())
	}
	c.step("installed from the chart: %d CRDs, %s", len(chart.CRDs), strings.Join(names, ", "))
	if len(chart.Skipped) > 0 || len(chart.Deployments) > 0 {
		var ds []string
		for _, d := range chart.Deployments {
			ds = append(ds, "Deployment/"+d.Name)
		}
		c.step("not installed (run as local processes or not needed here): %s", strings.Join(append(ds, chart.Skipped...), ", "))
	}
	return nil
}

func isNamespaced(kind string) bool {
	switch kind {
	case "Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
		"MutatingWebhookConfiguration", "CustomResourceDefinition", "PriorityClass",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
		return false
	}
	return true
}

// createNode registers the node the kubelet stand-in binds agent pods to.
func (c *Cluster) createNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName,
		Labels: map[string]string{"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux"}}}
	if err := c.client.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node: %w", err)
	}
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	if err := c.client.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("report node ready: %w", err)
	}
	return nil
}

// commandFor finds the chart's container for a binary: the Deployment or
// container whose name mentions want (e.g. "webhook"), excluding names that
// mention notWant. When the chart has no such Deployment, defaults are used.
func commandFor(chart *renderedChart, namespace, want, notWant string) (containerCommand, bool) {
	for _, d := range chart.Deployments {
		for _, cc := range containerCommands(d, namespace) {
			name := d.Name + "/" + cc.Container + "/" + cc.Image
			if strings.Contains(name, want) && (notWant == "" || !strings.Contains(name, notWant)) {
				return cc, true
			}
		}
	}
	return containerCommand{Env: map[string]string{}}, false
}

// kubeconfigFor returns a kubeconfig file for the service account: a token
// from the TokenRequest API, so the chart's RBAC is what the process gets.
// An empty name or AdminEverywhere gives the admin kubeconfig.
func (c *Cluster) kubeconfigFor(ctx context.Context, namespace, serviceAccount string) (string, error) {
	if c.opts.AdminEverywhere || serviceAccount == "" {
		return c.kubeconfig, nil
	}
	cs, err := kubernetes.NewForConfig(c.restConfig)
	if err != nil {
		return "", err
	}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Get(ctx, serviceAccount, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount, Namespace: namespace}}
		if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("create service account %s/%s: %w", namespace, serviceAccount, err)
		}
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](48 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %s/%s: %w", namespace, serviceAccount, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: c.restConfig.Host, CertificateAuthorityData: c.restConfig.CAData}
	cfg.AuthInfos[serviceAccount] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: serviceAccount, Namespace: namespace}
	cfg.CurrentContext = "local"
	path := filepath.Join(c.opts.WorkDir, fmt.Sprintf("kubeconfig-%s-%s", namespace, serviceAccount))
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("write kubeconfig for %s/%s: %w", namespace, serviceAccount, err)
	}
	return path, nil
}

func (c *Cluster) startWebhook(ctx context.Context, chart *renderedChart) error {
	cc, fromChart := commandFor(chart, c.opts.Namespace, "webhook", "")
	args := cc.Args
	if !fromChart {
		args = []string{"--namespace=" + c.opts.Namespace}
	}
	mounts, err := localVolumes(cc, chart, filepath.Join(c.opts.WorkDir, "webhook-volumes"))
	if err != nil {
		return err
	}
	for i := range args {
		args[i] = rewritePaths(args[i], mounts)
	}
	kubeconfig, err := c.kubeconfigFor(ctx, c.opts.Namespace, cc.ServiceAccount)
	if err != nil {
		return err
	}
	metricsPort, err := freePort()
	if err != nil {
		return err
	}
	healthPort, err := freePort()
	if err != nil {
		return err
	}
	certDir := filepath.Join(c.opts.WorkDir, "webhook-certs")
	args = setFlag(args, "kubeconfig", kubeconfig)
	args = setFlag(args, "port", strconv.Itoa(c.WebhookPort))
	args = setFlag(args, "cert-dir", certDir)
	args = setFlag(args, "metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort))
	args = setFlag(args, "health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", healthPort))
	c.step("starting the webhook: vm-dhcp-webhook %s", strings.Join(args, " "))
	if _, err := c.startLocal("webhook", cc.Env, filepath.Join(c.opts.BinDir, "vm-dhcp-webhook"), args...); err != nil {
		return err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort), 90*time.Second); err != nil {
		return fmt.Errorf("webhook not ready: %w\n%s", err, tail(c.logPath("webhook"), 3000))
	}
	if err := c.waitCABundles(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(c.logPath("webhook"), 3000))
	}
	c.step("webhook ready on https://127.0.0.1:%d (caBundle patched into the webhook configurations)", c.WebhookPort)
	return nil
}

// waitCABundles waits until every webhook in the installed configurations
// carries a CA bundle, which the webhook patches in self-managed cert mode.
func (c *Cluster) waitCABundles(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := ""
		var vl admissionregistrationv1.ValidatingWebhookConfigurationList
		var ml admissionregistrationv1.MutatingWebhookConfigurationList
		if err := c.client.List(ctx, &vl); err != nil {
			return err
		}
		if err := c.client.List(ctx, &ml); err != nil {
			return err
		}
		for _, v := range vl.Items {
			for _, w := range v.Webhooks {
				if len(w.ClientConfig.CABundle) == 0 {
					missing = v.Name + "/" + w.Name
				}
			}
		}
		for _, m := range ml.Items {
			for _, w := range m.Webhooks {
				if len(w.ClientConfig.CABundle) == 0 {
					missing = m.Name + "/" + w.Name
				}
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("webhook %s still has no caBundle after %s", missing, timeout)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (c *Cluster) startController(ctx context.Context, chart *renderedChart) error {
	cc, fromChart := commandFor(chart, c.opts.Namespace, "controller", "webhook")
	args := cc.Args
	if !fromChart {
		args = []string{"--namespace=" + c.opts.Namespace, "--agent-image=vm-dhcp-agent:local"}
	}
	mounts, err := localVolumes(cc, chart, filepath.Join(c.opts.WorkDir, "controller-volumes"))
	if err != nil {
		return err
	}
	for i := range args {
		args[i] = rewritePaths(args[i], mounts)
	}
	kubeconfig, err := c.kubeconfigFor(ctx, c.opts.Namespace, cc.ServiceAccount)
	if err != nil {
		return err
	}
	metricsPort, err := freePort()
	if err != nil {
		return err
	}
	healthPort, err := freePort()
	if err != nil {
		return err
	}
	c.ControllerMetricsAddr = fmt.Sprintf("127.0.0.1:%d", metricsPort)
	args = setFlag(args, "kubeconfig", kubeconfig)
	args = setFlag(args, "metrics-bind-address", c.ControllerMetricsAddr)
	args = setFlag(args, "health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", healthPort))
	c.step("starting the controller: vm-dhcp-controller %s", strings.Join(args, " "))
	if _, err := c.startLocal("controller", cc.Env, filepath.Join(c.opts.BinDir, "vm-dhcp-controller"), args...); err != nil {
		return err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", healthPort), 90*time.Second); err != nil {
		return fmt.Errorf("controller not healthy: %w\n%s", err, tail(c.logPath("controller"), 3000))
	}
	c.step("controller running (metrics and /ipams on http://%s)", c.ControllerMetricsAddr)
	return nil
}

func (c *Cluster) logPath(name string) string {
	return filepath.Join(c.opts.WorkDir, "logs", name+".log")
}

// startLocal starts one of the cluster's local processes and records it.
func (c *Cluster) startLocal(name string, env map[string]string, argv0 string, args ...string) (*process, error) {
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	p, err := startProcess(name, c.logPath(name), envList, append([]string{argv0}, args...)...)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	c.state.addPID(p.pid())
	return p, nil
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback health probe
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200 within %s (last: %s)", url, timeout, last)
}

// Kubeconfig is the admin kubeconfig file.
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// Client is an admin client knowing our kinds, NADs and KubeVirt VMs.
func (c *Cluster) Client() client.Client { return c.client }

// RESTConfig is the admin REST config.
func (c *Cluster) RESTConfig() *rest.Config { return c.restConfig }

// Namespace is where the controller runs agents.
func (c *Cluster) Namespace() string { return c.opts.Namespace }

// WorkDir is the cluster's work folder.
func (c *Cluster) WorkDir() string { return c.opts.WorkDir }

// addNetns creates a network namespace and records it first, so that Stop
// or Down remove it even if this process dies right after.
func (c *Cluster) addNetns(ctx context.Context, name string) error {
	c.state.addNetns(name)
	return addNetns(ctx, name)
}

// Stop stops every process, removes every network namespace and stops the
// control plane. It is safe to call more than once.
func (c *Cluster) Stop() {
	if c.cancel != nil {
		c.cancel()
	}
	if c.kubelet != nil {
		c.kubelet.stopAll()
	}
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(5 * time.Second)
	}
	for _, ns := range c.state.netnsNames() {
		_ = delNetns(ns)
	}
	if c.env != nil {
		_ = c.env.Stop()
		c.env = nil
	}
	c.state.remove()
}
