//! Push notifications end to end over real sockets: device tokens set over IMAP METADATA, mail
//! submitted over SMTP, and a fake notification gateway receiving the POSTs (one per token,
//! none for own copies, 410 removes the token, failures are retried, the queue survives a
//! restart).
mod common;
#[path = "common/push.rs"]
mod gw;

use std::path::Path;
use std::time::Duration;

use chatmail_box::config::Config;
use chatmail_box::net::Service;
use chatmail_box::store::now_unix;
use common::{b64, data_of, pgp_message, LineClient, TestRelay, DOMAIN};
use gw::FakeGateway;

const PASS: &str = "push-password-1";

fn addr(local: &str) -> String {
    format!("{local}@{DOMAIN}")
}

async fn relay_for(gw: &FakeGateway, f: impl FnOnce(&mut Config)) -> TestRelay {
    let url = gw.url.clone();
    TestRelay::start_with(move |c| {
        c.push_url = url;
        c.push_retry_base_secs = 1;
        f(c);
    })
    .await
}

/// Log in over IMAP (creating the account) and add device tokens: the first as a quoted
/// string, the others with the non-synchronizing `{N+}` literal form.
async fn set_tokens(relay: &TestRelay, user: &str, tokens: &[&str]) {
    let mut c = LineClient::tls(relay.addr(Service::Imaps), &[]).await;
    c.line().await;
    c.send(&format!("L LOGIN \"{user}\" \"{PASS}\"")).await;
    let r = c.imap_until("L").await;
    assert!(r.last().unwrap().starts_with("L OK"), "{r:?}");
    for (n, t) in tokens.iter().enumerate() {
        if n == 0 {
            c.send(&format!(
                "S{n} SETMETADATA INBOX (/private/devicetoken \"{t}\")"
            ))
            .await;
        } else {
            let cmd = format!(
                "S{n} SETMETADATA INBOX (/private/devicetoken {{{}+}}\r\n{t})\r\n",
                t.len()
            );
            c.send_raw(cmd.as_bytes()).await;
        }
        let r = c.imap_until(&format!("S{n}")).await;
        assert!(
            r.last().unwrap().contains("OK Setmetadata completed"),
            "{r:?}"
        );
    }
    c.send("Z LOGOUT").await;
    c.imap_until("Z").await;
}

/// Submit one encrypted message from `from` to `to` over port 465.
async fn send(relay: &TestRelay, from: &str, to: &[&str]) {
    let mut c = LineClient::tls(relay.addr(Service::Submissions), &[]).await;
    let cmd = async |c: &mut LineClient, l: &str| {
        c.send(l).await;
        c.smtp_reply().await
    };
    assert_eq!(c.smtp_reply().await.0, 220);
    assert_eq!(cmd(&mut c, "EHLO [127.0.0.1]").await.0, 250);
    let ir = b64(&format!("\0{from}\0{PASS}"));
    let (code, text) = cmd(&mut c, &format!("AUTH PLAIN {ir}")).await;
    assert_eq!(code, 235, "{text}");
    assert_eq!(cmd(&mut c, &format!("MAIL FROM:<{from}>")).await.0, 250);
    for t in to {
        let (code, text) = cmd(&mut c, &format!("RCPT TO:<{t}>")).await;
        assert_eq!(code, 250, "{text}");
    }
    assert_eq!(cmd(&mut c, "DATA").await.0, 354);
    c.send_raw(&data_of(&pgp_message(from, to[0], 300, "")))
        .await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(code, 250, "{text}");
    let _ = cmd(&mut c, "QUIT").await;
}

async fn wait_queue_empty(relay: &TestRelay, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while relay.ctx.store.push_len() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "push queue not empty"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn one_post_per_token_and_none_for_own_copies() {
    let gw = FakeGateway::start().await;
    let relay = relay_for(&gw, |_| {}).await;
    let _worker = chatmail_box::push::spawn(relay.ctx.clone()).unwrap();
    let (alice, bob) = (addr("pushalice"), addr("pushbob01"));
    set_tokens(&relay, &alice, &[]).await;
    set_tokens(&relay, &bob, &["tok-bob-phone", "tok-bob-tablet=="]).await;
    send(&relay, &alice, &[&bob]).await;
    let posts = gw.wait_posts(2, 20).await;
    assert_eq!(sorted(posts), ["tok-bob-phone", "tok-bob-tablet=="]);
    wait_queue_empty(&relay, 10).await;
    // A copy to oneself (multi-device sync) never notifies, also not when others get one.
    send(&relay, &bob, &[&bob]).await;
    send(&relay, &bob, &[&bob, &alice]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gw.posts().len(), 2, "{:?}", gw.posts());
    assert_eq!(relay.ctx.store.push_len(), 0);
    // Tokens survive successful pushes.
    assert_eq!(
        sorted(relay.ctx.store.device_tokens(&bob, now_unix()).unwrap()),
        ["tok-bob-phone", "tok-bob-tablet=="]
    );
}

#[tokio::test]
async fn gone_token_is_removed() {
    let gw = FakeGateway::start().await;
    gw.script(&[410]);
    let relay = relay_for(&gw, |_| {}).await;
    let _worker = chatmail_box::push::spawn(relay.ctx.clone()).unwrap();
    let (alice, bob) = (addr("pushalic2"), addr("pushbob02"));
    set_tokens(&relay, &alice, &[]).await;
    set_tokens(&relay, &bob, &["expired-token"]).await;
    send(&relay, &alice, &[&bob]).await;
    assert_eq!(gw.wait_posts(1, 20).await, ["expired-token"]);
    wait_queue_empty(&relay, 10).await;
    assert!(relay
        .ctx
        .store
        .device_tokens(&bob, now_unix())
        .unwrap()
        .is_empty());
    // No token, no POST.
    send(&relay, &alice, &[&bob]).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(gw.posts().len(), 1);
    assert_eq!(push_metric(&relay, "token_gone"), Some(1));
    assert_eq!(push_metric(&relay, "delivered"), None);
}

/// The `chatmail_push_attempts_total{outcome=...}` value in the metrics text, if present.
fn push_metric(relay: &TestRelay, outcome: &str) -> Option<u64> {
    let text = relay.ctx.metrics.render(&relay.ctx);
    let key = format!("chatmail_push_attempts_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn failure_is_retried_until_accepted() {
    let gw = FakeGateway::start().await;
    gw.script(&[500]);
    let relay = relay_for(&gw, |_| {}).await;
    let _worker = chatmail_box::push::spawn(relay.ctx.clone()).unwrap();
    let (alice, bob) = (addr("pushalic3"), addr("pushbob03"));
    set_tokens(&relay, &alice, &[]).await;
    set_tokens(&relay, &bob, &["retry-token"]).await;
    let t0 = tokio::time::Instant::now();
    send(&relay, &alice, &[&bob]).await;
    assert_eq!(gw.wait_posts(2, 20).await, ["retry-token", "retry-token"]);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "retry too early"
    );
    wait_queue_empty(&relay, 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gw.posts().len(), 2);
    assert_eq!(
        relay.ctx.store.device_tokens(&bob, now_unix()).unwrap(),
        ["retry-token"]
    );
    assert_eq!(push_metric(&relay, "retry"), Some(1));
    assert_eq!(push_metric(&relay, "delivered"), Some(1));
}

#[tokio::test]
async fn past_the_deadline_is_dropped() {
    let gw = FakeGateway::start().await;
    gw.script(&[503, 503]);
    // With this base the first retry would fall after the 5-hour deadline.
    let relay = relay_for(&gw, |c| c.push_retry_base_secs = 6 * 3600).await;
    let _worker = chatmail_box::push::spawn(relay.ctx.clone()).unwrap();
    let (alice, bob) = (addr("pushalic4"), addr("pushbob04"));
    set_tokens(&relay, &alice, &[]).await;
    set_tokens(&relay, &bob, &["late-token"]).await;
    send(&relay, &alice, &[&bob]).await;
    gw.wait_posts(1, 20).await;
    wait_queue_empty(&relay, 10).await;
    assert_eq!(gw.posts().len(), 1);
    assert_eq!(push_metric(&relay, "dropped"), Some(1));
}

/// Wait until no process-internal holder of the store lock is left.
async fn wait_unlocked(dir: &Path) {
    for _ in 0..250 {
        if chatmail_box::store::Store::open(dir, 1 << 20).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("store still locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_survives_a_restart() {
    let gw = FakeGateway::start().await;
    gw.script(&[500]);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let (alice, bob) = (addr("pushalic5"), addr("pushbob05"));
    {
        let d = dir.clone();
        let relay = relay_for(&gw, move |c| {
            c.data_dir = d;
            c.push_retry_base_secs = 2;
        })
        .await;
        let worker = chatmail_box::push::spawn(relay.ctx.clone()).unwrap();
        set_tokens(&relay, &alice, &[]).await;
        set_tokens(&relay, &bob, &["restart-token"]).await;
        send(&relay, &alice, &[&bob]).await;
        gw.wait_posts(1, 20).await;
        // The failed attempt is recorded, then the relay stops before the retry.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let items = relay.ctx.store.push_items().unwrap();
            assert_eq!(items.len(), 1);
            if items[0].attempt == 1 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.abort();
        let _ = worker.await;
    }
    wait_unlocked(&dir).await;
    assert_eq!(gw.posts().len(), 1);
    let d = dir.clone();
    let relay = relay_for(&gw, move |c| c.data_dir = d).await;
    assert_eq!(
        relay.ctx.store.push_len(),
        1,
        "queue item lost in the restart"
    );
    let _worker = chatmail_box::push::spawn(relay.ctx.clone()).unwrap();
    assert_eq!(
        gw.wait_posts(2, 20).await,
        ["restart-token", "restart-token"]
    );
    wait_queue_empty(&relay, 10).await;
}

#[tokio::test]
async fn empty_push_url_sends_nothing_and_keeps_no_queue() {
    let gw = FakeGateway::start().await;
    let relay = relay_for(&gw, |c| c.push_url = String::new()).await;
    let _worker = chatmail_box::push::spawn(relay.ctx.clone()).unwrap();
    let (alice, bob) = (addr("pushalic6"), addr("pushbob06"));
    set_tokens(&relay, &alice, &[]).await;
    set_tokens(&relay, &bob, &["unused-token"]).await;
    send(&relay, &alice, &[&bob]).await;
    wait_queue_empty(&relay, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gw.posts().is_empty());
}

#[tokio::test]
async fn connections_are_kept_alive() {
    let gw = FakeGateway::start().await;
    let relay = relay_for(&gw, |_| {}).await;
    let _worker = chatmail_box::push::spawn(relay.ctx.clone()).unwrap();
    let (alice, bob) = (addr("pushalic7"), addr("pushbob07"));
    set_tokens(&relay, &alice, &[]).await;
    set_tokens(&relay, &bob, &["keepalive-token"]).await;
    for n in 1..=3 {
        send(&relay, &alice, &[&bob]).await;
        gw.wait_posts(n, 20).await;
        wait_queue_empty(&relay, 10).await;
    }
    assert_eq!(gw.connections(), 1, "one connection for sequential pushes");
}
