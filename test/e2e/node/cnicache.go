package node

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
)

// cniResultsDir is where containerd's CNI library caches each attachment's
// result (libcni's default; containerd 1.6 has no setting for it). Nothing
// removes an entry whose container died with its node, so Stop and Down do.
const cniResultsDir = "/var/lib/cni/results"

// removeCNIResults removes the cached CNI results of a cluster's pods from
// dir and returns how many it removed. A sandbox is the cluster's when its
// network config names a path under workDir (the pod network's host-local
// data folder) or when one of the cluster's containerd roots under workDir
// still holds it (a sandbox whose pod network was never set up, because
// its node died first, has only a loopback entry, which names no path).
// Every entry of such a sandbox goes; entries of anything else stay.
func removeCNIResults(dir, workDir string) int {
	if workDir == "" {
		return 0
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	ours := clusterSandboxes(workDir)
	under := filepath.Clean(workDir) + string(filepath.Separator)
	owner := map[string]string{} // entry name -> sandbox ID
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var cached struct {
			ContainerID string `json:"containerId"`
			Config      []byte `json:"config"` // base64 in the file
		}
		if json.Unmarshal(b, &cached) != nil || cached.ContainerID == "" {
			continue
		}
		owner[e.Name()] = cached.ContainerID
		if strings.Contains(string(cached.Config), under) {
			ours[cached.ContainerID] = true
		}
	}
	removed := 0
	for name, id := range owner {
		if ours[id] && os.Remove(filepath.Join(dir, name)) == nil {
			removed++
		}
	}
	return removed
}

// clusterSandboxes are the pod sandbox IDs that the cluster's containerd
// instances (root <workDir>/<node>/containerd) have folders for.
func clusterSandboxes(workDir string) map[string]bool {
	ids := map[string]bool{}
	dirs, _ := filepath.Glob(filepath.Join(workDir, "*", "containerd", "io.containerd.grpc.v1.cri", "sandboxes", "*"))
	for _, d := range dirs {
		ids[filepath.Base(d)] = true
	}
	return ids
}
