package localcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

// AgentLabel selects the agent pods the kubelet stand-in runs.
const (
	AgentLabel      = "app.kubernetes.io/name"
	AgentLabelValue = "vm-dhcp-agent"
	poolNSLabel     = "network.harvesterhci.io/ippool-namespace"
	poolNameLabel   = "network.harvesterhci.io/ippool-name"
	multusNetworks  = "k8s.v1.cni.cncf.io/networks"
)

// kubelet runs agent pods: it binds each to the one node, runs the real
// agent binary with the pod's arguments inside a network namespace plugged
// into the pod's VM network, serves the pod's volumes from folders, and
// reports the pod's status through the status subresource, as a kubelet
// would. When a pod goes away its process and namespace go too.
type kubelet struct {
	c      *Cluster
	cs     *kubernetes.Clientset
	log    logr.Logger
	events chan event.GenericEvent

	mu   sync.Mutex
	pods map[types.UID]*agentPod
}

// agentPod is one running agent pod.
type agentPod struct {
	uid        types.UID
	key        types.NamespacedName
	netns      string
	dir        string
	argv       []string
	env        []string
	container  corev1.Container
	podIP      string
	mounts     map[string]string // mount path in the pod -> folder here
	configMaps map[string]string // folder here -> config map name
	proc       *process
	proxy      net.Listener
	restarts   int32
	startedAt  time.Time
}

func startKubelet(ctx context.Context, c *Cluster) (*kubelet, error) {
	logFile, err := os.OpenFile(c.logPath("kubelet"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open kubelet log: %w", err)
	}
	log := funcr.New(func(prefix, args string) {
		fmt.Fprintf(logFile, "%s %s %s\n", time.Now().Format(time.RFC3339Nano), prefix, args)
	}, funcr.Options{Verbosity: 1})
	cs, err := kubernetes.NewForConfig(c.restConfig)
	if err != nil {
		return nil, fmt.Errorf("kubelet clientset: %w", err)
	}
	k := &kubelet{c: c, cs: cs, log: log, events: make(chan event.GenericEvent, 64), pods: map[types.UID]*agentPod{}}

	mgr, err := ctrl.NewManager(c.restConfig, ctrl.Options{
		Scheme:  testenv.Scheme(),
		Logger:  log,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{c.opts.Namespace: {}},
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{AgentLabel: AgentLabelValue})},
			},
		},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, fmt.Errorf("kubelet manager: %w", err)
	}
	err = builder.ControllerManagedBy(mgr).
		Named("kubelet-standin").
		For(&corev1.Pod{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetLabels()[AgentLabel] == AgentLabelValue
		}))).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(k.podsMounting)).
		WatchesRawSource(source.Channel(k.events, &handler.EnqueueRequestForObject{})).
		Complete(k)
	if err != nil {
		return nil, fmt.Errorf("kubelet controller: %w", err)
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			log.Error(err, "kubelet stand-in stopped")
		}
		logFile.Close()
	}()
	return k, nil
}

// podsMounting maps a changed ConfigMap to the running pods that mount it,
// so the files they see follow the ConfigMap as with a real kubelet.
func (k *kubelet) podsMounting(_ context.Context, o client.Object) []reconcile.Request {
	k.mu.Lock()
	defer k.mu.Unlock()
	var reqs []reconcile.Request
	for _, p := range k.pods {
		for _, name := range p.configMaps {
			if name == o.GetName() && p.key.Namespace == o.GetNamespace() {
				reqs = append(reqs, reconcile.Request{NamespacedName: p.key})
			}
		}
	}
	return reqs
}

func (k *kubelet) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pod := &corev1.Pod{}
	err := k.c.client.Get(ctx, req.NamespacedName, pod)
	if apierrors.IsNotFound(err) {
		k.stopWhere(func(p *agentPod) bool { return p.key == req.NamespacedName })
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	// A pod replaced under the same name: its predecessor stops first.
	k.stopWhere(func(p *agentPod) bool { return p.key == req.NamespacedName && p.uid != pod.UID })

	if pod.DeletionTimestamp != nil {
		k.stopWhere(func(p *agentPod) bool { return p.uid == pod.UID })
		// The kubelet finishes a graceful deletion once the containers are gone.
		err := k.c.client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return reconcile.Result{}, fmt.Errorf("finish deleting pod %s: %w", req, err)
		}
		k.log.Info("pod deleted, agent stopped", "pod", req)
		return reconcile.Result{}, nil
	}
	if pod.Spec.NodeName == "" {
		if err := k.labelNodeFor(ctx, pod); err != nil {
			return reconcile.Result{}, err
		}
		binding := &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: NodeName},
		}
		if err := k.cs.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsConflict(err) {
			return reconcile.Result{}, fmt.Errorf("bind pod %s to %s: %w", req, NodeName, err)
		}
		k.log.Info("pod bound", "pod", req, "node", NodeName)
		return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return reconcile.Result{}, nil
	}

	k.mu.Lock()
	p := k.pods[pod.UID]
	k.mu.Unlock()
	if p == nil {
		p, err = k.start(ctx, pod)
		if err != nil {
			k.log.Error(err, "start agent", "pod", req)
			msg := err.Error()
			if uerr := k.reportWaiting(ctx, pod, "StartError", msg); uerr != nil {
				k.log.Error(uerr, "report pod status", "pod", req)
			}
			return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
		}
	} else if err := k.refreshConfigMaps(ctx, p); err != nil {
		k.log.Error(err, "refresh config map volumes", "pod", req)
	}
	if done, exitErr := p.proc.exited(); done {
		k.log.Info("agent exited, restarting", "pod", req, "err", fmt.Sprint(exitErr))
		if err := k.restart(p); err != nil {
			return reconcile.Result{RequeueAfter: 2 * time.Second}, nil
		}
	}
	ready := k.probe(ctx, p)
	if err := k.reportRunning(ctx, pod, p, ready); err != nil {
		if apierrors.IsConflict(err) {
			return reconcile.Result{Requeue: true}, nil
		}
		return reconcile.Result{}, err
	}
	if !ready {
		return reconcile.Result{RequeueAfter: 300 * time.Millisecond}, nil
	}
	return reconcile.Result{RequeueAfter: 3 * time.Second}, nil
}

// start creates the pod's namespace, plugs it into its networks, writes its
// volumes and starts the agent binary in it.
func (k *kubelet) start(ctx context.Context, pod *corev1.Pod) (*agentPod, error) {
	if len(pod.Spec.Containers) == 0 {
		return nil, fmt.Errorf("pod %s/%s has no containers", pod.Namespace, pod.Name)
	}
	c := pod.Spec.Containers[0]
	for _, cc := range pod.Spec.Containers {
		if cc.Name == "agent" {
			c = cc
		}
	}
	p := &agentPod{
		uid: pod.UID, key: types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name},
		netns:      k.c.opts.NetnsPrefix + "pod-" + string(pod.UID)[:8],
		dir:        filepath.Join(k.c.opts.WorkDir, "pods", pod.Name+"-"+string(pod.UID)[:8]),
		container:  c,
		mounts:     map[string]string{},
		configMaps: map[string]string{},
	}
	cleanup := func(err error) (*agentPod, error) {
		if p.proxy != nil {
			p.proxy.Close()
		}
		_ = delNetns(p.netns)
		_ = os.RemoveAll(p.dir)
		return nil, err
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("pod folder: %w", err)
	}
	if err := k.c.addNetns(ctx, p.netns); err != nil {
		return cleanup(err)
	}
	attachments, err := k.attachments(ctx, pod)
	if err != nil {
		return cleanup(err)
	}
	for _, a := range attachments {
		if err := k.c.network.plug(ctx, a.network, p.netns, a.iface, ""); err != nil {
			return cleanup(err)
		}
	}
	// The agent's plugins talk to the apiserver at 127.0.0.1:<port>; inside
	// the pod's namespace that address is served by a proxy to the real one.
	p.proxy, err = listenInNetns(p.netns, fmt.Sprintf("127.0.0.1:%d", k.c.apiPort))
	if err != nil {
		return cleanup(fmt.Errorf("apiserver proxy in %s: %w", p.netns, err))
	}
	go forward(p.proxy, fmt.Sprintf("127.0.0.1:%d", k.c.apiPort))

	if err := k.writeVolumes(ctx, pod, p); err != nil {
		return cleanup(err)
	}
	kubeconfig, err := k.c.kubeconfigFor(ctx, pod.Namespace, pod.Spec.ServiceAccountName)
	if err != nil {
		return cleanup(err)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = envValue(e, pod.Namespace, pod.Name, pod.Spec.ServiceAccountName)
	}
	args := append(append([]string{}, c.Command...), c.Args...)
	if len(c.Command) > 0 {
		args = args[1:]
	}
	for i, a := range args {
		args[i] = rewritePaths(expandVars(a, env), p.mounts)
	}
	for i := range args {
		if v, ok := strings.CutPrefix(args[i], "--interface-address="); ok {
			p.podIP = podIPFrom(v)
		} else if args[i] == "--interface-address" && i+1 < len(args) {
			p.podIP = podIPFrom(args[i+1])
		}
	}
	env["KUBECONFIG"] = kubeconfig
	for k, v := range env {
		p.env = append(p.env, k+"="+v)
	}
	p.argv = append([]string{"ip", "netns", "exec", p.netns, filepath.Join(k.c.opts.BinDir, "vm-dhcp-agent")}, args...)
	if err := k.restart(p); err != nil {
		return cleanup(err)
	}
	p.restarts = 0
	k.mu.Lock()
	k.pods[pod.UID] = p
	k.mu.Unlock()
	k.log.Info("agent started", "pod", p.key, "netns", p.netns, "args", strings.Join(args, " "))
	return p, nil
}

// restart (re)starts the agent process of p.
func (k *kubelet) restart(p *agentPod) error {
	if p.proc != nil {
		p.proc.stop(5 * time.Second)
		p.restarts++
	}
	proc, err := startProcess("agent "+p.key.String(), k.c.logPath("agent-"+p.key.Name), p.env, p.argv...)
	if err != nil {
		return err
	}
	k.c.state.addPID(proc.pid())
	p.proc, p.startedAt = proc, time.Now()
	go func() {
		<-proc.done
		// Wake the reconciler so it restarts the agent and reports it.
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.key.Namespace, Name: p.key.Name}}
		select {
		case k.events <- event.GenericEvent{Object: pod}:
		default:
		}
	}()
	return nil
}

func podIPFrom(ifaceAddr string) string {
	_, cidr, ok := strings.Cut(ifaceAddr, "=")
	if !ok {
		return ""
	}
	ip, _, _ := strings.Cut(cidr, "/")
	if net.ParseIP(ip) == nil {
		return ""
	}
	return ip
}

type attachment struct{ network, iface string }

// attachments are the VM networks the pod asks multus for, from the
// k8s.v1.cni.cncf.io/networks annotation (JSON or "ns/name@iface" list).
// Without it, the agent's pool labels give the pool's network on eth1.
func (k *kubelet) attachments(ctx context.Context, pod *corev1.Pod) ([]attachment, error) {
	var out []attachment
	if ann := strings.TrimSpace(pod.Annotations[multusNetworks]); ann != "" {
		if strings.HasPrefix(ann, "[") {
			var sel []struct{ Name, Namespace, Interface string }
			if err := json.Unmarshal([]byte(ann), &sel); err != nil {
				return nil, fmt.Errorf("pod %s/%s: annotation %s: %w", pod.Namespace, pod.Name, multusNetworks, err)
			}
			for i, s := range sel {
				ns := s.Namespace
				if ns == "" {
					ns = pod.Namespace
				}
				iface := s.Interface
				if iface == "" {
					iface = fmt.Sprintf("net%d", i+1)
				}
				out = append(out, attachment{network: ns + "/" + s.Name, iface: iface})
			}
		} else {
			for i, s := range strings.Split(ann, ",") {
				s = strings.TrimSpace(s)
				name, iface, _ := strings.Cut(s, "@")
				if iface == "" {
					iface = fmt.Sprintf("net%d", i+1)
				}
				if !strings.Contains(name, "/") {
					name = pod.Namespace + "/" + name
				}
				out = append(out, attachment{network: name, iface: iface})
			}
		}
		return out, nil
	}
	ns, name := pod.Labels[poolNSLabel], pod.Labels[poolNameLabel]
	if ns == "" || name == "" {
		return nil, fmt.Errorf("pod %s/%s names no network (no %s annotation, no pool labels)", pod.Namespace, pod.Name, multusNetworks)
	}
	pool := &v1alpha1.IPPool{}
	if err := k.c.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, pool); err != nil {
		return nil, fmt.Errorf("pool of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	network := pool.Network()
	if !strings.Contains(network, "/") {
		network = pool.Namespace + "/" + network
	}
	return []attachment{{network: network, iface: "eth1"}}, nil
}

// writeVolumes gives each volume the container mounts a folder: config maps
// and secrets are written out, emptyDirs start empty. Mount paths in the
// args and in written files are rewritten to those folders, since the agent
// runs without a mount namespace of its own.
func (k *kubelet) writeVolumes(ctx context.Context, pod *corev1.Pod, p *agentPod) error {
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range p.container.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			continue
		}
		dir := filepath.Join(p.dir, "volumes", m.Name)
		switch {
		case v.ConfigMap != nil:
			p.configMaps[dir] = v.ConfigMap.Name
		case v.EmptyDir != nil, v.Secret != nil:
		default:
			continue // e.g. the projected service account token: KUBECONFIG replaces it
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("volume %s: %w", m.Name, err)
		}
		p.mounts[m.MountPath] = dir
	}
	for _, m := range p.container.VolumeMounts {
		v := vols[m.Name]
		if v.Secret == nil {
			continue
		}
		sec := &corev1.Secret{}
		if err := k.c.client.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: v.Secret.SecretName}, sec); err != nil {
			return fmt.Errorf("secret volume %s: %w", m.Name, err)
		}
		for key, b := range sec.Data {
			if err := writeIfChanged(filepath.Join(p.mounts[m.MountPath], key), b); err != nil {
				return err
			}
		}
	}
	return k.refreshConfigMaps(ctx, p)
}

// refreshConfigMaps writes the current content of each mounted ConfigMap.
func (k *kubelet) refreshConfigMaps(ctx context.Context, p *agentPod) error {
	for dir, name := range p.configMaps {
		cm := &corev1.ConfigMap{}
		if err := k.c.client.Get(ctx, types.NamespacedName{Namespace: p.key.Namespace, Name: name}, cm); err != nil {
			return fmt.Errorf("config map %s/%s: %w", p.key.Namespace, name, err)
		}
		for key, val := range cm.Data {
			if err := writeIfChanged(filepath.Join(dir, key), []byte(rewritePaths(val, p.mounts))); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeIfChanged replaces a file atomically when its content differs.
func writeIfChanged(path string, b []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// rewritePaths replaces each mount path in s with its folder, longest first
// so nested mounts win.
func rewritePaths(s string, mounts map[string]string) string {
	paths := make([]string, 0, len(mounts))
	for m := range mounts {
		paths = append(paths, m)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, m := range paths {
		s = strings.ReplaceAll(s, strings.TrimSuffix(m, "/"), mounts[m])
	}
	return s
}

// probe runs the container's readiness probe (an HTTP GET) inside the pod's
// namespace. Without a probe, a process that stayed up a second is ready.
func (k *kubelet) probe(ctx context.Context, p *agentPod) bool {
	if done, _ := p.proc.exited(); done {
		return false
	}
	pr := p.container.ReadinessProbe
	if pr == nil || pr.HTTPGet == nil {
		return time.Since(p.startedAt) > time.Second
	}
	port := pr.HTTPGet.Port.IntValue()
	if port == 0 {
		for _, cp := range p.container.Ports {
			if cp.Name == pr.HTTPGet.Port.String() {
				port = int(cp.ContainerPort)
			}
		}
	}
	scheme := "http"
	if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialInNetns(ctx, p.netns, addr)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, port, pr.HTTPGet.Path), nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

func (k *kubelet) reportWaiting(ctx context.Context, pod *corev1.Pod, reason, msg string) error {
	pod = pod.DeepCopy()
	pod.Status.Phase = corev1.PodPending
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: pod.Spec.Containers[0].Name, Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}
	return k.c.client.Status().Update(ctx, pod)
}

// reportRunning writes the pod's status when it changed.
func (k *kubelet) reportRunning(ctx context.Context, pod *corev1.Pod, p *agentPod, ready bool) error {
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == t && c.Status == s {
				return c
			}
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()}
	}
	st := pod.Status.DeepCopy()
	st.Phase = corev1.PodRunning
	st.HostIP = "127.0.0.1"
	st.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	if p.podIP != "" {
		st.PodIP = p.podIP
		st.PodIPs = []corev1.PodIP{{IP: p.podIP}}
	}
	if st.StartTime == nil {
		st.StartTime = ptr.To(metav1.Now())
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true), cond(corev1.PodInitialized, true),
		cond(corev1.ContainersReady, ready), cond(corev1.PodReady, ready),
	}
	var startedAt metav1.Time
	if len(pod.Status.ContainerStatuses) > 0 && pod.Status.ContainerStatuses[0].State.Running != nil &&
		pod.Status.ContainerStatuses[0].RestartCount == p.restarts {
		startedAt = pod.Status.ContainerStatuses[0].State.Running.StartedAt
	} else {
		startedAt = metav1.NewTime(p.startedAt)
	}
	st.ContainerStatuses = []corev1.ContainerStatus{{
		Name: p.container.Name, Image: p.container.Image, ImageID: "localcluster://" + filepath.Base(p.argv[4]),
		ContainerID: "localcluster://" + strconv.Itoa(p.proc.pid()), Ready: ready, Started: ptr.To(true),
		RestartCount: p.restarts, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}},
	}}
	if statusEqual(&pod.Status, st) {
		return nil
	}
	pod = pod.DeepCopy()
	pod.Status = *st
	if err := k.c.client.Status().Update(ctx, pod); err != nil {
		return fmt.Errorf("report status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	k.log.Info("pod status", "pod", p.key, "ready", ready, "podIP", st.PodIP, "restarts", p.restarts)
	return nil
}

func statusEqual(a, b *corev1.PodStatus) bool {
	if a.Phase != b.Phase || a.PodIP != b.PodIP || len(a.Conditions) != len(b.Conditions) || len(a.ContainerStatuses) != len(b.ContainerStatuses) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i].Type != b.Conditions[i].Type || a.Conditions[i].Status != b.Conditions[i].Status {
			return false
		}
	}
	for i := range a.ContainerStatuses {
		x, y := a.ContainerStatuses[i], b.ContainerStatuses[i]
		if x.Ready != y.Ready || x.RestartCount != y.RestartCount || x.ContainerID != y.ContainerID {
			return false
		}
	}
	return true
}

// stopWhere stops the agents matching keep and removes their namespaces.
func (k *kubelet) stopWhere(match func(*agentPod) bool) {
	k.mu.Lock()
	var stop []*agentPod
	for uid, p := range k.pods {
		if match(p) {
			stop = append(stop, p)
			delete(k.pods, uid)
		}
	}
	k.mu.Unlock()
	for _, p := range stop {
		p.stop()
		k.log.Info("agent stopped", "pod", p.key, "netns", p.netns)
	}
}

func (k *kubelet) stopAll() { k.stopWhere(func(*agentPod) bool { return true }) }

func (p *agentPod) stop() {
	if p.proc != nil {
		p.proc.stop(5 * time.Second)
	}
	if p.proxy != nil {
		p.proxy.Close()
	}
	_ = delNetns(p.netns)
	_ = os.RemoveAll(p.dir)
}

// forward accepts connections on l and pipes each to addr.
func forward(l net.Listener, addr string) {
	for {
		in, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return
		}
		go func() {
			defer in.Close()
			out, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer out.Close()
			go func() { _, _ = io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(in, out)
		}()
	}
}

// labelNodeFor gives the one node the labels the pod's required node
// affinity asks for (e.g. network.harvesterhci.io/mgmt=true, which Harvester
// puts on nodes of a cluster network), as a scheduler would only pick such
// a node.
func (k *kubelet) labelNodeFor(ctx context.Context, pod *corev1.Pod) error {
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return nil
	}
	terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) == 0 {
		return nil
	}
	want := map[string]string{}
	for _, req := range terms[0].MatchExpressions {
		if req.Operator == corev1.NodeSelectorOpIn && len(req.Values) > 0 {
			want[req.Key] = req.Values[0]
		}
	}
	if len(want) == 0 {
		return nil
	}
	node := &corev1.Node{}
	if err := k.c.client.Get(ctx, types.NamespacedName{Name: NodeName}, node); err != nil {
		return fmt.Errorf("read node: %w", err)
	}
	patch := client.MergeFrom(node.DeepCopy())
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	for key, v := range want {
		node.Labels[key] = v
	}
	if err := k.c.client.Patch(ctx, node, patch); err != nil {
		return fmt.Errorf("label node for pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
