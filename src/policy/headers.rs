//! Header cleanup after acceptance, on the top-level header block only (Postfix
//! `disable_mime_input_processing = yes`): relay-behaviour §5 "After acceptance" step 2 and §7
//! step 8. Byte-exact: every byte that is not part of a removed or replaced field is copied as
//! it was, and the body (from the first empty line on) is never touched.
//!
//! The header block is everything before the first empty line (CRLF or LF). A field is a line
//! that does not start with SP/HT, plus the continuation lines that do; its name is the text
//! before the first `:` with trailing blanks removed, compared case-insensitively. Lines that
//! are not fields (no colon, or a stray continuation at the top) are kept unchanged.

/// Fields removed from submitted mail, so the client's address appears nowhere.
const SUBMISSION_DROP: &[&str] = &["Received", "X-Originating-IP", "X-Mailer", "User-Agent"];
/// Every `Subject:` of submitted mail becomes this (line ending kept).
const SUBJECT_REPLACEMENT: &[u8] = b"Subject: [...]";
/// Fields removed at delivery into a mailbox: no server-side trace headers are stored.
const DELIVERY_DROP: &[&str] = &["DKIM-Signature", "Authentication-Results", "Received"];

/// Submission cleanup: drop `Received`, `X-Originating-IP`, `X-Mailer`, `User-Agent` (with
/// their folded continuation lines) and replace every `Subject` with `Subject: [...]`.
pub fn clean_submission_headers(msg: &[u8]) -> Vec<u8> {
    rewrite(msg, |name| {
        if name.eq_ignore_ascii_case(b"Subject") {
            Action::Replace(SUBJECT_REPLACEMENT)
        } else if matches_any(name, SUBMISSION_DROP) {
            Action::Drop
        } else {
            Action::Keep
        }
    })
}

/// Delivery cleanup: drop `DKIM-Signature`, `Authentication-Results`, `Received`.
pub fn clean_delivery_headers(msg: &[u8]) -> Vec<u8> {
    rewrite(msg, |name| {
        if matches_any(name, DELIVERY_DROP) {
            Action::Drop
        } else {
            Action::Keep
        }
    })
}

fn matches_any(name: &[u8], list: &[&str]) -> bool {
    list.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

enum Action {
    Keep,
    Drop,
    /// Replace the whole field (continuations included) with this line; the line ending of the
    /// field's first line is kept.
    Replace(&'static [u8]),
}

/// Splits `data` at `pos` into one line including its LF (or up to the end).
fn line_at(data: &[u8], pos: usize) -> &[u8] {
    let rest = &data[pos..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => &rest[..=i],
        None => rest,
    }
}

fn is_blank(line: &[u8]) -> bool {
    matches!(line, b"\n" | b"\r\n")
}

fn is_continuation(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// The field name of a line that starts a field, or None if the line is not a field.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    if is_continuation(line) {
        return None;
    }
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
        return None;
    }
    Some(name)
}

fn rewrite(msg: &[u8], decide: impl Fn(&[u8]) -> Action) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    let mut pos = 0;
    while pos < msg.len() {
        let line = line_at(msg, pos);
        if is_blank(line) {
            break;
        }
        let Some(name) = field_name(line) else {
            out.extend_from_slice(line);
            pos += line.len();
            continue;
        };
        // The field: this line and its continuation lines.
        let mut end = pos + line.len();
        while end < msg.len() {
            let next = line_at(msg, end);
            if !is_continuation(next) {
                break;
            }
            end += next.len();
        }
        match decide(name) {
            Action::Keep => out.extend_from_slice(&msg[pos..end]),
            Action::Drop => {}
            Action::Replace(with) => {
                out.extend_from_slice(with);
                if line.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                } else if line.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
        }
        pos = end;
    }
    out.extend_from_slice(&msg[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_replaces_top_level_only() {
        let msg = b"Received: from x\r\n\tby y\r\nFrom: a@b\r\nSubject: hi\r\n there\r\n\r\nReceived: body\r\n";
        let out = clean_submission_headers(msg);
        assert_eq!(
            out,
            b"From: a@b\r\nSubject: [...]\r\n\r\nReceived: body\r\n".to_vec()
        );
    }

    #[test]
    fn lf_only_and_no_body() {
        assert_eq!(
            clean_submission_headers(b"X-Mailer: m\nSubject: s"),
            b"Subject: [...]".to_vec()
        );
        assert_eq!(
            clean_delivery_headers(b"dkim-signature : v=1\n  b=2\nTo: x\n\nbody"),
            b"To: x\n\nbody".to_vec()
        );
    }

    #[test]
    fn keeps_non_fields() {
        let msg = b" stray\r\nnot a header\r\nReceived: r\r\n\r\n";
        assert_eq!(
            clean_delivery_headers(msg),
            b" stray\r\nnot a header\r\n\r\n".to_vec()
        );
    }
}
