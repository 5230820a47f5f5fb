#!/bin/sh
# make aarch64: a statically linked aarch64-unknown-linux-musl release binary (crates.md §6).
#
# Installs what it needs, idempotently: the rustup target, clang and llvm (llvm-ar) for ring's C
# code. Linking uses rust-lld (see .cargo/config.toml); no aarch64 gcc is needed.
# Output: target/cross/aarch64-unknown-linux-musl/<profile>/chatmail-box (stripped copy: *.stripped).
# Env: AARCH64_PROFILE: `release` (default, what the image ships) or `qemu-test` (Cargo.toml: the
# same code without LTO at opt-level 1, built in about half the time, for make qemu-test in CI).
# A separate target dir keeps this long build from holding the host build's lock.
set -eu
TARGET=aarch64-unknown-linux-musl
PROFILE=${AARCH64_PROFILE:-release}
CARGO=${CARGO:-cargo}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "aarch64.sh: installing rust target $TARGET with rustup" >&2
    if ! rustup target add "$TARGET"; then
        echo "aarch64.sh: ERROR: cannot install the Rust target $TARGET (rustup target add $TARGET failed)." >&2
        echo "aarch64.sh: the static appliance binary needs rust-std for $TARGET; there is no fallback." >&2
        exit 1
    fi
fi

need=""
command -v clang >/dev/null 2>&1 || need="$need clang"
command -v llvm-ar >/dev/null 2>&1 || need="$need llvm"
if [ -n "$need" ]; then
    echo "aarch64.sh: installing$need (C compiler and archiver for ring)" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $need; then
        echo "aarch64.sh: ERROR: cannot install$need; install them and retry." >&2
        exit 1
    fi
fi

export CC_aarch64_unknown_linux_musl=clang
export AR_aarch64_unknown_linux_musl=llvm-ar
export CFLAGS_aarch64_unknown_linux_musl="--target=$TARGET"

start=$(date +%s)
$CARGO build --profile "$PROFILE" --target "$TARGET" --bin chatmail-box
end=$(date +%s)

out="$CARGO_TARGET_DIR/$TARGET/$PROFILE/chatmail-box"
llvm-strip -o "$out.stripped" "$out" 2>/dev/null || llvm-objcopy --strip-all "$out" "$out.stripped"
if readelf -l "$out" | grep -q "Requesting program interpreter"; then
    echo "aarch64.sh: ERROR: $out is dynamically linked" >&2
    exit 1
fi
size=$(wc -c < "$out.stripped")
echo "aarch64.sh: built $out in $((end - start)) s"
echo "aarch64.sh: stripped $out.stripped: $size bytes ($((size / 1024 / 1024)) MiB), static (no interpreter)"
if [ "$size" -gt $((20 * 1024 * 1024)) ]; then
    echo "aarch64.sh: WARNING: stripped size exceeds the 20 MB target" >&2
fi
