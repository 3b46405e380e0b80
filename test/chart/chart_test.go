package chart

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const (
	releaseName      = "vm-dhcp"
	releaseNamespace = "vm-dhcp-system"
)

// repoRoot is the root of the repository, two folders above this file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func chartDir() string { return filepath.Join(repoRoot(), "charts", "vm-dhcp-controller") }

// placeholderRoles stand in for generated/<component>/role.yaml while the
// binaries' kubebuilder markers have not been generated yet. They are written
// only into a temporary copy of the chart, never into the repository, and
// are shaped like controller-gen's output (ClusterRole + namespaced Role).
var placeholderRoles = map[string]string{
	"controller": `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: vm-dhcp-controller
rules:
- apiGroups: [network.harvesterhci.io]
  resources: [ippools, virtualmachinenetworkconfigs]
  verbs: [get, list, watch, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: vm-dhcp-controller
  namespace: vm-dhcp-system
rules:
- apiGroups: [""]
  resources: [configmaps, pods]
  verbs: [create, delete, get, list, patch, update, watch]
`,
	"webhook": `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: vm-dhcp-webhook
rules:
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations, validatingwebhookconfigurations]
  verbs: [get, list, watch, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: vm-dhcp-webhook
  namespace: vm-dhcp-system
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, get, list, watch, update]
`,
}

// chartCopy copies the chart into a temporary folder and fills in the
// generated roles the repository does not have yet. It reports which
// components use placeholders, so tests can say what they checked.
func chartCopy(t testing.TB) (dir string, placeholders []string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "vm-dhcp-controller")
	src := chartDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy chart: %v", err)
	}
	for _, c := range []string{"controller", "webhook"} {
		p := filepath.Join(dir, "generated", c, "role.yaml")
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(placeholderRoles[c]), 0o644); err != nil {
			t.Fatal(err)
		}
		placeholders = append(placeholders, c)
	}
	if len(placeholders) > 0 {
		t.Logf("generated RBAC missing in the repository for %v: using placeholder roles in a temporary copy", placeholders)
	}
	return dir, placeholders
}

func loadChart(t testing.TB, dir string) *chart.Chart {
	t.Helper()
	c, err := loader.Load(dir)
	if err != nil {
		t.Fatalf("load chart %s: %v", dir, err)
	}
	return c
}

// render runs a client-only `helm install --dry-run` (schema validation,
// templates, NOTES) and returns the release.
func render(t testing.TB, c *chart.Chart, values map[string]any) (*rendered, error) {
	t.Helper()
	inst := action.NewInstall(&action.Configuration{})
	inst.DryRun = true
	inst.ClientOnly = true
	// A client-only install checks Chart.yaml's kubeVersion against this
	// (Helm's own default is older than the chart supports): the oldest
	// release the chart is tested on.
	inst.KubeVersion = &chartutil.KubeVersion{Version: "v1.30.14", Major: "1", Minor: "30"}
	inst.ReleaseName = releaseName
	inst.Namespace = releaseNamespace
	rel, err := inst.Run(c, values)
	if err != nil {
		return nil, err
	}
	objs, err := parseManifest(rel.Manifest)
	if err != nil {
		return nil, err
	}
	return &rendered{Objects: objs, Notes: rel.Info.Notes, Manifest: rel.Manifest}, nil
}

// mustRender renders the chart copy with values and fails the test on error.
func mustRender(t testing.TB, values map[string]any) *rendered {
	t.Helper()
	dir, _ := chartCopy(t)
	r, err := render(t, loadChart(t, dir), values)
	if err != nil {
		t.Fatalf("render chart: %v", err)
	}
	return r
}

type rendered struct {
	Objects  []*unstructured.Unstructured
	Notes    string
	Manifest string
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// parseManifest splits a rendered manifest into objects. Each document must
// be valid YAML without duplicate keys, and each built-in kind must decode
// into its Go type without unknown fields: a misspelt field fails here
// rather than being dropped by the API server.
func parseManifest(manifest string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for i, doc := range docSeparator.Split(manifest, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w\n%s", i, err, doc)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("document %d: %w\n%s", i, err, doc)
		}
		if obj.GetKind() == "" || obj.GetAPIVersion() == "" || obj.GetName() == "" {
			return nil, fmt.Errorf("document %d has no kind, apiVersion or name:\n%s", i, doc)
		}
		if typed, err := clientgoscheme.Scheme.New(obj.GroupVersionKind()); err == nil {
			if err := k8sruntime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, typed, true); err != nil {
				return nil, fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err)
			}
		}
		out = append(out, obj)
	}
	return out, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// get returns the object of that kind and name, failing the test if absent.
func (r *rendered) get(t testing.TB, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range r.Objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("rendered chart has no %s %s; it has %v", kind, name, r.names())
	return nil
}

func (r *rendered) all(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.Objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func (r *rendered) names() []string {
	var out []string
	for _, o := range r.Objects {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	sort.Strings(out)
	return out
}

// typed converts an unstructured object into its Go type.
func typed[T any](t testing.TB, o *unstructured.Unstructured) *T {
	t.Helper()
	v := new(T)
	if err := k8sruntime.DefaultUnstructuredConverter.FromUnstructured(o.Object, v); err != nil {
		t.Fatalf("convert %s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return v
}

// readFile reads a file of the repository.
func readFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return b
}

// documentedFlags returns, per binary, the flags docs/interfaces.md lists
// in its Binaries table: the backticked --names of the binary's row.
func documentedFlags(t testing.TB) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	row := regexp.MustCompile("^\\| `(vm-dhcp-[a-z]+)` \\|")
	flag := regexp.MustCompile("`(--[a-z][a-z0-9-]*)")
	for _, l := range strings.Split(string(readFile(t, "docs/interfaces.md")), "\n") {
		m := row.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		flags := map[string]bool{}
		for _, f := range flag.FindAllStringSubmatch(l, -1) {
			flags[strings.TrimPrefix(f[1], "--")] = true
		}
		out[m[1]] = flags
	}
	for _, b := range []string{"vm-dhcp-controller", "vm-dhcp-webhook", "vm-dhcp-agent"} {
		if len(out[b]) == 0 {
			t.Fatalf("docs/interfaces.md lists no flags for %s", b)
		}
	}
	return out
}

// splitArgs parses --name=value / --name value / --flag arguments.
func splitArgs(args []string) (map[string]string, error) {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			return nil, fmt.Errorf("argument %q is not a --flag", a)
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			value = args[i+1]
			i++
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("flag --%s given twice", name)
		}
		out[name] = value
	}
	return out, nil
}
