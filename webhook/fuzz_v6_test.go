package webhook

import (
	"context"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// FuzzValidateIPPoolV6: whatever the IPv6 half holds, validation and
// defaulting never panic, refusals name a field, and a pool the webhook
// accepts is one the IPv6 IPAM builds and allocates from.
func FuzzValidateIPPoolV6(f *testing.F) {
	f.Add("fd00:100::/64", "fd00:100::2", "fd00:100::100", "fd00:100::ffff", "fd00:100::150", "fd00:100::53", "pool.ntp.org", 1800, 3600, "fd00:100::120")
	f.Add("fd00::/126", "", "", "", "", "", "", 0, 0, "")
	f.Add("fe80::/64", "fe80::", "fe80::1", "fe80::", "::ffff:1.2.3.4", "ff02::1", "10.0.0.1", -1, 1<<40, "x")
	f.Add("::/0", "::", "::1", "::", "", "::", "", 60, 59, "::")
	f.Add("2001:db8::/127", "2001:db8::1", "2001:db8::1", "2001:db8::1", "2001:db8::1", "2001:db8::1", "", 100, 100, "2001:db8::1")
	lk := Objects{NADs: []string{"default/example"}}
	f.Fuzz(func(t *testing.T, cidr, server, start, end, exclude, dns, ntp string, pref, valid int, allocated string) {
		pool := &v1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Namespace: "fuzz", Name: "pool"},
			Spec: v1alpha1.IPPoolSpec{NetworkName: "default/example", IPv6Config: &v1alpha1.IPv6Config{
				CIDR: cidr, ServerIP: v1alpha1.IPv6Address(server),
				Pool:              v1alpha1.IPv6Pool{Start: v1alpha1.IPv6Address(start), End: v1alpha1.IPv6Address(end)},
				PreferredLifetime: &pref, ValidLifetime: &valid,
			}},
		}
		c := pool.Spec.IPv6Config
		if exclude != "" {
			c.Pool.Exclude = []v1alpha1.IPv6Address{v1alpha1.IPv6Address(exclude)}
		}
		if dns != "" {
			c.DNS = []v1alpha1.IPv6Address{v1alpha1.IPv6Address(dns)}
		}
		if ntp != "" {
			c.NTP = []string{ntp}
		}
		if allocated != "" {
			pool.Status.IPv6 = &v1alpha1.IPv6Status{Allocated: map[string]string{allocated: "02:00:00:00:00:01"}}
		}
		DefaultIPPoolV6(pool)
		es, err := ValidateIPPool(context.Background(), lk, Options{}, admissionv1.Create, pool, nil)
		if err != nil {
			t.Fatalf("Objects lookup cannot fail, got %v", err)
		}
		checkRefusals(t, es)
		if len(ValidateIPPoolSpec(pool, Options{})) > 0 {
			return
		}
		am, err := ipam.New6(ipamConfig6(c))
		if err != nil {
			t.Fatalf("validator accepted an IPv6 half the IPAM refuses: %v (%+v)", err, c)
		}
		if ip, err := am.Allocate("02:00:00:00:00:02"); err == nil {
			if !am.Contains(ip) || ip == string(c.ServerIP) {
				t.Fatalf("allocated %s: outside the range or the server IP (%+v)", ip, c)
			}
		}
		upd := pool.DeepCopy()
		upd.Spec.IPv6Config.Pool.Exclude = append(upd.Spec.IPv6Config.Pool.Exclude, v1alpha1.IPv6Address(allocated))
		es, _ = ValidateIPPool(context.Background(), lk, Options{}, admissionv1.Update, upd, pool)
		checkRefusals(t, es)
	})
}
