#!/bin/sh
# make image: the real SD-card image with Buildroot and the BR2_EXTERNAL tree in buildroot/.
#
# NEEDS INTERNET: Buildroot itself (git clone of its LTS branch, unless BUILDROOT_DIR names a
# checkout) and every source it builds (toolchain, kernel, firmware, BusyBox) are downloaded.
# Offline it stops with a message saying so. The emulated equivalent that runs offline is
# `make qemu-test`.
#
# Env:
#   BOARD             rpi4_64 (default), rpi5, rpi3_64 or zero2w_64 (buildroot/configs/chatmail_<BOARD>_defconfig)
#   BUILDROOT_DIR     an existing Buildroot checkout (default: target/buildroot/src, cloned)
#   BUILDROOT_BRANCH  the branch cloned when BUILDROOT_DIR is not set (default 2025.02.x, LTS)
#   BUILDROOT_GIT     default https://gitlab.com/buildroot.org/buildroot.git
# Output: target/buildroot/<BOARD>/images/sdcard.img (Buildroot's O= directory: target/buildroot/<BOARD>).
set -eu
cd "$(dirname "$0")/.."
TOP=$PWD
BOARD=${BOARD:-rpi4_64}
DEFCONFIG=chatmail_${BOARD}_defconfig
BRANCH=${BUILDROOT_BRANCH:-2025.02.x}
GIT=${BUILDROOT_GIT:-https://gitlab.com/buildroot.org/buildroot.git}
OUT=$TOP/target/buildroot/$BOARD

log() { echo "image.sh: $*" >&2; }

if [ ! -e "buildroot/configs/$DEFCONFIG" ]; then
    log "no buildroot/configs/$DEFCONFIG; BOARD is one of: $(ls buildroot/configs | sed -n 's/^chatmail_\(.*\)_defconfig$/\1/p' | tr '\n' ' ')"
    exit 2
fi

BR=${BUILDROOT_DIR:-$TOP/target/buildroot/src}
if [ ! -e "$BR/Makefile" ]; then
    if [ -n "${BUILDROOT_DIR:-}" ]; then
        log "BUILDROOT_DIR=$BR is not a Buildroot checkout"
        exit 2
    fi
    log "cloning Buildroot $BRANCH from $GIT (needs internet)"
    rm -rf "$BR.tmp"
    if ! git clone -q --depth 1 -b "$BRANCH" "$GIT" "$BR.tmp"; then
        rm -rf "$BR.tmp"
        log "ERROR: cannot download Buildroot. make image needs internet access (Buildroot and"
        log "every package source are downloaded), or BUILDROOT_DIR=<checkout> plus a filled"
        log "BR2_DL_DIR. Offline, make qemu-test builds and boots the equivalent test image."
        exit 1
    fi
    mv "$BR.tmp" "$BR"
fi

# The relay binary the package installs (BR2_PACKAGE_CHATMAIL_RELAY_BINARY's default path).
AARCH64_PROFILE=release scripts/aarch64.sh

mkdir -p "$OUT"
make -C "$BR" O="$OUT" BR2_EXTERNAL="$TOP/buildroot" "$DEFCONFIG"
start=$(date +%s)
if ! make -C "$BR" O="$OUT"; then
    log "ERROR: Buildroot failed (see above). Downloads need internet; sources are cached in $BR/dl"
    exit 1
fi
log "built $OUT/images/sdcard.img in $(($(date +%s) - start)) s; flash it as README.md says (Flash and first boot)"
