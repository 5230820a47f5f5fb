//! IMAP over real TLS sockets: login and account creation, STARTTLS, syntax errors, SELECT,
//! the Delta Chat fetch/delete cycle, APPEND literals and limits, METADATA, QUOTA, CONDSTORE,
//! SEARCH, MOVE.
mod common;

use chatmail_box::net::Service;
use chatmail_box::store::{Flags, INBOX};
use common::{b64, LineClient, TestRelay};
use tokio::io::AsyncBufReadExt;

const PASS: &str = "correct-horse-battery";

fn addr(local: &str) -> String {
    format!("{local}@{}", common::DOMAIN)
}

/// A tagged IMAP client on top of the shared line client.
struct Imap {
    c: LineClient,
    n: u32,
}

impl Imap {
    async fn connect(relay: &TestRelay) -> (Imap, String) {
        let mut c = LineClient::tls(relay.addr(Service::Imaps), &[]).await;
        let greeting = c.line().await;
        (Imap { c, n: 0 }, greeting)
    }

    async fn login(relay: &TestRelay, user: &str) -> Imap {
        let (mut i, _) = Imap::connect(relay).await;
        let r = i.cmd(&format!("LOGIN \"{user}\" \"{PASS}\"")).await;
        assert!(ok(&r), "login failed: {r:?}");
        i
    }

    /// One line, `None` at EOF.
    async fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            self.c.r.read_line(&mut l),
        )
        .await
        .expect("timed out waiting for a line")
        .ok()?;
        (n > 0).then(|| l.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Lines up to and including the tagged response for `tag`.
    async fn until(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self
                .line()
                .await
                .unwrap_or_else(|| panic!("EOF before {tag}; got {out:?}"));
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }

    fn tag(&mut self) -> String {
        self.n += 1;
        format!("T{}", self.n)
    }

    async fn cmd(&mut self, cmd: &str) -> Vec<String> {
        let tag = self.tag();
        self.c.send(&format!("{tag} {cmd}")).await;
        self.until(&tag).await
    }
}

fn ok(lines: &[String]) -> bool {
    lines
        .last()
        .is_some_and(|l| l.split(' ').nth(1) == Some("OK"))
}

fn last(lines: &[String]) -> &str {
    lines.last().map(|s| s.as_str()).unwrap_or("")
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

fn deliver(relay: &TestRelay, to: &str, body: &str) -> u32 {
    let d = relay
        .ctx
        .store
        .deliver(&[to.to_string()], body.as_bytes())
        .unwrap();
    assert_eq!(d.delivered.len(), 1, "no account for {to}");
    d.delivered[0].1
}

fn mail(from: &str, id: &str, ctype: &str) -> String {
    format!(
        "From: {from}\r\nTo: x@y\r\nMessage-ID: <{id}@x>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\nContent-Type: {ctype}\r\nChat-Version: 1.0\r\n\r\nhello {id}\r\n"
    )
}

#[tokio::test]
async fn greeting_login_creates_account_and_wrong_password_changes_nothing() {
    let relay = TestRelay::start().await;
    let a = addr("alice0001");
    let (mut i, greeting) = Imap::connect(&relay).await;
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4REV1 "),
        "{greeting}"
    );
    assert!(greeting.ends_with("] chatmail-box ready"), "{greeting}");
    assert!(greeting.contains(" AUTH=PLAIN"), "{greeting}");
    assert!(!greeting.contains("STARTTLS"), "{greeting}");
    let r = i.cmd(&format!("LOGIN \"{a}\" \"{PASS}\"")).await;
    let tagged = last(&r);
    assert!(tagged.starts_with("T1 OK [CAPABILITY IMAP4REV1 "), "{r:?}");
    for cap in [
        "IDLE",
        "MOVE",
        "UIDPLUS",
        "CONDSTORE",
        "QUOTA",
        "METADATA",
        " ID ",
        "ENABLE",
        "LITERAL+",
        "XCHATMAIL",
        "XDELTAPUSH",
    ] {
        assert!(tagged.contains(cap), "{cap} missing in {tagged}");
    }
    let acct = relay
        .ctx
        .store
        .account(&a)
        .unwrap()
        .expect("account created");
    let today = chatmail_box::store::now_unix() / 86400 * 86400;
    assert_eq!(acct.last_login_day, today);
    let r = i.cmd("ID (\"name\" \"Delta Chat\")").await;
    assert_eq!(r[0], "* ID (\"name\" \"chatmail-box\")");
    let r = i.cmd("LOGOUT").await;
    assert!(r[0].starts_with("* BYE"), "{r:?}");

    let (mut j, _) = Imap::connect(&relay).await;
    let r = j.cmd(&format!("LOGIN \"{a}\" \"wrong-password-1\"")).await;
    assert!(
        last(&r).starts_with("T1 NO [AUTHENTICATIONFAILED]"),
        "{r:?}"
    );
    let after = relay.ctx.store.account(&a).unwrap().unwrap();
    assert_eq!(after.password_hash, acct.password_hash);
    let r = j.cmd(&format!("LOGIN \"{a}\" \"{PASS}\"")).await;
    assert!(ok(&r), "{r:?}");
}

#[tokio::test]
async fn authenticate_plain_inline_and_with_continuation() {
    let relay = TestRelay::start().await;
    let a = addr("plainauth");
    let (mut i, _) = Imap::connect(&relay).await;
    let r = i
        .cmd(&format!(
            "AUTHENTICATE PLAIN {}",
            b64(&format!("\0{a}\0{PASS}"))
        ))
        .await;
    assert!(last(&r).starts_with("T1 OK [CAPABILITY "), "{r:?}");

    let (mut j, _) = Imap::connect(&relay).await;
    j.c.send("A1 AUTHENTICATE PLAIN").await;
    assert_eq!(j.line().await.unwrap(), "+ ");
    j.c.send(&b64(&format!("{a}\0{a}\0{PASS}"))).await;
    let r = j.until("A1").await;
    assert!(ok(&r), "{r:?}");

    let (mut k, _) = Imap::connect(&relay).await;
    k.c.send("A1 AUTHENTICATE PLAIN").await;
    assert_eq!(k.line().await.unwrap(), "+ ");
    k.c.send("*").await;
    assert!(k.until("A1").await.last().unwrap().starts_with("A1 BAD"));
}

#[tokio::test]
async fn port_143_requires_starttls_and_drops_pipelined_plaintext() {
    let relay = TestRelay::start().await;
    let a = addr("starttls1");
    let mut c = LineClient::plain(relay.addr(Service::Imap)).await;
    let greeting = c.line().await;
    assert!(greeting.contains("STARTTLS"), "{greeting}");
    assert!(greeting.contains("LOGINDISABLED"), "{greeting}");
    assert!(!greeting.contains("AUTH=PLAIN"), "{greeting}");
    c.send(&format!("A1 LOGIN \"{a}\" \"{PASS}\"")).await;
    let r = c.imap_until("A1").await;
    assert!(last(&r).starts_with("A1 NO [PRIVACYREQUIRED]"), "{r:?}");
    c.send(&format!(
        "A2 AUTHENTICATE PLAIN {}",
        b64(&format!("\0{a}\0{PASS}"))
    ))
    .await;
    let r = c.imap_until("A2").await;
    assert!(last(&r).starts_with("A2 NO"), "{r:?}");
    assert!(relay.ctx.store.account(&a).unwrap().is_none());
    // STARTTLS with an injected command in the same packet.
    c.send_raw(format!("A3 STARTTLS\r\nA4 LOGIN \"{a}\" \"{PASS}\"\r\n").as_bytes())
        .await;
    let r = c.imap_until("A3").await;
    assert!(ok(&r), "{r:?}");
    let c = c.upgrade().await;
    let mut i = Imap { c, n: 10 };
    let r = i.cmd("CAPABILITY").await;
    assert_eq!(r.len(), 2, "injected command answered: {r:?}");
    assert!(
        r[0].starts_with("* CAPABILITY ") && r[0].contains("AUTH=PLAIN"),
        "{r:?}"
    );
    assert!(
        relay.ctx.store.account(&a).unwrap().is_none(),
        "injection logged in"
    );
    let r = i.cmd(&format!("LOGIN \"{a}\" \"{PASS}\"")).await;
    assert!(last(&r).starts_with("T12 OK [CAPABILITY"), "{r:?}");
    let r = i.cmd("STARTTLS").await;
    assert!(last(&r).starts_with("T13 BAD"), "{r:?}");
}

#[tokio::test]
async fn syntax_errors_are_bad_and_too_many_close() {
    let relay = TestRelay::start().await;
    let mut i = Imap::login(&relay, &addr("syntaxerr")).await;
    let r = i.cmd("FROBNICATE now").await;
    assert!(last(&r).starts_with("T2 BAD"), "{r:?}");
    let r = i.cmd("SELECT").await;
    assert!(last(&r).starts_with("T3 BAD"), "{r:?}");
    let r = i.cmd("FETCH 1 (FLAGS)").await;
    assert!(last(&r).starts_with("T4 BAD"), "not selected: {r:?}");
    i.c.send_raw(b"\x00\xff\xfe garbage\r\n").await;
    assert!(i.line().await.unwrap().starts_with("* BAD"));
    let r = i.cmd("NOOP").await;
    assert!(ok(&r), "still usable: {r:?}");
    for _ in 0..30 {
        i.c.send("X BOGUS").await;
    }
    let mut saw_bye = false;
    while let Some(l) = i.line().await {
        saw_bye |= l.starts_with("* BYE");
    }
    assert!(saw_bye, "connection should close with BYE");
}

#[tokio::test]
async fn select_reports_uid_state_and_unknown_mailbox_is_no() {
    let relay = TestRelay::start().await;
    let a = addr("selector1");
    let mut i = Imap::login(&relay, &a).await;
    let r = i.cmd("SELECT \"DeltaChat\"").await;
    assert!(last(&r).starts_with("T2 NO"), "{r:?}");
    let r = i.cmd("EXAMINE \"INBOX.DeltaChat\"").await;
    assert!(last(&r).starts_with("T3 NO"), "{r:?}");
    deliver(&relay, &a, &mail("bob@x", "1", "text/plain"));
    let snap = relay.ctx.store.snapshot(&a, INBOX).unwrap().unwrap();
    let r = i.cmd("SELECT \"INBOX\"").await;
    assert!(
        has(
            &r,
            "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)"
        ),
        "{r:?}"
    );
    assert!(has(&r, "* 1 EXISTS"), "{r:?}");
    assert!(has(&r, "* 0 RECENT"), "{r:?}");
    assert!(
        has(&r, &format!("* OK [UIDVALIDITY {}]", snap.uidvalidity)),
        "{r:?}"
    );
    assert!(has(&r, "* OK [UIDNEXT 2]"), "{r:?}");
    assert!(has(&r, "* OK [PERMANENTFLAGS ("), "{r:?}");
    assert!(has(&r, "* OK [HIGHESTMODSEQ "), "{r:?}");
    assert!(last(&r).starts_with("T4 OK [READ-WRITE]"), "{r:?}");
    let r = i
        .cmd("STATUS \"INBOX\" (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)")
        .await;
    assert!(
        r[0].starts_with(&format!(
            "* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {} UNSEEN 1 HIGHESTMODSEQ ",
            snap.uidvalidity
        )),
        "{r:?}"
    );
    let r = i.cmd("EXAMINE INBOX").await;
    assert!(last(&r).starts_with("T6 OK [READ-ONLY]"), "{r:?}");
    let r = i.cmd("STORE 1 +FLAGS (\\Seen)").await;
    assert!(last(&r).starts_with("T7 NO"), "{r:?}");
}

#[tokio::test]
async fn delta_chat_prefetch_download_delete_cycle() {
    let relay = TestRelay::start().await;
    let a = addr("dcclient1");
    let mut i = Imap::login(&relay, &a).await;
    let m1 = mail(
        "Bob <bob@x>",
        "m1",
        "multipart/encrypted; protocol=\"application/pgp-encrypted\"",
    );
    let m2 = mail("carol@x", "m2", "text/plain");
    deliver(&relay, &a, &m1);
    deliver(&relay, &a, &m2);
    let r = i.cmd("SELECT \"INBOX\"").await;
    assert!(has(&r, "* 2 EXISTS"), "{r:?}");
    let r = i.cmd("UID FETCH 1:500 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE X-MICROSOFT-ORIGINAL-MESSAGE-ID FROM CONTENT-TYPE SECURE-JOIN CHAT-VERSION CHAT-IS-POST-MESSAGE AUTOCRYPT-SETUP-MESSAGE)])").await;
    let hdr1 = "From: Bob <bob@x>\r\nMessage-ID: <m1@x>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"\r\nChat-Version: 1.0\r\n\r\n";
    assert_eq!(
        r[0],
        format!(
            "* 1 FETCH (UID 1 RFC822.SIZE {} BODY[HEADER.FIELDS (MESSAGE-ID DATE X-MICROSOFT-ORIGINAL-MESSAGE-ID FROM CONTENT-TYPE SECURE-JOIN CHAT-VERSION CHAT-IS-POST-MESSAGE AUTOCRYPT-SETUP-MESSAGE)] {{{}}}",
            m1.len(),
            hdr1.len()
        )
    );
    assert_eq!(r[1], "From: Bob <bob@x>");
    assert!(has(&r, "* 2 FETCH (UID 2 RFC822.SIZE "), "{r:?}");
    assert!(ok(&r), "{r:?}");
    // Nothing for UIDs that do not exist.
    let r = i.cmd("UID FETCH 3:500 (UID RFC822.SIZE)").await;
    assert_eq!(r.len(), 1, "{r:?}");
    let r = i.cmd("UID FETCH 1 (FLAGS BODY.PEEK[])").await;
    assert_eq!(
        r[0],
        format!("* 1 FETCH (UID 1 FLAGS () BODY[] {{{}}}", m1.len())
    );
    let joined = r[1..r.len() - 2].join("\r\n") + "\r\n";
    assert_eq!(joined, m1);
    assert_eq!(r[r.len() - 2], ")");
    // BODY[] without PEEK sets \Seen and reports it.
    let r = i.cmd("UID FETCH 2 BODY[]").await;
    assert!(r[0].starts_with("* 2 FETCH (UID 2 BODY[] {"), "{r:?}");
    assert!(has(&r, "FLAGS (\\Seen)"), "{r:?}");
    let r = i.cmd("UID STORE 1 +FLAGS (\\Deleted)").await;
    assert_eq!(r[0], "* 1 FETCH (UID 1 FLAGS (\\Deleted))");
    let r = i.cmd("UID STORE 1 +FLAGS (\\Seen)").await;
    assert_eq!(r[0], "* 1 FETCH (UID 1 FLAGS (\\Seen \\Deleted))");
    let r = i.cmd("CLOSE").await;
    assert!(ok(&r) && r.len() == 1, "CLOSE is silent: {r:?}");
    let snap = relay.ctx.store.snapshot(&a, INBOX).unwrap().unwrap();
    assert_eq!(snap.messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [2]);
    assert!(snap.messages[0].flags.contains(Flags::SEEN));
    let r = i.cmd("SELECT \"INBOX\"").await;
    assert!(
        has(&r, "* 1 EXISTS") && has(&r, "* OK [UIDNEXT 3]"),
        "{r:?}"
    );
    // Sequence ranges in either order, `*`, EXPUNGE responses.
    let r = i.cmd("FETCH *:1 (UID FLAGS)").await;
    assert_eq!(r[0], "* 1 FETCH (UID 2 FLAGS (\\Seen))");
    let r = i.cmd("STORE 1 FLAGS.SILENT (\\Deleted)").await;
    assert_eq!(r.len(), 1, "{r:?}");
    let r = i.cmd("EXPUNGE").await;
    assert_eq!(r[0], "* 1 EXPUNGE");
}

#[tokio::test]
async fn append_with_sync_and_nonsync_literals() {
    let relay = TestRelay::start().await;
    let a = addr("appender1");
    let mut i = Imap::login(&relay, &a).await;
    let body = "Subject: sync\r\n\r\nfirst\r\n";
    i.c.send(&format!("A1 APPEND \"INBOX\" (\\Seen) {{{}}}", body.len()))
        .await;
    let cont = i.line().await.unwrap();
    assert!(cont.starts_with("+ "), "{cont}");
    i.c.send(body).await;
    let r = i.until("A1").await;
    let validity = relay
        .ctx
        .store
        .snapshot(&a, INBOX)
        .unwrap()
        .unwrap()
        .uidvalidity;
    assert!(
        last(&r).starts_with(&format!("A1 OK [APPENDUID {validity} 1]")),
        "{r:?}"
    );
    let body2 = "Subject: nonsync\r\n\r\nsecond\r\n";
    i.c.send_raw(format!("A2 APPEND INBOX {{{}+}}\r\n{body2}\r\n", body2.len()).as_bytes())
        .await;
    let r = i.until("A2").await;
    assert_eq!(r.len(), 1, "no continuation for LITERAL+: {r:?}");
    assert!(
        last(&r).starts_with(&format!("A2 OK [APPENDUID {validity} 2]")),
        "{r:?}"
    );
    let snap = relay.ctx.store.snapshot(&a, INBOX).unwrap().unwrap();
    assert!(snap.messages[0].flags.contains(Flags::SEEN));
    assert!(!snap.messages[1].flags.contains(Flags::SEEN));
    assert_eq!(
        relay.ctx.store.read_body(&snap.messages[1]).unwrap(),
        body2.as_bytes()
    );
    let r = i.cmd("APPEND \"NoSuchBox\" {1+}\r\nx").await;
    assert!(last(&r).contains("NO [TRYCREATE]"), "{r:?}");
}

#[tokio::test]
async fn oversized_literals_are_refused() {
    let relay = TestRelay::start_with(|c| c.max_message_size = 1000).await;
    let a = addr("toobig001");
    let mut i = Imap::login(&relay, &a).await;
    i.c.send("A1 APPEND INBOX {5000}").await;
    let r = i.until("A1").await;
    assert!(last(&r).starts_with("A1 NO [TOOBIG]"), "{r:?}");
    let r = i.cmd("NOOP").await;
    assert!(ok(&r), "connection survives a refused sync literal: {r:?}");
    assert!(relay
        .ctx
        .store
        .snapshot(&a, INBOX)
        .unwrap()
        .unwrap()
        .messages
        .is_empty());
    // A non-synchronizing literal is already on its way: refuse and close.
    i.c.send_raw(b"A2 APPEND INBOX {5000+}\r\n").await;
    i.c.send_raw(&[b'x'; 5000]).await;
    let mut lines = Vec::new();
    while let Some(l) = i.line().await {
        lines.push(l);
    }
    assert!(
        has(&lines, "A2 BAD [TOOBIG]") && has(&lines, "* BYE"),
        "{lines:?}"
    );
    assert!(relay
        .ctx
        .store
        .snapshot(&a, INBOX)
        .unwrap()
        .unwrap()
        .messages
        .is_empty());
}

#[tokio::test]
async fn metadata_device_tokens_and_server_keys() {
    let relay = TestRelay::start_with(|c| c.privacy_mail = "privacy@example.org".into()).await;
    let a = addr("metadata1");
    let mut i = Imap::login(&relay, &a).await;
    let r = i.cmd("GETMETADATA \"INBOX\" (/private/devicetoken)").await;
    assert_eq!(r[0], "* METADATA INBOX (/private/devicetoken NIL)");
    let r = i
        .cmd("SETMETADATA \"INBOX\" (/private/devicetoken \"1111\")")
        .await;
    assert_eq!(last(&r), "T3 OK Setmetadata completed");
    i.c.send_raw(b"A1 SETMETADATA \"INBOX\" (/private/devicetoken {4+}\r\n2222)\r\n")
        .await;
    let r = i.until("A1").await;
    assert_eq!(last(&r), "A1 OK Setmetadata completed");
    let r = i.cmd("GETMETADATA \"INBOX\" (/private/devicetoken)").await;
    assert_eq!(
        r[0],
        "* METADATA INBOX (/private/devicetoken \"1111 2222\")"
    );
    assert_eq!(last(&r), "T4 OK Getmetadata completed");
    assert_eq!(
        relay
            .ctx
            .store
            .device_tokens(&a, chatmail_box::store::now_unix())
            .unwrap(),
        ["1111", "2222"]
    );
    let r = i
        .cmd("SETMETADATA \"INBOX\" (/private/comment \"x\")")
        .await;
    assert!(last(&r).starts_with("T5 NO"), "{r:?}");
    let r = i.cmd("SETMETADATA \"\" (/shared/comment \"x\")").await;
    assert!(last(&r).starts_with("T6 NO"), "{r:?}");
    let r = i.cmd("GETMETADATA \"\" (/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay /shared/vendor/deltachat/turn /shared/vendor/deltachat/maxsmtprecipients /shared/vendor/deltachat/appversions)").await;
    assert_eq!(
        r[0],
        "* METADATA \"\" (/shared/comment NIL /shared/admin \"mailto:privacy@example.org\" /shared/vendor/deltachat/irohrelay NIL /shared/vendor/deltachat/turn NIL /shared/vendor/deltachat/maxsmtprecipients \"1000\" /shared/vendor/deltachat/appversions \"{\\\"clients\\\":[]}\")"
    );
    assert!(ok(&r), "{r:?}");
}

#[tokio::test]
async fn quota_reports_usage_in_kib() {
    let relay = TestRelay::start_with(|c| c.max_mailbox_size = 100 * 1024 * 1024).await;
    let a = addr("quotauser");
    let mut i = Imap::login(&relay, &a).await;
    deliver(&relay, &a, &"x".repeat(3000));
    let r = i.cmd("GETQUOTAROOT \"INBOX\"").await;
    assert_eq!(r[0], "* QUOTAROOT INBOX \"\"");
    assert_eq!(r[1], "* QUOTA \"\" (STORAGE 3 102400)");
    assert!(ok(&r), "{r:?}");
    let r = i.cmd("GETQUOTA \"\"").await;
    assert_eq!(r[0], "* QUOTA \"\" (STORAGE 3 102400)");
    let r = i.cmd("GETQUOTAROOT \"Nope\"").await;
    assert!(last(&r).contains(" NO "), "{r:?}");
}

#[tokio::test]
async fn condstore_select_and_changedsince() {
    let relay = TestRelay::start().await;
    let a = addr("condstore");
    let mut i = Imap::login(&relay, &a).await;
    for n in 0..3 {
        deliver(&relay, &a, &mail("bob@x", &n.to_string(), "text/plain"));
    }
    let r = i.cmd("SELECT \"INBOX\" (CONDSTORE)").await;
    let hms: u64 = r
        .iter()
        .find_map(|l| l.strip_prefix("* OK [HIGHESTMODSEQ "))
        .and_then(|l| l.split(']').next())
        .expect("HIGHESTMODSEQ")
        .parse()
        .unwrap();
    let r = i.cmd("UID STORE 2 +FLAGS (\\Seen)").await;
    assert!(
        r[0].starts_with("* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ ("),
        "{r:?}"
    );
    let r = i
        .cmd(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})"))
        .await;
    assert_eq!(r.len(), 2, "only the changed message: {r:?}");
    assert_eq!(
        r[0],
        format!("* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ ({}))", hms + 1)
    );
    // UNCHANGEDSINCE refuses stale updates with MODIFIED.
    let r = i
        .cmd(&format!(
            "UID STORE 2 (UNCHANGEDSINCE {hms}) +FLAGS (\\Flagged)"
        ))
        .await;
    assert!(last(&r).contains("OK [MODIFIED 2]"), "{r:?}");
    let r = i.cmd("UID FETCH 2 (MODSEQ)").await;
    assert_eq!(r[0], format!("* 2 FETCH (UID 2 MODSEQ ({}))", hms + 1));
}

#[tokio::test]
async fn search_by_from_flags_uid_and_header() {
    let relay = TestRelay::start().await;
    let a = addr("searcher1");
    let mut i = Imap::login(&relay, &a).await;
    deliver(&relay, &a, &mail("Alice <alice@x.test>", "1", "text/plain"));
    deliver(&relay, &a, &mail("bob@y.test", "2", "text/plain"));
    deliver(&relay, &a, &mail("ALICE@x.test", "3", "text/plain"));
    i.cmd("SELECT INBOX").await;
    i.cmd("UID STORE 3 +FLAGS (\\Seen)").await;
    let r = i.cmd("UID SEARCH FROM \"alice@x.test\"").await;
    assert_eq!(r[0], "* SEARCH 1 3");
    let r = i.cmd("UID SEARCH ALL").await;
    assert_eq!(r[0], "* SEARCH 1 2 3");
    let r = i.cmd("SEARCH UNSEEN").await;
    assert_eq!(r[0], "* SEARCH 1 2");
    let r = i.cmd("UID SEARCH UID 2:* SEEN").await;
    assert_eq!(r[0], "* SEARCH 3");
    let r = i.cmd("SEARCH HEADER Message-ID \"<2@x>\"").await;
    assert_eq!(r[0], "* SEARCH 2");
    let r = i.cmd("SEARCH OR FROM bob DELETED").await;
    assert_eq!(r[0], "* SEARCH 2");
    let r = i.cmd("SEARCH SENTON 1-Jan-2026").await;
    assert!(last(&r).contains(" BAD "), "{r:?}");
}

#[tokio::test]
async fn move_list_create_examine() {
    let relay = TestRelay::start().await;
    let a = addr("mover0001");
    let mut i = Imap::login(&relay, &a).await;
    deliver(&relay, &a, &mail("bob@x", "1", "text/plain"));
    deliver(&relay, &a, &mail("bob@x", "2", "text/plain"));
    let r = i.cmd("CREATE \"DeltaChat\"").await;
    assert!(ok(&r), "{r:?}");
    let r = i.cmd("CREATE \"DeltaChat\"").await;
    assert!(last(&r).contains("NO [ALREADYEXISTS]"), "{r:?}");
    let r = i.cmd("LIST \"\" *").await;
    assert_eq!(r[0], "* LIST (\\HasNoChildren) \".\" INBOX");
    assert_eq!(r[1], "* LIST (\\HasNoChildren) \".\" DeltaChat");
    let r = i.cmd("LIST \"\" \"\"").await;
    assert_eq!(r[0], "* LIST (\\Noselect) \".\" \"\"");
    i.cmd("SELECT INBOX").await;
    let dc = relay.ctx.store.snapshot(&a, "DeltaChat").unwrap().unwrap();
    let r = i.cmd("UID MOVE 1 \"DeltaChat\"").await;
    assert_eq!(r[0], format!("* OK [COPYUID {} 1 1] Moved", dc.uidvalidity));
    assert_eq!(r[1], "* 1 EXPUNGE");
    assert!(ok(&r), "{r:?}");
    let r = i.cmd("UID COPY 2 \"DeltaChat\"").await;
    assert!(
        last(&r).contains(&format!("OK [COPYUID {} 2 2]", dc.uidvalidity)),
        "{r:?}"
    );
    let r = i.cmd("EXAMINE \"DeltaChat\"").await;
    assert!(has(&r, "* 2 EXISTS"), "{r:?}");
    assert!(last(&r).contains("[READ-ONLY]"), "{r:?}");
    let r = i.cmd("DELETE \"DeltaChat\"").await;
    assert!(ok(&r), "{r:?}");
    let r = i.cmd("DELETE \"INBOX\"").await;
    assert!(last(&r).contains(" NO "), "{r:?}");
}

#[tokio::test]
async fn command_rate_and_line_length_limits() {
    let relay = TestRelay::start_with(|c| {
        c.imap_commands_per_second = 5;
        c.max_line_length = 1024;
    })
    .await;
    let mut i = Imap::login(&relay, &addr("limited01")).await;
    let started = std::time::Instant::now();
    for _ in 0..12 {
        let r = i.cmd("NOOP").await;
        assert!(ok(&r), "{r:?}");
    }
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1500),
        "13 commands at 5/s took only {:?}",
        started.elapsed()
    );
    i.c.send(&format!("A1 NOOP {}", "x".repeat(5000))).await;
    let mut lines = Vec::new();
    while let Some(l) = i.line().await {
        lines.push(l);
    }
    assert!(has(&lines, "* BYE"), "{lines:?}");
}
