package controller

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

var (
	benchN       = flag.Int("bench-vmnetcfgs", 1000, "VMNetCfgs created per iteration of BenchmarkAllocationThroughput")
	benchWorkers = flag.Int("bench-workers", 0, "VMNetCfg workers of the controller in BenchmarkAllocationThroughput (0: the default)")
)

// BenchmarkAllocationThroughput creates N VMNetCfgs on one pool (16 client
// goroutines, as fast as the apiserver takes them) against one controller
// and measures the time until the last one is Allocated (polled every
// 200 ms) and the number of IPPool status writes
// (counted by the
// store, which is the only writer of IPPool status).
func BenchmarkAllocationThroughput(b *testing.B) {
	n := *benchN
	for i := 0; b.Loop(); i++ {
		ns := newNamespace(b)
		createNAD(b, ns, "net", nil)
		pool := bigPool(ns, "pool", ns+"/net", "10.20.255.250")
		create(b, pool)
		ctl := startController(b, managerOpts{workers: *benchWorkers})
		waitPoolCondition(b, client.ObjectKeyFromObject(pool), v1alpha1.CacheReady, corev1.ConditionTrue)
		writes0 := ctl.store.StatusWrites()

		start := time.Now()
		createErr := make(chan error, 1)
		var createdIn time.Duration
		go func() {
			err := createVMNetCfgsErr(ns, ns+"/net", n, 16, nil)
			createdIn = time.Since(start)
			createErr <- err
		}()
		// Polled every 200 ms: a watch of VMNetCfgs is closed by the
		// client under this load, and a list every 200 ms is a small
		// fraction of the traffic.
		deadline := time.Now().Add(benchTimeout())
		for {
			select {
			case err := <-createErr:
				if err != nil {
					b.Fatal(err)
				}
				createErr = nil
			default:
			}
			if got, pending := allocations(b, ns); len(got) == n && pending == 0 {
				break
			} else if time.Now().After(deadline) {
				b.Fatalf("only %d of %d allocated in time", len(got), n)
			}
			time.Sleep(200 * time.Millisecond)
		}
		elapsed := time.Since(start)
		writes := ctl.store.StatusWrites() - writes0
		if createErr != nil {
			if err := <-createErr; err != nil {
				b.Fatal(err)
			}
		}
		ctl.stop()
		b.ReportMetric(elapsed.Seconds(), "s-to-all-allocated")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "allocations/s")
		b.ReportMetric(createdIn.Seconds(), "s-to-all-created")
		b.ReportMetric(float64(writes), "ippool-status-writes")
		b.ReportMetric(float64(n)/float64(max(writes, 1)), "allocations/write")
		b.Logf("N=%d: all created after %s, all Allocated after %s, %d IPPool status writes", n, createdIn.Round(time.Millisecond), elapsed.Round(time.Millisecond), writes)
	}
}

// BenchmarkIPPoolSize10k allocates 10,000 addresses on a /16 pool through
// the controller's store (the same batched status writes the VMNetCfg
// reconciler uses, without creating 10,000 objects) and reports the size
// of the IPPool as the apiserver returns it in JSON, which is how custom
// resources are stored in etcd.
func BenchmarkIPPoolSize10k(b *testing.B) {
	const n = 10000
	for b.Loop() {
		ns := newNamespace(b)
		createNAD(b, ns, "net", nil)
		pool := bigPool(ns, "pool", ns+"/net", "10.20.255.250")
		create(b, pool)
		pk := client.ObjectKeyFromObject(pool)
		ctl := startController(b, managerOpts{})
		waitPoolCondition(b, pk, v1alpha1.CacheReady, corev1.ConditionTrue)
		start := time.Now()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 256)
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				var g ipam.Grant
				if err := ctl.store.DoAllocate(context.Background(), pk, AllocateOp(macOf(i), "", "", &g)); err != nil {
					b.Errorf("allocate %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		raw, err := rawPoolJSON(pk.Namespace, pk.Name)
		if err != nil {
			b.Fatal(err)
		}
		p := getPool(b, pk)
		if p.Status.IPv4.Used != n {
			b.Fatalf("used = %d", p.Status.IPv4.Used)
		}
		var parts struct {
			Metadata struct {
				ManagedFields json.RawMessage `json:"managedFields"`
			} `json:"metadata"`
			Status struct {
				IPv4 struct {
					Allocated json.RawMessage `json:"allocated"`
				} `json:"ipv4"`
			} `json:"status"`
		}
		if err := json.Unmarshal(raw, &parts); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(parts.Status.IPv4.Allocated)), "allocated-bytes")
		b.ReportMetric(float64(len(parts.Metadata.ManagedFields)), "managedfields-bytes")
		ctl.stop()
		b.ReportMetric(float64(len(raw)), "ippool-bytes")
		b.ReportMetric(float64(len(raw))/float64(1536*1024)*100, "%-of-1.5MiB")
		b.ReportMetric(float64(ctl.store.StatusWrites()), "ippool-status-writes")
		b.Logf("10,000 allocations on a /16: IPPool is %d bytes of JSON (%.1f%% of 1.5 MiB), written in %s with %d status writes",
			len(raw), float64(len(raw))/float64(1536*1024)*100, elapsed.Round(time.Millisecond), ctl.store.StatusWrites())
	}
}

func rawPoolJSON(ns, name string) ([]byte, error) {
	rc, err := restClientFor()
	if err != nil {
		return nil, err
	}
	body, err := rc.Get().AbsPath(fmt.Sprintf("/apis/network.harvesterhci.io/v1alpha1/namespaces/%s/ippools/%s", ns, name)).
		SetHeader("Accept", "application/json").DoRaw(context.Background())
	if err != nil {
		return nil, fmt.Errorf("get raw ippool: %w", err)
	}
	return body, nil
}

func benchTimeout() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("BENCH_TIMEOUT")); err == nil {
		return d
	}
	return 5 * time.Minute
}
