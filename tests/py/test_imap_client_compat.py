"""Wire-level checks of IMAP behaviour that Delta Chat core 2.65 depends on, found with the real
client (see test_realclient.py::test_second_device).

core's fetch loop (`chatmail/core: src/imap.rs::fetch_many_msgs`) takes the *first* FETCH response
that carries a requested UID. If the relay sends a pending flag update for that UID (another session
set \\Seen) *before* the command's own response, the client finds no BODY[] in it, logs
"Not processing message N without a BODY." and never shows the message.
"""

from __future__ import annotations

import re
import socket

from conftest import DOMAIN
from dchelpers import random_local, random_password
from relaytools import unverified_context
from test_durability import make_mail, smtp_login


class RawImap:
    """Minimal IMAP client that keeps every response line in wire order."""

    def __init__(self, ip: str, port: int = 993):
        sock = socket.create_connection((ip, port), timeout=10)
        self.s = unverified_context().wrap_socket(sock, server_hostname=DOMAIN)
        self.f = self.s.makefile("rb")
        self.n = 0
        self.read_response()  # greeting

    def read_response(self) -> bytes:
        """One response (line plus any literals)."""
        out = b""
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("connection closed")
            out += line
            m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
            if not m:
                return out
            out += self.f.read(int(m.group(1)))

    def cmd(self, text: str) -> tuple[list[bytes], bytes]:
        self.n += 1
        tag = f"T{self.n}".encode()
        self.s.sendall(tag + b" " + text.encode() + b"\r\n")
        untagged = []
        while True:
            r = self.read_response()
            if r.startswith(tag + b" "):
                return untagged, r
            untagged.append(r)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def test_flag_update_does_not_precede_fetch_body(relay):
    import random

    sender = (f"{random_local(9, 's')}@{DOMAIN}", random_password())
    rcpt = (f"{random_local(9, 'r')}@{DOMAIN}", random_password())
    for addr, pw in (sender, rcpt):
        smtp_login(relay.ip, addr, pw).quit()

    device1, device2 = RawImap(relay.ip), RawImap(relay.ip)
    try:
        for dev in (device1, device2):
            assert dev.cmd(f'LOGIN "{rcpt[0]}" "{rcpt[1]}"')[1].split()[1] == b"OK"
            assert dev.cmd('SELECT "INBOX"')[1].split()[1] == b"OK"
        s = smtp_login(relay.ip, *sender)
        s.sendmail(sender[0], [rcpt[0]], make_mail(sender[0], [rcpt[0]], "compat-1@test", random.Random(1)))
        s.quit()
        # Both devices learn about the new message.
        for dev in (device1, device2):
            untagged, done = dev.cmd("NOOP")
            assert b"OK" in done
        untagged, done = device1.cmd("UID SEARCH ALL")
        uids = [int(x) for u in untagged if u.startswith(b"* SEARCH") for x in u.split()[2:]]
        assert len(uids) == 1, untagged
        uid = uids[0]
        # Device 1 marks it seen (as core does after it downloaded the message) ...
        untagged, done = device1.cmd(f"UID STORE {uid} +FLAGS (\\Seen)")
        assert done.split()[1] == b"OK", done
        # ... and device 2 downloads it, exactly as core does.
        untagged, done = device2.cmd(f"UID FETCH {uid} (FLAGS BODY.PEEK[])")
        assert done.split()[1] == b"OK", done
        fetches = [u for u in untagged if re.match(rb"\* \d+ FETCH ", u) and re.search(rb"\bUID " + str(uid).encode() + rb"\b", u)]
        assert fetches, untagged
        first = fetches[0]
        assert b"BODY[]" in first, (
            f"first FETCH response for UID {uid} has no BODY[] (core 2.65 would drop the message): "
            f"{[f[:120] for f in fetches]}")
    finally:
        device1.close()
        device2.close()
