//! Reply lines of the policy, kept here until they move to `replies::smtp` (which the policy
//! must not edit). Every line is complete: basic code, enhanced code, text, no CRLF. Texts that
//! echo message or envelope content take it through [`printable`].
//!
//! Wording follows upstream (Postfix + filtermail) where clients or tests look at it: Delta
//! Chat shows an "unencrypted email" notice when a reply contains `Invalid Unencrypted Mail`;
//! enhanced code `5.5.0` is never used for a policy reply (the client treats it as transient).

use std::borrow::Cow;
use std::fmt;

/// Submission rule 9 and inbound rule 5 (relay-behaviour §5, §7).
pub const POLICY_ENCRYPTION_NEEDED: &str = "523 5.7.1 Encryption Needed: Invalid Unencrypted Mail";
/// Submission rule 6 (end of DATA; same text as `replies::smtp::MESSAGE_TOO_BIG`).
pub const POLICY_MESSAGE_TOO_BIG: &str = "552 5.3.4 Message exceeds maximum size";
/// Submission rule 5: more than [`super::MAX_RECIPIENTS`] recipients (Postfix's wording).
pub const POLICY_TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Error: too many recipients";
/// Submission rule 2 (sender login mismatch; Postfix reports it at RCPT).
pub const POLICY_SENDER_NOT_OWNED: &str = "553 5.7.1 Sender address rejected: not owned by user";

/// Submission rule 4: the envelope sender must contain exactly one `@`.
pub fn policy_invalid_envelope_from(addr: &str) -> String {
    format!("500 5.1.7 Invalid from address <{}>", printable(addr))
}

/// Submission rule 8: the header From does not match the envelope sender.
pub fn policy_invalid_from(header_from: &str, envelope_from: &str) -> String {
    format!(
        "500 5.7.1 Invalid FROM <{}> for <{}>",
        printable(header_from),
        printable(envelope_from)
    )
}

/// Submission rule 8 / inbound step 2: no usable `From:` header.
pub fn policy_invalid_from_header(reason: &str) -> String {
    format!("500 5.7.1 Invalid FROM header: {}", printable(reason))
}

/// Submission rule 7: the message does not parse.
pub fn policy_parse_failed(reason: &str) -> String {
    format!("500 5.6.0 Failed to parse message: {}", printable(reason))
}

/// Submission rule 3 (upstream filtermail's exact wording, colon included). `until` is an
/// RFC 3339 UTC time.
pub fn policy_rate_limited(addr: &str, until: &str) -> String {
    format!(
        "450 4.7.1: Too much mail from {}, rate limited until: {}",
        printable(addr),
        printable(until)
    )
}

/// Longest echoed value in a reply; longer ones are cut (a reply line stays well below the
/// 512-octet SMTP limit).
const MAX_ECHO: usize = 200;

/// Makes client-supplied text safe to echo in a reply line: printable ASCII only (anything
/// else, CR and LF included, becomes `?`), at most [`MAX_ECHO`] characters.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(MAX_ECHO)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// One SMTP reply line chosen by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(Cow<'static, str>);

impl Reply {
    /// Wraps a complete reply line (`"523 5.7.1 text"`).
    pub fn new(line: impl Into<Cow<'static, str>>) -> Reply {
        Reply(line.into())
    }

    /// The whole line, without CRLF.
    pub fn line(&self) -> &str {
        &self.0
    }

    /// The line, for `smtp::policy::Verdict::Reject(Cow<'static, str>)`.
    pub fn into_line(self) -> Cow<'static, str> {
        self.0
    }

    /// The basic reply code (`523`).
    pub fn code(&self) -> u16 {
        self.0.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// The enhanced status code (`5.7.1`), if the line carries one.
    pub fn enhanced(&self) -> Option<&str> {
        let token = self.0.get(4..)?.split(' ').next()?;
        let token = token.strip_suffix(':').unwrap_or(token);
        let mut n = 0;
        for field in token.split('.') {
            if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            n += 1;
        }
        (n == 3).then_some(token)
    }

    /// The human-readable text after the codes.
    pub fn text(&self) -> &str {
        let rest = self.0.get(4..).unwrap_or("");
        match self.enhanced() {
            Some(_) => rest.split_once(' ').map_or("", |(_, t)| t),
            None => rest,
        }
    }

    /// 4xx: the client should retry later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code())
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_parts() {
        let r = Reply::new(POLICY_ENCRYPTION_NEEDED);
        assert_eq!(r.code(), 523);
        assert_eq!(r.enhanced(), Some("5.7.1"));
        assert_eq!(r.text(), "Encryption Needed: Invalid Unencrypted Mail");
        let r = Reply::new(policy_rate_limited("a@b", "2026-01-01T00:00:00Z"));
        assert_eq!(r.code(), 450);
        assert_eq!(r.enhanced(), Some("4.7.1"));
        assert!(r.is_transient());
        assert!(
            r.text().starts_with("Too much mail from a@b"),
            "{}",
            r.text()
        );
    }

    #[test]
    fn printable_strips_line_breaks() {
        assert_eq!(printable("a\r\nb\u{e9}"), "a??b?");
        assert_eq!(printable(&"x".repeat(1000)).len(), MAX_ECHO);
    }
}
