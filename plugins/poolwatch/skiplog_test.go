package poolwatch

import (
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// TestSkippedEntriesLoggedOnce (issue 14): a pool with entries the agent
// cannot use (as Harvester admits them: a DNS host name) brings a new view
// with every status write, i.e. every allocation; the skipped entries are
// logged when they change, not once per view.
func TestSkippedEntriesLoggedOnce(t *testing.T) {
	logs := &logLines{}
	w := newWatch("default", "example", logs.logger())
	pool := func(rv int, dns ...string) *v1alpha1.IPPool {
		return &v1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "example", ResourceVersion: strconv.Itoa(rv)},
			Spec: v1alpha1.IPPoolSpec{NetworkName: "default/example", IPv4Config: v1alpha1.IPv4Config{
				CIDR: "192.168.100.0/24", ServerIP: "192.168.100.2", DNS: dns,
				Pool: v1alpha1.Pool{Start: "192.168.100.10", End: "192.168.100.20"}}},
		}
	}
	for rv := range 5 {
		w.fromAPI(pool(rv, "1.1.1.1", "dns.google"))
	}
	if n := strings.Count(logs.all(), "pool served with entries skipped"); n != 1 {
		t.Errorf("skipped entries logged %d times over 5 views, want once:\n%s", n, logs.all())
	}
	if got := w.Current().DNS; len(got) != 1 || got[0].String() != "1.1.1.1" {
		t.Errorf("DNS served %v, want 1.1.1.1", got)
	}
	w.fromAPI(pool(6, "1.1.1.1"))
	w.fromAPI(pool(7, "1.1.1.1"))
	if n := strings.Count(logs.all(), "pool served with no entry skipped"); n != 1 {
		t.Errorf("recovery logged %d times, want once:\n%s", n, logs.all())
	}
}
