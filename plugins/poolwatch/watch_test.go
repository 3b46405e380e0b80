package poolwatch

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/internal/testenv"
)

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leaseOf(w *Watch, m string) netip.Addr {
	hw, _ := net.ParseMAC(m)
	a, _ := w.Current().Lease(hw)
	return a
}

// TestWatchFollowsThePool runs the watch against a real kube-apiserver:
// allocations written to the status are served within a second, released
// ones stop being served, every change reaches the snapshot, and a deleted
// pool serves nothing.
func TestWatchFollowsThePool(t *testing.T) {
	_, cfg, c := testenv.Start(t)
	ctx := context.Background()

	// A second pool in the same namespace must not leak into the watch.
	other := testPool(nil)
	other.Name = "other"
	other.Spec.NetworkName = "default/net2"
	ipp := testPool(nil)
	ipp.Spec.NetworkName = "default/net1"
	for _, p := range []*v1alpha1.IPPool{ipp, other} {
		if err := c.Create(ctx, p); err != nil {
			t.Fatalf("create %s: %v", p.Name, err)
		}
	}

	// The snapshot folder is removed after the watch stops, with retries:
	// Stop only cancels, and a snapshot write of the last change (the
	// deleted pool) may still be in flight. t.TempDir would remove it before
	// Stop runs (cleanups run last-in first-out) and race with that write.
	dir, err := os.MkdirTemp("", "poolwatch-test-")
	if err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry(testr.New(t))
	t.Cleanup(func() {
		reg.Stop() // before env.Stop: an open watch delays the API server's shutdown
		for i := 0; i < 50; i++ {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	reg.restConfig = func(string) (*rest.Config, error) { return cfg, nil }
	w, err := reg.Watch("default", "example", "")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := reg.Watch("default", "example", ""); again != w {
		t.Fatal("second Watch of the same pool started another watch")
	}
	snap := filepath.Join(dir, "snapshot.json")
	if err := w.UseSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "watch ready", func() bool { return reg.Ready() && w.Current() != nil && !w.Current().FromSnapshot })

	setAllocated := func(p *v1alpha1.IPPool, alloc map[string]string) {
		t.Helper()
		if err := c.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			t.Fatal(err)
		}
		p.Status.IPv4 = &v1alpha1.IPv4Status{Allocated: alloc, Used: len(alloc)}
		if err := c.Status().Update(ctx, p); err != nil {
			t.Fatalf("update status of %s: %v", p.Name, err)
		}
	}
	setAllocated(other, map[string]string{"192.168.100.50": "02:00:00:00:00:50"})
	start := time.Now()
	setAllocated(ipp, map[string]string{"192.168.100.10": "02:00:00:00:00:10"})
	eventually(t, time.Second, "new allocation served within a second", func() bool {
		return leaseOf(w, "02:00:00:00:00:10") == netip.MustParseAddr("192.168.100.10")
	})
	t.Logf("allocation served %s after the status write", time.Since(start))
	if leaseOf(w, "02:00:00:00:00:50").IsValid() {
		t.Fatal("allocation of another pool is served")
	}
	eventually(t, time.Second, "snapshot has the allocation", func() bool {
		p, _, err := ReadSnapshot(snap, "default", "example")
		return err == nil && len(p.Leases) == 1
	})

	setAllocated(ipp, map[string]string{"192.168.100.11": "02:00:00:00:00:11"})
	eventually(t, time.Second, "released allocation no longer served", func() bool {
		return !leaseOf(w, "02:00:00:00:00:10").IsValid() && leaseOf(w, "02:00:00:00:00:11").IsValid()
	})

	if err := c.Delete(ctx, ipp); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "deleted pool serves nothing", func() bool { return len(w.Current().Leases) == 0 })
	eventually(t, time.Second, "snapshot of a deleted pool is empty", func() bool {
		p, _, err := ReadSnapshot(snap, "default", "example")
		return err == nil && len(p.Leases) == 0
	})
}

// TestSnapshotServesWhenAPIServerIsUnreachable starts a watch against a
// closed loopback port: the snapshot is served at once and the watch is
// ready.
func TestSnapshotServesWhenAPIServerIsUnreachable(t *testing.T) {
	snap := filepath.Join(t.TempDir(), "snapshot.json")
	p, err := FromIPPool(testPool(map[string]string{"192.168.100.10": "02:00:00:00:00:10"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSnapshot(snap, p, time.Now()); err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry(logr.Discard())
	reg.restConfig = func(string) (*rest.Config, error) { return &rest.Config{Host: "https://127.0.0.1:1"}, nil }
	w, err := reg.Watch("default", "example", "")
	if err != nil {
		t.Fatal(err)
	}
	if reg.Ready() {
		t.Fatal("ready before anything was loaded")
	}
	if err := w.UseSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if !reg.Ready() || leaseOf(w, "02:00:00:00:00:10") != netip.MustParseAddr("192.168.100.10") || !w.Current().FromSnapshot {
		t.Fatalf("snapshot not served: ready %v pool %+v", reg.Ready(), w.Current())
	}
	// A missing snapshot is not an error, and a corrupt one is not served.
	reg2 := NewRegistry(logr.Discard())
	reg2.restConfig = reg.restConfig
	w2, _ := reg2.Watch("default", "example", "")
	if err := w2.UseSnapshot(filepath.Join(t.TempDir(), "none.json")); err != nil || w2.Current() != nil {
		t.Fatalf("missing snapshot: %v, %+v", err, w2.Current())
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte("garbage"), 0o600)
	reg3 := NewRegistry(logr.Discard())
	reg3.restConfig = reg.restConfig
	w3, _ := reg3.Watch("default", "example", "")
	if err := w3.UseSnapshot(bad); err != nil || w3.Current() != nil || reg3.Ready() {
		t.Fatalf("corrupt snapshot served: %v, %+v", err, w3.Current())
	}
}
