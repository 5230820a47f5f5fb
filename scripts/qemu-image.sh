#!/bin/sh
# make qemu-image: the offline test twin of the Buildroot SD-card image (appliance.md §5.6).
#
# From Debian packages only: the arm64 kernel, busybox-static:arm64, raspi-firmware and the tools
# that grow the data partition (sfdisk, partx, resize2fs with their libraries), fetched
# with `apt-get download` and unpacked under target/qemu/cache (never installed on the host),
# plus the static relay from `make aarch64`. The root filesystem is BusyBox + the relay + the
# shared overlay board/raspberrypi/rootfs-overlay (inittab, fstab, S-scripts) on top of
# board/qemu/skeleton (what Buildroot's skeleton and packages add). The SD card is laid out by
# board/raspberrypi/post-image.sh with board/raspberrypi/genimage.cfg.in, as in Buildroot:
# vfat boot, read-only squashfs root, ext4 "data" last.
#
# Output in target/qemu/images: sdcard.img (256 MiB: raspi SD cards must be a power of two),
# Image, initrd.gz and the DTBs for -kernel/-initrd/-dtb. Downloads are cached; reruns take seconds.
# Env: CHATMAIL_BIN (default: scripts/aarch64.sh's output for AARCH64_PROFILE, default
# `qemu-test`, brought up to date first; AARCH64_PROFILE=release tests the shipped build),
# QEMU_SD_SIZE (256M).
set -eu
cd "$(dirname "$0")/.."
TOP=$PWD
OUT=$TOP/target/qemu
CACHE=$OUT/cache
IMAGES=$OUT/images
BUILD=$OUT/build
BOARD=$TOP/board/raspberrypi
QBOARD=$TOP/board/qemu
export AARCH64_PROFILE=${AARCH64_PROFILE:-qemu-test}
BIN=${CHATMAIL_BIN:-$TOP/target/cross/aarch64-unknown-linux-musl/$AARCH64_PROFILE/chatmail-box.stripped}
SD_SIZE=${QEMU_SD_SIZE:-256M}

log() { echo "qemu-image: $*" >&2; }

scripts/qemu-deps.sh

if [ -z "${CHATMAIL_BIN:-}" ]; then
    # Incremental: a no-op when the binary is up to date with the sources.
    scripts/aarch64.sh
fi
[ -x "$BIN" ] || { log "no static binary at $BIN"; exit 1; }

# --- Debian payloads (cached) -----------------------------------------------------------------
mkdir -p "$CACHE/debs"
kpkg=$(cat "$CACHE/kernel-package" 2>/dev/null || true)
if [ -z "$kpkg" ] || [ ! -d "$CACHE/x/$kpkg" ]; then
    # The kernel ABI name moves with security updates: resolve it from the metapackage.
    kpkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/{print $2; exit}' | sed 's/:arm64$//')
    [ -n "$kpkg" ] || {
        log "cannot resolve linux-image-arm64:arm64 (dpkg --add-architecture arm64; apt-get update)"
        exit 1
    }
fi
# Shared libraries of the data-partition tools (see install_tools below), and glibc.
LIBPKGS="libc6 libfdisk1 libsmartcols1 libblkid1 libuuid1 libreadline8 libtinfo6 libext2fs2 libcom-err2"
for p in "$kpkg" busybox-static raspi-firmware fdisk util-linux e2fsprogs $LIBPKGS; do
    [ -d "$CACHE/x/$p" ] && continue
    arch=arm64
    [ "$p" = raspi-firmware ] && arch=all
    if ! ls "$CACHE/debs/${p}_"*"_$arch.deb" >/dev/null 2>&1; then
        log "downloading $p ($arch)"
        q=$p:arm64
        [ "$arch" = all ] && q=$p
        (cd "$CACHE/debs" && apt-get download -q "$q" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
        ls "$CACHE/debs/${p}_"*"_$arch.deb" >/dev/null 2>&1 || { log "apt-get download $q failed"; exit 1; }
    fi
    rm -rf "$CACHE/x/$p.tmp"
    mkdir -p "$CACHE/x/$p.tmp"
    dpkg-deb -x "$(ls "$CACHE/debs/${p}_"*"_$arch.deb" | tail -1)" "$CACHE/x/$p.tmp"
    mv "$CACHE/x/$p.tmp" "$CACHE/x/$p"
done
echo "$kpkg" > "$CACHE/kernel-package"
KROOT=$CACHE/x/$kpkg
KVER=$(ls "$KROOT/lib/modules" | head -1)
[ -e "$KROOT/lib/modules/$KVER/modules.dep" ] || depmod -b "$KROOT" "$KVER"
BUSYBOX=$CACHE/x/busybox-static/bin/busybox
FW=$CACHE/x/raspi-firmware/usr/lib/raspi-firmware
DTBDIR=$KROOT/usr/lib/linux-image-$KVER/broadcom

# Copies the module closure of each named module (and the modules.* indexes) from the kernel
# package into the root $1, then runs depmod there.
install_modules() {
    dest=$1
    shift
    mkdir -p "$dest/lib/modules/$KVER"
    cp "$KROOT/lib/modules/$KVER"/modules.builtin* "$KROOT/lib/modules/$KVER/modules.order" \
        "$dest/lib/modules/$KVER/"
    for m in "$@"; do
        modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}'
    done | sort -u | while read -r ko; do
        rel=${ko#"$KROOT"/}
        mkdir -p "$dest/$(dirname "$rel")"
        cp "$ko" "$dest/$rel"
    done
    depmod -b "$dest" "$KVER"
}

# --- root filesystem ------------------------------------------------------------------------
log "root filesystem (kernel $KVER)"
rm -rf "$BUILD"
ROOT=$BUILD/rootfs
mkdir -p "$ROOT" "$IMAGES"
for d in bin sbin usr/bin usr/sbin etc dev proc sys tmp run data root var/log lib/modules; do
    mkdir -p "$ROOT/$d"
done
ln -s ../run "$ROOT/var/run"
ln -s ../tmp "$ROOT/var/tmp"
ln -s /proc/mounts "$ROOT/etc/mtab"
ln -s ../tmp/resolv.conf "$ROOT/etc/resolv.conf"
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root"
cp "$BUSYBOX" "$ROOT/bin/busybox"
# Applet links; skip the busybox entry itself (a self-link breaks switch_root, appliance.md §5.6).
applets=$(qemu-aarch64 "$BUSYBOX" --list-full 2>/dev/null || "$BUSYBOX" --list-full)
for a in $applets; do
    [ "$a" = bin/busybox ] && continue
    [ -e "$ROOT/$a" ] || ln -s /bin/busybox "$ROOT/$a"
done
cp -a "$QBOARD/skeleton/." "$ROOT/"
cp -a "$BOARD/rootfs-overlay/." "$ROOT/"
# As the Buildroot package does: the relay at the path the inittab starts.
install -D -m 0755 "$BIN" "$ROOT/usr/bin/chatmail-box"
ln -f "$ROOT/usr/bin/chatmail-box" "$ROOT/usr/bin/chatmail-clock"
# --- the tools S05datafs grows the data partition with ---------------------------------------
# Buildroot builds util-linux (sfdisk, partx) and e2fsprogs (resize2fs) into the real
# image; here Debian's arm64 builds go in with glibc's loader and the shared libraries they need,
# found through readelf's NEEDED entries in the unpacked packages.
find_lib() {
    for p in $LIBPKGS; do
        for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu; do
            [ -e "$CACHE/x/$p/$d/$1" ] && { echo "$CACHE/x/$p/$d/$1"; return 0; }
        done
    done
    return 1
}
# Copies the libraries ELF file $1 needs, and theirs, into $ROOT/lib/aarch64-linux-gnu.
copy_libs() {
    for lib in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
        [ -e "$ROOT/lib/aarch64-linux-gnu/$lib" ] && continue
        found=$(find_lib "$lib") || { log "$1 needs $lib: add its package to LIBPKGS"; exit 1; }
        cp -L "$found" "$ROOT/lib/aarch64-linux-gnu/$lib"
        copy_libs "$found"
    done
}
mkdir -p "$ROOT/lib/aarch64-linux-gnu"
for t in fdisk:sbin/sfdisk util-linux:usr/bin/partx e2fsprogs:sbin/resize2fs; do
    src=$CACHE/x/${t%%:*}/${t#*:}
    [ -f "$src" ] || { log "no ${t#*:} in package ${t%%:*}"; exit 1; }
    rm -f "$ROOT/${t#*:}"
    cp "$src" "$ROOT/${t#*:}"
    copy_libs "$src"
done
ln -sf aarch64-linux-gnu/ld-linux-aarch64.so.1 "$ROOT/lib/ld-linux-aarch64.so.1"
qemu-aarch64 -L "$ROOT" "$ROOT/sbin/resize2fs" -h 2>&1 | grep -q 'resize2fs' || {
    log "resize2fs does not run from the image root"
    exit 1
}
rootmods=$(grep -v '^#' "$QBOARD/skeleton/etc/modules")
install_modules "$ROOT" $rootmods
# Buildroot's post-build script of the real image (mount points, binary check).
sh "$BOARD/post-build.sh" "$ROOT"
chmod 0755 "$ROOT"

# --- initramfs: modules for the root device, then switch_root ---------------------------------
INITRAMFS=$BUILD/initramfs
mkdir -p "$INITRAMFS/bin" "$INITRAMFS/sbin" "$INITRAMFS/etc"
cp "$BUSYBOX" "$INITRAMFS/bin/busybox"
for a in sh mount umount mkdir sleep cat findfs modprobe switch_root echo; do
    ln -s busybox "$INITRAMFS/bin/$a"
done
ln -s ../bin/busybox "$INITRAMFS/sbin/modprobe" 2>/dev/null || true
cp "$QBOARD/initramfs-init" "$INITRAMFS/init"
chmod 0755 "$INITRAMFS/init"
# sdhost only on the Pi 3 / Zero 2 W (sdhci-iproc made boots flaky, appliance.md §5.6);
# crc32c_generic or ext4 fails with "Cannot load crc32c driver".
printf '%s\n' crc32c_generic bcm2835 mmc_block virtio_pci virtio_blk squashfs ext4 > "$INITRAMFS/etc/modules"
install_modules "$INITRAMFS" $(cat "$INITRAMFS/etc/modules")
(cd "$INITRAMFS" && find . | sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) > "$IMAGES/initrd.gz"

# --- boot files, as Buildroot lays them out in BINARIES_DIR ----------------------------------
rm -rf "$IMAGES/rpi-firmware" "$IMAGES"/*.dtb
mkdir -p "$IMAGES/rpi-firmware"
cp "$KROOT/boot/vmlinuz-$KVER" "$IMAGES/Image"
for f in bootcode.bin start.elf fixup.dat start4.elf fixup4.dat; do
    cp "$FW/$f" "$IMAGES/rpi-firmware/"
done
for d in bcm2837-rpi-zero-2-w bcm2837-rpi-3-b bcm2837-rpi-3-b-plus bcm2711-rpi-4-b; do
    cp "$DTBDIR/$d.dtb" "$IMAGES/"
done
# The shared config.txt, plus the initramfs line the Debian kernel needs.
{ cat "$BOARD/config.txt"; printf '\n# Test image (Debian kernel): modules for the root device.\ninitramfs initrd.gz followkernel\n'; } \
    > "$IMAGES/rpi-firmware/config.txt"
cp "$BOARD/cmdline.txt" "$IMAGES/rpi-firmware/cmdline.txt"

log "squashfs"
rm -f "$IMAGES/rootfs.squashfs"
mksquashfs "$ROOT" "$IMAGES/rootfs.squashfs" -all-root -noappend -comp xz -quiet -no-progress >/dev/null

log "genimage (board/raspberrypi/post-image.sh)"
rm -f "$IMAGES/sdcard.img"
BINARIES_DIR=$IMAGES BUILD_DIR=$BUILD sh "$BOARD/post-image.sh" > "$OUT/genimage.log" 2>&1 || {
    cat "$OUT/genimage.log" >&2
    exit 1
}
qemu-img resize -q -f raw "$IMAGES/sdcard.img" "$SD_SIZE"
log "$IMAGES/sdcard.img ($SD_SIZE): boot vfat, root squashfs ($(du -k "$IMAGES/rootfs.squashfs" | cut -f1) KiB), data ext4"
