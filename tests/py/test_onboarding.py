"""Onboarding through the real client (issue 5 acceptance):

- `DCACCOUNT:https://<domain>/new` (upper-case scheme, POST /new, then autoconfig) configures an
  account that exchanges messages with one configured by `dcaccount:<domain>` (the bare form alone,
  and its autoconfig, is covered by test_realclient.py);
- an account with IMAP and SMTP on 443 only (ALPN `imap` / `smtp`) sends and receives, against a
  relay whose 993/465/143/587 listeners are closed, so a fallback cannot pass; the relay's metrics
  show the connections on the https listener;
- LAN-only: the `dclogin:` invite that `chatmail-box invite` prints for a relay whose domain is its
  LAN address configures an account in an rpc-server that cannot resolve any name (its /etc/hosts
  and /etc/resolv.conf are replaced by empty ones in a private mount namespace).
"""

from __future__ import annotations

import os
import subprocess
import urllib.request

import pytest

from dchelpers import DEFAULT_TIMEOUT, AccountFactory, accepted_chat
from relaytools import Relay, relay_binary

DOMAIN = os.environ.get("RELAY_DOMAIN", "_chat.test")
IP_443 = "127.0.0.6"
IP_LAN = "127.0.0.7"


def exchange(a, b, tag: str):
    """a -> b and b -> a, each arriving as an IncomingMsg with the same text."""
    chat = accepted_chat(a, b)
    chat.send_text(f"{tag}: hello from {a.name}")
    assert b.wait_incoming_text(f"{tag}: hello from {a.name}")[1].show_padlock
    back = accepted_chat(b, a)
    back.send_text(f"{tag}: hello back from {b.name}")
    assert a.wait_incoming_text(f"{tag}: hello back from {b.name}")[1].show_padlock


def settings(ac) -> str:
    return ac.get_info().get("used_transport_settings", "")


def test_dcaccount_url_and_bare_domain(acfactory, report):
    url = acfactory.new_unconfigured("url")
    url.configure_qr(f"DCACCOUNT:https://{DOMAIN}/new")
    bare = acfactory.new_unconfigured("bare")
    bare.configure_qr(f"dcaccount:{DOMAIN}")
    for ac in (url, bare):
        assert ac.addr.endswith(f"@{DOMAIN}"), ac.addr
        # Both went through autoconfig, which lists the implicit-TLS ports first.
        assert "993" in settings(ac) and "465" in settings(ac), settings(ac)
    assert url.addr != bare.addr
    url.online()
    bare.online()
    exchange(url, bare, "dcaccount")
    report(f"DCACCOUNT:https://{DOMAIN}/new -> {url.addr}; dcaccount:{DOMAIN} -> {bare.addr}")


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{IP_443}:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("chatmail_connections_total{"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.fixture(scope="module")
def relay443(tmp_path_factory, logdir):
    """A relay that accepts mail clients on 443 only (every other client port closed)."""
    ports = {"smtp": 0, "submission": 0, "submissions": 0, "imap": 0, "imaps": 0, "https": 443, "http": 0}
    r = Relay(tmp_path_factory.mktemp("relay443"), "_onboard443.test", IP_443, ports=ports,
              extra={"metrics_listen": f"{IP_443}:9100"}, name="relay443")
    r.start(timeout=60)
    yield r
    r.stop()
    try:
        (logdir / "relay443.log").write_bytes(r.log_path.read_bytes())
    except OSError:
        pass


def test_imap_and_smtp_on_443_only(acfactory, relay443, report):
    before = metrics(9100)
    accounts = []
    for name in ("p443a", "p443b"):
        ac = acfactory.new_unconfigured(name)
        addr, password = acfactory.credentials(name[:5])
        addr = addr.split("@")[0] + "@" + relay443.domain
        ac.configure_transport({
            "addr": addr,
            "password": password,
            # The domain does not resolve: the client reaches the relay by IP, with the relay's
            # self-signed certificate accepted.
            "imapServer": IP_443,
            "imapPort": 443,
            "imapSecurity": "ssl",
            "smtpServer": IP_443,
            "smtpPort": 443,
            "smtpSecurity": "ssl",
            "certificateChecks": "acceptInvalidCertificates",
        })
        ac.online()
        accounts.append(ac)
    a, b = accounts
    for ac in (a, b):
        assert "443" in settings(ac) and "993" not in settings(ac) and "465" not in settings(ac), settings(ac)
    exchange(a, b, "443")
    after = metrics(9100)
    https = 'chatmail_connections_total{protocol="https"}'
    report(f"443-only: connections {after} (before {before})")
    # Logins (IMAP, both accounts) and two sends went over the https listener; nothing else
    # listens, and no other listener's counter exists.
    assert after.get(https, 0) - before.get(https, 0) >= 4, after
    assert set(after) == {https}, after


@pytest.fixture(scope="module")
def lan_relay(tmp_path_factory, logdir):
    """LAN-only mode: the mail domain is the box's address, self-signed certificate."""
    r = Relay(tmp_path_factory.mktemp("relaylan"), IP_LAN, IP_LAN, name="relaylan")
    r.start(timeout=60)
    yield r
    r.stop()
    try:
        (logdir / "relaylan.log").write_bytes(r.log_path.read_bytes())
    except OSError:
        pass


def no_names_wrapper(tmp_path):
    """A deltachat-rpc-server launcher in its own mount namespace whose /etc/hosts holds only
    localhost and whose resolver points at a closed port: every name lookup fails there."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.254\noptions timeout:1 attempts:1\n")
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text("hosts: files dns\n")
    script = tmp_path / "rpc-server-no-names"
    script.write_text(
        "#!/bin/sh\n"
        f"exec unshare -m sh -c 'mount --bind {hosts} /etc/hosts && "
        f"mount --bind {resolv} /etc/resolv.conf && "
        f"{{ [ ! -e /etc/nsswitch.conf ] || mount --bind {nsswitch} /etc/nsswitch.conf; }} && "
        'exec "$0" "$@"\' "${RPC_INNER:-deltachat-rpc-server}" "$@"\n'
    )
    script.chmod(0o755)
    return script


def test_lan_only_dclogin_without_name_resolution(lan_relay, tmp_path, logdir, report):
    from deltachat_rpc_client import DeltaChat, Rpc

    out = subprocess.run(
        [str(relay_binary()), "--config", str(lan_relay.config_path), "invite"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, RUST_LOG="warn"),
    )
    assert out.returncode == 0, out.stderr
    links = [line for line in out.stdout.splitlines() if line.startswith("dclogin:")]
    assert len(links) == 1, out.stdout
    link = links[0]
    assert f"@[{IP_LAN}]?" in link and f"ih={IP_LAN}" in link and f"sh={IP_LAN}" in link, link
    assert "ic=3" in link, link

    wrapper = no_names_wrapper(tmp_path)
    # The wrapper really hides every name: the session relay's domain resolves outside, not inside.
    probe = subprocess.run([str(wrapper), "getent", "hosts", DOMAIN], env=dict(os.environ, RPC_INNER="env"),
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0 and DOMAIN not in probe.stdout, (probe.returncode, probe.stdout, probe.stderr)

    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
    with open(logdir / "rpc-server-lan.log", "ab") as errlog:
        with Rpc(accounts_dir=str(tmp_path / "accounts"), rpc_server_path=str(wrapper), stderr=errlog,
                 env=env) as rpc:
            f = AccountFactory(DeltaChat(rpc), IP_LAN, logdir)
            try:
                a = f.new_unconfigured("lan1")
                a.configure_qr(link)
                # A second invite: a second fresh account.
                b = f.new_unconfigured("lan2")
                second = subprocess.run(
                    [str(relay_binary()), "--config", str(lan_relay.config_path), "invite"],
                    capture_output=True, text=True, timeout=60, env=dict(os.environ, RUST_LOG="warn"),
                ).stdout
                b.configure_qr(next(x for x in second.splitlines() if x.startswith("dclogin:")))
                for ac in (a, b):
                    assert ac.addr.endswith(f"@[{IP_LAN}]"), ac.addr
                    assert IP_LAN in settings(ac), settings(ac)
                    ac.online(DEFAULT_TIMEOUT)
                exchange(a, b, "lan")
                report(f"LAN-only dclogin: {a.addr} <-> {b.addr} with no name resolution")
            finally:
                f.close()
