//! The two kinds of cleartext mail that pass the encryption requirement: the legacy plaintext
//! Secure-Join request (relay-behaviour §6.5, both directions) and mailer-daemon reports
//! (§6.6, inbound only).

use mail_parser::{Message, MessageParser, PartType};

use super::mime;

/// §6.5: header `Secure-Join` is exactly `vc-request` or `vg-request`; the message is multipart
/// with exactly one leaf subpart, `text/plain`, whose decoded body trimmed and lowercased is
/// `secure-join: vc-request` / `secure-join: vg-request` respectively.
pub fn is_securejoin(msg: &[u8]) -> bool {
    MessageParser::default()
        .parse(msg)
        .is_some_and(|m| is_securejoin_parsed(&m))
}

pub(crate) fn is_securejoin_parsed(msg: &Message<'_>) -> bool {
    let Some(step) = mime::first_header_raw(msg, "Secure-Join") else {
        return false;
    };
    if step != "vc-request" && step != "vg-request" {
        return false;
    }
    let PartType::Multipart(children) = &msg.root_part().body else {
        return false;
    };
    let [only] = children.as_slice() else {
        return false;
    };
    let Some(part) = msg.part(*only) else {
        return false;
    };
    if !matches!(part.body, PartType::Text(_)) || !mime::is_type(part, "text", "plain") {
        return false;
    }
    let body = String::from_utf8_lossy(part.contents())
        .trim()
        .to_lowercase();
    body == format!("secure-join: {step}")
}

/// §6.6: `Auto-Submitted` is non-empty, the first From address starts with `mailer-daemon@`
/// (case-insensitive) and the top-level type is `multipart/report`. Read receipts (MDNs, sent
/// by users) do not qualify.
pub fn is_mailer_daemon_report(msg: &[u8]) -> bool {
    MessageParser::default()
        .parse(msg)
        .is_some_and(|m| is_mailer_daemon_parsed(&m))
}

pub(crate) fn is_mailer_daemon_parsed(msg: &Message<'_>) -> bool {
    let auto_submitted = mime::first_header_raw(msg, "Auto-Submitted").unwrap_or("");
    if auto_submitted.is_empty() {
        return false;
    }
    const PREFIX: &str = "mailer-daemon@";
    let from_daemon = mime::first_from(msg).is_ok_and(|a| {
        a.get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
    });
    from_daemon && mime::is_type(msg.root_part(), "multipart", "report")
}
