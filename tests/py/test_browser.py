"""The web onboarding in a real browser: headless Chromium (Debian's package, driven by
Playwright for Python with the system browser) against the relay binary.

The relay starts unconfigured (`mail_domain = ""`), so every page is the first-boot wizard.
The browser fills the wizard (a `_` test domain, admin password, privacy contact, self-signed
certificate), re-checks the DNS page and finishes; the same relay process then serves the
invite page of the chosen domain. The browser opens it and the admin status page (after the
login). Screenshots of every page go to the log directory; the QR code in the index screenshot
is decoded with zbarimg and must equal the invite link on the page; every request any page makes
must stay on that page's origin.

The browser reaches the test domain through Chromium's own host mapping
(`--host-resolver-rules`), so nothing outside the test changes; the relay listens on its own
loopback address so it never collides with the session relay of the other tests.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from relaytools import Relay, tls_handshake

BOX_IP = "127.0.0.5"
BOX_DOMAIN = "_wizard.test"
PASSWORD = "browser-admin-pass"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP {BOX_DOMAIN} {BOX_IP}, MAP *.{BOX_DOMAIN} {BOX_IP}",
]


def origin(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


@pytest.fixture(scope="module")
def box(tmp_path_factory, logdir):
    """The relay binary in setup mode on BOX_IP with the standard ports."""
    r = Relay(tmp_path_factory.mktemp("box"), "", BOX_IP, name="box",
              extra={"dns_nameserver": "127.0.0.1:9"})
    r.spawn()
    # Setup mode: only HTTPS (and HTTP) listen.
    deadline = time.monotonic() + 60
    while True:
        try:
            tls_handshake(BOX_IP, r.ports["https"], "box.local", timeout=2.0)
            break
        except OSError as e:
            assert r.running(), f"relay exited in setup mode\n{r.log_tail()}"
            assert time.monotonic() < deadline, f"wizard not reachable: {e!r}\n{r.log_tail()}"
            time.sleep(0.05)
    yield r
    r.stop()
    try:
        (logdir / "box-relay.log").write_bytes(r.log_path.read_bytes())
    except OSError:
        pass


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: apt-get install chromium (CI's .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


class RequestLog:
    """Every request of a browser context with the origin of the document that made it."""

    def __init__(self):
        self.entries: list[tuple[str, str, bool]] = []

    def __call__(self, req):
        try:
            frame_url = req.frame.url
        except Exception:  # a request without a frame (service worker etc.)
            frame_url = ""
        self.entries.append((frame_url, req.url, req.is_navigation_request()))

    def foreign(self):
        """Sub-resource requests that leave the document's origin, and any non-https/http URL."""
        bad = []
        for frame_url, url, nav in self.entries:
            if url.startswith("data:"):
                bad.append((frame_url, url))  # the pages use no data: URLs either
                continue
            if not url.startswith(("https://", "http://")):
                bad.append((frame_url, url))
                continue
            if nav:
                # The test's own navigations; they go to the box only.
                if urlsplit(url).hostname not in (BOX_IP, BOX_DOMAIN):
                    bad.append((frame_url, url))
                continue
            if origin(url) != origin(frame_url):
                bad.append((frame_url, url))
        return bad


def zbar_decode(png: pathlib.Path) -> list[str]:
    zbarimg = shutil.which("zbarimg")
    assert zbarimg, "zbarimg missing: apt-get install zbar-tools (CI's .ci/run installs it)"
    out = subprocess.run([zbarimg, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(png)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"zbarimg found no QR code in {png}: {out.stderr}"
    return [line for line in out.stdout.splitlines() if line]


def wait_until_served(page, url: str, text: str, timeout: float = 60.0):
    """Load `url` until it shows `text` (the relay restarts in-process after the wizard)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            page.goto(url, wait_until="load", timeout=10000)
            if text in page.content():
                return
            last = page.title()
        except Exception as e:  # connection refused/reset while the relay switches over
            last = repr(e)
        time.sleep(0.3)
    raise AssertionError(f"{url} never showed {text!r} (last: {last})")


def test_wizard_index_and_status_in_chromium(box, browser, logdir, report):
    shots = logdir / "browser"
    shots.mkdir(exist_ok=True)
    log = RequestLog()
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1000, "height": 900})
    ctx.on("request", log)
    page = ctx.new_page()
    t0 = time.monotonic()

    # 1. Unconfigured: any path is the wizard, on the LAN address.
    page.goto(f"https://{BOX_IP}/whatever", wait_until="load")
    assert page.locator("h1").inner_text() == "Set up your chatmail box"
    assert f"https://{BOX_IP}/" in page.content()
    page.screenshot(path=str(shots / "1-wizard.png"), full_page=True)

    # 2. Fill in the steps and go on to the DNS page.
    page.check("#mode-domain")
    page.fill("#domain", BOX_DOMAIN)
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.fill("#privacy_mail", "privacy@example.org")
    page.fill("#privacy_postal", "Jane Browser\nTest Street 5")
    page.check("#tls-self")
    with page.expect_navigation():
        page.click("#next")
    assert page.url.endswith("/setup/dns"), page.url
    assert page.locator("#dns-records").count() == 1
    assert f"MX    10 {BOX_DOMAIN}." in page.content()
    page.screenshot(path=str(shots / "2-wizard-dns.png"), full_page=True)
    with page.expect_navigation():
        page.click("#recheck")
    assert page.url.endswith("/setup/dns"), page.url

    # 3. Finish: the same process becomes the relay of BOX_DOMAIN.
    with page.expect_navigation():
        page.click("#finish")
    assert "Setup saved" in page.content()
    page.screenshot(path=str(shots / "3-wizard-done.png"), full_page=True)
    assert box.running(), "the relay process must not restart"
    pid = box.proc.pid

    # 4. The invite page of the chosen domain, with a QR code that decodes to its link.
    wait_until_served(page, f"https://{BOX_DOMAIN}/", f"Welcome to {BOX_DOMAIN}")
    index_png = shots / "4-index.png"
    page.screenshot(path=str(index_png), full_page=True)
    link = page.get_attribute("a.button", "href")
    assert link.startswith("dclogin:") and link.endswith("&ic=3"), link
    assert f"@{BOX_DOMAIN}?p=" in link
    decoded = zbar_decode(index_png)
    assert decoded == [link], (decoded, link)

    # 5. The status page, after the login.
    page.goto(f"https://{BOX_DOMAIN}/admin", wait_until="load")
    assert page.url.endswith("/admin/login"), page.url
    page.screenshot(path=str(shots / "5-login.png"), full_page=True)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith("/admin"), page.url
    status = page.locator("#status").inner_text()
    for want in ("Accounts", "Outgoing queue", "Certificate", "valid until", "Version"):
        assert want in status, status
    page.screenshot(path=str(shots / "6-status.png"), full_page=True)
    # The settings (the wizard behind the login) still open.
    page.goto(f"https://{BOX_DOMAIN}/setup", wait_until="load")
    assert page.locator("h1").inner_text() == "Settings"
    page.screenshot(path=str(shots / "7-settings.png"), full_page=True)

    # 6. Nothing was loaded from another origin.
    assert box.running() and box.proc.pid == pid
    foreign = log.foreign()
    assert not foreign, foreign
    subresources = [u for _, u, nav in log.entries if not nav]
    assert any(u.endswith("/main.css") for u in subresources), "the check saw the pages' loads"
    ctx.close()
    report(f"browser: wizard → relay → status in {time.monotonic() - t0:.1f} s, "
           f"{len(log.entries)} requests, screenshots in {shots}")


def test_box_answers_tls_after_the_wizard(box):
    """Ordered after the browser test: the configured relay serves IMAP on 993 too."""
    deadline = time.monotonic() + 30
    while True:
        try:
            tls_handshake(BOX_IP, box.ports["imaps"], BOX_DOMAIN, timeout=2.0)
            return
        except OSError:
            assert time.monotonic() < deadline, "IMAPS never came up after the wizard"
            time.sleep(0.2)
