package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

func addrOf(v uint32) string {
	return fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&0xff, v>>8&0xff, v&0xff)
}

// Review 12 (R3): excluding thousands of a full /18's allocated addresses
// (pool paused, so none is "stranded") would make the controller's rebuilt
// status (an EXCLUDED mark plus a quarantine per dropped allocation) too
// large for etcd, and every status write, releases included, would fail.
// The update is refused with what to do; a smaller exclude passes.
func TestExcludeThatOverflowsRebuiltStatusRefused(t *testing.T) {
	first := uint32(192<<24 | 168<<16 | 128<<8)
	old := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pool", Generation: 2},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "default/net", Paused: ptr.To(true), IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "192.168.0.2", CIDR: "192.168.0.0/16", Router: "192.168.0.1",
			Pool: v1alpha1.Pool{Start: "192.168.128.0", End: "192.168.191.255"},
		}},
	}
	st := &v1alpha1.IPv4Status{Allocated: map[string]string{}, Owners: map[string]string{}, Used: ipam.MaxStatusAddresses}
	for i := range ipam.MaxStatusAddresses {
		ip := addrOf(first + uint32(i))
		st.Allocated[ip] = fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)
		st.Owners[ip] = fmt.Sprintf("owner-%016d-xxxx", i)
	}
	old.Status.IPv4 = st
	exclude := func(n int) *v1alpha1.IPPool {
		p := old.DeepCopy()
		for i := range n {
			p.Spec.IPv4Config.Pool.Exclude = append(p.Spec.IPv4Config.Pool.Exclude, v1alpha1.IPv4Address(addrOf(first+100+uint32(i))))
		}
		return p
	}
	es, err := ValidateIPPool(context.Background(), Objects{}, Options{}, admissionv1.Update, exclude(8000), old)
	if err != nil || !strings.Contains(es.Error(), "8000 allocated addresses") || !strings.Contains(es.Error(), "exclude fewer addresses at a time, or release them first") {
		t.Fatalf("excluding 8000 allocated addresses of a full /18: got %v %v, want a refusal saying what to do", es, err)
	}
	if es, err := ValidateIPPool(context.Background(), Objects{}, Options{}, admissionv1.Update, exclude(500), old); err != nil || len(es) > 0 {
		t.Fatalf("excluding 500 allocated addresses of a full paused /18 refused: %v %v", es, err)
	}
}

// The same check for the IPv6 half: a dual-stack pool whose IPv4 half has
// no allocations (before, the check returned early then) and whose paused
// range change drops tens of thousands of allocated IPv6 addresses: each
// becomes a quarantine entry, larger than the allocation (a dual-stack pool
// records no IPv6 owners), so the rebuilt status would not fit. Refused on
// spec.ipv6Config.pool with the number dropped; a small exclude passes.
func TestIPv6ExcludeThatOverflowsRebuiltStatusRefused(t *testing.T) {
	const n = 30000
	addr := func(i int) string { return fmt.Sprintf("fd00:60::1:%x", i) }
	old := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "pool6", Generation: 2},
		Spec: v1alpha1.IPPoolSpec{NetworkName: "default/net", Paused: ptr.To(true), IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "192.168.0.2", CIDR: "192.168.0.0/24", Pool: v1alpha1.Pool{Start: "192.168.0.10", End: "192.168.0.200"},
		}, IPv6Config: &v1alpha1.IPv6Config{
			CIDR: "fd00:60::/64", ServerIP: "fd00:60::2",
			Pool: v1alpha1.IPv6Pool{Start: "fd00:60::100", End: "fd00:60::ffff:ffff"},
		}},
	}
	st := &v1alpha1.IPv6Status{Allocated: map[string]string{}, Used: n}
	for i := range n {
		st.Allocated[addr(i)] = fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	old.Status.IPv6 = st
	if b, err := json.Marshal(old); err != nil || len(b) > ipam.MaxObjectBytes {
		t.Fatalf("the stored pool is %d bytes (%v): the test needs one that fits in %d", len(b), err, ipam.MaxObjectBytes)
	}
	exclude := func(k int) *v1alpha1.IPPool {
		p := old.DeepCopy()
		p.Spec.IPv6Config.Pool.Exclude = nil
		// Excluded as one range would need a range syntax: the pool's end
		// moves below the allocations instead, which drops them the same way.
		if k == n {
			p.Spec.IPv6Config.Pool.End = "fd00:60::ffff"
		}
		for i := range k {
			if k < n {
				p.Spec.IPv6Config.Pool.Exclude = append(p.Spec.IPv6Config.Pool.Exclude, v1alpha1.IPv6Address(addr(i)))
			}
		}
		return p
	}
	big := exclude(n)
	if size, err := controller.RebuiltObjectBytes(old, big, time.Now()); err != nil || size <= ipam.MaxObjectBytes {
		t.Fatalf("rebuilt pool after dropping %d IPv6 allocations: %d bytes (%v), want over %d: make the test's pool bigger", n, size, err, ipam.MaxObjectBytes)
	}
	es, err := ValidateIPPool(context.Background(), Objects{}, Options{}, admissionv1.Update, big, old)
	want := fmt.Sprintf("%d allocated addresses", n)
	if err != nil || !strings.Contains(es.Error(), ipv6Path+".pool") || !strings.Contains(es.Error(), want) {
		t.Fatalf("dropping %d allocated IPv6 addresses of a paused dual-stack pool: got %v %v, want a refusal on %s.pool naming %q", n, es, err, ipv6Path, want)
	}
	if es, err := ValidateIPPool(context.Background(), Objects{}, Options{}, admissionv1.Update, exclude(20), old); err != nil || len(es) > 0 {
		t.Fatalf("excluding 20 allocated IPv6 addresses of a paused pool refused: %v %v", es, err)
	}
}
