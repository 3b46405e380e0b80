package reliability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vm-dhcp/vm-dhcp/test/e2e/localcluster"
)

// ip runs the ip command.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// delNetns kills what still runs in the namespace, then removes it.
func delNetns(name string) {
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	_ = ip("netns", "del", name)
}

// inNetns runs fn inside the named network namespace (the local cluster's helper).
func inNetns(name string, fn func() error) error { return localcluster.InNetns(name, fn) }

// forwardFromNetns listens on addr inside namespace ns and pipes every
// connection to the same addr in the test's namespace: how a process in the
// namespace reaches the API server on the host's loopback. Closing the
// listener stops it.
func forwardFromNetns(ns, addr string) (net.Listener, error) {
	var l net.Listener
	if err := inNetns(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, ns, err)
	}
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			go func() {
				defer in.Close()
				out, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { _, _ = io.Copy(out, in); _ = out.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(in, out)
			}()
		}
	}()
	return l, nil
}

// dialerIn dials TCP from inside namespace ns (for the agent's /metrics).
func dialerIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(ns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
