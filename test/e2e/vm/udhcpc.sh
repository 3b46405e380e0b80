#!/bin/sh
# udhcpc's hook in the test VM: applies the lease to eth0 as a guest OS
# would, then prints one line on the console that reports what the guest
# now holds, read back from its kernel and resolv.conf rather than echoed
# from the offer:
#   VMDHCP bound ip=198.18.0.21/24 router=198.18.0.1 dns=198.18.0.53,198.18.0.54 mtu=1450 lease=600 server=198.18.0.2 domain=example.internal uptime=3.21
# Events: bound, renew, deconfig, leasefail, nak (its message= comes last).
# dns lists resolv.conf's IPv4 name servers: dhclient6.sh adds the IPv6 ones.
t=$(cut -d' ' -f1 /proc/uptime)
. /resolv.sh
case "$1" in
deconfig)
  ip -4 addr flush dev "$interface"
  ip link set dev "$interface" up
  echo "VMDHCP deconfig uptime=$t"
  ;;
bound | renew)
  [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
  have=$(ip -4 -o addr show dev "$interface" | awk '{print $4; exit}')
  if [ "$have" != "$ip/$mask" ]; then
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
  fi
  ip route del default 2>/dev/null
  for r in $router; do
    ip route add default via "$r" dev "$interface" && break
  done
  {
    for d in $dns; do echo "nameserver $d"; done
    [ -n "$domain" ] && echo "search $domain"
  } >/run/resolv.4
  resolv
  addr=$(ip -4 -o addr show dev "$interface" | awk '{print $4; exit}')
  gw=$(ip route show default | awk '{print $3; exit}')
  ns=$(awk '$1 == "nameserver" && $2 !~ /:/ {printf "%s%s", s, $2; s = ","}' /etc/resolv.conf)
  m=$(cat "/sys/class/net/$interface/mtu")
  echo "VMDHCP $1 ip=$addr router=$gw dns=$ns mtu=$m lease=$lease server=$serverid domain=$domain uptime=$t"
  ;;
leasefail)
  echo "VMDHCP leasefail uptime=$t"
  ;;
nak)
  echo "VMDHCP nak uptime=$t message=$message"
  ;;
esac
exit 0
