package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hookDAD6 is a dhclient -6 hook that, like Debian's dhclient-script, adds
// a bound address with duplicate address detection and exits 3 when DAD
// fails: dhclient then DECLINEs the address (RFC 8415 18.2.8).
const hookDAD6 = `#!/bin/sh
reason="${reason:-$1}"
env > "$EVENTS/$(date +%s%N)-$reason.env"
case "$reason" in
BOUND6|RENEW6|REBIND6)
  [ -z "$new_ip6_address" ] && exit 0
  ip -6 addr replace "$new_ip6_address/128" dev "$interface"
  i=0
  while [ $i -lt 50 ]; do
    if ip -6 addr show dev "$interface" to "$new_ip6_address" | grep -q dadfailed; then
      ip -6 addr del "$new_ip6_address/128" dev "$interface"
      exit 3
    fi
    ip -6 addr show dev "$interface" to "$new_ip6_address" | grep -q tentative || exit 0
    sleep 0.1
    i=$((i + 1))
  done
  ;;
esac
exit 0
`

// A real dhclient -6 whose address is already used by another host on the
// link (duplicate address detection fails) sends a real DECLINE. CoreDHCP's
// server6 drops it before any plugin; the agent must still answer it with a
// REPLY (Status Success, RFC 8415 18.3.8), so the client stops
// retransmitting, and log and count it with the address and the MAC.
func TestDHCPv6DeclineAnswered(t *testing.T) {
	const mac, ip = "02:00:00:00:00:52", "fd00:198::52"
	_, l, a, _ := startV6Agent(t, "decline6", mac, ip)
	// Another host on the link already uses the address; the client checks.
	run(t, "ip", "-n", l.srvNS, "-6", "addr", "add", ip+"/64", "dev", l.srvIf, "nodad")
	run(t, "ip", "netns", "exec", l.cliNS, "sysctl", "-qw", "net.ipv6.conf."+l.cliIf+".accept_dad=1", "net.ipv6.conf."+l.cliIf+".dad_transmits=1")

	dir := t.TempDir()
	defer stopDHClient(dir)
	events := filepath.Join(dir, "events")
	_ = os.MkdirAll(events, 0o755)
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte(strings.Replace(hookDAD6, "$EVENTS", events, 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "dhclient6.conf")
	if err := os.WriteFile(conf, []byte("timeout 10;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// -d: in the foreground (after a binding dhclient would go to the
	// background, holding our pipe). It declines, solicits again, gets the
	// same address (it is this MAC's), declines again, ... until stopped:
	// the conflict is for the operator to resolve. Its log shows what it
	// sent and received.
	logPath := filepath.Join(dir, "dhclient.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := runIn(context.Background(), l.cliNS, "dhclient", "-6", "-d", "-v", "-D", "LL", "-cf", conf, "-sf", hook,
		"-lf", filepath.Join(dir, "dhclient6.leases"), "-pf", filepath.Join(dir, "dhclient.pid"), l.cliIf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// The first DECLINE's exchange: DECLINE, then REPLY, then the next
	// SOLICIT, with no retransmitted DECLINE in between.
	var exchange string
	waitFor(t, 20*time.Second, "no DECLINE followed by a new SOLICIT in dhclient's log", func() bool {
		b, _ := os.ReadFile(logPath)
		_, after, ok := strings.Cut(string(b), "XMT: Decline on")
		if !ok {
			return false
		}
		exchange, _, ok = strings.Cut(after, "XMT: Solicit")
		return ok
	})
	if !strings.Contains(exchange, "RCV: Reply message") {
		t.Errorf("no REPLY to the DECLINE before dhclient gave up on it:\nXMT: Decline on%s", exchange)
	}
	if strings.Contains(exchange, "XMT: Decline on") {
		t.Errorf("DECLINE retransmitted: the agent's REPLY did not end it:\nXMT: Decline on%s", exchange)
	}
	waitFor(t, 5*time.Second, "no DHCPv6 DECLINE line with the MAC and the address in the agent's log", func() bool {
		return a.logHas("DHCPv6 DECLINE", mac, ip)
	})
	if n, _ := strconv.Atoi(a.metric(t, "vmdhcp_agent_declines_total")); n < 1 {
		t.Errorf("vmdhcp_agent_declines_total = %d, want at least 1", n)
	}
}
