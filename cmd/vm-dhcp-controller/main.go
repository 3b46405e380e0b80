// Command vm-dhcp-controller allocates addresses for KubeVirt VMs from
// IPPools and runs one DHCP agent per pool (docs/interfaces.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vm-dhcp/vm-dhcp/controller"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vm-dhcp-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	defaultNS := os.Getenv("POD_NAMESPACE")
	if defaultNS == "" {
		defaultNS = "vm-dhcp-system"
	}
	var (
		namespace      = flag.String("namespace", defaultNS, "namespace of the agents (and of the leader election lease)")
		agentImage     = flag.String("agent-image", "", "image of the agent pods (required)")
		agentSA        = flag.String("agent-service-account", "vm-dhcp-agent", "service account of the agent pods")
		agentValues    = flag.String("agent-values", "", "JSON/YAML file with resources, tolerations, priorityClassName, imagePullPolicy for the agent pods")
		leaderElect    = flag.Bool("leader-elect", true, "elect a leader among replicas")
		leaderNS       = flag.String("leader-election-namespace", "", "namespace of the leader election lease (default --namespace)")
		agentOwner     = flag.String("agent-owner", "", "ConfigMap in --namespace that owns every agent pod and agent ConfigMap, so that deleting it (helm uninstall) deletes the agents even while IPPools are left; \"\" leaves them unowned")
		leaseOwner     = flag.String("leader-election-owner", "", "ConfigMap in the lease's namespace that owns the leader election lease, so that deleting it (helm uninstall) deletes the lease; \"\" leaves the lease unowned")
		metricsAddr    = flag.String("metrics-bind-address", ":8080", "address of /metrics and the debug endpoints /ipams/<ns>/<name>, /caches/<ns>/<name>; 0 disables")
		probeAddr      = flag.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
		qps            = flag.Float64("kube-api-qps", 500, "client-side limit of requests per second to the apiserver (each allocation costs about two writes; the apiserver's priority and fairness still protects it)")
		burst          = flag.Int("kube-api-burst", 1000, "client-side burst of requests to the apiserver")
		nodeGrace      = flag.Duration("node-grace-period", 0, "how long an agent's node may be NotReady before the agent is recreated (default 2m)")
		vmnetcfgWorker = flag.Int("vmnetcfg-workers", 64, "VirtualMachineNetworkConfigs reconciled at once")
	)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if *agentImage == "" {
		return fmt.Errorf("--agent-image is required")
	}
	values, err := controller.LoadAgentValues(*agentValues)
	if err != nil {
		return err
	}
	// --kubeconfig is registered by controller-runtime (falls back to $KUBECONFIG, then in-cluster).
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	if *leaderNS == "" {
		*leaderNS = *namespace
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  controller.Scheme(),
		Cache:                   controller.CacheOptions(*namespace),
		Metrics:                 metricsserver.Options{BindAddress: *metricsAddr},
		HealthProbeBindAddress:  *probeAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        leaseName,
		LeaderElectionNamespace: *leaderNS,
		// Step down fast on shutdown so a new replica takes over at once.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	m, err := controller.NewMetrics(metrics.Registry)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	agentOpts := controller.AgentOptions{Namespace: *namespace, Image: *agentImage, ServiceAccount: *agentSA, Values: values}
	if *agentOwner != "" {
		// Read once at start: the chart's ConfigMap exists before the
		// controller's pods (Helm creates ConfigMaps before Deployments).
		cm := &corev1.ConfigMap{}
		if err := mgr.GetAPIReader().Get(context.Background(), types.NamespacedName{Namespace: *namespace, Name: *agentOwner}, cm); err != nil {
			return fmt.Errorf("read agent owner ConfigMap %s/%s: %w", *namespace, *agentOwner, err)
		}
		agentOpts.Owner = &metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: cm.Name, UID: cm.UID}
	}
	if _, err := controller.Setup(mgr, controller.Options{
		Agent:           agentOpts,
		Metrics:         m,
		NodeGracePeriod: *nodeGrace,
		VMNetCfgWorkers: *vmnetcfgWorker,
	}); err != nil {
		return err
	}
	if *leaderElect && *leaseOwner != "" {
		// A leader-only runnable: it runs once this replica holds the lease.
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			return ownLease(ctx, mgr.GetAPIReader(), mgr.GetClient(), *leaderNS, *leaseOwner)
		})); err != nil {
			return fmt.Errorf("add lease owner: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", func(r *http.Request) error {
		// Ready once the informers have synced: before that, reconciles
		// would work from an empty view of the cluster.
		if !mgr.GetCache().WaitForCacheSync(r.Context()) {
			return fmt.Errorf("caches not synced")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add readyz: %w", err)
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

const leaseName = "vm-dhcp-controller.network.harvesterhci.io"

// ownLease makes the ConfigMap owner of the leader election Lease. Helm
// deletes the ConfigMap on uninstall and the garbage collector the Lease with
// it: the controller itself cannot, since by the time it shuts down Helm has
// already deleted its RoleBinding. The Lease outlives rolling updates (the
// ConfigMap stays). Retried until done or ctx ends.
func ownLease(ctx context.Context, reader client.Reader, w client.Client, namespace, owner string) error {
	log := ctrl.Log.WithName("lease-owner")
	for {
		err := setLeaseOwner(ctx, reader, w, namespace, owner)
		if err == nil {
			return nil
		}
		log.Error(err, "set the leader lease's owner; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Second):
		}
	}
}

func setLeaseOwner(ctx context.Context, reader client.Reader, w client.Client, namespace, owner string) error {
	var cm corev1.ConfigMap
	if err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: owner}, &cm); err != nil {
		return fmt.Errorf("get ConfigMap %s/%s: %w", namespace, owner, err)
	}
	var lease coordinationv1.Lease
	if err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: leaseName}, &lease); err != nil {
		return fmt.Errorf("get Lease %s/%s: %w", namespace, leaseName, err)
	}
	for _, r := range lease.OwnerReferences {
		if r.UID == cm.UID {
			return nil
		}
	}
	before := lease.DeepCopy()
	lease.OwnerReferences = append(lease.OwnerReferences, metav1.OwnerReference{
		APIVersion: "v1", Kind: "ConfigMap", Name: cm.Name, UID: cm.UID})
	if err := w.Patch(ctx, &lease, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("set owner of Lease %s/%s: %w", namespace, leaseName, err)
	}
	return nil
}
