//! Submission and inbound decisions of the policy: exact reply lines per stage, exceptions,
//! sender rules, limits, the rate limiter and the counters.

#[path = "policy_corpus.rs"]
mod corpus;

use std::sync::Arc;
use std::time::Duration;

use chatmail_box::config::Config;
use chatmail_box::policy::{
    self, check_envelope_sender, check_inbound, check_recipient_count, check_sender_login,
    check_size, check_submission, is_mailer_daemon_report, is_securejoin, Accepted, Envelope,
    MailClass, Policy, PolicyStats, RateLimiter, Verdict,
};
use corpus::*;
use governor::clock::FakeRelativeClock;

const ENCRYPTION_NEEDED: &str = "523 5.7.1 Encryption Needed: Invalid Unencrypted Mail";

fn cfg() -> Config {
    Config::default()
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn submit(sender: &str, msg: &[u8], stats: &PolicyStats) -> Verdict {
    let r = rcpts(&[BOB]);
    let env = Envelope { sender, rcpts: &r };
    check_submission(&env, msg, &cfg(), stats)
}

fn inbound(sender: &str, to: &[&str], msg: &[u8], enforce: bool, stats: &PolicyStats) -> Verdict {
    let r = rcpts(to);
    let env = Envelope { sender, rcpts: &r };
    check_inbound(&env, msg, &cfg(), stats, &|_| enforce)
}

fn accepted(v: Verdict) -> Accepted {
    match v {
        Verdict::Accept(a) => a,
        Verdict::Reject(r) => panic!("rejected: {r}"),
    }
}

fn rejected(v: Verdict) -> String {
    match v {
        Verdict::Reject(r) => r.line().to_string(),
        Verdict::Accept(a) => panic!("accepted as {:?}", a.class),
    }
}

// ---- submission ----

#[test]
fn submission_encrypted_accepted_and_cleaned() {
    let stats = PolicyStats::new();
    let msg = chat_message(ALICE);
    let mut with_trace = b"Received: from [192.0.2.7] by relay\r\nUser-Agent: x\r\n".to_vec();
    with_trace.extend_from_slice(&msg);
    let a = accepted(submit(ALICE, &with_trace, &stats));
    assert_eq!(a.class, MailClass::Encrypted);
    assert!(!a.null_sender);
    assert_eq!(a.message, msg, "trace fields dropped, rest byte-exact");
    assert!(!String::from_utf8_lossy(&a.message).contains("192.0.2.7"));
    assert_eq!(stats.get("filtered_outgoing_mail_count"), Some(1));
    assert_eq!(stats.get("outgoing_encrypted_mail_count"), Some(1));
    assert_eq!(stats.get("outgoing_unencrypted_mail_count"), Some(0));
}

#[test]
fn submission_cleartext_gets_523() {
    let stats = PolicyStats::new();
    for msg in [
        plain(ALICE),
        mdn(ALICE),
        autocrypt_setup_message(ALICE),
        securejoin(ALICE, "vc-request", "Buy viagra!"),
    ] {
        let v = submit(ALICE, &msg, &stats);
        let r = v.reply().unwrap().clone();
        assert_eq!(r.line(), ENCRYPTION_NEEDED);
        assert_eq!(r.code(), 523);
        assert_eq!(r.enhanced(), Some("5.7.1"));
        assert!(r.text().to_lowercase().contains("invalid unencrypted mail"));
    }
    assert_eq!(stats.get("rejected_unencrypted_mail_count"), Some(4));
    assert_eq!(stats.get("outgoing_unencrypted_mail_count"), Some(4));
    assert_eq!(stats.get("filtered_outgoing_mail_count"), Some(4));
}

#[test]
fn submission_mailer_daemon_exception_is_inbound_only() {
    let stats = PolicyStats::new();
    let msg = String::from_utf8(mailer_daemon_report())
        .unwrap()
        .replace("MAILER-DAEMON@other.example", ALICE)
        .into_bytes();
    assert_eq!(rejected(submit(ALICE, &msg, &stats)), ENCRYPTION_NEEDED);
}

#[test]
fn securejoin_requests_pass_both_ways() {
    let stats = PolicyStats::new();
    for step in ["vc-request", "vg-request"] {
        let msg = securejoin(ALICE, step, &format!("Secure-Join: {step}"));
        assert!(is_securejoin(&msg));
        let a = accepted(submit(ALICE, &msg, &stats));
        assert_eq!(a.class, MailClass::SecureJoin);
        // Subject replaced, body intact.
        let text = String::from_utf8(a.message).unwrap();
        assert!(text.contains("\r\nSubject: [...]\r\n"));
        assert!(text.contains(&format!("\r\n\r\nSecure-Join: {step}\r\n--sj--")));
        let a = accepted(inbound(ALICE, &[BOB], &msg, true, &stats));
        assert_eq!(a.class, MailClass::SecureJoin);
    }
    // Body case and surrounding blanks do not matter.
    assert!(is_securejoin(&securejoin(
        ALICE,
        "vc-request",
        "  SECURE-JOIN: VC-REQUEST \r\n"
    )));
}

#[test]
fn securejoin_lookalikes_fail() {
    let cases = [
        securejoin(ALICE, "vc-request", "Buy viagra!"),
        securejoin(ALICE, "vc-request", "Secure-Join: vg-request"),
        securejoin(ALICE, "vc-auth", "Secure-Join: vc-auth"),
        securejoin(ALICE, "vc-request-pubkey", "Secure-Join: vc-request-pubkey"),
        securejoin(ALICE, "VC-REQUEST", "Secure-Join: vc-request"),
        // Two parts.
        String::from_utf8(securejoin(ALICE, "vc-request", "Secure-Join: vc-request"))
            .unwrap()
            .replace(
                "--sj--",
                "--sj\r\nContent-Type: text/plain\r\n\r\nBuy viagra!\r\n--sj--",
            )
            .into_bytes(),
        // Not multipart: a single text/plain body.
        format!("From: <{ALICE}>\r\nSecure-Join: vc-request\r\nContent-Type: text/plain\r\n\r\nSecure-Join: vc-request\r\n").into_bytes(),
        // The part is text/html.
        String::from_utf8(securejoin(ALICE, "vc-request", "Secure-Join: vc-request"))
            .unwrap()
            .replace("text/plain", "text/html")
            .into_bytes(),
    ];
    let stats = PolicyStats::new();
    for (i, msg) in cases.iter().enumerate() {
        assert!(!is_securejoin(msg), "case {i}");
        assert_eq!(
            rejected(submit(ALICE, msg, &stats)),
            ENCRYPTION_NEEDED,
            "case {i}"
        );
    }
}

#[test]
fn header_from_must_match_envelope() {
    let stats = PolicyStats::new();
    let msg = chat_message(ALICE);
    // Case-insensitive match passes.
    accepted(submit("Alice@Chat.Example", &msg, &stats));
    assert_eq!(
        rejected(submit(BOB, &msg, &stats)),
        format!("500 5.7.1 Invalid FROM <{ALICE}> for <{BOB}>")
    );
    // The first address of the first From header counts.
    let two_from = [format!("From: <{BOB}>\r\n").as_bytes(), &msg[..]].concat();
    assert_eq!(
        rejected(submit(ALICE, &two_from, &stats)),
        format!("500 5.7.1 Invalid FROM <{BOB}> for <{ALICE}>")
    );
    let list = String::from_utf8(msg.clone()).unwrap().replace(
        &format!("From: <{ALICE}>"),
        &format!("From: Bob <{BOB}>, <{ALICE}>"),
    );
    assert!(rejected(submit(ALICE, list.as_bytes(), &stats))
        .starts_with("500 5.7.1 Invalid FROM <bob@"));
    // Missing and unparseable From.
    let no_from = String::from_utf8(msg.clone())
        .unwrap()
        .replace(&format!("From: <{ALICE}>\r\n"), "");
    assert_eq!(
        rejected(submit(ALICE, no_from.as_bytes(), &stats)),
        "500 5.7.1 Invalid FROM header: missing From header"
    );
    let bad_from = String::from_utf8(msg)
        .unwrap()
        .replace(&format!("From: <{ALICE}>"), "From: nobody");
    assert!(
        rejected(submit(ALICE, bad_from.as_bytes(), &stats)).starts_with("500 5.7.1 Invalid FROM ")
    );
    // Header injection in the echoed value is neutralised.
    let r = rejected(submit("x@y\r\n250 ok", &chat_message(ALICE), &stats));
    assert!(!r.contains('\r') && !r.contains('\n'), "{r:?}");
    // Sender rejections happen before the encryption check is counted.
    assert_eq!(stats.get("filtered_outgoing_mail_count"), Some(1));
}

#[test]
fn unparseable_and_oversized() {
    let stats = PolicyStats::new();
    assert_eq!(
        rejected(submit(ALICE, b"", &stats)),
        "500 5.6.0 Failed to parse message: no header found"
    );
    let mut small = cfg();
    small.max_message_size = 1024;
    let r = rcpts(&[BOB]);
    let env = Envelope {
        sender: ALICE,
        rcpts: &r,
    };
    let v = check_submission(&env, &chat_message(ALICE), &small, &stats);
    assert_eq!(rejected(v), "552 5.3.4 Message exceeds maximum size");
    let v = check_inbound(&env, &chat_message(ALICE), &small, &stats, &|_| true);
    assert_eq!(rejected(v), "552 5.3.4 Message exceeds maximum size");
}

// ---- stage rules ----

#[test]
fn envelope_and_login_rules() {
    assert!(check_envelope_sender(ALICE).is_ok());
    for bad in ["", "alice", "a@b@c", "@@"] {
        let r = check_envelope_sender(bad).unwrap_err();
        assert_eq!(r.line(), format!("500 5.1.7 Invalid from address <{bad}>"));
    }
    assert!(check_sender_login(ALICE, ALICE).is_ok());
    let r = check_sender_login(ALICE, BOB).unwrap_err();
    assert_eq!(r.code(), 553);
    assert_eq!(
        r.line(),
        "553 5.7.1 Sender address rejected: not owned by user"
    );
}

#[test]
fn recipient_and_size_limits() {
    assert!(check_recipient_count(0).is_ok());
    assert!(check_recipient_count(999).is_ok());
    let r = check_recipient_count(1000).unwrap_err();
    assert_eq!(r.line(), "452 4.5.3 Error: too many recipients");
    assert_eq!(policy::MAX_RECIPIENTS, 1000);
    assert!(check_size(31_457_280, 31_457_280).is_ok());
    assert_eq!(
        check_size(31_457_281, 31_457_280).unwrap_err().line(),
        "552 5.3.4 Message exceeds maximum size"
    );
}

#[test]
fn rate_limit_burst_then_450_then_recovers() {
    let clock = FakeRelativeClock::default();
    let rl = RateLimiter::with_clock(60, 10, clock.clone());
    for i in 0..10 {
        assert!(rl.check(ALICE).is_ok(), "message {i} of the burst");
    }
    let r = rl.check(ALICE).unwrap_err();
    assert_eq!(r.code(), 450);
    assert_eq!(r.enhanced(), Some("4.7.1"));
    assert!(r.is_transient());
    assert!(
        r.line().starts_with(&format!(
            "450 4.7.1: Too much mail from {ALICE}, rate limited until: 20"
        )),
        "{r}"
    );
    // Keys are case-insensitive; another sender is independent.
    assert!(rl.check(&ALICE.to_uppercase()).is_err());
    assert!(rl.check(BOB).is_ok());
    // One message per second comes back (60/min).
    clock.advance(Duration::from_millis(1000));
    assert!(rl.check(ALICE).is_ok());
    assert!(rl.check(ALICE).is_err());
    // After a minute of silence the whole burst is available again.
    clock.advance(Duration::from_secs(60));
    for _ in 0..10 {
        assert!(rl.check(ALICE).is_ok());
    }
    assert!(rl.check(ALICE).is_err());
}

#[test]
fn rate_limit_keys_expire() {
    let clock = FakeRelativeClock::default();
    let rl = RateLimiter::with_clock(60, 10, clock.clone());
    for i in 0..5000 {
        rl.check(&format!("user{i}@chat.example")).unwrap();
    }
    assert!(!rl.is_empty());
    clock.advance(Duration::from_secs(120));
    rl.gc();
    assert_eq!(rl.len(), 0);
    assert!(rl.is_empty());
    // Garbage collection also runs from check() itself.
    for i in 0..5000 {
        rl.check(&format!("other{i}@chat.example")).unwrap();
        clock.advance(Duration::from_millis(100));
    }
    assert!(rl.len() < 2000, "{} keys kept", rl.len());
}

#[test]
fn policy_rcpt_stage() {
    let mut c = cfg();
    c.max_user_send_per_minute = 60;
    c.max_user_send_burst_size = 3;
    let p = Policy::new(Arc::new(c));
    // Only the first RCPT of a transaction counts against the rate limit.
    for _ in 0..3 {
        p.check_rcpt(ALICE, 0).unwrap();
        for n in 1..50 {
            p.check_rcpt(ALICE, n).unwrap();
        }
    }
    let r = p.check_rcpt(ALICE, 0).unwrap_err();
    assert_eq!(r.code(), 450);
    assert_eq!(p.check_rcpt(BOB, 1000).unwrap_err().code(), 452);
    assert!(p.check_size(100).is_ok());
    assert_eq!(p.check_size(u64::MAX).unwrap_err().code(), 552);
    // The facade counts into its own stats.
    let r = rcpts(&[BOB]);
    let env = Envelope {
        sender: ALICE,
        rcpts: &r,
    };
    accepted(p.check_submission(&env, &chat_message(ALICE)));
    assert_eq!(p.stats.get("outgoing_encrypted_mail_count"), Some(1));
    accepted(p.check_inbound(&env, &chat_message(ALICE), &|_| true));
    assert_eq!(p.stats.get("incoming_encrypted_mail_count"), Some(1));
}

// ---- inbound ----

#[test]
fn inbound_encrypted_accepted_and_cleaned() {
    let stats = PolicyStats::new();
    let msg = chat_message("carol@other.example");
    let mut traced = b"DKIM-Signature: v=1; a=rsa-sha256;\r\n b=abc\r\nAuthentication-Results: x\r\nReceived: from a\r\n\tby b\r\n".to_vec();
    traced.extend_from_slice(&msg);
    let a = accepted(inbound(
        "carol@other.example",
        &[ALICE],
        &traced,
        true,
        &stats,
    ));
    assert_eq!(a.class, MailClass::Encrypted);
    assert!(!a.null_sender);
    assert_eq!(a.message, msg);
    assert_eq!(stats.get("filtered_incoming_mail_count"), Some(1));
    assert_eq!(stats.get("incoming_encrypted_mail_count"), Some(1));
}

#[test]
fn inbound_version_header_tolerated() {
    let stats = PolicyStats::new();
    let k = keys();
    let bin = encrypt(&[&k.v4_a], &[], b"from proton");
    let armored = armor_with(
        &bin,
        ArmorOpts {
            version_header: true,
            ..Default::default()
        },
    )
    .replace("Comment: https://gopenpgp.org\r\n", "");
    let msg = pgp_mime("p@proton.example", &armored);
    accepted(inbound("p@proton.example", &[ALICE], &msg, true, &stats));
    let out = pgp_mime(ALICE, &armored);
    assert_eq!(rejected(submit(ALICE, &out, &stats)), ENCRYPTION_NEEDED);
}

#[test]
fn inbound_cleartext_rules() {
    let stats = PolicyStats::new();
    // To an account that enforces E2EE: 523.
    assert_eq!(
        rejected(inbound(
            "carol@other.example",
            &[ALICE],
            &plain("carol@other.example"),
            true,
            &stats
        )),
        ENCRYPTION_NEEDED
    );
    // A read receipt is not a mailer-daemon report.
    assert_eq!(
        rejected(inbound(
            "carol@other.example",
            &[ALICE],
            &mdn("carol@other.example"),
            true,
            &stats
        )),
        ENCRYPTION_NEEDED
    );
    // Legacy accounts (no enforcement) get cleartext.
    let a = accepted(inbound(
        "carol@other.example",
        &[ALICE],
        &plain("carol@other.example"),
        false,
        &stats,
    ));
    assert_eq!(a.class, MailClass::Cleartext);
    // One enforcing recipient is enough to reject.
    let r = rcpts(&[ALICE, BOB]);
    let env = Envelope {
        sender: "carol@other.example",
        rcpts: &r,
    };
    let v = check_inbound(&env, &plain("carol@other.example"), &cfg(), &stats, &|r| {
        r == BOB
    });
    assert_eq!(rejected(v), ENCRYPTION_NEEDED);
    // An invalid recipient address counts as enforcing.
    let r = rcpts(&["not-an-address"]);
    let env = Envelope {
        sender: "carol@other.example",
        rcpts: &r,
    };
    let v = check_inbound(&env, &plain("carol@other.example"), &cfg(), &stats, &|_| {
        false
    });
    assert_eq!(rejected(v), ENCRYPTION_NEEDED);
    assert_eq!(stats.get("rejected_unencrypted_mail_count"), Some(4));
    assert_eq!(stats.get("incoming_unencrypted_mail_count"), Some(5));
}

#[test]
fn inbound_mailer_daemon_passes() {
    let stats = PolicyStats::new();
    let msg = mailer_daemon_report();
    assert!(is_mailer_daemon_report(&msg));
    let a = accepted(inbound("", &[ALICE], &msg, true, &stats));
    assert_eq!(a.class, MailClass::MailerDaemon);
    assert_eq!(stats.get("incoming_mailer_daemon_mail_count"), Some(1));
    // Each condition is needed.
    let text = String::from_utf8(msg).unwrap();
    for broken in [
        text.replace("Auto-Submitted: auto-replied\r\n", ""),
        text.replace("Auto-Submitted: auto-replied", "Auto-Submitted: "),
        text.replace("MAILER-DAEMON@other.example", "postmaster@other.example"),
        text.replace("multipart/report", "multipart/mixed"),
    ] {
        assert!(!is_mailer_daemon_report(broken.as_bytes()));
        assert_eq!(
            rejected(inbound("", &[ALICE], broken.as_bytes(), true, &stats)),
            ENCRYPTION_NEEDED
        );
    }
}

#[test]
fn inbound_from_mismatch_continues_with_null_sender() {
    let stats = PolicyStats::new();
    let msg = chat_message("carol@other.example");
    let a = accepted(inbound(
        "srs0=abc@forwarder.example",
        &[ALICE],
        &msg,
        true,
        &stats,
    ));
    assert!(a.null_sender);
    let a = accepted(inbound("CAROL@other.example", &[ALICE], &msg, true, &stats));
    assert!(!a.null_sender);
    // A bounce (null sender) is accepted too.
    let a = accepted(inbound("", &[ALICE], &msg, true, &stats));
    assert!(a.null_sender);
    // No From header at all is rejected.
    let no_from = String::from_utf8(msg)
        .unwrap()
        .replace("From: <carol@other.example>\r\n", "");
    assert_eq!(
        rejected(inbound(
            "carol@other.example",
            &[ALICE],
            no_from.as_bytes(),
            true,
            &stats
        )),
        "500 5.7.1 Invalid FROM header: missing From header"
    );
}
