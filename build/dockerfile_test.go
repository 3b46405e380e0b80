// Package build holds the Dockerfiles of the three images. No container
// engine runs where the tests run, so this test builds exactly the binaries
// the Dockerfiles build, with the same command, and checks they fit an empty
// (scratch) image: statically linked, at the path the ENTRYPOINT names.
package build

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), ".."))
}

type dockerfile struct {
	Stages     []string          // FROM lines
	Args       map[string]string // ARG defaults
	GoBuild    string            // the RUN ... go build command
	Output     string            // -o path of the go build
	Package    string            // the package built
	CopyFrom   string            // source of COPY --from=binary into the final stage
	CopyTo     string
	Prebuilt   [2]string // COPY SRC DST of the prebuilt stage (offline builds)
	User       string
	Entrypoint string
}

var (
	fromRe  = regexp.MustCompile(`^FROM\s+(.+)$`)
	argRe   = regexp.MustCompile(`^ARG\s+([A-Z_]+)=(.*)$`)
	runRe   = regexp.MustCompile(`^RUN\s+(CGO_ENABLED=0 go build .+ -o (\S+) (\./\S+))$`)
	copyRe  = regexp.MustCompile(`^COPY\s+--from=binary\s+(\S+)\s+(\S+)$`)
	plainRe = regexp.MustCompile(`^COPY\s+(bin/\S+)\s+(\S+)$`)
	userRe  = regexp.MustCompile(`^USER\s+(\S+)$`)
	entryRe = regexp.MustCompile(`^ENTRYPOINT\s+\["([^"]+)"\]$`)
)

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := dockerfile{Args: map[string]string{}}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case fromRe.MatchString(l):
			d.Stages = append(d.Stages, fromRe.FindStringSubmatch(l)[1])
		case argRe.MatchString(l):
			m := argRe.FindStringSubmatch(l)
			d.Args[m[1]] = m[2]
		case runRe.MatchString(l):
			m := runRe.FindStringSubmatch(l)
			d.GoBuild, d.Output, d.Package = m[1], m[2], m[3]
		case copyRe.MatchString(l):
			m := copyRe.FindStringSubmatch(l)
			d.CopyFrom, d.CopyTo = m[1], m[2]
		case plainRe.MatchString(l):
			m := plainRe.FindStringSubmatch(l)
			d.Prebuilt = [2]string{m[1], m[2]}
		case userRe.MatchString(l):
			d.User = userRe.FindStringSubmatch(l)[1]
		case entryRe.MatchString(l):
			d.Entrypoint = entryRe.FindStringSubmatch(l)[1]
		}
	}
	return d
}

// makeBuildFlags returns the go build command of the Makefile's build target
// (its GO_BUILD variable), so the images and `make build` stay the same.
func makeBuildFlags(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^GO_BUILD\s*=\s*(.+)$`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatal("Makefile has no GO_BUILD")
	}
	return strings.ReplaceAll(m[1], "$(VERSION)", "${VERSION}")
}

func TestDockerfilesBuildStaticBinaries(t *testing.T) {
	want := map[string]struct{ pkg, user string }{
		"controller": {"./cmd/vm-dhcp-controller", "65532:65532"},
		"webhook":    {"./cmd/vm-dhcp-webhook", "65532:65532"},
		// Root in the container so the capabilities the pod adds are effective;
		// the controller's pod spec drops all others.
		"agent": {"./coredhcp-build", "0:0"},
	}
	makeBuild := makeBuildFlags(t)
	out := t.TempDir()
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			d := parseDockerfile(t, filepath.Join(repoRoot(), "build", name+".Dockerfile"))
			bin := "vm-dhcp-" + name
			// Stages: build (golang), prebuilt (bin/ from make build), the
			// one ARG BINARY picks, and the scratch image.
			wantStages := []string{"golang:${GO_VERSION} AS build", "scratch AS prebuilt", "${BINARY} AS binary", "scratch"}
			if strings.Join(d.Stages, "|") != strings.Join(wantStages, "|") {
				t.Errorf("stages %q, want %q", d.Stages, wantStages)
			}
			if d.Args["BINARY"] != "build" {
				t.Errorf("ARG BINARY defaults to %q, want build (the standard docker build)", d.Args["BINARY"])
			}
			if d.Prebuilt != [2]string{"bin/" + bin, d.Output} {
				t.Errorf("prebuilt stage copies %q, want bin/%s (make build's output) to %s", d.Prebuilt, bin, d.Output)
			}
			if d.Package != w.pkg {
				t.Errorf("builds %s, want %s", d.Package, w.pkg)
			}
			if got := strings.TrimSuffix(d.GoBuild, " -o "+d.Output+" "+d.Package); got != makeBuild {
				t.Errorf("Dockerfile builds with\n  %s\nthe Makefile with\n  %s", got, makeBuild)
			}
			if d.CopyFrom != d.Output || d.CopyTo != "/"+bin || d.Entrypoint != "/"+bin {
				t.Errorf("binary %s copied to %s, entrypoint %s", d.CopyFrom, d.CopyTo, d.Entrypoint)
			}
			if d.User != w.user {
				t.Errorf("USER %s, want %s", d.User, w.user)
			}
			if d.Args["VERSION"] == "" {
				t.Error("no default for ARG VERSION")
			}
			if matches, _ := filepath.Glob(filepath.Join(repoRoot(), w.pkg, "*.go")); len(matches) == 0 {
				t.Skipf("%s has no Go files yet: nothing to build", w.pkg)
			}

			// The Dockerfile's command, as the shell in the build stage runs it.
			target := filepath.Join(out, bin)
			cmdline := strings.Replace(d.GoBuild, " -o "+d.Output+" ", " -o "+target+" ", 1)
			cmd := exec.Command("sh", "-c", cmdline)
			cmd.Dir = repoRoot()
			cmd.Env = append(os.Environ(), "VERSION="+d.Args["VERSION"])
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", cmdline, err, b)
			}
			checkStatic(t, target)
		})
	}
}

// checkStatic fails unless the file is an ELF executable that needs no
// dynamic loader or shared library: scratch has neither.
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s is not an ELF binary: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s needs a dynamic loader", path)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s links %v", path, libs)
	}
}
