//! IMAP push and concurrency over real TLS sockets: IDLE wakes on delivery, several sessions of
//! one user see one consistent mailbox, concurrent first logins.
mod common;

use std::time::Duration;

use chatmail_box::net::Service;
use common::{LineClient, TestRelay};
use tokio::io::AsyncBufReadExt;

const PASS: &str = "correct-horse-battery";

fn addr(local: &str) -> String {
    format!("{local}@{}", common::DOMAIN)
}

struct Imap {
    c: LineClient,
    n: u32,
}

impl Imap {
    async fn login(relay: &TestRelay, user: &str) -> Imap {
        let mut c = LineClient::tls(relay.addr(Service::Imaps), &[]).await;
        assert!(c.line().await.starts_with("* OK"));
        let mut i = Imap { c, n: 0 };
        let r = i.cmd(&format!("LOGIN \"{user}\" \"{PASS}\"")).await;
        assert!(r.last().unwrap().starts_with("T1 OK"), "{r:?}");
        i
    }

    async fn line_within(&mut self, t: Duration) -> Option<String> {
        let mut l = String::new();
        let n = tokio::time::timeout(t, self.c.r.read_line(&mut l))
            .await
            .ok()?
            .ok()?;
        (n > 0).then(|| l.trim_end_matches(['\r', '\n']).to_string())
    }

    async fn until(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self
                .line_within(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("no tagged {tag}; got {out:?}"));
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }

    async fn cmd(&mut self, cmd: &str) -> Vec<String> {
        self.n += 1;
        let tag = format!("T{}", self.n);
        self.c.send(&format!("{tag} {cmd}")).await;
        self.until(&tag).await
    }
}

fn deliver(relay: &TestRelay, to: &str, n: u32) {
    let body = format!("From: bob@x\r\nMessage-ID: <{n}@x>\r\n\r\nhi {n}\r\n");
    let d = relay
        .ctx
        .store
        .deliver(&[to.to_string()], body.as_bytes())
        .unwrap();
    assert_eq!(d.delivered.len(), 1);
}

#[tokio::test]
async fn idle_pushes_exists_on_delivery_and_done_ends_it() {
    let relay = TestRelay::start().await;
    let a = addr("idleuser1");
    let mut i = Imap::login(&relay, &a).await;
    let r = i.cmd("SELECT \"INBOX\"").await;
    assert!(r.iter().any(|l| l == "* 0 EXISTS"), "{r:?}");
    i.c.send("I1 IDLE").await;
    assert_eq!(
        i.line_within(Duration::from_secs(5)).await.unwrap(),
        "+ idling"
    );
    // Nothing arrives while nothing happens.
    assert!(i.line_within(Duration::from_millis(300)).await.is_none());
    let store = relay.ctx.store.clone();
    let to = a.clone();
    tokio::spawn(async move {
        tokio::task::spawn_blocking(move || {
            store
                .deliver(&[to], b"From: bob@x\r\n\r\npushed\r\n")
                .unwrap()
        })
        .await
        .unwrap();
    });
    let started = std::time::Instant::now();
    let l = i.line_within(Duration::from_secs(5)).await;
    assert_eq!(l.as_deref(), Some("* 1 EXISTS"));
    assert!(started.elapsed() < Duration::from_secs(2), "slow push");
    i.c.send("DONE").await;
    let r = i.until("I1").await;
    assert_eq!(r, ["I1 OK IDLE completed"]);
    // The client's follow-up prefetch sees the new message.
    let r = i.cmd("UID FETCH 1:500 (UID RFC822.SIZE)").await;
    assert!(r[0].starts_with("* 1 FETCH (UID 1 RFC822.SIZE "), "{r:?}");
}

#[tokio::test]
async fn idle_reports_expunge_and_flag_changes_from_another_session() {
    let relay = TestRelay::start().await;
    let a = addr("idleuser2");
    let mut watcher = Imap::login(&relay, &a).await;
    let mut actor = Imap::login(&relay, &a).await;
    for n in 1..=3 {
        deliver(&relay, &a, n);
    }
    watcher.cmd("SELECT INBOX").await;
    actor.cmd("SELECT INBOX").await;
    watcher.c.send("I1 IDLE").await;
    assert_eq!(
        watcher.line_within(Duration::from_secs(5)).await.unwrap(),
        "+ idling"
    );
    actor.cmd("UID STORE 3 +FLAGS (\\Seen)").await;
    let l = watcher.line_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(l, "* 3 FETCH (UID 3 FLAGS (\\Seen))");
    actor.cmd("UID STORE 1:2 +FLAGS (\\Deleted)").await;
    // Flag changes for 1 and 2 arrive first.
    for _ in 0..2 {
        let l = watcher.line_within(Duration::from_secs(5)).await.unwrap();
        assert!(l.contains("FLAGS (\\Deleted)"), "{l}");
    }
    actor.cmd("CLOSE").await;
    let l1 = watcher.line_within(Duration::from_secs(5)).await.unwrap();
    let l2 = watcher.line_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!([l1, l2], ["* 2 EXPUNGE", "* 1 EXPUNGE"]);
    watcher.c.send("DONE").await;
    watcher.until("I1").await;
    let r = watcher.cmd("FETCH 1:* (UID)").await;
    assert_eq!(r[0], "* 1 FETCH (UID 3)");
}

#[tokio::test]
async fn two_sessions_see_one_consistent_mailbox() {
    let relay = TestRelay::start().await;
    let a = addr("twosessn1");
    let mut s1 = Imap::login(&relay, &a).await;
    let mut s2 = Imap::login(&relay, &a).await;
    s1.cmd("SELECT INBOX").await;
    s2.cmd("SELECT INBOX").await;
    deliver(&relay, &a, 1);
    deliver(&relay, &a, 2);
    let r = s1.cmd("NOOP").await;
    assert_eq!(r[0], "* 2 EXISTS", "{r:?}");
    let r = s2.cmd("NOOP").await;
    assert_eq!(r[0], "* 2 EXISTS", "{r:?}");
    // s1 deletes message 1; s2 keeps its numbering during a sequence FETCH...
    s1.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    let r = s1.cmd("EXPUNGE").await;
    assert_eq!(r[0], "* 1 EXPUNGE");
    let r = s2.cmd("FETCH 2 (UID)").await;
    assert!(r.iter().any(|l| l == "* 2 FETCH (UID 2)"), "{r:?}");
    assert!(
        !r.iter().any(|l| l.contains("EXPUNGE")),
        "no EXPUNGE during FETCH: {r:?}"
    );
    // ...and learns about the expunge on NOOP.
    let r = s2.cmd("NOOP").await;
    assert!(r.iter().any(|l| l == "* 1 EXPUNGE"), "{r:?}");
    let r = s2.cmd("FETCH 1 (UID FLAGS)").await;
    assert_eq!(r[0], "* 1 FETCH (UID 2 FLAGS ())");
    // Flag changes propagate too.
    s2.cmd("UID STORE 2 +FLAGS.SILENT (\\Seen)").await;
    let r = s1.cmd("NOOP").await;
    assert_eq!(r[0], "* 1 FETCH (UID 2 FLAGS (\\Seen))");
    // A UID command sees messages delivered since the last command.
    deliver(&relay, &a, 3);
    let r = s2.cmd("UID FETCH 3 (UID)").await;
    assert_eq!(r[0], "* 2 EXISTS");
    assert_eq!(r[1], "* 2 FETCH (UID 3)");
}

#[tokio::test]
async fn ten_concurrent_first_logins_all_succeed() {
    let relay = std::sync::Arc::new(TestRelay::start().await);
    let a = addr("racelogin");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let relay = relay.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = LineClient::tls(relay.addr(Service::Imaps), &[]).await;
            c.line().await;
            c.send(&format!("A1 LOGIN \"{a}\" \"{PASS}\"")).await;
            c.imap_until("A1").await.pop().unwrap()
        }));
    }
    for t in tasks {
        let tagged = t.await.unwrap();
        assert!(tagged.starts_with("A1 OK"), "{tagged}");
    }
    assert!(relay.ctx.store.account(&a).unwrap().is_some());
}

/// Delta Chat takes the first FETCH response carrying a UID as the answer: a flag change made by
/// another session must not be announced before the FETCH's own response with the body.
#[tokio::test]
async fn flag_update_never_precedes_the_fetch_body() {
    let relay = TestRelay::start().await;
    let a = addr("flagorder");
    let mut dev1 = Imap::login(&relay, &a).await;
    let mut dev2 = Imap::login(&relay, &a).await;
    dev1.cmd("SELECT INBOX").await;
    dev2.cmd("SELECT INBOX").await;
    deliver(&relay, &a, 1);
    deliver(&relay, &a, 2);
    dev1.cmd("NOOP").await;
    dev2.cmd("NOOP").await;
    dev1.cmd("UID STORE 1:2 +FLAGS (\\Seen)").await;
    // FLAGS asked for: the change is reported inside the FETCH response itself.
    let r = dev2.cmd("UID FETCH 1 (FLAGS BODY.PEEK[])").await;
    assert!(
        r[0].starts_with("* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[] {"),
        "{r:?}"
    );
    let fetches: Vec<&String> = r.iter().filter(|l| l.contains(" FETCH ")).collect();
    assert!(
        fetches
            .iter()
            .any(|l| l.starts_with("* 2 FETCH (UID 2 FLAGS (\\Seen))")),
        "{r:?}"
    );
    // FLAGS not asked for: the update follows the body.
    dev1.cmd("UID STORE 2 +FLAGS (\\Flagged)").await;
    let r = dev2.cmd("UID FETCH 2 (BODY.PEEK[])").await;
    assert!(r[0].starts_with("* 2 FETCH (UID 2 BODY[] {"), "{r:?}");
    let n = r.len();
    assert_eq!(
        r[n - 2],
        "* 2 FETCH (UID 2 FLAGS (\\Seen \\Flagged))",
        "{r:?}"
    );
}
