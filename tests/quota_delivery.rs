//! Quota at delivery over real sockets: 552 5.2.2 for a single full recipient with nothing
//! stored, the other recipients still served, trimming at 75 %, GETQUOTAROOT matching the
//! mailbox after deliveries and expunge.
mod common;

use chatmail_box::net::Service;
use chatmail_box::store::{now_unix, Flags, INBOX};
use common::{b64, data_of, pgp_message, LineClient, TestRelay, DOMAIN};

const PASS: &str = "secret-password-1";
const DAY: i64 = 86400;

fn addr(local: &str) -> String {
    format!("{local}@{DOMAIN}")
}

async fn cmd(c: &mut LineClient, line: &str) -> (u16, String) {
    c.send(line).await;
    c.smtp_reply().await
}

/// Log in on 465 (creates the account).
async fn smtp_login(relay: &TestRelay, a: &str) -> LineClient {
    let mut c = LineClient::tls(relay.addr(Service::Submissions), &[]).await;
    assert_eq!(c.smtp_reply().await.0, 220);
    assert_eq!(cmd(&mut c, "EHLO [127.0.0.1]").await.0, 250);
    let ir = b64(&format!("\0{a}\0{PASS}"));
    let (code, text) = cmd(&mut c, &format!("AUTH PLAIN {ir}")).await;
    assert_eq!(code, 235, "{text}");
    c
}

async fn send(c: &mut LineClient, from: &str, to: &[&str], payload: usize) -> (u16, String) {
    assert_eq!(cmd(c, &format!("MAIL FROM:<{from}>")).await.0, 250);
    for t in to {
        let (code, text) = cmd(c, &format!("RCPT TO:<{t}>")).await;
        assert_eq!(code, 250, "{text}");
    }
    assert_eq!(cmd(c, "DATA").await.0, 354);
    c.send_raw(&data_of(&pgp_message(from, to[0], payload, "")))
        .await;
    c.smtp_reply().await
}

fn inbox_sizes(relay: &TestRelay, a: &str) -> Vec<u64> {
    let snap = relay.ctx.store.snapshot(a, INBOX).unwrap().unwrap();
    snap.messages.iter().map(|m| m.size).collect()
}

#[tokio::test]
async fn single_full_recipient_gets_552_and_nothing_is_stored() {
    let relay = TestRelay::start_with(|c| c.max_mailbox_size = 100_000).await;
    let store = &relay.ctx.store;
    let (a, b) = (addr("sendera01"), addr("fullbox01"));
    relay.ctx.auth.login(&b, PASS).await.unwrap();
    store
        .append(&b, INBOX, Flags::empty(), now_unix(), &[b'x'; 95_000])
        .unwrap();
    let blobs = store.blob_count();
    let mut c = smtp_login(&relay, &a).await;
    let (code, text) = send(&mut c, &a, &[&b], 10_000).await;
    assert_eq!(code, 552, "{text}");
    assert!(
        text.starts_with("552 5.2.2 Quota exceeded (mailbox for user is full)"),
        "{text}"
    );
    assert_eq!(inbox_sizes(&relay, &b), vec![95_000]);
    assert_eq!(store.usage(&b).unwrap(), 95_000);
    assert_eq!(store.blob_count(), blobs, "no body left behind");
    assert_eq!(store.quota_exceeded_count(), 1);
    // The session goes on: a small message still fits.
    let (code, text) = send(&mut c, &a, &[&b], 100).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(inbox_sizes(&relay, &b).len(), 2);
}

#[tokio::test]
async fn other_recipients_get_it_and_the_sender_gets_a_bounce() {
    let relay = TestRelay::start_with(|c| c.max_mailbox_size = 100_000).await;
    let store = &relay.ctx.store;
    let (a, b, c2) = (addr("sendera02"), addr("fullbox02"), addr("roomybox2"));
    relay.ctx.auth.login(&b, PASS).await.unwrap();
    relay.ctx.auth.login(&c2, PASS).await.unwrap();
    store
        .append(&b, INBOX, Flags::empty(), now_unix(), &[b'x'; 95_000])
        .unwrap();
    let mut c = smtp_login(&relay, &a).await;
    let (code, text) = send(&mut c, &a, &[&b, &c2], 10_000).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(inbox_sizes(&relay, &c2).len(), 1);
    assert_eq!(inbox_sizes(&relay, &b), vec![95_000]);
    let snap = store.snapshot(&a, INBOX).unwrap().unwrap();
    assert_eq!(snap.messages.len(), 1, "bounce to the sender");
    let bounce = String::from_utf8_lossy(&store.read_body(&snap.messages[0]).unwrap()).into_owned();
    assert!(bounce.contains(&b), "{bounce}");
    assert!(bounce.contains("5.2.2"), "{bounce}");
}

#[tokio::test]
async fn delivery_past_75_percent_trims_oldest_to_70() {
    let relay = TestRelay::start_with(|c| c.max_mailbox_size = 100_000).await;
    let store = &relay.ctx.store;
    let (a, b) = (addr("sendera03"), addr("trimmed03"));
    relay.ctx.auth.login(&b, PASS).await.unwrap();
    let now = now_unix();
    for d in (2..8).rev() {
        store
            .append(&b, INBOX, Flags::SEEN, now - d * DAY, &[b'x'; 10_000])
            .unwrap();
    }
    assert_eq!(store.usage(&b).unwrap(), 60_000);
    let mut c = smtp_login(&relay, &a).await;
    let (code, text) = send(&mut c, &a, &[&b], 18_000).await;
    assert_eq!(code, 250, "{text}");
    let used = store.usage(&b).unwrap();
    assert!(used <= 70_000, "trimmed to 70 %: {used}");
    let snap = store.snapshot(&b, INBOX).unwrap().unwrap();
    let oldest_left = snap.messages.iter().map(|m| m.internal_date).min().unwrap();
    assert_eq!(oldest_left, now - 5 * DAY, "the two oldest went");
    assert_eq!(store.usage(&b).unwrap(), store.usage_scan(&b).unwrap());
}

/// `* QUOTA "" (STORAGE <used KiB> <limit KiB>)` for the current mailbox contents.
fn quota_line(relay: &TestRelay, a: &str) -> String {
    let used: u64 = relay
        .ctx
        .store
        .mailboxes(a)
        .unwrap()
        .iter()
        .flat_map(|n| relay.ctx.store.snapshot(a, n).unwrap().unwrap().messages)
        .map(|m| m.size)
        .sum();
    let limit = relay.ctx.cfg.max_mailbox_size;
    format!(
        "* QUOTA \"\" (STORAGE {} {})",
        used.div_ceil(1024),
        limit.div_ceil(1024)
    )
}

async fn imap(c: &mut LineClient, tag: &str, line: &str) -> Vec<String> {
    c.send(&format!("{tag} {line}")).await;
    c.imap_until(tag).await
}

#[tokio::test]
async fn getquotaroot_matches_the_mailbox_after_deliveries_and_expunge() {
    let relay = TestRelay::start_with(|c| c.max_mailbox_size = 50 * 1024 * 1024).await;
    let (a, b) = (addr("sendera04"), addr("quotaimap"));
    let mut i = LineClient::tls(relay.addr(Service::Imaps), &[]).await;
    i.line().await;
    let r = imap(&mut i, "a1", &format!("LOGIN \"{b}\" \"{PASS}\"")).await;
    assert!(r.last().unwrap().starts_with("a1 OK"), "{r:?}");
    let mut c = smtp_login(&relay, &a).await;
    for n in [5_000, 40_000, 120_000] {
        assert_eq!(send(&mut c, &a, &[&b], n).await.0, 250);
    }
    let r = imap(&mut i, "a2", "GETQUOTAROOT INBOX").await;
    assert_eq!(r[1], quota_line(&relay, &b), "{r:?}");
    assert!(!r[1].contains("STORAGE 0 "), "{r:?}");
    imap(&mut i, "a3", "SELECT INBOX").await;
    let r = imap(&mut i, "a4", "UID STORE 2 +FLAGS (\\Deleted)").await;
    assert!(r.last().unwrap().starts_with("a4 OK"), "{r:?}");
    let r = imap(&mut i, "a5", "EXPUNGE").await;
    assert!(r.last().unwrap().starts_with("a5 OK"), "{r:?}");
    let r = imap(&mut i, "a6", "GETQUOTA \"\"").await;
    assert_eq!(r[0], quota_line(&relay, &b), "{r:?}");
    assert_eq!(inbox_sizes(&relay, &b).len(), 2);
    let store = &relay.ctx.store;
    assert_eq!(store.usage(&b).unwrap(), store.usage_scan(&b).unwrap());
}

#[tokio::test]
async fn inbound_to_a_full_mailbox_gets_552_on_port_25() {
    let relay = TestRelay::start_with(|c| c.max_mailbox_size = 100_000).await;
    let store = &relay.ctx.store;
    let b = addr("fullbox02");
    relay.ctx.auth.login(&b, PASS).await.unwrap();
    store
        .append(&b, INBOX, Flags::empty(), now_unix(), &[b'x'; 95_000])
        .unwrap();
    let mut c = LineClient::plain(relay.addr(Service::Mx)).await;
    assert_eq!(c.smtp_reply().await.0, 220);
    assert_eq!(cmd(&mut c, "EHLO [127.0.0.1]").await.0, 250);
    assert_eq!(cmd(&mut c, "STARTTLS").await.0, 220);
    let mut c = c.upgrade().await;
    assert_eq!(cmd(&mut c, "EHLO [127.0.0.1]").await.0, 250);
    // An IP-literal sender matching the connection needs no DKIM.
    let from = "peer@[127.0.0.1]";
    assert_eq!(cmd(&mut c, &format!("MAIL FROM:<{from}>")).await.0, 250);
    assert_eq!(cmd(&mut c, &format!("RCPT TO:<{b}>")).await.0, 250);
    assert_eq!(cmd(&mut c, "DATA").await.0, 354);
    c.send_raw(&data_of(&pgp_message(from, &b, 20_000, "")))
        .await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(
        (code, text.trim_end()),
        (552, "552 5.2.2 Quota exceeded (mailbox for user is full)")
    );
    assert_eq!(inbox_sizes(&relay, &b), vec![95_000]);
}
