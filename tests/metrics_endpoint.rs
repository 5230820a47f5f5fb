//! The Prometheus endpoint on `metrics_listen`: OpenMetrics text that parses, counters that move
//! after a delivery, and nothing of it on the public listeners.
mod common;

use std::net::SocketAddr;

use chatmail_box::net::Service;
use common::{b64, data_of, pgp_message, LineClient, TestRelay, DOMAIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASS: &str = "secret-password-1";

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse the body as exposition text: every sample line is `name[{labels}] value`.
fn samples(resp: &str) -> Vec<(String, f64)> {
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("openmetrics-text"),
        "{head}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    let mut out = Vec::new();
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            assert!(
                line.is_empty()
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT ")
                    || line == "# EOF",
                "bad comment line {line:?}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').expect("sample line");
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.push((name.to_string(), v));
    }
    out
}

fn value(s: &[(String, f64)], name: &str) -> f64 {
    s.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no sample {name}"))
        .1
}

#[tokio::test]
async fn counters_move_after_a_delivery() {
    let relay =
        TestRelay::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let maddr = chatmail_box::metrics::spawn(&relay.ctx)
        .await
        .unwrap()
        .unwrap();
    let before = samples(&http_get(maddr, "/metrics").await);
    for name in [
        "delivered_mail",
        "quota_exceeded",
        "created_accounts",
        "outgoing_encrypted_mail_count",
        "rejected_unencrypted_mail_count",
        "chatmail_queue_depth",
        "chatmail_accounts",
        "rejected_registrations",
    ] {
        assert_eq!(value(&before, name), 0.0, "{name}");
    }
    assert_eq!(value(&before, "chatmail_delivery_seconds_count"), 0.0);

    let (a, b) = (format!("metrics01@{DOMAIN}"), format!("metrics02@{DOMAIN}"));
    relay.ctx.auth.login(&b, PASS).await.unwrap();
    // Two refused registrations: a local part with `+`, a password that is too short.
    assert!(relay
        .ctx
        .auth
        .login(&format!("bad+part@{DOMAIN}"), PASS)
        .await
        .is_err());
    assert!(relay
        .ctx
        .auth
        .login(&format!("metrics03@{DOMAIN}"), "short")
        .await
        .is_err());
    let mut c = LineClient::tls(relay.addr(Service::Submissions), &[]).await;
    c.smtp_reply().await;
    for line in [
        "EHLO [127.0.0.1]".to_string(),
        format!("AUTH PLAIN {}", b64(&format!("\0{a}\0{PASS}"))),
        format!("MAIL FROM:<{a}>"),
        format!("RCPT TO:<{b}>"),
        "DATA".to_string(),
    ] {
        c.send(&line).await;
        let (code, text) = c.smtp_reply().await;
        assert!(code < 400, "{line}: {text}");
    }
    c.send_raw(&data_of(&pgp_message(&a, &b, 2000, ""))).await;
    assert_eq!(c.smtp_reply().await.0, 250);

    let after = samples(&http_get(maddr, "/metrics").await);
    assert_eq!(value(&after, "delivered_mail"), 1.0);
    assert_eq!(value(&after, "created_accounts"), 2.0);
    assert_eq!(value(&after, "rejected_registrations"), 2.0);
    assert_eq!(value(&after, "chatmail_accounts"), 2.0);
    assert_eq!(value(&after, "outgoing_encrypted_mail_count"), 1.0);
    assert_eq!(value(&after, "chatmail_delivery_seconds_count"), 1.0);
    assert!(value(&after, "chatmail_delivery_seconds_sum") > 0.0);
    assert!(
        value(
            &after,
            "chatmail_connections_total{protocol=\"submissions\"}"
        ) >= 1.0
    );
    assert!(value(&after, "chatmail_storage_bytes{kind=\"messages\"}") > 2000.0);
    assert!(value(&after, "chatmail_storage_bytes{kind=\"total\"}") > 2000.0);
}

#[tokio::test]
async fn off_by_default_and_not_on_public_listeners() {
    let relay = TestRelay::start().await;
    assert!(relay.ctx.cfg.metrics_listen.is_none());
    assert!(chatmail_box::metrics::spawn(&relay.ctx)
        .await
        .unwrap()
        .is_none());
    let resp = http_get(relay.addr(Service::Http), "/metrics").await;
    assert!(!resp.contains("delivered_mail"), "{resp}");
}
