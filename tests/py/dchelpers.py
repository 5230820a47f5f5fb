"""Helpers around deltachat-rpc-client: accounts whose event waits have time limits and leave a log."""

from __future__ import annotations

import json
import os
import queue
import random
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from deltachat_rpc_client import Account, DeltaChat
from deltachat_rpc_client.rpc import JsonRpcError  # noqa: F401  (re-exported for tests)

DEFAULT_TIMEOUT = float(os.environ.get("DC_TEST_TIMEOUT", "60"))


def call_with_timeout(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Run a blocking RPC call in a thread; raise AssertionError after `timeout` seconds."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name=f"rpc:{what}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError(f"{what}: no answer within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class StampedQueue(queue.Queue):
    """Event queue that notes when each event reached this process (key "_t", time.monotonic())."""

    def put(self, item, block=True, timeout=None):
        if isinstance(item, dict):
            item.setdefault("_t", time.monotonic())
        super().put(item, block, timeout)


def stamp_events(rpc, account_id: int):
    """Replace the rpc-client's event queue of an account by a StampedQueue (keeping queued events)."""
    old = rpc.get_queue(account_id)
    new = StampedQueue()
    while True:
        try:
            new.put(old.get_nowait())
        except queue.Empty:
            break
    rpc.event_queues[account_id] = new


def random_local(n: int = 9, prefix: str = "") -> str:
    alphabet = string.ascii_lowercase + string.digits
    return prefix + "".join(random.choice(alphabet) for _ in range(n - len(prefix)))


def random_password(n: int = 24) -> str:
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


@dataclass
class TAccount(Account):
    """An Account whose waits have deadlines and whose events all go to a log file."""

    name: str = ""
    logfile: Any = field(default=None, repr=False, compare=False)
    addr: str = ""
    password: str = ""
    failure_events: list = field(default_factory=list, repr=False, compare=False)

    def _log(self, ev: dict, note: str = ""):
        if self.logfile is None:
            return
        kind = ev.get("kind", "?")
        rest = {k: v for k, v in ev.items() if k not in ("kind", "_t")}
        # Wall-clock time at which the event reached this process (the queue stamps it).
        t = time.time() - (time.monotonic() - ev.get("_t", time.monotonic()))
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
        line = f"{stamp} {self.name} {note}{kind} {json.dumps(rest, ensure_ascii=False)}"
        self.logfile.write(line[:4000] + "\n")
        self.logfile.flush()

    def next_event(self, timeout: float) -> Optional[dict]:
        try:
            ev = self._rpc.get_queue(self.id).get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        self._log(ev)
        return ev

    def wait(self, pred: Callable[[dict], bool], timeout: float = DEFAULT_TIMEOUT, what: str = "event") -> dict:
        """Consume events until `pred(event)` is true; AssertionError with context on timeout.

        An `Error` event from core is logged but does not fail the wait by itself.
        """
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                tail = "\n  ".join(seen[-25:])
                raise AssertionError(f"{self.name}: timeout after {timeout:.0f}s waiting for {what}; last events:\n  {tail}")
            ev = self.next_event(min(left, 1.0))
            if ev is None:
                continue
            seen.append(f"{ev.get('kind')} {json.dumps({k: v for k, v in ev.items() if k not in ('kind', '_t')})[:300]}")
            if pred(ev):
                return ev

    def wait_kind(self, kind: str, timeout: float = DEFAULT_TIMEOUT, **match) -> dict:
        def pred(ev):
            return ev.get("kind") == kind and all(ev.get(k) == v for k, v in match.items())

        return self.wait(pred, timeout, what=f"{kind} {match or ''}".strip())

    def wait_incoming_text(self, text: str, timeout: float = DEFAULT_TIMEOUT):
        """Wait for an IncomingMsg whose text equals `text`; returns (message, snapshot, event)."""
        out = {}

        def pred(ev):
            if ev.get("kind") != "IncomingMsg":
                return False
            msg = self.get_message_by_id(ev["msgId"])
            snap = msg.get_snapshot()
            if snap.text == text:
                out["r"] = (msg, snap)
                return True
            return False

        ev = self.wait(pred, timeout, what=f"IncomingMsg {text!r}")
        return out["r"][0], out["r"][1], ev

    def drain(self) -> list[dict]:
        evs = []
        while True:
            ev = self.next_event(0)
            if ev is None:
                return evs
            evs.append(ev)

    def online(self, timeout: float = DEFAULT_TIMEOUT):
        """start_io + wait_for_all_work_done (the rpc-client's bring_online, with a deadline)."""
        self.start_io()
        call_with_timeout(lambda: self._rpc.wait_for_all_work_done(self.id), timeout,
                          f"{self.name}: wait_for_all_work_done")
        self.drain()

    def _explain_failure(self, what: str):
        """After a failed call: log the queued events and print the telling ones."""
        evs = self.drain()
        self.failure_events = evs
        telling = [f"  {e.get('kind')}: {e.get('msg') or e.get('comment') or ''}"[:500] for e in evs
                   if e.get("kind") in ("Warning", "Error", "ConfigureProgress") and (e.get("msg") or e.get("comment"))]
        print(f"{self.name}: {what} failed; core said:\n" + "\n".join(telling[-30:]))

    def configure_transport(self, params: dict, timeout: float = DEFAULT_TIMEOUT):
        try:
            call_with_timeout(lambda: self._rpc.add_or_update_transport(self.id, params), timeout,
                              f"{self.name}: add_or_update_transport")
        except BaseException:
            self._explain_failure("add_or_update_transport")
            raise
        self.addr = params["addr"]
        self.password = params["password"]

    def configure_qr(self, qr: str, timeout: float = DEFAULT_TIMEOUT):
        try:
            call_with_timeout(lambda: self._rpc.add_transport_from_qr(self.id, qr), timeout,
                              f"{self.name}: add_transport_from_qr({qr})")
        except BaseException:
            self._explain_failure(f"add_transport_from_qr({qr})")
            raise
        self.addr = self.get_config("configured_addr") or self.get_config("addr") or ""


class AccountFactory:
    def __init__(self, dc: DeltaChat, domain: str, logdir, imap_port: int = 993, smtp_port: int = 465):
        self.dc = dc
        self.domain = domain
        self.logdir = logdir
        self.imap_port = imap_port
        self.smtp_port = smtp_port
        self.count = 0
        self._logs = []
        self.accounts: list[TAccount] = []

    def drain_all(self):
        """Move every queued event into the per-account logs (so that the logs are complete)."""
        for ac in self.accounts:
            ac.drain()

    def close(self):
        self.drain_all()
        for f in self._logs:
            f.close()

    def new_unconfigured(self, name: str = "") -> TAccount:
        base = self.dc.add_account()
        stamp_events(self.dc.rpc, base.id)
        self.count += 1
        name = name or f"ac{self.count}"
        log = open(self.logdir / f"events-{base.id}-{name}.log", "a", encoding="utf-8")
        self._logs.append(log)
        ac = TAccount(base.manager, base.id, name=name, logfile=log)
        self.accounts.append(ac)
        # Keep everything that could reach beyond loopback off (see client-contract §4.5, §4.6).
        ac.set_config("proxy_enabled", "0")
        ac.set_config("autorelay", "0")
        return ac

    def credentials(self, prefix: str = "ac") -> tuple[str, str]:
        return f"{random_local(9, prefix)}@{self.domain}", random_password(24)

    def transport_params(self, addr: str, password: str) -> dict:
        return {
            "addr": addr,
            "password": password,
            "imapServer": self.domain,
            "imapPort": self.imap_port,
            "imapSecurity": "ssl",
            "smtpServer": self.domain,
            "smtpPort": self.smtp_port,
            "smtpSecurity": "ssl",
            # certificateChecks left at its default (automatic = strict): works because the
            # domain starts with "_" (client-contract §4.4).
        }

    def new_by_transport(self, name: str = "", addr: str | None = None, password: str | None = None,
                         bcc_self: bool = False) -> TAccount:
        ac = self.new_unconfigured(name)
        if addr is None:
            addr, password = self.credentials()
        ac.configure_transport(self.transport_params(addr, password))
        if bcc_self:
            ac.set_config("bcc_self", "1")
        return ac

    def new_by_qr(self, name: str = "", bcc_self: bool = False) -> TAccount:
        ac = self.new_unconfigured(name)
        ac.configure_qr(f"dcaccount:{self.domain}")
        if bcc_self:
            ac.set_config("bcc_self", "1")
        return ac


def accepted_chat(ac1: Account, ac2: Account):
    """A 1:1 chat ac1->ac2, accepted on both sides (no contact request)."""
    ac2.create_chat(ac1)
    return ac1.create_chat(ac2)


def percentile(values, p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
