"""`make run`'s invite: the binary started like the README says (`serve --invite`) prints a
dclogin: link that configures the real Delta Chat client, which then messages itself.

The README's command uses the machine's addresses; here the relay gets a data/config.toml that
only moves it to its own loopback address (so it cannot clash with the session relay) and turns
the load guard off for the busy test machine. Everything else is the embedded default: mail
domain, self-signed certificate, standard ports (the tests run as root)."""

from __future__ import annotations

import os
import subprocess
import time

from dchelpers import DEFAULT_TIMEOUT
from relaytools import relay_binary

IP = "127.0.0.5"


def test_printed_invite_configures_a_client_that_messages_itself(dc, tmp_path, report):
    from deltachat_rpc_client import EventType

    data = tmp_path / "data"
    data.mkdir()
    (data / "config.toml").write_text(f'listen = "{IP}"\nmax_load_1m = 10000.0\n')
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen(
        [str(relay_binary()), "--data-dir", "data", "serve", "--invite", "--invite-host", IP],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        link = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("dclogin:"):
                link = line.strip()
                break
        assert link, "no dclogin: invite printed"
        assert f"ih={IP}" in link and "ic=3" in link and "&v=1" in link
        assert "█" not in link

        ac = dc.add_account()
        ac.set_config("bcc_self", "1")
        ac.add_transport_from_qr(link)
        ac.bring_online()
        addr = ac.get_config("configured_addr")
        assert addr and addr.endswith("@_chatmail.localhost"), addr
        chat = ac.self_contact.create_chat()
        t0 = time.monotonic()
        msg = chat.send_text("note to self")
        while True:
            ev = ac.wait_for_event()
            if ev.kind == EventType.MSG_FAILED:
                raise AssertionError(f"sending failed: {ev}")
            if ev.kind == EventType.MSG_DELIVERED and ev.msg_id == msg.id:
                break
            assert time.monotonic() - t0 < DEFAULT_TIMEOUT, "not delivered in time"
        snap = msg.get_snapshot()
        assert snap.show_padlock
        report(f"make-run invite: self-message delivered in {time.monotonic() - t0:.3f}s")
        # The account exists on the relay now (created at first login).
        out = subprocess.run(
            [str(relay_binary()), "--data-dir", "data", "account", "list"],
            cwd=tmp_path, capture_output=True, text=True,
        )
        # The running relay holds the data directory: the CLI must say so, not corrupt it.
        assert out.returncode != 0 and "in use" in out.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    out = subprocess.run(
        [str(relay_binary()), "--data-dir", "data", "account", "list"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    assert addr in out.stdout.split()
