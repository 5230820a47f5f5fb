//! The daily expiry job with a test clock: retention of old mail, large seen mail, quota
//! trimming (oldest first, 24 h protection) and inactive-account deletion.
mod common;

use chatmail_box::expiry::{run_once, Report};
use chatmail_box::store::{now_unix, Account, Flags, Store, INBOX};
use common::{TestRelay, DOMAIN};

const DAY: i64 = 86400;

fn addr(local: &str) -> String {
    format!("{local}@{DOMAIN}")
}

fn account(store: &Store, local: &str, created: i64, last_login_day: i64) -> String {
    let a = addr(local);
    store
        .put_account(&Account {
            addr: a.clone(),
            password_hash: "$argon2id$x".into(),
            created,
            enforce_e2ee: true,
            last_login_day,
        })
        .unwrap();
    a
}

fn append(store: &Store, a: &str, flags: Flags, date: i64, size: usize) -> u32 {
    store
        .append(a, INBOX, flags, date, &vec![b'x'; size])
        .unwrap()
        .1
}

fn inbox_dates(store: &Store, a: &str) -> Vec<i64> {
    let snap = store.snapshot(a, INBOX).unwrap().unwrap();
    snap.messages.iter().map(|m| m.internal_date).collect()
}

fn blob_files(relay: &TestRelay) -> usize {
    let mut n = 0;
    for d in std::fs::read_dir(relay.dir.path().join("blobs")).unwrap() {
        let d = d.unwrap();
        if d.file_type().unwrap().is_dir() {
            n += std::fs::read_dir(d.path()).unwrap().count();
        }
    }
    n
}

fn assert_usage_consistent(store: &Store, a: &str) {
    assert_eq!(store.usage(a).unwrap(), store.usage_scan(a).unwrap());
}

#[tokio::test]
async fn old_mail_goes_recent_mail_stays() {
    let relay = TestRelay::start().await;
    let (store, cfg) = (&relay.ctx.store, &relay.ctx.cfg);
    let now = now_unix();
    let a = account(store, "old", now - 30 * DAY, now - DAY);
    append(store, &a, Flags::empty(), now - 25 * DAY, 100);
    append(store, &a, Flags::SEEN, now - 21 * DAY, 100);
    append(store, &a, Flags::empty(), now - 19 * DAY, 100);
    append(store, &a, Flags::empty(), now - 3600, 100);
    store.create_mailbox(&a, "DeltaChat").unwrap();
    store
        .append(&a, "DeltaChat", Flags::empty(), now - 22 * DAY, b"y")
        .unwrap();
    let mut changes = store.subscribe(&a);
    changes.borrow_and_update();
    let r = run_once(cfg, store, now).unwrap();
    assert_eq!(r.old, 3, "{r:?}");
    assert!(
        changes.has_changed().unwrap(),
        "IDLE sessions of the owner are told about the expunge"
    );
    assert_eq!(
        inbox_dates(store, &a),
        vec![now - 19 * DAY, now - 3600],
        "only mail younger than 20 days stays"
    );
    assert!(store
        .snapshot(&a, "DeltaChat")
        .unwrap()
        .unwrap()
        .messages
        .is_empty());
    assert_usage_consistent(store, &a);
    assert_eq!(store.usage(&a).unwrap(), 200);
}

#[tokio::test]
async fn large_seen_mail_goes_after_seven_days_unseen_stays() {
    let relay = TestRelay::start().await;
    let (store, cfg) = (&relay.ctx.store, &relay.ctx.cfg);
    let now = now_unix();
    let a = account(store, "large", now - 30 * DAY, now - DAY);
    let big = 250_000;
    append(store, &a, Flags::SEEN, now - 8 * DAY, big); // goes
    let unseen = append(store, &a, Flags::empty(), now - 8 * DAY, big);
    let small = append(store, &a, Flags::SEEN, now - 8 * DAY, 150_000);
    let young = append(store, &a, Flags::SEEN, now - 6 * DAY, big);
    let r = run_once(cfg, store, now).unwrap();
    assert_eq!(
        r,
        Report {
            large: 1,
            ..Report::default()
        }
    );
    let snap = store.snapshot(&a, INBOX).unwrap().unwrap();
    let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
    assert_eq!(uids, vec![unseen, small, young]);
    assert_usage_consistent(store, &a);
}

#[tokio::test]
async fn inactive_account_goes_with_tokens_and_files_active_stays() {
    let relay = TestRelay::start().await;
    let (store, cfg) = (&relay.ctx.store, &relay.ctx.cfg);
    let now = now_unix();
    let stale = account(store, "stale", now - 200 * DAY, now - 91 * DAY);
    let fresh = account(store, "fresh", now - 200 * DAY, now - 89 * DAY);
    let never = account(store, "newbie", now - DAY, 0);
    for a in [&stale, &fresh, &never] {
        store.add_device_token(a, "tok-1", now).unwrap();
        append(store, a, Flags::empty(), now - 3600, 1000);
    }
    store.create_mailbox(&stale, "DeltaChat").unwrap();
    store
        .append(&stale, "DeltaChat", Flags::SEEN, now - 3600, b"z")
        .unwrap();
    assert_eq!(blob_files(&relay), 4);

    let r = run_once(cfg, store, now).unwrap();
    assert_eq!(r.accounts, 1, "{r:?}");
    assert!(store.account(&stale).unwrap().is_none());
    assert!(store.mailboxes(&stale).unwrap().is_empty());
    assert!(store.device_tokens(&stale, now).unwrap().is_empty());
    assert_eq!(store.usage(&stale).unwrap(), 0);
    assert_eq!(blob_files(&relay), 2, "the stale account's bodies are gone");
    assert_eq!(store.blob_count(), 2);
    for a in [&fresh, &never] {
        assert!(store.account(a).unwrap().is_some());
        assert_eq!(store.device_tokens(a, now).unwrap(), vec!["tok-1"]);
        assert_eq!(inbox_dates(store, a).len(), 1);
    }
}

#[tokio::test]
async fn nothing_recent_is_touched() {
    let relay = TestRelay::start_with(|c| c.max_mailbox_size = 10_000_000).await;
    let (store, cfg) = (&relay.ctx.store, &relay.ctx.cfg);
    let now = now_unix();
    let a = account(store, "recent", now - DAY, now - DAY);
    for i in 0..5 {
        append(store, &a, Flags::SEEN, now - 3600 * i, 300_000);
    }
    // Later runs within the protection windows change nothing either.
    for later in [now, now + 6 * DAY, now + 6 * DAY + 20 * 3600] {
        assert_eq!(run_once(cfg, store, later).unwrap(), Report::default());
    }
    assert_eq!(inbox_dates(store, &a).len(), 5);
    assert_eq!(store.usage(&a).unwrap(), 1_500_000);
}

#[tokio::test]
async fn trimming_removes_oldest_first_to_seventy_percent() {
    let relay = TestRelay::start_with(|c| c.max_mailbox_size = 10_000).await;
    let (store, cfg) = (&relay.ctx.store, &relay.ctx.cfg);
    let now = now_unix();
    let a = account(store, "trim", now - 30 * DAY, now - DAY);
    store.create_mailbox(&a, "DeltaChat").unwrap();
    // 8 old messages over two folders, newest to oldest order of insertion, and 2 young ones.
    for d in (3..11).rev() {
        let folder = if d % 2 == 0 { INBOX } else { "DeltaChat" };
        store
            .append(&a, folder, Flags::empty(), now - d * DAY, &[b'x'; 1000])
            .unwrap();
    }
    append(store, &a, Flags::empty(), now - 3600, 1000);
    append(store, &a, Flags::empty(), now - 60, 1000);
    assert_eq!(store.usage(&a).unwrap(), 10_000);
    let r = run_once(cfg, store, now).unwrap();
    assert_eq!(r.trimmed, 3, "{r:?}");
    assert_eq!(store.usage(&a).unwrap(), 7_000);
    assert_usage_consistent(store, &a);
    let mut left: Vec<i64> = store
        .all_messages(&a)
        .unwrap()
        .iter()
        .map(|(_, m)| now - m.internal_date)
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![60, 3600, 3 * DAY, 4 * DAY, 5 * DAY, 6 * DAY, 7 * DAY],
        "the three oldest went"
    );
    assert_eq!(store.quota_trim_counts(), (1, 3));
}

#[tokio::test]
async fn trimming_never_removes_mail_younger_than_a_day() {
    let relay = TestRelay::start_with(|c| c.max_mailbox_size = 10_000).await;
    let store = &relay.ctx.store;
    let now = now_unix();
    let a = account(store, "young", now - DAY, now - DAY);
    append(store, &a, Flags::empty(), now - 2 * DAY, 1000);
    for i in 0..9 {
        append(store, &a, Flags::empty(), now - DAY + 60 + i, 1000);
    }
    assert_eq!(store.trim(&a, 7000, now).unwrap(), 1);
    assert_eq!(store.usage(&a).unwrap(), 9000, "stops at the 24 h line");
    assert_eq!(store.trim(&a, 7000, now).unwrap(), 0);
    // A day later the same messages may go.
    assert_eq!(store.trim(&a, 7000, now + DAY).unwrap(), 2);
    assert_usage_consistent(store, &a);
}
