package localcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps the bind mounts naming namespaces.
const netnsDir = "/var/run/netns"

// ipCmd runs `ip ARGS...` and returns its error with the output, so a failing
// step says what the kernel refused.
func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// addNetns creates a named network namespace with its loopback up.
func addNetns(ctx context.Context, name string) error {
	if err := ipCmd(ctx, "netns", "add", name); err != nil {
		return err
	}
	return ipCmd(ctx, "-n", name, "link", "set", "lo", "up")
}

// delNetns kills what still runs inside a namespace and removes it. A missing
// namespace is not an error: teardown must be safe to repeat.
func delNetns(name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); os.IsNotExist(err) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	return ipCmd(context.Background(), "netns", "del", name)
}

// inNetns runs fn on an OS thread switched into the named namespace. Sockets
// fn opens stay in that namespace after the thread switches back, which is
// how the stand-in listens and dials inside namespaces without a helper
// process. The thread is never handed back to the Go scheduler in a foreign
// namespace: if switching back fails the goroutine exits while still locked,
// and the runtime discards the thread.
func InNetns(name string, fn func() error) error {
	result := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			result <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join(netnsDir, name))
		if err != nil {
			runtime.UnlockOSThread()
			result <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			result <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			result <- fmt.Errorf("leave netns %s: %w", name, err)
			return // still locked: the runtime kills this thread
		}
		runtime.UnlockOSThread()
		result <- fnErr
	}()
	return <-result
}

// dialInNetns opens a TCP connection from inside the named namespace.
func dialInNetns(ctx context.Context, name, addr string) (net.Conn, error) {
	var conn net.Conn
	err := InNetns(name, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		conn = c
		return err
	})
	return conn, err
}

// listenInNetns opens a TCP listener inside the named namespace.
func listenInNetns(name, addr string) (net.Listener, error) {
	var l net.Listener
	err := InNetns(name, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}
