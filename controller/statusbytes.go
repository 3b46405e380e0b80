package controller

import (
	"encoding/json"
	"fmt"
	"time"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// RebuiltObjectBytes is the size, as JSON, of pool (old with a new spec)
// once the controller has rebuilt its IPAM from old's status and written
// the result: the allocations the new spec cannot hold (e.g. newly
// excluded) are dropped and quarantined for their MAC, which makes the
// status larger. The webhook refuses a spec update whose rebuilt pool would
// not fit in etcd, since every later status write (releases included)
// would fail. It computes what the controller's rebuild computes, both
// halves (buildPoolIPAMs, fillPoolStatus), so the two cannot disagree.
func RebuiltObjectBytes(old, pool *v1alpha1.IPPool, now time.Time) (int, error) {
	p := pool.DeepCopy()
	p.Status = *old.Status.DeepCopy()
	am, am6, _, err := buildPoolIPAMs(p, func() time.Time { return now })
	if err != nil {
		return 0, fmt.Errorf("rebuild IPAM of pool %s/%s: %w", pool.Namespace, pool.Name, err)
	}
	fillPoolStatus(p, am, am6)
	b, err := json.Marshal(p)
	if err != nil {
		return 0, fmt.Errorf("encode pool %s/%s: %w", pool.Namespace, pool.Name, err)
	}
	return len(b), nil
}
