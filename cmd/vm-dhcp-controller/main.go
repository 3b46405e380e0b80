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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
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
	if _, err := controller.Setup(mgr, controller.Options{
		Agent:           controller.AgentOptions{Namespace: *namespace, Image: *agentImage, ServiceAccount: *agentSA, Values: values},
		Metrics:         m,
		NodeGracePeriod: *nodeGrace,
		VMNetCfgWorkers: *vmnetcfgWorker,
	}); err != nil {
		return err
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
	err = mgr.Start(ctrl.SetupSignalHandler())
	if *leaderElect {
		// Start returns after the lease was released (ReleaseOnCancel).
		if derr := deleteReleasedLease(cfg, *leaderNS); derr != nil {
			fmt.Fprintln(os.Stderr, "vm-dhcp-controller: leave the leader lease:", derr)
		}
	}
	return err
}

const leaseName = "vm-dhcp-controller.network.harvesterhci.io"

// deleteReleasedLease deletes the leader Lease if no one holds it, so that
// `helm uninstall` leaves nothing behind. The delete is conditional on the
// resourceVersion read: if another replica acquires the lease in between
// (a rolling update), its write changes the version and the delete fails
// harmlessly instead of taking the lease from under the new leader.
func deleteReleasedLease(cfg *rest.Config, namespace string) error {
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var lease coordinationv1.Lease
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: leaseName}, &lease); err != nil {
		return client.IgnoreNotFound(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		return nil // held: another replica leads (or we did not release)
	}
	uid, rv := lease.UID, lease.ResourceVersion
	err = c.Delete(ctx, &lease, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete Lease %s/%s: %w", namespace, leaseName, err)
	}
	return nil
}
