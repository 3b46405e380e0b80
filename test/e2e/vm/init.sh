#!/bin/busybox sh
# /init of the test VM's initramfs. It loads the virtio NIC drivers, brings
# eth0 up and hands PID 1 to udhcpc, which keeps the lease and renews it for
# as long as the VM runs. Every DHCP event is printed on the serial console
# by /udhcpc.script as one "VMDHCP <event> key=value ..." line, which the Go
# package parses (vm.go). If udhcpc or this script exits, the kernel panics
# (panic=-1) and QEMU (-no-reboot) exits: a broken guest ends the VM at once.
/bin/busybox --install -s /bin
export PATH=/bin
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
ip link set lo up
ip link set eth0 up

renew=
for a in $(cat /proc/cmdline); do
  case "$a" in
  vmdhcp.renew=*) renew="${a#*=}" ;;
  esac
done
say "boot mac=$(cat /sys/class/net/eth0/address) kernel=$(uname -r)"
if [ -n "$renew" ]; then
  # udhcpc (PID 1 after the exec below) renews at once on SIGUSR1.
  (while sleep "$renew"; do kill -USR1 1; done) &
fi
# -t/-T/-A: three DISCOVERs two seconds apart, then retry after three
# seconds, forever (no -n): a VM waits for its DHCP server.
exec udhcpc -f -i eth0 -s /udhcpc.script -O mtu -t 3 -T 2 -A 3
