"""Start, stop and probe a chatmail-box relay process for the Python tests."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import ssl
import subprocess
import time

STANDARD_PORTS = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "https": 443,
    "http": 80,
}

REPO = pathlib.Path(__file__).resolve().parents[2]


def relay_binary() -> pathlib.Path:
    b = os.environ.get("CHATMAIL_BOX_BIN") or str(REPO / "target" / "debug" / "chatmail-box")
    p = pathlib.Path(b)
    if not p.is_absolute():
        p = REPO / p
    return p


def unverified_context() -> ssl.SSLContext:
    """TLS client context for the self-signed relay when the test is not about certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def toml_str(s) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


class RelayStartError(AssertionError):
    pass


class Relay:
    """One relay process with its own config and data directory.

    `start()` may be called again after `kill()`/`stop()`; the log file is appended to.
    """

    def __init__(self, workdir: pathlib.Path, domain: str, ip: str, ports=None, extra: dict | None = None,
                 name: str = "relay"):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.domain = domain
        self.ip = ip
        self.ports = dict(STANDARD_PORTS if ports is None else ports)
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "config.toml"
        self.log_path = self.workdir / "relay.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.extra = {
            # Tests run many accounts on a shared 2-core machine: resource guards and the
            # send rate limit would only produce flakes here.
            "max_user_send_per_minute": 100000,
            "max_user_send_burst_size": 100000,
            "max_load_1m": 10000.0,
            "min_available_memory": "0M",
            "min_free_disk_space": "0M",
        }
        self.extra.update(extra or {})
        self.write_config()

    @property
    def cert_path(self) -> pathlib.Path:
        return self.data_dir / "tls" / "cert.pem"

    def write_config(self):
        lines = [
            f"mail_domain = {toml_str(self.domain)}",
            f"data_dir = {toml_str(self.data_dir)}",
            f"listen = {toml_str(self.ip)}",
            'tls = "self-signed"',
        ]
        for k, v in self.extra.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, (int, float)):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = {toml_str(v)}")
        lines.append("[ports]")
        for k, v in self.ports.items():
            lines.append(f"{k} = {v}")
        self.config_path.write_text("\n".join(lines) + "\n")

    # ---- process control ----------------------------------------------------------------

    def spawn(self):
        assert self.proc is None or self.proc.poll() is not None, "relay already running"
        binary = relay_binary()
        if not binary.exists():
            raise RelayStartError(f"relay binary {binary} missing: run cargo build")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", os.environ.get("RELAY_RUST_LOG", "info,chatmail_box=debug"))
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(binary), "--config", str(self.config_path), "--data-dir", str(self.data_dir), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.starts += 1
        piddir = os.environ.get("CHATMAIL_TEST_PIDDIR")
        if piddir:
            try:
                pathlib.Path(piddir, f"{self.name}-{os.getpid()}-{id(self)}").write_text(str(self.proc.pid))
            except OSError:
                pass

    def start(self, timeout: float = 30.0) -> float:
        """Spawn and wait until ready; returns the seconds it took."""
        t0 = time.monotonic()
        self.spawn()
        self.wait_ready(timeout)
        return time.monotonic() - t0

    def tls_ports(self):
        return [p for p in (self.ports.get("imaps"), self.ports.get("submissions"), self.ports.get("https")) if p]

    def wait_ready(self, timeout: float = 30.0, ports=None):
        """Wait until every implicit-TLS port completes a TLS handshake."""
        deadline = time.monotonic() + timeout
        pending = list(ports or self.tls_ports())
        last_err = None
        while pending:
            if self.proc is not None and self.proc.poll() is not None:
                raise RelayStartError(
                    f"{self.name} exited with {self.proc.returncode} during startup\n{self.log_tail()}")
            port = pending[0]
            try:
                tls_handshake(self.ip, port, self.domain, timeout=2.0)
                pending.pop(0)
                continue
            except OSError as e:
                last_err = e
            if time.monotonic() > deadline:
                raise RelayStartError(
                    f"{self.name} not ready on {self.ip}:{port} after {timeout}s: {last_err!r}\n{self.log_tail()}")
            time.sleep(0.02)

    def kill(self):
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0):
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no relay log)"
        return f"--- last {n} lines of {self.log_path} ---\n" + "\n".join(lines[-n:])


def tls_handshake(ip: str, port: int, server_name: str, timeout: float = 5.0, alpn=None, cafile=None):
    """Complete one TLS handshake; returns (version, alpn)."""
    if cafile:
        ctx = ssl.create_default_context(cafile=str(cafile))
    else:
        ctx = unverified_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection((ip, port), timeout=timeout) as s:
        with ctx.wrap_socket(s, server_hostname=server_name) as t:
            return t.version(), t.selected_alpn_protocol()
