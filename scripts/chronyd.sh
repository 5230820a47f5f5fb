#!/bin/sh
# Provides Debian's chronyd for the tests (tests/clock_sntp.rs, make qemu-test) without
# installing the chrony package: installing it would replace this machine's time daemon
# (chrony conflicts with systemd-timesyncd). The .deb for this machine's architecture is fetched
# with `apt-get download` and unpacked under target/host/chrony; its shared libraries
# (GnuTLS, Nettle, libcap, libseccomp: bookworm's package names) are ordinary libraries, installed
# if missing. Idempotent; prints chronyd's path, or fails with a message.
# The tests start it with -x and their own config: it never sets this machine's clock.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
dir=$top/target/host/chrony
bin=$dir/usr/sbin/chronyd
arch=$(dpkg --print-architecture)
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
missing=""
for lib in libgnutls30 libnettle8 libcap2 libseccomp2; do
    dpkg-query -W -f '${Status}' "$lib" 2>/dev/null | grep -q 'ok installed' || missing="$missing $lib"
done
if [ -n "$missing" ]; then
    echo "chronyd.sh: installing$missing" >&2
    # Best effort (other releases name them differently): chronyd -v below is the judge.
    $SUDO apt-get install -y -qq --no-install-recommends $missing >&2 || true
fi
if [ ! -x "$bin" ]; then
    debs=$top/target/host/debs
    mkdir -p "$debs"
    if ! ls "$debs"/chrony_*_"$arch".deb >/dev/null 2>&1; then
        echo "chronyd.sh: downloading chrony ($arch)" >&2
        (cd "$debs" && apt-get download -q chrony 2>&1 | grep -v 'unsandboxed' >&2 || true)
        if ! ls "$debs"/chrony_*_"$arch".deb >/dev/null 2>&1; then
            $SUDO apt-get update -qq >&2
            (cd "$debs" && apt-get download -q chrony 2>&1 | grep -v 'unsandboxed' >&2 || true)
        fi
        ls "$debs"/chrony_*_"$arch".deb >/dev/null 2>&1 || {
            echo "chronyd.sh: apt-get download chrony failed" >&2
            exit 1
        }
    fi
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    dpkg-deb -x "$(ls "$debs"/chrony_*_"$arch".deb | sort -V | tail -1)" "$dir.tmp"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
fi
"$bin" -v >/dev/null 2>&1 || { echo "chronyd.sh: $bin does not run" >&2; exit 1; }
echo "$bin"
