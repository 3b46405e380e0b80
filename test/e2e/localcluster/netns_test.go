package localcluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
)

// The apiserver proxy: a listener opened inside a namespace forwards to a
// server on the host's loopback, and is not reachable from the host.
func TestProxyIntoNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	ns := fmt.Sprintf("vmdt%d-proxy", os.Getpid())
	if err := addNetns(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = delNetns(ns) })

	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }() // echo
		}
	}()
	port := host.Addr().(*net.TCPAddr).Port
	// Same address inside the namespace as on the host: a kubeconfig works unchanged.
	l, err := listenInNetns(ns, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go forward(l, host.Addr().String())

	conn, err := dialInNetns(context.Background(), ns, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the proxy: %q, %v", buf, err)
	}
	// A listener opened in the namespace is not reachable from the host.
	l2, err := listenInNetns(ns, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if c, err := net.Dial("tcp", l2.Addr().String()); err == nil {
		c.Close()
		t.Fatalf("listener in %s reachable from the host namespace", ns)
	}
}
