"""What works without IMAP/SMTP sessions: the namespace, TLS on the relay's ports, autoconfig
over HTTPS with the relay's own certificate, and the pinned deltachat-rpc-server."""

import socket
import ssl
import urllib.request
import xml.etree.ElementTree as ET

from conftest import DOMAIN, RELAY_IP
from relaytools import tls_handshake


def test_names_resolve_privately():
    for name in (DOMAIN, f"autoconfig.{DOMAIN}", f"www.{DOMAIN}", f"mta-sts.{DOMAIN}"):
        assert socket.gethostbyname(name) == RELAY_IP


def test_tls_on_implicit_ports(relay):
    for port in (993, 465, 443):
        version, _ = tls_handshake(RELAY_IP, port, DOMAIN, cafile=relay.cert_path)
        assert version in ("TLSv1.2", "TLSv1.3"), (port, version)
    # IMAP and submission are TLS 1.3 only.
    for port in (993, 465):
        assert tls_handshake(RELAY_IP, port, DOMAIN)[0] == "TLSv1.3"


def test_alpn_on_443(relay):
    assert tls_handshake(DOMAIN, 443, DOMAIN, alpn=["imap"], cafile=relay.cert_path)[1] == "imap"
    assert tls_handshake(DOMAIN, 443, DOMAIN, alpn=["smtp"], cafile=relay.cert_path)[1] == "smtp"


def test_autoconfig_xml(relay):
    ctx = ssl.create_default_context(cafile=str(relay.cert_path))  # verifies chain and name
    url = f"https://{DOMAIN}/.well-known/autoconfig/mail/config-v1.1.xml"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        assert r.status == 200
        xml = r.read().decode()
    root = ET.fromstring(xml)
    incoming = [(s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"), s.findtext("username"))
                for s in root.iter("incomingServer") if s.get("type") == "imap"]
    outgoing = [(s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"), s.findtext("username"))
                for s in root.iter("outgoingServer") if s.get("type") == "smtp"]
    assert (DOMAIN, "993", "SSL", "%EMAILADDRESS%") in incoming
    assert (DOMAIN, "465", "SSL", "%EMAILADDRESS%") in outgoing


def test_rpc_server_version(dc):
    info = dc.get_system_info()
    assert info.deltachat_core_version == "v2.65.0"
