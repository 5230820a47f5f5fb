#!/bin/sh
# make qemu-test: build the offline test image (scripts/qemu-image.sh; builds the static aarch64
# binary first if missing) and boot it under qemu-system-aarch64: -M raspi3b with the Zero 2 W
# device tree, then -M virt with virtio-gpu (tests/qemu/qemu_test.py). No internet needed once
# the Debian packages are installed/cached. Args: raspi and/or virt (default both).
# Env: QEMU_SKIP_IMAGE=1 reuses target/qemu/images as is.
set -eu
cd "$(dirname "$0")/.."
start=$(date +%s)
if [ "${QEMU_SKIP_IMAGE:-0}" != 1 ]; then
    scripts/qemu-image.sh
else
    scripts/qemu-deps.sh
fi
set +e
# A private network namespace: QEMU's user network reaches only its loopback (the test's NTP
# server, the host forwards), nothing on this machine or beyond. Unprivileged: a user namespace.
if [ "$(id -u)" = 0 ]; then userns=""; else userns="-r"; fi
unshare $userns -n sh -c 'ip link set lo up 2>/dev/null || ifconfig lo up; exec python3 tests/qemu/qemu_test.py "$@"' qemu-test "$@"
rc=$?
echo "qemu-test: make qemu-test took $(($(date +%s) - start)) s in all"
exit $rc
