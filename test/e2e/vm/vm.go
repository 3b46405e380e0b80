// Package vm boots a real virtual machine for end-to-end tests: QEMU
// (TCG when there is no /dev/kvm) runs Debian's kernel with a small
// initramfs whose only job is DHCP. The guest's NIC is virtio-net with the
// MAC the caller gives, on a tap device in a bridge, so the VM asks the
// bridge's DHCP server (the agent) exactly as a KubeVirt VM would. The
// guest runs two real clients for as long as it runs: busybox's udhcpc
// (IPv4) and ISC dhclient -6 (DHCPv6, with a DUID-LL of the NIC, which the
// agent matches to the VM's MAC). Their hooks apply every lease to eth0 and
// print one line on the serial console, which this package parses into
// Events:
//
//	VMDHCP boot mac=52:54:00:00:00:01 kernel=6.1.0-57-cloud-amd64 uptime=2.95
//	VMDHCP bound ip=198.18.0.21/24 router=198.18.0.1 dns=198.18.0.53,198.18.0.54 mtu=1450 lease=600 server=198.18.0.2 domain=example.internal uptime=4.10
//	VMDHCP renew ip=... (same keys)
//	VMDHCP nak uptime=... message=...
//	VMDHCP deconfig uptime=...
//	VMDHCP leasefail uptime=...
//	VMDHCP bound6 ip6=fd00:198::41/128 dns6=fd00:198::53 search=example.internal valid=1200 preferred=600 uptime=4.31
//	VMDHCP renew6 ip6=... (same keys), rebind6 ip6=...
//	VMDHCP expire6 uptime=...
//
// The values of bound, renew and the IPv6 events are read back from the
// guest (its addresses and their lifetimes, default route, resolv.conf and
// interface MTU), not echoed from the server's answer. Without a DHCPv6
// server (an IPv4-only pool) dhclient keeps soliciting quietly and no IPv6
// line appears.
//
// Renewal timing, as busybox 1.35 (Debian 12) does it: udhcpc raises a
// lease under 30 s to 30 s and renews at half of it. Under TCG its unicast
// RENEW usually loses a race: udhcpc 1.35 opens its listening socket only
// after sending the request, and the agent's ACK arrives first (the guest
// counts it in Udp NoPorts; later busybox opens the socket first). Two
// seconds later udhcpc rebinds by broadcast, which the agent answers: the
// renew event then comes about T1 + 2 s, which is still a renewal of the
// same lease from the same server. Expect renew events between T1 and the
// lease's end.
//
// The kernel, busybox, dhclient (with its libraries) and modules come from
// hack/vm-artifacts.sh (Debian packages, unpacked into
// $HOME/.cache/vm-dhcp/vm/current). QEMU gets no
// network but the tap: no user-mode networking, nothing reaches the host.
//
// Typical use, with the agent serving a bridge br0 in namespace ns:
//
//	v, err := vm.Start(ctx, vm.Options{MAC: mac, Netns: ns, Bridge: "br0", ConsoleLog: path})
//	defer v.Stop()
//	lease, err := v.WaitLease(ctx)                  // first bound
//	lease6, err := v.WaitLease6(ctx)                // first bound6 (dual-stack pools)
//	ev, err := v.WaitEvent(ctx, vm.After(lease.Seq, vm.Renew))
package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options describe one VM.
type Options struct {
	// MAC of the guest's NIC, e.g. the MAC of a VirtualMachine's interface.
	MAC string
	// Netns is the named network namespace (ip netns) QEMU runs in and the
	// tap lives in; "" is the caller's own namespace.
	Netns string
	// Bridge, when set, is the Linux bridge in Netns that Start plugs a new
	// tap into; Stop deletes that tap. When empty, Tap must name an
	// existing tap device in Netns, which is left alone.
	Bridge string
	// Tap is the tap device's name; with Bridge set, "" picks a unique one.
	Tap string
	// RenewEvery makes the guest renew its lease on this period (udhcpc
	// gets SIGUSR1). 0 leaves renewals to the lease's own T1 (half the
	// lease time), as a normal guest does.
	RenewEvery time.Duration
	// ConsoleLog, when set, is a file that receives the whole serial
	// console (kernel, init and DHCP lines) as the VM prints it.
	ConsoleLog string
	// Console, when set, also receives every console line (with its
	// newline) as it arrives, e.g. to show the boot in a demo.
	Console io.Writer
	// Artifacts is the folder of hack/vm-artifacts.sh; "" is DefaultArtifacts().
	Artifacts string
	// MemoryMiB is the guest's memory; 0 is 256.
	MemoryMiB int
	// QEMU is the emulator binary; "" is qemu-system-x86_64 from PATH.
	QEMU string
}

// DefaultArtifacts is $VMDHCP_VM_ARTIFACTS, or the current folder that
// hack/vm-artifacts.sh prepares in $HOME/.cache/vm-dhcp/vm.
func DefaultArtifacts() string {
	if d := os.Getenv("VMDHCP_VM_ARTIFACTS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "vm-dhcp", "vm", "current")
}

// Available says why a VM cannot boot here (no artifacts, no QEMU, no
// /dev/net/tun), or nil when it can.
func Available(artifacts string) error {
	if artifacts == "" {
		artifacts = DefaultArtifacts()
	}
	if _, err := os.Stat(filepath.Join(artifacts, "ready")); err != nil {
		return fmt.Errorf("no VM artifacts in %s: run hack/vm-artifacts.sh", artifacts)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return fmt.Errorf("qemu-system-x86_64 missing: run hack/deps.sh (Debian qemu-system-x86)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("no /dev/net/tun: tap devices unavailable")
	}
	return nil
}

// VM is a running QEMU guest.
type VM struct {
	opts    Options
	dir     string
	tap     string
	ownTap  bool
	cmd     *exec.Cmd
	started time.Time

	mu      sync.Mutex
	events  []Event
	changed chan struct{} // closed and replaced on every new event and on exit
	exited  bool
	exitErr error
	done    chan struct{}

	stopOnce sync.Once
}

// Start boots the VM and returns once QEMU runs; the guest boots in the
// background (several seconds under TCG). ctx bounds only the start-up.
// The caller must call Stop.
func Start(ctx context.Context, o Options) (*VM, error) {
	if o.MAC == "" {
		return nil, errors.New("vm: Options.MAC is required")
	}
	if o.Bridge == "" && o.Tap == "" {
		return nil, errors.New("vm: set Options.Bridge (a tap is created in it) or Options.Tap (an existing tap)")
	}
	if o.Artifacts == "" {
		o.Artifacts = DefaultArtifacts()
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 256
	}
	if o.QEMU == "" {
		o.QEMU = "qemu-system-x86_64"
	}
	if err := Available(o.Artifacts); err != nil {
		return nil, err
	}
	v := &VM{opts: o, tap: o.Tap, changed: make(chan struct{}), done: make(chan struct{})}
	dir, err := os.MkdirTemp("", "vmdhcp-vm-")
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	v.dir = dir
	ok := false
	defer func() {
		if !ok {
			v.cleanup()
		}
	}()
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := writeInitramfs(initrd, o.Artifacts); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	if o.Bridge != "" {
		if v.tap == "" {
			v.tap = fmt.Sprintf("vmt%d-%s", os.Getpid()%100000, strings.ReplaceAll(o.MAC, ":", "")[8:])
		}
		if err := v.createTap(ctx); err != nil {
			return nil, err
		}
	}

	// clocksource=hpet: under TCG on a busy host the TSC calibrates wrong
	// and the guest's clock (so its lease timers) ran 3x too fast; the
	// emulated HPET follows the host's clock.
	appendLine := "console=ttyS0 quiet panic=-1 clocksource=hpet"
	if o.RenewEvery > 0 {
		appendLine += fmt.Sprintf(" vmdhcp.renew=%d", max(1, int(o.RenewEvery.Round(time.Second)/time.Second)))
	}
	args := append(accelArgs(),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-m", strconv.Itoa(o.MemoryMiB), "-smp", "1",
		"-kernel", filepath.Join(o.Artifacts, "vmlinuz"), "-initrd", initrd, "-append", appendLine,
		"-serial", "stdio", "-monitor", "none",
		// The tap is the only network: no user-mode (slirp) backend.
		"-netdev", "tap,id=n0,ifname="+v.tap+",script=no,downscript=no",
		// romfile= : the guest boots by -kernel, no iPXE option ROM needed.
		"-device", "virtio-net-pci,netdev=n0,mac="+o.MAC+",romfile=",
	)
	name, args := o.QEMU, args
	if o.Netns != "" {
		// ip netns exec execs QEMU itself: the PID is QEMU's.
		args = append([]string{"netns", "exec", o.Netns, o.QEMU}, args...)
		name = "ip"
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = nil
	// QEMU dies with the test process, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	cmd.Stderr = cmd.Stdout // QEMU's own errors land in the console log too
	var logf *os.File
	if o.ConsoleLog != "" {
		if logf, err = os.OpenFile(o.ConsoleLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return nil, fmt.Errorf("vm: console log: %w", err)
		}
	}
	v.started = time.Now()
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return nil, fmt.Errorf("vm: start %s: %w", o.QEMU, err)
	}
	v.cmd = cmd
	ok = true
	go v.readConsole(stdout, logf)
	return v, nil
}

func (v *VM) createTap(ctx context.Context) error {
	ip := func(args ...string) error {
		if v.opts.Netns != "" {
			args = append([]string{"-n", v.opts.Netns}, args...)
		}
		out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("vm: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := ip("tuntap", "add", "dev", v.tap, "mode", "tap"); err != nil {
		return err
	}
	v.ownTap = true
	if err := ip("link", "set", "dev", v.tap, "master", v.opts.Bridge); err != nil {
		return err
	}
	return ip("link", "set", "dev", v.tap, "up")
}

// readConsole copies the console to the log and turns VMDHCP lines into
// events until QEMU exits.
func (v *VM) readConsole(r io.Reader, logf *os.File) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if logf != nil {
			fmt.Fprintln(logf, line)
		}
		if v.opts.Console != nil {
			fmt.Fprintln(v.opts.Console, line)
		}
		if ev, ok := parseLine(line); ok {
			v.mu.Lock()
			ev.Seq = len(v.events) + 1
			ev.Received = time.Now()
			ev.SinceStart = ev.Received.Sub(v.started)
			v.events = append(v.events, ev)
			close(v.changed)
			v.changed = make(chan struct{})
			v.mu.Unlock()
		}
	}
	err := v.cmd.Wait()
	if logf != nil {
		logf.Close()
	}
	v.mu.Lock()
	v.exited = true
	v.exitErr = err
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
	close(v.done)
}

// Events is a copy of every DHCP event the guest printed so far, oldest
// first.
func (v *VM) Events() []Event {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]Event(nil), v.events...)
}

// WaitEvent returns the first event, from the VM's start on, that match
// accepts; it fails when ctx ends or the VM exits first.
func (v *VM) WaitEvent(ctx context.Context, match func(Event) bool) (Event, error) {
	seen := 0
	for {
		v.mu.Lock()
		evs := v.events[seen:]
		seen = len(v.events)
		exited, exitErr, changed := v.exited, v.exitErr, v.changed
		v.mu.Unlock()
		for _, ev := range evs {
			if match(ev) {
				return ev, nil
			}
		}
		if exited {
			return Event{}, fmt.Errorf("vm exited (%v) before the event; console: %s", exitErr, v.opts.ConsoleLog)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Event{}, fmt.Errorf("wait for VM event: %w", ctx.Err())
		}
	}
}

// WaitLease returns the first lease the guest bound.
func (v *VM) WaitLease(ctx context.Context) (Event, error) {
	return v.WaitEvent(ctx, func(e Event) bool { return e.Kind == Bound })
}

// WaitLease6 returns the first IPv6 address the guest bound (DHCPv6).
func (v *VM) WaitLease6(ctx context.Context) (Event, error) {
	return v.WaitEvent(ctx, func(e Event) bool { return e.Kind == Bound6 })
}

// After matches events of one of the kinds that came after event seq.
func After(seq int, kinds ...Kind) func(Event) bool {
	return func(e Event) bool {
		if e.Seq <= seq {
			return false
		}
		for _, k := range kinds {
			if e.Kind == k {
				return true
			}
		}
		return len(kinds) == 0
	}
}

// Done is closed when QEMU has exited.
func (v *VM) Done() <-chan struct{} { return v.done }

// Tap is the name of the VM's tap device.
func (v *VM) Tap() string { return v.tap }

// Stop powers the VM off (QEMU is killed: the guest holds no state worth
// a clean shutdown) and removes the tap Start created and the initramfs.
func (v *VM) Stop() error {
	var err error
	v.stopOnce.Do(func() {
		if v.cmd != nil && v.cmd.Process != nil {
			_ = v.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-v.done:
			case <-time.After(5 * time.Second):
				_ = v.cmd.Process.Kill()
				<-v.done
			}
		}
		err = v.cleanup()
	})
	return err
}

func (v *VM) cleanup() error {
	var errs []error
	if v.ownTap {
		args := []string{"link", "del", "dev", v.tap}
		if v.opts.Netns != "" {
			args = append([]string{"-n", v.opts.Netns}, args...)
		}
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("vm: delete tap %s: %v: %s", v.tap, err, strings.TrimSpace(string(out))))
		}
		v.ownTap = false
	}
	if v.dir != "" {
		errs = append(errs, os.RemoveAll(v.dir))
	}
	return errors.Join(errs...)
}

// accelArgs are QEMU's accelerators: TCG unless VMDHCP_VM_ACCEL lists
// others, in order of preference ("kvm", or "kvm,tcg" for KVM where it
// opens, TCG elsewhere). Not KVM by default even where /dev/kvm exists: in
// a VM whose hypervisor passes /dev/kvm through without full nested
// support (as on this project's CI machines), KVM opens fine and then stops
// the guest's kernel at its first locked cmpxchg16b ("KVM internal error.
// Suberror: 1 ... emulation failure"); TCG always boots.
func accelArgs() []string {
	list := os.Getenv("VMDHCP_VM_ACCEL")
	if list == "" {
		list = "tcg"
	}
	var args []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			args = append(args, "-accel", a)
		}
	}
	if len(args) == 0 { // a list of nothing ("," or spaces)
		args = []string{"-accel", "tcg"}
	}
	return args
}
