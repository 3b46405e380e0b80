package reliability

import (
	"context"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/agentconfig"
	"github.com/vm-dhcp/vm-dhcp/controller/ipam"
)

// The wire scenarios' network: like the agent scenarios, a bridge in the
// agent's namespace and one namespace per guest NIC, each with a veth
// carrying the MAC of its VMNetCfg NIC and a real udhcpc.
const (
	wireServerIP = "10.40.0.2"
	// wireLease is the pool's lease time: busybox udhcpc raises anything
	// shorter to 30 s, and a client that keeps an address longer than the
	// server's lease time would be the client's fault, not ours.
	wireLease = 30
	// wireNudgeMin/Max: every guest is told (SIGUSR1) to renew at a random
	// period in this range, so it renews every few seconds whatever its
	// lease. Above the ~4 s a udhcpc -T 1 renewal takes when it gets no
	// answer (one unicast then 3 broadcast tries, measured with busybox
	// 1.35): a second SIGUSR1 during a renewal would make udhcpc
	// deconfigure on its own.
	wireNudgeMin = 7 * time.Second
	wireNudgeMax = 9 * time.Second
	// wireAgentLag is how long the agent may take to see a change of the
	// pool: a renewal answered within it from the old view is no violation.
	wireAgentLag = 2 * time.Second
)

// The IPv6 wire scenarios (S7C, S7D) put the pool's IPv6 half on the same
// bridge and run dhclient -6 in the guests.
const (
	wireServerIP6 = "fd00:40::2"
	// wirePreferred and wireValid are the pool's IPv6 lifetimes: dhclient
	// renews by itself at T1, half the preferred lifetime (every 5 s), and
	// rebinds at T2 (4/5 of it); an address nobody answers for leaves the
	// guest's kernel when its valid lifetime runs out (the hook sets it), the
	// time the controller quarantines a released IPv6 address.
	wirePreferred = 10
	wireValid     = 20
)

// wireFamily is what a wire scenario runs on.
type wireFamily int

const (
	wireIPv4     wireFamily = iota // udhcpc guests on an IPv4 pool (S7A, S7B)
	wireDualIPv6                   // dhclient -6 guests on a dual-stack pool
	wireOnlyIPv6                   // dhclient -6 guests on an IPv6-only pool
)

func (f wireFamily) v6() bool { return f != wireIPv4 }

func (f wireFamily) String() string {
	return [...]string{"IPv4 pool", "dual-stack pool", "IPv6-only pool"}[f]
}

// client is the DHCP client every guest of the family runs.
func (f wireFamily) client() string {
	if f.v6() {
		return "dhclient -6"
	}
	return "udhcpc"
}

// grace is how long a guest may keep an address its MAC no longer has: the
// lease (IPv4) or valid lifetime (IPv6) its last answer gave it, when no
// later renewal is answered, plus the time the agent may take to see the
// change (IPv6: and a second, the kernel expiring addresses on whole
// seconds). Beyond it the address must be gone from the guest.
func (f wireFamily) grace() time.Duration {
	if f.v6() {
		return wireValid*time.Second + wireAgentLag + time.Second
	}
	return wireLease*time.Second + wireAgentLag
}

// settleWire is how long the guests may take to hold their MAC's address
// once the churn has stopped: two renewal periods and a lease (IPv4); a
// valid lifetime and the SOLICIT back-off of a guest left without an answer
// (IPv6).
func (f wireFamily) settleWire() time.Duration {
	if f.v6() {
		return 3 * wireValid * time.Second
	}
	return 2*wireNudgeMax + wireLease*time.Second
}

// wireVM is one VMNetCfg of the workload and its guests (one per NIC).
type wireVM struct {
	name   string
	mu     sync.Mutex // one churn operation at a time
	guests []*guest
}

// guest is one NIC of a VM on the wire: a network namespace with eth0 and
// a udhcpc whose hook configures what it is given.
type guest struct {
	idx    int
	mac0   string // the MAC it booted with
	netns  string
	vm     *wireVM
	nic    int
	events string
	v6     bool   // runs dhclient -6 and is read for IPv6 addresses
	leases string // dhclient's lease file (with its DUID)

	mu     sync.Mutex
	mac    string // the NIC's MAC now (in the VMNetCfg spec and on eth0)
	proc   *process
	handle *netlink.Handle
	nlMu   sync.Mutex // one request at a time on handle
	nudged time.Time
	period time.Duration
}

func (g *guest) MAC() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mac
}

// wireEnv is one wire scenario: a pool, its agent, the controller, and the
// guests of its VMs, all removed when the (sub)test ends.
type wireEnv struct {
	t        *testing.T
	cp       *controlPlane
	cs       *controllerSet
	family   wireFamily
	ns       string // Kubernetes namespace of the pool and the VMNetCfgs
	network  string
	pool     types.NamespacedName
	dir      string
	prefix   string // of every network namespace created
	srvNS    string
	hook     string
	conf     string
	dhcConf  string // dhclient -6's (empty) config file
	agentBin string

	procMu      sync.Mutex
	controller  *process
	ctrlStarts  int
	agent       *process
	agentStarts int

	vms    []*wireVM
	dual   int // VMs with two NICs
	guests []*guest
	macSeq atomic.Int64
	rng    *rand.Rand
	rngMu  sync.Mutex
}

// newWireEnv starts a controller, creates a pool of the family and vms
// VMNetCfgs (the last dual of them with two NICs), plugs one guest per NIC
// into the pool's network, starts the agent and waits until every guest is
// bound to the address of its MAC.
func newWireEnv(t *testing.T, cp *controlPlane, ns string, family wireFamily, vms, dual int) *wireEnv {
	ctx := context.Background()
	seed := time.Now().UnixNano()
	e := &wireEnv{t: t, cp: cp, family: family, dual: dual, ns: ns, network: ns + "/net", pool: types.NamespacedName{Namespace: ns, Name: "pool"},
		dir: t.TempDir(), prefix: fmt.Sprintf("vmw%d%s-", os.Getpid()%100000, ns),
		agentBin: agentBinary(t), rng: rand.New(rand.NewSource(seed))}
	t.Logf("random seed %d", seed)
	// The logs of a failed run are kept (the temporary folder goes).
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		keep := filepath.Join(os.TempDir(), fmt.Sprintf("vm-dhcp-wire-%s-%d", ns, os.Getpid()))
		err := os.CopyFS(keep, os.DirFS(e.dir))
		if err == nil && e.cs != nil {
			err = os.CopyFS(filepath.Join(keep, "controller"), os.DirFS(e.cs.dir))
		}
		if err != nil {
			t.Logf("keep logs: %v", err)
			return
		}
		t.Logf("guest events, udhcpc and agent logs kept in %s", keep)
	})
	e.srvNS = e.prefix + "srv"
	e.cs = newControllerSet(t, cp)
	e.startController()
	t.Cleanup(func() {
		e.procMu.Lock()
		defer e.procMu.Unlock()
		e.controller.stop(5 * time.Second)
	})
	var spec v1alpha1.IPPoolSpec
	if family != wireOnlyIPv6 {
		spec.IPv4Config = v1alpha1.IPv4Config{ServerIP: wireServerIP, CIDR: "10.40.0.0/24", Router: "10.40.0.1",
			Pool: v1alpha1.Pool{Start: "10.40.0.10", End: "10.40.0.200"}, LeaseTime: ptr.To(wireLease)}
	}
	if family.v6() {
		spec.IPv6Config = &v1alpha1.IPv6Config{ServerIP: wireServerIP6, CIDR: "fd00:40::/64",
			Pool:              v1alpha1.IPv6Pool{Start: "fd00:40::10", End: "fd00:40::ff"},
			PreferredLifetime: ptr.To(wirePreferred), ValidLifetime: ptr.To(wireValid)}
	}
	cp.networkWith(t, ns, spec)

	// Network namespaces first registered for removal, so a failure half
	// way through leaves nothing behind.
	var created []string
	var createdMu sync.Mutex
	t.Cleanup(func() {
		for _, g := range e.guests {
			g.mu.Lock()
			if g.proc != nil {
				g.proc.killGroup()
			}
			if g.handle != nil {
				g.handle.Close()
			}
			g.mu.Unlock()
		}
		createdMu.Lock()
		defer createdMu.Unlock()
		for _, n := range created {
			delNetns(n)
		}
	})
	mk := func(n string) error {
		createdMu.Lock()
		created = append(created, n)
		createdMu.Unlock()
		if err := ip("netns", "add", n); err != nil {
			return err
		}
		return ip("-n", n, "link", "set", "lo", "up")
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(mk(e.srvNS))
	if family.v6() {
		// The agent's side is usable at once (no DAD on the bridge), and
		// the bridge floods every multicast (DHCPv6 to ff02::1:2, DAD
		// probes): no snooping that could hide one guest from another.
		must(sysctlIn(e.srvNS, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"))
		must(ip("-n", e.srvNS, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"))
		must(ip("-n", e.srvNS, "addr", "add", wireServerIP6+"/64", "dev", "br0", "nodad"))
	} else {
		must(ip("-n", e.srvNS, "link", "add", "br0", "type", "bridge"))
	}
	if family != wireOnlyIPv6 {
		must(ip("-n", e.srvNS, "addr", "add", wireServerIP+"/24", "dev", "br0"))
	}
	must(ip("-n", e.srvNS, "link", "set", "br0", "up"))

	e.hook = filepath.Join(e.dir, "udhcpc-hook.sh")
	hook := wireHook
	if family.v6() {
		e.hook, hook = filepath.Join(e.dir, "dhclient6-hook.sh"), wireHook6
		e.dhcConf = filepath.Join(e.dir, "dhclient6.conf")
		must(os.WriteFile(e.dhcConf, nil, 0o644))
	}
	must(os.WriteFile(e.hook, []byte(hook), 0o755))
	for i := range vms {
		vm := &wireVM{name: fmt.Sprintf("vm-%02d", i)}
		nics := 1
		if i >= vms-dual {
			nics = 2
		}
		for n := range nics {
			g := &guest{idx: len(e.guests), vm: vm, nic: n, mac: e.newMAC(), v6: family.v6()}
			g.mac0 = g.mac
			g.netns = fmt.Sprintf("%sg%d", e.prefix, g.idx)
			g.events = filepath.Join(e.dir, fmt.Sprintf("events-%d", g.idx))
			g.leases = filepath.Join(e.dir, fmt.Sprintf("dhclient6-%d.leases", g.idx))
			// A guest keeps the kernel's duplicate address detection on
			// (the default): an IPv6 address on two guests of the link
			// shows as dadfailed, which the wire sampler counts.
			must(mk(g.netns))
			port := fmt.Sprintf("p%d", g.idx)
			must(ip("link", "add", "eth0", "netns", g.netns, "address", g.mac, "type", "veth", "peer", "name", port, "netns", e.srvNS))
			must(ip("-n", e.srvNS, "link", "set", port, "master", "br0", "up"))
			must(ip("-n", g.netns, "link", "set", "eth0", "up"))
			h, err := netnsHandle(g.netns)
			must(err)
			g.handle = h
			vm.guests = append(vm.guests, g)
			e.guests = append(e.guests, g)
		}
		e.vms = append(e.vms, vm)
		must(cp.client.Create(ctx, e.vmNetCfg(vm)))
	}

	proxy, err := forwardFromNetns(e.srvNS, "127.0.0.1:"+strconv.Itoa(cp.apiPort()))
	must(err)
	t.Cleanup(func() { proxy.Close() })
	e.conf = filepath.Join(e.dir, "config.yaml")
	serverIP, duid := wireServerIP, ""
	if family == wireOnlyIPv6 {
		serverIP = ""
	}
	if family.v6() {
		duid = agentconfig.ServerDUIDMAC(ns, "pool")
	}
	must(writeAgentConfigDUID(e.conf, serverIP, duid, ns+"/pool", cp.kubeconfig, filepath.Join(e.dir, "snapshot.json")))
	e.startAgent()
	t.Cleanup(func() {
		e.procMu.Lock()
		defer e.procMu.Unlock()
		e.agent.stop(3 * time.Second)
	})
	must(e.waitAgentReady(60 * time.Second))
	for _, g := range e.guests {
		must(e.startGuest(g))
	}
	// Every guest bound to its MAC's address before the workload starts.
	must(eventually(ctx, 120*time.Second, 500*time.Millisecond, func() error {
		_, bad, err := e.wireState(ctx)
		if err != nil {
			return err
		}
		if len(bad) > 0 {
			return fmt.Errorf("%d guests not bound to their address yet, e.g. %s", len(bad), bad[0])
		}
		return nil
	}))
	return e
}

// wireHook records every event (time, event, address) after acting on it
// and configures the interface as a guest's script would: the address the
// guest holds is what the kernel says eth0 has.
const wireHook = `#!/bin/sh
case "$1" in
deconfig) ip addr flush dev "$interface" ;;
bound|renew)
  if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/"; then
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
  fi ;;
esac
echo "$(date +%s.%N) $1 ${ip:-}" >> "$RELIABILITY_EVENTS"
`

// wireHook6 is dhclient -6's script in a guest, acting as Debian's
// dhclient-script does (each address of a reply set with its lifetimes, so
// the kernel drops it when its valid lifetime runs out; removed on EXPIRE6,
// RELEASE6, STOP6; one the server no longer lists left to the kernel), and
// recording each event in the events format of wireHook: bound/renew with
// the address, "drop" for an address the server gave lifetime 0 (DHCPv6's
// NAK: no longer the client's; dhclient runs the script for it with
// new_max_life 0), "expire" when its valid lifetime ran out unrenewed,
// "kept" for an address dhclient still holds from an earlier reply and
// passes again beside a new one (no answer of the server: set with what is
// left of its lifetimes, where Debian's script would restart them).
const wireHook6 = `#!/bin/sh
ev() { echo "$(date +%s.%N) $1 $2" >> "$RELIABILITY_EVENTS"; }
case "$reason" in
BOUND6|REBOOT6|RENEW6|REBIND6)
  [ -n "$new_ip6_address" ] || { ev "$(echo "$reason" | tr A-Z a-z)" ""; exit 0; }
  if [ "${new_max_life:-1}" = 0 ]; then
    ip -6 addr del "$new_ip6_address/128" dev "$interface" 2>/dev/null
    ev drop "$new_ip6_address"
    exit 0
  fi
  valid=$new_max_life pref=${new_preferred_life:-$new_max_life}
  case "$reason" in BOUND6|REBOOT6) kind=bound ;; *) kind=renew ;; esac
  # An address this reply did not list (dhclient keeps the bindings it
  # had when it solicits again) started before it: not an answer, and its
  # lifetimes run from when it was given.
  if [ -n "$new_life_starts" ] && [ -n "$new_starts" ] && [ "$new_life_starts" -lt "$new_starts" ]; then
    now=$(date +%s) kind=kept
    valid=$((new_life_starts + valid - now)) pref=$((new_life_starts + pref - now))
    [ "$pref" -ge 0 ] || pref=0
    [ "$valid" -gt 0 ] || exit 0
  fi
  ip -6 addr replace "$new_ip6_address/128" dev "$interface" valid_lft "$valid" preferred_lft "$pref"
  ev "$kind" "$new_ip6_address" ;;
EXPIRE6|RELEASE6|STOP6)
  [ -n "$old_ip6_address" ] && ip -6 addr del "$old_ip6_address/128" dev "$interface" 2>/dev/null
  # Lifetime 0 was recorded as drop when the reply came: dhclient expires it later.
  if [ "${old_max_life:-1}" = 0 ]; then ev expired-drop "$old_ip6_address"; else ev expire "$old_ip6_address"; fi ;;
*) ev "$(echo "$reason" | tr A-Z a-z)" "" ;;
esac
exit 0
`

// sysctlIn sets kernel parameters (key=value) in network namespace ns.
func sysctlIn(ns string, kv ...string) error {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "sysctl", "-qw"}, kv...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sysctl %v in %s: %w: %s", kv, ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (e *wireEnv) newMAC() string {
	n := e.macSeq.Add(1)
	return fmt.Sprintf("02:40:%02x:00:%02x:%02x", e.ns[len(e.ns)-1], n>>8&0xff, n&0xff)
}

func (e *wireEnv) intn(n int) int {
	e.rngMu.Lock()
	defer e.rngMu.Unlock()
	return e.rng.Intn(n)
}

// vmNetCfg is the VMNetCfg of vm with the MACs its guests have now.
func (e *wireEnv) vmNetCfg(vm *wireVM) *v1alpha1.VirtualMachineNetworkConfig {
	v := vmNetCfg(e.ns, vm.name, e.network, vm.guests[0].MAC())
	for _, g := range vm.guests[1:] {
		v.Spec.NetworkConfigs = append(v.Spec.NetworkConfigs, v1alpha1.NetworkConfig{NetworkName: e.network, MACAddress: g.MAC()})
	}
	return v
}

func (e *wireEnv) startController() {
	e.procMu.Lock()
	defer e.procMu.Unlock()
	e.ctrlStarts++
	e.controller = e.cs.start(fmt.Sprintf("controller-%d", e.ctrlStarts), false)
}

// killController SIGKILLs the controller and starts a new one.
func (e *wireEnv) killController() {
	e.procMu.Lock()
	old := e.controller
	e.procMu.Unlock()
	old.kill()
	e.startController()
}

func (e *wireEnv) startAgent() {
	e.procMu.Lock()
	defer e.procMu.Unlock()
	e.agentStarts++
	e.agent = startProcess(e.t, "agent", filepath.Join(e.dir, "agent.log"),
		"ip", "netns", "exec", e.srvNS, e.agentBin, "--conf", e.conf, "--nocolors", "--loglevel", "info", "--health-addr", agentHealth)
}

// killAgent SIGKILLs the agent and starts it again (it reads its snapshot
// and the pool).
func (e *wireEnv) killAgent() error {
	e.procMu.Lock()
	old := e.agent
	e.procMu.Unlock()
	old.kill()
	e.startAgent()
	return e.waitAgentReady(30 * time.Second)
}

func (e *wireEnv) waitAgentReady(timeout time.Duration) error {
	return eventually(context.Background(), timeout, 100*time.Millisecond, func() error {
		e.procMu.Lock()
		a := e.agent
		e.procMu.Unlock()
		if ok, err := a.exited(); ok {
			return fmt.Errorf("agent exited: %v\n%s", err, tail(filepath.Join(e.dir, "agent.log"), 2000))
		}
		_, err := agentGet(e.srvNS, "/readyz")
		return err
	})
}

// startGuest starts the family's DHCP client on the guest's eth0 (a guest
// booting): udhcpc, or dhclient -6 with a DUID-LL of the NIC's MAC (it
// passes the script only the variables given with -e).
func (e *wireEnv) startGuest(g *guest) error {
	name, env := fmt.Sprintf("udhcpc-%d", g.idx), []string{"RELIABILITY_EVENTS=" + g.events}
	argv := []string{"ip", "netns", "exec", g.netns, "udhcpc", "-i", "eth0", "-f", "-t", "20", "-T", "1", "-A", "1", "-s", e.hook}
	if g.v6 {
		if err := g.waitLinkLocal(10 * time.Second); err != nil {
			return err
		}
		name = fmt.Sprintf("dhclient6-%d", g.idx)
		argv = []string{"ip", "netns", "exec", g.netns, "dhclient", "-6", "-d", "-v", "-D", "LL", "-cf", e.dhcConf, "-sf", e.hook,
			"-lf", g.leases, "-pf", filepath.Join(e.dir, name+".pid"), "-e", env[0], "eth0"}
	}
	p, err := spawnEnv(name, filepath.Join(e.dir, name+".log"), env, argv...)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.proc = p
	g.nudged = time.Now()
	g.period = wireNudgeMin + time.Duration(e.intn(int(wireNudgeMax-wireNudgeMin)))
	g.mu.Unlock()
	return nil
}

// rebootGuest plays a guest restarted with a new MAC: udhcpc and its hook
// are SIGKILLed (no release, as a VM powered off), the address goes with
// the old boot, eth0 gets mac and a new udhcpc starts.
func (e *wireEnv) rebootGuest(g *guest, mac string) error {
	g.mu.Lock()
	old := g.proc
	g.mu.Unlock()
	old.killGroup()
	if err := appendEvent(g.events, "reboot", mac); err != nil {
		return err
	}
	if g.v6 {
		// Down and up: the kernel makes the link-local address of the new
		// MAC (dhclient -6 sends from it). The lease file, which holds the
		// DUID, goes with the old boot.
		if err := ip("-n", g.netns, "link", "set", "eth0", "down"); err != nil {
			return err
		}
		if err := os.Remove(g.leases); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := ip("-n", g.netns, "addr", "flush", "dev", "eth0"); err != nil {
		return err
	}
	if err := ip("-n", g.netns, "link", "set", "eth0", "address", mac); err != nil {
		return err
	}
	if g.v6 {
		if err := ip("-n", g.netns, "link", "set", "eth0", "up"); err != nil {
			return err
		}
	}
	g.mu.Lock()
	g.mac = mac
	g.mu.Unlock()
	return e.startGuest(g)
}

func appendEvent(path, kind, arg string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%d.%09d %s %s\n", time.Now().Unix(), time.Now().Nanosecond(), kind, arg)
	return err
}

// killGroup SIGKILLs the process group of p (udhcpc and a hook it runs).
func (p *process) killGroup() {
	if ok, _ := p.exited(); ok {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// netnsHandle is a netlink handle whose sockets live in namespace name, so
// reading the guest's addresses needs no thread switch.
func netnsHandle(name string) (*netlink.Handle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return h, nil
}

// heldAddrs is what a guest's interfaces have of its family.
type heldAddrs struct {
	ips []string // configured (IPv6: global, tentative ones included)
	// dadFailed are IPv6 addresses the kernel's duplicate address detection
	// found in use by another node of the link: configured, never usable.
	dadFailed []string
}

// is reports whether the guest holds exactly ip ("" for nothing).
func (h heldAddrs) is(ip string) bool {
	if ip == "" {
		return len(h.ips) == 0
	}
	return len(h.ips) == 1 && h.ips[0] == ip
}

func (h heldAddrs) String() string { return strings.Join(h.ips, ",") }

// held reads the guest's addresses of its family (loopback and IPv6
// link-local left out). The IPv4 hook keeps at most one; a DHCPv6 guest
// keeps an address its server stopped listing beside the new one until the
// kernel drops it at the end of its valid lifetime.
func (g *guest) held() (heldAddrs, error) {
	family := netlink.FAMILY_V4
	if g.v6 {
		family = netlink.FAMILY_V6
	}
	g.nlMu.Lock()
	addrs, err := g.handle.AddrList(nil, family)
	g.nlMu.Unlock()
	if err != nil {
		return heldAddrs{}, fmt.Errorf("addresses of %s: %w", g.netns, err)
	}
	var h heldAddrs
	for _, a := range addrs {
		if a.IP.IsLoopback() || a.IP.IsLinkLocalUnicast() {
			continue
		}
		if a.Flags&unix.IFA_F_DADFAILED != 0 {
			h.dadFailed = append(h.dadFailed, a.IP.String())
			continue
		}
		h.ips = append(h.ips, a.IP.String())
	}
	return h, nil
}

// waitLinkLocal waits until eth0 has a link-local address past its
// duplicate address detection: dhclient -6 sends from it and exits at once
// without one.
func (g *guest) waitLinkLocal(timeout time.Duration) error {
	return eventually(context.Background(), timeout, 50*time.Millisecond, func() error {
		g.nlMu.Lock()
		addrs, err := g.handle.AddrList(nil, netlink.FAMILY_V6)
		g.nlMu.Unlock()
		if err != nil {
			return fmt.Errorf("addresses of %s: %w", g.netns, err)
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
				return nil
			}
		}
		return fmt.Errorf("no usable link-local address on eth0 of %s", g.netns)
	})
}

// nudge sends SIGUSR1 (renew now) to every guest whose period has passed.
// dhclient -6 has no such signal: it renews at T1, which the pool's short
// lifetimes make a few seconds.
func (e *wireEnv) nudge() int {
	if e.family.v6() {
		return 0
	}
	n := 0
	for _, g := range e.guests {
		g.mu.Lock()
		if g.proc != nil && time.Since(g.nudged) >= g.period {
			if ok, _ := g.proc.exited(); !ok && g.proc.cmd.Process.Signal(syscall.SIGUSR1) == nil {
				n++
			}
			g.nudged = time.Now()
		}
		g.mu.Unlock()
	}
	return n
}

// startNudger renews every guest every few seconds until stopped; it
// returns the count of renewals it asked for.
func (e *wireEnv) startNudger() func() int {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		total := 0
		for ctx.Err() == nil {
			total += e.nudge()
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
		done <- total
	}()
	return func() int { cancel(); return <-done }
}

// poolOwners reads the pool's half of the scenario's family: address
// (canonical) -> MAC (normalized), addresses given to MACs only.
func (e *wireEnv) poolOwners(ctx context.Context) (map[string]string, string, error) {
	var p v1alpha1.IPPool
	if err := e.cp.client.Get(ctx, e.pool, &p); err != nil {
		return nil, "", fmt.Errorf("get ippool: %w", err)
	}
	var allocated map[string]string
	switch {
	case e.family.v6() && p.Status.IPv6 != nil:
		allocated = p.Status.IPv6.Allocated
	case !e.family.v6() && p.Status.IPv4 != nil:
		allocated = p.Status.IPv4.Allocated
	}
	out := map[string]string{}
	for ip, mac := range allocated {
		if mac == ipam.MarkExcluded || mac == ipam.MarkReserved {
			continue
		}
		out[canonIP(ip)] = ipam.NormalizeMAC(mac)
	}
	return out, p.ResourceVersion, nil
}

// canonIP spells an address as the kernel's reading of a guest does.
func canonIP(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String()
	}
	return s
}

// wireState compares what every guest holds with what the API says its
// MAC has (pool status and VMNetCfg status must agree): it returns the
// number of guests and a line for each that holds something else.
func (e *wireEnv) wireState(ctx context.Context) (int, []string, error) {
	owners, _, err := e.poolOwners(ctx)
	if err != nil {
		return 0, nil, err
	}
	ipOf := map[string]string{}
	for ip, mac := range owners {
		ipOf[mac] = ip
	}
	var list v1alpha1.VirtualMachineNetworkConfigList
	if err := e.cp.client.List(ctx, &list, client.InNamespace(e.ns)); err != nil {
		return 0, nil, fmt.Errorf("list vmnetcfgs: %w", err)
	}
	claimed := map[string]string{}
	for _, v := range list.Items {
		if v.DeletionTimestamp != nil {
			continue
		}
		for _, s := range v.Status.NetworkConfigs {
			if s.State == v1alpha1.StateAllocated {
				a := s.AllocatedIPAddress
				if e.family.v6() {
					a = canonIP(s.AllocatedIPv6Address)
				}
				claimed[ipam.NormalizeMAC(s.MACAddress)] = a
			}
		}
	}
	var bad []string
	for _, g := range e.guests {
		mac := ipam.NormalizeMAC(g.MAC())
		have, err := g.held()
		if err != nil {
			return 0, nil, err
		}
		want, inPool := ipOf[mac]
		switch {
		case !inPool:
			bad = append(bad, fmt.Sprintf("guest %d (%s, MAC %s) holds %q; its MAC has no address in the pool (VMNetCfg says %q)", g.idx, g.vm.name, mac, have, claimed[mac]))
		case claimed[mac] != want:
			bad = append(bad, fmt.Sprintf("guest %d (%s, MAC %s) holds %q; the pool gives its MAC %s, the VMNetCfg %q", g.idx, g.vm.name, mac, have, want, claimed[mac]))
		case !have.is(want):
			bad = append(bad, fmt.Sprintf("guest %d (%s, MAC %s) holds %q, its MAC's address is %s", g.idx, g.vm.name, mac, have, want))
		}
	}
	return len(e.guests), bad, nil
}

// validIP is a sanity filter for the hooks' output.
func validIP(s string) bool { return net.ParseIP(s) != nil }
