//! Federation between two in-process relays on different loopback addresses and domains, with
//! a test DNS server: `/mxdeliv`, SMTP fallback, deferral and restart, bounces.

#[path = "policy_corpus.rs"]
mod corpus;
#[path = "common/fed.rs"]
mod fed;

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use chatmail_box::store::RcptState;
use fed::{free_port, FedNet};

/// Log lines of this test binary (all tests), for the "deferred" checks.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

fn has_header(msg: &[u8], name: &str) -> bool {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with(&format!("{}:", name.to_ascii_lowercase()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_mxdeliv_when_port_25_is_blocked() {
    capture_logs();
    let net = FedNet::new().await;
    let dead = free_port();
    let a = net
        .relay("_one.test", "127.0.0.2", |c| c.outbound_smtp_port = dead)
        .await;
    let b = net.relay("_two.test", "127.0.0.3", |_| {}).await;
    let alice = a.user("alice");
    let bob = b.user("bob");
    a.send(&alice, &[&bob], &corpus::chat_message(&alice));
    let got = b.wait_inbox(&bob, 1, 30).await;
    a.wait_queue_empty(10).await;
    assert_eq!(got.len(), 1);
    // Delivery header cleanup on the receiving side: no trace headers stored.
    assert!(!has_header(&got[0], "DKIM-Signature"));
    assert!(!has_header(&got[0], "Received"));
    assert!(String::from_utf8_lossy(&got[0]).contains("BEGIN PGP MESSAGE"));
    assert!(logs().contains("via=\"HTTPS\""));
    // And the reverse direction.
    b.send(&bob, &[&alice], &corpus::chat_message(&bob));
    a.wait_inbox(&alice, 1, 30).await;
}

/// Many messages queued at once, each also to a local recipient (so its body stays on disk
/// after the remote delivery): every one arrives exactly once. Regression: the runner used to
/// restart an item from a stale queue snapshot when the earlier attempt had just finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queue_delivers_each_message_exactly_once() {
    capture_logs();
    let net = FedNet::new().await;
    let a = net.relay("_one.test", "127.0.0.14", |_| {}).await;
    let b = net.relay("_two.test", "127.0.0.15", |_| {}).await;
    let alice = a.user("alice");
    let carol = a.user("carol");
    let bobs: Vec<String> = (0..4).map(|i| b.user(&format!("bob{i}"))).collect();
    const N: usize = 40;
    for i in 0..N {
        let bob = &bobs[i % bobs.len()];
        a.send(&alice, &[bob, &carol], &corpus::chat_message(&alice));
    }
    a.wait_queue_empty(120).await;
    // Give a duplicate attempt that might still be running the time to land.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for bob in &bobs {
        assert_eq!(b.inbox(bob).len(), N / bobs.len(), "{bob}");
    }
    assert_eq!(a.inbox(&carol).len(), N);
    assert!(
        !logs().contains("queued body unreadable"),
        "an attempt ran on a finished item"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_smtp_when_https_is_blocked() {
    capture_logs();
    let net = FedNet::new().await;
    let dead = free_port();
    let a = net
        .relay("_one.test", "127.0.0.4", |c| c.outbound_https_port = dead)
        .await;
    let b = net.relay("_two.test", "127.0.0.5", |_| {}).await;
    let alice = a.user("alice");
    let bob = b.user("bob");
    a.send(&alice, &[&bob], &corpus::chat_message(&alice));
    let got = b.wait_inbox(&bob, 1, 30).await;
    a.wait_queue_empty(10).await;
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0]).contains("BEGIN PGP MESSAGE"));
    assert!(logs().contains("via=\"SMTP\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stays_queued_when_blocked_and_survives_a_restart() {
    capture_logs();
    let net = FedNet::new().await;
    let dead = free_port();
    let a = net
        .relay("_one.test", "127.0.0.6", |c| {
            c.outbound_smtp_port = dead;
            c.outbound_https_port = dead;
        })
        .await;
    let b = net.relay("_two.test", "127.0.0.7", |_| {}).await;
    let alice = a.user("alice");
    let bob = b.user("bob");
    a.send(&alice, &[&bob], &corpus::chat_message(&alice));
    // At least two attempts fail and are recorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let items = a.ctx.store.queue_items().unwrap();
        assert_eq!(items.len(), 1);
        if items[0].attempts >= 2 {
            assert!(items[0].rcpts.iter().all(|r| r.state == RcptState::Pending));
            let err = items[0].last_error.clone().unwrap();
            assert!(err.contains("Failed to connect"), "{err}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no retries");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b.inbox(&bob).is_empty());
    let log = logs();
    assert!(log.contains("deferred"), "{log}");
    assert!(log.contains("delivery attempt failed"), "{log}");
    assert!(!log.contains(&bob), "addresses must not be logged at INFO");
    // Restart A with the ports unblocked: the queued message is delivered exactly once.
    let (dir, mut cfg) = a.stop().await;
    cfg.outbound_smtp_port = net.smtp_port;
    cfg.outbound_https_port = net.https_port;
    let a = fed::FedRelay::start(dir, cfg).await;
    b.wait_inbox(&bob, 1, 30).await;
    a.wait_queue_empty(10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.inbox(&bob).len(), 1);
    assert_eq!(a.ctx.store.blob_count(), 0, "body released after delivery");
}

fn bounce_for(msgs: &[Vec<u8>], needle: &str) -> String {
    let texts: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    texts
        .iter()
        .find(|t| t.contains(needle))
        .cloned()
        .unwrap_or_else(|| panic!("no bounce mentioning {needle}: {texts:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_remote_user_bounces_dkim_signed_to_the_sender() {
    capture_logs();
    let net = FedNet::new().await;
    let a = net.relay("_one.test", "127.0.0.8", |_| {}).await;
    let b = net.relay("_two.test", "127.0.0.9", |_| {}).await;
    let alice = a.user("alice");
    let ghost = b.addr("nosuchuser_test42");
    a.send(&alice, &[&ghost], &corpus::chat_message(&alice));
    a.wait_queue_empty(30).await;
    // B accepted it, found no such user and bounced; the bounce went back through B's queue
    // to A, whose strict DKIM check let it in.
    let got = a.wait_inbox(&alice, 1, 30).await;
    b.wait_queue_empty(30).await;
    let dsn = bounce_for(&got, "nosuchuser_test42");
    assert!(dsn.contains("MAILER-DAEMON@_two.test"), "{dsn}");
    assert!(dsn.contains("Auto-Submitted: auto-replied"));
    assert!(dsn.contains("multipart/report"));
    // DKIM-Signature was verified by A and then removed at delivery.
    assert!(!has_header(dsn.as_bytes(), "DKIM-Signature"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_mx_and_nxdomain_bounce_permanently() {
    capture_logs();
    let net = FedNet::new().await;
    let a = net.relay("_one.test", "127.0.0.10", |_| {}).await;
    net.dns.mx("_nullmx.test", 0, ".");
    let alice = a.user("alice");
    a.send(&alice, &["bob@_nullmx.test"], &corpus::chat_message(&alice));
    a.send(
        &alice,
        &["carol@_nowhere.test"],
        &corpus::chat_message(&alice),
    );
    let got = a.wait_inbox(&alice, 2, 30).await;
    a.wait_queue_empty(10).await;
    let nullmx = bounce_for(&got, "bob@_nullmx.test");
    assert!(nullmx.contains("556 5.1.10"), "{nullmx}");
    assert!(nullmx.contains("From: Mail Delivery System <MAILER-DAEMON@_one.test>"));
    let nx = bounce_for(&got, "carol@_nowhere.test");
    assert!(
        nx.contains("512 Domain _nowhere.test does not exist"),
        "{nx}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_bounce() {
    capture_logs();
    let net = FedNet::new().await;
    let dead = free_port();
    let a = net
        .relay("_one.test", "127.0.0.11", |c| {
            c.outbound_smtp_port = dead;
            c.outbound_https_port = dead;
            c.queue_lifetime = 2;
        })
        .await;
    net.dns.a("_two.test", "127.0.0.12".parse().unwrap());
    let alice = a.user("alice");
    a.send(&alice, &["bob@_two.test"], &corpus::chat_message(&alice));
    let got = a.wait_inbox(&alice, 1, 30).await;
    a.wait_queue_empty(10).await;
    let dsn = bounce_for(&got, "bob@_two.test");
    assert!(dsn.contains("delivery time expired"), "{dsn}");
}
