"""Issue 4 acceptance, real client: Delta Chat accounts on two federated relays.

Relay A (_fed-a.test, 127.0.0.3) and relay B (_fed-b.test, 127.0.0.4) find each other through a
real DNS server (dnsmasq on 127.0.0.53: A, MX and the DKIM keys each relay prints with
`chatmail-box dns`) and deliver to each other over /mxdeliv or port 25, with strict DKIM on the
receiving side. Every wait is an event wait with a deadline; receivers are online before anyone
sends. Besides what the clients show, each test checks in the relay logs that the mail really
crossed from one relay to the other.

Bounces, as observed with deltachat-rpc-server 2.65: the client downloads the relay's DSN (its
From contains mailer-daemon) but, with the default force_encryption=1, drops it as unencrypted
before any DSN handling, so the message stays "delivered". Only with force_encryption=0 does the
same DSN mark the message failed (state OutFailed, error text from the DSN). The test asserts
both.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import time

import pytest

from conftest import open_rpc
from dchelpers import AccountFactory, accepted_chat
from deltachat_rpc_client.const import MessageState
from fedtools import FED_A_DOMAIN, FED_A_IP, FED_B_DOMAIN, FED_B_IP, Federation, LogMark, check_hosts, relay_cli
from relaytools import unverified_context

# Log lines of the relays (tracing fmt, NO_COLOR) that show a federation hop.
OUT_DELIVERED = r'delivery::runner: delivered queue_id=\d+ via="(HTTPS|SMTP)"'
# With 443 open between the relays, /mxdeliv is used first (relay-behaviour §9.3).
OUT_HTTPS = r'delivery::runner: delivered queue_id=\d+ via="HTTPS"'
IN_DELIVERED = r"delivery::inbound: inbound message delivered recipients=1 unknown=0"
IN_UNKNOWN = r"delivery::inbound: inbound message delivered recipients=0 unknown=1"
BOUNCE_MADE = r"delivery::bounce: bounce generated recipients=1"
ORIGIN_REJECT = r"origin check failed"


@pytest.fixture(scope="module")
def fed(tmp_path_factory, logdir):
    problem = check_hosts([(FED_A_DOMAIN, FED_A_IP), (FED_B_DOMAIN, FED_B_IP)])
    if problem:
        pytest.exit(problem, returncode=3)
    # A short first retry: relay B is restarted once (account deletion needs its store lock),
    # and a message caught by the restart must not wait the default minute.
    f = Federation(tmp_path_factory.mktemp("fed"), extra={"delivery_retry_base": 2})
    try:
        f.start()
        yield f
    finally:
        f.stop()
        for r in f.relays:
            try:
                (logdir / f"{r.name}.log").write_bytes(r.log_path.read_bytes())
            except OSError:
                pass
        try:
            (logdir / "dnsmasq-fed.log").write_bytes(f.dns.log.read_bytes())
        except OSError:
            pass


@pytest.fixture(scope="module")
def rpc(fed, tmp_path_factory, logdir, request):
    """One deltachat-rpc-server for this module (without the session relay on _chat.test)."""
    with open_rpc(tmp_path_factory, logdir, request) as rpc:
        yield rpc


@pytest.fixture(scope="module")
def fa(dc, fed, logdir):
    f = AccountFactory(dc, FED_A_DOMAIN, logdir)
    yield f
    f.close()


@pytest.fixture(scope="module")
def fb(dc, fed, logdir):
    f = AccountFactory(dc, FED_B_DOMAIN, logdir)
    yield f
    f.close()


@pytest.fixture(autouse=True)
def _complete_event_logs(fa, fb):
    yield
    fa.drain_all()
    fb.drain_all()


def wait_log(mark: LogMark, pattern: str, n: int = 1, timeout: float = 15.0) -> list[str]:
    """Wait until the relay log has at least `n` new lines matching `pattern`; returns them."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        hits = [line for line in mark.new_lines() if rx.search(line)]
        if len(hits) >= n:
            return hits
        if time.monotonic() > deadline:
            tail = "\n  ".join(mark.new_lines()[-30:])
            raise AssertionError(f"{mark.path}: {len(hits)} of {n} lines matching {pattern!r} "
                                 f"after {timeout:.0f}s; new lines:\n  {tail}")
        time.sleep(0.1)


def addr_of(ac) -> str:
    return ac.get_config("configured_addr")


def test_securejoin_across_relays(fed, fa, fb):
    inviter = fa.new_by_transport("sj-inviter")
    joiner = fb.new_by_qr("sj-joiner")
    assert addr_of(inviter).endswith("@" + FED_A_DOMAIN)
    assert addr_of(joiner).endswith("@" + FED_B_DOMAIN)
    inviter.online()
    joiner.online()
    mark_a, mark_b = LogMark(fed.a), LogMark(fed.b)
    qr = inviter.get_qr_code()
    assert qr.startswith("https://i.delta.chat/") or qr.upper().startswith("OPENPGP4FPR:"), qr
    joiner.secure_join(qr)
    ev_i = inviter.wait_kind("SecurejoinInviterProgress", timeout=90, progress=1000)
    ev_j = joiner.wait_kind("SecurejoinJoinerProgress", timeout=90, progress=1000)
    # Progress 1000 on both sides means verified; each side has the other as a key contact with
    # an accepted, encrypted 1:1 chat.
    for ac, ev, other in ((inviter, ev_i, joiner), (joiner, ev_j, inviter)):
        contact = ac.get_contact_by_id(ev["contactId"])
        snap = contact.get_snapshot()
        assert snap.address == addr_of(other), snap
        assert snap.is_key_contact and snap.e2ee_avail, snap
        chat = ac.get_chat_by_contact(contact)
        assert chat is not None, f"{ac.name}: no chat with {snap.address}"
        full = chat.get_full_snapshot()
        assert full.is_encrypted and not full.is_contact_request and full.can_send, full
        assert full.contact_ids == [contact.id], full
    # The handshake crossed the relays both ways (vc-request B->A, vc-auth-required A->B, ...).
    wait_log(mark_b, OUT_HTTPS)
    wait_log(mark_a, IN_DELIVERED)
    wait_log(mark_a, OUT_HTTPS)
    wait_log(mark_b, IN_DELIVERED)
    # And the verified chat carries messages both ways, encrypted.
    joiner.get_chat_by_contact(joiner.get_contact_by_id(ev_j["contactId"])).send_text("hello after securejoin")
    _, snap, _ = inviter.wait_incoming_text("hello after securejoin")
    assert snap.show_padlock, snap
    assert snap.sender.get_snapshot().address == addr_of(joiner), snap
    snap.chat.send_text("welcome across relays")
    _, snap, _ = joiner.wait_incoming_text("welcome across relays")
    assert snap.show_padlock, snap
    assert snap.sender.get_snapshot().address == addr_of(inviter), snap
    assert not fed.a.log_path.read_text(errors="replace").count(ORIGIN_REJECT)
    assert not fed.b.log_path.read_text(errors="replace").count(ORIGIN_REJECT)


def test_encrypted_messages_both_ways(fed, fa, fb):
    a = fa.new_by_transport("enc-a")
    b = fb.new_by_transport("enc-b")
    a.online()
    b.online()
    chat_ab = accepted_chat(a, b)
    chat_ba = b.create_chat(a)

    mark_a, mark_b = LogMark(fed.a), LogMark(fed.b)
    sent = chat_ab.send_text("A to B over federation")
    msg, snap, _ = b.wait_incoming_text("A to B over federation")
    assert snap.show_padlock, snap
    assert snap.error is None, snap
    assert snap.sender.get_snapshot().address == addr_of(a), snap
    assert snap.chat_id == chat_ba.id, snap
    # Relay A handed it to relay B over /mxdeliv, relay B stored it.
    wait_log(mark_a, OUT_HTTPS)
    wait_log(mark_b, IN_DELIVERED)
    a.wait(lambda ev: ev.get("kind") == "MsgDelivered" and ev.get("msgId") == sent.id, what="MsgDelivered A->B")
    assert sent.get_snapshot().state in (MessageState.OUT_DELIVERED, MessageState.OUT_MDN_RCVD)

    mark_a, mark_b = LogMark(fed.a), LogMark(fed.b)
    chat_ba.send_text("B to A over federation")
    _, snap, _ = a.wait_incoming_text("B to A over federation")
    assert snap.show_padlock, snap
    assert snap.error is None, snap
    assert snap.sender.get_snapshot().address == addr_of(b), snap
    assert snap.chat_id == chat_ab.id, snap
    wait_log(mark_b, OUT_HTTPS)
    wait_log(mark_a, IN_DELIVERED)


def test_read_receipt_across_relays(fed, fa, fb):
    a = fa.new_by_transport("mdn-a")
    b = fb.new_by_transport("mdn-b")
    for ac in (a, b):
        ac.set_config("mdns_enabled", "1")
        ac.online()
    chat_ab = accepted_chat(a, b)
    sent = chat_ab.send_text("please read me")
    msg, snap, _ = b.wait_incoming_text("please read me")
    assert snap.show_padlock, snap
    a.wait(lambda ev: ev.get("kind") == "MsgDelivered" and ev.get("msgId") == sent.id, what="MsgDelivered")
    assert sent.get_snapshot().state == MessageState.OUT_DELIVERED

    mark_a, mark_b = LogMark(fed.a), LogMark(fed.b)
    b.mark_seen_messages([msg])
    a.wait(lambda ev: ev.get("kind") == "MsgRead" and ev.get("msgId") == sent.id, timeout=60, what="MsgRead")
    assert sent.get_snapshot().state == MessageState.OUT_MDN_RCVD
    receipts = sent.get_read_receipts()
    b_on_a = chat_ab.get_contacts()
    assert [r.contact_id for r in receipts] == [c.id for c in b_on_a], receipts
    # The receipt is an encrypted message from B's relay to A's relay.
    wait_log(mark_b, OUT_HTTPS)
    wait_log(mark_a, IN_DELIVERED)


def _inbox_messages(relay, addr: str, password: str) -> list[email.message.EmailMessage]:
    imap = imaplib.IMAP4_SSL(relay.ip, 993, ssl_context=unverified_context())
    try:
        imap.login(addr, password)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK", data
        typ, data = imap.uid("SEARCH", None, "ALL")
        assert typ == "OK", data
        out = []
        for uid in data[0].split():
            typ, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            assert typ == "OK", parts
            raw = next(p[1] for p in parts if isinstance(p, tuple))
            out.append(email.message_from_bytes(raw, policy=email.policy.default))
        return out
    finally:
        imap.logout()


def test_bounce_for_deleted_account(fed, fa, fb):
    # bcc_self keeps A's mail on the server, so the bounce can be inspected after the client
    # fetched it.
    a = fa.new_by_transport("bounce-a", bcc_self=True)
    c = fb.new_by_transport("bounce-c")
    a.online()
    c.online()
    # C writes first: A learns C's key from the message (Autocrypt) and accepts the chat.
    c.create_chat(a).send_text("hello from C")
    _, snap, _ = a.wait_incoming_text("hello from C")
    assert snap.show_padlock, snap
    chat_ac = snap.chat
    chat_ac.accept()

    # C goes away: its client stops (it would log in again and so re-create the account), and
    # the operator deletes the account on relay B, which holds its store lock while running.
    c.stop_io()
    fed.b.stop()
    listed = relay_cli(fed.b, "account", "list").stdout.split()
    assert c.addr in listed, listed
    out = relay_cli(fed.b, "account", "delete", c.addr).stdout
    assert out.strip() == f"deleted {c.addr}", out
    assert c.addr not in relay_cli(fed.b, "account", "list").stdout.split()
    fed.b.start(timeout=60)

    # 1. Default client settings (force_encryption=1): the relays produce and deliver the
    #    bounce, the client downloads it (From contains mailer-daemon) but drops it as
    #    unencrypted (core 2.65 receive_imf: "Fetched unencrypted message, ignoring"), so the
    #    message keeps its "delivered" state.
    mark_a, mark_b = LogMark(fed.a), LogMark(fed.b)
    sent = chat_ac.send_text("to the deleted account")
    bounce_mid = _wait_bounce_relayed(fed, mark_a, mark_b, a, c.addr, nth=1)
    fetched = a.wait(lambda ev: ev.get("kind") == "Info" and f'"{bounce_mid}"' in ev.get("msg", ""),
                     what=f"download of the bounce {bounce_mid}")
    verdict = a.wait(lambda ev: (ev.get("kind") == "Warning" and "unencrypted" in ev.get("msg", ""))
                     or (ev.get("kind") == "MsgFailed" and ev.get("msgId") == sent.id)
                     or ev.get("kind") == "IncomingMsg",
                     what="the client's verdict on the bounce")
    assert verdict["kind"] == "Warning", (fetched, verdict)
    assert "Fetched unencrypted message, ignoring" in verdict["msg"], verdict
    a.online()  # all IMAP work done: nothing else comes of the bounce
    snap = sent.get_snapshot()
    assert snap.state == MessageState.OUT_DELIVERED, snap
    assert snap.error is None, snap

    # 2. With force_encryption=0 the same kind of bounce reaches core's DSN handling: the
    #    message is marked failed, with the relay's reason.
    a.set_config("force_encryption", "0")
    mark_a, mark_b = LogMark(fed.a), LogMark(fed.b)
    sent = chat_ac.send_text("to the deleted account, again")
    ev = a.wait(lambda ev: ev.get("kind") == "MsgFailed" and ev.get("msgId") == sent.id, timeout=60,
                what="MsgFailed for the message to the deleted account")
    snap = sent.get_snapshot()
    assert snap.state == MessageState.OUT_FAILED, snap
    assert snap.error, snap
    print(f"\nbounce: error shown by the client: {snap.error!r}")
    _wait_bounce_relayed(fed, mark_a, mark_b, a, c.addr, nth=2)


def _wait_bounce_relayed(fed, mark_a, mark_b, a, rcpt: str, nth: int) -> str:
    """Relay B took the message from A (federation), found no account, and bounced it; relay A
    accepted the bounce, which it only does for a valid DKIM signature of _fed-b.test (strict,
    aligned). Returns the bounce's Message-ID (without <>), read from A's mailbox."""
    wait_log(mark_a, OUT_DELIVERED)
    wait_log(mark_b, IN_UNKNOWN)
    wait_log(mark_b, BOUNCE_MADE)
    wait_log(mark_b, OUT_DELIVERED)
    wait_log(mark_a, IN_DELIVERED)
    assert mark_a.count(ORIGIN_REJECT) == 0
    bounces = [m for m in _inbox_messages(fed.a, a.addr, a.password)
               if "mailer-daemon" in str(m.get("From", "")).lower()]
    assert len(bounces) == nth, [str(m.get("From")) for m in bounces]
    dsn = bounces[-1]
    assert dsn["From"].addresses[0].addr_spec == f"MAILER-DAEMON@{FED_B_DOMAIN}", dsn["From"]
    assert dsn["To"].addresses[0].addr_spec == a.addr, dsn["To"]
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    raw = dsn.as_string()
    assert f"Final-Recipient: rfc822; {rcpt}" in raw, raw
    assert "Action: failed" in raw and "Status: 5.1.1" in raw, raw
    # Stored without server-side trace headers (relay-behaviour §7.8).
    assert dsn.get_all("DKIM-Signature") is None and dsn.get_all("Received") is None
    return dsn["Message-ID"].strip().strip("<>")
