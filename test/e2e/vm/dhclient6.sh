#!/bin/sh
# dhclient -6's hook in the test VM: applies the DHCPv6 address to eth0 as
# a guest OS would (with the lifetimes the server gave), merges the name
# servers and search list into resolv.conf beside udhcpc's, then prints one
# line on the console that reports what the guest now holds, read back from
# its kernel and resolv.conf rather than echoed from the reply:
#   VMDHCP bound6 ip6=fd00:198::41/128 dns6=fd00:198::53 search=example.internal valid=1200 preferred=600 uptime=9.12
# valid and preferred are the address's remaining lifetimes in the guest's
# kernel (a second below the server's when the hook ran late); dns6 is
# resolv.conf's IPv6 name servers, search its whole search list (both
# families' domains). Events: bound6, renew6, rebind6, and expire6 when the
# address is gone (dhclient's EXPIRE6, RELEASE6, STOP6).
# dhclient's own output goes to a log file (init.sh): this hook writes to
# the console itself.
exec >>/dev/console 2>&1
t=$(cut -d' ' -f1 /proc/uptime)

. /resolv.sh

case "$reason" in
BOUND6 | RENEW6 | REBIND6)
  [ -n "$new_ip6_address" ] || exit 0
  if [ -n "$old_ip6_address" ] && [ "$old_ip6_address" != "$new_ip6_address" ]; then
    ip -6 addr del "$old_ip6_address/${old_ip6_prefixlen:-128}" dev "$interface" 2>/dev/null
  fi
  # dhclient's prefix length for an IA_NA address is 128 (its
  # --address-prefix-len default).
  ip -6 addr replace "$new_ip6_address/${new_ip6_prefixlen:-128}" dev "$interface" \
    valid_lft "$new_max_life" preferred_lft "$new_preferred_life"
  {
    for d in $new_dhcp6_name_servers; do echo "nameserver $d"; done
    s=
    for d in $new_dhcp6_domain_search; do s="$s ${d%.}"; done
    [ -n "$s" ] && echo "search$s"
  } >/run/resolv.6
  resolv
  # The address as the kernel holds it, with its lifetimes.
  set -- $(ip -6 -o addr show dev "$interface" scope global | awk -v want="$new_ip6_address/${new_ip6_prefixlen:-128}" '
    { a = ""; v = ""; p = ""
      for (i = 1; i < NF; i++) {
        if ($i == "inet6") a = $(i + 1)
        if ($i == "valid_lft") v = $(i + 1)
        if ($i == "preferred_lft") p = $(i + 1)
      }
      if (a == want) { sub(/sec$/, "", v); sub(/sec$/, "", p); print a, v, p; exit } }')
  ns=$(awk '$1 == "nameserver" && $2 ~ /:/ {printf "%s%s", s, $2; s = ","}' /etc/resolv.conf)
  sl=$(awk '$1 == "search" {for (i = 2; i <= NF; i++) printf "%s%s", (i > 2 ? "," : ""), $i}' /etc/resolv.conf)
  case "$reason" in
  BOUND6) ev=bound6 ;;
  RENEW6) ev=renew6 ;;
  *) ev=rebind6 ;;
  esac
  echo "VMDHCP $ev ip6=$1 dns6=$ns search=$sl valid=$2 preferred=$3 uptime=$t"
  ;;
EXPIRE6 | RELEASE6 | STOP6)
  [ -n "$old_ip6_address" ] && ip -6 addr del "$old_ip6_address/${old_ip6_prefixlen:-128}" dev "$interface" 2>/dev/null
  rm -f /run/resolv.6
  resolv
  echo "VMDHCP expire6 uptime=$t"
  ;;
esac
exit 0
