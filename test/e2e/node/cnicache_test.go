package node

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestRemoveCNIResults(t *testing.T) {
	dir := t.TempDir()
	write := func(name, id, config string) {
		t.Helper()
		b := fmt.Sprintf(`{"kind":"cniCacheV1","containerId":%q,"config":%q,"ifName":"eth0","networkName":"pods"}`,
			id, base64.StdEncoding.EncodeToString([]byte(config)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	work := filepath.Join(t.TempDir(), "cluster")
	write("pods-aaa-eth0", "aaa", `{"name":"pods","plugins":[{"ipam":{"dataDir":"`+work+`/node-a/cni/ipam"}}]}`)
	write("cni-loopback-aaa-lo", "aaa", `{"type":"loopback"}`)
	// Another cluster's (a prefix of ours is not ours), and another
	// runtime's entries stay.
	write("pods-bbb-eth0", "bbb", `{"plugins":[{"ipam":{"dataDir":"`+work+`2/node-a/cni/ipam"}}]}`)
	write("cni-loopback-bbb-lo", "bbb", `{"type":"loopback"}`)
	write("other-ccc-eth0", "ccc", `{"plugins":[{"type":"calico"}]}`)
	// A sandbox whose node died before its pod network was set up: only
	// its loopback entry exists; the cluster's containerd root holds it.
	write("cni-loopback-ddd-lo", "ddd", `{"type":"loopback"}`)
	if err := os.MkdirAll(filepath.Join(work, "node-b", "containerd", "io.containerd.grpc.v1.cri", "sandboxes", "ddd"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "garbage"), []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n := removeCNIResults(dir, work); n != 3 {
		t.Errorf("removed %d entries, want 3", n)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	want := []string{"cni-loopback-bbb-lo", "garbage", "other-ccc-eth0", "pods-bbb-eth0"}
	if !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
	if n := removeCNIResults(dir, ""); n != 0 {
		t.Errorf("an empty workDir removed %d entries", n)
	}
}
