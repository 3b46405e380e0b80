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
	if err := vm.Available(""); err != nil {
		if skipReason != "" {
			t.Skip(skipReason)
		}
		t.Fatalf("%v (make test installs both)", err)
	}
	cp := startControlPlane(t)
	l := newLink(t)
	proxyAPIServer(t, l.srvNS, cp.hostPort)
	bridge := "vmbr" + l.cliIf[2:]
	run(t, "ip", "-n", l.cliNS, "link", "add", bridge, "type", "bridge")
	run(t, "ip", "-n", l.cliNS, "link", "set", l.cliIf, "master", bridge)
	run(t, "ip", "-n", l.cliNS, "link", "set", bridge, "up")

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
