package chart

import (
	"context"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

// TestHarvesterAddonExample: examples/harvester-addon.yaml is an Addon that
// Harvester's own CRD (vendored in test/crds/harvester) admits, with strict
// field validation, through a real kube-apiserver; it names this chart and
// its version, and its valuesContent passes the chart's values schema.
func TestHarvesterAddonExample(t *testing.T) {
	var addon unstructured.Unstructured
	if err := yaml.Unmarshal(readFile(t, "examples/harvester-addon.yaml"), &addon.Object); err != nil {
		t.Fatalf("parse examples/harvester-addon.yaml: %v", err)
	}
	if addon.GetAPIVersion() != "harvesterhci.io/v1beta1" || addon.GetKind() != "Addon" {
		t.Fatalf("example is %s %s, want harvesterhci.io/v1beta1 Addon", addon.GetAPIVersion(), addon.GetKind())
	}

	env := &envtest.Environment{
		BinaryAssetsDirectory: assetsDir(t),
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot(), "test", "crds", "harvester", "harvesterhci.io_addons.yaml")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	ns := addon.GetNamespace()
	if ns == "" {
		t.Fatal("the example has no namespace (Harvester's add-ons live in harvester-system)")
	}
	nsObj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
	dyn := dynamic.NewForConfigOrDie(cfg)
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, nsObj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	addons := dyn.Resource(schema.GroupVersionResource{Group: "harvesterhci.io", Version: "v1beta1", Resource: "addons"}).Namespace(ns)
	if _, err := addons.Create(ctx, &addon, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatalf("Harvester's Addon CRD refuses the example: %v", err)
	}

	dir, _ := chartCopy(t)
	c := loadChart(t, dir)
	spec := map[string]string{}
	for _, f := range []string{"chart", "version", "valuesContent"} {
		spec[f], _, _ = unstructured.NestedString(addon.Object, "spec", f)
	}
	if spec["chart"] != c.Metadata.Name || spec["version"] != c.Metadata.Version {
		t.Errorf("the Addon installs chart %q version %q, the chart is %q version %q", spec["chart"], spec["version"], c.Metadata.Name, c.Metadata.Version)
	}
	values := map[string]any{}
	if err := yaml.Unmarshal([]byte(spec["valuesContent"]), &values); err != nil {
		t.Fatalf("valuesContent is not YAML: %v", err)
	}
	if _, err := render(t, c, values); err != nil {
		t.Fatalf("the chart refuses the Addon's valuesContent: %v", err)
	}
}
