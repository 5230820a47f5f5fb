"""Issue 6 acceptance, real client: Delta Chat core configures against a relay whose METADATA
answers all six server keys (TURN on, an iroh relay URL, an operator appversions file, a privacy
contact), keeps exchanging messages, and GETQUOTAROOT reports what the mailbox holds.

The relay runs on its own address and name (`_meta.test`, mapped in scripts/pytest.sh's private
hosts file) so its configuration does not touch the session relay's.
"""

from __future__ import annotations

import imaplib
import json
import re
import socket

import pytest

from conftest import open_rpc
from dchelpers import AccountFactory, accepted_chat
from relaytools import Relay, unverified_context

META_DOMAIN = "_meta.test"
META_IP = "127.0.0.9"
IROH_URL = "https://iroh.example.org"
APPVERSIONS = {
    "clients": [
        {
            "clientId": "deltachat",
            "sources": [
                {
                    "sourceId": "gplay",
                    "versionInteger": 754,
                    "versionString": "2.57.0",
                    "downloadUrl": "https://github.com/deltachat/deltachat-android/releases",
                }
            ],
        }
    ]
}
# imaplib only sends the commands it knows.
imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))

SERVER_KEYS = [
    "/shared/comment",
    "/shared/admin",
    "/shared/vendor/deltachat/irohrelay",
    "/shared/vendor/deltachat/turn",
    "/shared/vendor/deltachat/maxsmtprecipients",
    "/shared/vendor/deltachat/appversions",
]


@pytest.fixture(scope="module")
def meta_relay(tmp_path_factory, logdir):
    try:
        resolved = socket.gethostbyname(META_DOMAIN)
    except OSError as e:
        pytest.exit(f"{META_DOMAIN} does not resolve ({e}): run through scripts/pytest.sh", returncode=3)
    assert resolved == META_IP
    work = tmp_path_factory.mktemp("meta")
    appversions = work / "appversions.json"
    appversions.write_text(json.dumps(APPVERSIONS, indent=2) + "\n")
    r = Relay(work, META_DOMAIN, META_IP, name="meta-relay", extra={
        "turn": True,
        "iroh_relay": IROH_URL,
        "privacy_mail": f"privacy@{META_DOMAIN}",
        "appversions_file": str(appversions),
        "max_mailbox_size": "50M",
    })
    r.start(timeout=60)
    yield r
    r.stop()
    try:
        (logdir / "meta-relay.log").write_bytes(r.log_path.read_bytes())
    except OSError:
        pass


@pytest.fixture(scope="module")
def rpc(meta_relay, tmp_path_factory, logdir, request):
    """One deltachat-rpc-server for this module (the session relay on _chat.test is not needed)."""
    with open_rpc(tmp_path_factory, logdir, request) as rpc:
        yield rpc


@pytest.fixture(scope="module")
def mf(dc, meta_relay, logdir):
    f = AccountFactory(dc, META_DOMAIN, logdir)
    yield f
    f.close()


def imap_login(addr: str, password: str) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(META_IP, 993, ssl_context=unverified_context(), timeout=20)
    m.login(addr, password)
    return m


def server_metadata(m: imaplib.IMAP4_SSL) -> dict[str, str | None]:
    """GETMETADATA "" (all six keys) parsed into {key: value or None for NIL}."""
    keys = " ".join(SERVER_KEYS)
    typ, data = m._simple_command("GETMETADATA", '""', f"({keys})")
    assert typ == "OK", data
    _, untagged = m._untagged_response(typ, data, "METADATA")
    # imaplib hands literals back as (prefix, value) tuples and plain lines as bytes.
    text = b""
    for part in untagged:
        if isinstance(part, tuple):
            text += part[0] + part[1]
        elif part:
            text += part
    text = text.decode()
    out: dict[str, str | None] = {}
    for key in SERVER_KEYS:
        pat = re.escape(key) + r' (?:NIL|"((?:[^"\\]|\\.)*)"|\{\d+\}(?:\r\n)?)'
        mm = re.search(pat, text)
        assert mm, f"{key} missing in {text!r}"
        if mm.group(0).endswith("NIL"):
            out[key] = None
        elif mm.group(1) is not None:
            out[key] = mm.group(1).replace('\\"', '"').replace("\\\\", "\\")
        else:
            # Literal: the value follows the {N} marker.
            start = mm.end()
            n = int(re.search(r"\{(\d+)\}", mm.group(0)).group(1))
            out[key] = text[start:start + n]
    return out


def stored_bytes(m: imaplib.IMAP4_SSL) -> int:
    """Sum of RFC822.SIZE over every message in every mailbox of the account."""
    typ, boxes = m.list()
    assert typ == "OK"
    total = 0
    for line in boxes:
        name = line.decode().rsplit(" ", 1)[-1]
        typ, data = m.select(name, readonly=True)
        assert typ == "OK", (name, data)
        if int(data[0]) == 0:
            continue
        typ, data = m.fetch("1:*", "(RFC822.SIZE)")
        assert typ == "OK"
        for item in data:
            if isinstance(item, tuple):
                item = item[0]
            total += int(re.search(rb"RFC822\.SIZE (\d+)", item).group(1))
    return total


def quota_root(m: imaplib.IMAP4_SSL) -> tuple[int, int]:
    typ, data = m.getquotaroot("INBOX")
    assert typ == "OK", data
    text = b" ".join(x for x in data[1] if isinstance(x, bytes)).decode()
    mm = re.search(r"\(STORAGE (\d+) (\d+)\)", text)
    assert mm, text
    return int(mm.group(1)), int(mm.group(2))


def test_client_works_with_all_metadata_keys_and_quota_matches(mf, meta_relay):
    a_addr, a_pw = mf.credentials("meta")
    ac1 = mf.new_by_transport("m1", addr=a_addr, password=a_pw)
    ac2 = mf.new_by_transport("m2")
    ac1.online()
    ac2.online()

    # The six server keys, as the client reads them after its own login.
    m = imap_login(a_addr, a_pw)
    try:
        meta = server_metadata(m)
    finally:
        m.logout()
    assert meta["/shared/comment"] is None
    assert meta["/shared/admin"] == f"mailto:privacy@{META_DOMAIN}"
    assert meta["/shared/vendor/deltachat/irohrelay"] == IROH_URL
    assert meta["/shared/vendor/deltachat/maxsmtprecipients"] == "1000"
    assert json.loads(meta["/shared/vendor/deltachat/appversions"]) == APPVERSIONS
    assert "\n" not in meta["/shared/vendor/deltachat/appversions"]
    turn = meta["/shared/vendor/deltachat/turn"]
    assert turn is not None
    host, port, user, password = turn.split(":", 3)
    assert (host, port) == (META_DOMAIN, "3478")
    assert int(user) > 0 and password, turn

    # The client keeps working: messages both ways.
    chat12 = accepted_chat(ac1, ac2)
    chat12.send_text("metadata hello 1")
    ac2.wait_incoming_text("metadata hello 1")
    chat21 = accepted_chat(ac2, ac1)
    chat21.send_text("metadata hello 2")
    ac1.wait_incoming_text("metadata hello 2")

    # Three more while ac1 is offline, so they are on the server for the quota check (the client
    # deletes what it has downloaded).
    ac1.stop_io()
    for i in range(3):
        msg = chat21.send_text(f"metadata offline {i}")
        ac2.wait_kind("MsgDelivered", msgId=msg.id)

    # GETQUOTAROOT: the used STORAGE is what the account's mailboxes hold, in KiB rounded up; the
    # limit is max_mailbox_size.
    m = imap_login(a_addr, a_pw)
    try:
        used_kib, limit_kib = quota_root(m)
        total = stored_bytes(m)
    finally:
        m.logout()
    assert total > 3 * 1000, total
    assert used_kib == -(-total // 1024), (used_kib, total)
    assert limit_kib == 50 * 1024 * 1024 // 1024

    ac1.start_io()
    for i in range(3):
        ac1.wait_incoming_text(f"metadata offline {i}")
