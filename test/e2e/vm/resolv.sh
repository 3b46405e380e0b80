# Sourced by both DHCP hooks (udhcpc.sh, dhclient6.sh).
# resolv merges /run/resolv.4 (udhcpc.sh) and /run/resolv.6 (dhclient6.sh)
# into /etc/resolv.conf, as a guest's resolver manager would: every name
# server in order, one search line with each domain once. mkdir is the
# lock: both clients run their hooks whenever their leases change.
resolv() {
  i=0
  until mkdir /run/resolv.lock 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -gt 300 ] && break # a hook killed while holding it
    usleep 10000
  done
  cat /run/resolv.4 /run/resolv.6 2>/dev/null | awk '
    $1 == "nameserver" { print }
    $1 == "search" { for (i = 2; i <= NF; i++) if (!seen[$i]++) s = s " " $i }
    END { if (s != "") print "search" s }' >/etc/resolv.conf.new
  mv /etc/resolv.conf.new /etc/resolv.conf
  rmdir /run/resolv.lock 2>/dev/null
}
