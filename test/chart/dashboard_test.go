package chart

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// exportedMetrics reads the metric names of the Metrics section of
// docs/interfaces.md, the names the binaries really export.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	doc := string(readFile(t, "docs/interfaces.md"))
	i := strings.Index(doc, "## Metrics")
	if i < 0 {
		t.Fatal("docs/interfaces.md has no Metrics section")
	}
	section := doc[i+len("## Metrics"):]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("`(vmdhcp[a-z_]*)[`{]").FindAllStringSubmatch(section, -1) {
		out[m[1]] = true
		if strings.HasSuffix(m[1], "_seconds") && strings.Contains(section, m[1]+"` (histogram)") {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				out[m[1]+suffix] = true
			}
		}
	}
	if len(out) < 5 {
		t.Fatalf("found only %v in the Metrics section of docs/interfaces.md", out)
	}
	return out
}

// TestDashboardUsesOnlyExportedMetrics: every query of the dashboard uses
// metric names the controller and agents export, and the dashboard shows
// pool usage, request rates, NAKs, unknown MACs and latency.
func TestDashboardUsesOnlyExportedMetrics(t *testing.T) {
	known := exportedMetrics(t)
	r := mustRender(t, nil)
	cm := typed[corev1.ConfigMap](t, r.get(t, "ConfigMap", "vm-dhcp-dashboard"))
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["vm-dhcp.json"]), &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	metricName := regexp.MustCompile(`\b(vmdhcp[a-z_]*)\b`)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			names := metricName.FindAllString(target.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q query %q uses none of our metrics", p.Title, target.Expr)
			}
			for _, n := range names {
				if !known[n] {
					t.Errorf("panel %q uses %s, which docs/interfaces.md does not list", p.Title, n)
				}
				used[n] = true
			}
		}
	}
	// And the binaries really register them: each base name is a string
	// literal in the non-test sources of the controller or the agent plugins.
	sources := exportedInSource(t)
	for n := range used {
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && known[b] {
				base = b
			}
		}
		if !sources[base] {
			t.Errorf("the dashboard uses %s, but no Go source of controller/ or plugins/ registers %q", n, base)
		}
	}
	for _, want := range []string{
		"vmdhcpcontroller_ippool_used", "vmdhcpcontroller_ippool_available", "vmdhcp_agent_requests_total",
		"vmdhcp_agent_naks_total", "vmdhcp_agent_unknown_mac_total", "vmdhcp_agent_handle_seconds_bucket",
	} {
		if !used[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
}

// exportedInSource collects the "vmdhcp..." string literals of the non-test
// Go files under controller/ and plugins/.
func exportedInSource(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	lit := regexp.MustCompile(`"(vmdhcp[a-z_]*)"`)
	for _, dir := range []string{"controller", "plugins"} {
		err := filepath.WalkDir(filepath.Join(repoRoot(), dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
				out[m[1]] = true
			}
			return nil
		})
		if err != nil {
			t.Fatalf("scan %s: %v", dir, err)
		}
	}
	return out
}

// harvesterControllerLabels are the label names of the controller's series in
// Harvester's vm-dhcp-controller (pkg/metrics/metrics.go): dashboards and
// alerts written for it must keep working unchanged.
var harvesterControllerLabels = map[string][]string{
	"vmdhcpcontroller_ippool_used":      {"ippool", "cidr", "network"},
	"vmdhcpcontroller_ippool_available": {"ippool", "cidr", "network"},
	"vmdhcpcontroller_vmnetcfg_status":  {"vmnetcfg", "network", "mac", "ip", "state"},
}

// documentedControllerLabels reads "`name`, `name` (labels `a`, `b`)" runs
// of the Metrics section of docs/interfaces.md.
func documentedControllerLabels(t *testing.T) map[string][]string {
	t.Helper()
	doc := string(readFile(t, "docs/interfaces.md"))
	i := strings.Index(doc, "## Metrics")
	section := doc[i:]
	if j := strings.Index(section[3:], "\n## "); j >= 0 {
		section = section[:j+3]
	}
	section = strings.Join(strings.Fields(section), " ")
	out := map[string][]string{}
	var pending []string
	tok := regexp.MustCompile("`(vmdhcpcontroller_[a-z_]+)`|\\(labels ([^)]*)\\)")
	for _, m := range tok.FindAllStringSubmatch(section, -1) {
		if m[1] != "" {
			pending = append(pending, m[1])
			continue
		}
		var labels []string
		for _, l := range strings.Split(m[2], ",") {
			labels = append(labels, strings.Trim(strings.TrimSpace(l), "`"))
		}
		for _, n := range pending {
			out[n] = labels
		}
		pending = nil
	}
	return out
}

// TestControllerMetricLabelsAreHarvesters: docs/interfaces.md lists exactly
// Harvester's label names for the controller's series, and every label the
// dashboard groups by or shows in a legend is one of them (or a label
// Prometheus adds to every scraped series).
func TestControllerMetricLabelsAreHarvesters(t *testing.T) {
	documented := documentedControllerLabels(t)
	for name, want := range harvesterControllerLabels {
		if got := documented[name]; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("docs/interfaces.md gives %s the labels %v, Harvester's are %v", name, got, want)
		}
	}
	r := mustRender(t, nil)
	cm := typed[corev1.ConfigMap](t, r.get(t, "ConfigMap", "vm-dhcp-dashboard"))
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["vm-dhcp.json"]), &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	scrape := map[string]bool{"pod": true, "namespace": true, "instance": true, "job": true, "container": true, "le": true}
	by := regexp.MustCompile(`\bby \(([^)]*)\)`)
	legend := regexp.MustCompile(`\{\{\s*([a-z_]+)\s*\}\}`)
	checked := 0
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			var metric string
			for name := range harvesterControllerLabels {
				if strings.Contains(target.Expr, name) {
					metric = name
				}
			}
			if metric == "" {
				continue
			}
			var used []string
			for _, m := range by.FindAllStringSubmatch(target.Expr, -1) {
				for _, l := range strings.Split(m[1], ",") {
					used = append(used, strings.TrimSpace(l))
				}
			}
			for _, m := range legend.FindAllStringSubmatch(target.LegendFormat, -1) {
				used = append(used, m[1])
			}
			for _, l := range used {
				checked++
				if !scrape[l] && !slices.Contains(harvesterControllerLabels[metric], l) {
					t.Errorf("panel %q uses label %q of %s, which has only %v", p.Title, l, metric, harvesterControllerLabels[metric])
				}
			}
		}
	}
	if checked == 0 {
		t.Error("no dashboard query groups or labels a controller series: nothing was checked")
	}
}
