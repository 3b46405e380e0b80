package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// etcdLimit is etcd's default --max-request-bytes, the object size limit.
const etcdLimit = 1572864

func u32addr(v uint32) string {
	return fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&0xff, v>>8&0xff, v&0xff)
}

// fillStatus records n allocations of the range starting at first, each
// with an owner token, and writes the status.
func fillStatus(t testing.TB, key types.NamespacedName, first uint32, n int) (*v1alpha1.IPPool, error) {
	t.Helper()
	p := getPool(t, key)
	st := &v1alpha1.IPv4Status{Allocated: map[string]string{}, Owners: map[string]string{}}
	for i := range n {
		ip := u32addr(first + uint32(i))
		st.Allocated[ip] = macOf(i)
		st.Owners[ip] = fmt.Sprintf("owner-%016d-xxxx", i) // 22 characters, as a UID token
	}
	st.Used = n
	p.Status.IPv4 = st
	err := k8s.Status().Update(context.Background(), p)
	return p, err
}

func tooLarge(err error) bool {
	return err != nil && strings.Contains(err.Error(), "too large")
}

func objectSize(t testing.TB, key types.NamespacedName) int {
	t.Helper()
	b, err := json.Marshal(getPool(t, key))
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

// The bound the webhook applies (ipam.MaxStatusAddresses) is safe: the
// status of a full pool of that size, with an owner for every address,
// is accepted by the apiserver and etcd, and the controller can write it.
func TestFullPoolStatusFits(t *testing.T) {
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	// 192.168.128.0-192.168.191.255: mostly 15-character addresses.
	pool := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pool"},
		Spec: v1alpha1.IPPoolSpec{NetworkName: ns + "/net", IPv4Config: v1alpha1.IPv4Config{
			ServerIP: "192.168.0.2", CIDR: "192.168.0.0/16", Router: "192.168.0.1",
			Pool: v1alpha1.Pool{Start: "192.168.128.0", End: "192.168.191.255"},
		}},
	}
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	eventually(t, 20*time.Second, "write a full status", func() error {
		_, err := fillStatus(t, pk, 192<<24|168<<16|128<<8, ipam.MaxStatusAddresses)
		return err
	})
	t.Logf("full pool of %d addresses: object is %d bytes, etcd limit %d", ipam.MaxStatusAddresses, objectSize(t, pk), etcdLimit)
	// The controller rebuilds from it and writes it back (a release adds a
	// quarantine entry).
	if err := ctl.store.Do(context.Background(), pk, ReleaseOp(macOf(5), "owner-0000000000000005-xxxx")); err != nil {
		t.Fatalf("controller write of a full pool's status: %v", err)
	}
	p := getPool(t, pk)
	if p.Status.IPv4.Used != ipam.MaxStatusAddresses-1 || len(p.Status.IPv4.Released) != 1 {
		t.Fatalf("after the release: used %d, released %v", p.Status.IPv4.Used, p.Status.IPv4.Released)
	}
}

// Issue 12 item 10: when a status write is too large, the pool says so
// (condition and event), the allocations of the batch are refused and the
// releases of the same batch are still written.
func TestStatusTooLargeKeepsReleases(t *testing.T) {
	ctx := context.Background()
	ctl := startController(t, managerOpts{sweep: time.Hour})
	ns := newNamespace(t)
	createNAD(t, ns, "net", nil)
	pool := bigPool(ns, "pool", ns+"/net", "10.20.255.250")
	create(t, pool)
	pk := client.ObjectKeyFromObject(pool)
	waitPoolCondition(t, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
	first := uint32(10<<24 | 20<<16 | 10)

	// Fill the status to just under the limit: estimate from the bytes of
	// an entry, then step up until a write is refused as too large.
	empty := objectSize(t, pk)
	const probe = 10000
	eventually(t, 20*time.Second, "probe", func() error { _, err := fillStatus(t, pk, first, probe); return err })
	per := float64(objectSize(t, pk)-empty) / probe
	n := int(float64(etcdLimit-empty)/per) - 2000
	for {
		_, err := fillStatus(t, pk, first, n)
		if err == nil {
			break
		}
		if !tooLarge(err) {
			t.Fatal(err)
		}
		n -= 2000
	}
	for {
		_, err := fillStatus(t, pk, first, n+500)
		if err != nil {
			if !tooLarge(err) {
				t.Fatal(err)
			}
			break
		}
		n += 500
	}
	if _, err := fillStatus(t, pk, first, n); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d allocations fit, %d do not: object %d bytes", n, n+500, objectSize(t, pk))

	// One batch: 3000 allocations (more than the 500 that did not fit) and one release.
	store := ctl.store
	hold := make(chan struct{})
	var held bool
	go func() {
		_ = store.Do(ctx, pk, func(*v1alpha1.IPPool, *ipam.Pool) error {
			if !held {
				held = true
				<-hold
			}
			return nil
		})
	}()
	var ps *poolState
	eventually(t, 20*time.Second, "writer held", func() error {
		store.mu.Lock()
		ps = store.pools[pk]
		store.mu.Unlock()
		if ps == nil || !held {
			return errors.New("not yet")
		}
		return nil
	})
	allocErr, relErr := make(chan error, 1), make(chan error, 1)
	go func() {
		allocErr <- store.DoAllocate(ctx, pk, func(_ *v1alpha1.IPPool, am *ipam.Pool) error {
			for i := range 3000 {
				if _, err := am.AllocateFor(fmt.Sprintf("02:99:00:00:%02x:%02x", i>>8, i&0xff), fmt.Sprintf("new-%018d", i)); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	go func() { relErr <- store.Do(ctx, pk, ReleaseOp(macOf(7), fmt.Sprintf("owner-%016d-xxxx", 7))) }()
	eventually(t, 20*time.Second, "both queued", func() error {
		if len(ps.ops) != 2 {
			return fmt.Errorf("%d queued", len(ps.ops))
		}
		return nil
	})
	close(hold)
	if err := <-relErr; err != nil {
		t.Fatalf("release in the batch of a too-large allocation: %v", err)
	}
	if err := <-allocErr; !errors.Is(err, ErrStatusTooLarge) {
		t.Fatalf("allocation = %v, want ErrStatusTooLarge", err)
	}
	p := getPool(t, pk)
	if _, still := p.Status.IPv4.Allocated[u32addr(first+7)]; still || p.Status.IPv4.Used != n-1 {
		t.Fatalf("release not written: used %d", p.Status.IPv4.Used)
	}
	if c := condition(p.Status.Conditions, "StatusTooLarge"); c != "True/StatusTooLarge" {
		t.Errorf("StatusTooLarge condition = %s", c)
	}
	eventually(t, 10*time.Second, "pool event", func() error { return hasEvent(ns, "pool", "StatusTooLarge", "") })

}
