package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// link is a server and a client network namespace joined by a veth pair:
// srvIf in srvNS, cliIf in cliNS. Nothing of it is in the host namespace,
// so DHCP traffic never leaves the pair.
type link struct {
	srvNS, cliNS string
	srvIf, cliIf string
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randomID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newLink creates the namespaces and the veth pair and removes them (and
// every process still running in them) when the test ends, pass or fail.
func newLink(t *testing.T) *link {
	t.Helper()
	id := randomID()
	l := &link{srvNS: "vmdhcp-e2e-" + id + "-s", cliNS: "vmdhcp-e2e-" + id + "-c", srvIf: "vs" + id, cliIf: "vc" + id}
	t.Cleanup(func() {
		for _, ns := range []string{l.srvNS, l.cliNS} {
			killNetnsPIDs(ns)
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
		// dhcpcd keeps its lease on the host; it is ours to remove.
		_ = os.Remove("/var/lib/dhcpcd/" + l.cliIf + ".lease")
	})
	run(t, "ip", "netns", "add", l.srvNS)
	run(t, "ip", "netns", "add", l.cliNS)
	run(t, "ip", "link", "add", l.srvIf, "netns", l.srvNS, "type", "veth", "peer", "name", l.cliIf, "netns", l.cliNS)
	run(t, "ip", "-n", l.srvNS, "link", "set", "lo", "up")
	run(t, "ip", "-n", l.cliNS, "link", "set", "lo", "up")
	run(t, "ip", "-n", l.cliNS, "link", "set", l.cliIf, "up")
	return l
}

// killNetnsPIDs kills the processes left in ns: only processes this test
// started can be there, as the namespace is the test's own.
func killNetnsPIDs(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// setClientMAC changes the client's hardware address and drops its
// addresses, so the next DHCP client starts clean.
func (l *link) setClientMAC(t *testing.T, mac string) {
	t.Helper()
	run(t, "ip", "-n", l.cliNS, "link", "set", l.cliIf, "down")
	run(t, "ip", "-n", l.cliNS, "link", "set", l.cliIf, "address", mac)
	run(t, "ip", "-n", l.cliNS, "addr", "flush", "dev", l.cliIf)
	run(t, "ip", "-n", l.cliNS, "link", "set", l.cliIf, "up")
}

// inNetns runs fn on an OS thread switched into the named namespace.
// Sockets fn creates stay in that namespace. The thread is switched back
// afterwards; if that fails it stays locked, so Go discards it instead of
// reusing it in the wrong namespace.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		defer func() {
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// proxyAPIServer makes the host's loopback API server reachable at the
// same address on the loopback of ns: a process in another network
// namespace cannot reach the host's 127.0.0.1. The listener lives in ns,
// the dials to the API server happen here in the host namespace. The
// returned func closes the proxy and every connection through it (the API
// server shuts down promptly only once its watches are gone).
func proxyAPIServer(t *testing.T, ns, hostPort string) (closeAll func()) {
	t.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() (err error) { ln, err = net.Listen("tcp", hostPort); return err }); err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	closeAll = func() {
		mu.Lock()
		if !closed {
			closed = true
			ln.Close()
			for c := range conns {
				c.Close()
			}
		}
		mu.Unlock()
		wg.Wait()
	}
	t.Cleanup(closeAll)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.DialTimeout("tcp", hostPort, 2*time.Second)
				if err != nil || !track(up) {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return closeAll
}

// dialInNetns is a DialContext for HTTP clients that reach servers inside ns.
func dialInNetns(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(ns, func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
