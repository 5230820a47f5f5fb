#!/bin/sh
# make aarch64-smoke: run the static aarch64 binary under qemu-aarch64 (user mode): --help,
# check-config, and serve on loopback ports until an SMTP and an HTTP port answer a TCP connect.
# Not part of `make test` (needs the aarch64 release build). qemu-user is for smoke, not timing.
set -eu
BIN=${1:-target/cross/aarch64-unknown-linux-musl/release/chatmail-box.stripped}
QEMU=${QEMU:-qemu-aarch64}
if ! command -v "$QEMU" >/dev/null 2>&1; then
    echo "aarch64-smoke: installing qemu-user" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q qemu-user >&2
fi
[ -x "$BIN" ] || { echo "aarch64-smoke: $BIN missing; run make aarch64" >&2; exit 1; }

tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

"$QEMU" "$BIN" --help | grep -q "chatmail relay" || { echo "aarch64-smoke: --help failed" >&2; exit 1; }
echo "aarch64-smoke: --help ok"

base=$((20000 + $$ % 20000))
cat > "$tmp/config.toml" <<CONF
mail_domain = "box.example"
listen = "127.0.0.1"

[ports]
smtp = $base
submission = $((base + 1))
submissions = $((base + 2))
imap = $((base + 3))
imaps = $((base + 4))
https = $((base + 5))
http = $((base + 6))
CONF
"$QEMU" "$BIN" --config "$tmp/config.toml" --data-dir "$tmp/data" check-config > "$tmp/check.out"
grep -q "configuration ok" "$tmp/check.out" || { cat "$tmp/check.out" >&2; exit 1; }
echo "aarch64-smoke: check-config ok"

start=$(date +%s)
"$QEMU" "$BIN" --config "$tmp/config.toml" --data-dir "$tmp/data" serve > "$tmp/serve.log" 2>&1 &
pid=$!
answer() {
    # SMTP greets first; read the banner. HTTP: any answer to a HEAD request.
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$base; head -c 3 <&3" 2>/dev/null | grep -q 220 &&
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$((base + 6)); printf 'HEAD / HTTP/1.0\r\n\r\n' >&3; head -c 8 <&3" 2>/dev/null | grep -q HTTP
}
i=0
until answer; do
    i=$((i + 1))
    if [ $i -gt 120 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "aarch64-smoke: serve did not answer" >&2
        cat "$tmp/serve.log" >&2
        exit 1
    fi
    sleep 0.5
done
echo "aarch64-smoke: serve answered SMTP (220) and HTTP after $(( $(date +%s) - start )) s under qemu-aarch64"
