package poolwatch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vm-dhcp/vm-dhcp/plugins/linksource"
)

// Registry holds one Watch per pool for the whole process.
type Registry struct {
	mu      sync.Mutex
	watches map[string]*Watch
	configs map[string]string // pool key -> kubeconfig it was started with
	log     logr.Logger
	ctx     context.Context
	cancel  context.CancelFunc

	// Metrics are shared by every plugin instance of the process.
	Metrics *Metrics
	// Sources6 is where directly received DHCPv6 messages came from,
	// recorded by the agent's packet socket, read by ippool-lease.
	Sources6 *linksource.Table
	prom     *prometheus.Registry

	// restConfig builds the client config for a kubeconfig path ("" = in
	// cluster or $KUBECONFIG). Replaceable before the first Watch call.
	restConfig func(kubeconfig string) (*rest.Config, error)
}

// Default is the process's registry. It has to exist at process level:
// CoreDHCP gives a plugin's setup function nothing but its arguments, so
// `harvester-options` and `ippool-lease` can share one watch of the same
// pool only by finding it here. It is touched when plugins are set up and
// by watch goroutines; on the packet path plugins read only their Watch's
// atomic Pool pointer.
var Default = NewRegistry(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, nil)))

// NewRegistry returns an empty registry logging to log.
func NewRegistry(log logr.Logger) *Registry {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registry{
		ctx:        ctx,
		cancel:     cancel,
		watches:    map[string]*Watch{},
		configs:    map[string]string{},
		log:        log,
		Metrics:    newMetrics(),
		Sources6:   linksource.New(),
		prom:       prometheus.NewRegistry(),
		restConfig: RESTConfig,
	}
	r.prom.MustRegister(r.Metrics.collectors()...)
	r.prom.MustRegister(newPoolCollector(r))
	return r
}

// Stop ends every watch of the registry; the pools stay served from memory.
func (r *Registry) Stop() { r.cancel() }

// SetLogger replaces the registry's logger; call before plugins are set up.
func (r *Registry) SetLogger(log logr.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = log
}

// Logger is the registry's logger, for plugins to derive theirs from.
func (r *Registry) Logger() logr.Logger {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log
}

// Gatherer exposes the agent's metrics for /metrics.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.prom }

// Watch returns the watch of namespace/name, starting it on first use.
// kubeconfig is the path to use ("" = in-cluster config or $KUBECONFIG);
// the first caller's choice is kept and a different later one is reported.
func (r *Registry) Watch(namespace, name, kubeconfig string) (*Watch, error) {
	key := namespace + "/" + name
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.watches[key]; ok {
		if prev := r.configs[key]; kubeconfig != "" && prev != kubeconfig {
			r.log.Info("pool already watched with another kubeconfig; sharing that watch", "pool", key, "kubeconfig", prev, "ignored", kubeconfig)
		}
		return w, nil
	}
	cfg, err := r.restConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("watch pool %s: %w", key, err)
	}
	w := newWatch(namespace, name, r.log.WithValues("pool", key))
	if err := w.run(r.ctx, cfg); err != nil {
		return nil, err
	}
	r.watches[key] = w
	r.configs[key] = kubeconfig
	return w, nil
}

// Ready is true when at least one pool is watched and every watched pool is
// ready (synced from the API server or loaded from a snapshot).
func (r *Registry) Ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.watches) == 0 {
		return false
	}
	for _, w := range r.watches {
		if !w.Ready() {
			return false
		}
	}
	return true
}

// RESTConfig is the client config of the agent: the kubeconfig at path if
// given, else the in-cluster config, else the file named by $KUBECONFIG.
func RESTConfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	if cfg, err := rest.InClusterConfig(); err == nil {
		return cfg, nil
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", env)
		if err != nil {
			return nil, fmt.Errorf("load $KUBECONFIG %s: %w", env, err)
		}
		return cfg, nil
	}
	return nil, fmt.Errorf("no API server: not in a cluster, $KUBECONFIG unset and no kubeconfig= argument")
}

// poolCollector reports per-pool gauges at scrape time from the watches'
// atomics, so nothing has to update them.
type poolCollector struct {
	r                   *Registry
	leasesDesc, ageDesc *prometheus.Desc
}

func newPoolCollector(r *Registry) *poolCollector {
	return &poolCollector{r: r,
		leasesDesc: prometheus.NewDesc("vmdhcp_agent_leases", "Static leases being served.", []string{"ippool"}, nil),
		ageDesc: prometheus.NewDesc("vmdhcp_agent_snapshot_age_seconds",
			"Seconds since the snapshot file of the pool was last written (absent without snapshot=).", []string{"ippool"}, nil),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.leasesDesc; ch <- c.ageDesc }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.r.mu.Lock()
	watches := make([]*Watch, 0, len(c.r.watches))
	for _, w := range c.r.watches {
		watches = append(watches, w)
	}
	c.r.mu.Unlock()
	for _, w := range watches {
		n := 0
		if p := w.Current(); p != nil {
			n = len(p.Leases)
		}
		ch <- prometheus.MustNewConstMetric(c.leasesDesc, prometheus.GaugeValue, float64(n), w.Key())
		if at := w.snapshotSavedAt.Load(); at != 0 {
			age := time.Since(time.Unix(0, at)).Seconds()
			ch <- prometheus.MustNewConstMetric(c.ageDesc, prometheus.GaugeValue, age, w.Key())
		}
	}
}
