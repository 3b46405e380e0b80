#!/usr/bin/env bash
# Installs the Debian packages the tests use when they are missing: real DHCP
# clients (dhclient, udhcpc, dhcpcd), perfdhcp and Kea for benchmarks, QEMU
# for the test VM (its kernel and busybox come from hack/vm-artifacts.sh), and
# the real node's runtime (containerd, runc, the CNI bridge/host-local/loopback
# plugins, iptables and conntrack for kube-proxy).
set -euo pipefail
need=()
command -v dhclient >/dev/null || need+=(isc-dhcp-client)
command -v udhcpc >/dev/null || need+=(udhcpc)
command -v dhcpcd >/dev/null || need+=(dhcpcd-base)
command -v perfdhcp >/dev/null || need+=(kea-admin)
command -v kea-dhcp4 >/dev/null || need+=(kea-dhcp4-server)
command -v kea-dhcp6 >/dev/null || need+=(kea-dhcp6-server)
command -v ip >/dev/null || need+=(iproute2)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
if [ ${#need[@]} -eq 0 ]; then
  echo "deps: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing ${need[*]}; run as root or install them" >&2
  exit 1
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
