// Command vmboot boots the test VM of package vm on a tap in a bridge and
// prints its DHCP events as the guest reports them on its serial console,
// for hack/demo.sh and for trying the VM by hand:
//
//	go run ./test/e2e/vm/vmboot --mac 52:54:00:12:34:56 --bridge br0 [--netns NS] [--renew 10s] [--until renew]
//
// It runs until --until's event (after the first lease for renew; bound6 is
// the first IPv6 address, from a dual-stack pool) or until interrupted, then stops the VM and deletes the tap it created. The whole
// console goes to --console (default: a file in the temporary folder).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vm-dhcp/vm-dhcp/test/e2e/vm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vmboot:", err)
		os.Exit(1)
	}
}

func run() error {
	var o vm.Options
	var until string
	var timeout time.Duration
	flag.StringVar(&o.MAC, "mac", "", "MAC of the VM's NIC (required)")
	flag.StringVar(&o.Bridge, "bridge", "", "bridge to plug a new tap into")
	flag.StringVar(&o.Tap, "tap", "", "tap name (an existing tap when --bridge is empty)")
	flag.StringVar(&o.Netns, "netns", "", "network namespace of the bridge or tap (default: this one)")
	flag.DurationVar(&o.RenewEvery, "renew", 0, "renew the lease on this period (default: at half the lease time)")
	flag.StringVar(&o.ConsoleLog, "console", filepath.Join(os.TempDir(), fmt.Sprintf("vmdhcp-vm-%d.console", os.Getpid())), "file for the whole serial console")
	all := flag.Bool("all", false, "print every console line (kernel and udhcpc too), not only the DHCP events")
	flag.StringVar(&until, "until", "", "exit after this event: bound, renew or bound6 (default: run until interrupted)")
	flag.DurationVar(&timeout, "timeout", 0, "give up after this long (default: no limit)")
	flag.Parse()
	if until != "" && until != "bound" && until != "renew" && until != "bound6" {
		return fmt.Errorf("--until must be bound, renew or bound6, not %q", until)
	}

	if *all {
		o.Console = prefixWriter{os.Stdout}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	v, err := vm.Start(ctx, o)
	if err != nil {
		return err
	}
	defer v.Stop()
	fmt.Printf("vmboot: VM %s on tap %s, console in %s\n", o.MAC, v.Tap(), o.ConsoleLog)

	seen := 0
	bound := 0
	for {
		ev, err := v.WaitEvent(ctx, vm.After(seen))
		if err != nil {
			if ctx.Err() != nil && until == "" && timeout == 0 {
				return nil // interrupted: the normal end
			}
			return err
		}
		seen = ev.Seq
		if !*all {
			fmt.Printf("vm console [%6.2fs] %s\n", ev.GuestUptime.Seconds(), ev.Line[strings.Index(ev.Line, "VMDHCP "):])
		}
		switch {
		case ev.Kind == vm.Error:
			return fmt.Errorf("guest init failed: %s", ev.Line)
		case ev.Kind == vm.Bound && bound == 0:
			bound = ev.Seq
			fmt.Printf("vmboot: lease after %.1fs (guest booted to its NIC in %.1fs)\n", ev.SinceStart.Seconds(), bootUptime(v).Seconds())
			if until == "bound" {
				return nil
			}
		case ev.Kind == vm.Renew && bound > 0 && until == "renew":
			return nil
		case ev.Kind == vm.Bound6 && until == "bound6":
			return nil
		}
	}
}

func bootUptime(v *vm.VM) time.Duration {
	for _, e := range v.Events() {
		if e.Kind == vm.Boot {
			return e.GuestUptime
		}
	}
	return 0
}

// prefixWriter marks console lines apart from vmboot's own.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := fmt.Fprintf(p.w, "vm console | %s", b); err != nil {
		return 0, err
	}
	return len(b), nil
}
