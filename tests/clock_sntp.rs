//! `clock`: the SNTP client against a real NTP server (Debian's chronyd on loopback, `-x`: it
//! never touches this machine's clock) and against servers that answer badly. The tests only
//! query: nothing here sets the host's clock (that is exercised in the emulated appliance,
//! `make qemu-test`, where the status LED turns healthy once the clock is synchronised).

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatmail_box::clock::{self, ClockError};

struct Chrony {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chronyd() -> Option<(Chrony, u16)> {
    // scripts/chronyd.sh (run by `make test-rust`) unpacks Debian's chronyd here rather than
    // installing the package; an installed one does as well.
    let unpacked = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/host/chrony/usr/sbin/chronyd"
    );
    let bin = [unpacked, "/usr/sbin/chronyd", "/sbin/chronyd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chronyd missing: run scripts/chronyd.sh (make test-rust does)"
        );
        eprintln!("skipping: chronyd missing (run scripts/chronyd.sh)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\n\
             user root\nbindcmdaddress /\n\
             pidfile {}\n",
            dir.path().join("chronyd.pid").display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["-x", "-d", "-f"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some((Chrony { child, _dir: dir }, port))
}

#[test]
fn measures_offset_against_chronyd() {
    let Some((_chrony, port)) = chronyd() else {
        return;
    };
    let server = format!("127.0.0.1:{port}");
    let end = Instant::now() + Duration::from_secs(20);
    let s = loop {
        match clock::best_sample(&server, Duration::from_millis(500)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("no reply from chronyd: {e}"),
        }
    };
    // Same machine, same clock: the offset is about zero, the stratum is chrony's `local`.
    assert!(s.offset.abs() <= s.delay / 2.0 + 0.005, "{s:?}");
    assert!(s.delay >= 0.0 && s.delay < 1.0, "{s:?}");
    assert_eq!(s.stratum, 8);
}

/// A server that answers every request with `f(request)`.
fn fake_server(f: fn(&[u8]) -> Vec<u8>) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&f(&buf[..n]), from);
        }
    });
    addr
}

fn base_reply(req: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = (4 << 3) | 4;
    p[1] = 2;
    p[24..32].copy_from_slice(&req[40..48]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2_208_988_800;
    p[32..36].copy_from_slice(&(now as u32).to_be_bytes());
    p[40..44].copy_from_slice(&(now as u32).to_be_bytes());
    p
}

#[test]
fn rejects_bad_servers() {
    let t = Duration::from_millis(700);
    // A kiss-o'-death (stratum 0), an unsynchronised server, a reply to someone else's request,
    // a truncated reply: each an error, never a sample that could set the clock.
    let kod = fake_server(|r| {
        let mut p = base_reply(r);
        p[1] = 0;
        p
    });
    assert_eq!(
        clock::best_sample(&kod, t),
        Err(ClockError::Unsynchronised(0))
    );
    let unsync = fake_server(|r| {
        let mut p = base_reply(r);
        p[0] |= 3 << 6;
        p
    });
    assert!(matches!(
        clock::best_sample(&unsync, t),
        Err(ClockError::Unsynchronised(_))
    ));
    let spoof = fake_server(|r| {
        let mut p = base_reply(r);
        p[24] ^= 0xff;
        p
    });
    assert!(
        matches!(clock::best_sample(&spoof, t), Err(ClockError::Io(_))),
        "a reply with the wrong origin is ignored until the timeout"
    );
    let short = fake_server(|r| base_reply(r)[..40].to_vec());
    assert_eq!(clock::best_sample(&short, t), Err(ClockError::Short(40)));
    // And a well-formed reply from the same kind of server is accepted (the checks above fail
    // for their own reason).
    let good = fake_server(base_reply);
    let s = clock::best_sample(&good, t).unwrap();
    assert!(s.offset.abs() < 2.0, "{s:?}");
}

#[test]
fn cli_once_fails_clearly_without_a_server() {
    // Nothing listens on this port: `clock --once` gives up with a clear message and exit 1
    // (it never reached `apply`, so the clock is untouched).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_chatmail-box"))
        .args(["clock", "--once", "--server", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no usable NTP reply from 127.0.0.1:"), "{err}");
}
