package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hookScript records every event a DHCP client reports (one env dump per
// file) and puts the address on the interface so renewals can be unicast.
// It never touches resolv.conf or anything else of the host.
const hookScript = `#!/bin/sh
reason="${reason:-$1}"
env > "$EVENTS/$(date +%s%N)-$reason.env"
case "$reason" in
BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
bound|renew) ip addr replace "$ip/$subnet" dev "$interface" ;;
# A lost lease (NAK, expiry) takes the address away, as a real hook does.
EXPIRE|FAIL|RELEASE|STOP|deconfig) ip -4 addr flush dev "$interface" ;;
esac
exit 0
`

// lease is what a client was told, normalized across the three clients.
type lease struct {
	Reason                          string
	IP, Mask, Router                string
	DNS, Domain, Search, NTP        string
	LeaseTime, MTU, ClasslessRoutes string
}

// dhcpClient is one of the clients under test.
type dhcpClient struct {
	name string
	// start runs the client until it holds a lease (or fails) and returns
	// its events folder.
	start func(t *testing.T, l *link, dir string) error
}

func writeHook(t *testing.T, dir string) (hook, events string) {
	t.Helper()
	events = filepath.Join(dir, "events")
	if err := os.MkdirAll(events, 0o755); err != nil {
		t.Fatal(err)
	}
	hook = filepath.Join(dir, "hook.sh")
	script := strings.Replace(hookScript, "$EVENTS", events, 1)
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return hook, events
}

func runIn(ctx context.Context, ns string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

var udhcpc = dhcpClient{name: "udhcpc", start: func(t *testing.T, l *link, dir string) error {
	hook, _ := writeHook(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := runIn(ctx, l.cliNS, "udhcpc", "-i", l.cliIf, "-f", "-q", "-n", "-t", "4", "-T", "1", "-s", hook,
		"-O", "search", "-O", "ntpsrv", "-O", "mtu", "-O", "staticroutes", "-O", "domain", "-O", "lease").CombinedOutput()
	if err != nil {
		return fmt.Errorf("udhcpc: %w\n%s", err, out)
	}
	return nil
}}

// dhclient stays running (daemonized) after binding, renewing its lease;
// the test's namespace cleanup kills it.
var dhclient = dhcpClient{name: "dhclient", start: func(t *testing.T, l *link, dir string) error {
	hook, _ := writeHook(t, dir)
	conf := filepath.Join(dir, "dhclient.conf")
	if err := os.WriteFile(conf, []byte(`option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
request subnet-mask, routers, domain-name-servers, domain-name, domain-search, ntp-servers, interface-mtu,
  rfc3442-classless-static-routes, dhcp-lease-time, dhcp-renewal-time, dhcp-rebinding-time;
`), 0o644); err != nil {
		t.Fatal(err)
	}
	leases := filepath.Join(dir, "dhclient.leases") // fresh: no old lease to REQUEST
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := runIn(ctx, l.cliNS, "dhclient", "-4", "-1", "-v", "-cf", conf, "-sf", hook, "-lf", leases,
		"-pf", filepath.Join(dir, "dhclient.pid"), l.cliIf).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dhclient: %w\n%s", err, out)
	}
	return nil
}}

var dhcpcd = dhcpClient{name: "dhcpcd", start: func(t *testing.T, l *link, dir string) error {
	hook, _ := writeHook(t, dir)
	conf := filepath.Join(dir, "dhcpcd.conf")
	if err := os.WriteFile(conf, []byte("option subnet_mask, routers, domain_name_servers, domain_name, domain_search, "+
		"ntp_servers, interface_mtu, classless_static_routes, dhcp_lease_time, dhcp_renewal_time, dhcp_rebinding_time\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := runIn(ctx, l.cliNS, "dhcpcd", "-f", conf, "-4", "-1", "-B", "-A", "-t", "15", "-c", hook, l.cliIf).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dhcpcd: %w\n%s", err, out)
	}
	return nil
}}

// events returns the leases the hook recorded, oldest first, keeping only
// events that carry an address.
func events(t *testing.T, dir string) []lease {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "events", "*.env"))
	sort.Strings(files)
	var out []lease
	for _, f := range files {
		env := readEnv(t, f)
		var l lease
		if env["ip"] != "" { // udhcpc
			l = lease{Reason: env["1"], IP: env["ip"], Mask: env["subnet"], Router: env["router"], DNS: env["dns"],
				Domain: env["domain"], Search: env["search"], NTP: env["ntpsrv"], LeaseTime: env["lease"], MTU: env["mtu"],
				ClasslessRoutes: env["staticroutes"]}
			l.Reason = strings.TrimSuffix(strings.SplitN(filepath.Base(f), "-", 2)[1], ".env")
		} else if env["new_ip_address"] != "" { // dhclient, dhcpcd
			l = lease{Reason: env["reason"], IP: env["new_ip_address"], Mask: env["new_subnet_mask"], Router: env["new_routers"],
				DNS: env["new_domain_name_servers"], Domain: env["new_domain_name"], NTP: env["new_ntp_servers"],
				LeaseTime: env["new_dhcp_lease_time"], MTU: env["new_interface_mtu"]}
			l.Search = strings.Join(strings.Fields(strings.ReplaceAll(env["new_domain_search"], ". ", " ")), " ")
			l.Search = strings.TrimSuffix(l.Search, ".")
			if r := env["new_rfc3442_classless_static_routes"]; r != "" {
				l.ClasslessRoutes = decodeRFC3442(t, r)
			} else {
				l.ClasslessRoutes = env["new_classless_static_routes"]
			}
		} else {
			continue
		}
		out = append(out, l)
	}
	return out
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok {
			env[k] = strings.Trim(v, "'")
		}
	}
	return env
}

// decodeRFC3442 turns dhclient's byte list ("16 10 10 gw gw gw gw ...")
// into "dest/len gw ..." as udhcpc and dhcpcd print it, decoding the
// option independently of the server's encoder.
func decodeRFC3442(t *testing.T, s string) string {
	t.Helper()
	var b []int
	for _, f := range strings.Fields(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("option 121 from dhclient: %q", s)
		}
		b = append(b, n)
	}
	var parts []string
	for i := 0; i < len(b); {
		width := b[i]
		octets := (width + 7) / 8
		if i+1+octets+4 > len(b) {
			t.Fatalf("option 121 truncated: %q", s)
		}
		dst := []int{0, 0, 0, 0}
		copy(dst, b[i+1:i+1+octets])
		gw := b[i+1+octets : i+1+octets+4]
		parts = append(parts, fmt.Sprintf("%d.%d.%d.%d/%d %d.%d.%d.%d", dst[0], dst[1], dst[2], dst[3], width, gw[0], gw[1], gw[2], gw[3]))
		i += 1 + octets + 4
	}
	return strings.Join(parts, " ")
}
