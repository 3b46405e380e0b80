package agentconfig

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestRenderGolden(t *testing.T) {
	cases := []struct {
		golden string
		params Params
	}{
		{"default.yaml", Params{ServerIP: "192.168.100.2", PoolNamespace: "default", PoolName: "example"}},
		{"kubeconfig.yaml", Params{ServerIP: "10.250.0.1", PoolNamespace: "demo", PoolName: "net-a",
			Interface: "v-srv", SnapshotPath: "/tmp/demo/snapshot.json", Kubeconfig: "/tmp/demo/kubeconfig"}},
	}
	for _, c := range cases {
		t.Run(c.golden, func(t *testing.T) {
			got, err := Render(c.params)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", c.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("rendered config differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

// The default config is quoted verbatim in docs/interfaces.md; the golden
// file must stay identical to it.
func TestDefaultMatchesInterfaceDoc(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "interfaces.md"))
	if err != nil {
		t.Skipf("docs/interfaces.md not readable: %v", err)
	}
	got, err := Render(Params{ServerIP: "192.168.100.2", PoolNamespace: "default", PoolName: "example"})
	if err != nil {
		t.Fatal(err)
	}
	var indented []string
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		indented = append(indented, "  "+l)
	}
	if !strings.Contains(string(doc), strings.Join(indented, "\n")) {
		t.Errorf("default config is not the one quoted in docs/interfaces.md:\n%s", got)
	}
}

func TestRenderRejectsBadInput(t *testing.T) {
	for name, p := range map[string]Params{
		"bad server ip":     {ServerIP: "192.168.100.300", PoolNamespace: "default", PoolName: "example"},
		"ipv6 server ip":    {ServerIP: "fd00::1", PoolNamespace: "default", PoolName: "example"},
		"space in name":     {ServerIP: "192.168.100.2", PoolNamespace: "default", PoolName: "ex ample"},
		"empty namespace":   {ServerIP: "192.168.100.2", PoolName: "example"},
		"newline in kcfg":   {ServerIP: "192.168.100.2", PoolNamespace: "default", PoolName: "example", Kubeconfig: "/a\n- evil: x"},
		"space in snapshot": {ServerIP: "192.168.100.2", PoolNamespace: "default", PoolName: "example", SnapshotPath: "/a b"},
	} {
		if _, err := Render(p); err == nil {
			t.Errorf("%s: Render accepted %+v", name, p)
		}
	}
}

func TestHashTellsContentApart(t *testing.T) {
	a, b := Hash("x"), Hash("x\n")
	if a == b || a != Hash("x") || len(a) != 16 {
		t.Errorf("Hash(x)=%s Hash(x\\n)=%s", a, b)
	}
}
