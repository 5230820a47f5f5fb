//! `make bench`: loopback performance of a release `chatmail-box` process.
//!
//! Prints (never asserts):
//! - end-to-end latency from the final `250` after DATA to `* n EXISTS` on a recipient in IDLE,
//!   p50/p95/p99/max over N messages of ~3 KB (Delta-Chat-shaped PGP/MIME);
//! - throughput in delivered msgs/s with 16 concurrent senders;
//! - RSS idle and with 1000 clients in IDLE, and per extra IDLE connection;
//! - relay to relay (`bench/federation.rs`): latency from the final `250` on relay A to
//!   `* n EXISTS` on relay B and delivered msgs/s, over `/mxdeliv` (HTTPS) and the SMTP fallback.
//!
//! Usage: `bench <path-to-chatmail-box> [messages]`. Every loop is bounded in count and time.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_box::delivery::tlsconf::NoVerify;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const DOMAIN: &str = "_bench.test";
const HOST: &str = "127.0.0.9";
const P_SUBMISSIONS: u16 = 46500;
const P_IMAPS: u16 = 49930;
const LIMIT: Duration = Duration::from_secs(240);

#[path = "../tests/common/fed.rs"]
mod fed;
#[path = "bench/federation.rs"]
mod federation;

type Tls = BufReader<TlsStream<TcpStream>>;

/// A TLS client connection to `host:port` (certificate not verified).
async fn connect_at(host: &str, port: u16) -> Tls {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(NoVerify))
    .with_no_client_auth();
    let addr: SocketAddr = format!("{host}:{port}").parse().expect("addr");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).ok();
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(DOMAIN).expect("name"), tcp)
        .await
        .expect("tls");
    BufReader::new(tls)
}

async fn line(c: &mut Tls) -> String {
    let mut l = String::new();
    c.read_line(&mut l).await.expect("read");
    assert!(!l.is_empty(), "server closed the connection");
    l
}

async fn send(c: &mut Tls, s: &str) {
    c.get_mut().write_all(s.as_bytes()).await.expect("write");
    c.get_mut().flush().await.expect("flush");
}

async fn smtp_reply(c: &mut Tls) -> String {
    loop {
        let l = line(c).await;
        if l.as_bytes().get(3) != Some(&b'-') {
            return l;
        }
    }
}

async fn imap_tagged(c: &mut Tls, tag: &str) {
    loop {
        let l = line(c).await;
        if let Some(rest) = l.strip_prefix(tag) {
            assert!(rest.trim_start().starts_with("OK"), "{l}");
            return;
        }
    }
}

fn addr(i: usize) -> String {
    format!("bench{i:04}@{DOMAIN}")
}
const PASSWORD: &str = "benchpassword123";

async fn smtp_login(user: &str) -> Tls {
    smtp_login_at(HOST, P_SUBMISSIONS, user).await
}

/// Log in (creating the account on first login) on implicit-TLS submission at `host:port`.
async fn smtp_login_at(host: &str, port: u16, user: &str) -> Tls {
    let mut c = connect_at(host, port).await;
    smtp_reply(&mut c).await;
    send(&mut c, "EHLO [127.0.0.1]\r\n").await;
    smtp_reply(&mut c).await;
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
    send(&mut c, &format!("AUTH PLAIN {b}\r\n")).await;
    let r = smtp_reply(&mut c).await;
    assert!(r.starts_with("235"), "auth: {r}");
    c
}

async fn imap_login(user: &str) -> Tls {
    imap_login_at(HOST, P_IMAPS, user).await
}

/// Log in (creating the account on first login) on IMAPS at `host:port`.
async fn imap_login_at(host: &str, port: u16, user: &str) -> Tls {
    let mut c = connect_at(host, port).await;
    line(&mut c).await;
    send(&mut c, &format!("a LOGIN \"{user}\" \"{PASSWORD}\"\r\n")).await;
    imap_tagged(&mut c, "a").await;
    c
}

/// A Delta-Chat-shaped PGP/MIME message of about 3 KB: a PKESK and a SEIPD packet, armored.
fn message(from: &str, to: &str, n: usize) -> String {
    use base64::Engine;
    // PKESK v3 (key id, RSA, one 2048-bit MPI) with a two-octet length.
    let mut bin = vec![0xc1, 0xc0, 76, 3, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0x08, 0x00];
    bin.extend(std::iter::repeat_n(0xa5, 256));
    // SEIPD v1 with a two-octet length: 1 version byte + 2000 bytes of "ciphertext".
    let mut body = vec![1u8];
    body.extend((0..2000u32).map(|i| (i * 31 + n as u32) as u8));
    let len = body.len() - 192;
    bin.extend([0xd2, ((len >> 8) + 192) as u8, (len & 0xff) as u8]);
    bin.extend(body);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bin);
    let armored: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: [...]\r\nMessage-ID: <bench{n}@localhost>\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n\
         -----BEGIN PGP MESSAGE-----\r\n\r\n{}\r\n-----END PGP MESSAGE-----\r\n\r\n--b--\r\n",
        armored.join("\r\n")
    )
}

/// Send one message on an authenticated connection (pipelined); returns when `250` arrives.
async fn submit(c: &mut Tls, from: &str, to: &str, body: &str) {
    send(
        c,
        &format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n"),
    )
    .await;
    for _ in 0..3 {
        let r = smtp_reply(c).await;
        assert!(r.starts_with('2') || r.starts_with('3'), "{r}");
    }
    send(c, body).await;
    send(c, ".\r\n").await;
    let r = smtp_reply(c).await;
    assert!(r.starts_with("250"), "DATA: {r}");
}

/// Submit `body` up to `n` times on `c`, stopping at `deadline`; returns how many were accepted.
async fn submit_until(
    c: &mut Tls,
    from: &str,
    to: &str,
    body: &str,
    n: usize,
    deadline: Instant,
) -> usize {
    let mut done = 0;
    while done < n && Instant::now() <= deadline {
        submit(c, from, to, body).await;
        done += 1;
    }
    done
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn start(bin: &str, dir: &std::path::Path) -> Child {
    let cfg = format!(
        "mail_domain = \"{DOMAIN}\"\ndata_dir = \"{}\"\nlisten = \"{HOST}\"\n\
         max_user_send_per_minute = 1000000\nmax_user_send_burst_size = 1000000\n\
         min_free_disk_space = 0\nmin_available_memory = 0\nmax_load_1m = 1000000.0\n\
         [ports]\nsmtp = 0\nsubmission = 0\nsubmissions = {P_SUBMISSIONS}\nimap = 0\nimaps = {P_IMAPS}\nhttps = 0\nhttp = 0\n",
        dir.display()
    );
    let path = dir.join("bench.toml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(cfg.as_bytes()))
        .expect("write config");
    Command::new(bin)
        .args(["--config", path.to_str().expect("utf8"), "serve"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start relay")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .cloned()
        .unwrap_or("target/release/chatmail-box".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    // The in-process relays of the relay-to-relay part log to stderr only if asked.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let dir = std::env::temp_dir().join(format!("chatmail-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let mut child = start(&bin, &dir);
    let pid = child.id();
    let deadline = Instant::now() + LIMIT;
    for _ in 0..100 {
        if TcpStream::connect(format!("{HOST}:{P_IMAPS}"))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = rss_kib(pid);

    println!("# chatmail-box bench: {bin}, {n} messages, fsync on, loopback {HOST}");
    println!("rss_idle_kib {idle_rss}");

    // Accounts: 0 = sender, 1 = receiver, 2..18 = throughput senders.
    for i in 0..18 {
        drop(smtp_login(&addr(i)).await);
    }

    // 1. Latency: receiver in IDLE, sender submits one message at a time.
    let mut rx = imap_login(&addr(1)).await;
    send(&mut rx, "s SELECT INBOX\r\n").await;
    imap_tagged(&mut rx, "s").await;
    send(&mut rx, "i IDLE\r\n").await;
    let l = line(&mut rx).await;
    assert!(l.starts_with('+'), "{l}");
    let (tx_exists, mut rx_exists) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let reader = tokio::spawn(async move {
        loop {
            let mut l = String::new();
            if rx.read_line(&mut l).await.unwrap_or(0) == 0 {
                return;
            }
            if l.contains(" EXISTS") && tx_exists.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    let mut sender = smtp_login(&addr(0)).await;
    let mut lat_250 = Vec::new();
    let mut lat_dot = Vec::new();
    let body = message(&addr(0), &addr(1), 0);
    for i in 0..n {
        if Instant::now() > deadline {
            println!("bound hit: latency loop stopped after {i} messages");
            break;
        }
        let t_dot = Instant::now();
        submit(&mut sender, &addr(0), &addr(1), &body).await;
        let t_250 = Instant::now();
        let t_exists = tokio::time::timeout(Duration::from_secs(10), rx_exists.recv())
            .await
            .ok()
            .flatten()
            .expect("no EXISTS within 10 s");
        lat_250.push(t_exists.saturating_duration_since(t_250).as_secs_f64() * 1000.0);
        lat_dot.push(t_exists.duration_since(t_dot).as_secs_f64() * 1000.0);
    }
    reader.abort();
    println!(
        "latency_250_to_exists_ms p50 {:.3} p95 {:.3} p99 {:.3} max {:.3} (n={})",
        pct(&mut lat_250, 0.5),
        pct(&mut lat_250, 0.95),
        pct(&mut lat_250, 0.99),
        pct(&mut lat_250, 1.0),
        lat_250.len()
    );
    println!(
        "latency_submit_to_exists_ms p50 {:.3} p95 {:.3} p99 {:.3} max {:.3}",
        pct(&mut lat_dot, 0.5),
        pct(&mut lat_dot, 0.95),
        pct(&mut lat_dot, 0.99),
        pct(&mut lat_dot, 1.0)
    );

    // 2. Throughput: 16 concurrent senders, each to the next account.
    let per = (n / 16).max(20);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..16 {
        tasks.push(tokio::spawn(async move {
            let from = addr(2 + s);
            let to = addr(2 + (s + 1) % 16);
            let mut c = smtp_login(&from).await;
            let body = message(&from, &to, s);
            submit_until(&mut c, &from, &to, &body, per, deadline).await
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("sender");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "throughput_msgs_per_s {:.0} ({total} messages acknowledged durable in {secs:.2} s, 16 senders)",
        total as f64 / secs
    );
    println!("rss_after_load_kib {}", rss_kib(pid));

    // 3. Memory with 1000 IDLE connections.
    let before = rss_kib(pid);
    let mut conns = Vec::new();
    for i in 0..1000 {
        if Instant::now() > deadline {
            println!("bound hit: {i} IDLE connections");
            break;
        }
        let mut c = imap_login(&addr(2 + i % 16)).await;
        send(&mut c, "s SELECT INBOX\r\n").await;
        imap_tagged(&mut c, "s").await;
        send(&mut c, "i IDLE\r\n").await;
        let l = line(&mut c).await;
        assert!(l.starts_with('+'), "{l}");
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = rss_kib(pid);
    println!(
        "rss_with_{}_idle_kib {with} (+{} KiB, {:.1} KiB per IDLE connection)",
        conns.len(),
        with.saturating_sub(before),
        with.saturating_sub(before) as f64 / conns.len().max(1) as f64
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    // 4. Relay to relay, in this process.
    federation::run(n).await;
}
