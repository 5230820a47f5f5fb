"""Two federated relays for the real-client federation tests: a dnsmasq DNS server (dnstools)
that publishes A, MX and DKIM records for both relay domains, and one relay process per domain
on its own loopback address with the standard ports, resolving through that DNS server.

The relays deliver to each other over port 443 (`/mxdeliv`) or 25 exactly as in production; the
`_` prefix of the domains turns certificate verification off (relay-behaviour §9.2). The Delta
Chat clients find the relays through the private hosts file written by scripts/pytest.sh.
"""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess

from dnstools import DnsServer
from relaytools import Relay, relay_binary

FED_A_DOMAIN = os.environ.get("FED_A_DOMAIN", "_fed-a.test")
FED_A_IP = os.environ.get("FED_A_IP", "127.0.0.3")
FED_B_DOMAIN = os.environ.get("FED_B_DOMAIN", "_fed-b.test")
FED_B_IP = os.environ.get("FED_B_IP", "127.0.0.4")
DNS_IP = "127.0.0.53"


def check_hosts(names_ips) -> str | None:
    """None if every name resolves (hosts file) to its address, else the problem."""
    for name, ip in names_ips:
        try:
            ips = {ai[4][0] for ai in socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)}
        except socket.gaierror as e:
            return f"{name} does not resolve ({e}): run the tests through scripts/pytest.sh"
        if ip not in ips:
            return f"{name} resolves to {sorted(ips)}, not {ip}: run the tests through scripts/pytest.sh"
    return None


def relay_cli(relay: Relay, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `chatmail-box --config <cfg> --data-dir <dir> <args...>` for this relay."""
    cmd = [str(relay_binary()), "--config", str(relay.config_path), "--data-dir", str(relay.data_dir), *args]
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    env.setdefault("RUST_LOG", "warn")
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


_DKIM_LINE = re.compile(r'^(\S+)\s+TXT\s+"(.*)"\s*$')


def parse_dkim_records(zone_text: str) -> list[tuple[str, str]]:
    """(owner without the trailing dot, value) from the `; DKIM records as one string` section of
    `chatmail-box dns`."""
    out = []
    in_section = False
    for line in zone_text.splitlines():
        if line.startswith(";"):
            in_section = line.startswith("; DKIM records as one string")
            continue
        if not in_section or not line.strip():
            continue
        m = _DKIM_LINE.match(line.strip())
        if not m:
            raise AssertionError(f"unexpected line in the DKIM section: {line!r}")
        out.append((m.group(1).rstrip("."), m.group(2)))
    return out


def dkim_records(relay: Relay) -> list[tuple[str, str]]:
    """The relay's DKIM TXT records (the key is generated in its data dir on first use)."""
    text = relay_cli(relay, "dns", "--ip", relay.ip).stdout
    recs = parse_dkim_records(text)
    if not recs:
        raise AssertionError(f"no DKIM records in `chatmail-box dns` output:\n{text}")
    for owner, value in recs:
        assert owner.endswith(f"._domainkey.{relay.domain}"), owner
        assert value.startswith("v=DKIM1;") and ";p=" in value, value
    return recs


class LogMark:
    """Lines a relay log gained after a point in time (by byte offset)."""

    def __init__(self, relay: Relay):
        self.path = relay.log_path
        try:
            self.offset = self.path.stat().st_size
        except OSError:
            self.offset = 0

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                return f.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(1 for line in self.new_lines() if rx.search(line))


class Federation:
    """DNS server plus relays A and B. `start()` publishes the DKIM keys, then starts everything."""

    def __init__(self, workdir: pathlib.Path, extra: dict | None = None):
        workdir = pathlib.Path(workdir)
        self.dns = DnsServer(workdir / "dns", ip=DNS_IP)
        cfg = {"dns_nameserver": self.dns.address}
        cfg.update(extra or {})
        self.a = Relay(workdir / "relay-a", FED_A_DOMAIN, FED_A_IP, extra=cfg, name="relay-fed-a")
        self.b = Relay(workdir / "relay-b", FED_B_DOMAIN, FED_B_IP, extra=cfg, name="relay-fed-b")
        self.relays = (self.a, self.b)

    def start(self, timeout: float = 60):
        for r in self.relays:
            self.dns.add_relay(r.domain, r.ip, dkim_records(r))
        self.dns.start()
        # DNS answers before the relays start: mail never meets a missing record.
        for r in self.relays:
            assert self.dns.query_rcode(r.domain, 1) == (0, 1), f"A {r.domain}"
            assert self.dns.query_rcode(r.domain, 15) == (0, 1), f"MX {r.domain}"
        for owner in self.dns.txt:
            assert self.dns.query_rcode(owner, 16) == (0, 1), f"TXT {owner}"
        for r in self.relays:
            r.start(timeout=timeout)

    def stop(self):
        try:
            for r in self.relays:
                r.stop()
        finally:
            self.dns.stop()
