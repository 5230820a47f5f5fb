//! Delivery status notifications (relay-behaviour §10): from `MAILER-DAEMON@<domain>` with
//! `Auto-Submitted: auto-replied` and `multipart/report` (so Delta Chat downloads it and the
//! peer's mailer-daemon exception lets it in), naming each failed recipient, DKIM-signed, sent
//! with the null envelope sender (no bounce of a bounce).

use std::sync::Arc;

use crate::Ctx;

fn header_block(original: &[u8]) -> &[u8] {
    for sep in [&b"\r\n\r\n"[..], b"\n\n"] {
        if let Some(i) = original.windows(sep.len()).position(|w| w == sep) {
            return &original[..i];
        }
    }
    &original[..original.len().min(16 * 1024)]
}

/// The enhanced status code of a reply line, or a default from the basic code.
fn status_of(reply: &str) -> String {
    reply
        .split_whitespace()
        .nth(1)
        .filter(|w| {
            let p: Vec<&str> = w.split('.').collect();
            p.len() == 3
                && p.iter()
                    .all(|x| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_string)
        .unwrap_or_else(|| {
            if reply.starts_with('4') {
                "4.0.0".into()
            } else {
                "5.0.0".into()
            }
        })
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// Build the DSN (CRLF line ends). `domain` is the address domain (`example.org` or
/// `[1.2.3.4]`), `failed` holds (recipient, reply line).
pub fn build_bounce(
    domain: &str,
    sender: &str,
    failed: &[(String, String)],
    original: &[u8],
) -> Vec<u8> {
    let now = crate::store::now_unix();
    let date = chrono::DateTime::from_timestamp(now, 0)
        .map(|d| d.to_rfc2822())
        .unwrap_or_default();
    let rnd: u64 = rand::random();
    let boundary = format!("bounce-{rnd:016x}");
    let host = domain.trim_start_matches('[').trim_end_matches(']');
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{domain}>\r\n"
    ));
    m.push_str(&format!("To: <{sender}>\r\n"));
    m.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: <{rnd:016x}.bounce@{host}>\r\n"));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\n"));
    m.push_str("Content-Description: Notification\r\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
    m.push_str(&format!("This is the mail system at host {host}.\r\n\r\n"));
    m.push_str("I'm sorry to have to inform you that your message could not\r\n");
    m.push_str("be delivered to one or more recipients. It's attached below.\r\n\r\n");
    for (rcpt, reply) in failed {
        m.push_str(&format!("<{rcpt}>: {}\r\n", one_line(reply)));
    }
    m.push_str(&format!("\r\n--{boundary}\r\n"));
    m.push_str("Content-Description: Delivery report\r\n");
    m.push_str("Content-Type: message/delivery-status\r\n\r\n");
    m.push_str(&format!("Reporting-MTA: dns; {host}\r\n"));
    m.push_str(&format!("Arrival-Date: {date}\r\n"));
    for (rcpt, reply) in failed {
        m.push_str("\r\n");
        m.push_str(&format!("Final-Recipient: rfc822; {rcpt}\r\n"));
        m.push_str(&format!("Original-Recipient: rfc822;{rcpt}\r\n"));
        m.push_str("Action: failed\r\n");
        m.push_str(&format!("Status: {}\r\n", status_of(reply)));
        m.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", one_line(reply)));
    }
    m.push_str(&format!("\r\n--{boundary}\r\n"));
    m.push_str("Content-Description: Undelivered Message Headers\r\n");
    m.push_str("Content-Type: text/rfc822-headers\r\n\r\n");
    let mut out = m.into_bytes();
    let headers = header_block(original);
    // Normalise to CRLF.
    let mut prev = 0u8;
    for &b in headers {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out.extend_from_slice(format!("\r\n\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Build, sign and hand a DSN to the store: into the sender's INBOX if the sender is local,
/// else into the outbound queue (with the null envelope sender). Nothing for the null sender.
pub async fn send_bounce(
    ctx: &Arc<Ctx>,
    sender: &str,
    failed: &[(String, String)],
    original: &[u8],
) -> anyhow::Result<()> {
    if sender.is_empty() || failed.is_empty() {
        return Ok(());
    }
    let Some((_, sdomain)) = sender.rsplit_once('@') else {
        return Ok(());
    };
    let domain = ctx.cfg.address_domain();
    let dsn = build_bounce(&domain, sender, failed, original);
    let signed = ctx.dkim.sign(dsn).await?;
    let sdomain = sdomain.to_ascii_lowercase();
    let (local, remote) = if sdomain == domain {
        (vec![sender.to_ascii_lowercase()], Vec::new())
    } else {
        (Vec::new(), vec![(sdomain, vec![sender.to_string()])])
    };
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || store.accept_message("", &local, &remote, &signed))
        .await??;
    tracing::info!(recipients = failed.len(), "bounce generated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_names_recipient_and_is_a_report() {
        let orig = b"From: a@x.org\r\nTo: nosuchuser_test42@y.org\r\nSubject: hi\r\n\r\nbody\r\n";
        let fail = vec![(
            "nosuchuser_test42@y.org".to_string(),
            "550 5.1.1 unknown user".to_string(),
        )];
        let m = build_bounce("x.org", "a@x.org", &fail, orig);
        let s = String::from_utf8(m.clone()).unwrap();
        assert!(s.contains("From: Mail Delivery System <MAILER-DAEMON@x.org>"));
        assert!(s.contains("Status: 5.1.1"));
        assert!(s.contains("nosuchuser_test42@y.org"));
        assert!(!s.contains("body\r\n--"));
        assert!(crate::policy::is_mailer_daemon_report(&m));
    }
}
