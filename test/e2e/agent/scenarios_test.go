package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
)

// want is the lease every client must see for an address of poolFor.
func want(ip string, leaseTime int) lease {
	return lease{IP: ip, Mask: "255.255.255.0", Router: "198.18.0.1", DNS: "198.18.0.53 198.18.0.54",
		Domain: "example.internal", Search: "example.internal corp.example", NTP: "198.18.0.123 127.0.0.1",
		LeaseTime: strconv.Itoa(leaseTime), MTU: "1450", ClasslessRoutes: "10.10.0.0/16 198.18.0.254 0.0.0.0/0 198.18.0.1"}
}

func lastLease(t *testing.T, dir string) lease {
	t.Helper()
	evs := events(t, dir)
	if len(evs) == 0 {
		t.Fatalf("client reported no lease")
	}
	return evs[len(evs)-1]
}

func checkLease(t *testing.T, got, want lease) {
	t.Helper()
	got.Reason = ""
	if got != want {
		t.Errorf("lease\n got %+v\nwant %+v", got, want)
	}
}

// stopDHClient stops a daemonized dhclient by its pid file.
func stopDHClient(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "dhclient.pid"))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func TestEveryClientGetsItsAddressAndEveryOption(t *testing.T) {
	cp := startControlPlane(t)
	l := newLink(t)
	proxyAPIServer(t, l.srvNS, cp.hostPort)
	const leaseTime = 600
	macs := map[string]string{"udhcpc": "02:00:00:00:00:21", "dhclient": "02:00:00:00:00:22", "dhcpcd": "02:00:00:00:00:23"}
	ips := map[string]string{"udhcpc": "198.18.0.21", "dhclient": "198.18.0.22", "dhcpcd": "198.18.0.23"}
	alloc := map[string]string{"198.18.0.12": v1alpha1.AllocatedExcluded, "198.18.0.2": v1alpha1.AllocatedReserved}
	for c, ip := range ips {
		alloc[ip] = macs[c]
	}
	cp.createPool(t, poolFor("clients", leaseTime, alloc))
	a := startAgent(t, l, writeAgentConfig(t, l, "clients", cp.kubeconfig, filepath.Join(t.TempDir(), "snapshot.json")))
	a.waitReady(t)
	if got := a.metric(t, `vmdhcp_agent_leases{ippool="default/clients"}`); got != "3" {
		t.Errorf("vmdhcp_agent_leases = %q, want 3", got)
	}

	for _, c := range []dhcpClient{udhcpc, dhclient, dhcpcd} {
		t.Run(c.name, func(t *testing.T) {
			l.setClientMAC(t, macs[c.name])
			dir := t.TempDir()
			defer stopDHClient(dir)
			if err := c.start(t, l, dir); err != nil {
				t.Fatal(err)
			}
			checkLease(t, lastLease(t, dir), want(ips[c.name], leaseTime))
		})
	}

	t.Run("unknown MAC gets nothing", func(t *testing.T) {
		before, _ := strconv.Atoi(a.metric(t, "vmdhcp_agent_unknown_mac_total"))
		l.setClientMAC(t, "02:00:00:00:00:99")
		dir := t.TempDir()
		if err := udhcpc.start(t, l, dir); err == nil {
			t.Fatalf("udhcpc got a lease for an unknown MAC: %+v", lastLease(t, dir))
		}
		if evs := events(t, dir); len(evs) != 0 {
			t.Fatalf("unknown MAC was told %+v", evs)
		}
		after, _ := strconv.Atoi(a.metric(t, "vmdhcp_agent_unknown_mac_total"))
		if after <= before {
			t.Fatalf("unknown MAC requests not counted: %d -> %d", before, after)
		}
	})
}

func TestDNSChangeReachesClientOnRenewal(t *testing.T) {
	cp := startControlPlane(t)
	l := newLink(t)
	proxyAPIServer(t, l.srvNS, cp.hostPort)
	const leaseTime = 6 // dhclient renews after ~3s
	ipp := poolFor("renew", leaseTime, map[string]string{"198.18.0.40": "02:00:00:00:00:40"})
	cp.createPool(t, ipp)
	a := startAgent(t, l, writeAgentConfig(t, l, "renew", cp.kubeconfig, filepath.Join(t.TempDir(), "snapshot.json")))
	a.waitReady(t)

	l.setClientMAC(t, "02:00:00:00:00:40")
	dir := t.TempDir()
	defer stopDHClient(dir)
	if err := dhclient.start(t, l, dir); err != nil {
		t.Fatal(err)
	}
	checkLease(t, lastLease(t, dir), want("198.18.0.40", leaseTime))

	ctx := context.Background()
	if err := cp.c.Get(ctx, client.ObjectKeyFromObject(ipp), ipp); err != nil {
		t.Fatal(err)
	}
	ipp.Spec.IPv4Config.DNS = []string{"198.18.0.99"}
	if err := cp.c.Update(ctx, ipp); err != nil {
		t.Fatalf("change DNS: %v", err)
	}
	changed := len(events(t, dir))
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := events(t, dir)[changed:]
		if i := indexOf(evs, func(e lease) bool { return e.DNS == "198.18.0.99" }); i >= 0 {
			if evs[i].Reason != "RENEW" || evs[i].IP != "198.18.0.40" {
				t.Fatalf("new DNS arrived with %+v, want a RENEW of 198.18.0.40", evs[i])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal carried the new DNS within 20s; events since the change: %+v", evs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func indexOf(evs []lease, f func(lease) bool) int {
	for i, e := range evs {
		if f(e) {
			return i
		}
	}
	return -1
}

// TestServesThroughAPIServerOutage stops the real kube-apiserver: a bound
// client keeps renewing, and an agent restarted during the outage serves
// every allocation (and every option) from its snapshot.
func TestServesThroughAPIServerOutage(t *testing.T) {
	cp := startControlPlane(t)
	l := newLink(t)
	closeProxy := proxyAPIServer(t, l.srvNS, cp.hostPort)
	const leaseTime = 6
	cp.createPool(t, poolFor("outage", leaseTime, map[string]string{
		"198.18.0.31": "02:00:00:00:00:31", "198.18.0.32": "02:00:00:00:00:32"}))
	snapshot := filepath.Join(t.TempDir(), "snapshot.json")
	conf := writeAgentConfig(t, l, "outage", cp.kubeconfig, snapshot)
	a := startAgent(t, l, conf)
	a.waitReady(t)

	l.setClientMAC(t, "02:00:00:00:00:31")
	dir := t.TempDir()
	defer stopDHClient(dir)
	if err := dhclient.start(t, l, dir); err != nil {
		t.Fatal(err)
	}
	checkLease(t, lastLease(t, dir), want("198.18.0.31", leaseTime))

	// Cut the agent's connections first: kube-apiserver waits for open
	// watches before it exits.
	closeProxy()
	if err := cp.env.ControlPlane.APIServer.Stop(); err != nil {
		t.Fatalf("stop kube-apiserver: %v", err)
	}
	if _, _, err := a.get("/healthz"); err != nil {
		t.Fatalf("agent health endpoint: %v", err)
	}
	t.Log("kube-apiserver stopped")
	since := len(events(t, dir))
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := events(t, dir)[since:]
		renewals := 0
		for _, e := range evs {
			if e.Reason == "RENEW" && e.IP == "198.18.0.31" {
				renewals++
			}
		}
		if renewals >= 2 {
			checkLease(t, evs[len(evs)-1], want("198.18.0.31", leaseTime))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client did not renew twice during the outage: %+v", evs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopDHClient(dir)

	// Restart the agent while the API server is still down.
	a.stop()
	if _, err := os.Stat(snapshot); err != nil {
		t.Fatalf("no snapshot after the agent ran: %v", err)
	}
	a2 := startAgent(t, l, conf)
	a2.waitReady(t)
	if got := a2.metric(t, `vmdhcp_agent_leases{ippool="default/outage"}`); got != "2" {
		t.Errorf("restarted agent serves %q leases, want 2", got)
	}
	l.setClientMAC(t, "02:00:00:00:00:32")
	dir2 := t.TempDir()
	if err := udhcpc.start(t, l, dir2); err != nil {
		t.Fatalf("no lease from the restarted agent during the outage: %v", err)
	}
	checkLease(t, lastLease(t, dir2), want("198.18.0.32", leaseTime))
}
