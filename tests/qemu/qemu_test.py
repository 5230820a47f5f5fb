#!/usr/bin/env python3
"""make qemu-test: boots target/qemu/images (scripts/qemu-image.sh) under QEMU, offline.

Runs inside a private network namespace (scripts/qemu-test.sh): QEMU's user network reaches only
that namespace's loopback, where this script runs Debian's chronyd (-x: it never sets this
machine's clock) as the NTP server that the image's `chatmail-box clock` asks at boot
(pool.ntp.org is QEMU's gateway 10.0.2.2 in the test image's /etc/hosts).

raspi3b (Zero 2 W device tree, SD card, usb-net):
  relay started by init at boot (as user chatmail) in setup mode, clock set over SNTP, read-only
  squashfs root, data grown to the end of the 256 MiB card at first boot (only then) and mounted,
  ACT LED: the setup-needed pattern, then the wizard is finished
  through the forwarded HTTPS port and the LED turns healthy; data (and the relay's keys and
  setup) survive a hard reset (system_reset) during SMTP submission, which loses no
  acknowledged message.
virt (same SD image as a virtio disk grown to 512 MiB, virtio-gpu, i6300esb, virtio-net with
  host forwards): data's filesystem grown to the end of the disk after a power cut had stopped
  the growth after sfdisk, QR on the framebuffer (QMP screendump + zbarimg): the wizard's
  address before setup and the invite after it; a PL061 GPIO line following the LED patterns (setup needed, then healthy),
  the watchdog petted (no expiry while the relay runs; expiry once the relay is frozen),
  no acknowledged message lost across a hard reset (system_reset) during submission.

Every QEMU process is killed on exit (also on errors and signals). Prints boot-to-ready times.
"""

import atexit
import base64
import http.client
import imaplib
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = os.path.join(TOP, "target", "qemu", "images")
ANSI = re.compile(rb"\x1b\[[0-9;]*m")
DOMAIN = "_chatmail.localhost"
# The guest's address on QEMU's user network (board/qemu/skeleton/etc/init.d/S40network).
GUEST_IP = "10.0.2.15"
ADMIN_PASSWORD = "qemu-test-admin-password"
# The test cards are small (256 MiB raspi, 512 MiB virt) and TCG keeps the load high, so the
# account-creation guards are relaxed (min_free_disk_space is in MB, as in chatmail.ini); the
# send rate limit too, so that a reset comes while messages are still being submitted.
RELAX_CONFIG = ("-e '1i min_free_disk_space = 1\\nmax_load_1m = 1000.0\\nmax_user_send_per_minute = 100000' "
                "/data/chatmail/config.toml")
QEMU = "qemu-system-aarch64"

# LED patterns of src/device/led.rs: (on, ms) steps.
PATTERNS = {
    "booting": [(1, 100), (0, 100)],
    "setup": [(1, 1000), (0, 1000)],
    "healthy": [(1, 2900), (0, 100)],
    "degraded": [(1, 200), (0, 200), (1, 200), (0, 1400)],
    "failed": [(1, 150), (0, 150), (1, 150), (0, 150), (1, 150), (0, 1250)],
}

RUNNING = []
PROCS = []
RESULTS = []
TIMES = []


def log(msg):
    print(f"qemu-test: {msg}", flush=True)


def cleanup(*_):
    for m in list(RUNNING):
        m.kill()
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
    if _:
        sys.exit(1)


class Fail(Exception):
    pass


def check(name, ok, detail=""):
    RESULTS.append((name, bool(ok)))
    log(f"{'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail else ''}")
    if not ok:
        raise Fail(f"{name}: {detail}")


class Machine:
    """A QEMU process: serial console on stdio pipes, QMP on a unix socket."""

    def __init__(self, name, args, workdir):
        self.name = name
        self.workdir = workdir
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.logf = open(os.path.join(workdir, f"{name}.serial.log"), "ab")
        self.buf = b""
        self.lock = threading.Condition()
        self.events = []
        self.n = 0
        self.t0 = time.monotonic()
        cmd = [QEMU] + args + [
            "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING.append(self)
        threading.Thread(target=self._reader, daemon=True).start()
        self.qmp_sock = None
        self.qmp_file = None

    def _reader(self):
        while True:
            b = self.proc.stdout.read1(65536)
            if not b:
                break
            self.logf.write(b)
            self.logf.flush()
            with self.lock:
                self.buf += ANSI.sub(b"", b).replace(b"\r", b"")
                self.lock.notify_all()
        with self.lock:
            self.lock.notify_all()

    def mark(self):
        with self.lock:
            return len(self.buf)

    def expect(self, pattern, timeout, since=0):
        """Waits for a regex (bytes) in the console output after `since`; returns the match."""
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
        end = time.monotonic() + timeout
        with self.lock:
            while True:
                m = rx.search(self.buf, since)
                if m:
                    return m
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = self.buf[-1500:].decode(errors="replace")
                    raise Fail(f"{self.name}: no {pattern!r} within {timeout} s; console tail:\n{tail}")
                self.lock.wait(min(left, 1.0))

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def sh(self, cmd, timeout=60):
        """Runs a command in the logged-in root shell; returns (rc, output)."""
        self.n += 1
        tag = f"Q{self.n}Q"
        start = self.mark()
        # The echoed command line shows `$?`, the output shows the number.
        self.send(f"{cmd}; echo {tag}=$?=\n")
        m = self.expect(rf"{tag}=(\d+)=".encode(), timeout, start)
        out = self.buf[start:m.start()].decode(errors="replace")
        return int(m.group(1)), out

    def val(self, cmd, timeout=60):
        """Output of `cmd` between markers (immune to interleaved log lines)."""
        self.n += 1
        tag = f"V{self.n}V"
        start = self.mark()
        self.send(f"echo \"<{tag}>$({cmd})</{tag}>\"\n")
        rx = re.compile(rf"<{tag}>(.*?)</{tag}>".encode(), re.S)
        m = self.expect(rx, timeout, start)
        # The shell's echo of the command line itself contains `$(` (and may be wrapped): look
        # again from just after that opening tag for the real output.
        while b"$(" in m.group(1):
            m = self.expect(rx, timeout, m.start() + 1)
        return m.group(1).decode(errors="replace").strip()

    def login(self, since, timeout=240):
        self.expect(rb"login: ", timeout, since)
        self.send("root\n")
        self.expect(rb"# ", 60, since)
        # BusyBox ash asks the terminal for the cursor position (ESC[6n) at start; let that pass.
        time.sleep(1)
        self.send("\n")
        self.sh("stty -echo 2>/dev/null; dmesg -n 1")

    # --- QMP -------------------------------------------------------------------------------
    def qmp(self, command, **arguments):
        if self.qmp_sock is None:
            for _ in range(100):
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(self.qmp_path)
                    break
                except OSError:
                    time.sleep(0.1)
            self.qmp_sock = s
            self.qmp_file = s.makefile("rwb")
            self.qmp_file.readline()
            threading.Thread(target=self._qmp_reader, daemon=True).start()
            self._replies = []
            self._qmp_cond = threading.Condition()
            self._qmp_send("qmp_capabilities", {})
        return self._qmp_send(command, arguments)

    def _qmp_send(self, command, arguments):
        with self._qmp_cond:
            n = len(self._replies)
        self.qmp_file.write(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        self.qmp_file.flush()
        with self._qmp_cond:
            self._qmp_cond.wait_for(lambda: len(self._replies) > n, 60)
            r = self._replies[n]
        if "error" in r:
            raise Fail(f"QMP {command}: {r['error']}")
        return r.get("return")

    def _qmp_reader(self):
        for line in self.qmp_file:
            msg = json.loads(line)
            if "event" in msg:
                self.events.append((time.monotonic(), msg))
                continue
            with self._qmp_cond:
                self._replies.append(msg)
                self._qmp_cond.notify_all()

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self in RUNNING:
            RUNNING.remove(self)


# --- helpers -------------------------------------------------------------------------------------

def listening(m):
    """How many "listening" lines the relay has logged to syslog (logread) since boot."""
    v = m.val("logread | grep -c 'chatmail-box.* listening '")
    return int(v) if v.isdigit() else 0


def wait_ready(m, since, timeout=300, before=0):
    """Logs in on the console that appeared after `since`, then polls syslog until the relay
    reports its listeners (more than `before` lines); returns the host time it was seen."""
    end = time.monotonic() + timeout
    if since is not None:
        m.login(since, timeout)
    while time.monotonic() < end:
        if listening(m) > before:
            return time.monotonic()
        time.sleep(0.5)
    raise Fail(f"{m.name}: relay not listening within {timeout} s; log:\n" + m.sh("logread | tail -20")[1])


def restart_relay(m, cmd="true"):
    """Runs `cmd`, kills the relay and waits until init has respawned it and it listens again."""
    n = listening(m)
    m.sh(f"{cmd} && kill $(pidof chatmail-box)")
    return wait_ready(m, None, 180, n)


def classify(samples):
    """Nearest pattern by (on-fraction, rising edges per second) of (t, level) samples."""
    if len(samples) < 10:
        return None, {}
    dur = samples[-1][0] - samples[0][0]
    on = sum(1 for _, v in samples if v) / len(samples)
    rises = sum(1 for a, b in zip(samples, samples[1:]) if not a[1] and b[1])
    rate = rises / dur if dur > 0 else 0
    best, bd = None, 1e9
    for name, p in PATTERNS.items():
        period = sum(ms for _, ms in p) / 1000
        pon = sum(ms for v, ms in p if v) / 1000 / period
        prate = sum(1 for a, b in zip(p, p[1:] + p[:1]) if not a[0] and b[0]) / period
        d = abs(on - pon) * 4 + abs(rate - prate)
        if d < bd:
            best, bd = name, d
    return best, {"on": round(on, 2), "rises_per_s": round(rate, 2), "samples": len(samples)}


# Shell builtins only in the loop body (no fork per sample but `sleep`): `{read}` sets v to 0/1.
SAMPLER = (
    "i=0; while [ $i -lt {n} ]; do {read}; read up rest < /proc/uptime; echo \"S $up $v\"; "
    "sleep 0.03; i=$((i+1)); done"
)
READ_ACT = "read v < /sys/class/leds/ACT/brightness"
READ_GPIO = (
    "v=0; while read -r l; do case \"$l\" in *'chatmail-box status'*' hi'*) v=1;; esac; "
    "done < /sys/kernel/debug/gpio"
)


def sample_led(m, read, n=150):
    """Samples a 0/1 reading in the guest (every ~30 ms plus TCG overhead) with uptime stamps."""
    rc, out = m.sh(SAMPLER.format(n=n, read=read), timeout=180)
    samples = []
    for line in out.splitlines():
        mm = re.search(r"S ([0-9.]+) (\d+)", line)
        if mm:
            samples.append((float(mm.group(1)), int(mm.group(2)) != 0))
    return samples


def led_check(m, label, read, want):
    got, stats = classify(sample_led(m, read))
    check(label, got == want, f"expected {want}, measured {got} {stats}")


def finish_wizard(m, https_port):
    """The owner's path through the first-boot wizard, over the forwarded HTTPS port (the
    relay's self-signed certificate): the form (domain, self-signed certificate, admin
    password), the DNS page, Finish. Then waits for the relay to serve the chosen domain."""
    before = listening(m)

    def req(method, path, cookie=None, form=None):
        c = http.client.HTTPSConnection("127.0.0.1", https_port, context=insecure_ctx(), timeout=120)
        h = {"Cookie": cookie} if cookie else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        out = (r.status, r.getheader("Set-Cookie") or "", r.getheader("Location") or "", r.read().decode(errors="replace"))
        c.close()
        return out

    status, set_cookie, _, page = req("GET", "/")
    check("wizard: every page is the setup form before setup", status == 200 and 'name="csrf"' in page, f"HTTP {status}")
    cookie = set_cookie.split(";")[0]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    status, _, loc, page = req("POST", "/setup", cookie, {
        "csrf": csrf, "mode": "domain", "domain": DOMAIN, "tls": "self-signed",
        "password": ADMIN_PASSWORD, "password2": ADMIN_PASSWORD,
    })
    check("wizard: form accepted", status == 303 and loc == "/setup/dns", f"HTTP {status} {loc} {page[-300:]}")
    status, _, _, page = req("GET", "/setup/dns", cookie)
    check("wizard: DNS page lists the records", status == 200 and "MX" in page, f"HTTP {status}")
    status, _, _, page = req("POST", "/setup/finish", cookie, {"csrf": csrf})
    check("wizard: finished", status == 200 and DOMAIN in page, f"HTTP {status} {page[-300:]}")
    t0 = time.monotonic()
    t = wait_ready(m, None, 180, before)
    return t - t0


def screen_qr(m, work, name, want, tries=20):
    """Screendumps until the framebuffer QR decodes to `want` (the display follows the status)."""
    shot = os.path.join(work, name)
    got = ""
    for _ in range(tries):
        m.qmp("screendump", filename=shot, format="png")
        r = subprocess.run(["zbarimg", "-q", "--raw", shot], capture_output=True, text=True)
        got = r.stdout.strip()
        if got == want:
            break
        time.sleep(1)
    return got, shot


def netdev(fwd):
    """QEMU user network with host forwards on 127.0.0.1 (of the private namespace)."""
    return "user,id=n0," + ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for g, h in fwd.items())


def raspi_args(sd, dtb, fwd):
    # The Zero 2 W DT gives the PL011 (ttyAMA0) to Bluetooth (serdev): console input is lost
    # there. QEMU's second serial port is the mini UART, ttyS1 (the Pi's header UART then).
    cmdline = open(os.path.join(IMAGES, "rpi-firmware", "cmdline.txt")).read().strip()
    cmdline = cmdline.replace("console=ttyAMA0", "console=ttyS1")
    return [
        "-serial", "null",
        "-M", "raspi3b", "-m", "1G",
        "-kernel", os.path.join(IMAGES, "Image"),
        "-initrd", os.path.join(IMAGES, "initrd.gz"),
        "-dtb", os.path.join(IMAGES, dtb),
        "-drive", f"file={sd},if=sd,format=raw",
        "-append", cmdline,
        # The Pi's own network is not modelled: a USB network adapter on the DWC2 controller.
        "-netdev", netdev(fwd), "-device", "usb-net,netdev=n0",
    ]


# --- raspi3b ---------------------------------------------------------------------------------------


def cut_after_sfdisk(path):
    """The card as a power cut right after S05datafs' sfdisk would leave it: the data partition's
    MBR entry (the third) already reaches the end of the disk, its filesystem is still 64 MiB."""
    total = os.path.getsize(path) // 512
    with open(path, "r+b") as f:
        mbr = bytearray(f.read(512))
        e = 446 + 2 * 16
        start = int.from_bytes(mbr[e + 8:e + 12], "little")
        mbr[e + 12:e + 16] = (total - start).to_bytes(4, "little")
        f.seek(0)
        f.write(mbr)


def check_data_grown(m, label, disk, part, table_grows=1):
    """S05datafs grew `data` to the end of the card (the partition `table_grows` times, the
    filesystem once, both at first boot), the filesystem online: 4 KiB blocks, and about one
    inode per 16 KiB as mkfs.ext4 gives a card of that size (genimage.cfg.in)."""
    p = f"/sys/class/block/{part}"
    nums = m.val(f"echo $(cat {p}/start) $(cat {p}/size) $(cat /sys/class/block/{disk}/size) "
                 "$(df -k /data | tail -1 | awk '{print $2}') $(df -i /data | tail -1 | awk '{print $2}') "
                 "$(stat -f -c %S /data)").split()
    ok = len(nums) == 6 and all(n.isdigit() for n in nums)
    start, size, total, fs_kib, inodes, bsize = (int(n) for n in nums) if ok else (0,) * 6
    grows = len(re.findall(rb"S05datafs: growing", m.buf))
    fs_grows = len(re.findall(rb"S05datafs: filesystem on /dev/\w+ grown", m.buf))
    check(f"{label}: data partition and filesystem reach the end of the card (grown at first boot only)",
          ok and total - (start + size) <= 16384 and size > 2 * 64 * 2048 and fs_kib * 2 > size * 8 // 10
          and bsize == 4096 and inodes * 16 * 2 > size * 8 // 10 and grows == table_grows and fs_grows == 1,
          f"partition {start}+{size} of {total} sectors, filesystem {fs_kib} KiB in {bsize} B blocks, "
          f"{inodes} inodes; console: {grows} partition, {fs_grows} filesystem grow messages")


def test_raspi(work):
    sd = os.path.join(work, "raspi-sd.img")
    shutil.copyfile(os.path.join(IMAGES, "sdcard.img"), sd)
    fwd = {587: free_port(), 993: free_port(), 443: free_port()}
    m = Machine("raspi3b", raspi_args(sd, "bcm2837-rpi-zero-2-w.dtb", fwd), work)
    try:
        t_ready = wait_ready(m, 0)
        TIMES.append(("raspi3b (Zero 2 W DTB), first boot to the wizard", t_ready - m.t0))
        check("raspi: relay starts at boot (setup mode)", "setup wizard listening" in m.val("logread | grep 'listening' | tail -1"),
              f"ready after {t_ready - m.t0:.1f} s")
        users = m.val("ps -o user,comm | grep -w chatmail-box")
        check("raspi: relay runs as user chatmail", "chatmail" in users, users)
        year = m.val("date -u +%Y")
        synced = m.val("logread | grep -c 'clock synchronised'")
        check("raspi: clock set over SNTP at boot (chatmail-box clock, as root)",
              year.isdigit() and int(year) >= 2025 and synced not in ("", "0"), f"year {year}, {synced} sync lines")
        root = m.val("grep ' / ' /proc/mounts | grep -v rootfs")
        check("raspi: root is read-only squashfs", "squashfs" in root and " ro" in root, root)
        rc, out = m.sh("touch /probe")
        check("raspi: root rejects writes", rc != 0 and "Read-only" in out, out.strip())
        data = m.val("grep ' /data ' /proc/mounts")
        check("raspi: data partition mounted rw", "/dev/mmcblk0p3 /data ext4 rw" in data, data)
        check_data_grown(m, "raspi", "mmcblk0", "mmcblk0p3")
        trig = m.val("cat /sys/class/leds/ACT/trigger")
        check("raspi: ACT LED taken over (trigger none)", "[none]" in trig, trig)
        led_check(m, "raspi: ACT LED shows the setup-needed pattern", READ_ACT, "setup")
        took = finish_wizard(m, fwd[443])
        check("raspi: relay serves the chosen domain after the wizard (no restart)", True, f"{took:.1f} s")
        led_check(m, "raspi: ACT LED then shows the healthy pattern", READ_ACT, "healthy")
        pid1 = m.val("pidof chatmail-box")
        # Respawn: kill the relay, init starts it again (with RELAX_CONFIG).
        restart_relay(m, "sed -i " + RELAX_CONFIG)
        pid2 = m.val("pidof chatmail-box")
        check("raspi: init respawns the relay", pid2.isdigit() and pid2 != pid1, f"pid {pid1} -> {pid2}")
        keys = "cat /data/chatmail/setup.toml /data/chatmail/dkim/*.private /data/chatmail/tls/*.pem | md5sum | cut -c1-32"
        dkim1 = m.val(keys)
        check("raspi: relay wrote its setup, DKIM key and TLS certificate to data", len(dkim1) == 32 and dkim1 != "d41d8cd98f00b204e9800998ecf8427e", dkim1)
        m.sh("echo persisted-1 > /data/qemu-test-marker; sync")
        reset_during_submission(m, fwd, "raspi")
        marker = m.val("cat /data/qemu-test-marker")
        check("raspi: data survives the reset", marker == "persisted-1", repr(marker))
        dkim2 = m.val(keys)
        check("raspi: setup and relay keys kept across the reset", dkim1 == dkim2, dkim2)
        check_data_grown(m, "raspi: after the reset", "mmcblk0", "mmcblk0p3")
        mode = m.val("logread | grep 'listening' | tail -1")
        check("raspi: after the reset the relay serves (no wizard)", "setup wizard" not in mode, mode[-120:])
    finally:
        m.kill()


# --- virt -------------------------------------------------------------------------------------------


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def virt_args(sd, fwd):
    cmdline = open(os.path.join(IMAGES, "rpi-firmware", "cmdline.txt")).read().strip()
    cmdline = re.sub(r"root=\S+", "root=/dev/vda2", cmdline)
    return [
        "-M", "virt", "-cpu", "cortex-a53", "-smp", "2", "-m", "1G",
        "-kernel", os.path.join(IMAGES, "Image"),
        "-initrd", os.path.join(IMAGES, "initrd.gz"),
        "-append", cmdline,
        "-drive", f"file={sd},if=none,id=sd,format=raw", "-device", "virtio-blk-pci,drive=sd",
        "-device", "virtio-gpu-pci", "-device", "i6300esb", "-device", "virtio-rng-pci",
        "-action", "watchdog=none",
        # romfile= : no iPXE option ROM needed (direct kernel boot; ipxe-qemu not installed).
        "-netdev", netdev(fwd), "-device", "virtio-net-pci,netdev=n0,romfile=",
    ]


def pgp_message(frm, to, n):
    def packet(tag, body):
        p = bytes([0xC0 | tag])
        ln = len(body)
        if ln < 192:
            p += bytes([ln])
        elif ln < 8384:
            l2 = ln - 192
            p += bytes([(l2 >> 8) + 192, l2 & 0xFF])
        else:
            p += b"\xff" + ln.to_bytes(4, "big")
        return p + body

    pkesk = bytes([3, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0x08, 0x00]) + b"\xa5" * 256
    seipd = b"\x01" + bytes(((i * 31 + 7) & 0xFF) for i in range(2000))
    b64 = base64.b64encode(packet(1, pkesk) + packet(18, seipd)).decode()
    lines = "\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    return (
        f"From: <{frm}>\r\nTo: <{to}>\r\nSubject: [...]\r\nMessage-ID: <qemu-{n}@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        '--b\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        f"-----BEGIN PGP MESSAGE-----\r\n\r\n{lines}\r\n-----END PGP MESSAGE-----\r\n\r\n--b--\r\n"
    )


def insecure_ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def reset_during_submission(m, fwd, label):
    """SMTP submissions in a loop (an account created at its first IMAP login), a hard reset
    (QMP system_reset) while they run, then every acknowledged message must be in the INBOX."""
    user = f"qemutest1@{DOMAIN}"
    pw = "qemu-test-password-1"
    # Accounts are created at their first IMAP login.
    try:
        im = imaplib.IMAP4_SSL("127.0.0.1", fwd[993], ssl_context=insecure_ctx(), timeout=60)
        im.login(user, pw)
        im.logout()
    except Exception as e:
        check(f"{label}: account created at first IMAP login", False,
              f"{e!r}; relay log:\n{m.sh('logread | tail -3; head -3 /data/chatmail/config.toml; df /data')[1]}")
    acked = []
    stop = threading.Event()
    errors = []

    def sender():
        n = 0
        try:
            s = smtplib.SMTP("127.0.0.1", fwd[587], timeout=60)
            s.starttls(context=insecure_ctx())
            s.login(user, pw)
            while not stop.is_set():
                n += 1
                s.sendmail(user, [user], pgp_message(user, user, n))
                acked.append(n)
        except Exception as e:  # the reset cuts the connection
            errors.append(repr(e))

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    deadline = time.monotonic() + 120
    while len(acked) < 10 and time.monotonic() < deadline and th.is_alive():
        time.sleep(0.05)
    check(f"{label}: submissions acknowledged before the reset, sender still submitting",
          len(acked) >= 10 and th.is_alive(), f"{len(acked)} {errors}")
    since = m.mark()
    m.qmp("system_reset")
    t1 = time.monotonic()
    stop.set()
    # Answers already on their way count as acknowledged; none can come from the reset guest.
    th.join(5)
    n_acked = len(acked)
    # QEMU's raspi3b model has been seen (once in CI, under load) not to restart the guest after
    # a system_reset. A second reset then does; what is checked below is unchanged.
    try:
        m.expect(rb"Booting Linux", 120, since)
    except Fail:
        log(f"{label}: no reboot within 120 s of system_reset; resetting again")
        since = m.mark()
        m.qmp("system_reset")
    t_ready = wait_ready(m, since)
    TIMES.append((f"{label}, after system_reset", t_ready - t1))
    im = imaplib.IMAP4_SSL("127.0.0.1", fwd[993], ssl_context=insecure_ctx(), timeout=60)
    im.login(user, pw)
    im.select("INBOX")
    typ, data = im.search(None, "ALL")
    ids = data[0].split()
    have = set()
    if ids:
        typ, data = im.fetch(b",".join(ids), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        for part in data:
            if isinstance(part, tuple):
                mm = re.search(rb"qemu-(\d+)@", part[1])
                if mm:
                    have.add(int(mm.group(1)))
    im.logout()
    lost = [n for n in acked[:n_acked] if n not in have]
    check(f"{label}: hard reset during submission loses no acknowledged message", not lost,
          f"{n_acked} acknowledged, {len(have)} stored, lost {lost}; sender ended with {errors[:1]}")


def test_virt(work):
    sd = os.path.join(work, "virt-sd.img")
    shutil.copyfile(os.path.join(IMAGES, "sdcard.img"), sd)
    # As if the image were written to a larger card, and the first boot's growth cut off by a
    # power cut after sfdisk: S05datafs must still grow the filesystem to the end.
    os.truncate(sd, 512 << 20)
    cut_after_sfdisk(sd)
    fwd = {587: free_port(), 993: free_port(), 443: free_port()}
    m = Machine("virt", virt_args(sd, fwd), work)
    try:
        t_ready = wait_ready(m, 0)
        TIMES.append(("virt (virtio-gpu), first boot to the wizard", t_ready - m.t0))
        check("virt: relay starts at boot", True, f"ready after {t_ready - m.t0:.1f} s")
        check_data_grown(m, "virt (cut after sfdisk)", "vda", "vda3", table_grows=0)
        fb = m.val("cat /sys/class/graphics/fb0/name 2>&1")
        check("virt: /dev/fb0 from virtio-gpu", "virtio" in fb, fb)

        # GPIO LED on the PL061: reconfigure, restart the relay (init respawns it), still in
        # setup mode (and RELAX_CONFIG).
        restart_relay(m, "sed -i -e 's|^led = .*|led = \"gpio:9030000.pl061:4\"|' " + RELAX_CONFIG)
        used = m.val("logread | grep 'status LED' | tail -1")
        check("virt: relay uses the GPIO LED from [device] led", "gpio=" in used, used)
        m.sh("mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null; true")
        line = m.val("grep 'chatmail-box status' /sys/kernel/debug/gpio")
        check("virt: PL061 line 4 requested by the relay", "out" in line, line)

        # Before setup: the wizard's address on the screen and the setup-needed pattern.
        want = f"http://{GUEST_IP}"
        got, shot = screen_qr(m, work, "virt-screen-setup.png", want)
        check("virt: framebuffer QR decodes (zbarimg) to the wizard's address before setup",
              got == want, f"decoded {got!r}, expected {want!r}; {shot}")
        led_check(m, "virt: PL061 GPIO line shows the setup-needed pattern", READ_GPIO, "setup")

        # The owner finishes the wizard through the forwarded web port.
        took = finish_wizard(m, fwd[443])
        check("virt: relay serves the chosen domain after the wizard (no restart)", True, f"{took:.1f} s")
        want = f"DCACCOUNT:https://{DOMAIN}/new"
        got, shot = screen_qr(m, work, "virt-screen-invite.png", want)
        check("virt: framebuffer QR decodes (zbarimg) to the invite after setup",
              got == want, f"decoded {got!r}, expected {want!r}; {shot}")
        led_check(m, "virt: PL061 GPIO line then shows the healthy pattern", READ_GPIO, "healthy")

        # Watchdog: petted while the relay runs.
        wd = m.val("cat /sys/class/watchdog/watchdog0/state /sys/class/watchdog/watchdog0/timeout 2>&1 | tr '\\n' ' '")
        check("virt: i6300esb watchdog armed", wd.startswith("active"), wd)
        timeout = int(wd.split()[1]) if len(wd.split()) > 1 and wd.split()[1].isdigit() else 30

        # The watchdog never fired while the relay ran (boot + the steps above > 2 timeouts).
        fired = [e for _, e in m.events if e.get("event") == "WATCHDOG"]
        check("virt: watchdog petted (no expiry while the relay runs)", not fired,
              f"{time.monotonic() - t_ready:.0f} s since ready, timeout {timeout} s")

        reset_during_submission(m, fwd, "virt")
        check_data_grown(m, "virt: after the reset", "vda", "vda3", table_grows=0)

        # The watchdog bites when the relay hangs: freeze it, expect the expiry event.
        m.sh("kill -STOP $(pidof chatmail-box)")
        t_stop = time.monotonic()
        deadline = t_stop + 3 * timeout + 15
        while time.monotonic() < deadline:
            if any(e.get("event") == "WATCHDOG" and t > t_stop for t, e in m.events):
                break
            time.sleep(0.5)
        fired = [t for t, e in m.events if e.get("event") == "WATCHDOG" and t > t_stop]
        check("virt: watchdog expires when the relay hangs", bool(fired),
              f"after {fired[0] - t_stop:.0f} s" if fired else f"none within {3 * timeout + 15} s")
    finally:
        m.kill()


def start_ntp_server(work):
    """Debian's chronyd as the guests' NTP server on this namespace's 127.0.0.1:123 (QEMU's
    gateway 10.0.2.2 from inside). `-x`: it never adjusts this machine's clock; `local stratum 8`:
    it serves its own clock, as a LAN time server without upstream would."""
    # Unpacked from Debian's package by scripts/chronyd.sh (qemu-deps.sh runs it), not installed.
    chronyd = os.path.join(TOP, "target", "host", "chrony", "usr", "sbin", "chronyd")
    if not os.path.exists(chronyd):
        chronyd = shutil.which("chronyd") or "/usr/sbin/chronyd"
    conf = os.path.join(work, "chrony.conf")
    with open(conf, "w") as f:
        f.write("port 123\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\n"
                "user root\nbindcmdaddress /\n"
                f"pidfile {work}/chronyd.pid\n")
    logf = open(os.path.join(work, "chronyd.log"), "wb")
    p = subprocess.Popen([chronyd, "-x", "-d", "-f", conf], stdout=logf, stderr=subprocess.STDOUT,
                         start_new_session=True)
    PROCS.append(p)
    for _ in range(50):
        with open("/proc/net/udp") as f:
            if ":007B " in f.read():  # 127.0.0.1:123 bound
                return
        if p.poll() is not None:
            break
        time.sleep(0.1)
    sys.exit(f"qemu-test: chronyd did not start; see {work}/chronyd.log")


def main():
    # QEMU's user network lets the guests reach this network namespace: it must be a private one
    # with nothing but loopback (scripts/qemu-test.sh runs this under `unshare -n`).
    nets = sorted(name for _, name in socket.if_nameindex())
    if nets != ["lo"] and os.environ.get("QEMU_TEST_HOST_NETWORK") != "1":
        sys.exit(f"qemu-test: run me in a private network namespace (scripts/qemu-test.sh); interfaces here: {nets}")
    signal.signal(signal.SIGTERM, cleanup)
    signal.signal(signal.SIGINT, cleanup)
    signal.signal(signal.SIGHUP, cleanup)
    atexit.register(cleanup)
    for f in ["Image", "initrd.gz", "sdcard.img", "bcm2837-rpi-zero-2-w.dtb"]:
        if not os.path.exists(os.path.join(IMAGES, f)):
            sys.exit(f"qemu-test: {IMAGES}/{f} missing: run scripts/qemu-image.sh")
    work = os.environ.get("QEMU_TEST_DIR") or tempfile.mkdtemp(prefix="qemu-test-", dir=os.path.join(TOP, "target", "qemu"))
    os.makedirs(work, exist_ok=True)
    log(f"logs and screenshots in {work}")
    start_ntp_server(work)
    only = sys.argv[1:] or ["raspi", "virt"]
    t0 = time.monotonic()
    failed = []
    try:
        for name in only:
            try:
                {"raspi": test_raspi, "virt": test_virt}[name](work)
            except Fail as e:
                failed.append(str(e))
                log(f"FAIL {e}")
            except Exception as e:  # a client error (SMTP, IMAP, QMP) fails the machine's tests
                RESULTS.append((f"{name}: {e!r}", False))
                failed.append(repr(e))
                log(f"FAIL {name}: {e!r}")
    finally:
        cleanup()
    for what, t in TIMES:
        log(f"boot-to-ready {what}: {t:.1f} s")
    passed = sum(1 for _, ok in RESULTS if ok)
    log(f"total {time.monotonic() - t0:.0f} s")
    print(f"qemu-test: {passed} passed, {len(RESULTS) - passed} failed", flush=True)
    sys.exit(1 if failed or passed != len(RESULTS) else 0)


if __name__ == "__main__":
    main()
