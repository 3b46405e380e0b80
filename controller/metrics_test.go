package controller

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricLabelsAreHarvesters: the series the controller exports carry
// exactly the names and label names of Harvester's vm-dhcp-controller
// (pkg/metrics/metrics.go), so its dashboards and alerts work unchanged.
func TestMetricLabelsAreHarvesters(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.PoolUsed.WithLabelValues("default/p", "10.0.0.0/24", "default/net").Set(1)
	m.PoolAvailable.WithLabelValues("default/p", "10.0.0.0/24", "default/net").Set(1)
	m.VMNetCfg.WithLabelValues("default/vm", "default/net", "02:00:00:00:00:01", "10.0.0.10", "Allocated").Set(1)
	want := map[string][]string{
		"vmdhcpcontroller_ippool_used":      {"cidr", "ippool", "network"},
		"vmdhcpcontroller_ippool_available": {"cidr", "ippool", "network"},
		"vmdhcpcontroller_vmnetcfg_status":  {"ip", "mac", "network", "state", "vmnetcfg"},
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range families {
		w, ok := want[f.GetName()]
		if !ok {
			t.Errorf("unexpected series %s", f.GetName())
			continue
		}
		seen[f.GetName()] = true
		for _, s := range f.GetMetric() {
			var got []string
			for _, l := range s.GetLabel() {
				got = append(got, l.GetName())
			}
			slices.Sort(got)
			if !slices.Equal(got, w) {
				t.Errorf("%s has labels %v, Harvester's has %v", f.GetName(), got, w)
			}
		}
	}
	for n := range want {
		if !seen[n] {
			t.Errorf("series %s is not exported", n)
		}
	}
}
