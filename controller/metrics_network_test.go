package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// poolSeries lists the network label of every series of g for one pool.
func poolSeries(g *prometheus.GaugeVec, pool string) []string {
	ch := make(chan prometheus.Metric, 64)
	g.Collect(ch)
	close(ch)
	var networks []string
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range d.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["ippool"] == pool {
			networks = append(networks, labels["network"])
		}
	}
	return networks
}

// TestPoolMetricsOfBareNetworkName: a pool whose spec.networkName has no
// namespace (as Harvester's manifests may write it) is exported with the
// network as namespace/name, in one series, which goes with the pool.
// Before the fix the status write exported a second series labelled with
// the bare name, and deleting the pool left it behind.
func TestPoolMetricsOfBareNetworkName(t *testing.T) {
	ctx := context.Background()
	ctl := startController(t, managerOpts{})
	ns := newNamespace(t)
	nadName := "bare-" + ns
	createNAD(t, v1alpha1.DefaultNetworkNamespace, nadName, map[string]string{LabelClusterNetwork: "mgmt"})
	pool := newPool(ns, "pool", nadName, "192.168.100.10", "192.168.100.30")
	create(t, pool)
	key := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, key, v1alpha1.CacheReady, corev1.ConditionTrue)

	want := v1alpha1.DefaultNetworkNamespace + "/" + nadName
	for _, g := range []*prometheus.GaugeVec{ctl.metrics.PoolUsed, ctl.metrics.PoolAvailable} {
		eventually(t, 10*time.Second, "one series per pool, network "+want, func() error {
			if got := poolSeries(g, key.String()); len(got) != 1 || got[0] != want {
				return fmt.Errorf("network labels %v", got)
			}
			return nil
		})
	}
	// A status write (a pause changes the conditions) keeps it one series.
	setPaused(t, key, true)
	waitPoolCondition(t, key, v1alpha1.Stopped, corev1.ConditionTrue)
	if got := poolSeries(ctl.metrics.PoolAvailable, key.String()); len(got) != 1 || got[0] != want {
		t.Errorf("after a status write: network labels %v, want [%s]", got, want)
	}

	if err := k8s.Delete(ctx, pool); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "pool gone with its series", func() error {
		if err := k8s.Get(ctx, key, &v1alpha1.IPPool{}); !isNotFound(err) {
			return fmt.Errorf("pool still there: %v", err)
		}
		if got := poolSeries(ctl.metrics.PoolAvailable, key.String()); len(got) > 0 {
			return fmt.Errorf("series left: %s", strings.Join(got, ", "))
		}
		return nil
	})
}
