package chart

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the values table in charts/vm-dhcp-controller/README.md")

// TestSchemaRejectsTypos: a misspelt or mistyped value fails the install
// with a message naming it, instead of being ignored.
func TestSchemaRejectsTypos(t *testing.T) {
	dir, _ := chartCopy(t)
	c := loadChart(t, dir)
	cases := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"top-level typo", map[string]any{"controler": map[string]any{}}, "controler"},
		{"nested typo", map[string]any{"controller": map[string]any{"replica": 2}}, "replica"},
		{"deep typo", map[string]any{"webhook": map[string]any{"certManager": map[string]any{"enable": true}}}, "enable"},
		{"agent typo", map[string]any{"agent": map[string]any{"priorityClass": "x"}}, "priorityClass"},
		{"resources typo", map[string]any{"agent": map[string]any{"resources": map[string]any{"request": map[string]any{"cpu": "1"}}}}, "request"},
		{"toleration typo", map[string]any{"controller": map[string]any{"tolerations": []any{map[string]any{"keys": "a"}}}}, "keys"},
		{"wrong type", map[string]any{"webhook": map[string]any{"replicas": "two"}}, "replicas"},
		{"zero replicas", map[string]any{"controller": map[string]any{"replicas": 0}}, "replicas"},
		{"bad pull policy", map[string]any{"agent": map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}}, "pullPolicy"},
		{"bad port", map[string]any{"webhook": map[string]any{"port": 70000}}, "port"},
		{"node selector value not a string", map[string]any{"webhook": map[string]any{"nodeSelector": map[string]any{"a": map[string]any{"b": "c"}}}}, "nodeSelector"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, c, tc.values)
			if err == nil {
				t.Fatalf("values %v were accepted", tc.values)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not name %q: %v", tc.want, err)
			}
		})
	}
}

// TestMissingGeneratedRBACFailsClearly: without generated/<c>/role.yaml the
// chart refuses to render rather than install binaries without RBAC.
func TestMissingGeneratedRBACFailsClearly(t *testing.T) {
	dir, _ := chartCopy(t)
	// Only the role: generated/webhook also holds webhooks.yaml, whose own
	// missing-file error would come first.
	if err := os.Remove(filepath.Join(dir, "generated", "webhook", "role.yaml")); err != nil {
		t.Fatal(err)
	}
	_, err := render(t, loadChart(t, dir), nil)
	if err == nil || !strings.Contains(err.Error(), "generated/webhook/role.yaml is missing") || !strings.Contains(err.Error(), "make generate") {
		t.Fatalf("want an error that names the missing file and make generate, got %v", err)
	}
}

// TestGeneratedRulesAreUsedVerbatim: the templates take the rules of the
// generated roles as they are (no hand-written copy), cluster-wide rules into
// the ClusterRole and namespaced ones into a Role in the release namespace.
func TestGeneratedRulesAreUsedVerbatim(t *testing.T) {
	dir, _ := chartCopy(t)
	marker := `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: vm-dhcp-controller
rules:
- apiGroups: [example.test]
  resources: [widgets]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: vm-dhcp-controller
  namespace: somewhere-else
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [create]
`
	if err := os.WriteFile(filepath.Join(dir, "generated", "controller", "role.yaml"), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := render(t, loadChart(t, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	cr := r.get(t, "ClusterRole", "vm-dhcp-controller")
	role := r.get(t, "Role", "vm-dhcp-controller")
	crRules, _ := json.Marshal(cr.Object["rules"])
	roleRules, _ := json.Marshal(role.Object["rules"])
	if string(crRules) != `[{"apiGroups":["example.test"],"resources":["widgets"],"verbs":["get"]}]` {
		t.Errorf("ClusterRole rules %s", crRules)
	}
	if string(roleRules) != `[{"apiGroups":[""],"resources":["pods"],"verbs":["create"]}]` || role.GetNamespace() != releaseNamespace {
		t.Errorf("Role %s rules %s", role.GetNamespace(), roleRules)
	}
}

// TestSchemaIsClosedAndDocumented: every object of the schema lists its keys
// and forbids others; every key of values.yaml is in the schema with a
// description; free-form maps say what their values are.
func TestSchemaIsClosedAndDocumented(t *testing.T) {
	schema := loadSchema(t)
	var walk func(path string, node map[string]any)
	walk = func(path string, node map[string]any) {
		node = schema.resolve(t, node)
		if props, ok := node["properties"].(map[string]any); ok {
			if ap, ok := node["additionalProperties"]; !ok || ap != false {
				t.Errorf("%s: additionalProperties is %v, want false", path, ap)
			}
			for k, v := range props {
				walk(path+"."+k, v.(map[string]any))
			}
		} else if typeIs(node, "object") {
			if ap, ok := node["additionalProperties"]; !ok || ap == true {
				// Kubernetes sub-objects nested inside a closed object (e.g.
				// affinity.nodeAffinity) are passed through as they are.
				if strings.Count(path, ".") < 3 {
					t.Errorf("%s: a map without a schema for its values", path)
				}
			}
		}
		if items, ok := node["items"].(map[string]any); ok {
			walk(path+"[]", items)
		}
	}
	walk("values", schema.root)

	var values map[string]any
	if err := yaml.Unmarshal(readFile(t, "charts/vm-dhcp-controller/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	for _, row := range valuesTable(t, schema, values) {
		if row.Description == "" {
			t.Errorf("value %s has no description in values.schema.json", row.Key)
		}
	}
	var check func(path string, v any, node map[string]any)
	check = func(path string, v any, node map[string]any) {
		node = schema.resolve(t, node)
		m, ok := v.(map[string]any)
		props, hasProps := node["properties"].(map[string]any)
		if !ok || !hasProps {
			return
		}
		for k, sub := range m {
			p, ok := props[k].(map[string]any)
			if !ok {
				t.Errorf("values.yaml key %s.%s is not in values.schema.json", path, k)
				continue
			}
			check(path+"."+k, sub, p)
		}
	}
	check("values", values, schema.root)
}

// TestReadmeValuesTable: the README's values table is generated from the
// schema and values.yaml; `go test -run TestReadmeValuesTable -update`
// (hack/chart-docs.sh) rewrites it.
func TestReadmeValuesTable(t *testing.T) {
	schema := loadSchema(t)
	var values map[string]any
	if err := yaml.Unmarshal(readFile(t, "charts/vm-dhcp-controller/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|---|---|---|---|\n")
	for _, row := range valuesTable(t, schema, values) {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", row.Key, row.Type, row.Default, strings.ReplaceAll(row.Description, "|", "\\|"))
	}
	table := b.String()

	const begin, end = "<!-- values-table:begin -->\n", "<!-- values-table:end -->"
	readmePath := filepath.Join(chartDir(), "README.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatalf("read chart README: %v", err)
	}
	i, j := strings.Index(string(readme), begin), strings.Index(string(readme), end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q ... %q section", readmePath, strings.TrimSpace(begin), end)
	}
	current := string(readme)[i+len(begin) : j]
	if current == table {
		return
	}
	if *update {
		out := string(readme)[:i+len(begin)] + table + string(readme)[j:]
		if err := os.WriteFile(readmePath, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the values table of %s", readmePath)
		return
	}
	t.Errorf("the values table in %s is stale: run hack/chart-docs.sh", readmePath)
}

type tableRow struct{ Key, Type, Default, Description string }

// valuesTable lists the documented leaves: scalars, lists, maps and
// Kubernetes objects (one row each), in key order.
func valuesTable(t *testing.T, s *jsonSchema, values map[string]any) []tableRow {
	var rows []tableRow
	var walk func(key string, node map[string]any, desc string, v any, present bool)
	walk = func(key string, node map[string]any, desc string, v any, present bool) {
		_, isRef := node["$ref"]
		resolved := s.resolve(t, node)
		if d, ok := node["description"].(string); ok {
			desc = d
		} else if d, ok := resolved["description"].(string); ok {
			desc = d
		}
		props, hasProps := resolved["properties"].(map[string]any)
		if hasProps && !isRef {
			keys := make([]string, 0, len(props))
			for k := range props {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			m, _ := v.(map[string]any)
			for _, k := range keys {
				sub, ok := m[k]
				walk(strings.TrimPrefix(key+"."+k, "."), props[k].(map[string]any), "", sub, ok)
			}
			return
		}
		def := "—"
		if present {
			b, _ := json.Marshal(v)
			def = "`" + string(b) + "`"
		}
		rows = append(rows, tableRow{Key: key, Type: typeName(resolved), Default: def, Description: desc})
	}
	walk("", s.root, "", values, true)
	return rows
}

type jsonSchema struct{ root map[string]any }

func loadSchema(t *testing.T) *jsonSchema {
	t.Helper()
	var root map[string]any
	if err := json.Unmarshal(readFile(t, "charts/vm-dhcp-controller/values.schema.json"), &root); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	return &jsonSchema{root: root}
}

var refPattern = regexp.MustCompile(`^#/\$defs/([A-Za-z0-9]+)$`)

// resolve follows a local $ref (keeping the referring node's description).
func (s *jsonSchema) resolve(t *testing.T, node map[string]any) map[string]any {
	ref, ok := node["$ref"].(string)
	if !ok {
		return node
	}
	t.Helper()
	m := refPattern.FindStringSubmatch(ref)
	if m == nil {
		t.Fatalf("$ref %s is not a local #/$defs/ reference", ref)
	}
	defs, _ := s.root["$defs"].(map[string]any)
	target, found := defs[m[1]].(map[string]any)
	if !found {
		t.Fatalf("unresolvable $ref %s", ref)
	}
	return target
}

func typeIs(node map[string]any, want string) bool {
	switch v := node["type"].(type) {
	case string:
		return v == want
	case []any:
		for _, x := range v {
			if x == want {
				return true
			}
		}
	}
	return false
}

func typeName(node map[string]any) string {
	switch v := node["type"].(type) {
	case string:
		return v
	case []any:
		var parts []string
		for _, x := range v {
			parts = append(parts, fmt.Sprint(x))
		}
		return strings.Join(parts, " or ")
	}
	if e, ok := node["enum"].([]any); ok {
		var parts []string
		for _, x := range e {
			parts = append(parts, fmt.Sprintf("`%v`", x))
		}
		return "one of " + strings.Join(parts, ", ")
	}
	return "any"
}
