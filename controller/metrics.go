package controller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's Prometheus series (names and labels as
// Harvester's vm-dhcp-controller, docs/interfaces.md).
type Metrics struct {
	PoolUsed      *prometheus.GaugeVec
	PoolAvailable *prometheus.GaugeVec
	VMNetCfg      *prometheus.GaugeVec
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		PoolUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vmdhcpcontroller_ippool_used", Help: "Addresses of the pool allocated to MACs.",
		}, []string{"ippool", "cidr", "network"}),
		PoolAvailable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vmdhcpcontroller_ippool_available", Help: "Addresses of the pool still free.",
		}, []string{"ippool", "cidr", "network"}),
		VMNetCfg: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vmdhcpcontroller_vmnetcfg_status", Help: "One series per NIC of a VirtualMachineNetworkConfig, with its state.",
		}, []string{"vmnetcfg", "network", "mac", "ip", "status"}),
	}
	for _, c := range []prometheus.Collector{m.PoolUsed, m.PoolAvailable, m.VMNetCfg} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
