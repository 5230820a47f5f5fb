//! SMTP on port 25 (MX) over real sockets: STARTTLS required, no AUTH, only own-domain
//! recipients, delivery into INBOX.
mod common;

use chatmail_box::net::Service;
use common::{b64, LineClient, TestRelay, DOMAIN};

async fn cmd(c: &mut LineClient, line: &str) -> (u16, String) {
    c.send(line).await;
    c.smtp_reply().await
}

fn caps(text: &str) -> Vec<String> {
    text.lines().skip(1).map(|l| l[4..].to_string()).collect()
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

/// Connect to port 25, EHLO, STARTTLS, EHLO again.
async fn mx_tls(relay: &TestRelay) -> LineClient {
    let mut c = LineClient::plain(relay.addr(Service::Mx)).await;
    assert_eq!(c.smtp_reply().await.0, 220);
    assert_eq!(cmd(&mut c, "EHLO mx.example.org").await.0, 250);
    assert_eq!(cmd(&mut c, "STARTTLS").await.0, 220);
    let mut c = c.upgrade().await;
    let (code, text) = cmd(&mut c, "EHLO mx.example.org").await;
    assert_eq!(code, 250, "{text}");
    let caps = caps(&text);
    assert!(!caps.iter().any(|c| c.starts_with("AUTH")), "{caps:?}");
    assert!(!caps.iter().any(|c| c == "STARTTLS"), "{caps:?}");
    c
}

#[tokio::test]
async fn mx_requires_starttls_and_offers_no_auth() {
    let relay = TestRelay::start().await;
    let mut c = LineClient::plain(relay.addr(Service::Mx)).await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(
        (code, text.trim_end()),
        (220, "220 _chat.test ESMTP chatmail-box")
    );
    let (code, text) = cmd(&mut c, "EHLO mx.example.org").await;
    assert_eq!(code, 250);
    let caps = caps(&text);
    assert!(caps.iter().any(|c| c == "STARTTLS"), "{caps:?}");
    assert!(!caps.iter().any(|c| c.starts_with("AUTH")), "{caps:?}");
    let (code, text) = cmd(&mut c, "MAIL FROM:<someone@example.org>").await;
    assert_eq!(
        (code, text.trim_end()),
        (530, "530 5.7.0 Must issue a STARTTLS command first")
    );
    let ir = b64(&format!("\0alice0001@{DOMAIN}\0secret-password-1"));
    let (code, text) = cmd(&mut c, &format!("AUTH PLAIN {ir}")).await;
    assert_eq!(code, 503, "{text}");
    // Peers must greet with a fully-qualified name or an address literal.
    assert_eq!(cmd(&mut c, "EHLO localhost").await.0, 504);
    assert_eq!(cmd(&mut c, "EHLO [192.0.2.1]").await.0, 250);
}

#[tokio::test]
async fn mx_after_starttls_delivers_locally_and_refuses_relaying() {
    let relay = TestRelay::start().await;
    let alice = format!("alice0001@{DOMAIN}");
    relay
        .ctx
        .auth
        .login(&alice, "secret-password-1")
        .await
        .unwrap();
    let mut c = mx_tls(&relay).await;
    let ir = b64(&format!("\0{alice}\0secret-password-1"));
    let (code, text) = cmd(&mut c, &format!("AUTH PLAIN {ir}")).await;
    assert_eq!(code, 503, "AUTH on 25 after TLS: {text}");
    // Null sender (bounces) is fine on 25.
    assert_eq!(cmd(&mut c, "MAIL FROM:<>").await.0, 250);
    let (code, text) = cmd(&mut c, "RCPT TO:<victim@example.org>").await;
    assert_eq!(
        (code, text.trim_end()),
        (554, "554 5.7.1 Relay access denied")
    );
    // Existence is not checked at RCPT on 25 (no probing); unknown users bounce later.
    let (code, text) = cmd(&mut c, &format!("RCPT TO:<nosuchusr@{DOMAIN}>")).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(cmd(&mut c, "RSET").await.0, 250);
    // Encrypted mail without a DKIM signature from a named domain is refused.
    let signed_nowhere = common::pgp_message("bob@example.org", &alice, 10, "");
    assert_eq!(cmd(&mut c, "MAIL FROM:<bob@example.org>").await.0, 250);
    assert_eq!(cmd(&mut c, &format!("RCPT TO:<{alice}>")).await.0, 250);
    assert_eq!(cmd(&mut c, "DATA").await.0, 354);
    c.send_raw(&common::data_of(&signed_nowhere)).await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(
        (code, text.trim_end()),
        (554, "554 5.7.1 No DKIM signature found")
    );
    // Cleartext to an account created here is refused whatever its origin.
    assert_eq!(cmd(&mut c, "MAIL FROM:<x@[127.0.0.1]>").await.0, 250);
    assert_eq!(cmd(&mut c, &format!("RCPT TO:<{alice}>")).await.0, 250);
    assert_eq!(cmd(&mut c, "DATA").await.0, 354);
    c.send_raw(b"From: <x@[127.0.0.1]>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n")
        .await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(code, 523, "{text}");
    assert!(inbox(&relay, &alice).is_empty());
    // An IP-literal sender equal to the connecting address needs no DKIM (§7 step 6); the
    // leading-dot line survives dot-stuffing; Received/DKIM headers are removed.
    let from = "x@[127.0.0.1]";
    let msg = format!(
        "Received: from somewhere\r\n{}",
        common::pgp_message(from, &alice, 10, ".dot\r\n")
    );
    assert_eq!(cmd(&mut c, &format!("MAIL FROM:<{from}>")).await.0, 250);
    let (code, text) = cmd(&mut c, &format!("RCPT TO:<alice0001+x@{DOMAIN}>")).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(cmd(&mut c, "DATA").await.0, 354);
    c.send_raw(&common::data_of(&msg)).await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!((code, text.trim_end()), (250, "250 2.0.0 OK: queued"));
    let stored = inbox(&relay, &alice);
    assert_eq!(
        stored,
        vec![msg
            .strip_prefix("Received: from somewhere\r\n")
            .unwrap()
            .as_bytes()
            .to_vec()]
    );
    // A literal that is not the connecting address is refused.
    let forged = common::pgp_message("x@[192.0.2.7]", &alice, 10, "");
    assert_eq!(cmd(&mut c, "MAIL FROM:<x@[192.0.2.7]>").await.0, 250);
    assert_eq!(cmd(&mut c, &format!("RCPT TO:<{alice}>")).await.0, 250);
    assert_eq!(cmd(&mut c, "DATA").await.0, 354);
    c.send_raw(&common::data_of(&forged)).await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("does not match origin IP"), "{text}");
    // A foreign sender on a second transaction works too; relaying still does not.
    assert_eq!(cmd(&mut c, "MAIL FROM:<bob@example.org>").await.0, 250);
    assert_eq!(cmd(&mut c, "RCPT TO:<bob@example.org>").await.0, 554);
    assert_eq!(cmd(&mut c, "DATA").await.0, 554);
    assert_eq!(cmd(&mut c, "QUIT").await.0, 221);
    assert_eq!(inbox(&relay, &alice).len(), 1);
}
