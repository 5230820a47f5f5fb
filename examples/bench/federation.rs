//! `make bench`, relay-to-relay part (issue 4): two relays in this process, each on its own
//! loopback address with its own domain and DKIM key, and a DNS server on loopback serving
//! their MX, A and DKIM TXT records (the federation test harness, `tests/common/fed.rs`).
//!
//! A client submits on relay A's submissions port to users of relay B, whose IMAP clients sit
//! in IDLE. Measured per transport (`/mxdeliv` over HTTPS, the default; and the SMTP fallback,
//! with B's HTTPS port closed):
//! - latency from the final `250` on A to `* n EXISTS` on B, one message at a time;
//! - delivered msgs/s with several concurrent senders (last `EXISTS` on B).
//!
//! Everything (relays, DNS, clients) shares this process's runtime on the machine's cores.

use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::fed::{free_port, FedNet, FedRelay};
use super::{
    imap_login_at, imap_tagged, line, message, pct, send, smtp_login_at, submit, submit_until, Tls,
};

const DOMAIN_A: &str = "_bench-a.test";
const DOMAIN_B: &str = "_bench-b.test";
/// Messages before the latency loop (first connections, DNS, the HTTPS attempt before an SMTP
/// fallback), not counted.
const WARMUP: usize = 5;
/// Concurrent senders on A (each to its own recipient on B) in the throughput run.
const SENDERS: usize = 8;
/// Wall-time bound of each transport's run.
const LIMIT: Duration = Duration::from_secs(150);
/// Longest wait for one message's `EXISTS`.
const EXISTS_TIMEOUT: Duration = Duration::from_secs(30);

fn user(i: usize, domain: &str) -> String {
    format!("bench{i:04}@{domain}")
}

/// Both relays of one run: A sends (submissions port open), B receives (IMAPS open).
struct Pair {
    _net: FedNet,
    _a: FedRelay,
    _b: FedRelay,
    ip_a: &'static str,
    ip_b: &'static str,
    submissions: u16,
    imaps: u16,
}

async fn pair(ip_a: &'static str, ip_b: &'static str, smtp_only: bool) -> Pair {
    let net = FedNet::new().await;
    let submissions = free_port();
    let imaps = free_port();
    let a = net
        .relay(DOMAIN_A, ip_a, |c| {
            c.ports.submissions = submissions;
            c.max_user_send_per_minute = 1_000_000;
            c.max_user_send_burst_size = 1_000_000;
        })
        .await;
    let b = net
        .relay(DOMAIN_B, ip_b, |c| {
            c.ports.imaps = imaps;
            if smtp_only {
                c.ports.https = 0;
            }
        })
        .await;
    for _ in 0..100 {
        let ok_a = tokio::net::TcpStream::connect((ip_a, submissions))
            .await
            .is_ok();
        let ok_b = tokio::net::TcpStream::connect((ip_b, imaps)).await.is_ok();
        if ok_a && ok_b {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Pair {
        _net: net,
        _a: a,
        _b: b,
        ip_a,
        ip_b,
        submissions,
        imaps,
    }
}

/// Log `user` in on B, select INBOX and enter IDLE; a task reports every `* n EXISTS` as
/// `(tag, n, when)`.
async fn idle_on_b(
    p: &Pair,
    user: &str,
    tag: usize,
    tx: mpsc::UnboundedSender<(usize, usize, Instant)>,
) -> tokio::task::JoinHandle<()> {
    let mut c: Tls = imap_login_at(p.ip_b, p.imaps, user).await;
    send(&mut c, "s SELECT INBOX\r\n").await;
    imap_tagged(&mut c, "s").await;
    send(&mut c, "i IDLE\r\n").await;
    let l = line(&mut c).await;
    assert!(l.starts_with('+'), "{l}");
    tokio::spawn(async move {
        loop {
            let mut l = String::new();
            if c.read_line(&mut l).await.unwrap_or(0) == 0 {
                return;
            }
            let Some(n) = l
                .strip_prefix("* ")
                .and_then(|r| r.trim_end().strip_suffix(" EXISTS"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if tx.send((tag, n, Instant::now())).is_err() {
                return;
            }
        }
    })
}

/// One transport: latency over `n` messages, then throughput with [`SENDERS`] senders.
async fn run_one(label: &str, n: usize, ip_a: &'static str, ip_b: &'static str, smtp: bool) {
    let p = pair(ip_a, ip_b, smtp).await;
    let deadline = Instant::now() + LIMIT;

    // Latency: one sender on A, one receiver on B in IDLE, one message at a time.
    let (from, to) = (user(0, DOMAIN_A), user(0, DOMAIN_B));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = idle_on_b(&p, &to, 0, tx).await;
    let mut sender = smtp_login_at(p.ip_a, p.submissions, &from).await;
    let body = message(&from, &to, 0);
    let mut lat = Vec::new();
    for i in 0..n + WARMUP {
        if Instant::now() > deadline {
            println!(
                "bound hit: {label} latency loop stopped after {} messages",
                i.saturating_sub(WARMUP)
            );
            break;
        }
        submit(&mut sender, &from, &to, &body).await;
        let t_250 = Instant::now();
        let Ok(Some((_, _, t_exists))) = tokio::time::timeout(EXISTS_TIMEOUT, rx.recv()).await
        else {
            println!("bound hit: {label}: no EXISTS on B within {EXISTS_TIMEOUT:?}");
            break;
        };
        if i >= WARMUP {
            lat.push(t_exists.saturating_duration_since(t_250).as_secs_f64() * 1000.0);
        }
    }
    reader.abort();
    drop(sender);
    println!(
        "relay_{label}_latency_250_to_exists_ms p50 {:.3} p95 {:.3} p99 {:.3} max {:.3} (n={})",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.95),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        lat.len()
    );

    // Throughput: SENDERS senders on A, each to its own receiver on B (in IDLE).
    let per = (n / SENDERS).max(20);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for s in 0..SENDERS {
        readers.push(idle_on_b(&p, &user(1 + s, DOMAIN_B), s, tx.clone()).await);
    }
    drop(tx);
    let mut conns = Vec::new();
    for s in 0..SENDERS {
        conns.push(smtp_login_at(p.ip_a, p.submissions, &user(1 + s, DOMAIN_A)).await);
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (s, mut c) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let (from, to) = (user(1 + s, DOMAIN_A), user(1 + s, DOMAIN_B));
            let body = message(&from, &to, s);
            submit_until(&mut c, &from, &to, &body, per, deadline).await
        }));
    }
    let mut sent = [0usize; SENDERS];
    for (s, t) in tasks.into_iter().enumerate() {
        sent[s] = t.await.expect("sender");
    }
    let accepted_secs = t0.elapsed().as_secs_f64();
    let total: usize = sent.iter().sum();
    let mut seen = [0usize; SENDERS];
    let mut last = t0;
    // More EXISTS than messages sent: a message was delivered twice.
    let mut max_k = [0usize; SENDERS];
    while seen.iter().sum::<usize>() < total {
        let late = Instant::now() > deadline + EXISTS_TIMEOUT;
        match tokio::time::timeout(EXISTS_TIMEOUT, rx.recv()).await {
            Ok(Some((s, k, t))) if !late => {
                max_k[s] = max_k[s].max(k);
                if k > seen[s] {
                    seen[s] = k.min(sent[s]);
                    last = t;
                }
            }
            _ => {
                println!(
                    "bound hit: {label}: {} of {total} messages seen on B",
                    seen.iter().sum::<usize>()
                );
                break;
            }
        }
    }
    // Late duplicates: anything arriving within a short grace period after the last message.
    while let Ok(Some((s, k, _))) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
        max_k[s] = max_k[s].max(k);
    }
    for r in readers {
        r.abort();
    }
    let extra: usize = (0..SENDERS).map(|s| max_k[s].saturating_sub(sent[s])).sum();
    if extra > 0 {
        println!("relay_{label}_duplicates {extra} (receivers on B saw more messages than sent)");
    }
    let delivered: usize = seen.iter().sum();
    let secs = last.duration_since(t0).as_secs_f64().max(1e-9);
    println!(
        "relay_{label}_throughput_msgs_per_s {:.0} ({delivered} of {total} messages in IDLE on B after {secs:.2} s, {SENDERS} senders on A; accepted on A in {accepted_secs:.2} s)",
        delivered as f64 / secs
    );
}

/// Both transports: `/mxdeliv` over HTTPS (the default) and the SMTP fallback.
pub async fn run(n: usize) {
    println!(
        "# relay-to-relay: A {DOMAIN_A} (127.0.0.20) -> B {DOMAIN_B} (127.0.0.21), DNS on loopback, DKIM on, in-process"
    );
    run_one("https", n, "127.0.0.20", "127.0.0.21", false).await;
    println!(
        "# relay-to-relay SMTP fallback: B's HTTPS closed, A {DOMAIN_A} (127.0.0.22) -> B {DOMAIN_B} (127.0.0.23)"
    );
    run_one("smtp", n, "127.0.0.22", "127.0.0.23", true).await;
}
