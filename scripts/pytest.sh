#!/usr/bin/env bash
# Real-client tests (tests/py): Delta Chat's own core (deltachat-rpc-server, pinned) against the
# relay binary on loopback.
#
#   scripts/pytest.sh [pytest args...]      e.g. scripts/pytest.sh -k durability -x
#
# 1. Creates or refreshes the venv .venv from requirements-test.txt (skipped when the stamp
#    .venv/.requirements.sha256 matches the file).
# 2. Runs pytest inside private namespaces (mount + network + PID when the kernel allows):
#    a temporary hosts file is bind-mounted over /etc/hosts there, mapping the test domain
#    _chat.test (and autoconfig./www./mta-sts.) to 127.0.0.2, and the federation test domains
#    _fed-a.test to 127.0.0.3 and _fed-b.test to 127.0.0.4. The machine's /etc/hosts is never
#    touched, the relays listen inside a fresh network namespace (no clash with anything else
#    listening on this machine), and every process started inside dies with the namespace.
# Environment: CHATMAIL_BOX_BIN (default target/debug/chatmail-box; build it first, `make test-py`
# does), PYTHON (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TEST_DOMAIN="_chat.test"
TEST_IP="127.0.0.2"
# Federation tests: two relays (tests/py/fedtools.py keeps the same names and addresses).
FED_A_DOMAIN="_fed-a.test"
FED_A_IP="127.0.0.3"
FED_B_DOMAIN="_fed-b.test"
FED_B_IP="127.0.0.4"

# ---------------------------------------------------------------------------------------------
# Inner half: runs inside the namespaces (as PID 1 when a PID namespace was available).
if [ "${CHATMAIL_PYTEST_INNER:-}" = "1" ]; then
  unset CHATMAIL_PYTEST_INNER
  hosts="$1"; shift
  mount --bind "$hosts" /etc/hosts
  if [ "${CHATMAIL_PYTEST_NETNS:-0}" = "1" ]; then
    # A new network namespace has only `lo`, and it is down.
    if command -v ip >/dev/null; then
      ip link set lo up
    else
      "$ROOT/.venv/bin/python" - <<'PY'
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))  # SIOCSIFFLAGS |= IFF_UP
PY
    fi
  fi
  # Default test selection unless the caller named paths or node ids.
  select=(tests/py)
  for a in "$@"; do
    case "$a" in
      -*) ;;
      *::*|tests/*|*.py) select=() ;;
    esac
  done
  set +e
  "$ROOT/.venv/bin/python" -m pytest -c tests/py/pytest.ini --rootdir tests/py "${select[@]}" "$@"
  rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then
    echo "scripts/pytest.sh: pytest collected no tests (exit 5): treated as a failure" >&2
    rc=1
  fi
  exit "$rc"
fi

# ---------------------------------------------------------------------------------------------
# Outer half: venv, hosts file, namespaces, cleanup.
die() { echo "scripts/pytest.sh: $*" >&2; exit 1; }

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (Python 3.9+ with venv is required)"
command -v unshare >/dev/null || die "unshare not found (Debian package util-linux)"

export CHATMAIL_BOX_BIN="${CHATMAIL_BOX_BIN:-$ROOT/target/debug/chatmail-box}"
case "$CHATMAIL_BOX_BIN" in /*) ;; *) CHATMAIL_BOX_BIN="$ROOT/$CHATMAIL_BOX_BIN" ;; esac
[ -x "$CHATMAIL_BOX_BIN" ] || die "relay binary $CHATMAIL_BOX_BIN missing: run 'cargo build' (or 'make test-py')"

# 1. venv with the pinned requirements.
REQ="$ROOT/requirements-test.txt"
VENV="$ROOT/.venv"
STAMP="$VENV/.requirements.sha256"
# Concurrent runs from the same checkout must not build the venv at the same time (the lock is
# taken on requirements-test.txt itself, so no lock file is left behind).
exec 9<"$REQ"
command -v flock >/dev/null && flock 9
want="$( (sha256sum "$REQ" | cut -d' ' -f1; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'pass' 2>/dev/null \
   && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  :
else
  echo "scripts/pytest.sh: preparing $VENV from requirements-test.txt" >&2
  if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pip' 2>/dev/null; then
    "$PYTHON" -m venv --clear "$VENV" || die "cannot create a venv (Debian: apt-get install python3-venv)"
  fi
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ" \
    || die "pip install -r requirements-test.txt failed"
  echo "$want" > "$STAMP"
fi
exec 9>&-
"$VENV/bin/deltachat-rpc-server" --version >/dev/null 2>&1 || die "$VENV/bin/deltachat-rpc-server does not run"

# 2. Private hosts file.
TMP="$(mktemp -d "${TMPDIR:-/tmp}/chatmail-pytest.XXXXXX")"
export CHATMAIL_TEST_PIDDIR="$TMP/pids"
mkdir -p "$CHATMAIL_TEST_PIDDIR"
PIDNS=0
cleanup() {
  # Only needed without a PID namespace (with one, the kernel kills everything left in it):
  # relays the fixtures recorded and that still run.
  local f pid
  [ "$PIDNS" = 1 ] || for f in "$CHATMAIL_TEST_PIDDIR"/*; do
    [ -e "$f" ] || continue
    pid="$(cat "$f" 2>/dev/null || true)"
    if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q chatmail-box; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
{
  cat /etc/hosts 2>/dev/null || true
  echo
  echo "# chatmail-box tests (private mount namespace only)"
  echo "$TEST_IP $TEST_DOMAIN autoconfig.$TEST_DOMAIN www.$TEST_DOMAIN mta-sts.$TEST_DOMAIN"
  # The two federated relays of test_federation_client.py (fedtools.py). The relays themselves
  # resolve each other through the test's DNS server; the Delta Chat clients use this file.
  echo "$FED_A_IP $FED_A_DOMAIN autoconfig.$FED_A_DOMAIN www.$FED_A_DOMAIN mta-sts.$FED_A_DOMAIN"
  echo "$FED_B_IP $FED_B_DOMAIN autoconfig.$FED_B_DOMAIN www.$FED_B_DOMAIN mta-sts.$FED_B_DOMAIN"
  # The relay with TURN, iroh URL and appversions of test_metadata_client.py.
  echo "127.0.0.9 _meta.test"
} > "$TMP/hosts"

# 3. Namespaces: mount (required) + network + PID (if possible).
if [ "$(id -u)" -eq 0 ]; then base=(unshare -m); else base=(unshare -r -m); fi
if "${base[@]}" -n -p -f --kill-child true 2>/dev/null; then
  ns=("${base[@]}" -n -p -f --kill-child)
  export CHATMAIL_PYTEST_NETNS=1
  PIDNS=1
elif "${base[@]}" true 2>/dev/null; then
  echo "scripts/pytest.sh: no network/PID namespace here; using a mount namespace only" >&2
  ns=("${base[@]}")
  export CHATMAIL_PYTEST_NETNS=0
elif [ "$(id -u)" -eq 0 ]; then
  die "'unshare -m' failed: a private mount namespace is needed to map $TEST_DOMAIN without touching /etc/hosts"
else
  die "not root and 'unshare -rm' failed (user namespaces disabled?): run as root or enable unprivileged user namespaces"
fi

export PATH="$VENV/bin:$PATH"
export RELAY_DOMAIN="$TEST_DOMAIN" RELAY_IP="$TEST_IP"
export FED_A_DOMAIN FED_A_IP FED_B_DOMAIN FED_B_IP
export PYTHONDONTWRITEBYTECODE=1
set +e
CHATMAIL_PYTEST_INNER=1 "${ns[@]}" bash "$ROOT/scripts/pytest.sh" "$TMP/hosts" "$@"
rc=$?
set -e
exit "$rc"
