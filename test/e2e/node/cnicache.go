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
// dir: the entries whose network config names a path under workDir (the
// pod network's host-local data folder), and the loopback entries of the
// same sandboxes. Entries of anything else stay. It returns how many it
// removed.
func removeCNIResults(dir, workDir string) int {
	if workDir == "" {
		return 0
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	under := filepath.Clean(workDir) + string(filepath.Separator)
	ours := map[string]bool{}
	removed := 0
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
		if strings.Contains(string(cached.Config), under) {
			ours[cached.ContainerID] = true
			if os.Remove(filepath.Join(dir, e.Name())) == nil {
				removed++
			}
		}
	}
	// Entries are named <network>-<container ID>-<interface>.
	for _, e := range entries {
		for id := range ours {
			if strings.Contains(e.Name(), "-"+id+"-") {
				if os.Remove(filepath.Join(dir, e.Name())) == nil {
					removed++
				}
			}
		}
	}
	return removed
}
