#!/bin/sh
# Host packages for make qemu-image / qemu-test (appliance.md §5.1), installed idempotently:
# amd64 tools only. The arm64 payloads (kernel, busybox-static, raspi-firmware) are fetched with
# `apt-get download` by scripts/qemu-image.sh and unpacked under target/, never installed.
# Adds the arm64 architecture (for apt-get download of :arm64 packages), bookworm-backports (QEMU 10)
# and the non-free-firmware component (raspi-firmware) to apt's sources when missing.
set -eu
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
. /etc/os-release
codename=${VERSION_CODENAME:-bookworm}
changed=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
    changed=1
fi
src=/etc/apt/sources.list.d/chatmail-qemu.sources
if [ ! -e "$src" ]; then
    cat <<EOT | $SUDO tee "$src" >/dev/null
# Added by chatmail-box scripts/qemu-deps.sh: QEMU 10 from backports, raspi-firmware (non-free-firmware).
Types: deb
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: $codename-backports
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
    changed=1
fi
need=""
command -v genimage >/dev/null || need="$need genimage"
command -v mkfs.vfat >/dev/null || [ -x /sbin/mkfs.vfat ] || need="$need dosfstools"
command -v mcopy >/dev/null || need="$need mtools"
command -v mke2fs >/dev/null || [ -x /sbin/mke2fs ] || need="$need e2fsprogs"
command -v mksquashfs >/dev/null || need="$need squashfs-tools"
command -v cpio >/dev/null || need="$need cpio"
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need="$need kmod"
command -v fdtput >/dev/null || need="$need device-tree-compiler"
command -v zbarimg >/dev/null || need="$need zbar-tools"
command -v socat >/dev/null || need="$need socat"
# readelf: the shared libraries the image's arm64 sfdisk/partx/e2fsck/resize2fs need.
command -v readelf >/dev/null || need="$need binutils"
command -v python3 >/dev/null || need="$need python3"
qemu_bp=""
command -v qemu-system-aarch64 >/dev/null || qemu_bp=" qemu-system-arm"
# qemu-aarch64 runs the arm64 busybox once to list its applets (from backports too: bookworm's
# 7.2 cannot sit beside backports' qemu-utils).
command -v qemu-aarch64 >/dev/null || qemu_bp="$qemu_bp qemu-user"
if [ "$changed" = 1 ] || [ -n "$need$qemu_bp" ] || [ ! -e /var/lib/apt/lists/deb.debian.org_debian_dists_${codename}-backports_InRelease ]; then
    $SUDO apt-get update -qq
fi
if [ -n "$need" ]; then
    echo "qemu-deps.sh: installing$need" >&2
    $SUDO apt-get install -y -qq --no-install-recommends $need
fi
# The guests' NTP server: Debian's chronyd, unpacked under target/host, not installed (it would
# replace this machine's time daemon); run with -x, it never sets this machine's clock.
"$(dirname "$0")/chronyd.sh" >/dev/null
if [ -n "$qemu_bp" ]; then
    echo "qemu-deps.sh: installing$qemu_bp from $codename-backports" >&2
    $SUDO apt-get install -y -qq --no-install-recommends -t "$codename-backports" $qemu_bp
fi
