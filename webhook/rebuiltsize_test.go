package webhook

import (
	"context"
	"fmt"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
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
