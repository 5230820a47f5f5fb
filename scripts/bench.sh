#!/usr/bin/env bash
# make bench: run the loopback benchmark against the release binary. Prints numbers only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example bench
exec target/release/examples/bench target/release/chatmail-box "${BENCH_MESSAGES:-1000}"
