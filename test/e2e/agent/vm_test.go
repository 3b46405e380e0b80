package agent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/test/e2e/vm"
)

// TestRealVMGetsItsLeaseAndRenews boots a real VM (QEMU, Debian's kernel,
// udhcpc in its initramfs) with the MAC of a KubeVirt VirtualMachine's NIC
// on a tap in a bridge, the way a VM sits on a Harvester VM network. The
// agent serves the bridge through a veth, as the agent pod does. What is
// checked is what the guest itself reports on its serial console: the
// address on its eth0, its default route, its resolv.conf and its MTU,
// then a renewal at T1 that keeps the same address.
//
//	srvNS: agent on srvIf (198.18.0.2)  <-veth->  cliNS: cliIf - bridge - tap - QEMU guest
func TestRealVMGetsItsLeaseAndRenews(t *testing.T) {
	needVM(t)
	cp := startControlPlane(t)
	l := newLink(t)
	proxyAPIServer(t, l.srvNS, cp.hostPort)
	bridge := guestBridge(t, l)

	// The guest's MAC is the one its VirtualMachine object declares, as
	// read back from the API server.
	ctx := context.Background()
	vmObj := &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "guest"},
		Spec: kubevirtv1.VirtualMachineSpec{Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{
			Spec: kubevirtv1.VirtualMachineInstanceSpec{
				Domain: kubevirtv1.DomainSpec{Devices: kubevirtv1.Devices{Interfaces: []kubevirtv1.Interface{
					{Name: "nic1", MacAddress: "52:54:00:4d:00:41"},
				}}},
				Networks: []kubevirtv1.Network{{Name: "nic1", NetworkSource: kubevirtv1.NetworkSource{
					Multus: &kubevirtv1.MultusNetwork{NetworkName: "default/guestnet"}}}},
			},
		}},
	}
	if err := cp.c.Create(ctx, vmObj); err != nil {
		t.Fatalf("create VirtualMachine: %v", err)
	}
	if err := cp.c.Get(ctx, client.ObjectKeyFromObject(vmObj), vmObj); err != nil {
		t.Fatal(err)
	}
	mac := vmObj.Spec.Template.Spec.Domain.Devices.Interfaces[0].MacAddress

	// A 30 s lease (udhcpc's minimum): the guest renews at T1, 15 s after
	// it bound, or rebinds 2 s later (see package vm on busybox's race).
	const leaseTime = 30
	cp.createPool(t, poolFor("guestnet", leaseTime, map[string]string{"198.18.0.41": mac}))
	a := startAgent(t, l, writeAgentConfig(t, l, "guestnet", cp.kubeconfig, filepath.Join(t.TempDir(), "snapshot.json")))
	a.waitReady(t)

	v := startGuest(ctx, t, l, bridge, mac)

	// TCG boots in 5-20 s on a busy 2-core machine.
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	bound, err := v.WaitLease(wctx)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := v.WaitEvent(wctx, func(e vm.Event) bool { return e.Kind == vm.Boot })
	t.Logf("guest reached its NIC at guest uptime %s; lease %s after QEMU started: %s",
		boot.GuestUptime.Round(10*time.Millisecond), bound.SinceStart.Round(10*time.Millisecond), bound)
	if boot.MAC != mac {
		t.Errorf("guest NIC has MAC %s, want the VirtualMachine's %s", boot.MAC, mac)
	}
	checkGuest(t, bound)

	renew, err := v.WaitEvent(wctx, vm.After(bound.Seq, vm.Renew, vm.Bound, vm.Nak, vm.Deconfig))
	if err != nil {
		t.Fatal(err)
	}
	if renew.Kind != vm.Renew {
		t.Fatalf("after the first lease the guest saw %s, want a renewal", renew)
	}
	// Host time: the guest's clock is only as good as its emulation.
	if d := renew.Received.Sub(bound.Received); d < leaseTime/2*time.Second-2*time.Second || d > leaseTime*time.Second {
		t.Errorf("renewed %s after binding, want between T1 = %ds and the lease's end", d.Round(time.Millisecond), leaseTime/2)
	}
	checkGuest(t, renew)

	// The pool has no IPv6 half and the agent no server6: the guest's
	// DHCPv6 client keeps soliciting quietly, and IPv4 works as above.
	for _, e := range v.Events() {
		if e.Kind.IPv6() {
			t.Errorf("IPv4-only pool, yet the guest reports %s", e)
		}
	}
}

// TestRealVMGetsBothAddresses is the dual-stack case: the same real VM on
// a pool with an ipv6Config, served by an agent with a server6 section (as
// the controller renders it for such a pool). The guest's dhclient -6,
// with a DUID-LL of its NIC, must get the IPv6 address the pool's
// status.ipv6.allocated holds for the VM's MAC, with the pool's DNS server
// and search domain and its lifetimes, beside the IPv4 lease. Without an
// IPv6 answer from the agent the test fails (no bound6 line within a
// minute of the IPv4 lease).
func TestRealVMGetsBothAddresses(t *testing.T) {
	needVM(t)
	cp := startControlPlane(t)
	l := newLink(t)
	noDAD(t, l)
	proxyAPIServer(t, l.srvNS, cp.hostPort)
	bridge := guestBridge(t, l)

	const mac = "52:54:00:4d:00:46"
	pool := v6Pool("guestnet6", map[string]string{"198.18.0.41": mac},
		map[string]string{"fd00:198::2": v1alpha1.AllocatedReserved, "fd00:198::41": mac})
	leaseTime := 30
	pool.Spec.IPv4Config.LeaseTime = &leaseTime // checkGuest's
	// A search domain of its own, to tell the IPv6 half's from the IPv4
	// domain in the guest's merged resolv.conf.
	pool.Spec.IPv6Config.DomainSearch = []string{"v6.example.internal"}
	cp.createPool(t, pool)
	a := startAgent(t, l, writeAgentConfig6(t, l, "guestnet6", cp.kubeconfig, filepath.Join(t.TempDir(), "snapshot.json")))
	a.waitReady(t)

	ctx := context.Background()
	v := startGuest(ctx, t, l, bridge, mac)
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	bound, err := v.WaitLease(wctx)
	if err != nil {
		t.Fatal(err)
	}
	checkGuest(t, bound)
	wctx6, cancel6 := context.WithTimeout(ctx, time.Minute)
	defer cancel6()
	bound6, err := v.WaitLease6(wctx6)
	if err != nil {
		t.Fatalf("the guest got no IPv6 address: %v", err)
	}
	t.Logf("guest: %s; %s", bound, bound6)

	// What the pool's status holds for the VM's MAC, read back.
	var cur v1alpha1.IPPool
	if err := cp.c.Get(ctx, client.ObjectKeyFromObject(pool), &cur); err != nil {
		t.Fatal(err)
	}
	want6 := ""
	for ip, m := range cur.Status.IPv6.Allocated {
		if m == mac {
			want6 = ip
		}
	}
	if bound6.Addr6.Addr().String() != want6 {
		t.Errorf("guest holds %s, the pool's status.ipv6.allocated has %q for %s", bound6.Addr6, want6, mac)
	}
	if !slices.Equal(bound6.DNS6, []netip.Addr{netip.MustParseAddr("fd00:198::53")}) || !slices.Contains(bound6.Search, "v6.example.internal") {
		t.Errorf("guest's IPv6 DNS %v, search %v; want [fd00:198::53] and v6.example.internal", bound6.DNS6, bound6.Search)
	}
	// Remaining lifetimes as the guest's kernel counts them: the pool's
	// (1200 s valid, 600 s preferred), less the seconds the hook took.
	if d := 1200*time.Second - bound6.ValidLifetime; d < 0 || d > 10*time.Second {
		t.Errorf("guest's valid lifetime %s, want the pool's 1200s", bound6.ValidLifetime)
	}
	if d := 600*time.Second - bound6.PreferredLifetime; d < 0 || d > 10*time.Second {
		t.Errorf("guest's preferred lifetime %s, want the pool's 600s", bound6.PreferredLifetime)
	}
}

// checkGuest compares what the guest holds with poolFor's options.
func checkGuest(t *testing.T, e vm.Event) {
	t.Helper()
	want := vm.Event{
		Addr:      netip.MustParsePrefix("198.18.0.41/24"),
		Router:    netip.MustParseAddr("198.18.0.1"),
		DNS:       []netip.Addr{netip.MustParseAddr("198.18.0.53"), netip.MustParseAddr("198.18.0.54")},
		MTU:       1450,
		LeaseTime: 30 * time.Second,
		ServerID:  netip.MustParseAddr("198.18.0.2"),
		Domain:    "example.internal",
	}
	if e.Addr != want.Addr || e.Router != want.Router || !slices.Equal(e.DNS, want.DNS) || e.MTU != want.MTU ||
		e.LeaseTime != want.LeaseTime || e.ServerID != want.ServerID || e.Domain != want.Domain {
		t.Errorf("guest holds\n %s domain %q\nwant\n %s domain %q\nconsole line: %s", e, e.Domain, want, want.Domain, e.Line)
	}
}

// guestBridge puts the client end of the link into a bridge for the test
// VM's tap, as a VM network's bridge on a node.
func guestBridge(t *testing.T, l *link) string {
	t.Helper()
	bridge := "vmbr" + l.cliIf[2:]
	run(t, "ip", "-n", l.cliNS, "link", "add", bridge, "type", "bridge")
	run(t, "ip", "-n", l.cliNS, "link", "set", l.cliIf, "master", bridge)
	run(t, "ip", "-n", l.cliNS, "link", "set", bridge, "up")
	return bridge
}

// startGuest boots the test VM with mac on bridge; it is stopped when the
// test ends, its console shown if the test failed.
func startGuest(ctx context.Context, t *testing.T, l *link, bridge, mac string) *vm.VM {
	t.Helper()
	console := filepath.Join(t.TempDir(), "console.log")
	v, err := vm.Start(ctx, vm.Options{MAC: mac, Netns: l.cliNS, Bridge: bridge, ConsoleLog: console})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Stop(); err != nil {
			t.Errorf("stop VM: %v", err)
		}
		if t.Failed() {
			out, _ := os.ReadFile(console)
			t.Logf("VM console:\n%s", tail(string(out), 60))
		}
	})
	return v
}

// needVM skips where the package skips (no root), and fails where QEMU or
// the VM's artifacts are missing: make test installs both.
func needVM(t *testing.T) {
	t.Helper()
	if err := vm.Available(""); err != nil {
		if skipReason != "" {
			t.Skip(skipReason)
		}
		t.Fatalf("%v (make test installs both)", err)
	}
}
