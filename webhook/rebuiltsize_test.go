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
// no allocations (before, the check returned early then), its status close
// to etcd's limit with IPv6 allocations, paused, and 1,024 of them excluded
// (the most spec.ipv6Config.pool.exclude holds). Each dropped allocation
// becomes a quarantine entry, larger than the allocation (a dual-stack pool
// records no IPv6 owners), so the rebuilt status would not fit: refused on
// spec.ipv6Config.pool with the number dropped. A small exclude passes.
func TestIPv6ExcludeThatOverflowsRebuiltStatusRefused(t *testing.T) {
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
	st := &v1alpha1.IPv6Status{Allocated: map[string]string{}}
	old.Status.IPv6 = st
	// Fill the status to within 30 kB of the limit: excluding 1,024
	// allocations grows the rebuilt pool by more than that.
	n := 0
	for {
		for range 1000 {
			st.Allocated[addr(n)] = fmt.Sprintf("02:00:00:%02x:%02x:%02x", n>>16&0xff, n>>8&0xff, n&0xff)
			n++
		}
		st.Used = n
		b, err := json.Marshal(old)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > ipam.MaxObjectBytes-30000 {
			if len(b) > ipam.MaxObjectBytes {
				t.Fatalf("the stored pool is %d bytes, over %d", len(b), ipam.MaxObjectBytes)
			}
			break
		}
	}
	exclude := func(k int) *v1alpha1.IPPool {
		p := old.DeepCopy()
		for i := range k {
			p.Spec.IPv6Config.Pool.Exclude = append(p.Spec.IPv6Config.Pool.Exclude, v1alpha1.IPv6Address(addr(i)))
		}
		return p
	}
	const k = 1024
	big := exclude(k)
	if size, err := controller.RebuiltObjectBytes(old, big, time.Now()); err != nil || size <= ipam.MaxObjectBytes {
		t.Fatalf("rebuilt pool after excluding %d of %d IPv6 allocations: %d bytes (%v), want over %d", k, n, size, err, ipam.MaxObjectBytes)
	}
	es, err := ValidateIPPool(context.Background(), Objects{}, Options{}, admissionv1.Update, big, old)
	want := fmt.Sprintf("%d allocated addresses", k)
	if err != nil || !strings.Contains(es.Error(), ipv6Path+".pool") || !strings.Contains(es.Error(), want) {
		t.Fatalf("excluding %d allocated IPv6 addresses of a paused dual-stack pool near the limit: got %v %v, want a refusal on %s.pool naming %q", k, es, err, ipv6Path, want)
	}
	if es, err := ValidateIPPool(context.Background(), Objects{}, Options{}, admissionv1.Update, exclude(20), old); err != nil || len(es) > 0 {
		t.Fatalf("excluding 20 allocated IPv6 addresses of a paused pool refused: %v %v", es, err)
	}
}
