#!/usr/bin/env bash
# DHCP throughput: vm-dhcp-agent (ippool-lease + harvester-options, leases
# from a snapshot, no API server) vs upstream CoreDHCP's `file` plugin vs Kea
# with host reservations, each serving the same 4,096 static leases, driven
# by perfdhcp at rising rates and in the avalanche scenario. Servers are run
# alternately (one at a time) so they never compete for the CPU.
#
# Everything runs in two network namespaces this script creates and removes
# (server and client joined by a veth pair); perfdhcp acts as a relay, so the
# client namespace holds an address of the served subnet.
#
# --family 6 (or -6) does the same for DHCPv6: Solicit/Advertise/Request/Reply
# (perfdhcp -6 -A1, a relay), the agent's server6 half serving
# status.ipv6.allocated, CoreDHCP's `file` plugin in server6 with the same
# MAC -> IPv6 leases, and kea-dhcp6 with the same reservations by DUID. The
# clients' DUIDs are DUID-LL of the MACs of the list (perfdhcp -M), and
# perfdhcp relays from a unicast address that is not a modified EUI-64 one:
# CoreDHCP's file plugin (dhcpv6.ExtractMAC) takes the MAC from an EUI-64
# peer-address before the DUID, which would give all clients the relay's MAC.
#
# Before measuring, each server is checked to hand a sample of clients
# exactly their reserved addresses (bench/dhcp/verify.py, a packet capture).
#
# Usage (root): bench/dhcp/run.sh [--family 4|6] [--rates "1000 4000 6000 8000 10000"] [--period 10]
#               [--rounds 1] [--servers "vm-dhcp-agent coredhcp-file kea"] [--no-avalanche] [--no-pin] [--server-cpu 50] [--no-docs]
# Debugging: BENCH_GO_ENV="GODEBUG=gctrace=1" is set for the two Go servers,
# BENCH_LOG_DIR keeps each server's log, BENCH_AGENT_BIN runs a prebuilt agent, BENCH_PPROF_DIR a CPU profile of
# each Go server's run, BENCH_DEBUG=1 prints perfdhcp's output.
# --servers narrows a run (e.g. when profiling); docs are only written when
# all three ran.
# Writes the table into the "## DHCP throughput" (IPv4) or "## DHCPv6
# throughput" section of docs/benchmarks.md.
set -euo pipefail

RATES="1000 4000 6000 8000 10000"
PERIOD=10
ROUNDS=1
WRITE_DOCS=1
SERVER_LIST="vm-dhcp-agent coredhcp-file kea"
AVALANCHE=1
PIN=1
SERVER_CPU=50
FAMILY=4
while [[ $# -gt 0 ]]; do
  case "$1" in
    --family) FAMILY="$2"; shift 2 ;;
    -4) FAMILY=4; shift ;;
    -6) FAMILY=6; shift ;;
    --rates) RATES="$2"; shift 2 ;;
    --period) PERIOD="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --servers) SERVER_LIST="$2"; shift 2 ;;
    --no-avalanche) AVALANCHE=0; WRITE_DOCS=0; shift ;;
    --no-pin) PIN=0; shift ;;
    --server-cpu) SERVER_CPU="$2"; shift 2 ;;
    --no-docs) WRITE_DOCS=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $FAMILY == 4 || $FAMILY == 6 ]] || { echo "--family is 4 or 6" >&2; exit 2; }

[[ $EUID -eq 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
for tool in ip perfdhcp "kea-dhcp$FAMILY" go python3; do
  command -v "$tool" >/dev/null || { echo "$tool missing (Debian: kea-admin provides perfdhcp, kea-dhcp$FAMILY-server)" >&2; exit 1; }
done

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d /tmp/vm-dhcp-bench.XXXXXX)"
ID="$(printf '%04x' $((RANDOM % 65536)))"
SRV_NS="vmdhcp-bench-$ID-s"; CLI_NS="vmdhcp-bench-$ID-c"
SRV_IF="bs$ID"; CLI_IF="bc$ID"
SERVER_IP=10.250.0.1; CLIENT_IP=10.250.0.2; PREFIX=16
# IPv6: the client's address (perfdhcp's relay address, hence the
# peer-address of its Relay-Forward messages) has no ff:fe in the middle, so
# no server mistakes it for a modified EUI-64 address.
SERVER_IP6=fd00:250::1; CLIENT_IP6=fd00:250::2; PREFIX6=64
SERVER_DUID=02:00:00:00:aa:01
N=4096
if [[ $FAMILY == 6 ]]; then
  # -A1: relay (Relay-Forward to the server's unicast address, from port 547).
  PERF=(perfdhcp -6 -l "$CLIENT_IP6" -A1); PERF_SERVER="$SERVER_IP6"; KEA=kea-dhcp6
else
  PERF=(perfdhcp -4 -l "$CLI_IF"); PERF_SERVER="$SERVER_IP"; KEA=kea-dhcp4
fi
SERVER_PID=""
CURRENT=""

cleanup() {
  stop_server
  for ns in "$SRV_NS" "$CLI_NS"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  [[ -z "${CGROUP:-}" ]] || rmdir "$CGROUP" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# --server-cpu P (default 50) caps every server at P % of one core with a
# CPU cgroup (quota per 10 ms). Without a cap the servers need less CPU per
# exchange than perfdhcp does (measured: 60-90 µs vs ~95-130 µs), so on two
# cores perfdhcp saturates first and a "saturation" figure measures the
# client. With the cap the servers saturate well below the client's limit.
CGROUP=""
if [[ $SERVER_CPU -gt 0 ]]; then
  if [[ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
    CGROUP="/sys/fs/cgroup/cpu/vmdhcp-bench-$ID"
    mkdir "$CGROUP"
    echo 10000 >"$CGROUP/cpu.cfs_period_us"
    echo $((SERVER_CPU * 100)) >"$CGROUP/cpu.cfs_quota_us"
  elif grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    CGROUP="/sys/fs/cgroup/vmdhcp-bench-$ID"
    mkdir "$CGROUP"
    [[ -f "$CGROUP/cpu.max" ]] || { echo "cpu controller not enabled for $CGROUP: run with --server-cpu 0" >&2; exit 1; }
    echo "$((SERVER_CPU * 100)) 10000" >"$CGROUP/cpu.max"
  else
    echo "no CPU cgroup controller here: run with --server-cpu 0" >&2; exit 1
  fi
fi

stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    if [[ -n "${BENCH_LOG_DIR:-}" ]]; then
      mkdir -p "$BENCH_LOG_DIR"
      cp "$WORK/server.log" "$BENCH_LOG_DIR/$CURRENT-$(date +%s%N).log"
    fi
  fi
}

if [[ -n "${BENCH_AGENT_BIN:-}" ]]; then
  # A prebuilt agent, e.g. to compare two builds of it.
  cp "$BENCH_AGENT_BIN" "$WORK/vm-dhcp-agent"
else
  echo "building vm-dhcp-agent (CGO_ENABLED=0)..." >&2
  (cd "$ROOT" && CGO_ENABLED=0 go build -o "$WORK/vm-dhcp-agent" ./coredhcp-build)
fi

# --- the 4,096 leases, in each server's format -------------------------------
# MAC i is 02:00:00:01:hi:lo; its IPv4 address 10.250.(16+hi).lo, its IPv6
# address fd00:250::1:i.
python3 - "$WORK" "$N" "$FAMILY" "$SRV_IF" "$SERVER_DUID" <<'PY'
import json, sys
work, n, family, srv_if, server_duid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
macs, alloc, alloc6, leases, resv, resv6 = [], {}, {}, [], [], []
for i in range(n):
    mac = "02:00:00:01:%02x:%02x" % (i >> 8, i & 0xff)
    ip = "10.250.%d.%d" % (16 + (i >> 8), i & 0xff)
    ip6 = "fd00:250::1:%x" % i
    macs.append(mac); alloc[ip] = mac; alloc6[ip6] = mac
    leases.append("%s %s" % (mac, ip if family == 4 else ip6))
    resv.append({"hw-address": mac, "ip-address": ip})
    # perfdhcp -6 -M sends DUID-LL (type 3, hardware type 1) of the MAC.
    resv6.append({"duid": "00:03:00:01:" + mac, "ip-addresses": [ip6]})
open(f"{work}/macs.txt", "w").write("\n".join(macs) + "\n")
open(f"{work}/file_leases.txt", "w").write("\n".join(leases) + "\n")
cfg = {"serverIP": "10.250.0.1", "cidr": "10.250.0.0/16",
       "pool": {"start": "10.250.16.0", "end": "10.250.31.255"},
       "router": "10.250.0.254", "dns": ["10.250.0.53"], "leaseTime": 3600}
snap = {"version": 1, "savedAt": "2026-01-01T00:00:00Z", "namespace": "bench", "name": "pool",
        "exists": True, "ipv4Config": cfg, "allocated": alloc}
if family == 6:
    # A dual-stack pool; lifetimes as CoreDHCP's file plugin hands out (1 h).
    snap["ipv6Config"] = {"cidr": "fd00:250::/64", "serverIP": "fd00:250::1",
                          "pool": {"start": "fd00:250::1:0", "end": "fd00:250::1:ffff"},
                          "dns": ["fd00:250::53"], "domainSearch": ["bench.example"],
                          "preferredLifetime": 3600, "validLifetime": 3600}
    snap["allocated6"] = alloc6
json.dump(snap, open(f"{work}/snapshot.json", "w"))
logger = lambda name: [{"name": name, "severity": "ERROR", "output_options": [{"output": "stdout"}]}]
if family == 4:
    kea = {"Dhcp4": {
        "interfaces-config": {"interfaces": [srv_if], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "memfile", "persist": False},
        "host-reservation-identifiers": ["hw-address"],
        "valid-lifetime": 3600,
        "subnet4": [{"id": 1, "subnet": "10.250.0.0/16", "reservations": resv,
                     "option-data": [{"name": "routers", "data": "10.250.0.254"},
                                     {"name": "domain-name-servers", "data": "10.250.0.53"}]}],
        "loggers": logger("kea-dhcp4")}}
else:
    # No pool: a client without a reservation gets no address, so every
    # address handed out is a reserved one. "if/addr" also listens on the
    # unicast address perfdhcp relays to; the subnet is chosen by the relay's
    # link-address (perfdhcp's own, in the subnet).
    kea = {"Dhcp6": {
        "interfaces-config": {"interfaces": [srv_if + "/fd00:250::1"]},
        "lease-database": {"type": "memfile", "persist": False},
        "server-id": {"type": "LL", "htype": 1, "identifier": server_duid.replace(":", ""), "persist": False},
        "host-reservation-identifiers": ["duid"],
        "preferred-lifetime": 3600, "valid-lifetime": 3600,
        "subnet6": [{"id": 1, "subnet": "fd00:250::/64", "reservations": resv6,
                     "option-data": [{"name": "dns-servers", "data": "fd00:250::53"},
                                     {"name": "domain-search", "data": "bench.example"}]}],
        "loggers": logger("kea-dhcp6")}}
json.dump(kea, open(f"{work}/kea.json", "w"))
PY

# The agent never reaches an API server here: the kubeconfig points at a
# closed loopback port of the server namespace, so the pool comes from the
# snapshot, as after an outage.
cat > "$WORK/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
KC
if [[ $FAMILY == 4 ]]; then
cat > "$WORK/agent.yaml" <<YAML
server4:
  listen: ["%$SRV_IF"]
  plugins:
    - server_id: $SERVER_IP
    - harvester-options: bench/pool kubeconfig=$WORK/kubeconfig
    - ippool-lease: bench/pool snapshot=$WORK/snapshot.json kubeconfig=$WORK/kubeconfig
YAML
# Upstream CoreDHCP's file plugin with the same options (router, DNS,
# netmask, lease time), run by the same binary: it registers CoreDHCP's
# core plugins unchanged.
cat > "$WORK/file.yaml" <<YAML
server4:
  listen: ["%$SRV_IF"]
  plugins:
    - server_id: $SERVER_IP
    - lease_time: 3600s
    - router: 10.250.0.254
    - netmask: 255.255.0.0
    - dns: 10.250.0.53
    - file: $WORK/file_leases.txt
YAML
else
# "%if": [::]:547 on the server's interface, where perfdhcp's relayed
# messages arrive (unicast). The agent's production config listens on
# ff02::1:2 for clients on the link; the handlers are the same.
cat > "$WORK/agent.yaml" <<YAML
server6:
  listen: ["%$SRV_IF"]
  plugins:
    - server_id: LL $SERVER_DUID
    - harvester-options: bench/pool kubeconfig=$WORK/kubeconfig
    - ippool-lease: bench/pool snapshot=$WORK/snapshot.json kubeconfig=$WORK/kubeconfig
YAML
# The same options as the pool's (DNS, search list: perfdhcp's Option
# Request), then the file plugin (1 h lifetimes, fixed in its code).
cat > "$WORK/file.yaml" <<YAML
server6:
  listen: ["%$SRV_IF"]
  plugins:
    - server_id: LL $SERVER_DUID
    - dns: fd00:250::53
    - searchdomains: bench.example
    - file: $WORK/file_leases.txt
YAML
fi

# --- namespaces ---------------------------------------------------------------
ip netns add "$SRV_NS"; ip netns add "$CLI_NS"
ip link add "$SRV_IF" netns "$SRV_NS" type veth peer name "$CLI_IF" netns "$CLI_NS"
ip -n "$SRV_NS" link set lo up; ip -n "$CLI_NS" link set lo up
if [[ $FAMILY == 6 ]]; then
  # No duplicate address detection: addresses (and the link-local ones Kea
  # binds to) are usable at once instead of tentative.
  for ns in "$SRV_NS" "$CLI_NS"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  done
  ip netns exec "$SRV_NS" sysctl -qw "net.ipv6.conf.$SRV_IF.accept_dad=0"
  ip netns exec "$CLI_NS" sysctl -qw "net.ipv6.conf.$CLI_IF.accept_dad=0"
  ip -n "$SRV_NS" addr add "$SERVER_IP6/$PREFIX6" dev "$SRV_IF" nodad
  ip -n "$CLI_NS" addr add "$CLIENT_IP6/$PREFIX6" dev "$CLI_IF" nodad
fi
ip -n "$SRV_NS" addr add "$SERVER_IP/$PREFIX" dev "$SRV_IF"; ip -n "$SRV_NS" link set "$SRV_IF" up
ip -n "$CLI_NS" addr add "$CLIENT_IP/$PREFIX" dev "$CLI_IF"; ip -n "$CLI_NS" link set "$CLI_IF" up
sleep 1

PPROF_FLAG=""
[[ -z "${BENCH_PPROF_DIR:-}" ]] || PPROF_FLAG="--pprof"
# With --pin (default on 2+ cores) every server runs on CPU 0 and perfdhcp
# on CPU 1, so the scheduler never makes them take turns on one core: that
# turn-taking, not the servers, decided most drops at saturation.
SRV_PIN=""; CLI_PIN=""
if [[ $PIN -eq 1 && $(nproc) -ge 2 ]]; then
  SRV_PIN="taskset -c 0"; CLI_PIN="taskset -c 1"
fi
start_server() { # name
  CURRENT="$1"
  case "$1" in
    vm-dhcp-agent)
      ip netns exec "$SRV_NS" $SRV_PIN env ${BENCH_GO_ENV:-} "$WORK/vm-dhcp-agent" -c "$WORK/agent.yaml" --loglevel error --nocolors --health-addr 127.0.0.1:18080 $PPROF_FLAG \
        >"$WORK/server.log" 2>&1 & ;;
    coredhcp-file)
      ip netns exec "$SRV_NS" $SRV_PIN env ${BENCH_GO_ENV:-} "$WORK/vm-dhcp-agent" -c "$WORK/file.yaml" --loglevel error --nocolors --health-addr 127.0.0.1:18080 $PPROF_FLAG \
        >"$WORK/server.log" 2>&1 & ;;
    kea)
      mkdir -p "$WORK/kea-run"
      KEA_PIDFILE_DIR="$WORK/kea-run" KEA_LOCKFILE_DIR="$WORK/kea-run" \
        ip netns exec "$SRV_NS" $SRV_PIN "$KEA" -c "$WORK/kea.json" >"$WORK/server.log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  # ip netns exec, taskset and env exec the server: same PID.
  [[ -z "$CGROUP" ]] || echo "$SERVER_PID" >"$CGROUP/cgroup.procs"
  # Ready when one known client gets an OFFER (bounded: 30 tries). The
  # output is captured first: grep -q on a pipe would kill perfdhcp with
  # SIGPIPE and fail the pipeline under pipefail.
  local out
  for _ in $(seq 30); do
    out="$(ip netns exec "$CLI_NS" timeout 5 "${PERF[@]}" -r 1 -n 1 -W 1000000 -M "$WORK/macs.txt" "$PERF_SERVER" 2>&1 || true)"
    if grep -q "received packets: 1" <<<"$out"; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "$1 exited:" >&2; cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.5
  done
  echo "$1 did not answer" >&2; cat "$WORK/server.log" >&2; echo "$out" >&2; exit 1
}

# perfdhcp prints per exchange "sent packets", "received packets", "drops
# ratio", and "Rate: X 4-way exchanges/second".
# cpu_ticks: user+system clock ticks the server process has used so far.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"
}

run_rate() { # rate [seconds] -> "rate acks drops% avg_ms server_cpu_us_per_exchange perfdhcp_cpu_us_per_exchange"
  local out t0 t1 period="${2:-$PERIOD}"
  # perfdhcp exits non-zero when packets were dropped: that is a result here.
  local prof=""
  if [[ -n "${BENCH_PPROF_DIR:-}" && "$CURRENT" != kea ]]; then
    # CPU profile of the server for most of the run (the agent is started
    # with --pprof when BENCH_PPROF_DIR is set).
    mkdir -p "$BENCH_PPROF_DIR"
    ip netns exec "$SRV_NS" curl -s -o "$BENCH_PPROF_DIR/$CURRENT-$1-$(date +%s).pprof" \
      "http://127.0.0.1:18080/debug/pprof/profile?seconds=$((period - 2))" &
    prof=$!
  fi
  t0=$(cpu_ticks)
  # bash's time keyword reports perfdhcp's own CPU: when it nears the
  # period, the client, not the server, is what limits the rate.
  out="$(TIMEFORMAT='CLIENT_CPU %U %S'; { time ip netns exec "$CLI_NS" $CLI_PIN timeout $((period + 30)) "${PERF[@]}" \
    -r "$1" -p "$period" -W 1000000 -M "$WORK/macs.txt" "$PERF_SERVER" 2>&1 || true; } 2>&1)"
  t1=$(cpu_ticks)
  [[ -z "$prof" ]] || wait "$prof" || true
  [[ -n "${BENCH_DEBUG:-}" ]] && echo "$out" >&2
  python3 -c '
import re, sys
out = sys.stdin.read()
rate = re.search(r"Rate: ([0-9.]+) 4-way", out)
recv = re.findall(r"received packets: (\d+)", out)
sent = re.findall(r"sent packets: (\d+)", out)
avg = re.findall(r"avg delay: ([0-9.]+) ms", out)
acks = int(recv[1]) if len(recv) > 1 else 0
disc = int(sent[0]) if sent else 0
drops = 100.0 * (disc - acks) / disc if disc else 100.0
# Server CPU per ACK in microseconds (process user + system time; the
# softirq work of the kernel is counted only where it ran in the process).
ticks, hz = int(sys.argv[2]) - int(sys.argv[1]), int(sys.argv[3])
cpu = "%.1f" % (1e6 * ticks / hz / acks) if acks else "-"
client = re.search(r"CLIENT_CPU ([0-9.]+) ([0-9.]+)", out)
ccpu = "%.1f" % (1e6 * (float(client.group(1)) + float(client.group(2))) / acks) if client and acks else "-"
print("%.0f %d %.1f %s %s %s" % (float(rate.group(1)) if rate else 0, acks, drops, avg[1] if len(avg) > 1 else "-", cpu, ccpu))' "$t0" "$t1" "$(getconf CLK_TCK)" <<<"$out"
}

run_avalanche() { # -> "wall_seconds rate acks retransmissions"
  local t0 t1 out
  t0=$(date +%s.%N)
  out="$(ip netns exec "$CLI_NS" $CLI_PIN timeout 120 "${PERF[@]}" --scenario avalanche -R "$N" -W 1000000 \
    -M "$WORK/macs.txt" "$PERF_SERVER" 2>&1 || true)"
  t1=$(date +%s.%N)
  [[ -n "${BENCH_DEBUG:-}" ]] && echo "$out" >&2
  python3 -c '
import re, sys
out, wall = sys.stdin.read(), float(sys.argv[2]) - float(sys.argv[1])
rate = re.search(r"Rate: ([0-9.]+) 4-way", out)
recv = re.findall(r"received packets: (\d+)", out)
# perfdhcp prints cumulative "retrying N" per exchange while it waits.
retry = {}
for ex, n in re.findall(r"(DISCOVER-OFFER|REQUEST-ACK|SOLICIT-ADVERTISE|REQUEST-REPLY): still waiting .* retrying (\d+)", out):
    retry[ex] = int(n)
print("%.1f %.0f %s %d" % (wall, float(rate.group(1)) if rate else 0, recv[1] if len(recv) > 1 else "0", sum(retry.values())))' "$t0" "$t1" <<<"$out"
}

# verify_server: a sample of 200 clients (random MACs of the list) at
# 100/s, every Offer/ACK or Advertise/Reply captured and checked against
# the client's reserved address. A server that answers with another or no
# address would make its figures meaningless: the run stops.
VERIFY="$WORK/verify.txt"
verify_server() { # name
  local line
  line="$(ip netns exec "$CLI_NS" python3 "$ROOT/bench/dhcp/verify.py" --family "$FAMILY" --iface "$CLI_IF" \
    --leases "$WORK/file_leases.txt" --min 180 -- "${PERF[@]}" -r 100 -n 200 -W 1000000 -M "$WORK/macs.txt" "$PERF_SERVER")" ||
    { echo "$1 did not hand out the reserved addresses" >&2; exit 1; }
  echo "$1: $line" >&2
  echo "$1: $line" >>"$VERIFY"
}

read -r -a SERVERS <<<"$SERVER_LIST"
[[ ${#SERVERS[@]} -eq 3 ]] || WRITE_DOCS=0
RESULTS="$WORK/results.txt" # server kind round values...
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
# Warm-up, not recorded: the first run after the namespaces are made was
# slower for whichever server came first (kernel and page-cache warm-up).
for s in "${SERVERS[@]}"; do
  start_server "$s"
  verify_server "$s"
  run_rate 2000 3 >/dev/null
  stop_server
done
for round in $(seq "$ROUNDS"); do
  # Rotate the order every round so no server always runs right after
  # another one's saturation run.
  k=$(( (round - 1) % ${#SERVERS[@]} ))
  order=("${SERVERS[@]:k}" "${SERVERS[@]:0:k}")
  for rate in $RATES; do
    for s in "${order[@]}"; do
      start_server "$s"
      r="$(run_rate "$rate")"
      stop_server
      echo "round $round rate $rate $s: $r" >&2
      echo "$s $rate $round $r" >>"$RESULTS"
    done
  done
  for s in "${order[@]}"; do
    [[ $AVALANCHE -eq 1 ]] || break
    start_server "$s"
    r="$(run_avalanche)"
    stop_server
    echo "round $round avalanche $s: $r" >&2
    echo "$s avalanche $round $r" >>"$RESULTS"
  done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- table (one python run: interpreter start-up is slow on some hosts) ------
TABLE="$WORK/table.md"
PERF_CMD="ip netns exec CLIENT_NS ${PERF[*]/$CLI_IF/CLIENT_IF} -r RATE -p $PERIOD -W 1000000 -M macs.txt $PERF_SERVER"
python3 - "$RESULTS" "$N" "$PERIOD" "$ROUNDS" "$(nproc)" "$(uname -r)" "$LOAD_BEFORE" "$LOAD_AFTER" "$RATES" "${SRV_PIN:+pinned}" "$SERVER_CPU" \
  "$FAMILY" "$VERIFY" "$PERF_CMD" >"$TABLE" <<'PY'
import sys, time
from collections import defaultdict
path, n, period, rounds, cores, kernel, load0, load1, rates, pinned, servercpu, family, verify, cmd = sys.argv[1:]
rates = rates.split()
ack, req = ("ACK", "REQUEST-ACK") if family == "4" else ("REPLY", "REQUEST-REPLY")
res = defaultdict(list)
for line in open(path):
    f = line.split()
    res[(f[0], f[1])].append(f[3:])
def median(xs):
    # The median: on a shared 2-core host one disturbed round should not
    # move the figure; every round's value is printed next to it.
    xs = sorted(xs)
    if not xs:
        return 0.0
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2
servers = ["vm-dhcp-agent", "coredhcp-file", "kea"]
print(f"Run {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} on {cores} cores ({kernel}), servers and perfdhcp on the same "
      f"machine; load average {load0} before, {load1} after (other work on the host counts in).")
pin = ("each server pinned to CPU 0 and perfdhcp to CPU 1 (taskset)" if pinned else "not pinned to CPUs")
cap = (f"each server capped at {servercpu} % of one core (CPU cgroup) so that it, not perfdhcp, saturates first"
       if servercpu != "0" else "servers not capped (perfdhcp may saturate before them)")
print(f"{n} static leases, perfdhcp as a relay, {period} s per rate, {rounds} round(s), servers alternated (order rotated "
      f"each round) after one unrecorded warm-up run each, {pin}, {cap}, logging at error level. Figures are medians over the rounds; {ack}/s is perfdhcp's \"Rate\" "
      f"(4-way exchanges/s, divided by period + 1 s exit wait: a perfect run at r/s prints about r*{period}/{int(period)+1}).")
print()
print(f"Each rate: `{cmd}`.")
print()
print("Checked first (`bench/dhcp/verify.py`, every reply to a 200-client sample captured on the client's interface and "
      "compared with the client's reserved address):")
print()
for line in open(verify):
    print(f"- {line.strip()}")
print()
print(f"| offered/s | vm-dhcp-agent {ack}/s | CoreDHCP file {ack}/s | Kea {ack}/s | agent vs file | drops agent / file / Kea | avg {req} ms agent / file / Kea | server CPU µs per exchange agent / file / Kea | per-round agent / file {ack}/s |")
print("|---:|---:|---:|---:|---:|---|---|---|---|")
for r in rates:
    acks = {s: median([float(v[0]) for v in res[(s, r)]]) for s in servers}
    drops = " / ".join("%.1f %%" % median([float(v[2]) for v in res[(s, r)]]) for s in servers)
    delay = " / ".join("%.2f" % median([float(v[3]) for v in res[(s, r)] if v[3] != "-"]) for s in servers)
    cpu = " / ".join("%.1f" % median([float(v[4]) for v in res[(s, r)] if len(v) > 4 and v[4] != "-"]) for s in servers)
    rel = "%+.1f %%" % (100 * (acks["vm-dhcp-agent"] - acks["coredhcp-file"]) / acks["coredhcp-file"]) if acks["coredhcp-file"] else "-"
    per = ", ".join("%s/%s" % (a[0], b[0]) for a, b in zip(res[("vm-dhcp-agent", r)], res[("coredhcp-file", r)]))
    print(f"| {r} | {acks['vm-dhcp-agent']:.0f} | {acks['coredhcp-file']:.0f} | {acks['kea']:.0f} | {rel} | {drops} | {delay} | {cpu} | {per} |")
if any(res[(s, "avalanche")] for s in servers):
    print()
    print(f"Avalanche (`--scenario avalanche -R {n}`: every client at once, perfdhcp retransmits until all are bound), medians over the rounds:")
    print()
    print(f"| server | wall time (s) | perfdhcp rate | {ack}s received | retransmissions |")
    print("|---|---:|---:|---:|---:|")
    for s in servers:
        v = res[(s, "avalanche")]
        print("| %s | %.1f | %.0f | %.0f | %.0f |" % (s, median([float(x[0]) for x in v]), median([float(x[1]) for x in v]),
                                                 median([float(x[2]) for x in v]), median([float(x[3]) for x in v])))
PY
cat "$TABLE"

if [[ $WRITE_DOCS -eq 1 ]]; then
  DOC="$ROOT/docs/benchmarks.md"
  python3 - "$DOC" "$TABLE" "$FAMILY" <<'PY'
import os, re, sys
doc, table, family = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
if family == "4":
    title = "DHCP throughput"
    intro = ("`bench/dhcp/run.sh` (root): vm-dhcp-agent serving an IPPool of 4,096 allocations from its snapshot, "
             "upstream CoreDHCP's `file` plugin with the same leases and options, and Kea 2.2 with the same 4,096 host "
             "reservations, driven by perfdhcp in network namespaces.")
else:
    title = "DHCPv6 throughput"
    intro = ("`bench/dhcp/run.sh --family 6` (root): vm-dhcp-agent's server6 half serving an IPPool whose "
             "`status.ipv6.allocated` holds 4,096 MACs (from its snapshot), upstream CoreDHCP's `file` plugin in server6 "
             "with the same MAC → IPv6 leases and options (DNS, search list), and kea-dhcp6 2.2 with the same 4,096 "
             "reservations by DUID and no dynamic pool, driven by perfdhcp -6 (Solicit, Advertise, Request, Reply) "
             "acting as a relay, in network namespaces.")
section = f"## {title}\n\n{intro}\n\n{table}\n"
text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n\n"
m = re.search(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
text = text[:m.start()] + section + text[m.end():] if m else text.rstrip("\n") + "\n\n" + section
open(doc, "w").write(text)
PY
  echo "wrote $DOC" >&2
fi
