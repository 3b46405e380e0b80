package controller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's Prometheus series. Names and label names are
// exactly Harvester's vm-dhcp-controller's (pkg/metrics), so that dashboards
// and alerts written for it keep working (docs/interfaces.md).
type Metrics struct {
	PoolUsed      *prometheus.GaugeVec
	PoolAvailable *prometheus.GaugeVec
	VMNetCfg      *prometheus.GaugeVec
}

// Label names of the series, in Harvester's order.
var (
	PoolLabels     = []string{"ippool", "cidr", "network"}
	VMNetCfgLabels = []string{"vmnetcfg", "network", "mac", "ip", "state"}
)

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		PoolUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vmdhcpcontroller_ippool_used", Help: "Addresses of the pool allocated to MACs.",
		}, PoolLabels),
		PoolAvailable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vmdhcpcontroller_ippool_available", Help: "Addresses of the pool still free.",
		}, PoolLabels),
		VMNetCfg: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vmdhcpcontroller_vmnetcfg_status", Help: "One series per NIC of a VirtualMachineNetworkConfig, with its state.",
		}, VMNetCfgLabels),
	}
	for _, c := range []prometheus.Collector{m.PoolUsed, m.PoolAvailable, m.VMNetCfg} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
