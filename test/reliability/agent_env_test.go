package reliability

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/agentconfig"
)

// The agent scenarios' network: the agent's namespace holds a bridge with
// the server address; every client namespace has one veth into it.
const (
	serverIP      = "10.30.0.2"
	floodIP       = "10.30.0.250"
	poolNS        = "rel"
	leaseSeconds  = 6 // udhcpc renews at half: every 3 s
	agentHealth   = "127.0.0.1:18080"
	udhcpcClients = 3
	probers       = 2
)

// agentEnv is a control plane, the controller, the agent binary serving one
// pool in its own network namespace, real udhcpc clients that keep renewing
// and Go probers that renew on demand.
type agentEnv struct {
	t       *testing.T
	cp      *controlPlane
	dir     string
	prefix  string
	srvNS   string
	floodNS string
	conf    string
	agentMu sync.Mutex
	agent   *process
	starts  int
	clients []*udhcpcClient
	probers []*prober
	macIP   map[string]string
}

func needRootAndTools(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault scenario")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

func newAgentEnv(t *testing.T) *agentEnv {
	ctx := context.Background()
	e := &agentEnv{t: t, dir: t.TempDir(), prefix: fmt.Sprintf("vmrel%d-", os.Getpid()%100000), macIP: map[string]string{}}
	e.srvNS, e.floodNS = e.prefix+"srv", e.prefix+"flood"
	agentBin := agentBinary(t)
	e.cp = startControlPlane(t, nil)
	newControllerSet(t, e.cp).start("controller", false)
	pool := e.cp.network(t, poolNS, v1alpha1.IPv4Config{ServerIP: serverIP, CIDR: "10.30.0.0/24", Router: "10.30.0.1",
		Pool: v1alpha1.Pool{Start: "10.30.0.10", End: "10.30.0.200"}, LeaseTime: ptr.To(leaseSeconds)})
	var macs []string
	for i := 1; i <= udhcpcClients; i++ {
		macs = append(macs, fmt.Sprintf("02:30:00:00:00:%02x", i))
	}
	for i := 1; i <= probers; i++ {
		macs = append(macs, fmt.Sprintf("02:30:00:00:01:%02x", i))
	}
	for i, mac := range macs {
		if err := e.cp.client.Create(ctx, vmNetCfg(poolNS, fmt.Sprintf("vm-%d", i), poolNS+"/net", mac)); err != nil {
			t.Fatal(err)
		}
	}
	if err := eventually(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		return converged(ctx, e.cp.client, poolNS, client.ObjectKeyFromObject(pool), len(macs))
	}); err != nil {
		t.Fatal(err)
	}
	var list v1alpha1.VirtualMachineNetworkConfigList
	if err := e.cp.client.List(ctx, &list, client.InNamespace(poolNS)); err != nil {
		t.Fatal(err)
	}
	for _, v := range list.Items {
		for _, s := range v.Status.NetworkConfigs {
			e.macIP[s.MACAddress] = s.AllocatedIPAddress
		}
	}

	// Network. Everything created is removed when the test ends.
	var created []string
	t.Cleanup(func() {
		for _, ns := range created {
			delNetns(ns)
		}
	})
	mk := func(ns string) {
		if err := ip("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		created = append(created, ns)
		if err := ip("-n", ns, "link", "set", "lo", "up"); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatal(err)
		}
	}
	mk(e.srvNS)
	must(ip("-n", e.srvNS, "link", "add", "br0", "type", "bridge"))
	must(ip("-n", e.srvNS, "addr", "add", serverIP+"/24", "dev", "br0"))
	must(ip("-n", e.srvNS, "link", "set", "br0", "up"))
	plug := func(ns, mac string, port int) {
		peer := fmt.Sprintf("p%d", port)
		must(ip("link", "add", "eth0", "netns", ns, "address", mac, "type", "veth", "peer", "name", peer, "netns", e.srvNS))
		must(ip("-n", e.srvNS, "link", "set", peer, "master", "br0", "up"))
		must(ip("-n", ns, "link", "set", "eth0", "up"))
	}
	for i, mac := range macs {
		ns := fmt.Sprintf("%sc%d", e.prefix, i)
		mk(ns)
		plug(ns, mac, i)
	}
	mk(e.floodNS)
	plug(e.floodNS, "02:66:ff:00:00:01", len(macs))
	must(ip("-n", e.floodNS, "addr", "add", floodIP+"/24", "dev", "eth0"))

	// The agent reaches the API server through a forward from its namespace.
	proxy, err := forwardFromNetns(e.srvNS, "127.0.0.1:"+strconv.Itoa(e.cp.apiPort()))
	must(err)
	t.Cleanup(func() { proxy.Close() })
	e.conf = filepath.Join(e.dir, "config.yaml")
	must(writeAgentConfig(e.conf, serverIP, poolNS+"/pool", e.cp.kubeconfig, filepath.Join(e.dir, "snapshot.json")))
	e.startAgent(agentBin)
	t.Cleanup(func() {
		e.agentMu.Lock()
		defer e.agentMu.Unlock()
		e.agent.stop(3 * time.Second)
	})
	must(e.waitAgentReady(30 * time.Second))

	hook := filepath.Join(e.dir, "udhcpc-hook.sh")
	must(os.WriteFile(hook, []byte(udhcpcHook), 0o755))
	for i := range udhcpcClients {
		c := &udhcpcClient{ns: fmt.Sprintf("%sc%d", e.prefix, i), mac: macs[i], events: filepath.Join(e.dir, fmt.Sprintf("events-%d", i))}
		c.want = e.macIP[c.mac]
		p, err := spawnEnv("udhcpc-"+strconv.Itoa(i), filepath.Join(e.dir, fmt.Sprintf("udhcpc-%d.log", i)),
			[]string{"RELIABILITY_EVENTS=" + c.events},
			"ip", "netns", "exec", c.ns, "udhcpc", "-i", "eth0", "-f", "-t", "20", "-T", "1", "-A", "1", "-s", hook)
		must(err)
		c.proc = p
		e.clients = append(e.clients, c)
		t.Cleanup(func() { p.stop(2 * time.Second) })
	}
	for i := range probers {
		idx := udhcpcClients + i
		p, err := newProber(fmt.Sprintf("%sc%d", e.prefix, idx), macs[idx], e.macIP[macs[idx]])
		must(err)
		t.Cleanup(func() { p.close() })
		e.probers = append(e.probers, p)
	}
	for _, c := range e.clients {
		must(eventually(ctx, 30*time.Second, 200*time.Millisecond, func() error {
			evs, err := c.read()
			if err != nil {
				return err
			}
			for _, ev := range evs {
				if ev.kind == "bound" && ev.ip == c.want {
					return nil
				}
			}
			return fmt.Errorf("udhcpc in %s not bound to %s yet (events %v)", c.ns, c.want, evs)
		}))
	}
	return e
}

// udhcpcHook records every event with its time and keeps the interface
// configured, as a guest's script would (renewals go out from the address).
const udhcpcHook = `#!/bin/sh
echo "$(date +%s.%N) $1 ${ip:-}" >> "$RELIABILITY_EVENTS"
case "$1" in
deconfig) ip addr flush dev "$interface" ;;
bound|renew)
  if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/"; then
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
  fi ;;
esac
`

func (e *agentEnv) startAgent(bin string) {
	e.agentMu.Lock()
	defer e.agentMu.Unlock()
	e.starts++
	e.agent = startProcess(e.t, "agent", filepath.Join(e.dir, "agent.log"),
		"ip", "netns", "exec", e.srvNS, bin, "--conf", e.conf, "--nocolors", "--loglevel", "info", "--health-addr", agentHealth)
}

func (e *agentEnv) agentLog() string { return filepath.Join(e.dir, "agent.log") }

func (e *agentEnv) currentAgent() *process {
	e.agentMu.Lock()
	defer e.agentMu.Unlock()
	return e.agent
}

// writeAgentConfig writes the CoreDHCP config of an agent serving pool
// (namespace/name) on br0 of its namespace, as the controller would.
func writeAgentConfig(path, serverIP, pool, kubeconfig, snapshot string) error {
	return writeAgentConfigDUID(path, serverIP, "", pool, kubeconfig, snapshot)
}

// writeAgentConfigDUID is writeAgentConfig with a server6 section (DHCPv6,
// server identifier DUID-LL of duid) when duid is set; serverIP may then be
// empty (an IPv6-only pool). The controller's own renderer writes it.
func writeAgentConfigDUID(path, serverIP, duid, pool, kubeconfig, snapshot string) error {
	ns, name, _ := strings.Cut(pool, "/")
	conf, err := agentconfig.Render(agentconfig.Params{Interface: "br0", ServerIP: serverIP, PoolNamespace: ns, PoolName: name,
		SnapshotPath: snapshot, Kubeconfig: kubeconfig, ServerDUID: duid})
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write agent config: %w", err)
	}
	return nil
}

func (e *agentEnv) httpGet(path string) (string, error) { return agentGet(e.srvNS, path) }

// agentGet GETs path from the health server of the agent in namespace ns.
func agentGet(ns, path string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dialerIn(ns), DisableKeepAlives: true}}
	resp, err := c.Get("http://" + agentHealth + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return string(b), nil
}

func (e *agentEnv) waitAgentReady(timeout time.Duration) error {
	return eventually(context.Background(), timeout, 100*time.Millisecond, func() error {
		if ok, err := e.currentAgent().exited(); ok {
			return fmt.Errorf("agent exited: %v\n%s", err, tail(e.agentLog(), 2000))
		}
		_, err := e.httpGet("/readyz")
		return err
	})
}

// metric reads one unlabelled counter or gauge from the agent's /metrics.
func (e *agentEnv) metric(name string) (float64, error) {
	body, err := e.httpGet("/metrics")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// rssKiB is the agent's resident set size from /proc.
func rssKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// udhcpcClient is a real udhcpc renewing every leaseSeconds/2.
type udhcpcClient struct {
	ns, mac, want, events string
	proc                  *process
}

type clientEvent struct {
	at   time.Time
	kind string
	ip   string
}

func (c *udhcpcClient) read() ([]clientEvent, error) {
	b, err := os.ReadFile(c.events)
	if err != nil {
		return nil, err
	}
	var out []clientEvent
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		ev := clientEvent{at: time.Unix(0, int64(sec*1e9)), kind: f[1]}
		if len(f) > 2 {
			ev.ip = canonIP(f[2]) // a MAC (reboot) stays as it is
		}
		out = append(out, ev)
	}
	return out, nil
}

// renewals counts, between from and to, the renewals that succeeded with the
// right address and the failures udhcpc reported (deconfig after losing the
// lease, leasefail, nak, or a renewal with another address), and the longest
// time between two successful renewals.
func (c *udhcpcClient) renewals(from, to time.Time) (ok, failed int, maxGap time.Duration, err error) {
	evs, err := c.read()
	if err != nil {
		return 0, 0, 0, err
	}
	last := from
	for _, ev := range evs {
		if ev.at.Before(from) || ev.at.After(to) {
			continue
		}
		switch {
		case (ev.kind == "renew" || ev.kind == "bound") && ev.ip == c.want:
			ok++
			if g := ev.at.Sub(last); g > maxGap {
				maxGap = g
			}
			last = ev.at
		case ev.kind == "renew" || ev.kind == "bound" || ev.kind == "deconfig" || ev.kind == "leasefail" || ev.kind == "nak":
			failed++
		}
	}
	if g := to.Sub(last); g > maxGap {
		maxGap = g
	}
	return ok, failed, maxGap, nil
}

// udhcpcTotals sums renewals over every udhcpc client.
func (e *agentEnv) udhcpcTotals(from, to time.Time) (ok, failed int, maxGap time.Duration) {
	for _, c := range e.clients {
		o, f, g, err := c.renewals(from, to)
		if err != nil {
			e.t.Errorf("read events of %s: %v", c.ns, err)
		}
		ok, failed = ok+o, failed+f
		maxGap = max(maxGap, g)
		if ex, perr := c.proc.exited(); ex {
			e.t.Errorf("udhcpc in %s exited: %v", c.ns, perr)
		}
	}
	return ok, failed, maxGap
}

// prober is a Go DHCP client (nclient4, raw socket in its namespace) that
// renews its lease on demand and times each answer.
type prober struct {
	ns, mac string
	ip      net.IP
	c       *nclient4.Client // raw socket: DORA from no address
	uc      *nclient4.Client // UDP socket bound to the leased address: renewals
	ack     *dhcpv4.DHCPv4
	rng     *rand.Rand
}

func newProber(ns, mac, want string) (*prober, error) {
	p := &prober{ns: ns, mac: mac, rng: rand.New(rand.NewSource(time.Now().UnixNano()))}
	if err := inNetns(ns, func() error {
		var err error
		p.c, err = nclient4.New("eth0", nclient4.WithTimeout(time.Second), nclient4.WithRetry(3))
		return err
	}); err != nil {
		return nil, fmt.Errorf("prober in %s: %w", ns, err)
	}
	var lease *nclient4.Lease
	if err := eventually(context.Background(), 20*time.Second, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		lease, err = p.c.Request(ctx)
		return err
	}); err != nil {
		p.c.Close()
		return nil, fmt.Errorf("prober %s: first lease: %w", mac, err)
	}
	p.ack, p.ip = lease.ACK, lease.ACK.YourIPAddr
	if p.ip.String() != want {
		p.c.Close()
		return nil, fmt.Errorf("prober %s got %s, want %s", mac, p.ip, want)
	}
	// Renewals go out from the address and are answered by unicast to it,
	// as for a guest: the namespace must own the address, and they use a
	// plain UDP socket bound to it (the kernel drops unicast from 0.0.0.0).
	if err := ip("-n", ns, "addr", "add", p.ip.String()+"/24", "dev", "eth0"); err != nil {
		p.c.Close()
		return nil, err
	}
	if err := inNetns(ns, func() error {
		var err error
		p.uc, err = nclient4.New("eth0", nclient4.WithUnicast(&net.UDPAddr{IP: p.ip, Port: nclient4.ClientPort}),
			nclient4.WithTimeout(time.Second), nclient4.WithRetry(3))
		return err
	}); err != nil {
		p.c.Close()
		return nil, fmt.Errorf("prober %s: renewing client: %w", mac, err)
	}
	return p, nil
}

func (p *prober) close() { p.c.Close(); p.uc.Close() }

// renew sends a renewing REQUEST (ciaddr set, unicast to the server) and
// waits for the ACK of its address, retrying twice after 1 s.
func (p *prober) renew(ctx context.Context) (time.Duration, error) {
	msg, err := dhcpv4.NewRenewFromAck(p.ack)
	if err != nil {
		return 0, err
	}
	msg.TransactionID = dhcpv4.TransactionID{byte(p.rng.Intn(256)), byte(p.rng.Intn(256)), byte(p.rng.Intn(256)), byte(p.rng.Intn(256))}
	start := time.Now()
	resp, err := p.uc.SendAndRead(ctx, &net.UDPAddr{IP: net.ParseIP(serverIP), Port: 67}, msg,
		nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	took := time.Since(start)
	switch {
	case err != nil:
		return took, fmt.Errorf("renew %s: %w", p.mac, err)
	case resp.MessageType() != dhcpv4.MessageTypeAck:
		return took, fmt.Errorf("renew %s: %s", p.mac, resp.MessageType())
	case !resp.YourIPAddr.Equal(p.ip):
		return took, fmt.Errorf("renew %s: ACK for %s, want %s", p.mac, resp.YourIPAddr, p.ip)
	}
	return took, nil
}

// dora runs a whole DISCOVER-OFFER-REQUEST-ACK, as a rebooted guest would.
func (p *prober) dora(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	lease, err := p.c.Request(ctx)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("dora %s: %w", p.mac, err)
	}
	if !lease.ACK.YourIPAddr.Equal(p.ip) {
		return took, fmt.Errorf("dora %s: got %s, want %s", p.mac, lease.ACK.YourIPAddr, p.ip)
	}
	return took, nil
}

// probeStats collects the outcome of probes run in the background.
type probeStats struct {
	mu        sync.Mutex
	ok, fail  int
	latencies []time.Duration
	errs      []string
}

func (s *probeStats) add(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.fail++
		if len(s.errs) < 5 {
			s.errs = append(s.errs, err.Error())
		}
		return
	}
	s.ok++
	s.latencies = append(s.latencies, d)
}

// probeLoop runs op on every prober every interval until stop is called.
func (e *agentEnv) probeLoop(every time.Duration, op func(*prober, context.Context) (time.Duration, error)) (*probeStats, func()) {
	s := &probeStats{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range e.probers {
		wg.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				d, err := op(p, ctx)
				if ctx.Err() != nil {
					return // cut short by stop: neither success nor failure
				}
				s.add(d, err)
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	return s, func() { cancel(); wg.Wait() }
}

func renewOp(p *prober, ctx context.Context) (time.Duration, error) { return p.renew(ctx) }
func doraOp(p *prober, ctx context.Context) (time.Duration, error)  { return p.dora(ctx) }
