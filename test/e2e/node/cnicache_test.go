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
	const work = "/tmp/vmdhcp-node-1/cluster"
	write("pods-aaa-eth0", "aaa", `{"name":"pods","plugins":[{"ipam":{"dataDir":"/tmp/vmdhcp-node-1/cluster/node-a/cni/ipam"}}]}`)
	write("cni-loopback-aaa-lo", "aaa", `{"type":"loopback"}`)
	// Another cluster's (a prefix of ours is not ours), and another
	// runtime's entries stay.
	write("pods-bbb-eth0", "bbb", `{"plugins":[{"ipam":{"dataDir":"/tmp/vmdhcp-node-1/cluster2/node-a/cni/ipam"}}]}`)
	write("cni-loopback-bbb-lo", "bbb", `{"type":"loopback"}`)
	write("other-ccc-eth0", "ccc", `{"plugins":[{"type":"calico"}]}`)
	if err := os.WriteFile(filepath.Join(dir, "garbage"), []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n := removeCNIResults(dir, work); n != 2 {
		t.Errorf("removed %d entries, want 2", n)
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
