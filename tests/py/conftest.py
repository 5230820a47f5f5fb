"""Fixtures for the real-client tests. Run them with scripts/pytest.sh (private /etc/hosts).

- `relay`: the chatmail-box binary on RELAY_IP (127.0.0.2) with the standard ports and the
  domain RELAY_DOMAIN (_chat.test), self-signed certificate; one per test session.
- `rpc` / `dc`: one deltachat-rpc-server (from the venv on PATH) per test module.
- `acfactory`: accounts via add_or_update_transport (strict TLS) or dcaccount:<domain>.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket

import pytest

from dchelpers import AccountFactory
from relaytools import Relay, relay_binary

DOMAIN = os.environ.get("RELAY_DOMAIN", "_chat.test")
RELAY_IP = os.environ.get("RELAY_IP", "127.0.0.2")


def pytest_report_header(config):
    return [f"relay: {relay_binary()}  domain: {DOMAIN} -> {RELAY_IP}"]


def _check_name_resolution():
    try:
        ips = {ai[4][0] for ai in socket.getaddrinfo(DOMAIN, 443, proto=socket.IPPROTO_TCP)}
    except socket.gaierror as e:
        pytest.exit(f"{DOMAIN} does not resolve ({e}): run the tests through scripts/pytest.sh", returncode=3)
    if RELAY_IP not in ips:
        pytest.exit(f"{DOMAIN} resolves to {sorted(ips)}, not {RELAY_IP}: run the tests through scripts/pytest.sh",
                    returncode=3)


_LOGDIR: list[pathlib.Path] = []


@pytest.fixture(scope="session")
def logdir(tmp_path_factory) -> pathlib.Path:
    """Relay logs, rpc-server stderr and one event log per Delta Chat account."""
    d = os.environ.get("CHATMAIL_TEST_LOGDIR")
    p = pathlib.Path(d) if d else tmp_path_factory.mktemp("logs")
    p.mkdir(parents=True, exist_ok=True)
    _LOGDIR.append(p)
    return p


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _LOGDIR and (exitstatus != 0 or os.environ.get("CHATMAIL_TEST_LOGDIR")):
        terminalreporter.write_line(f"logs (relay, rpc-server, per-account events): {_LOGDIR[0]}")


@pytest.fixture(scope="session")
def relay(tmp_path_factory, logdir):
    """The relay for the real-client tests, listening on RELAY_IP with the standard ports."""
    _check_name_resolution()
    r = Relay(tmp_path_factory.mktemp("relay"), DOMAIN, RELAY_IP, name="relay")
    r.start(timeout=60)
    yield r
    r.stop()
    try:
        (logdir / "relay.log").write_bytes(r.log_path.read_bytes())
    except OSError:
        pass
    print(f"\nrelay log: {r.log_path}")


@contextlib.contextmanager
def open_rpc(tmp_path_factory, logdir, request):
    """One deltachat-rpc-server with a fresh accounts dir; its stderr goes to
    `<logdir>/rpc-server-<module>.log`. For modules that bring their own relays."""
    from deltachat_rpc_client import Rpc

    accounts = tmp_path_factory.mktemp("dc") / "accounts"  # must not exist yet
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")
    name = request.module.__name__.rsplit(".", 1)[-1]
    with open(logdir / f"rpc-server-{name}.log", "ab") as errlog:
        with Rpc(accounts_dir=str(accounts), stderr=errlog, env=env) as rpc:
            yield rpc


@pytest.fixture(scope="module")
def rpc(relay, tmp_path_factory, logdir, request):
    with open_rpc(tmp_path_factory, logdir, request) as rpc:
        yield rpc


@pytest.fixture(scope="module")
def dc(rpc):
    from deltachat_rpc_client import DeltaChat

    return DeltaChat(rpc)


@pytest.fixture(scope="module")
def acfactory(dc, relay, logdir):
    f = AccountFactory(dc, DOMAIN, logdir)
    yield f
    f.close()


@pytest.fixture
def report(request, capsys):
    """print() that reaches the terminal even while pytest captures output."""

    def out(*args):
        with capsys.disabled():
            print(*args, flush=True)

    return out
