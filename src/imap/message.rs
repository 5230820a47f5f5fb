//! Just enough RFC 5322 for IMAP: split a message into header and text, select header fields
//! (BODY[HEADER.FIELDS (...)]), read unfolded header values for SEARCH, and case-insensitive
//! substring matching.
//!
//! Owns: byte-level message slicing. Pure: no I/O.
//! Must not know: IMAP syntax, the store, sessions.

/// Offset where the header ends: just after the empty line, or the whole message if there is none.
pub fn header_end(msg: &[u8]) -> usize {
    let mut pos = 0;
    while pos < msg.len() {
        let line_end = match msg[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => msg.len(),
        };
        let line = &msg[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            return line_end;
        }
        pos = line_end;
    }
    msg.len()
}

/// (header including the blank line, text)
pub fn split(msg: &[u8]) -> (&[u8], &[u8]) {
    msg.split_at(header_end(msg))
}

/// The header fields as (name, whole raw field including continuation lines and line ending).
pub fn fields(header: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out: Vec<(&[u8], &[u8])> = Vec::new();
    let mut pos = 0;
    let mut start: Option<usize> = None;
    let mut name: &[u8] = &[];
    while pos < header.len() {
        let line_end = match header[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => header.len(),
        };
        let line = &header[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some(s) = start {
                out.push((name, &header[s..pos]));
            }
            start = None;
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                name = trim(&line[..colon]);
                start = Some(pos);
            }
        }
        pos = line_end;
    }
    if let Some(s) = start {
        out.push((name, &header[s..pos]));
    }
    out
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map(|i| i + 1)
        .unwrap_or(s);
    &b[s..e.max(s)]
}

/// BODY[HEADER.FIELDS (names)] (or `.NOT` if `not`): matching fields in message order, then the
/// blank line. Raw fields without a line ending get CRLF.
pub fn select_fields(header: &[u8], names: &[&[u8]], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, raw) in fields(header) {
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if listed != not {
            out.extend_from_slice(raw);
            if !raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Unfolded values of every field called `name`.
pub fn values(header: &[u8], name: &[u8]) -> Vec<Vec<u8>> {
    fields(header)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, raw)| {
            let colon = raw
                .iter()
                .position(|&b| b == b':')
                .map(|i| i + 1)
                .unwrap_or(0);
            let v: Vec<u8> = raw[colon..]
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            trim(&v).to_vec()
        })
        .collect()
}

/// Case-insensitive (ASCII and simple Unicode) substring test.
pub fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.is_ascii() {
        return haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle));
    }
    let h = String::from_utf8_lossy(haystack).to_lowercase();
    let n = String::from_utf8_lossy(needle).to_lowercase();
    h.contains(&n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Alice <alice@x.test>\r\nSubject: hi\r\n there\r\nMessage-ID: <1@x>\r\nContent-Type: multipart/encrypted;\r\n\tprotocol=\"application/pgp-encrypted\"\r\n\r\nbody\r\n";

    #[test]
    fn splits() {
        let (h, t) = split(MSG);
        assert!(h.ends_with(b"\r\n\r\n"));
        assert_eq!(t, b"body\r\n");
        assert_eq!(split(b"no header end"), (&b"no header end"[..], &b""[..]));
        assert_eq!(split(b"A: b\n\nbody"), (&b"A: b\n\n"[..], &b"body"[..]));
    }

    #[test]
    fn selects_fields_in_order() {
        let (h, _) = split(MSG);
        let out = select_fields(h, &[b"content-type", b"FROM"], false);
        assert_eq!(
            out,
            b"From: Alice <alice@x.test>\r\nContent-Type: multipart/encrypted;\r\n\tprotocol=\"application/pgp-encrypted\"\r\n\r\n"
        );
        assert_eq!(select_fields(h, &[b"x-none"], false), b"\r\n");
        let not = select_fields(h, &[b"from", b"subject", b"content-type"], true);
        assert_eq!(not, b"Message-ID: <1@x>\r\n\r\n");
    }

    #[test]
    fn values_unfold() {
        let (h, _) = split(MSG);
        assert_eq!(values(h, b"subject"), vec![b"hi there".to_vec()]);
        assert!(contains_ci(&values(h, b"from")[0], b"ALICE@x.test"));
        assert!(contains_ci("Grüße".as_bytes(), "GRÜ".as_bytes()));
    }
}
