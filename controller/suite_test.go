package controller

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

const agentNS = "vm-dhcp-system"

// The control plane is shared by the tests of this package (starting one
// takes seconds); every test works in namespaces of its own.
var (
	restCfg *rest.Config
	k8s     client.Client
	nsSeq   atomic.Int64
)

func TestMain(m *testing.M) {
	if testenv.NoTestSelected() { // hack/test.sh's compile step
		os.Exit(m.Run())
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	env, err := testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		os.Exit(1)
	}
	restCfg, err = env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		os.Exit(1)
	}
	restCfg.QPS, restCfg.Burst = 500, 1000 // as the binary's defaults
	k8s, err = client.New(restCfg, client.Options{Scheme: testenv.Scheme()})
	if err == nil {
		err = k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: agentNS}})
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "set up:", err)
	} else {
		code = m.Run()
	}
	_ = env.Stop()
	os.Exit(code)
}

func zapLevel() zapcore.Level {
	if os.Getenv("TEST_CONTROLLER_LOGS") != "" {
		return -1
	}
	return 2 // errors only
}

// running is one controller process: a manager with our reconcilers.
type running struct {
	store   *PoolStore
	metrics *Metrics
	stop    func()
}

type managerOpts struct {
	nodeGrace time.Duration
	image     string
	values    AgentValues
	workers   int
	sweep     time.Duration
	// now, when set, is the pool store's clock (quarantine tests).
	now func() time.Time
	// owner, when set, owns the agents (--agent-owner).
	owner *metav1.OwnerReference
}

// startController starts a manager against the shared apiserver; stop()
// waits until it has stopped, like a killed controller pod.
func startController(t testing.TB, o managerOpts) *running {
	t.Helper()
	if o.image == "" {
		o.image = "vm-dhcp-agent:test"
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Cache:                  CacheOptions(agentNS),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("new manager: %v", err)
	}
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	store, err := Setup(mgr, Options{
		Agent:               AgentOptions{Namespace: agentNS, Image: o.image, ServiceAccount: "vm-dhcp-agent", Values: o.values, Owner: o.owner},
		Metrics:             m,
		NodeGracePeriod:     o.nodeGrace,
		VMNetCfgWorkers:     o.workers,
		OrphanSweepInterval: o.sweep,
		SkipNameValidation:  true,
	})
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	if o.now != nil {
		store.now = o.now
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	r := &running{store: store, metrics: m}
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(r.stop)
	runningMu.Lock()
	runningControllers = append(runningControllers, r)
	runningMu.Unlock()
	return r
}

var (
	runningMu          sync.Mutex
	runningControllers []*running
)

// stopAllControllers stops every controller started so far.
func stopAllControllers(t testing.TB) {
	t.Helper()
	runningMu.Lock()
	rs := runningControllers
	runningControllers = nil
	runningMu.Unlock()
	for _, r := range rs {
		r.stop()
	}
}

// newNamespace creates a namespace for one test.
func newNamespace(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%100000, nsSeq.Add(1))
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

func createNAD(t testing.TB, ns, name string, labels map[string]string) {
	t.Helper()
	nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"0.3.1","type":"bridge","bridge":"br0"}`}}
	if err := k8s.Create(context.Background(), nad); err != nil {
		t.Fatal(err)
	}
}

// poolSpec is a /24 pool: range .10-.250 minus server .2 (outside the
// range), router .1 (outside) and the given excludes.
func newPool(ns, name, network, start, end string, exclude ...v1alpha1.IPv4Address) *v1alpha1.IPPool {
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.IPPoolSpec{NetworkName: network, IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "192.168.100.2", CIDR: "192.168.100.0/24", Router: "192.168.100.1",
			Pool: v1alpha1.Pool{Start: v1alpha1.IPv4Address(start), End: v1alpha1.IPv4Address(end), Exclude: exclude},
		}},
	}
}

func create(t testing.TB, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after %s: %v", what, timeout, err)
}

func getPool(t testing.TB, key types.NamespacedName) *v1alpha1.IPPool {
	t.Helper()
	p := &v1alpha1.IPPool{}
	if err := k8s.Get(context.Background(), key, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func condition(conds []v1alpha1.Condition, ct v1alpha1.ConditionType) string {
	c := v1alpha1.FindCondition(conds, ct)
	if c == nil {
		return "<none>"
	}
	return string(c.Status) + "/" + c.Reason
}

// waitCondition waits until the pool's condition has the given status.
func waitPoolCondition(t testing.TB, key types.NamespacedName, ct v1alpha1.ConditionType, status corev1.ConditionStatus) *v1alpha1.IPPool {
	t.Helper()
	var p *v1alpha1.IPPool
	eventually(t, 20*time.Second, fmt.Sprintf("pool %s condition %s=%s", key, ct, status), func() error {
		p = &v1alpha1.IPPool{}
		if err := k8s.Get(context.Background(), key, p); err != nil {
			return err
		}
		if c := v1alpha1.FindCondition(p.Status.Conditions, ct); c == nil || c.Status != status {
			return fmt.Errorf("is %s", condition(p.Status.Conditions, ct))
		}
		return nil
	})
	return p
}

// hasEvent reports whether an event with reason (and a note containing
// note) was recorded about the object named name in namespace ns.
func hasEvent(ns, name, reason, note string) error {
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason && strings.Contains(e.Note, note) {
			return nil
		}
	}
	return fmt.Errorf("no event %s about %s/%s among %d", reason, ns, name, len(list.Items))
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

func gaugeValue(g *prometheus.GaugeVec, labels ...string) float64 {
	m, err := g.GetMetricWithLabelValues(labels...)
	if err != nil {
		return -1
	}
	return testutil.ToFloat64(m)
}

func isConflict(err error) bool { return apierrors.IsConflict(err) }

func restClientFor() (rest.Interface, error) {
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, err
	}
	return cs.CoreV1().RESTClient(), nil
}
