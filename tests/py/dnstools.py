"""A real DNS server for the federation tests: Debian's dnsmasq, authoritative for the test
names, on a loopback address inside the test's private network namespace.

Records are collected in Python and written to a dnsmasq config file; `start()` (again after a
change) restarts dnsmasq with the new zone. Names under `local_domains` that have no record
answer NXDOMAIN; nothing is forwarded anywhere (`no-resolv`).
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import struct
import subprocess
import time

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


class DnsServer:
    def __init__(self, workdir: pathlib.Path, ip: str = "127.0.0.53", port: int = 53,
                 local_domains=("test",)):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ip = ip
        self.port = port
        self.local_domains = list(local_domains)
        self.a: list[tuple[str, str]] = []
        self.mx: list[tuple[str, str, int]] = []
        self.txt: dict[str, list[str]] = {}
        self.proc: subprocess.Popen | None = None
        self.conf = self.workdir / "dnsmasq.conf"
        self.log = self.workdir / "dnsmasq.log"

    @property
    def address(self) -> str:
        """`ip:port` for the relay's `dns_nameserver` key."""
        return f"{self.ip}:{self.port}"

    def add_a(self, name: str, ip: str):
        self.a.append((name, ip))

    def add_mx(self, name: str, target: str, pref: int = 10):
        self.mx.append((name, target, pref))

    def add_txt(self, name: str, value: str):
        """One TXT record; values over 255 bytes are split into several character-strings."""
        chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
        self.txt.setdefault(name, []).append(chunks)

    def add_relay(self, domain: str, ip: str, dkim_records=()):
        """A, MX (the domain itself) and the relay's DKIM TXT records ((owner, value) pairs)."""
        self.add_a(domain, ip)
        self.add_mx(domain, domain)
        for owner, value in dkim_records:
            self.add_txt(f"{owner}.{domain}" if not owner.endswith(domain) else owner, value)

    def write_config(self):
        lines = [
            "no-resolv", "no-hosts", "no-poll", "bind-interfaces",
            f"listen-address={self.ip}", f"port={self.port}",
            "log-queries", f"log-facility={self.log}", "user=root", "pid-file=",
        ]
        lines += [f"local=/{d}/" for d in self.local_domains]
        lines += [f"host-record={n},{ip}" for n, ip in self.a]
        lines += [f"mx-host={n},{t},{p}" for n, t, p in self.mx]
        for name, recs in self.txt.items():
            for chunks in recs:
                quoted = ",".join('"' + c.replace('"', '\\"') + '"' for c in chunks)
                lines.append(f"txt-record={name},{quoted}")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0):
        self.stop()
        self.write_config()
        self.proc = subprocess.Popen(
            [DNSMASQ, "--keep-in-foreground", f"--conf-file={self.conf}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "dnsmasq.err", "ab"),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = (self.workdir / "dnsmasq.err").read_text(errors="replace")
                raise AssertionError(f"dnsmasq exited with {self.proc.returncode}: {err}")
            if self.query_rcode(self.a[0][0] if self.a else "probe.test") is not None:
                return
            if time.monotonic() > deadline:
                raise AssertionError("dnsmasq did not answer")
            time.sleep(0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def query_rcode(self, name: str, qtype: int = 1):
        """Send one UDP query; returns (rcode, answer count) or None when nothing answered."""
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
        pkt = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            try:
                s.sendto(pkt, (self.ip, self.port))
                data, _ = s.recvfrom(4096)
            except OSError:
                return None
        if len(data) < 12:
            return None
        flags, _, ancount = struct.unpack(">HHH", data[2:8])
        return flags & 0xF, ancount
