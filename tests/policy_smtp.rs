//! The policy corpus (tests/policy_corpus.rs: real sequoia-encrypted messages and broken
//! variants) sent through the real SMTP listeners: submission on 465 (AUTH) and port 25
//! (STARTTLS, an IP-literal sender equal to the connecting address, so the origin check needs
//! no DKIM). Every case asserts the exact reply line at the exact stage (content rules at the
//! end of DATA), that rejected mail is not stored and that accepted mail is stored cleaned.
//! Plus the per-sender rate limit at RCPT with the real listener.

mod common;
#[path = "policy_corpus.rs"]
mod corpus;

use std::time::Duration;

use chatmail_box::net::Service;
use common::{b64, data_of, LineClient, TestRelay, DOMAIN};
use corpus::*;

const PASS: &str = "secret-password-1";
const ENC_NEEDED: &str = "523 5.7.1 Encryption Needed: Invalid Unencrypted Mail";
const QUEUED: &str = "250 2.0.0 OK: queued";
/// The sender on port 25: an address literal equal to the connecting address.
const LIT_FROM: &str = "x@[127.0.0.1]";
/// A mailer daemon at the connecting address (its report passes inbound only).
const LIT_DAEMON: &str = "MAILER-DAEMON@[127.0.0.1]";

fn addr(local: &str) -> String {
    format!("{local}@{DOMAIN}")
}

async fn cmd(c: &mut LineClient, line: &str) -> (u16, String) {
    c.send(line).await;
    c.smtp_reply().await
}

/// 465, greeting, EHLO, AUTH PLAIN as `login` (the account is created on first use).
async fn submission(relay: &TestRelay, login: &str) -> LineClient {
    let mut c = LineClient::tls(relay.addr(Service::Submissions), &[]).await;
    assert_eq!(c.smtp_reply().await.0, 220);
    assert_eq!(cmd(&mut c, "EHLO [127.0.0.1]").await.0, 250);
    let ir = b64(&format!("\0{login}\0{PASS}"));
    let (code, text) = cmd(&mut c, &format!("AUTH PLAIN {ir}")).await;
    assert_eq!(code, 235, "{text}");
    c
}

/// 25: greeting, EHLO, STARTTLS, EHLO.
async fn mx(relay: &TestRelay) -> LineClient {
    let mut c = LineClient::plain(relay.addr(Service::Mx)).await;
    assert_eq!(c.smtp_reply().await.0, 220);
    assert_eq!(cmd(&mut c, "EHLO mx.example.org").await.0, 250);
    assert_eq!(cmd(&mut c, "STARTTLS").await.0, 220);
    let mut c = c.upgrade().await;
    assert_eq!(cmd(&mut c, "EHLO mx.example.org").await.0, 250);
    c
}

fn inbox(relay: &TestRelay, a: &str) -> Vec<Vec<u8>> {
    let Some(snap) = relay.ctx.store.snapshot(a, "INBOX").unwrap() else {
        return Vec::new();
    };
    snap.messages
        .iter()
        .map(|m| relay.ctx.store.read_body(m).unwrap())
        .collect()
}

/// The header lines of a message (unfolded lines as they are, without CRLF).
fn header_lines(msg: &[u8]) -> Vec<String> {
    let s = String::from_utf8_lossy(msg);
    let head = s.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n").map(str::to_string).collect()
}

fn has_header(msg: &[u8], name: &str) -> bool {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    header_lines(msg)
        .iter()
        .any(|l| l.to_ascii_lowercase().starts_with(&prefix))
}

/// MAIL (250), RCPT (250), DATA (354), then the message; returns the reply line after the
/// final dot. Asserting the earlier stages pins the content rules to the end of DATA.
async fn transaction(c: &mut LineClient, from: &str, to: &str, msg: &[u8]) -> String {
    let (code, text) = cmd(c, &format!("MAIL FROM:<{from}>")).await;
    assert_eq!(code, 250, "MAIL: {text}");
    let (code, text) = cmd(c, &format!("RCPT TO:<{to}>")).await;
    assert_eq!(code, 250, "RCPT: {text}");
    let (code, text) = cmd(c, "DATA").await;
    assert_eq!(code, 354, "DATA: {text}");
    c.send_raw(&data_of(std::str::from_utf8(msg).unwrap()))
        .await;
    let (_, text) = c.smtp_reply().await;
    assert_eq!(text.lines().count(), 1, "{text}");
    text.trim_end().to_string()
}

/// Trace headers a client or a previous hop put in; none of them may be stored.
const TRACE: &str = "Received: from [127.0.0.1] by client.example\r\nDKIM-Signature: v=1; a=rsa-sha256; d=other.example; s=sel; h=from; bh=AAAA; b=AAAA\r\n";

/// Expected outcome: `None` = accepted (250 queued), `Some(line)` = this exact reply.
type Expect = Option<&'static str>;

struct Case {
    name: &'static str,
    build: fn(&str) -> Vec<u8>,
    /// On 465.
    outgoing: Expect,
    /// On 25.
    incoming: Expect,
    /// The sender used on port 25.
    mx_from: &'static str,
}

fn wrap(from: &str, bin: &[u8]) -> Vec<u8> {
    pgp_mime(from, &armor(bin))
}

fn good_pkesk_seipd_v1(from: &str) -> Vec<u8> {
    let k = keys();
    let bin = encrypt(&[&k.v4_a], &[], b"hello");
    assert_eq!(split(&bin)[1].body[0], 1, "SEIPD v1");
    wrap(from, &bin)
}

fn good_seipd_v2(from: &str) -> Vec<u8> {
    let k = keys();
    let bin = encrypt(&[&k.v6], &[], b"hello");
    assert_eq!(split(&bin).last().unwrap().body[0], 2, "SEIPD v2");
    wrap(from, &bin)
}

fn good_skesk_only(from: &str) -> Vec<u8> {
    let bin = encrypt(
        &[],
        &["securejoin/0123456789ABCDEF/secret"],
        b"Secure-Join: vc-request-pubkey",
    );
    let tags: Vec<u8> = split(&bin).iter().map(|p| p.tag).collect();
    assert_eq!(tags, [3, 18]);
    wrap(from, &bin)
}

fn good_several_pkesk(from: &str) -> Vec<u8> {
    let k = keys();
    let bin = encrypt(&[&k.v4_a, &k.v4_b], &[], b"group message");
    let tags: Vec<u8> = split(&bin).iter().map(|p| p.tag).collect();
    assert_eq!(tags, [1, 1, 18]);
    wrap(from, &bin)
}

fn good_legacy_pkesk(from: &str) -> Vec<u8> {
    let k = keys();
    let packets = split(&encrypt(&[&k.v4_a, &k.v4_b], &[], b"hello"));
    let mut bin = Vec::new();
    for p in &packets[..2] {
        bin.extend(legacy_packet(p.tag, &p.body, true));
    }
    bin.extend_from_slice(&packets[2].raw);
    assert_eq!(bin[0], 0x85, "GnuPG's old-format PKESK header");
    wrap(from, &bin)
}

fn good_partial_body(from: &str) -> Vec<u8> {
    let k = keys();
    let packets = split(&encrypt(&[&k.v4_a], &[], &[b'x'; 100_000]));
    let mut bin = packets[0].raw.clone();
    bin.extend(partial_packet(18, &packets[1].body, 8192));
    assert!(split(&bin).last().unwrap().partial);
    wrap(from, &bin)
}

fn good_securejoin(from: &str) -> Vec<u8> {
    securejoin(from, "vc-request", "Secure-Join: vc-request")
}

fn bad_literal(from: &str) -> Vec<u8> {
    wrap(from, &literal(b"Buy now!"))
}

fn bad_compressed(from: &str) -> Vec<u8> {
    wrap(from, &compressed(b"Buy now!"))
}

fn bad_signature(from: &str) -> Vec<u8> {
    wrap(from, &signature(&keys().v4_a, b"Buy now!"))
}

fn bad_trailing_garbage(from: &str) -> Vec<u8> {
    let mut bin = encrypt(&[&keys().v4_a], &[], b"hello");
    bin.extend_from_slice(b"garbage");
    wrap(from, &bin)
}

fn bad_truncated(from: &str) -> Vec<u8> {
    let bin = encrypt(&[&keys().v4_a], &[], b"hello");
    wrap(from, &bin[..bin.len() - 5])
}

fn bad_armor_in_text_plain(from: &str) -> Vec<u8> {
    let armored = armor(&encrypt(&[&keys().v4_a], &[], b"hi"));
    format!(
        "From: <{from}>\r\nTo: <{BOB}>\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{armored}"
    )
    .into_bytes()
}

fn payload() -> String {
    payload_part(
        "application/octet-stream",
        &armor(&encrypt(&[&keys().v4_a], &[], b"hi")),
    )
}

fn bad_three_parts(from: &str) -> Vec<u8> {
    let p = payload();
    pgp_mime_parts(from, &[version_part("Version: 1"), p.clone(), p])
}

fn bad_one_part(from: &str) -> Vec<u8> {
    pgp_mime_parts(from, &[version_part("Version: 1")])
}

fn version_armor_header(from: &str) -> Vec<u8> {
    let bin = encrypt(&[&keys().v4_a], &[], b"hi");
    let opts = ArmorOpts {
        version_header: true,
        ..Default::default()
    };
    let armored = armor_with(&bin, opts).replace("Comment: https://gopenpgp.org\r\n", "");
    assert!(armored.contains("\r\nVersion: GopenPGP"));
    pgp_mime(from, &armored)
}

fn bad_securejoin_other_body(from: &str) -> Vec<u8> {
    securejoin(from, "vc-request", "Hi! Please let me in.")
}

fn bad_mdn(from: &str) -> Vec<u8> {
    mdn(from)
}

fn bad_autocrypt_setup(from: &str) -> Vec<u8> {
    autocrypt_setup_message(from)
}

fn bad_cleartext(from: &str) -> Vec<u8> {
    plain(from)
}

/// A delivery status report with `from` as its author: from a user on 465 it is cleartext; from
/// a mailer daemon on 25 it passes.
fn mailer_daemon(from: &str) -> Vec<u8> {
    String::from_utf8(mailer_daemon_report())
        .unwrap()
        .replace("MAILER-DAEMON@other.example", from)
        .into_bytes()
}

fn cases() -> Vec<Case> {
    let c = |name, build, outgoing, incoming| Case {
        name,
        build,
        outgoing,
        incoming,
        mx_from: LIT_FROM,
    };
    let bad = |name, build| c(name, build, Some(ENC_NEEDED), Some(ENC_NEEDED));
    vec![
        c("pkesk+seipd v1", good_pkesk_seipd_v1, None, None),
        c("seipd v2", good_seipd_v2, None, None),
        c("skesk only", good_skesk_only, None, None),
        c("several pkesk", good_several_pkesk, None, None),
        c("legacy-format pkesk", good_legacy_pkesk, None, None),
        c("partial body lengths", good_partial_body, None, None),
        c("securejoin vc-request", good_securejoin, None, None),
        c(
            "version armor header",
            version_armor_header,
            Some(ENC_NEEDED),
            None,
        ),
        bad("literal data", bad_literal),
        bad("compressed data", bad_compressed),
        bad("signature only", bad_signature),
        bad("trailing garbage", bad_trailing_garbage),
        bad("truncated packet", bad_truncated),
        bad("armor in text/plain", bad_armor_in_text_plain),
        bad("three parts", bad_three_parts),
        bad("one part", bad_one_part),
        bad("securejoin other body", bad_securejoin_other_body),
        bad("mdn", bad_mdn),
        bad("autocrypt setup message", bad_autocrypt_setup),
        bad("cleartext", bad_cleartext),
        Case {
            mx_from: LIT_DAEMON,
            ..c(
                "mailer-daemon report",
                mailer_daemon,
                Some(ENC_NEEDED),
                None,
            )
        },
    ]
}

#[tokio::test]
async fn corpus_through_submission_465() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (addr("alice0001"), addr("bob000001"));
    relay.ctx.auth.login(&bob, PASS).await.unwrap();
    let mut c = submission(&relay, &alice).await;
    let mut stored = 0;
    for case in cases() {
        let raw = (case.build)(&alice);
        // A client-side trace header and a real subject, to see the cleanup.
        let msg = format!("{TRACE}{}", String::from_utf8(raw).unwrap())
            .replacen("Subject: [...]", "Subject: secret subject", 1)
            .into_bytes();
        let reply = transaction(&mut c, &alice, &bob, &msg).await;
        let box_ = inbox(&relay, &bob);
        match case.outgoing {
            Some(want) => {
                assert_eq!(reply, want, "{}", case.name);
                assert_eq!(box_.len(), stored, "{}: rejected but stored", case.name);
            }
            None => {
                assert_eq!(reply, QUEUED, "{}", case.name);
                stored += 1;
                assert_eq!(box_.len(), stored, "{}: not stored", case.name);
                let got = box_.last().unwrap();
                let subjects: Vec<String> = header_lines(got)
                    .into_iter()
                    .filter(|l| l.to_ascii_lowercase().starts_with("subject:"))
                    .collect();
                assert_eq!(subjects, ["Subject: [...]"], "{}", case.name);
                assert!(!has_header(got, "Received"), "{}", case.name);
                assert!(!has_header(got, "DKIM-Signature"), "{}", case.name);
                // The client's address (in the dropped Received line) is stored nowhere.
                let text = String::from_utf8_lossy(got);
                assert!(!text.contains("127.0.0.1"), "{}", case.name);
                // The body is untouched.
                let (sent_body, got_body) = (body_of(&msg), body_of(got));
                assert_eq!(sent_body, got_body, "{}", case.name);
            }
        }
        // The session goes on after a rejection.
        assert_eq!(cmd(&mut c, "NOOP").await.0, 250);
    }
    assert_eq!(stored, 7);
    assert_eq!(cmd(&mut c, "QUIT").await.0, 221);
}

#[tokio::test]
async fn corpus_through_mx_25() {
    let relay = TestRelay::start().await;
    let bob = addr("bob000001");
    relay.ctx.auth.login(&bob, PASS).await.unwrap();
    let mut c = mx(&relay).await;
    let mut stored = 0;
    for case in cases() {
        let from = case.mx_from;
        let msg = format!("{TRACE}{}", String::from_utf8((case.build)(from)).unwrap()).into_bytes();
        let reply = transaction(&mut c, from, &bob, &msg).await;
        let box_ = inbox(&relay, &bob);
        match case.incoming {
            Some(want) => {
                assert_eq!(reply, want, "{}", case.name);
                assert_eq!(box_.len(), stored, "{}: rejected but stored", case.name);
            }
            None => {
                assert_eq!(reply, QUEUED, "{}", case.name);
                stored += 1;
                assert_eq!(box_.len(), stored, "{}: not stored", case.name);
                // Exactly the message minus the trace headers (the subject stays).
                let want = String::from_utf8(msg.clone())
                    .unwrap()
                    .replacen(TRACE, "", 1)
                    .into_bytes();
                assert_eq!(box_.last().unwrap(), &want, "{}", case.name);
            }
        }
        assert_eq!(cmd(&mut c, "NOOP").await.0, 250);
    }
    assert_eq!(stored, 9);
    assert_eq!(cmd(&mut c, "QUIT").await.0, 221);
}

fn body_of(msg: &[u8]) -> Vec<u8> {
    let pos = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header/body separator");
    msg[pos + 4..].to_vec()
}

#[tokio::test]
async fn mx_cleartext_to_local_account_523_and_not_stored() {
    // The simplest inbound case on its own: the origin check passes, the content does not.
    let relay = TestRelay::start().await;
    let bob = addr("bob000001");
    relay.ctx.auth.login(&bob, PASS).await.unwrap();
    let mut c = mx(&relay).await;
    let reply = transaction(&mut c, LIT_FROM, &bob, &plain(LIT_FROM)).await;
    assert_eq!(reply, ENC_NEEDED);
    assert!(inbox(&relay, &bob).is_empty());
    // The same sender with an encrypted message right after is accepted.
    let reply = transaction(&mut c, LIT_FROM, &bob, &chat_message(LIT_FROM)).await;
    assert_eq!(reply, QUEUED);
    assert_eq!(inbox(&relay, &bob).len(), 1);
}

#[tokio::test]
async fn rate_limit_burst_then_450_at_rcpt_then_recovers() {
    let relay = TestRelay::start_with(|c| {
        c.max_user_send_per_minute = 60;
        c.max_user_send_burst_size = 2;
    })
    .await;
    let (alice, bob) = (addr("alice0001"), addr("bob000001"));
    relay.ctx.auth.login(&bob, PASS).await.unwrap();
    let mut c = submission(&relay, &alice).await;
    let msg = chat_message(&alice);
    // The burst passes.
    for _ in 0..2 {
        assert_eq!(transaction(&mut c, &alice, &bob, &msg).await, QUEUED);
    }
    // The next message: MAIL is fine, the first RCPT gets the transient rate-limit reply.
    let (code, text) = cmd(&mut c, &format!("MAIL FROM:<{alice}>")).await;
    assert_eq!(code, 250, "{text}");
    let (code, text) = cmd(&mut c, &format!("RCPT TO:<{bob}>")).await;
    assert_eq!(code, 450, "{text}");
    let line = text.trim_end();
    assert!(line.starts_with("450 4.7.1"), "{line}");
    assert!(
        line.contains(&format!("Too much mail from {alice}")),
        "{line}"
    );
    // No recipient was accepted: DATA is refused, nothing is stored.
    let (code, text) = cmd(&mut c, "DATA").await;
    assert!(
        (500..600).contains(&code),
        "DATA without recipients: {text}"
    );
    assert_eq!(inbox(&relay, &bob).len(), 2);
    assert_eq!(cmd(&mut c, "RSET").await.0, 250);
    // One cell at 60/min is one second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(transaction(&mut c, &alice, &bob, &msg).await, QUEUED);
    assert_eq!(inbox(&relay, &bob).len(), 3);
    // And the cell is used up again.
    assert_eq!(cmd(&mut c, &format!("MAIL FROM:<{alice}>")).await.0, 250);
    let (code, text) = cmd(&mut c, &format!("RCPT TO:<{bob}>")).await;
    assert_eq!(code, 450, "{text}");
    // Another sender is not affected.
    let carol = addr("carol0001");
    let mut c2 = submission(&relay, &carol).await;
    let msg = chat_message(&carol);
    assert_eq!(transaction(&mut c2, &carol, &bob, &msg).await, QUEUED);
}

#[tokio::test]
async fn submission_sender_rules_at_their_stages() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (addr("alice0001"), addr("bob000001"));
    relay.ctx.auth.login(&bob, PASS).await.unwrap();
    let mut c = submission(&relay, &alice).await;
    // Envelope sender not the login: MAIL passes, RCPT gets 553 (as Postfix does).
    let (code, text) = cmd(&mut c, &format!("MAIL FROM:<{bob}>")).await;
    assert_eq!(code, 250, "{text}");
    let (_, text) = cmd(&mut c, &format!("RCPT TO:<{bob}>")).await;
    assert_eq!(
        text.trim_end(),
        "553 5.7.1 Sender address rejected: not owned by user"
    );
    assert_eq!(cmd(&mut c, "RSET").await.0, 250);
    // Header From not the envelope sender: 500 at the end of DATA, even when encrypted.
    let reply = transaction(&mut c, &alice, &bob, &chat_message(&bob)).await;
    assert_eq!(
        reply,
        format!("500 5.7.1 Invalid FROM <{bob}> for <{alice}>")
    );
    assert!(inbox(&relay, &bob).is_empty());
    // A mailer-daemon report written by a user is not exempt: its From does not match.
    let reply = transaction(&mut c, &alice, &bob, &mailer_daemon_report()).await;
    assert_eq!(
        reply,
        format!("500 5.7.1 Invalid FROM <MAILER-DAEMON@other.example> for <{alice}>")
    );
    assert!(inbox(&relay, &bob).is_empty());
    // The same session still sends a good message.
    let reply = transaction(&mut c, &alice, &bob, &chat_message(&alice)).await;
    assert_eq!(reply, QUEUED);
    assert_eq!(inbox(&relay, &bob).len(), 1);
}

#[tokio::test]
async fn mx_null_sender_report_and_from_mismatch_pass() {
    let relay = TestRelay::start().await;
    let bob = addr("bob000001");
    relay.ctx.auth.login(&bob, PASS).await.unwrap();
    let mut c = mx(&relay).await;
    // A bounce as mailer daemons send it: null envelope sender.
    let report = mailer_daemon(LIT_DAEMON);
    assert_eq!(transaction(&mut c, "", &bob, &report).await, QUEUED);
    assert_eq!(inbox(&relay, &bob), vec![report]);
    // Header From and envelope sender differ (forwarding): accepted, not refused.
    let msg = chat_message(LIT_FROM);
    assert_eq!(
        transaction(&mut c, "other@[127.0.0.1]", &bob, &msg).await,
        QUEUED
    );
    assert_eq!(inbox(&relay, &bob).len(), 2);
    // Cleartext with a null sender is still refused.
    let reply = transaction(&mut c, "", &bob, &plain(LIT_FROM)).await;
    assert_eq!(reply, ENC_NEEDED);
    assert_eq!(inbox(&relay, &bob).len(), 2);
}
