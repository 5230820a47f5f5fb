"""A classic MTA as a federation peer for the Python tests: Debian's Postfix, run from a private
config directory on a loopback address inside the test's namespaces, plus the small tools around
it (a test CA made with the openssl CLI, GnuPG-encrypted messages, OpenDKIM's verifier).

Postfix runs in the foreground (`postfix -c DIR start-fg`) as a child of the test, with every
service unchrooted, logging to its own `maillog_file`, and delivering every recipient of its
domain into one Maildir through the virtual(8) agent (as `nobody`). Its work directory is made
under /tmp with mode 0755 (the pytest tmp tree is 0700 to root, which the unprivileged Postfix
daemons could not traverse) and removed by `cleanup()`.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SENDMAIL = "/usr/sbin/sendmail"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
OPENDKIM_TESTMSG = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"


def run(cmd, check=True, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with captured text output; the output is in the error on failure."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run([str(c) for c in cmd], **kw)
    if check and p.returncode != 0:
        out = p.stdout.decode(errors="replace") if isinstance(p.stdout, bytes) else p.stdout
        err = p.stderr.decode(errors="replace") if isinstance(p.stderr, bytes) else p.stderr
        raise AssertionError(f"{cmd} exited with {p.returncode}\nstdout: {out}\nstderr: {err}")
    return p


def postfix_version() -> str:
    return run([POSTCONF, "-dh", "mail_version"], text=True).stdout.strip()


def package_version(pkg: str) -> str:
    p = run(["dpkg-query", "-W", "-f=${Version}", pkg], check=False, text=True)
    return p.stdout.strip() if p.returncode == 0 else "?"


# ---- test CA ------------------------------------------------------------------------------------

_CA_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = chatmail-box classic MTA test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_EXT = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class MiniCA:
    """A throwaway CA (EC P-256) made with the openssl CLI; `issue()` makes server certificates."""

    def __init__(self, workdir: pathlib.Path):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / "ca.pem"
        self.key = self.dir / "ca.key"
        cnf = self.dir / "ca.cnf"
        cnf.write_text(_CA_CNF)
        run(["openssl", "req", "-x509", "-new", "-config", cnf, "-extensions", "v3_ca",
             "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", self.key, "-out", self.cert, "-days", "3", "-sha256"])

    def issue(self, name: str, dns_names) -> tuple[pathlib.Path, pathlib.Path]:
        """(cert, key) for `dns_names` (the first is the CN), valid now for two days."""
        key = self.dir / f"{name}.key"
        csr = self.dir / f"{name}.csr"
        cert = self.dir / f"{name}.pem"
        ext = self.dir / f"{name}.ext"
        ext.write_text(_LEAF_EXT.format(san=",".join(f"DNS:{n}" for n in dns_names)))
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={dns_names[0]}"])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
             "-set_serial", "0x" + os.urandom(8).hex(), "-days", "2", "-sha256", "-extfile", ext,
             "-out", cert])
        return cert, key


# ---- Postfix ------------------------------------------------------------------------------------

_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{ip}:{port} inet n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """One Postfix instance for `domain`, listening on `ip:port`, with the server certificate
    `cert`/`key`. Mail for `domain` lands in the Maildir `self.maildir`.

    `extra_main`: more main.cf lines (e.g. a transport map or smtp_tls_* settings).
    """

    def __init__(self, domain: str, ip: str, hostname: str, cert: pathlib.Path, key: pathlib.Path,
                 port: int = 25, extra_main: dict | None = None, ca_file: pathlib.Path | None = None):
        self.domain = domain
        self.ip = ip
        self.port = port
        self.hostname = hostname
        self.base = pathlib.Path(tempfile.mkdtemp(prefix="postfix-", dir="/tmp"))
        self.base.chmod(0o755)
        self.config_dir = self.base / "etc"
        self.queue_dir = self.base / "spool"
        self.data_dir = self.base / "lib"
        self.vmail = self.base / "vmail"
        self.maildir = self.vmail / "box"
        self.maillog = self.base / "maillog"
        self.tls_dir = self.base / "tls"
        for d in (self.config_dir, self.queue_dir, self.data_dir, self.vmail, self.tls_dir):
            d.mkdir(mode=0o755)
        # Certificate and key are loaded as root before the daemons drop privileges.
        self.cert = self.tls_dir / "cert.pem"
        self.key = self.tls_dir / "key.pem"
        shutil.copy(cert, self.cert)
        shutil.copy(key, self.key)
        self.key.chmod(0o600)
        self.ca_file = None
        if ca_file is not None:
            self.ca_file = self.tls_dir / "ca.pem"
            shutil.copy(ca_file, self.ca_file)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
        nobody = pwd.getpwnam("nobody")
        self.vmail_uid, self.vmail_gid = nobody.pw_uid, nobody.pw_gid
        os.chown(self.vmail, self.vmail_uid, self.vmail_gid)
        self.extra_main = dict(extra_main or {})
        self.proc: subprocess.Popen | None = None
        self.out_path = self.base / "start-fg.out"
        self.write_config()

    def main_cf(self) -> dict:
        m = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.base,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": self.domain,
            "myorigin": self.domain,
            "mydestination": "localhost",
            # The smtpd service in master.cf binds `ip:port` itself. `inet_interfaces = <ip>` would
            # need the address configured on an interface (127.0.0.5 is only routed via lo's
            # 127.0.0.0/8) and fails "no local interface found".
            "inet_interfaces": "all",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_peername_lookup": "no",
            "biff": "no",
            "append_dot_mydomain": "no",
            "alias_maps": "",
            "alias_database": "",
            "smtputf8_enable": "no",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": self.vmail,
            # Every recipient of the domain into one Maildir ("box/").
            "virtual_mailbox_maps": "static:box/",
            "virtual_uid_maps": f"static:{self.vmail_uid}",
            "virtual_gid_maps": f"static:{self.vmail_gid}",
            "virtual_minimum_uid": "100",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": self.cert,
            "smtpd_tls_key_file": self.key,
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_received_header": "yes",
            "smtp_tls_loglevel": "1",
            "smtp_tls_CAfile": self.ca_file or "",
            # Quick retries: tests wait for delivery, not for a real Internet.
            "queue_run_delay": "5s",
            "minimal_backoff_time": "5s",
            "maximal_backoff_time": "10s",
            "smtp_connect_timeout": "10s",
            "delay_warning_time": "0",
        }
        m.update(self.extra_main)
        return m

    def write_config(self):
        lines = [f"{k} = {v}" for k, v in self.main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        (self.config_dir / "master.cf").write_text(_MASTER_CF.format(ip=self.ip, port=self.port))

    def postfix(self, *args, check=True) -> subprocess.CompletedProcess:
        return run([POSTFIX, "-c", self.config_dir, *args], check=check, text=True)

    def check(self):
        """`postfix check` (creates the queue directories with the right owners)."""
        p = self.postfix("check", check=False)
        if p.returncode != 0:
            # Postfix commands print to stderr only when it is a terminal; get one from script(1).
            cmd = f"{POSTFIX} -c {self.config_dir} check"
            why = run(["script", "-qec", cmd, "/dev/null"], check=False, text=True) if shutil.which("script") \
                else p
            raise AssertionError(f"postfix check failed: {why.stdout} {why.stderr} {self.log()[-2000:]}")

    def start(self, timeout: float = 30.0) -> float:
        """`postfix start-fg` as a child process; waits for the SMTP greeting. Returns seconds."""
        t0 = time.monotonic()
        self.check()
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen([POSTFIX, "-c", str(self.config_dir), "start-fg"],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"postfix start-fg exited with {self.proc.returncode}\n{self.diagnostics()}")
            try:
                with socket.create_connection((self.ip, self.port), timeout=2) as s:
                    s.settimeout(5)
                    greeting = s.recv(512)
                    if greeting.startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return time.monotonic() - t0
                    last = greeting
            except OSError as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"postfix not answering on {self.ip}:{self.port}: {last!r}\n"
                                     f"{self.diagnostics()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0):
        """`postfix stop`, then wait for the foreground master; SIGKILL as a last resort."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.postfix("stop", check=False)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pid = self.master_pid()
                if pid:
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self, keep_in: pathlib.Path | None = None):
        """Remove the work directory; first copy the log and the Maildir to `keep_in`."""
        if keep_in is not None:
            keep_in.mkdir(parents=True, exist_ok=True)
            for src, name in ((self.maillog, "maillog"), (self.out_path, "start-fg.out"),
                              (self.config_dir / "main.cf", "main.cf")):
                try:
                    shutil.copy(src, keep_in / name)
                except OSError:
                    pass
            if self.maildir.exists():
                shutil.copytree(self.maildir, keep_in / "maildir", dirs_exist_ok=True)
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- mail ----------------------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def delivered(self) -> list[pathlib.Path]:
        new = self.maildir / "new"
        if not new.is_dir():
            return []
        return sorted(new.iterdir(), key=lambda p: p.stat().st_mtime)

    def wait_delivered(self, n: int = 1, timeout: float = 60.0) -> list[pathlib.Path]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.delivered()
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} of {n} message(s) delivered to {self.maildir} after "
                                     f"{timeout}s\n{self.diagnostics()}")
            time.sleep(0.1)

    def wait_log(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the Postfix log after {timeout}s\n{self.diagnostics()}")
            time.sleep(0.1)

    def sendmail(self, message: bytes, sender: str, recipients):
        """Local submission through Postfix's sendmail(1) with this instance's config."""
        run([SENDMAIL, "-C", self.config_dir, "-i", "-f", sender, "--", *recipients], input=message)

    def diagnostics(self, n: int = 60) -> str:
        lines = self.log().splitlines()[-n:]
        try:
            out = self.out_path.read_text(errors="replace")[-4000:]
        except OSError:
            out = ""
        q = run([POSTFIX, "-c", self.config_dir, "status"], check=False, text=True)
        return (f"--- postfix status: {q.stdout.strip()} {q.stderr.strip()}\n"
                f"--- last {n} lines of {self.maillog} ---\n" + "\n".join(lines) +
                f"\n--- start-fg output ---\n{out}")


# ---- OpenDKIM's verifier -------------------------------------------------------------------------

def opendkim_testmsg(message: bytes, nameserver: str, workdir: pathlib.Path) -> subprocess.CompletedProcess:
    """Verify `message` with Debian's `opendkim-testmsg` (no options = verify mode).

    It resolves through the system resolver (libresolv reads /etc/resolv.conf), so it runs in a
    mount namespace of its own with a resolv.conf naming only `nameserver` bind-mounted over
    /etc/resolv.conf; nothing outside that one process sees the change.

    Exit status (opendkim-testmsg.c): 0 iff dkim_eom() returned DKIM_STAT_OK, i.e. a signature
    passed with a matching body hash; otherwise 70 (EX_SOFTWARE) with `dkim_eom(): <result>` on
    stderr (e.g. "Bad signature", "No signature", "No key").
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {nameserver}\noptions timeout:2 attempts:2\n")
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    return run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", resolv,
                OPENDKIM_TESTMSG], check=False, input=message)
