"""Issue 4 acceptance: a classic MTA as the remote peer.

Debian's Postfix for `classic.test` listens on 127.0.0.5:25 (STARTTLS with a certificate from a
test CA that the relay trusts through `extra_root_certs`); dnsmasq on 127.0.0.53 serves the test
zone; the relay for `_mta-src.test` on 127.0.0.6 resolves through it. A real GnuPG-encrypted
message submitted on 465 goes out to `someone@classic.test`: HTTPS `/mxdeliv` is refused (Postfix
has no 443), so the relay falls back to SMTP with STARTTLS and a verified certificate.

Checked on the Postfix side:
1. delivered, over TLS (Postfix's log for the very smtpd session that received the queue id, and
   the Received header it wrote);
2. our DKIM-Signature (d=_mta-src.test, s=opendkim) verifies with Debian's `opendkim-testmsg`
   against the test DNS, and the payload still decrypts;
3. negative control: the same delivered message with one body byte changed fails the verifier;
4. the way back: Postfix relays a DKIM-signed (by classic.test), encrypted message to the relay's
   port 25 over STARTTLS, the relay verifies it and stores it in the sender's INBOX; with one
   body byte changed after signing the relay refuses it (554 5.7.1, Postfix bounces);
5. a peer domain without `_` whose MX certificate does not name the MX host gets no mail (the
   relay's handshake fails with "certificate not valid for name", Postfix logs the alert).
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import hashlib
import imaplib
import os
import pathlib
import re
import secrets
import shutil
import smtplib
import string
import time
import types

import pytest

from dnstools import DnsServer
from postfixtools import (OPENDKIM_TESTMSG, Postfix, MiniCA, opendkim_testmsg, package_version,
                          postfix_version, run)
from relaytools import Relay, relay_binary, unverified_context

RELAY_DOMAIN = "_mta-src.test"
RELAY_IP = "127.0.0.6"
PEER_DOMAIN = "classic.test"
PEER_MX = "mail.classic.test"
PEER_IP = "127.0.0.5"
DNS_IP = "127.0.0.53"
RCPT = f"someone@{PEER_DOMAIN}"
PEER_SELECTOR = "classic"


def _require_tools():
    missing = [t for t in ("postfix", "dnsmasq", "gpg", "openssl", "unshare")
               if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if not os.path.exists(OPENDKIM_TESTMSG):
        missing.append("opendkim-testmsg")
    if missing:
        pytest.fail(f"missing {missing}: apt-get install postfix opendkim-tools dnsmasq-base gnupg openssl "
                    "(.ci/run does this)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("Postfix needs root: run through scripts/pytest.sh", pytrace=False)


def _random_local(n: int = 9) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def dkim_records(relay: Relay) -> list[tuple[str, str]]:
    """(owner, value) of the "; DKIM records as one string" section of `chatmail-box dns`."""
    p = run([relay_binary(), "--config", relay.config_path, "--data-dir", relay.data_dir, "dns",
             "--ip", relay.ip], text=True, env={**os.environ, "NO_COLOR": "1", "RUST_LOG": "warn"})
    out, recs, section = p.stdout, [], False
    for line in out.splitlines():
        if line.startswith(";"):
            section = "DKIM records as one string" in line
            continue
        m = re.match(r'^(\S+)\s+TXT\s+"(.*)"\s*$', line)
        if section and m:
            recs.append((m.group(1).rstrip("."), m.group(2)))
    assert recs, f"no DKIM record in `chatmail-box dns` output:\n{out}\n{p.stderr}"
    return recs


# ---- GnuPG ----------------------------------------------------------------------------------------

class Gpg:
    """A throwaway GNUPGHOME with one key pair (ed25519/cv25519) for `uid`."""

    def __init__(self, home: pathlib.Path, uid: str):
        self.home = pathlib.Path(home)
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.uid = uid
        self.gpg("--passphrase", "", "--quick-gen-key", uid, "future-default", "default", "never")

    def gpg(self, *args, input: bytes | None = None) -> bytes:
        p = run(["gpg", "--homedir", self.home, "--batch", "--pinentry-mode", "loopback",
                 "--no-tty", "--trust-model", "always", *args], input=input)
        return p.stdout

    def encrypt(self, plaintext: bytes) -> str:
        return self.gpg("--armor", "--encrypt", "-r", self.uid, input=plaintext).decode()

    def decrypt(self, armored: str) -> bytes:
        return self.gpg("--decrypt", "--passphrase", "", input=armored.encode())

    def close(self):
        run(["gpgconf", "--homedir", self.home, "--kill", "all"], check=False)


def encrypted_message(sender: str, to: str, armored: str, subject: str = "[...]") -> bytes:
    """PGP/MIME (RFC 3156) around `armored`, CRLF line ends: the shape Delta Chat sends."""
    boundary = "cm-" + secrets.token_hex(8)
    armor = "\r\n".join(armored.strip().splitlines())
    domain = sender.rsplit("@", 1)[1]
    msg = (
        f"From: <{sender}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{secrets.token_hex(12)}@{domain}>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: application/pgp-encrypted\r\n"
        "Content-Description: PGP/MIME version identification\r\n"
        "\r\n"
        "Version: 1\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        "Content-Description: OpenPGP encrypted message\r\n"
        'Content-Disposition: inline; filename="encrypted.asc"\r\n'
        "\r\n"
        f"{armor}\r\n"
        "\r\n"
        f"--{boundary}--\r\n"
    )
    return msg.encode()


def armor_of(raw: bytes) -> str:
    m = re.search(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", raw, re.S)
    assert m, "no armored PGP message in the delivered mail"
    return m.group(0).decode()


# ---- DKIM signing for the way back (rsa-sha256, relaxed/simple; the key via the openssl CLI) -------

def _relaxed_header(name: str, value: str) -> str:
    value = re.sub(r"\r\n(?=[ \t])", "", value)
    value = re.sub(r"[ \t]+", " ", value).strip()
    return f"{name.strip().lower()}:{value}\r\n"


def dkim_sign(msg: bytes, domain: str, selector: str, key: pathlib.Path,
              signed=("from", "to", "subject", "date", "message-id", "mime-version", "content-type")) -> bytes:
    """A DKIM-Signature (RFC 6376, rsa-sha256, c=relaxed/simple) prepended to the CRLF message
    `msg`. opendkim-testmsg's own signing mode uses rsa-sha1, which RFC 8301 verifiers refuse."""
    head, body = msg.split(b"\r\n\r\n", 1)
    # Simple body canonicalization: trailing empty lines reduced to one CRLF.
    body = body.rstrip(b"\r\n") + b"\r\n" if body.strip(b"\r\n") else b"\r\n"
    bh = base64.b64encode(hashlib.sha256(body).digest()).decode()
    fields: list[tuple[str, str]] = []
    for line in head.decode().split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + "\r\n" + line)
        else:
            name, _, value = line.partition(":")
            fields.append((name, value))
    present = [h for h in signed if any(n.strip().lower() == h for n, _ in fields)]
    canon = ""
    for h in present:  # last occurrence first (RFC 6376 §5.4.2); these are all single
        name, value = [f for f in fields if f[0].strip().lower() == h][-1]
        canon += _relaxed_header(name, value)
    sig = (f"v=1; a=rsa-sha256; c=relaxed/simple; d={domain}; s={selector}; t={int(time.time())}; "
           f"h={':'.join(present)}; bh={bh}; b=")
    canon += _relaxed_header("DKIM-Signature", sig).rstrip("\r\n")
    p = run(["openssl", "dgst", "-sha256", "-sign", key], input=canon.encode())
    b = base64.b64encode(p.stdout).decode()
    folded = "\r\n\t".join(b[i:i + 72] for i in range(0, len(b), 72))
    return f"DKIM-Signature: {sig}{folded}\r\n".encode() + msg


def dkim_key(workdir: pathlib.Path) -> tuple[pathlib.Path, str]:
    """(private key path, TXT record value) for a fresh RSA-2048 key."""
    key = workdir / "dkim.key"
    run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key])
    der = run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"]).stdout
    return key, f"v=DKIM1;k=rsa;p={base64.b64encode(der).decode()}"


# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory, logdir):
    _require_tools()
    tmp = tmp_path_factory.mktemp("classic-mta")
    w = types.SimpleNamespace(timings={})
    cleanups = []
    try:
        t0 = time.monotonic()
        ca = MiniCA(tmp / "ca")
        mx_cert, mx_key = ca.issue("mx", [PEER_MX, PEER_DOMAIN])
        w.peer_dkim_key, peer_dkim_txt = dkim_key(tmp)
        w.relay = Relay(tmp / "relay", RELAY_DOMAIN, RELAY_IP, name="relay-mta-src", extra={
            "dns_nameserver": f"{DNS_IP}:53",
            "extra_root_certs": str(ca.cert),
            "delivery_retry_base": 2,
        })
        records = dkim_records(w.relay)
        w.timings["ca+keys"] = time.monotonic() - t0

        w.dns = DnsServer(tmp / "dns", ip=DNS_IP)
        w.dns.add_relay(RELAY_DOMAIN, RELAY_IP, records)
        w.dns.add_a(PEER_DOMAIN, PEER_IP)
        w.dns.add_a(PEER_MX, PEER_IP)
        w.dns.add_mx(PEER_DOMAIN, PEER_MX)
        w.dns.add_txt(f"{PEER_SELECTOR}._domainkey.{PEER_DOMAIN}", peer_dkim_txt)
        cleanups.append(w.dns.stop)
        t0 = time.monotonic()
        w.dns.start()
        w.timings["dnsmasq start"] = time.monotonic() - t0
        assert w.dns.query_rcode(f"opendkim._domainkey.{RELAY_DOMAIN}", 16) == (0, 1)

        cleanups.append(w.relay.stop)
        w.timings["relay start"] = w.relay.start(timeout=60)

        w.postfix = Postfix(PEER_DOMAIN, PEER_IP, PEER_MX, mx_cert, mx_key, ca_file=ca.cert, extra_main={
            # The way back: everything for the relay's domain to its port 25, TLS with a
            # certificate check switched off (the relay's certificate is self-signed, and
            # `_` domains are the relay-to-relay "encrypt" class, relay-behaviour §9.4).
            "transport_maps": f"inline:{{ {RELAY_DOMAIN}=smtp:[{RELAY_IP}]:25 }}",
            "smtp_tls_security_level": "encrypt",
            "relay_domains": "",
        })
        cleanups.append(lambda: w.postfix.cleanup(keep_in=logdir / "classic-mta-postfix"))
        cleanups.append(w.postfix.stop)
        w.timings["postfix start"] = w.postfix.start()

        w.gpg = Gpg(tmp / "gnupg-rcpt", RCPT)
        cleanups.append(w.gpg.close)
        w.tmp = tmp
        w.versions = {
            "postfix": f"{postfix_version()} (Debian {package_version('postfix')})",
            "opendkim-tools": package_version("opendkim-tools"),
            "dnsmasq": package_version("dnsmasq-base"),
            "gnupg": package_version("gnupg"),
        }
        yield w
    finally:
        errors = []
        for f in reversed(cleanups):
            try:
                f()
            except Exception as e:  # keep tearing down
                errors.append(e)
        for name, src in (("relay-mta-src.log", tmp / "relay" / "relay.log"),
                          ("dnsmasq-classic.log", tmp / "dns" / "dnsmasq.log")):
            try:
                shutil.copy(src, logdir / name)
            except OSError:
                pass
        if errors:
            raise errors[0]


@pytest.fixture(scope="module")
def sent(world):
    """One encrypted message from a fresh relay account to someone@classic.test, delivered."""
    addr, password = f"{_random_local()}@{RELAY_DOMAIN}", secrets.token_urlsafe(18)
    plaintext = (b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
                 b"Hello classic MTA, " + secrets.token_hex(8).encode() + b"\r\n")
    msg = encrypted_message(addr, RCPT, world.gpg.encrypt(plaintext))
    t0 = time.monotonic()
    with smtplib.SMTP_SSL(RELAY_IP, 465, context=unverified_context(), timeout=30) as s:
        s.login(addr, password)  # creates the account
        refused = s.sendmail(addr, [RCPT], msg)
    assert refused == {}, refused
    t_submit = time.monotonic() - t0
    try:
        files = world.postfix.wait_delivered(1, timeout=90)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{world.relay.log_tail(60)}") from None
    world.timings["submit"] = t_submit
    world.timings["submit->delivered"] = time.monotonic() - t0
    raw = files[0].read_bytes()
    return types.SimpleNamespace(addr=addr, password=password, plaintext=plaintext, file=files[0], raw=raw,
                                 msg=email.message_from_bytes(raw, policy=email.policy.compat32))


# ---- tests ----------------------------------------------------------------------------------------

def test_postfix_received_over_tls(world, sent, report):
    report(f"\nversions: {world.versions}")
    report("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in world.timings.items()))
    msg = sent.msg
    assert msg["X-Original-To"] == RCPT, msg["X-Original-To"]
    assert msg["From"] == f"<{sent.addr}>"
    assert msg["Subject"] == "[...]"
    # One Received header: the Postfix hop (the relay adds none and drops the client's).
    received = msg.get_all("Received") or []
    assert len(received) == 1, received
    rcv = " ".join(received[0].split())
    assert f"from {RELAY_DOMAIN} " in rcv, rcv  # the relay's EHLO name
    assert re.search(r"\(using TLSv1\.[23] with cipher \S+", rcv), rcv
    assert re.search(rf"by {re.escape(PEER_MX)} \(Postfix\) with ESMTPS id [0-9A-F]+", rcv), rcv
    qid = re.search(r"with ESMTPS id ([0-9A-F]+)", rcv).group(1)
    # Postfix's log: the smtpd process that took queue id `qid` had completed a TLS handshake,
    # and the virtual agent delivered that queue id.
    log = world.postfix.wait_log(f"{qid}: removed", timeout=30)
    m = re.search(rf"postfix/smtpd\[(\d+)\]: {qid}: client=(\S+)", log)
    assert m, f"no smtpd line for {qid}\n{log}"
    pid, client = m.group(1), m.group(2)
    session = log[:m.start()]
    session = session[session.rfind(f"postfix/smtpd[{pid}]: connect from"):]
    assert re.search(rf"postfix/smtpd\[{pid}\]: (Anonymous|Untrusted|Trusted) TLS connection established "
                     rf"from {re.escape(client)}: TLSv1\.[23] with cipher", session), session
    assert re.search(rf"{qid}: to=<{re.escape(RCPT)}>, relay=virtual, .*status=sent \(delivered to maildir\)",
                     log), log
    # The recipient can still read it: the payload went through unchanged.
    assert world.gpg.decrypt(armor_of(sent.raw)) == sent.plaintext
    # The relay tried HTTPS /mxdeliv first (nothing listens on 443) and delivered by SMTP.
    deadline = time.monotonic() + 10
    while True:
        relay_log = world.relay.log_path.read_text(errors="replace")
        if re.search(r'delivered.*via="?SMTP', relay_log) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert re.search(r'via="?https"?.*delivery attempt failed|delivery attempt failed.*via="?https', relay_log), \
        world.relay.log_tail(60)
    assert re.search(r'delivered.*via="?SMTP', relay_log), world.relay.log_tail(60)


def _dkim_tags(value: str) -> dict:
    tags = {}
    for part in "".join(value.split()).split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            tags[k] = v
    return tags


def test_dkim_signature_verifies_with_opendkim(world, sent, report):
    sigs = sent.msg.get_all("DKIM-Signature") or []
    assert len(sigs) == 1, sigs
    tags = _dkim_tags(sigs[0])
    assert tags["d"] == RELAY_DOMAIN and tags["s"] == "opendkim", tags
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/simple", tags
    assert "l" not in tags, tags
    assert "from" in tags["h"].lower().split(":"), tags
    qname = f"query[TXT] opendkim._domainkey.{RELAY_DOMAIN} from "
    before = world.dns.log.read_text(errors="replace").count(qname) if world.dns.log.exists() else 0
    t0 = time.monotonic()
    p = opendkim_testmsg(sent.raw, DNS_IP, world.tmp / "opendkim-ok")
    report(f"opendkim-testmsg (pass case) {time.monotonic() - t0:.2f}s")
    assert p.returncode == 0 and p.stderr == b"", (p.returncode, p.stderr, p.stdout)
    # The key came from the test DNS (dnsmasq logged opendkim-testmsg's TXT query).
    time.sleep(0.2)
    after = world.dns.log.read_text(errors="replace").count(qname)
    assert after > before, f"no {qname!r} in {world.dns.log}"


def test_opendkim_rejects_one_changed_body_byte(world, sent):
    head, sep, body = sent.raw.partition(b"\n\n")
    assert sep, "no header/body separator"
    i = body.index(b"Version: 1")
    tampered = head + sep + body[:i] + b"Version: 2" + body[i + len(b"Version: 1"):]
    assert len(tampered) == len(sent.raw)
    assert sum(a != b for a, b in zip(tampered, sent.raw)) == 1
    p = opendkim_testmsg(tampered, DNS_IP, world.tmp / "opendkim-bad")
    assert p.returncode == 70, (p.returncode, p.stderr)  # EX_SOFTWARE
    assert b"dkim_eom(): Bad signature" in p.stderr, p.stderr
    # And the untouched message still passes (the failure is the byte, not the environment).
    assert opendkim_testmsg(sent.raw, DNS_IP, world.tmp / "opendkim-ok2").returncode == 0


def postfix_result(postfix: Postfix, msg: bytes, rcpt: str, timeout: float = 60) -> str:
    """Postfix's delivery log line for the message with `msg`'s Message-ID to `rcpt`."""
    mid = re.search(rb"^Message-ID: (<[^>]+>)", msg, re.M | re.I).group(1).decode()
    log = postfix.wait_log(f"message-id={mid}", timeout=timeout)
    qid = re.search(rf"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id={re.escape(mid)}", log).group(1)
    log = postfix.wait_log(f"{qid}: to=<{rcpt}>, relay=", timeout=timeout)
    return [ln for ln in log.splitlines() if f"{qid}: to=<{rcpt}>, relay=" in ln][-1]


def _inbox(relay: Relay, addr: str, password: str) -> list[bytes]:
    imap = imaplib.IMAP4_SSL(relay.ip, 993, ssl_context=unverified_context())
    try:
        imap.login(addr, password)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK", data
        n = int(data[0])
        out = []
        for i in range(1, n + 1):
            typ, d = imap.fetch(str(i), "(BODY.PEEK[])")
            assert typ == "OK", d
            out.append(d[0][1])
        return out
    finally:
        imap.logout()


def test_postfix_relays_back_to_our_port_25(world, sent, report):
    """The way back: Postfix sends a classic.test-signed encrypted message to the relay's MX."""
    gpg_back = Gpg(world.tmp / "gnupg-back", sent.addr)
    try:
        token = secrets.token_hex(8).encode()
        plaintext = b"Content-Type: text/plain; charset=utf-8\r\n\r\nReply from Postfix " + token + b"\r\n"
        sender = f"someone@{PEER_DOMAIN}"
        msg = encrypted_message(sender, sent.addr, gpg_back.encrypt(plaintext), subject="[...]")
        signed = dkim_sign(msg, PEER_DOMAIN, PEER_SELECTOR, world.peer_dkim_key)
        # The signature is good before it leaves (same verifier as for our own mail).
        assert opendkim_testmsg(signed, DNS_IP, world.tmp / "opendkim-back").returncode == 0
        before = len(_inbox(world.relay, sent.addr, sent.password))
        t0 = time.monotonic()
        world.postfix.sendmail(signed, sender, [sent.addr])
        deadline = time.monotonic() + 90
        while True:
            msgs = _inbox(world.relay, sent.addr, sent.password)
            if len(msgs) > before:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"not in the relay INBOX after 90s\n{world.postfix.diagnostics()}\n"
                                     f"{world.relay.log_tail(60)}")
            time.sleep(0.2)
        report(f"postfix -> relay port 25: {time.monotonic() - t0:.2f}s")
        got = msgs[-1]
        assert gpg_back.decrypt(armor_of(got)) == plaintext
        line = postfix_result(world.postfix, signed, sent.addr)
        assert re.search(rf"relay=\S*\[{re.escape(RELAY_IP)}\]:25, .*status=sent \(250 ", line), line
        pid = re.search(r"postfix/smtp\[(\d+)\]", line).group(1)
        log = world.postfix.log()
        assert re.search(rf"postfix/smtp\[{pid}\]: (?:Anonymous|Untrusted|Trusted|Verified) TLS connection "
                         rf"established to \S*\[{re.escape(RELAY_IP)}\]:25: TLSv1\.[23]", log), log
    finally:
        gpg_back.close()


def test_relay_rejects_a_broken_peer_signature(world, sent):
    """Control for the way back: one body byte changed after signing, and the relay's port 25
    refuses the message (strict DKIM), so Postfix bounces it."""
    gpg_back = Gpg(world.tmp / "gnupg-back-bad", sent.addr)
    try:
        sender = f"someone@{PEER_DOMAIN}"
        msg = encrypted_message(sender, sent.addr, gpg_back.encrypt(b"tampered\r\n"))
        signed = dkim_sign(msg, PEER_DOMAIN, PEER_SELECTOR, world.peer_dkim_key)
        bad = signed.replace(b"Version: 1\r\n", b"Version: 1 \r\n", 1)
        assert opendkim_testmsg(bad, DNS_IP, world.tmp / "opendkim-back-bad").returncode == 70
        world.postfix.sendmail(bad, sender, [sent.addr])
        line = postfix_result(world.postfix, bad, sent.addr)
        assert re.search(r"status=bounced \(host \S+ said: 5\d\d 5\.7\.\d .*DKIM", line), line
    finally:
        gpg_back.close()


def test_peer_certificate_must_verify(world, sent):
    """A peer domain without a leading underscore gets a verified certificate or no mail: the MX
    name `mx.untrusted.test` points at the same Postfix, whose certificate does not name it."""
    world.dns.add_mx("untrusted.test", "mx.untrusted.test")
    world.dns.add_a("mx.untrusted.test", PEER_IP)
    world.dns.start()
    rcpt = "someone@untrusted.test"
    armored = world.gpg.encrypt(b"Content-Type: text/plain\r\n\r\nnot for you\r\n")
    with smtplib.SMTP_SSL(RELAY_IP, 465, context=unverified_context(), timeout=30) as s:
        s.login(sent.addr, sent.password)
        assert s.sendmail(sent.addr, [rcpt], encrypted_message(sent.addr, rcpt, armored)) == {}
    deadline = time.monotonic() + 30
    pat = re.compile(r"via=\"?smtp\"?.*delivery attempt failed: .*TLS handshake.*(certificate|Certificate)|"
                     r"delivery attempt failed: .*TLS handshake.*(certificate|Certificate).*via=\"?smtp")
    while not pat.search(world.relay.log_path.read_text(errors="replace")):
        assert time.monotonic() < deadline, world.relay.log_tail(40)
        time.sleep(0.2)
    # Postfix saw the handshake fail and never got a MAIL FROM for it.
    log = world.postfix.wait_log("alert bad certificate", timeout=10)
    assert f"to=<{rcpt}>" not in log, log
