package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

// Assets are the binaries and images a cluster of our chart needs, built by
// the project's own scripts.
type Assets struct {
	KubeBinDir string // etcd, kube-apiserver, kubelet, ... (hack/envtest/node.sh)
	Helm       string // helm binary (hack/tools.sh)
	BinDir     string // vm-dhcp-controller, vm-dhcp-webhook, vm-dhcp-agent (make build)
	CNIBinDir  string // vmdhcp-multus
	Images     []string
}

// Components are the project's images, named as the chart names them.
var Components = []string{"controller", "webhook", "agent"}

// ImageRef is the reference the chart's default values give a component's
// image with the given tag (no registry: the runtime's default).
func ImageRef(component, tag string) string {
	return "docker.io/vm-dhcp/vm-dhcp-" + component + ":" + tag
}

func script(ctx context.Context, root string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Dir = root
	// Cancelled, only bash is killed: a go build (or a flock waiting for
	// hack/test.sh's background build) under it keeps the pipes open.
	cmd.WaitDelay = 10 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

func goBuild(ctx context.Context, dir, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// PrepareAssets builds what is missing into workDir: the Kubernetes binaries
// (cached across runs), helm, the project's binaries (or binDir when not
// empty), the Multus stand-in, and the images for each tag (docker-archive
// tarballs built from build/*.Dockerfile by hack/images, no container
// engine), plus the pause image.
func PrepareAssets(ctx context.Context, workDir, binDir string, tags []string) (*Assets, error) {
	root := testenv.RepoRoot()
	a := &Assets{BinDir: binDir, CNIBinDir: filepath.Join(workDir, "cni")}
	var err error
	if a.KubeBinDir, err = script(ctx, root, "hack/envtest/node.sh"); err != nil {
		return nil, err
	}
	helmDir, err := script(ctx, root, "hack/tools.sh", "helm")
	if err != nil {
		return nil, err
	}
	a.Helm = filepath.Join(helmDir, "helm")
	if a.BinDir == "" {
		a.BinDir = filepath.Join(workDir, "bin")
		cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "build", "BIN_DIR="+a.BinDir)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("make build: %w\n%s", err, b)
		}
	}
	if err := goBuild(ctx, root, filepath.Join(a.CNIBinDir, "vmdhcp-multus"), "./test/e2e/node/multus"); err != nil {
		return nil, err
	}
	imagesTool := filepath.Join(workDir, "tools", "images")
	if err := goBuild(ctx, filepath.Join(root, "hack", "images"), imagesTool, "."); err != nil {
		return nil, err
	}
	// The Dockerfiles' prebuilt stage copies bin/<binary> of the context.
	buildCtx := filepath.Join(workDir, "image-context")
	if err := os.MkdirAll(buildCtx, 0o755); err != nil {
		return nil, err
	}
	_ = os.Remove(filepath.Join(buildCtx, "bin"))
	if err := os.Symlink(a.BinDir, filepath.Join(buildCtx, "bin")); err != nil {
		return nil, err
	}
	imgDir := filepath.Join(workDir, "images")
	for _, tag := range tags {
		for _, comp := range Components {
			out := filepath.Join(imgDir, comp+"-"+tag+".tar")
			if err := buildImage(ctx, imagesTool, filepath.Join(root, "build", comp+".Dockerfile"), buildCtx,
				ImageRef(comp, tag), out, "BINARY=prebuilt"); err != nil {
				return nil, err
			}
			a.Images = append(a.Images, out)
		}
	}
	pauseCtx := filepath.Join(workDir, "pause-context")
	if err := goBuild(ctx, root, filepath.Join(pauseCtx, "pause"), "./test/e2e/node/pause"); err != nil {
		return nil, err
	}
	pause := filepath.Join(imgDir, "pause.tar")
	if err := buildImage(ctx, imagesTool, filepath.Join(root, "test", "e2e", "node", "pause", "Dockerfile"), pauseCtx, pauseImage, pause); err != nil {
		return nil, err
	}
	a.Images = append(a.Images, pause)
	return a, nil
}

func buildImage(ctx context.Context, tool, dockerfile, buildCtx, ref, out string, buildArgs ...string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	args := []string{"-f", dockerfile, "-context", buildCtx, "-t", ref, "-o", out}
	for _, a := range buildArgs {
		args = append(args, "-build-arg", a)
	}
	if b, err := exec.CommandContext(ctx, tool, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("build image %s: %w\n%s", ref, err, b)
	}
	return nil
}
