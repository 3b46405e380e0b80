#!/bin/busybox sh
# /init of the test VM's initramfs. It loads the virtio NIC drivers, brings
# eth0 up, starts the DHCPv6 client (dhclient -6) in the background and
# hands PID 1 to udhcpc, which keeps the IPv4 lease and renews it for as
# long as the VM runs. Every DHCP event is printed on the serial console by
# /udhcpc.script or /dhclient6.script as one "VMDHCP <event> key=value ..."
# line, which the Go package parses (vm.go). If udhcpc or this script exits,
# the kernel panics (panic=-1) and QEMU (-no-reboot) exits: a broken guest
# ends the VM at once.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "VMDHCP $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }

for m in $(cat /lib/modules/load); do
  insmod "/lib/modules/$m.ko" || { say "error insmod=$m"; exit 1; }
done
i=0
while [ ! -e /sys/class/net/eth0 ]; do
  i=$((i + 1))
  [ "$i" -gt 200 ] && { say "error noeth0"; exit 1; }
  usleep 50000
done
# No duplicate address detection on eth0: its link-local address is usable
# as soon as the link is up (dhclient -6 will not start without one), and
# the address DHCPv6 gives is the guest's alone (the pool holds it for this
# MAC). Set before the link goes up, which makes the link-local address.
echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_dad || { say "error ipv6"; exit 1; }
ip link set lo up
ip link set eth0 up

renew=
for a in $(cat /proc/cmdline); do
  case "$a" in
  vmdhcp.renew=*) renew="${a#*=}" ;;
  esac
done
say "boot mac=$(cat /sys/class/net/eth0/address) kernel=$(uname -r)"
# DHCPv6 beside udhcpc: dhclient -6 with a DUID-LL of eth0's MAC (-D LL:
# the agent matches a DHCPv6 client to its VM by the MAC in its DUID). Its
# own log goes to /tmp, not the console: with an IPv4-only pool nobody
# answers and it keeps trying quietly (-1: it exits after dhclient6.conf's
# timeout without a lease and is started again). Only its hook's VMDHCP
# lines reach the console.
dhcp6() {
  i=0
  until ip -6 -o addr show dev eth0 scope link | grep -q 'fe80:'; do
    i=$((i + 1))
    [ "$i" -gt 200 ] && { say "error nolinklocal"; return 1; }
    usleep 50000
  done
  while :; do
    dhclient -6 -d -1 -D LL -cf /etc/dhclient6.conf -sf /dhclient6.script \
      -lf /tmp/dhclient6.leases -pf /run/dhclient6.pid eth0 </dev/null >>/tmp/dhclient6.log 2>&1
    sleep 1
  done
}
dhcp6 &
if [ -n "$renew" ]; then
  # udhcpc (PID 1 after the exec below) renews at once on SIGUSR1.
  (while sleep "$renew"; do kill -USR1 1; done) &
fi
# -t/-T/-A: three DISCOVERs two seconds apart, then retry after three
# seconds, forever (no -n): a VM waits for its DHCP server.
exec udhcpc -f -i eth0 -s /udhcpc.script -O mtu -t 3 -T 2 -A 3
