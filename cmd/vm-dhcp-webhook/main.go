// Command vm-dhcp-webhook serves the admission webhooks of vm-dhcp:
// /mutate-ippool, /validate-ippool and /validate-vmnetcfg.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/webhook"
	"github.com/vm-dhcp/vm-dhcp/webhook/certs"
)

type config struct {
	namespace, serviceName, certDir, certMode, secretName, webhookConfigName string
	serviceCIDR, podCIDR, metricsAddr, probeAddr                             string
	port                                                                     int
}

func main() {
	var c config
	defNS := os.Getenv("POD_NAMESPACE")
	if defNS == "" {
		defNS = "vm-dhcp-system"
	}
	flag.StringVar(&c.namespace, "namespace", defNS, "namespace of the webhook's Service and Secret")
	flag.StringVar(&c.serviceName, "service-name", "vm-dhcp-webhook", "name of the webhook's Service")
	flag.IntVar(&c.port, "port", 9443, "port the webhook server listens on")
	flag.StringVar(&c.certDir, "cert-dir", filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs"),
		"folder of tls.crt and tls.key (written in self mode, read in cert-manager/external mode)")
	flag.StringVar(&c.certMode, "cert-mode", "self", "self: keep our own CA and certificate in --secret-name; cert-manager or external: serve the certificate mounted in --cert-dir")
	flag.StringVar(&c.secretName, "secret-name", "vm-dhcp-webhook-tls", "Secret holding the CA and serving certificate in self mode")
	flag.StringVar(&c.webhookConfigName, "webhook-config-name", "vm-dhcp-webhook", "name of the Validating and Mutating webhook configurations whose caBundle is kept current in self mode")
	flag.StringVar(&c.serviceCIDR, "service-cidr", "", "the cluster's service CIDR; pools may not overlap it (optional)")
	flag.StringVar(&c.podCIDR, "pod-cidr", "", "the cluster's pod CIDR; pools may not overlap it (optional)")
	flag.StringVar(&c.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint")
	flag.StringVar(&c.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse() // --kubeconfig is registered by controller-runtime's config package
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(ctrl.SetupSignalHandler(), c); err != nil {
		ctrl.Log.Error(err, "vm-dhcp-webhook failed")
		os.Exit(1)
	}
}

func parseOptionalPrefix(flagName, v string) (netip.Prefix, error) {
	if v == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(v)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("--%s %q is not an IPv4 network", flagName, v)
	}
	return p.Masked(), nil
}

func run(ctx context.Context, c config) error {
	log := ctrl.Log.WithName("vm-dhcp-webhook")
	var opts webhook.Options
	var err error
	if opts.ServiceCIDR, err = parseOptionalPrefix("service-cidr", c.serviceCIDR); err != nil {
		return err
	}
	if opts.PodCIDR, err = parseOptionalPrefix("pod-cidr", c.podCIDR); err != nil {
		return err
	}

	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	scheme := webhook.Scheme()

	serverOpts := ctrlwebhook.Options{Port: c.port, CertDir: c.certDir}
	var certManager *certs.Manager
	switch c.certMode {
	case "self":
		direct, err := client.New(restCfg, client.Options{Scheme: scheme})
		if err != nil {
			return fmt.Errorf("build client: %w", err)
		}
		certManager = certs.New(certs.Options{
			Client: direct, Namespace: c.namespace, ServiceName: c.serviceName, SecretName: c.secretName,
			WebhookConfigName: c.webhookConfigName, CertDir: c.certDir, Log: log.WithName("certs"),
		})
		// The certificate must be there before the server starts listening.
		if err := certManager.Ensure(ctx); err != nil {
			return fmt.Errorf("set up serving certificate: %w", err)
		}
		serverOpts.TLSOpts = []func(*tls.Config){func(t *tls.Config) { t.GetCertificate = certManager.GetCertificate }}
	case "cert-manager", "external":
	default:
		return fmt.Errorf("--cert-mode %q: want self, cert-manager or external", c.certMode)
	}

	srv := ctrlwebhook.NewServer(serverOpts)
	mgr, err := ctrl.NewManager(restCfg, manager.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: c.metricsAddr},
		HealthProbeBindAddress: c.probeAddr,
		WebhookServer:          srv,
	})
	if err != nil {
		return fmt.Errorf("build manager: %w", err)
	}
	webhook.Register(mgr.GetWebhookServer(), webhook.Handlers{
		Lookup:  webhook.ClientLookup{Reader: mgr.GetClient()},
		Options: opts,
		Decoder: admission.NewDecoder(scheme),
		Log:     log,
	})
	if certManager != nil {
		if err := mgr.Add(certManager); err != nil {
			return fmt.Errorf("add certificate keeper: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz: %w", err)
	}
	// Ready once the TLS listener answers and the cache holds our kinds, so
	// the first admission does not see an empty cluster.
	if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
		return fmt.Errorf("add readyz: %w", err)
	}
	// A list through the cache starts its informers and waits, within the
	// probe's deadline, until they have synced.
	if err := mgr.AddReadyzCheck("cache", func(req *http.Request) error {
		for _, l := range []client.ObjectList{&v1alpha1.IPPoolList{}, &v1alpha1.VirtualMachineNetworkConfigList{}} {
			if err := mgr.GetClient().List(req.Context(), l); err != nil {
				return fmt.Errorf("cache not ready: %w", err)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add readyz: %w", err)
	}
	log.Info("starting", "namespace", c.namespace, "service", c.serviceName, "port", c.port, "certMode", c.certMode)
	return mgr.Start(ctx)
}
