"""Issue 3 acceptance, real client: Delta Chat core under the chatmail policy.

A group of three, a securejoin (QR invite scanned by the other account) with a message exchange
afterwards, and a cleartext message from a raw SMTP client that gets 523 and is not stored.
Every wait is an event wait with a deadline; receivers are online before anyone sends.
"""

from __future__ import annotations

import email.utils
import imaplib
import smtplib

import pytest

from conftest import DOMAIN
from relaytools import unverified_context

ENC_NEEDED = "Encryption Needed: Invalid Unencrypted Mail"


@pytest.fixture(autouse=True)
def _complete_event_logs(acfactory):
    yield
    acfactory.drain_all()


def test_group_of_three(acfactory):
    ac1 = acfactory.new_by_transport("g1")
    ac2 = acfactory.new_by_qr("g2")
    ac3 = acfactory.new_by_transport("g3")
    for ac in (ac1, ac2, ac3):
        ac.online()
    group = ac1.create_group("policy group")
    group.add_contact(ac2, ac3)
    group.send_text("hello group from ac1")
    chats = {}
    for ac in (ac2, ac3):
        _, snap, _ = ac.wait_incoming_text("hello group from ac1")
        assert snap.show_padlock, snap
        assert len(snap.chat.get_contacts()) == 3, "three members"
        snap.chat.accept()
        chats[ac.name] = snap.chat
    # Each member answers in the group; the other two get it, encrypted.
    chats["g2"].send_text("reply from ac2")
    for ac in (ac1, ac3):
        _, snap, _ = ac.wait_incoming_text("reply from ac2")
        assert snap.show_padlock, snap
    chats["g3"].send_text("reply from ac3")
    for ac in (ac1, ac2):
        _, snap, _ = ac.wait_incoming_text("reply from ac3")
        assert snap.show_padlock, snap


def test_securejoin_qr(acfactory):
    ac1 = acfactory.new_by_transport("inviter")
    ac2 = acfactory.new_by_qr("joiner")
    ac1.online()
    ac2.online()
    qr = ac1.get_qr_code()
    assert qr.startswith("https://i.delta.chat/") or qr.upper().startswith("OPENPGP4FPR:"), qr
    ac2.secure_join(qr)
    ev1 = ac1.wait_kind("SecurejoinInviterProgress", timeout=90, progress=1000)
    ev2 = ac2.wait_kind("SecurejoinJoinerProgress", timeout=90, progress=1000)
    # Progress 1000 on both sides means verified. This core's contact snapshot has no
    # `is_verified` field any more; check that each side has the other as a key contact.
    for ac, ev, other in ((ac1, ev1, ac2), (ac2, ev2, ac1)):
        snap = ac.get_contact_by_id(ev["contactId"]).get_snapshot()
        assert snap.address == other.get_config("configured_addr"), snap
        assert snap.is_key_contact and snap.e2ee_avail, snap
    # And the chat works both ways, encrypted.
    ac2.create_chat(ac1).send_text("hello after securejoin")
    _, snap, _ = ac1.wait_incoming_text("hello after securejoin")
    assert snap.show_padlock, snap
    snap.chat.send_text("welcome")
    _, snap, _ = ac2.wait_incoming_text("welcome")
    assert snap.show_padlock, snap


def _inbox_count(relay, addr: str, password: str) -> int:
    imap = imaplib.IMAP4_SSL(relay.ip, 993, ssl_context=unverified_context())
    try:
        imap.login(addr, password)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK", data
        return int(data[0])
    finally:
        imap.logout()


def test_raw_smtp_cleartext_gets_523_and_is_not_stored(acfactory, relay):
    sender = acfactory.new_by_transport("raw-sender")
    rcpt = acfactory.new_by_transport("raw-rcpt")
    before = _inbox_count(relay, rcpt.addr, rcpt.password)
    msg = (
        f"From: <{sender.addr}>\r\n"
        f"To: <{rcpt.addr}>\r\n"
        "Subject: cleartext\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <cleartext-test@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "This is not encrypted.\r\n"
    )
    with smtplib.SMTP_SSL(relay.ip, 465, context=unverified_context(), timeout=30) as s:
        s.ehlo("[127.0.0.1]")
        s.login(sender.addr, sender.password)
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail(sender.addr, [rcpt.addr], msg.encode())
        code, text = ei.value.smtp_code, ei.value.smtp_error.decode()
        assert code == 523, (code, text)
        assert text == f"5.7.1 {ENC_NEEDED}", text
        # The session is still usable after the rejection.
        assert s.noop()[0] == 250
    assert _inbox_count(relay, rcpt.addr, rcpt.password) == before
