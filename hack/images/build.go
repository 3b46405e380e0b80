package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// build writes the image of the Dockerfile's final stage as a docker-archive
// tarball tagged tag.
func build(file, contextDir string, args map[string]string, tag, out string) error {
	df, err := parseDockerfile(file)
	if err != nil {
		return err
	}
	img, err := df.evaluate(file, contextDir, args)
	if err != nil {
		return err
	}
	if len(img.Files) == 0 {
		return fmt.Errorf("%s: the final stage has no files", file)
	}
	layerTar, err := layerFromFiles(img.Files)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	oci, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return fmt.Errorf("append layer: %w", err)
	}
	cfg, err := oci.ConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.User = img.User
	cfg.Config.Entrypoint = img.Entrypoint
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	oci, err = mutate.ConfigFile(oci, cfg)
	if err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, oci); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	d, _ := oci.Digest()
	fmt.Fprintf(os.Stderr, "images: %s (%s) -> %s\n", ref.Name(), d, out)
	return nil
}

// layerFromFiles is one uncompressed layer tar holding each file (and its
// parent folders) with a fixed time, so the same binaries give the same
// image digest.
func layerFromFiles(files map[string]string) ([]byte, error) {
	var dsts []string
	for d := range files {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	for _, dst := range dsts {
		rel := strings.TrimPrefix(dst, "/")
		for dir := path.Dir(rel); dir != "." && !dirs[dir]; dir = path.Dir(dir) {
			dirs[dir] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return nil, err
			}
		}
		b, err := os.ReadFile(files[dst])
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", files[dst], err)
		}
		st, err := os.Stat(files[dst])
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: int64(st.Mode().Perm()), Size: int64(len(b)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
