package reliability

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/test/invariants"
)

// TestS7Wire runs the wire scenarios of issue 12: 56 real udhcpc guests
// (44 VMs with one NIC, 6 with two) hold their addresses, renewing every
// few seconds, while the workload churns; every guest's configured address
// is sampled all along (see wire_check_test.go for what counts as a
// violation).
func TestS7Wire(t *testing.T) {
	needRootAndTools(t, "ip", "udhcpc")
	cp := startControlPlane(t, nil)
	t.Run("S7A-vm-churn", func(t *testing.T) {
		vmChurn(t, cp, wireScenario{id: "s7a", family: wireIPv4, vms: wireVMs, dual: wireDual, ops: 120, maxTime: 120 * time.Second,
			title: "56 udhcpc guests renewing while VMs are deleted and recreated with the same MAC, NICs removed and re-added, MACs changed"})
	})
	t.Run("S7B-pools-and-kills", func(t *testing.T) {
		poolsAndKills(t, cp, wireScenario{id: "s7b", family: wireIPv4, vms: wireVMs, dual: wireDual, ops: 12, maxTime: 150 * time.Second,
			title: "56 udhcpc guests renewing while the pool is paused, edited and unpaused and the controller and the agent are SIGKILLed, during VM churn"})
	})
}

const (
	wireVMs  = 50 // VMNetCfgs
	wireDual = 6  // of which with two NICs: 56 guests
)

// wireScenario is one wire scenario: its report, its network and guests,
// and how much churn (operations, or fault rounds) in how long at most.
type wireScenario struct {
	id, title string
	family    wireFamily
	vms, dual int
	ops       int
	maxTime   time.Duration
}

// churn counts the operations of a scenario by kind.
type churn struct {
	mu     sync.Mutex
	counts map[string]int
	errs   []string
}

func (c *churn) done(kind string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int{}
	}
	if err != nil {
		c.errs = append(c.errs, fmt.Sprintf("%s: %v", kind, err))
		return
	}
	c.counts[kind]++
}

func (c *churn) count(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[kind]
}

func (c *churn) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var kinds []string
	total := 0
	for k, n := range c.counts {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
		total += n
	}
	sort.Strings(kinds)
	return fmt.Sprintf("%d (%s)", total, strings.Join(kinds, ", "))
}

// vmChurn (S7A, S7C): VMs deleted and recreated with the same MAC, NICs
// removed and re-added, MACs changed, sc.ops operations from 4 workers,
// while the guests keep renewing.
func vmChurn(t *testing.T, cp *controlPlane, sc wireScenario) {
	r := newResult(sc.id, sc.title)
	report(t, r)
	e := newWireEnv(t, cp, sc.id, sc.family, sc.vms, sc.dual)
	run := e.observe()
	var c churn
	var n atomic.Int64
	deadline := time.Now().Add(sc.maxTime)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(deadline) && n.Add(1) <= int64(sc.ops) {
				e.vmOp(&c)
				time.Sleep(time.Duration(200+e.intn(600)) * time.Millisecond)
			}
		})
	}
	wg.Wait()
	run.finish(t, r, &c)
}

// poolsAndKills (S7B, S7D): the pool paused, its excludes edited (taking
// addresses guests hold) and unpaused; the controller SIGKILLed; the agent
// SIGKILLed; one after the other (sc.ops rounds at most), while 2 workers
// keep churning VMs.
func poolsAndKills(t *testing.T, cp *controlPlane, sc wireScenario) {
	const faultTimeout = 90 * time.Second
	faults, maxTime := sc.ops, sc.maxTime
	r := newResult(sc.id, sc.title)
	report(t, r)
	e := newWireEnv(t, cp, sc.id, sc.family, sc.vms, sc.dual)
	run := e.observe()
	var c churn
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(500+e.intn(1500)) * time.Millisecond):
				}
				e.vmOp(&c)
			}
		})
	}
	// The faults take turns, kills first, so that the first round (one
	// SIGKILL of the controller, one of the agent, one pause/edit/unpause)
	// always runs whatever the load; later rounds run while time is left.
	// Each fault is bounded on its own (faultTimeout), not by the total.
	kinds := []string{"controller SIGKILLed", "agent SIGKILLed", "pool paused, edited, unpaused"}
	deadline := time.Now().Add(maxTime)
	for i := 0; i < faults && (i < len(kinds) || time.Now().Before(deadline)); i++ {
		kind := kinds[i%len(kinds)]
		ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
		switch kind {
		case kinds[0]:
			e.killController()
			c.done(kind, nil)
		case kinds[1]:
			c.done(kind, e.killAgent())
		case kinds[2]:
			c.done(kind, e.pauseEditUnpause(ctx))
		}
		cancel()
		time.Sleep(time.Duration(4000+e.intn(4000)) * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// Every run must include each fault: a run that did not is no proof.
	for _, k := range kinds {
		if n := c.count(k); n == 0 {
			t.Errorf("fault %q never completed in this run (churn: %s)", k, c.String())
		}
	}
	run.finish(t, r, &c)
}

// vmOp runs one random churn operation on a random VM.
func (e *wireEnv) vmOp(c *churn) {
	vm := e.vms[e.intn(len(e.vms))]
	vm.mu.Lock()
	defer vm.mu.Unlock()
	switch k := e.intn(10); {
	case k < 4:
		c.done("VM deleted and recreated with the same MAC", e.recreate(vm))
	case k < 7 && len(vm.guests) > 1:
		c.done("NIC removed and re-added", e.nicOut(vm))
	default:
		c.done("MAC changed (guest rebooted with it)", e.changeMAC(vm.guests[e.intn(len(vm.guests))]))
	}
}

// recreate deletes vm's VMNetCfg and creates it again with the same MACs
// as soon as the API server takes it (its finalizer may still be running),
// or after up to 2 s.
func (e *wireEnv) recreate(vm *wireVM) error {
	ctx := context.Background()
	// A delete or create retried after a transient error may have been
	// done by the first attempt: NotFound and AlreadyExists then mean done.
	if err := retryTransient(ctx, "delete "+vm.name, func() error {
		return e.cp.client.Delete(ctx, e.vmNetCfg(vm))
	}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s: %w", vm.name, err)
	}
	if e.intn(2) == 0 {
		time.Sleep(time.Duration(e.intn(2000)) * time.Millisecond)
	}
	return eventually(ctx, 60*time.Second, 20*time.Millisecond, func() error {
		retried := false
		err := retryTransient(ctx, "create "+vm.name, func() error {
			err := e.cp.client.Create(ctx, e.vmNetCfg(vm))
			if retried && apierrors.IsAlreadyExists(err) && e.createdAgain(ctx, vm) {
				return nil
			}
			retried = isTransient(err)
			return err
		})
		if err != nil {
			return fmt.Errorf("recreate %s: %w", vm.name, err)
		}
		return nil
	})
}

// createdAgain reports whether vm's VMNetCfg exists and is not being
// deleted: after a create that timed out, AlreadyExists may also come from
// the old object whose finalizer still runs, which is not done.
func (e *wireEnv) createdAgain(ctx context.Context, vm *wireVM) bool {
	var v v1alpha1.VirtualMachineNetworkConfig
	err := e.cp.client.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: vm.name}, &v)
	return err == nil && v.DeletionTimestamp == nil
}

// setNICs rewrites the NICs of vm's VMNetCfg.
func (e *wireEnv) setNICs(vm *wireVM, macs []string) error {
	ctx := context.Background()
	return retryTransient(ctx, "set NICs of "+vm.name, func() error {
		return e.setNICsOnce(ctx, vm, macs)
	})
}

func (e *wireEnv) setNICsOnce(ctx context.Context, vm *wireVM, macs []string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var v v1alpha1.VirtualMachineNetworkConfig
		if err := e.cp.client.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: vm.name}, &v); err != nil {
			return fmt.Errorf("get %s: %w", vm.name, err)
		}
		v.Spec.NetworkConfigs = nil
		for _, m := range macs {
			v.Spec.NetworkConfigs = append(v.Spec.NetworkConfigs, v1alpha1.NetworkConfig{NetworkName: e.network, MACAddress: m})
		}
		return e.cp.client.Update(ctx, &v)
	})
}

// nicOut removes vm's second NIC from its VMNetCfg and adds it back 0.5 to
// 4 s later; the guest of that NIC keeps running.
func (e *wireEnv) nicOut(vm *wireVM) error {
	first, second := vm.guests[0].MAC(), vm.guests[1].MAC()
	if err := e.setNICs(vm, []string{first}); err != nil {
		return fmt.Errorf("remove NIC of %s: %w", vm.name, err)
	}
	time.Sleep(time.Duration(500+e.intn(3500)) * time.Millisecond)
	if err := e.setNICs(vm, []string{first, second}); err != nil {
		return fmt.Errorf("re-add NIC of %s: %w", vm.name, err)
	}
	return nil
}

// changeMAC gives guest g's NIC a new MAC in the VMNetCfg; the guest keeps
// running with the old MAC for 0 to 4 s (as a VM until its restart), then
// reboots with the new one.
func (e *wireEnv) changeMAC(g *guest) error {
	mac := e.newMAC()
	var macs []string
	for _, o := range g.vm.guests {
		if o == g {
			macs = append(macs, mac)
		} else {
			macs = append(macs, o.MAC())
		}
	}
	if err := e.setNICs(g.vm, macs); err != nil {
		return fmt.Errorf("change MAC of %s: %w", g.vm.name, err)
	}
	time.Sleep(time.Duration(e.intn(4000)) * time.Millisecond)
	return e.rebootGuest(g, mac)
}

// pauseEditUnpause pauses the pool, sets its excludes to two addresses
// guests hold now (replacing the previous ones, which become free again)
// and unpauses it, about a second between steps.
func (e *wireEnv) pauseEditUnpause(ctx context.Context) error {
	update := func(mutate func(*v1alpha1.IPPool)) error {
		return retryTransient(ctx, "update the pool", func() error {
			return retry.RetryOnConflict(retry.DefaultRetry, func() error {
				var p v1alpha1.IPPool
				if err := e.cp.client.Get(ctx, e.pool, &p); err != nil {
					return err
				}
				mutate(&p)
				return e.cp.client.Update(ctx, &p)
			})
		})
	}
	if err := update(func(p *v1alpha1.IPPool) { p.Spec.Paused = ptr.To(true) }); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	time.Sleep(time.Second)
	var owners map[string]string
	if err := retryTransient(ctx, "read the pool", func() (err error) {
		owners, _, err = e.poolOwners(ctx)
		return err
	}); err != nil {
		return err
	}
	var taken []string
	for ip := range owners {
		taken = append(taken, ip)
	}
	sort.Strings(taken)
	var exclude []string
	for range 2 {
		if len(taken) > 0 {
			i := e.intn(len(taken))
			exclude = append(exclude, taken[i])
			taken = append(taken[:i], taken[i+1:]...)
		}
	}
	if err := update(func(p *v1alpha1.IPPool) {
		if e.family.v6() {
			p.Spec.IPv6Config.Pool.Exclude = nil
			for _, a := range exclude {
				p.Spec.IPv6Config.Pool.Exclude = append(p.Spec.IPv6Config.Pool.Exclude, v1alpha1.IPv6Address(a))
			}
			return
		}
		p.Spec.IPv4Config.Pool.Exclude = nil
		for _, a := range exclude {
			p.Spec.IPv4Config.Pool.Exclude = append(p.Spec.IPv4Config.Pool.Exclude, v1alpha1.IPv4Address(a))
		}
	}); err != nil {
		return fmt.Errorf("edit excludes: %w", err)
	}
	time.Sleep(time.Second)
	if err := update(func(p *v1alpha1.IPPool) { p.Spec.Paused = nil }); err != nil {
		return fmt.Errorf("unpause: %w", err)
	}
	return nil
}

// wireRun is the observation of one scenario: the pool, the wire, the
// VMNetCfgs, and the renewals asked of the guests.
type wireRun struct {
	e       *wireEnv
	start   time.Time
	pool    *poolTimeline
	stopP   func()
	wire    *wireSampler
	api     *sampler
	nudges  func() int
	nudged  int
	stopped bool
}

func (e *wireEnv) observe() *wireRun {
	w := &wireRun{e: e, start: time.Now()}
	w.pool, w.stopP = e.startPoolTimeline()
	w.wire = e.startWireSampler(w.pool, 100*time.Millisecond)
	w.api = startSampler(e.cp.client, e.ns, 500*time.Millisecond)
	w.nudges = e.startNudger()
	return w
}

// finish waits for the controller and the guests to settle, stops the
// observation, checks every invariant and records the figures.
func (w *wireRun) finish(t *testing.T, r *Result, c *churn) {
	ctx := context.Background()
	e := w.e
	churnFor := time.Since(w.start)
	settle := time.Now()
	convErr := eventually(ctx, 120*time.Second, 500*time.Millisecond, func() error {
		e.procMu.Lock()
		ok, err := e.controller.exited()
		e.procMu.Unlock()
		if ok {
			return fmt.Errorf("controller exited: %v", err)
		}
		return e.settled(ctx)
	})
	apiSettled := time.Since(settle)
	// The guests catch up by renewing (NAK, then DISCOVER) or rebinding:
	// within two renewal periods and a lease at most (IPv4).
	var bad []string
	guests := len(e.guests)
	checked := false
	wireErr := eventually(ctx, e.family.settleWire(), time.Second, func() error {
		_, b, err := e.wireState(ctx)
		if err != nil {
			return err // the last complete reading stands
		}
		bad, checked = b, true
		if len(bad) > 0 {
			return fmt.Errorf("%d guests do not hold their MAC's address", len(bad))
		}
		return nil
	})
	wireSettled := time.Since(settle)
	w.nudged = w.nudges()
	w.wire.stop()
	w.api.stop()
	w.stopP()
	st, aerr := e.analyzeGuests(w.pool)
	if aerr != nil {
		t.Fatal(aerr)
	}
	violations, cerr := invariants.Check(ctx, e.cp.client)
	if cerr != nil {
		t.Fatal(cerr)
	}
	var own []invariants.Violation
	for _, v := range violations {
		if strings.HasPrefix(v.Object, e.ns+"/") {
			own = append(own, v)
		}
	}
	w.wire.mu.Lock()
	dupSamples, dupEvents, staleMax, staleWho, readErrs := w.wire.dupSamples, w.wire.dupEvents, w.wire.staleMax, w.wire.staleWho, w.wire.readErrs
	dadSamples, dadEvents, overstays := w.wire.dadSamples, w.wire.dadEvents, w.wire.overstays
	w.wire.mu.Unlock()
	endLost := 0
	if wireErr != nil {
		endLost = len(bad)
		if !checked {
			endLost = guests // never read: nothing is proved
		}
	}

	v6 := e.family.v6()
	of := fmt.Sprintf("%d / %d (%d with two NICs)", guests, len(e.vms), e.dual)
	if v6 {
		of += ", " + e.family.String()
	}
	r.Add(fmt.Sprintf("guests (real %s, one network namespace each) / VMs", e.family.client()), of)
	if v6 {
		r.Add("pool preferred / valid lifetime (dhclient renews at T1, half the preferred)", fmt.Sprintf("%d s / %d s", wirePreferred, wireValid))
	} else {
		r.Add("pool lease time / renewal asked of each guest (SIGUSR1)", fmt.Sprintf("%d s / every %s-%s", wireLease, wireNudgeMin, wireNudgeMax))
	}
	r.Add("churn operations (over "+churnFor.Round(time.Second).String()+")", c.String())
	r.Add("controller / agent processes started", fmt.Sprintf("%d / %d", e.ctrlStarts, e.agentStarts))
	r.Add("wire samples (every guest's eth0 read) / unreadable", fmt.Sprintf("%d / %d", w.wire.samples.Load(), readErrs))
	r.Add("pool reads / VMNetCfg list samples", fmt.Sprintf("%d / %d", len(w.pool.reads), w.api.samples.Load()))
	if v6 {
		r.Add("renewals and rebinds answered / bound (SOLICIT) / addresses dropped on lifetime 0 / expired unrenewed", fmt.Sprintf("%d / %d / %d / %d", st.renewed, st.bound, st.naks, st.expired))
	} else {
		r.Add("renewals asked / ACKed renewals / bound (DORA) / NAKs / deconfigs", fmt.Sprintf("%d / %d / %d / %d / %d", w.nudged, st.renewed, st.bound, st.naks, st.deconfigs))
		r.Add("guests that lost their address and were NAKed / dropped it by timeout, not NAKed", fmt.Sprintf("%d / %d", st.naked, len(st.notNAKed)))
		r.Add("renewals of an address still owned that went unanswered (dropped by timeout)", st.timedOutOwned)
	}
	r.Add("longest time a guest held an address its MAC no longer had", fmt.Sprintf("%s (%s)", staleMax.Round(100*time.Millisecond), staleWho))
	r.Add("settled after the churn: API / every guest on its address", fmt.Sprintf("%s / %s", apiSettled.Round(100*time.Millisecond), wireSettled.Round(100*time.Millisecond)))
	r.Add("VIOLATION two guests with one address: samples / distinct (address, guests)", fmt.Sprintf("%d / %d", dupSamples, len(dupEvents)))
	if v6 {
		r.Add("VIOLATION address dadfailed on a guest (DAD saw another guest using it): samples / distinct", fmt.Sprintf("%d / %d", dadSamples, len(dadEvents)))
	} else {
		r.Add("VIOLATION lost address not NAKed at its renewal", len(st.notNAKed))
	}
	r.Add(fmt.Sprintf("VIOLATION address held without its MAC having it beyond the %s grace", e.family.grace()), len(overstays))
	r.Add("VIOLATION ACK for an address the MAC no longer had", len(st.ackedLost))
	r.Add("VIOLATION address Allocated to two MACs in VMNetCfgs (API samples)", w.api.doubled.Load())
	r.Add("VIOLATION end state: guests not holding their MAC's address", endLost)
	r.Add("VIOLATION end state: test/invariants (lost, leaked, doubled)", len(own))
	total := dupSamples + dadSamples + len(overstays) + len(st.notNAKed) + len(st.ackedLost) + int(w.api.doubled.Load()) + endLost + len(own)
	r.Add("violations", total)

	note := func(kind string, lines []string) {
		for i, l := range lines {
			if i == 5 {
				r.Notes = append(r.Notes, fmt.Sprintf("- %s: %d more", kind, len(lines)-5))
				break
			}
			r.Notes = append(r.Notes, "- "+kind+": "+l)
		}
	}
	note("two guests, one address", dupEvents)
	note("dadfailed", dadEvents)
	note("overstay", overstays)
	note("not NAKed", st.notNAKed)
	note("ACK of a lost address", st.ackedLost)
	if wireErr != nil {
		note("end state", bad)
	}
	var ownS []string
	for _, v := range own {
		ownS = append(ownS, v.String())
	}
	note("invariants", ownS)

	if convErr != nil {
		t.Errorf("the controller did not converge after the churn: %v", convErr)
		r.Failure = "no convergence: " + convErr.Error()
	}
	if len(c.errs) > 0 {
		t.Errorf("churn operations failed: %v", c.errs)
	}
	if dupSamples > 0 {
		t.Errorf("two guests held one address at once in %d samples: %v", dupSamples, dupEvents)
	}
	if dadSamples > 0 {
		t.Errorf("duplicate address detection failed on guests in %d samples: %v", dadSamples, dadEvents)
	}
	if len(overstays) > 0 {
		t.Errorf("guests held addresses their MAC no longer had beyond %s: %v", e.family.grace(), overstays)
	}
	if len(st.notNAKed) > 0 {
		t.Errorf("guests that lost their address were not NAKed: %v", st.notNAKed)
	}
	if len(st.ackedLost) > 0 {
		t.Errorf("addresses a MAC no longer had were ACKed: %v", st.ackedLost)
	}
	if d := w.api.doubled.Load(); d > 0 {
		t.Errorf("an address was Allocated to two MACs in VMNetCfgs: %v", w.api.first)
	}
	if wireErr != nil {
		t.Errorf("end state on the wire: %v: %v", wireErr, bad)
	}
	for _, v := range own {
		t.Errorf("violation: %s", v)
	}
	if t.Failed() && r.Failure == "" {
		r.Failure = fmt.Sprintf("%d violations (see the figures and notes)", total)
	}
}

// settled reports nil once every VMNetCfg of the scenario is Allocated
// (none being deleted) and the pool counts one address per guest.
func (e *wireEnv) settled(ctx context.Context) error {
	var list v1alpha1.VirtualMachineNetworkConfigList
	if err := e.cp.client.List(ctx, &list, client.InNamespace(e.ns)); err != nil {
		return fmt.Errorf("list vmnetcfgs: %w", err)
	}
	var p v1alpha1.IPPool
	if err := e.cp.client.Get(ctx, e.pool, &p); err != nil {
		return fmt.Errorf("get ippool: %w", err)
	}
	notReady := 0
	for _, v := range list.Items {
		if v.DeletionTimestamp != nil || !v1alpha1.IsConditionTrue(v.Status.Conditions, v1alpha1.Allocated) {
			notReady++
		}
	}
	// Each half the pool has counts one address per guest.
	used, used6 := len(e.guests), len(e.guests)
	if e.family != wireOnlyIPv6 {
		used = -1
		if p.Status.IPv4 != nil {
			used = p.Status.IPv4.Used
		}
	}
	if e.family.v6() {
		used6 = -1
		if p.Status.IPv6 != nil {
			used6 = p.Status.IPv6.Used
		}
	}
	if len(list.Items) != len(e.vms) || notReady != 0 || used != len(e.guests) || used6 != len(e.guests) {
		return fmt.Errorf("%d VMNetCfgs (%d not Allocated or being deleted), pool used %d (IPv4) / %d (IPv6); want %d Allocated, used %d",
			len(list.Items), notReady, used, used6, len(e.vms), len(e.guests))
	}
	return nil
}
