// Command vm-dhcp-agent is CoreDHCP with its core plugins (all but `range`,
// which needs cgo) and the vm-dhcp plugins `ippool-lease` and
// `harvester-options`, plus a health/metrics endpoint and an optional
// interface address set by netlink. Flags: docs/interfaces.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	prefixed "github.com/chappjc/logrus-prefix"
	"github.com/coredhcp/coredhcp/config"
	"github.com/coredhcp/coredhcp/logger"
	"github.com/coredhcp/coredhcp/plugins"
	pl_autoconfigure "github.com/coredhcp/coredhcp/plugins/autoconfigure"
	pl_dns "github.com/coredhcp/coredhcp/plugins/dns"
	pl_file "github.com/coredhcp/coredhcp/plugins/file"
	pl_ipv6only "github.com/coredhcp/coredhcp/plugins/ipv6only"
	pl_leasetime "github.com/coredhcp/coredhcp/plugins/leasetime"
	pl_mtu "github.com/coredhcp/coredhcp/plugins/mtu"
	pl_nbp "github.com/coredhcp/coredhcp/plugins/nbp"
	pl_netmask "github.com/coredhcp/coredhcp/plugins/netmask"
	pl_prefix "github.com/coredhcp/coredhcp/plugins/prefix"
	pl_router "github.com/coredhcp/coredhcp/plugins/router"
	pl_searchdomains "github.com/coredhcp/coredhcp/plugins/searchdomains"
	pl_serverid "github.com/coredhcp/coredhcp/plugins/serverid"
	pl_sleep "github.com/coredhcp/coredhcp/plugins/sleep"
	pl_staticroute "github.com/coredhcp/coredhcp/plugins/staticroute"
	"github.com/coredhcp/coredhcp/server"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	flag "github.com/spf13/pflag"

	"github.com/vm-dhcp/vm-dhcp/plugins/declinewatch"
	"github.com/vm-dhcp/vm-dhcp/plugins/harvesteroptions"
	"github.com/vm-dhcp/vm-dhcp/plugins/ippoollease"
	"github.com/vm-dhcp/vm-dhcp/plugins/poolwatch"
	"github.com/vm-dhcp/vm-dhcp/plugins/routeradv"
)

// desiredPlugins are CoreDHCP's core plugins that build without cgo, and ours.
var desiredPlugins = []*plugins.Plugin{
	&pl_autoconfigure.Plugin,
	&pl_dns.Plugin,
	&pl_file.Plugin,
	&pl_ipv6only.Plugin,
	&pl_leasetime.Plugin,
	&pl_mtu.Plugin,
	&pl_nbp.Plugin,
	&pl_netmask.Plugin,
	&pl_prefix.Plugin,
	&pl_router.Plugin,
	&pl_searchdomains.Plugin,
	&pl_serverid.Plugin,
	&pl_sleep.Plugin,
	&pl_staticroute.Plugin,
	&harvesteroptions.Plugin,
	&ippoollease.Plugin,
	&routeradv.Plugin,
}

var logLevels = map[string]logrus.Level{
	"debug": logrus.DebugLevel, "info": logrus.InfoLevel, "warning": logrus.WarnLevel,
	"error": logrus.ErrorLevel, "fatal": logrus.FatalLevel, "none": logrus.PanicLevel,
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vm-dhcp-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		confPath = flag.StringP("conf", "c", "", "CoreDHCP configuration file (default: CoreDHCP's search path)")
		// Short flags as upstream CoreDHCP's cmds/coredhcp has them.
		logFile    = flag.StringP("logfile", "l", "", "also append logs to this file")
		logLevel   = flag.StringP("loglevel", "L", "info", "log level: debug, info, warning, error, fatal or none")
		noStdout   = flag.BoolP("nostdout", "N", false, "disable logging to stdout/stderr")
		noColors   = flag.Bool("nocolors", false, "plain log output without colours")
		listPlugin = flag.BoolP("plugins", "P", false, "list the plugins and exit")
		healthAddr = flag.String("health-addr", ":8080", "address of /healthz, /readyz and /metrics (empty: off)")
		withPprof  = flag.Bool("pprof", false, "also serve Go's /debug/pprof/ on --health-addr (for profiling; off by default)")
		ifaceAddrs = flag.StringArray("interface-address", nil, "IFACE=IP/PREFIX to set on an interface before serving (repeatable, idempotent)")
	)
	flag.Parse()

	if *listPlugin {
		for _, p := range desiredPlugins {
			fmt.Println(p.Name)
		}
		return nil
	}

	level, ok := logLevels[*logLevel]
	if !ok {
		return fmt.Errorf("unknown log level %q (debug, info, warning, error, fatal, none)", *logLevel)
	}
	log := logger.GetLogger("main")
	log.Logger.SetLevel(level)
	log.Logger.SetFormatter(&prefixed.TextFormatter{FullTimestamp: true, DisableColors: *noColors})
	if *logLevel == "none" {
		log.Logger.SetOutput(io.Discard)
	}
	if *logFile != "" {
		logger.WithFile(log, *logFile)
	}
	if *noStdout {
		logger.WithNoStdOutErr(log)
	}
	poolwatch.Default.SetLogger(newLogr(*logLevel))

	for _, spec := range *ifaceAddrs {
		if err := setInterfaceAddress(spec); err != nil {
			return err
		}
		log.Infof("interface address %s set", spec)
	}

	conf, err := config.Load(*confPath)
	if err != nil {
		return fmt.Errorf("load configuration: %w", err)
	}
	for _, p := range desiredPlugins {
		if err := plugins.RegisterPlugin(p); err != nil {
			return fmt.Errorf("register plugin %s: %w", p.Name, err)
		}
	}

	if *healthAddr != "" {
		srv := &http.Server{Addr: *healthAddr, Handler: healthMux(*withPprof), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Errorf("health server on %s: %v", *healthAddr, err)
			}
		}()
	}

	// The watchers start first: from its start ippool-lease waits for the
	// packet socket's record of a DUID-EN client's source, and a message the
	// server took before the socket existed would find none.
	if conf.Server4 != nil {
		dw := &declinewatch.Watcher{Metrics: poolwatch.Default.Metrics, Log: poolwatch.Default.Logger().WithName("decline")}
		dw.Start(context.Background(), declinewatch.InterfacesOf(conf.Server4.Addresses))
	}
	if conf.Server6 != nil {
		// Also records where direct messages come from: ippool-lease
		// matches clients whose DUID carries no MAC by their frame's source.
		dw6 := &declinewatch.Watcher6{Metrics: poolwatch.Default.Metrics, Log: poolwatch.Default.Logger().WithName("decline6"),
			Sources: poolwatch.Default.Sources6}
		for _, p := range conf.Server6.Plugins {
			if id := declinewatch.ServerIDOf(p.Name, p.Args); id != nil {
				dw6.ServerID = id
			}
		}
		dw6.Start(context.Background(), declinewatch.InterfacesOf(conf.Server6.Addresses))
	}
	srv, err := server.Start(conf)
	if err != nil {
		return fmt.Errorf("start DHCP server: %w", err)
	}
	return srv.Wait()
}

// newLogr is the structured logger of our plugins, at the level asked for.
func newLogr(level string) logr.Logger {
	var w io.Writer = os.Stderr
	l := slog.LevelInfo
	switch level {
	case "debug":
		l = slog.Level(-1) // logr V(1)
	case "warning", "error", "fatal":
		l = slog.LevelError
	case "none":
		w = io.Discard
	}
	return logr.FromSlogHandler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func healthMux(withPprof bool) *http.ServeMux {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !poolwatch.Default.Ready() {
			http.Error(w, "pool not synced and no snapshot loaded", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{poolwatch.Default.Gatherer(), reg}, promhttp.HandlerOpts{}))
	if withPprof {
		// Registered on our mux only: importing net/http/pprof for its
		// side effect would also expose it on http.DefaultServeMux.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
