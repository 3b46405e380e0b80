package flow

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

// codeBlock is one fenced block of README.md.
type codeBlock struct {
	lang string
	text string
}

func readmeBlocks(t *testing.T) []codeBlock {
	t.Helper()
	f, err := os.Open(filepath.Join(testenv.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []codeBlock
	var cur *codeBlock
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &codeBlock{lang: strings.TrimPrefix(line, "```")}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	return blocks
}

// TestREADMECommands runs every command of the README's shell blocks, so the
// README cannot rot: kubectl commands against the local cluster (after the
// flow, which applied the same examples), `helm install` as `helm template`
// with the same arguments, make targets checked against the Makefile. The
// README's IPPool manifest is applied with a server-side dry run, through
// the webhook.
func TestREADMECommands(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	root := testenv.RepoRoot()
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, b := range readmeBlocks(t) {
		switch b.lang {
		case "sh":
			for _, line := range strings.Split(strings.TrimSpace(b.text), "\n") {
				fields := strings.Fields(line)
				if len(fields) == 0 {
					continue
				}
				ran++
				switch fields[0] {
				case "make":
					target := fields[1]
					if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(target) + `:`).Match(makefile) {
						t.Errorf("README runs `%s`, but the Makefile has no target %q", line, target)
					}
				case "kubectl":
					cmd := exec.CommandContext(ctx, "kubectl", fields[1:]...)
					cmd.Dir = root
					cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster.Kubeconfig())
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Errorf("README command `%s` failed: %v\n%s", line, err, out)
					}
				case "helm":
					if fields[1] != "install" {
						t.Errorf("README command `%s`: only helm install is checked", line)
						continue
					}
					args := append([]string{"template", "--kube-version", cluster.KubeVersion()}, fields[2:]...)
					cmd := exec.CommandContext(ctx, helmBin, args...)
					cmd.Dir = root
					out, err := cmd.CombinedOutput()
					if err != nil || !strings.Contains(string(out), "kind: Deployment") {
						t.Errorf("README command `%s` does not render (helm %s): %v\n%s", line, strings.Join(args, " "), err, out)
					}
				default:
					t.Errorf("README command `%s`: no check for %q; add one here", line, fields[0])
				}
			}
		case "yaml":
			var doc map[string]any
			if err := yaml.Unmarshal([]byte(b.text), &doc); err != nil {
				t.Errorf("README yaml block does not parse: %v\n%s", err, b.text)
				continue
			}
			if doc["kind"] != "IPPool" {
				continue
			}
			ran++
			file := filepath.Join(t.TempDir(), "readme-ippool.yaml")
			if err := os.WriteFile(file, []byte(b.text), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := cluster.Kubectl(ctx, "apply", "--dry-run=server", "-f", file); err != nil {
				t.Errorf("README's IPPool is refused: %v\n%s", err, out)
			}
		}
	}
	if ran < 8 {
		t.Fatalf("checked only %d README commands; the README lost its commands or the parser broke", ran)
	}
}
