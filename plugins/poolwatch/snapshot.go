package poolwatch

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// snapshotVersion is bumped when the file format changes incompatibly.
const snapshotVersion = 1

// snapshotFile is the on-disk form of a pool: exactly the inputs a Pool is
// built from, so a loaded snapshot goes through the same checks as an
// IPPool from the API server.
type snapshotFile struct {
	Version         int                 `json:"version"`
	SavedAt         time.Time           `json:"savedAt"`
	Namespace       string              `json:"namespace"`
	Name            string              `json:"name"`
	ResourceVersion string              `json:"resourceVersion,omitempty"`
	Exists          bool                `json:"exists"`
	IPv4Config      v1alpha1.IPv4Config `json:"ipv4Config"`
	Allocated       map[string]string   `json:"allocated,omitempty"`
	// The IPv6 half, absent for IPv4-only pools (older files read the same).
	IPv6Config *v1alpha1.IPv6Config `json:"ipv6Config,omitempty"`
	Allocated6 map[string]string    `json:"allocated6,omitempty"`
}

// WriteSnapshot writes p to path atomically: a temporary file in the same
// folder, fsynced, then renamed over path, so a crash leaves either the old
// or the new snapshot, never half of one.
func WriteSnapshot(path string, p *Pool, now time.Time) error {
	f := snapshotFile{Version: snapshotVersion, SavedAt: now.UTC(), Namespace: p.Namespace, Name: p.Name,
		ResourceVersion: p.ResourceVersion}
	if p.source != nil {
		f.Exists = true
		f.IPv4Config = p.source.Spec.IPv4Config
		if p.source.Status.IPv4 != nil {
			f.Allocated = p.source.Status.IPv4.Allocated
		}
		f.IPv6Config = p.source.Spec.IPv6Config
		if p.source.Status.IPv6 != nil {
			f.Allocated6 = p.source.Status.IPv6.Allocated
		}
	}
	data, err := json.Marshal(&f)
	if err != nil {
		return fmt.Errorf("encode snapshot of %s/%s: %w", p.Namespace, p.Name, err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".snapshot-*.tmp")
	if err != nil {
		return fmt.Errorf("write snapshot %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write snapshot %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync snapshot %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close snapshot %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename snapshot into %s: %w", path, err)
	}
	return nil
}

// ReadSnapshot loads the pool saved at path. It checks that the file is for
// namespace/name, so a misplaced file is never served. Entries that fail
// the pool checks are skipped and reported in the error alongside the pool.
func ReadSnapshot(path, namespace, name string) (*Pool, time.Time, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read snapshot: %w", err)
	}
	var f snapshotFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, time.Time{}, fmt.Errorf("decode snapshot %s: %w", path, err)
	}
	if f.Version != snapshotVersion {
		return nil, time.Time{}, fmt.Errorf("snapshot %s: version %d, want %d", path, f.Version, snapshotVersion)
	}
	if f.Namespace != namespace || f.Name != name {
		return nil, time.Time{}, fmt.Errorf("snapshot %s is for pool %s/%s, not %s/%s", path, f.Namespace, f.Name, namespace, name)
	}
	if !f.Exists {
		p := emptyPool(namespace, name)
		p.FromSnapshot = true
		return p, f.SavedAt, nil
	}
	ipp := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: f.Name, ResourceVersion: f.ResourceVersion},
		Spec:       v1alpha1.IPPoolSpec{IPv4Config: f.IPv4Config, IPv6Config: f.IPv6Config},
		Status:     v1alpha1.IPPoolStatus{IPv4: &v1alpha1.IPv4Status{Allocated: f.Allocated}},
	}
	if f.IPv6Config != nil {
		ipp.Status.IPv6 = &v1alpha1.IPv6Status{Allocated: f.Allocated6}
	}
	p, err := FromIPPool(ipp)
	p.FromSnapshot = true
	return p, f.SavedAt, err
}
