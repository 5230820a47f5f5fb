"""Issue 2 acceptance, real client: Delta Chat core 2.65.0 (deltachat-rpc-server) against the relay.

Recipe A of client-contract.md: domain `_chat.test` (private /etc/hosts), self-signed certificate,
default (strict) certificate checks. Every wait is an event wait with a deadline; receivers are
online before anyone sends to them (first-SELECT rule, client-contract §2.4).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time

import pytest

from conftest import DOMAIN
from dchelpers import JsonRpcError, accepted_chat, percentile

SELF_CONTACT_ID = 1


@pytest.fixture(autouse=True)
def _complete_event_logs(acfactory):
    yield
    acfactory.drain_all()


@pytest.fixture
def pair(acfactory):
    """alice configured with add_or_update_transport, bob with dcaccount:<domain>; both online."""
    alice = acfactory.new_by_transport("alice")
    bob = acfactory.new_by_qr("bob")
    alice.online()
    bob.online()
    return alice, bob


def test_configure_both_ways(pair, report):
    alice, bob = pair
    for ac in (alice, bob):
        assert ac.is_configured()
        local, _, domain = ac.get_config("configured_addr").partition("@")
        assert domain == DOMAIN and len(local) == 9, ac.get_config("configured_addr")
        settings = ac.get_info().get("used_transport_settings", "")
        report(f"{ac.name}: {settings}")
        assert f"{DOMAIN}:993" in settings or "993" in settings, settings
    # dcaccount: went through the autoconfig XML, which lists 993/465 first.
    assert "465" in bob.get_info().get("used_transport_settings", "")


def test_encrypted_exchange_both_ways(pair):
    alice, bob = pair
    chat = alice.create_chat(bob)  # imports bob's vCard with his key: encrypted from message 1
    sent = chat.send_text("ping from alice")
    _, snap, _ = bob.wait_incoming_text("ping from alice")
    assert snap.show_padlock, snap
    assert sent.get_snapshot().show_padlock
    snap.chat.accept()  # the first 1:1 message arrives as a contact request
    snap.chat.send_text("pong from bob")
    _, snap2, _ = alice.wait_incoming_text("pong from bob")
    assert snap2.show_padlock, snap2
    # And once more each way in the accepted chat.
    chat.send_text("second from alice")
    assert bob.wait_incoming_text("second from alice")[1].show_padlock
    snap.chat.send_text("second from bob")
    assert alice.wait_incoming_text("second from bob")[1].show_padlock


def test_10mb_attachment(pair, tmp_path, report):
    alice, bob = pair
    chat = accepted_chat(alice, bob)
    bob_chat = bob.create_chat(alice)
    data = os.urandom(10 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    path = tmp_path / "tenmegs.bin"
    path.write_bytes(data)
    del data

    t0 = time.monotonic()
    sent = chat.send_message(text="ten megabytes", file=str(path))
    deadline = t0 + 300
    found = None
    while found is None:
        assert time.monotonic() < deadline, "10 MB attachment not received within 300 s (see events logs)"
        bob.next_event(0.5)
        for ev in alice.drain():
            if ev.get("kind") == "MsgFailed" and ev.get("msgId") == sent.id:
                pytest.fail(f"sending failed: {sent.get_snapshot().error}")
        for m in bob_chat.get_messages():
            s = m.get_snapshot()
            if not s.file or s.from_id == SELF_CONTACT_ID:
                continue
            if s.download_state == "Done" and s.file_bytes == path.stat().st_size and os.path.exists(s.file):
                found = s
                break
    elapsed = time.monotonic() - t0
    with open(found.file, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    assert os.path.getsize(found.file) == path.stat().st_size
    assert got == digest, "received attachment differs from the sent one"
    assert found.show_padlock
    assert found.text == "ten megabytes"
    report(f"10 MiB attachment: sent -> received intact in {elapsed:.2f} s")


def test_second_device(acfactory, tmp_path):
    """Device 2 of alice (same credentials and key, bcc_self=1 on both) sees the conversation."""
    alice1 = acfactory.new_by_transport("alice1", bcc_self=True)
    bob = acfactory.new_by_qr("bob")
    # Device 2 needs alice's key to read mail encrypted to her: export it from device 1.
    alice1.self_contact.make_vcard()  # makes sure the key exists
    keydir = tmp_path / "keys"
    keydir.mkdir()
    alice1.export_self_keys(keydir)
    alice2 = acfactory.new_unconfigured("alice2")
    try:
        alice2.import_self_keys(keydir)
        imported = True
    except JsonRpcError:
        imported = False  # core may want a configured address first
    alice2.configure_transport(acfactory.transport_params(alice1.addr, alice1.password))
    if not imported:
        alice2.import_self_keys(keydir)
    alice2.set_config("bcc_self", "1")
    assert alice1.get_config("bcc_self") == "1" and alice2.get_config("bcc_self") == "1"

    def primary_key(ac) -> bytes:
        """The primary public-key packet of the vCard's KEY (signatures may differ per device)."""
        card = ac.self_contact.make_vcard()
        b64 = "".join(line for line in card.replace("\r\n ", "").splitlines() if line.upper().startswith("KEY"))
        data = base64.b64decode(b64.split(",", 1)[1].replace("\\", ""))
        assert data[0] & 0xC0 == 0xC0, "expected a new-format OpenPGP packet"
        n = data[1]
        if n < 192:
            return data[: 2 + n]
        if n < 224:
            return data[: 3 + ((n - 192) << 8) + data[2] + 192]
        return data[: 6 + int.from_bytes(data[2:6], "big")]

    assert primary_key(alice1) == primary_key(alice2), "device 2 does not use alice's key"
    assert primary_key(alice1) != primary_key(bob)

    for ac in (alice1, alice2, bob):
        ac.online()

    chat = accepted_chat(alice1, bob)
    chat.send_text("hello from device 1")
    assert bob.wait_incoming_text("hello from device 1")[1].show_padlock

    # Device 2 gets the BCC-self copy: an outgoing message in its chat with bob.
    def outgoing_on(ac, text):
        box = {}

        def pred(ev):
            if ev.get("kind") not in ("MsgsChanged", "IncomingMsg") or not ev.get("msgId"):
                return False
            s = ac.get_message_by_id(ev["msgId"]).get_snapshot()
            if s.text == text:
                box["s"] = s
                return True
            return False

        ac.wait(pred, what=f"outgoing copy of {text!r}")
        return box["s"]

    s2 = outgoing_on(alice2, "hello from device 1")
    assert s2.from_id == SELF_CONTACT_ID, s2
    assert s2.show_padlock, s2

    # bob's answer reaches both devices.
    bob.create_chat(alice1).send_text("answer from bob")
    assert alice2.wait_incoming_text("answer from bob")[1].show_padlock
    assert alice1.wait_incoming_text("answer from bob")[1].show_padlock

    # And the other way: device 2 writes, bob and device 1 see it.
    alice2.get_chat_by_id(s2.chat_id).send_text("hello from device 2")
    assert bob.wait_incoming_text("hello from device 2")[1].show_padlock
    s1 = outgoing_on(alice1, "hello from device 2")
    assert s1.from_id == SELF_CONTACT_ID and s1.show_padlock, s1


def test_latency_20_pingpongs(pair, report, logdir):
    """Prints latencies; asserts nothing about them.

    - send -> IncomingMsg: from the send RPC to the receiver's IncomingMsg event. Includes core's
      own send rate limit (bursts of 3, then about 1 message/s per account), which dominates once
      the ping-pong runs at 1 round per second.
    - delivered -> IncomingMsg: from the sender's MsgDelivered event (SMTP accepted the message) to
      the receiver's IncomingMsg, both stamped when they reached this process: relay delivery,
      IDLE push, fetch and decryption.
    """
    alice, bob = pair
    chat_a = accepted_chat(alice, bob)
    chat_b = bob.create_chat(alice)
    # Warm-up round (SMTP connections, key imports), not measured.
    chat_a.send_text("warm-up ping")
    bob.wait_incoming_text("warm-up ping")
    chat_b.send_text("warm-up pong")
    alice.wait_incoming_text("warm-up pong")

    def one_way(src, dst, chat, text):
        t0 = time.monotonic()
        sent = chat.send_text(text)
        ev_in = dst.wait_incoming_text(text)[2]
        ev_sent = src.wait(lambda e: e.get("kind") == "MsgDelivered" and e.get("msgId") == sent.id,
                           what=f"MsgDelivered for {text!r}")
        return ev_in["_t"] - t0, ev_in["_t"] - ev_sent["_t"], ev_in["_t"]

    send_ab, send_ba, dlv_ab, dlv_ba, rtt = [], [], [], [], []
    for i in range(20):
        t0 = time.monotonic()
        s1, d1, _ = one_way(alice, bob, chat_a, f"ping {i}")
        s2, d2, t_back = one_way(bob, alice, chat_b, f"pong {i}")
        send_ab.append(s1)
        dlv_ab.append(d1)
        send_ba.append(s2)
        dlv_ba.append(d2)
        rtt.append(t_back - t0)

    def fmt(name, xs):
        return f"  {name:<36} p50 {percentile(xs, 0.5) * 1000:6.0f} ms   max {max(xs) * 1000:6.0f} ms"

    lines = [
        "latency over 20 ping-pongs (alice = add_or_update_transport, bob = dcaccount:):",
        fmt("alice->bob send -> IncomingMsg", send_ab),
        fmt("bob->alice send -> IncomingMsg", send_ba),
        fmt("alice->bob delivered -> IncomingMsg", dlv_ab),
        fmt("bob->alice delivered -> IncomingMsg", dlv_ba),
        fmt("round trip (ping sent -> pong in)", rtt),
    ]
    report("\n".join(lines))
    (logdir / "latency.txt").write_text("\n".join(lines) + "\n")


def test_wrong_password_fails(acfactory):
    owner = acfactory.new_by_transport("owner")  # creates the account on the relay
    intruder = acfactory.new_unconfigured("intruder")
    with pytest.raises(JsonRpcError) as excinfo:
        intruder.configure_transport(acfactory.transport_params(owner.addr, owner.password + "x"))
    assert not intruder.is_configured()

    def progress0(e):
        return e.get("kind") == "ConfigureProgress" and e.get("progress") == 0

    failed = [e for e in intruder.failure_events if progress0(e)]
    # The event may still be on its way when the RPC error is back.
    ev = failed[-1] if failed else intruder.wait(progress0, timeout=10, what="ConfigureProgress 0")
    assert ev.get("comment"), ev
    print("wrong password:", excinfo.value, ev.get("comment"))
    # The failed attempt changed nothing: the right password still works.
    again = acfactory.new_by_transport("owner-again", addr=owner.addr, password=owner.password)
    assert again.is_configured()
