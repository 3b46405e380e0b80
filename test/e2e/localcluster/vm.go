package localcluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// VM plays a KubeVirt VM's guest on the VM networks: a network namespace
// with one veth per NIC (carrying the NIC's MAC) plugged into the network's
// bridge, where a real DHCP client (udhcpc) asks for addresses.
type VM struct {
	c     *Cluster
	Name  string
	Netns string
	dir   string

	mu   sync.Mutex
	nics map[string]string // interface -> network
}

// Lease is what the DHCP client obtained, as its hook script saw it.
type Lease struct {
	Interface string
	IP        string
	Mask      int
	Router    string
	DNS       []string
	Domain    string
	Search    string
	MTU       int
	LeaseTime int
	ServerID  string
	NTP       []string
}

func (l *Lease) String() string {
	s := fmt.Sprintf("%s: address %s/%d gateway %s dns %s", l.Interface, l.IP, l.Mask, l.Router, strings.Join(l.DNS, ","))
	if l.Domain != "" {
		s += " domain " + l.Domain
	}
	if l.MTU != 0 {
		s += fmt.Sprintf(" mtu %d", l.MTU)
	}
	return s + fmt.Sprintf(" lease %ds from server %s", l.LeaseTime, l.ServerID)
}

// hookScript records the lease for the caller and configures the VM's own
// interface; it runs inside the VM's namespace, so it touches nothing else
// (never the host's resolv.conf).
const hookScript = `#!/bin/sh
# udhcpc hook of a local-cluster VM: record the lease, configure the NIC.
case "$1" in
bound|renew)
  f="$VMDHCP_LEASE_DIR/$interface.lease"
  {
    echo "ip=$ip"; echo "mask=$mask"; echo "router=$router"; echo "dns=$dns"
    echo "domain=$domain"; echo "search=$search"; echo "mtu=$mtu"; echo "lease=$lease"
    echo "serverid=$serverid"; echo "ntpsrv=$ntpsrv"
  } > "$f.tmp" && mv "$f.tmp" "$f"
  ip addr flush dev "$interface"
  ip addr add "$ip/${mask:-24}" dev "$interface"
  [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
  ;;
deconfig)
  ip addr flush dev "$interface"
  ;;
esac
exit 0
`

// StartVM creates the namespace of a VM guest, without NICs.
func (c *Cluster) StartVM(ctx context.Context, name string) (*VM, error) {
	vm := &VM{c: c, Name: name, Netns: c.opts.NetnsPrefix + "vm-" + name,
		dir: filepath.Join(c.opts.WorkDir, "vms", name), nics: map[string]string{}}
	if err := os.MkdirAll(vm.dir, 0o755); err != nil {
		return nil, fmt.Errorf("VM folder: %w", err)
	}
	if err := os.WriteFile(filepath.Join(vm.dir, "udhcpc-hook.sh"), []byte(hookScript), 0o755); err != nil {
		return nil, fmt.Errorf("VM hook script: %w", err)
	}
	if err := vm.c.addNetns(ctx, vm.Netns); err != nil {
		return nil, fmt.Errorf("VM %s: %w", name, err)
	}
	return vm, nil
}

// AddNIC plugs interface iface with the given MAC into network.
func (vm *VM) AddNIC(ctx context.Context, iface, mac, network string) error {
	if err := vm.c.network.plug(ctx, network, vm.Netns, iface, mac); err != nil {
		return fmt.Errorf("VM %s: %w", vm.Name, err)
	}
	vm.mu.Lock()
	vm.nics[iface] = network
	vm.mu.Unlock()
	return nil
}

// RemoveNIC unplugs interface iface.
func (vm *VM) RemoveNIC(ctx context.Context, iface string) error {
	if err := vm.c.network.unplug(ctx, vm.Netns, iface); err != nil {
		return fmt.Errorf("VM %s: %w", vm.Name, err)
	}
	vm.mu.Lock()
	delete(vm.nics, iface)
	vm.mu.Unlock()
	return nil
}

// DHCP runs udhcpc once on iface (DISCOVER, OFFER, REQUEST, ACK) and returns
// the lease, or an error with the client's output when it got none.
func (vm *VM) DHCP(ctx context.Context, iface string, timeout time.Duration) (*Lease, error) {
	l, err := RunDHCP(ctx, vm.Netns, iface, vm.dir, timeout)
	if err != nil {
		return nil, fmt.Errorf("VM %s: %w", vm.Name, err)
	}
	return l, nil
}

// RunDHCP runs udhcpc once on iface inside network namespace netns, with
// its hook script and lease files in dir, and returns the lease. The demo's
// `dhcp` command uses it to ask again for a running VM.
func RunDHCP(ctx context.Context, netns, iface, dir string, timeout time.Duration) (*Lease, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("DHCP folder: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "udhcpc-hook.sh"), []byte(hookScript), 0o755); err != nil {
		return nil, fmt.Errorf("DHCP hook script: %w", err)
	}
	leaseFile := filepath.Join(dir, iface+".lease")
	_ = os.Remove(leaseFile)
	tries := int(timeout/time.Second) + 1
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", netns, "udhcpc", "-i", iface, "-f", "-q", "-n",
		"-t", strconv.Itoa(tries), "-T", "1", "-A", "1", "-s", filepath.Join(dir, "udhcpc-hook.sh"),
		"-O", "mtu", "-O", "search", "-O", "ntpsrv", "-O", "domain")
	cmd.Env = append(os.Environ(), "VMDHCP_LEASE_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("udhcpc on %s in %s got no lease: %w\n%s", iface, netns, err, strings.TrimSpace(string(out)))
	}
	l, err := readLease(leaseFile)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, strings.TrimSpace(string(out)))
	}
	l.Interface = iface
	return l, nil
}

func readLease(path string) (*Lease, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read lease: %w", err)
	}
	defer f.Close()
	l := &Lease{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "ip":
			l.IP = v
		case "mask":
			l.Mask, _ = strconv.Atoi(v)
		case "router":
			if r := strings.Fields(v); len(r) > 0 {
				l.Router = r[0]
			}
		case "dns":
			l.DNS = strings.Fields(v)
		case "domain":
			l.Domain = v
		case "search":
			l.Search = v
		case "mtu":
			l.MTU, _ = strconv.Atoi(v)
		case "lease":
			l.LeaseTime, _ = strconv.Atoi(v)
		case "serverid":
			l.ServerID = v
		case "ntpsrv":
			l.NTP = strings.Fields(v)
		}
	}
	if l.IP == "" || l.IP == "0.0.0.0" {
		return nil, fmt.Errorf("lease in %s has no address", path)
	}
	return l, nil
}

// Stop removes the VM's namespace and its NICs.
func (vm *VM) Stop() error {
	return delNetns(vm.Netns)
}
