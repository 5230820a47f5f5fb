#!/bin/sh
# Buildroot post-image: fill the boot file list (firmware, DTBs, kernel) into genimage.cfg.in and
# run genimage, as Buildroot's board/raspberrypi/post-image.sh does.
set -eu
BOARD_DIR=$(dirname "$0")
GENIMAGE_CFG="$BINARIES_DIR/genimage.cfg"
GENIMAGE_TMP="$BUILD_DIR/genimage.tmp"

files=""
for f in "$BINARIES_DIR"/*.dtb "$BINARIES_DIR"/rpi-firmware/*; do
    [ -e "$f" ] || continue
    files="$files\t\t\t\"${f#"$BINARIES_DIR/"}\",\n"
done
# An initramfs when there is one (the offline QEMU image: Debian's kernel has mmc and squashfs
# as modules); config.txt then loads it with "initramfs initrd.gz followkernel".
[ -e "$BINARIES_DIR/initrd.gz" ] && files="$files\t\t\t\"initrd.gz\",\n"
files="$files\t\t\t\"Image\""
sed "s|#BOOT_FILES#|$files|" "$BOARD_DIR/genimage.cfg.in" > "$GENIMAGE_CFG"

trap 'rm -rf "$ROOTPATH_TMP"' EXIT
ROOTPATH_TMP=$(mktemp -d)
rm -rf "$GENIMAGE_TMP"
genimage --rootpath "$ROOTPATH_TMP" --tmppath "$GENIMAGE_TMP" --inputpath "$BINARIES_DIR" \
    --outputpath "$BINARIES_DIR" --config "$GENIMAGE_CFG"
