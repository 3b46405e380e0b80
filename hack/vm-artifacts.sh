#!/usr/bin/env bash
# Prepares what the test VM (test/e2e/vm) boots from and prints its folder:
# Debian's cloud kernel, a static busybox, ISC dhclient (the guest's DHCPv6
# client: Debian's busybox has no udhcpc6) with exactly the shared libraries
# it needs from Debian's libc6, and the kernel modules the guest loads for
# its virtio NIC (virtio_pci, virtio_net and their dependencies, in load
# order). The packages are fetched with apt-get download and only unpacked
# into the cache: nothing is installed on the host (busybox-static conflicts
# with the busybox that udhcpc needs, and a host kernel package would run
# boot-loader hooks).
#
# Layout: $CACHE/vm/<kernel package>_<version>_<hash>/{vmlinuz,busybox,
# dhclient,lib/*.so*,modules/*.ko,modules/load,packages,ready} and
# $CACHE/vm/current -> that folder. The folder is keyed by the version of
# every package it comes from (the hash covers those besides the kernel,
# listed in packages), so an update of any of them builds a new one and a
# warm cache costs nothing. Without apt's package lists (offline) the
# current folder is used as it is.
#
# The initramfs itself is assembled by the Go package at boot time, so its
# /init and DHCP hook live next to the code that parses what they print.
set -euo pipefail

CACHE="${CACHE:-$HOME/.cache/vm-dhcp}"
ROOT="$CACHE/vm"
KERNEL_META="${VM_KERNEL_PACKAGE:-linux-image-cloud-amd64}"
# The guest's NIC is virtio-net on PCI; both drivers are modules in Debian's
# kernels. Their dependencies are read from the modules themselves.
# IPv6 is built into Debian's kernels; listed so that a kernel where it is a
# module loads it (built-in modules are skipped).
MODULES=(virtio_pci virtio_net ipv6)
# Besides the kernel: busybox for /init and udhcpc; dhclient for DHCPv6;
# libc6 for dhclient's loader and libraries, of the same release.
PACKAGES=(busybox-static isc-dhcp-client libc6)

die() { echo "vm-artifacts: $*" >&2; exit 1; }

current() {
  if [ -e "$ROOT/current/ready" ]; then
    readlink -f "$ROOT/current"
    return 0
  fi
  return 1
}

# candidate PACKAGE: the version apt would fetch.
candidate() { apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" {print $2; exit}'; }

# resolve: the versioned kernel package behind the meta package, e.g.
# linux-image-6.1.0-57-cloud-amd64, its candidate version, and the
# candidate version of each of PACKAGES ("name=version" in pins).
kpkg="" kver="" pins=()
resolve() {
  kpkg="$(apt-cache depends "$KERNEL_META" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}')" || true
  kver="" pins=()
  [ -n "$kpkg" ] && kver="$(candidate "$kpkg")"
  [ -n "$kpkg" ] && [ -n "$kver" ] || return 1
  local p v
  for p in "${PACKAGES[@]}"; do
    v="$(candidate "$p")"
    [ -n "$v" ] || return 1
    pins+=("$p=$v")
  done
}
if ! resolve; then
  current && exit 0
  # A fresh machine may have no package lists yet.
  [ "$(id -u)" = 0 ] && apt-get update -qq >&2 || true
  resolve || die "cannot resolve $KERNEL_META (no apt package lists? run apt-get update)"
fi

key="$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-8)"
dir="$ROOT/${kpkg}_${kver//[:~]/_}_$key"
if [ -e "$dir/ready" ]; then
  ln -sfn "$(basename "$dir")" "$ROOT/current"
  echo "$dir"
  exit 0
fi

mkdir -p "$ROOT"
tmp="$(mktemp -d "$ROOT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "vm-artifacts: fetching $kpkg $kver ${pins[*]}" >&2
(
  cd "$tmp"
  # As root apt would hand the download to its sandbox user, who cannot
  # write into this folder.
  apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kver" "${pins[@]}" >/dev/null
) || die "apt-get download $kpkg ${pins[*]} failed"
mkdir -p "$tmp/x" "$tmp/out/modules" "$tmp/out/lib"
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done

vmlinuz="$(ls "$tmp"/x/boot/vmlinuz-* 2>/dev/null | head -n1)"
[ -n "$vmlinuz" ] || die "$kpkg has no /boot/vmlinuz-*"
cp "$vmlinuz" "$tmp/out/vmlinuz"
cp "$tmp/x/bin/busybox" "$tmp/out/busybox"
cp "$tmp/x/sbin/dhclient" "$tmp/out/dhclient"
# dhclient's loader and libraries, by the names ldd resolves (the loader by
# its absolute path), taken from the unpacked libc6 rather than the host:
# the guest gets exactly what dhclient needs, of one Debian release.
# test/e2e/vm puts them where the loader looks (it reads the loader's path
# from dhclient's ELF header).
for lib in $(ldd "$tmp/out/dhclient" | awk '$2 == "=>" {print $1} $1 ~ /^\// {print $1}'); do
  f="$(find "$tmp/x" -name "$(basename "$lib")" \( -type f -o -type l \) | head -n1)"
  [ -n "$f" ] || die "dhclient needs $lib, which none of ${PACKAGES[*]} holds: add its package"
  cp -L "$f" "$tmp/out/lib/$(basename "$lib")"
done
[ -n "$(ls "$tmp/out/lib")" ] || die "ldd found no libraries of dhclient (a static dhclient needs none: adjust this script)"
moddir="$(ls -d "$tmp"/x/lib/modules/* | head -n1)"
[ -n "$moddir" ] || die "$kpkg has no /lib/modules"

# modpath NAME: the .ko of a module name (file names may use - for _).
modpath() {
  local f
  f="$(find "$moddir" \( -name "$1.ko" -o -name "${1//_/-}.ko" \) | head -n1)"
  [ -n "$f" ] || die "module $1 not in $kpkg"
  echo "$f"
}
# deps FILE: the module names FILE depends on, from its .modinfo strings.
deps() { tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | tr ',' ' '; }

# Depth-first: dependencies are written before the modules that need them.
declare -A seen=()
visit() {
  local name="$1" f d
  [ -n "${seen[$name]:-}" ] && return 0
  seen[$name]=1
  if grep -q "/$name.ko\$" "$moddir/modules.builtin" 2>/dev/null; then
    return 0 # built into the kernel
  fi
  f="$(modpath "$name")"
  for d in $(deps "$f"); do visit "$d"; done
  cp "$f" "$tmp/out/modules/$name.ko"
  echo "$name" >>"$tmp/out/modules/load"
}
for m in "${MODULES[@]}"; do visit "$m"; done

echo "$kpkg $kver" >"$tmp/out/kernel-package"
printf '%s\n' "$kpkg=$kver" "${pins[@]}" >"$tmp/out/packages"
touch "$tmp/out/ready"
rm -rf "$dir"
mv "$tmp/out" "$dir"
ln -sfn "$(basename "$dir")" "$ROOT/current"
echo "vm-artifacts: ready in $dir ($(du -sh "$dir" | cut -f1))" >&2
echo "$dir"
