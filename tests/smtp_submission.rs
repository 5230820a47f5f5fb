//! SMTP submission (465 implicit TLS, 587 STARTTLS) over real sockets: capabilities, AUTH,
//! envelope rules, DATA limits, smuggling, pipelining and local delivery into INBOX.
mod common;

use chatmail_box::net::Service;
use common::{b64, data_of, pgp_message, LineClient, TestRelay, DOMAIN};

const PASS: &str = "secret-password-1";

fn addr(local: &str) -> String {
    format!("{local}@{DOMAIN}")
}

/// Send one command line and read its reply.
async fn cmd(c: &mut LineClient, line: &str) -> (u16, String) {
    c.send(line).await;
    c.smtp_reply().await
}

/// Connect to 465, read the greeting and EHLO.
async fn connect_465(relay: &TestRelay) -> LineClient {
    let mut c = LineClient::tls(relay.addr(Service::Submissions), &[]).await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(code, 220, "{text}");
    let (code, text) = cmd(&mut c, "EHLO [127.0.0.1]").await;
    assert_eq!(code, 250, "{text}");
    c
}

/// Connect to 465 and log in with AUTH PLAIN (creates the account on first use).
async fn logged_in(relay: &TestRelay, local: &str) -> LineClient {
    let mut c = connect_465(relay).await;
    let ir = b64(&format!("\0{}\0{PASS}", addr(local)));
    let (code, text) = cmd(&mut c, &format!("AUTH PLAIN {ir}")).await;
    assert_eq!(code, 235, "{text}");
    c
}

/// Bodies in the INBOX of `a`.
fn inbox(relay: &TestRelay, a: &str) -> Vec<Vec<u8>> {
    let Some(snap) = relay.ctx.store.snapshot(a, "INBOX").unwrap() else {
        return Vec::new();
    };
    snap.messages
        .iter()
        .map(|m| relay.ctx.store.read_body(m).unwrap())
        .collect()
}

/// MAIL/RCPT/DATA for one message; returns the final reply.
async fn send_message(c: &mut LineClient, from: &str, to: &[&str], data: &[u8]) -> (u16, String) {
    let (code, text) = cmd(c, &format!("MAIL FROM:<{from}>")).await;
    assert_eq!(code, 250, "{text}");
    for t in to {
        let (code, text) = cmd(c, &format!("RCPT TO:<{t}>")).await;
        assert_eq!(code, 250, "{text}");
    }
    let (code, text) = cmd(c, "DATA").await;
    assert_eq!(code, 354, "{text}");
    c.send_raw(data).await;
    c.smtp_reply().await
}

fn caps(text: &str) -> Vec<String> {
    text.lines().skip(1).map(|l| l[4..].to_string()).collect()
}

#[tokio::test]
async fn ehlo_on_465_advertises_auth_and_no_starttls() {
    let relay = TestRelay::start().await;
    let mut c = LineClient::tls(relay.addr(Service::Submissions), &[]).await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(
        (code, text.trim_end()),
        (220, "220 _chat.test ESMTP chatmail-box")
    );
    let (code, text) = cmd(&mut c, "EHLO [127.0.0.1]").await;
    assert_eq!(code, 250);
    assert!(text.starts_with("250-_chat.test\n"), "{text}");
    let caps = caps(&text);
    for want in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 31457280",
        "ENHANCEDSTATUSCODES",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(caps.iter().any(|c| c == want), "{want} missing in {caps:?}");
    }
    assert!(!caps.iter().any(|c| c == "STARTTLS"), "{caps:?}");
    assert!(!caps.iter().any(|c| c == "CHUNKING"), "{caps:?}");
    // HELO works too and gives a single line.
    let (code, text) = cmd(&mut c, "HELO mail.example.org").await;
    assert_eq!((code, text.trim_end()), (250, "250 _chat.test"));
}

#[tokio::test]
async fn starttls_on_587_then_auth() {
    let relay = TestRelay::start().await;
    let mut c = LineClient::plain(relay.addr(Service::Submission)).await;
    assert_eq!(c.smtp_reply().await.0, 220);
    let (code, text) = cmd(&mut c, "EHLO [127.0.0.1]").await;
    assert_eq!(code, 250);
    let before = caps(&text);
    assert!(before.iter().any(|c| c == "STARTTLS"), "{before:?}");
    assert!(!before.iter().any(|c| c.starts_with("AUTH")), "{before:?}");
    // AUTH and MAIL are refused in plaintext.
    let ir = b64(&format!("\0{}\0{PASS}", addr("alice0001")));
    let (code, text) = cmd(&mut c, &format!("AUTH PLAIN {ir}")).await;
    assert_eq!(code, 538, "{text}");
    let (code, text) = cmd(&mut c, &format!("MAIL FROM:<{}>", addr("alice0001"))).await;
    assert_eq!(code, 530, "{text}");
    assert!(relay
        .ctx
        .store
        .account(&addr("alice0001"))
        .unwrap()
        .is_none());
    // Pipelined plaintext after STARTTLS is discarded, not executed after the handshake.
    c.send_raw(b"STARTTLS\r\nNOOP\r\n").await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(code, 220, "{text}");
    let mut c = c.upgrade().await;
    let (code, text) = cmd(&mut c, "EHLO [127.0.0.1]").await;
    assert!(text.starts_with("250-_chat.test\n"), "{text}");
    assert_eq!(code, 250);
    let after = caps(&text);
    assert!(after.iter().any(|c| c == "AUTH PLAIN LOGIN"), "{after:?}");
    assert!(!after.iter().any(|c| c == "STARTTLS"), "{after:?}");
    let (code, text) = cmd(&mut c, "STARTTLS").await;
    assert_eq!(code, 503, "{text}");
    let (code, text) = cmd(&mut c, &format!("AUTH PLAIN {ir}")).await;
    assert_eq!(code, 235, "{text}");
    assert!(relay
        .ctx
        .store
        .account(&addr("alice0001"))
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn auth_plain_and_login_create_accounts_and_deliver_locally() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (addr("alice0001"), addr("bob000001"));

    // AUTH LOGIN with the 334 challenges creates bob.
    let mut b = connect_465(&relay).await;
    let (code, text) = cmd(&mut b, "AUTH LOGIN").await;
    assert_eq!((code, text.trim_end()), (334, "334 VXNlcm5hbWU6"));
    let (code, text) = cmd(&mut b, &b64(&bob)).await;
    assert_eq!((code, text.trim_end()), (334, "334 UGFzc3dvcmQ6"));
    let (code, text) = cmd(&mut b, &b64(PASS)).await;
    assert_eq!(
        (code, text.trim_end()),
        (235, "235 2.7.0 Authentication successful")
    );
    assert!(relay.ctx.store.account(&bob).unwrap().is_some());
    let (code, _) = cmd(&mut b, "QUIT").await;
    assert_eq!(code, 221);

    // AUTH PLAIN with the initial response creates alice; she writes to herself and to bob
    // (sub-address, upper case). Body with a lone "." line and a leading-dot line.
    let mut a = logged_in(&relay, "alice0001").await;
    assert!(relay.ctx.store.account(&alice).unwrap().is_some());
    let body = pgp_message(&alice, &alice, 100, "line 1\r\n.\r\n..x\r\nend\r\n");
    let stuffed = String::from_utf8(data_of(&body)).unwrap();
    assert!(stuffed.contains("\r\n..\r\n...x\r\n"));
    let bob_tagged = format!("BOB000001+tag@{}", DOMAIN.to_uppercase());
    let (code, text) = send_message(
        &mut a,
        &alice.to_uppercase(),
        &[&alice, &bob_tagged],
        stuffed.as_bytes(),
    )
    .await;
    assert_eq!((code, text.trim_end()), (250, "250 2.0.0 OK: queued"));
    assert_eq!(inbox(&relay, &alice), vec![body.as_bytes().to_vec()]);
    assert_eq!(inbox(&relay, &bob), vec![body.as_bytes().to_vec()]);

    // A second message on the same connection; a cleartext body that is just "." is refused
    // by the encryption policy and stored nowhere.
    let (code, text) = send_message(&mut a, &alice, &[&bob], b"..\r\n.\r\n").await;
    assert_eq!(code, 500, "{text}");
    let second = pgp_message(&alice, &bob, 50, "");
    let (code, _) = send_message(&mut a, &alice, &[&bob], &data_of(&second)).await;
    assert_eq!(code, 250);
    let got = inbox(&relay, &bob);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], second.as_bytes());
    // The client IP never ends up in stored mail, and no Received header is added.
    for m in got {
        let s = String::from_utf8_lossy(&m).to_string();
        assert!(!s.contains("127.0.0.1") && !s.contains("Received"), "{s}");
    }
}

#[tokio::test]
async fn auth_plain_continuation_and_cancel() {
    let relay = TestRelay::start().await;
    let mut c = connect_465(&relay).await;
    let (code, text) = cmd(&mut c, "AUTH PLAIN").await;
    assert_eq!((code, text.trim_end()), (334, "334"));
    let (code, text) = cmd(&mut c, "*").await;
    assert_eq!(code, 501, "{text}");
    let (code, text) = cmd(&mut c, "AUTH LOGIN").await;
    assert_eq!(code, 334, "{text}");
    let (code, text) = cmd(&mut c, "*").await;
    assert_eq!(code, 501, "{text}");
    let (code, text) = cmd(&mut c, "AUTH CRAM-MD5").await;
    assert_eq!(code, 504, "{text}");
    let (code, _) = cmd(&mut c, "AUTH PLAIN").await;
    assert_eq!(code, 334);
    let (code, text) = cmd(&mut c, &b64(&format!("\0{}\0{PASS}", addr("carol0001")))).await;
    assert_eq!(code, 235, "{text}");
    let (code, text) = cmd(&mut c, "AUTH PLAIN").await;
    assert_eq!(code, 503, "{text}");
}

#[tokio::test]
async fn wrong_password_is_535_and_mail_needs_auth() {
    let relay = TestRelay::start().await;
    drop(logged_in(&relay, "alice0001").await);
    let mut c = connect_465(&relay).await;
    let ir = b64(&format!("\0{}\0wrong-password", addr("alice0001")));
    let (code, text) = cmd(&mut c, &format!("AUTH PLAIN {ir}")).await;
    assert_eq!(
        (code, text.trim_end()),
        (535, "535 5.7.8 Authentication credentials invalid")
    );
    let (code, text) = cmd(&mut c, &format!("MAIL FROM:<{}>", addr("alice0001"))).await;
    assert_eq!(
        (code, text.trim_end()),
        (530, "530 5.7.0 Authentication required")
    );
    assert!(inbox(&relay, &addr("alice0001")).is_empty());
}

#[tokio::test]
async fn sender_mismatch_is_553_at_rcpt_and_nothing_is_delivered() {
    let relay = TestRelay::start().await;
    drop(logged_in(&relay, "bob000001").await);
    let mut c = logged_in(&relay, "alice0001").await;
    let (code, text) = cmd(&mut c, &format!("MAIL FROM:<{}>", addr("bob000001"))).await;
    assert_eq!(code, 250, "{text}");
    let (code, text) = cmd(&mut c, &format!("RCPT TO:<{}>", addr("bob000001"))).await;
    assert_eq!(
        (code, text.trim_end()),
        (553, "553 5.7.1 Sender address rejected: not owned by user")
    );
    let (code, text) = cmd(&mut c, "DATA").await;
    assert_eq!(code, 554, "{text}");
    let (code, _) = cmd(&mut c, "RSET").await;
    assert_eq!(code, 250);
    // Rule 4: exactly one @.
    let (code, text) = cmd(&mut c, "MAIL FROM:<\"a@b\"@_chat.test>").await;
    assert_eq!(code, 500, "{text}");
    assert!(text.contains("Invalid from address"), "{text}");
    assert!(inbox(&relay, &addr("bob000001")).is_empty());
}

#[tokio::test]
async fn oversize_message_is_552_and_not_delivered() {
    let relay = TestRelay::start_with(|c| c.max_message_size = 2048).await;
    let alice = addr("alice0001");
    let mut c = logged_in(&relay, "alice0001").await;
    let (code, text) = cmd(&mut c, &format!("MAIL FROM:<{alice}> SIZE=4096")).await;
    assert_eq!(code, 552, "{text}");
    let mut data = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..60 {
        data.extend_from_slice(&[b'x'; 70]);
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    let (code, text) = send_message(&mut c, &alice, &[&alice], &data).await;
    assert_eq!(
        (code, text.trim_end()),
        (552, "552 5.3.4 Message exceeds maximum size")
    );
    assert!(inbox(&relay, &alice).is_empty());
    // The session goes on and a small message is accepted.
    let small = pgp_message(&alice, &alice, 10, "");
    assert!(small.len() < 2048);
    let (code, text) = send_message(&mut c, &alice, &[&alice], &data_of(&small)).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(inbox(&relay, &alice), vec![small.into_bytes()]);
}

#[tokio::test]
async fn bare_lf_and_long_data_lines_are_rejected() {
    let relay = TestRelay::start().await;
    let alice = addr("alice0001");
    let mut c = logged_in(&relay, "alice0001").await;
    for data in [&b"a\nb\r\n.\r\n"[..], b"a\rb\r\n.\r\n"] {
        let (code, text) = send_message(&mut c, &alice, &[&alice], data).await;
        assert_eq!(
            (code, text.trim_end()),
            (550, "550 5.6.11 bare LF/CR not allowed"),
            "{data:?}"
        );
    }
    let mut long = vec![b'y'; 9000];
    long.extend_from_slice(b"\r\n.\r\n");
    let (code, text) = send_message(&mut c, &alice, &[&alice], &long).await;
    assert_eq!(code, 552, "{text}");
    assert!(inbox(&relay, &alice).is_empty());
    let ok = pgp_message(&alice, &alice, 10, "");
    let (code, text) = send_message(&mut c, &alice, &[&alice], &data_of(&ok)).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(inbox(&relay, &alice).len(), 1);
}

#[tokio::test]
async fn smuggling_does_not_inject_a_second_message() {
    let relay = TestRelay::start().await;
    let alice = addr("alice0001");
    drop(logged_in(&relay, "alice0001").await);
    for end in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r"] {
        let mut c = logged_in(&relay, "alice0001").await;
        let smuggled = format!(
            "Subject: one\r\n\r\nfirst{end}MAIL FROM:<{alice}>\r\nRCPT TO:<{alice}>\r\nDATA\r\n\
             Subject: smuggled\r\n\r\nsecond\r\n.\r\n"
        );
        let (code, text) = send_message(&mut c, &alice, &[&alice], smuggled.as_bytes()).await;
        assert_eq!(code, 550, "{end:?}: {text}");
        // The server stops reading: nothing after the ambiguous end is executed.
        assert_eq!(c.line().await, "", "{end:?}: connection still open");
        assert!(inbox(&relay, &alice).is_empty(), "{end:?}");
    }
}

#[tokio::test]
async fn pipelined_envelope_gets_replies_in_one_write() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (addr("alice0001"), addr("bob000001"));
    drop(logged_in(&relay, "bob000001").await);
    let mut c = logged_in(&relay, "alice0001").await;
    c.send_raw(
        format!("MAIL FROM:<{alice}> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<{bob}>\r\nRCPT TO:<{alice}>\r\nDATA\r\n")
            .as_bytes(),
    )
    .await;
    let first = c.line().await;
    assert!(first.starts_with("250 "), "{first}");
    // The other replies came with the first one.
    let rest = String::from_utf8_lossy(c.r.buffer()).to_string();
    assert!(
        rest.contains("\r\n354 "),
        "replies not written together: {rest:?}"
    );
    assert_eq!(c.smtp_reply().await.0, 250);
    assert_eq!(c.smtp_reply().await.0, 250);
    assert_eq!(c.smtp_reply().await.0, 354);
    let msg = pgp_message(&alice, &bob, 20, "");
    let mut data = data_of(&msg);
    data.extend_from_slice(b"QUIT\r\n");
    c.send_raw(&data).await;
    let (code, text) = c.smtp_reply().await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(c.smtp_reply().await.0, 221);
    assert_eq!(inbox(&relay, &bob), vec![msg.into_bytes()]);
    assert_eq!(inbox(&relay, &alice).len(), 1);
}

#[tokio::test]
async fn recipients_remote_unknown_and_limits() {
    let relay = TestRelay::start().await;
    let alice = addr("alice0001");
    let mut c = logged_in(&relay, "alice0001").await;
    let (code, _) = cmd(&mut c, &format!("MAIL FROM:<{alice}>")).await;
    assert_eq!(code, 250);
    let (code, text) = cmd(&mut c, &format!("RCPT TO:<{}>", addr("nosuchusr"))).await;
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("5.1.1") && text.contains("User unknown"),
        "{text}"
    );
    let (code, text) = cmd(&mut c, "DATA").await;
    assert_eq!(code, 554, "{text}");
    // MAIL needs RSET or a finished transaction first.
    let (code, _) = cmd(&mut c, &format!("MAIL FROM:<{alice}>")).await;
    assert_eq!(code, 503);
    let (code, _) = cmd(&mut c, "RSET").await;
    assert_eq!(code, 250);
    // Other domains are queued for outbound delivery.
    let msg = pgp_message(&alice, "someone@example.org", 10, "");
    let (code, text) = send_message(&mut c, &alice, &["someone@Example.ORG"], &data_of(&msg)).await;
    assert_eq!(code, 250, "{text}");
    let items = relay.ctx.store.queue_items().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].domain, "example.org");
    assert_eq!(items[0].rcpts[0].addr, "someone@example.org");
    assert!(inbox(&relay, &alice).is_empty());
    // 1000 recipients at most.
    let mut batch = format!("MAIL FROM:<{alice}>\r\n");
    for _ in 0..1001 {
        batch.push_str(&format!("RCPT TO:<{alice}>\r\n"));
    }
    c.send_raw(batch.as_bytes()).await;
    assert_eq!(c.smtp_reply().await.0, 250);
    for i in 0..1000 {
        assert_eq!(c.smtp_reply().await.0, 250, "rcpt {i}");
    }
    let (code, text) = c.smtp_reply().await;
    assert_eq!(code, 452, "{text}");
}

#[tokio::test]
async fn misc_commands_and_line_limits() {
    let relay = TestRelay::start().await;
    let mut c = LineClient::tls(relay.addr(Service::Submissions), &[]).await;
    assert_eq!(c.smtp_reply().await.0, 220);
    let (code, _) = cmd(&mut c, "EHLO").await;
    assert_eq!(code, 501);
    let (code, _) = cmd(&mut c, "EHLO bad..name").await;
    assert_eq!(code, 501);
    let (code, _) = cmd(&mut c, "MAIL FROM:<x@y.z>").await;
    assert_eq!(code, 503, "MAIL before EHLO");
    let (code, _) = cmd(&mut c, "EHLO [127.0.0.1]").await;
    assert_eq!(code, 250);
    for (line, want) in [
        ("VRFY nosuchuser", "252 2.0.0 nosuchuser"),
        (
            "VRFY alice0001@_chat.test",
            "252 2.0.0 alice0001@_chat.test",
        ),
        ("NOOP", "250 2.0.0 OK"),
        ("RSET", "250 2.0.0 OK"),
        ("XYZZY", "500 5.5.1 Command unrecognized"),
    ] {
        let (_, text) = cmd(&mut c, line).await;
        assert_eq!(text.trim_end(), want);
    }
    assert_eq!(cmd(&mut c, "EXPN staff").await.0, 502);
    assert_eq!(cmd(&mut c, "BDAT 10 LAST").await.0, 502);
    assert_eq!(cmd(&mut c, "HELP").await.0, 214);
    // Command lines over max_line_length are refused; the session goes on.
    let long = format!("NOOP {}", "x".repeat(9000));
    let (code, text) = cmd(&mut c, &long).await;
    assert_eq!((code, text.trim_end()), (500, "500 5.5.2 Line too long"));
    assert_eq!(cmd(&mut c, "NOOP").await.0, 250);
    // Too many errors close the connection.
    c.send_raw("BOGUS\r\n".repeat(25).as_bytes()).await;
    let mut lines = Vec::new();
    loop {
        let l = c.line().await;
        if l.is_empty() {
            break;
        }
        lines.push(l);
    }
    assert!(lines.len() < 25, "{lines:?}");
    assert!(lines.last().unwrap().starts_with("421 "), "{lines:?}");
}

#[tokio::test]
async fn submission_over_443_with_alpn_smtp() {
    let relay = TestRelay::start().await;
    let mut c = LineClient::tls(relay.addr(Service::Https), &[b"smtp"]).await;
    assert_eq!(c.smtp_reply().await.0, 220);
    let (code, text) = cmd(&mut c, "EHLO [127.0.0.1]").await;
    assert_eq!(code, 250);
    assert!(
        caps(&text).iter().any(|c| c == "AUTH PLAIN LOGIN"),
        "{text}"
    );
    let ir = b64(&format!("\0{}\0{PASS}", addr("alice0001")));
    assert_eq!(cmd(&mut c, &format!("AUTH PLAIN {ir}")).await.0, 235);
    let alice = addr("alice0001");
    let msg = pgp_message(&alice, &alice, 10, "via 443\r\n");
    let (code, _) = send_message(&mut c, &alice, &[&alice], &data_of(&msg)).await;
    assert_eq!(code, 250);
    assert_eq!(inbox(&relay, &alice), vec![msg.into_bytes()]);
}

#[tokio::test]
async fn rate_limit_answers_450_at_rcpt_after_the_burst() {
    let relay = TestRelay::start_with(|c| {
        c.max_user_send_per_minute = 60;
        c.max_user_send_burst_size = 3;
    })
    .await;
    let alice = addr("alice0001");
    let mut c = logged_in(&relay, "alice0001").await;
    let msg = pgp_message(&alice, &alice, 10, "");
    for i in 0..3 {
        let (code, text) = send_message(&mut c, &alice, &[&alice], &data_of(&msg)).await;
        assert_eq!(code, 250, "message {i}: {text}");
    }
    assert_eq!(cmd(&mut c, &format!("MAIL FROM:<{alice}>")).await.0, 250);
    let (code, text) = cmd(&mut c, &format!("RCPT TO:<{alice}>")).await;
    assert_eq!(code, 450, "{text}");
    assert!(
        text.contains("4.7.1") && text.contains(&format!("Too much mail from {alice}")),
        "{text}"
    );
    assert_eq!(inbox(&relay, &alice).len(), 3);
}
