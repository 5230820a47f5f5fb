"""Issue 2 acceptance, durability: clients submit mail while the relay is SIGKILLed and restarted
at random moments, at least 50 times. Afterwards every message that got the final 250 after DATA is
in each of its recipients' INBOX exactly once, every restart was quick, UIDVALIDITY never changed,
UIDNEXT never went down and UIDs are strictly increasing (and never reused).

Its own relay: data dir of its own, listening on DURABILITY_IP (127.0.0.3) with the standard ports.
Knobs (environment): DURABILITY_CYCLES (50), DURABILITY_SECONDS (kill phase limit, 140),
DURABILITY_MAX_RESTART (seconds allowed per restart, 10).
"""

from __future__ import annotations

import base64
import email.utils
import imaplib
import os
import random
import re
import smtplib
import ssl
import threading
import time
import uuid

import pytest

from conftest import DOMAIN
from dchelpers import percentile, random_local, random_password
from relaytools import Relay, RelayStartError, unverified_context

DUR_IP = os.environ.get("DURABILITY_IP", "127.0.0.3")
CYCLES = int(os.environ.get("DURABILITY_CYCLES", "50"))
KILL_PHASE_SECONDS = float(os.environ.get("DURABILITY_SECONDS", "140"))
MAX_RESTART = float(os.environ.get("DURABILITY_MAX_RESTART", "10"))
N_ACCOUNTS = 4
N_SENDERS = 4

# ---- an OpenPGP-looking message that passes the relay's encryption check (relay-behaviour §6) ----


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for b in data:
        crc ^= b << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def _packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        hdr = bytes([n])
    elif n < 8384:
        n -= 192
        hdr = bytes([(n >> 8) + 192, n & 0xFF])
    else:
        hdr = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + hdr + body


def pgp_message(rng: random.Random) -> str:
    rb = lambda n: bytes(rng.getrandbits(8) for _ in range(n))  # noqa: E731
    # PKESK v3, ECDH (18): key id, MPI of a 0x40-prefixed curve25519 point, wrapped session key.
    pkesk = b"\x03" + rb(8) + bytes([18]) + (263).to_bytes(2, "big") + b"\x40" + rb(32) + bytes([48]) + rb(48)
    seipd = b"\x01" + rb(rng.randint(300, 1500))  # SEIPD v1; content is opaque to the relay
    data = _packet(1, pkesk) + _packet(18, seipd)
    b64 = base64.b64encode(data).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    crc = base64.b64encode(_crc24(data).to_bytes(3, "big")).decode()
    return "\r\n".join(["-----BEGIN PGP MESSAGE-----", "", *lines, "=" + crc, "-----END PGP MESSAGE-----"])


def make_mail(sender: str, rcpts: list[str], mid: str, rng: random.Random) -> bytes:
    boundary = "b" + uuid.uuid4().hex
    lines = [
        f"From: <{sender}>",
        'To: "hidden-recipients": ;',
        "Subject: [...]",
        f"Date: {email.utils.formatdate()}",
        f"Message-ID: <{mid}>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: application/pgp-encrypted",
        "Content-Description: PGP/MIME version identification",
        "",
        "Version: 1",
        "",
        f"--{boundary}",
        'Content-Type: application/octet-stream; name="encrypted.asc"',
        "Content-Description: OpenPGP encrypted message",
        'Content-Disposition: inline; filename="encrypted.asc"',
        "",
        pgp_message(rng),
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode()


# ---- protocol helpers ----------------------------------------------------------------------------


def smtp_login(ip: str, addr: str, password: str, timeout: float = 5.0) -> smtplib.SMTP_SSL:
    s = smtplib.SMTP_SSL(ip, 465, local_hostname="[127.0.0.1]", context=unverified_context(), timeout=timeout)
    try:
        s.login(addr, password)
    except BaseException:
        s.close()
        raise
    return s


def imap_login(ip: str, addr: str, password: str, timeout: float = 10.0) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(ip, 993, ssl_context=unverified_context(), timeout=timeout)
    try:
        m.login(addr, password)
    except BaseException:
        m.shutdown()
        raise
    return m


def _num(resp, key: str):
    m = re.search(rb"\b" + key.encode() + rb"\s+(\d+)", resp)
    return int(m.group(1)) if m else None


def imap_observe(ip: str, addr: str, password: str) -> dict:
    """UIDVALIDITY/UIDNEXT of INBOX via STATUS and via SELECT."""
    m = imap_login(ip, addr, password)
    try:
        typ, data = m.status("INBOX", "(UIDNEXT UIDVALIDITY MESSAGES)")
        assert typ == "OK", (typ, data)
        st = b" ".join(d for d in data if isinstance(d, bytes))
        typ, data = m.select("INBOX")
        assert typ == "OK", (typ, data)
        sel_next = m.response("UIDNEXT")[1][0]
        sel_valid = m.response("UIDVALIDITY")[1][0]
        return {
            "status_uidnext": _num(st, "UIDNEXT"),
            "status_uidvalidity": _num(st, "UIDVALIDITY"),
            "select_uidnext": int(sel_next) if sel_next is not None else None,
            "select_uidvalidity": int(sel_valid) if sel_valid is not None else None,
        }
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001
            m.shutdown()


def imap_fetch_all(ip: str, addr: str, password: str) -> tuple[dict, list[tuple[int, str | None]]]:
    """SELECT INBOX, then UID FETCH 1:* (BODY.PEEK[]): returns (select info, [(uid, message-id)])."""
    m = imap_login(ip, addr, password, timeout=60)
    try:
        typ, data = m.select("INBOX")
        assert typ == "OK", (typ, data)
        info = {
            "uidnext": int(m.response("UIDNEXT")[1][0] or 0),
            "uidvalidity": int(m.response("UIDVALIDITY")[1][0] or 0),
            "exists": int(data[0] or 0),
        }
        typ, data = m.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        assert typ == "OK", (typ, data)
        out = []
        for item in data:
            if isinstance(item, tuple):
                head, body = item
                mm = re.search(rb"^Message-ID:\s*<([^>\r\n]+)>", body, re.IGNORECASE | re.MULTILINE)
                out.append([_num(head, "UID"), mm.group(1).decode() if mm else None])
            elif isinstance(item, bytes) and out and out[-1][0] is None:
                out[-1][0] = _num(item, "UID")  # UID after the literal: "... BODY[] {n}\r\n... UID 7)"
        return info, [tuple(x) for x in out]
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001
            m.shutdown()


# ---- the test ------------------------------------------------------------------------------------


@pytest.fixture
def drelay(tmp_path, logdir):
    r = Relay(tmp_path / "relay", DOMAIN, DUR_IP, name="durability")
    r.start(timeout=60)
    yield r
    r.stop()
    try:
        (logdir / "durability-relay.log").write_bytes(r.log_path.read_bytes())
    except OSError:
        pass


@pytest.mark.slow
def test_sigkill_durability(drelay, report):
    r = drelay
    rng = random.Random()
    t_test = time.monotonic()

    # Accounts, created by their first SMTP AUTH.
    accounts = []
    for i in range(N_ACCOUNTS):
        addr = f"{random_local(9, f'd{i}')}@{DOMAIN}"
        pw = random_password(20)
        smtp_login(r.ip, addr, pw).quit()
        accounts.append((addr, pw))
    for addr, pw in accounts:  # the same credentials work over IMAP
        imap_login(r.ip, addr, pw).logout()

    records: list[dict] = []
    stop = threading.Event()
    counters = {"connect_fail": 0, "sessions": 0}
    counters_lock = threading.Lock()

    def sender(idx: int):
        srng = random.Random(idx * 7919 + int(time.time()))
        addr, pw = accounts[idx % N_ACCOUNTS]
        others = [a for a, _ in accounts if a != addr]
        conn = None
        while not stop.is_set():
            if conn is None:
                try:
                    conn = smtp_login(r.ip, addr, pw)
                    with counters_lock:
                        counters["sessions"] += 1
                except (OSError, smtplib.SMTPException):
                    with counters_lock:
                        counters["connect_fail"] += 1
                    time.sleep(0.05)
                    continue
            rcpts = srng.sample(others, 2 if srng.random() < 0.25 else 1)
            mid = f"{uuid.uuid4().hex}@durability.test"
            rec = {"mid": mid, "from": addr, "to": rcpts, "state": "pending", "t_start": time.monotonic()}
            records.append(rec)
            try:
                refused = conn.sendmail(addr, rcpts, make_mail(addr, rcpts, mid, srng))
                # sendmail returned: the final reply after DATA was 250.
                rec["t_ack"] = time.monotonic()
                rec["acked_to"] = [x for x in rcpts if x not in refused]
                rec["state"] = "acked"
            except smtplib.SMTPRecipientsRefused as e:
                rec["state"] = "refused " + ",".join(str(v[0]) for v in e.recipients.values())
            except smtplib.SMTPResponseException as e:
                rec["state"] = f"rejected {e.smtp_code}"
                if e.smtp_code == 421:
                    conn.close()
                    conn = None
            except (smtplib.SMTPException, OSError):
                rec["state"] = "unacked"  # connection lost mid-transaction: may or may not be stored
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
            time.sleep(srng.uniform(0.005, 0.03))
        if conn is not None:
            try:
                conn.quit()
            except Exception:  # noqa: BLE001
                conn.close()

    threads = [threading.Thread(target=sender, args=(i,), daemon=True, name=f"sender{i}") for i in range(N_SENDERS)]
    for t in threads:
        t.start()

    restart_times: list[float] = []
    restart_failures: list[str] = []
    observations: dict[str, list[dict]] = {a: [] for a, _ in accounts}
    observe_errors: list[str] = []
    cycles = 0
    t_kill_phase = time.monotonic()
    try:
        while cycles < CYCLES and time.monotonic() - t_kill_phase < KILL_PHASE_SECONDS:
            time.sleep(rng.uniform(0.1, 1.2))
            if not r.running():
                restart_failures.append(f"cycle {cycles + 1}: the relay had exited by itself "
                                        f"(code {r.proc.returncode}) before the kill")
            r.kill()
            cycles += 1
            t0 = time.monotonic()
            try:
                r.start(timeout=max(30.0, MAX_RESTART * 3))
            except RelayStartError as e:
                restart_failures.append(f"cycle {cycles}: {e}")
                r.kill()
                try:  # one more chance, so that the rest of the test can report
                    r.start(timeout=60)
                except RelayStartError as e2:
                    restart_failures.append(f"cycle {cycles} (retry): {e2}")
                    break
            restart_times.append(time.monotonic() - t0)
            if cycles % 5 == 0:
                for addr, pw in accounts:
                    t_obs0 = time.monotonic()
                    try:
                        o = imap_observe(r.ip, addr, pw)
                    except (OSError, imaplib.IMAP4.error, AssertionError) as e:
                        observe_errors.append(f"cycle {cycles} {addr}: {e!r}")
                        continue
                    o.update(cycle=cycles, t0=t_obs0, t1=time.monotonic())
                    observations[addr].append(o)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    kill_phase = time.monotonic() - t_kill_phase

    # Clean restart, then look at every mailbox.
    r.stop()
    clean_start = r.start(timeout=60)
    final = {}
    for addr, pw in accounts:
        final[addr] = imap_fetch_all(r.ip, addr, pw)

    # ---- evaluation ----
    problems: list[str] = []
    by_mid = {rec["mid"]: rec for rec in records}
    states: dict[str, int] = {}
    for rec in records:
        states[rec["state"]] = states.get(rec["state"], 0) + 1
    acked = [rec for rec in records if rec["state"] == "acked"]

    unknown = 0
    dup_unacked = []
    unacked_present = 0
    for addr, (info, items) in final.items():
        uids = [u for u, _ in items]
        if None in uids:
            problems.append(f"{addr}: FETCH response without UID")
        uids_ok = [u for u in uids if u is not None]
        if any(b <= a for a, b in zip(uids_ok, uids_ok[1:])):
            problems.append(f"{addr}: UIDs not strictly increasing: {uids_ok[:50]}...")
        if uids_ok and max(uids_ok) >= info["uidnext"]:
            problems.append(f"{addr}: UIDNEXT {info['uidnext']} not above the highest UID {max(uids_ok)}")
        if info["exists"] != len(items):
            problems.append(f"{addr}: SELECT said {info['exists']} EXISTS, FETCH 1:* returned {len(items)}")
        count: dict[str, int] = {}
        uid_of: dict[str, int] = {}
        for uid, mid in items:
            if mid is None or mid not in by_mid:
                unknown += 1
                continue
            count[mid] = count.get(mid, 0) + 1
            uid_of[mid] = uid
        for rec in acked:
            if addr in rec["acked_to"]:
                n = count.get(rec["mid"], 0)
                if n != 1:
                    problems.append(f"{addr}: acknowledged message {rec['mid']} present {n} times")
        for mid, n in count.items():
            rec = by_mid[mid]
            if addr not in rec["to"]:
                problems.append(f"{addr}: holds {mid} addressed to {rec['to']}")
            if rec["state"] != "acked":
                unacked_present += 1
                if n > 1:
                    dup_unacked.append((addr, mid, n, rec["state"]))
        # UIDs against the UIDNEXT observations made between restarts.
        obs = observations[addr]
        for a, b in zip(obs, obs[1:]):
            for key in ("status_uidnext", "select_uidnext"):
                if a[key] is not None and b[key] is not None and b[key] < a[key]:
                    problems.append(f"{addr}: {key} went down from {a[key]} (cycle {a['cycle']}) to {b[key]} (cycle {b['cycle']})")
        for o in obs:
            for key in ("status_uidvalidity", "select_uidvalidity"):
                if o[key] != info["uidvalidity"]:
                    problems.append(f"{addr}: {key} {o[key]} at cycle {o['cycle']} differs from final {info['uidvalidity']}")
            for key in ("status_uidnext", "select_uidnext"):
                if o[key] is None:
                    problems.append(f"{addr}: no {key} at cycle {o['cycle']}")
                elif o[key] > info["uidnext"]:
                    problems.append(f"{addr}: final UIDNEXT {info['uidnext']} below {key} {o[key]} seen at cycle {o['cycle']}")
            # acknowledged before the observation => UID below the observed UIDNEXT;
            # submitted after it => UID at or above it (no UID reuse after a crash).
            un = o["select_uidnext"]
            if un is None:
                continue
            for mid, uid in uid_of.items():
                rec = by_mid[mid]
                if rec.get("t_ack") is not None and rec["t_ack"] < o["t0"] and uid >= un:
                    problems.append(f"{addr}: {mid} acked before cycle {o['cycle']} has UID {uid} >= UIDNEXT {un} seen then")
                if rec["t_start"] > o["t1"] and uid < un:
                    problems.append(f"{addr}: {mid} submitted after cycle {o['cycle']} got UID {uid} < UIDNEXT {un} seen then")
    if unknown:
        problems.append(f"{unknown} messages in the mailboxes that no client submitted")
    if cycles < CYCLES:
        problems.append(f"only {cycles} kill/restart cycles within {KILL_PHASE_SECONDS:.0f}s (wanted {CYCLES})")
    problems.extend(restart_failures)
    slow = [t for t in restart_times if t > MAX_RESTART]
    if slow:
        problems.append(f"{len(slow)} restarts slower than {MAX_RESTART}s: {[round(t, 1) for t in slow]}")
    problems.extend(observe_errors)
    if len(acked) < 100:
        problems.append(f"only {len(acked)} messages acknowledged (states: {states})")

    summary = [
        f"durability: {cycles} SIGKILL/restart cycles in {kill_phase:.1f}s, clean restart {clean_start:.2f}s",
        f"  restart time: p50 {percentile(restart_times, 0.5):.2f}s, max {max(restart_times or [0]):.2f}s",
        f"  submissions: {len(records)} ({states}); SMTP sessions {counters['sessions']}, failed connects {counters['connect_fail']}",
        f"  unacknowledged but stored: {unacked_present}; duplicated unacknowledged: {len(dup_unacked)} {dup_unacked[:5]}",
        f"  mailboxes: " + ", ".join(f"{a.split('@')[0]}={len(final[a][1])} (UIDNEXT {final[a][0]['uidnext']})" for a in final),
        f"  UIDNEXT observations: {sum(len(v) for v in observations.values())}",
        f"  whole test {time.monotonic() - t_test:.1f}s",
    ]
    report("\n".join(summary))
    if problems:
        pytest.fail(f"{len(problems)} problems:\n" + "\n".join(problems[:60]) + "\n" + "\n".join(summary)
                    + "\n" + r.log_tail(30))
