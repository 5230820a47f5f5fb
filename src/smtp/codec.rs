//! SMTP wire codec, pure and synchronous (no I/O, no policy), so it can be fuzzed on its own:
//! command-line framing with a length limit, command parsing (smtp-proto plus a fallback for
//! address literals), and the DATA decoder (dot-unstuffing, size and line limits, bare CR/LF and
//! end-of-data smuggling detection).
//!
//! Owns: byte-level grammar. Must not know: sockets, TLS, accounts, reply texts, policy.
//!
//! Why not smtp-proto's receivers: `RequestReceiver` has a fixed 4096-byte line limit and
//! `DataReceiver` has no size or line limit and accepts bare LF / bare CR silently (it only looks
//! for `<CRLF>.<CRLF>`), which is exactly what SMTP smuggling exploits. Both are hand-written here.

use std::borrow::Cow;

use smtp_proto::{Error as ProtoError, Request};

// ---------------------------------------------------------------------------------------------
// Command lines
// ---------------------------------------------------------------------------------------------

/// Result of [`LineFramer::next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its terminator (CRLF, or a bare LF: commands are lenient).
    Line(&'a [u8]),
    /// A line longer than the limit ended; its bytes were discarded.
    TooLong,
    /// No complete line buffered yet.
    NeedMore,
}

/// Splits buffered input into command lines of at most `max` bytes (terminator excluded).
#[derive(Debug)]
pub struct LineFramer {
    max: usize,
    /// Inside an over-long line: drop bytes up to the next LF, then report [`Frame::TooLong`].
    discarding: bool,
}

impl LineFramer {
    pub fn new(max: usize) -> LineFramer {
        LineFramer {
            max,
            discarding: false,
        }
    }

    /// Look at the buffered `input`; returns how many bytes to consume and what was found.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> (usize, Frame<'a>) {
        match input.iter().position(|&b| b == b'\n') {
            Some(p) => {
                if self.discarding {
                    self.discarding = false;
                    return (p + 1, Frame::TooLong);
                }
                let line = &input[..p];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() > self.max {
                    (p + 1, Frame::TooLong)
                } else {
                    (p + 1, Frame::Line(line))
                }
            }
            None if self.discarding || input.len() > self.max + 1 => {
                self.discarding = true;
                (input.len(), Frame::NeedMore)
            }
            None => (0, Frame::NeedMore),
        }
    }
}

/// Why a command line could not be parsed; the session maps these to replies.
#[derive(Debug, PartialEq, Eq)]
pub enum CmdError {
    Unknown,
    /// Usage text for a `501 Syntax:` reply.
    Syntax(&'static str),
    BadSender,
    BadRecipient,
    /// A MAIL/RCPT parameter that is not supported or malformed.
    Parameter,
}

/// Parse one command line (without its terminator).
pub fn parse_command(line: &[u8]) -> Result<Request<String>, CmdError> {
    match parse_raw(line) {
        Err(CmdError::BadSender) | Err(CmdError::BadRecipient) => {
            // smtp-proto rejects address literals (`user@[1.2.3.4]`), which IP-only relays use
            // for every address. Re-parse with a placeholder domain and put the literal back.
            literal_fallback(line).unwrap_or_else(|| parse_raw(line))
        }
        r => r,
    }
}

fn parse_raw(line: &[u8]) -> Result<Request<String>, CmdError> {
    let mut buf = Vec::with_capacity(line.len() + 2);
    buf.extend_from_slice(line);
    buf.extend_from_slice(b"\r\n");
    match Request::parse(&mut buf.iter()) {
        Ok(r) => Ok(r.into_owned()),
        Err(e) => Err(map_error(e)),
    }
}

fn map_error(e: ProtoError) -> CmdError {
    match e {
        ProtoError::UnknownCommand => CmdError::Unknown,
        ProtoError::SyntaxError { syntax } => CmdError::Syntax(syntax),
        ProtoError::InvalidSenderAddress => CmdError::BadSender,
        ProtoError::InvalidRecipientAddress => CmdError::BadRecipient,
        ProtoError::InvalidParameter { .. } | ProtoError::UnsupportedParameter { .. } => {
            CmdError::Parameter
        }
        // A complete line was given, so "needs more data" means it is malformed.
        ProtoError::NeedsMoreData { .. }
        | ProtoError::ResponseTooLong
        | ProtoError::InvalidResponse { .. } => CmdError::Syntax("command"),
    }
}

const PLACEHOLDER_DOMAIN: &str = "address-literal.invalid";

fn literal_fallback(line: &[u8]) -> Option<Result<Request<String>, CmdError>> {
    let open = line.iter().position(|&b| b == b'<')?;
    let close = open + line[open..].iter().position(|&b| b == b'>')?;
    let path = std::str::from_utf8(&line[open + 1..close]).ok()?;
    let (local, domain) = path.rsplit_once('@')?;
    if !is_address_literal(domain) {
        return None;
    }
    let mut patched = Vec::with_capacity(line.len() + PLACEHOLDER_DOMAIN.len());
    patched.extend_from_slice(&line[..open + 1]);
    patched.extend_from_slice(local.as_bytes());
    patched.push(b'@');
    patched.extend_from_slice(PLACEHOLDER_DOMAIN.as_bytes());
    patched.extend_from_slice(&line[close..]);
    let restore = |a: String| match a.strip_suffix(PLACEHOLDER_DOMAIN) {
        Some(l) if l.ends_with('@') => format!("{l}{domain}"),
        _ => a,
    };
    Some(parse_raw(&patched).map(|r| match r {
        Request::Mail { mut from } => {
            from.address = restore(from.address);
            Request::Mail { from }
        }
        Request::Rcpt { mut to } => {
            to.address = restore(to.address);
            Request::Rcpt { to }
        }
        other => other,
    }))
}

/// `[1.2.3.4]` or `[IPv6:...]` (RFC 5321 address literals; general literals are not accepted).
pub fn is_address_literal(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    if let Some(v6) = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
    {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    inner.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Problem with a HELO/EHLO argument, if any.
#[derive(Debug, PartialEq, Eq)]
pub enum HeloProblem {
    Invalid,
    NotFqdn,
}

/// Check a HELO/EHLO name: an address literal or a syntactically valid host name.
pub fn helo_problem(name: &str) -> Option<HeloProblem> {
    if name.starts_with('[') {
        return (!is_address_literal(name)).then_some(HeloProblem::Invalid);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Some(HeloProblem::Invalid);
    }
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Some(HeloProblem::Invalid);
        }
    }
    if !name.contains('.') {
        return Some(HeloProblem::NotFqdn);
    }
    None
}

// ---------------------------------------------------------------------------------------------
// DATA
// ---------------------------------------------------------------------------------------------

/// What started the current line of DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    Start,
    CrLf,
    BareLf,
    BareCr,
}

/// How the data phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnd {
    /// The real end: `<CRLF>.<CRLF>` (or `.<CRLF>` right after DATA).
    Complete,
    /// A `.` line delimited by a bare CR or LF on either side: a peer that splits lines on bare
    /// LF/CR sees the end of data here, we do not, so the stream can no longer be trusted
    /// (SMTP smuggling). Reject and close the connection.
    Ambiguous,
    /// Far more bytes than any acceptable message: stop reading and close.
    Overflow,
}

/// The decoded message or why it is rejected.
#[derive(Debug, PartialEq, Eq)]
pub enum DataResult {
    Message(Vec<u8>),
    TooBig,
    BareLineEnding,
    LineTooLong,
}

/// Streaming DATA decoder: feed buffered input until it reports the end.
#[derive(Debug)]
pub struct DataDecoder {
    max_size: usize,
    max_line: usize,
    /// Raw bytes after which the transfer is abandoned.
    hard_cap: u64,
    raw: u64,
    body: Vec<u8>,
    pending_cr: bool,
    prev: Break,
    seg_len: usize,
    seg_first_dot: bool,
    oversize: bool,
    bad_ending: bool,
    long_line: bool,
}

impl DataDecoder {
    pub fn new(max_size: usize, max_line: usize) -> DataDecoder {
        let max_size_u64 = u64::try_from(max_size).unwrap_or(u64::MAX);
        DataDecoder {
            max_size,
            max_line,
            hard_cap: max_size_u64.saturating_mul(4).saturating_add(1 << 20),
            raw: 0,
            body: Vec::new(),
            pending_cr: false,
            prev: Break::Start,
            seg_len: 0,
            seg_first_dot: false,
            oversize: false,
            bad_ending: false,
            long_line: false,
        }
    }

    /// Consume from `input`. Returns the number of bytes consumed and, once the data phase is
    /// over, how it ended; bytes after the end are not consumed (they are the next command).
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<DataEnd>) {
        let (n, end) = self.feed_inner(input);
        self.raw = self.raw.saturating_add(n as u64);
        if end.is_none() && self.raw > self.hard_cap {
            self.oversize = true;
            return (n, Some(DataEnd::Overflow));
        }
        (n, end)
    }

    fn feed_inner(&mut self, input: &[u8]) -> (usize, Option<DataEnd>) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    i += 1;
                    if let Some(end) = self.end_line(Break::CrLf) {
                        return (i, Some(end));
                    }
                    continue;
                }
                if let Some(end) = self.end_line(Break::BareCr) {
                    return (i, Some(end));
                }
            }
            match b {
                b'\r' => {
                    self.pending_cr = true;
                    i += 1;
                }
                b'\n' => {
                    i += 1;
                    if let Some(end) = self.end_line(Break::BareLf) {
                        return (i, Some(end));
                    }
                }
                _ => {
                    let run_end = input[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .map_or(input.len(), |p| i + p);
                    self.content(&input[i..run_end]);
                    i = run_end;
                }
            }
        }
        (i, None)
    }

    fn content(&mut self, mut run: &[u8]) {
        if self.seg_len == 0 && run.first() == Some(&b'.') {
            // Dot-stuffing: the first dot of a line is removed (or it is the terminator).
            self.seg_first_dot = true;
            self.seg_len = 1;
            run = &run[1..];
        }
        self.seg_len = self.seg_len.saturating_add(run.len());
        if self.seg_len > self.max_line {
            self.long_line = true;
        }
        self.emit(run);
    }

    fn end_line(&mut self, brk: Break) -> Option<DataEnd> {
        let is_dot = self.seg_len == 1 && self.seg_first_dot;
        let clean_start = matches!(self.prev, Break::Start | Break::CrLf);
        if is_dot {
            if clean_start && brk == Break::CrLf {
                return Some(DataEnd::Complete);
            }
            self.bad_ending = true;
            return Some(DataEnd::Ambiguous);
        }
        if brk != Break::CrLf {
            self.bad_ending = true;
        }
        self.emit(b"\r\n");
        self.prev = brk;
        self.seg_len = 0;
        self.seg_first_dot = false;
        None
    }

    fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.oversize || self.bad_ending || self.long_line {
            if !self.body.is_empty() && (self.bad_ending || self.long_line) {
                self.body = Vec::new();
            }
            return;
        }
        if self.body.len().saturating_add(bytes.len()) > self.max_size {
            self.oversize = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    /// The outcome; call after [`DataDecoder::feed`] reported an end.
    pub fn finish(self) -> DataResult {
        if self.bad_ending {
            DataResult::BareLineEnding
        } else if self.oversize {
            DataResult::TooBig
        } else if self.long_line {
            DataResult::LineTooLong
        } else {
            DataResult::Message(self.body)
        }
    }
}

/// Text of a client-supplied value made safe to echo in a reply: printable, bounded.
pub fn printable(s: &str) -> Cow<'_, str> {
    const MAX: usize = 256;
    if s.len() <= MAX && s.chars().all(|c| !c.is_control()) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .filter(|c| !c.is_control())
            .take(MAX)
            .collect::<String>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (usize, Option<DataEnd>, DataResult) {
        decode_with(input, 1 << 20, 1000)
    }

    fn decode_with(input: &[u8], max: usize, line: usize) -> (usize, Option<DataEnd>, DataResult) {
        let mut d = DataDecoder::new(max, line);
        let (n, end) = d.feed(input);
        (n, end, d.finish())
    }

    /// Feeding byte by byte gives the same result as feeding at once.
    fn decode_bytewise(input: &[u8]) -> (usize, Option<DataEnd>, DataResult) {
        let mut d = DataDecoder::new(1 << 20, 1000);
        let mut pos = 0;
        while pos < input.len() {
            let (n, end) = d.feed(&input[pos..pos + 1]);
            pos += n;
            if end.is_some() {
                return (pos, end, d.finish());
            }
            if n == 0 {
                break;
            }
        }
        (pos, None, d.finish())
    }

    #[test]
    fn framer_splits_and_limits() {
        let mut f = LineFramer::new(10);
        assert_eq!(f.next(b"EHLO x\r\nNOOP"), (8, Frame::Line(b"EHLO x")));
        assert_eq!(f.next(b"NOOP"), (0, Frame::NeedMore));
        assert_eq!(f.next(b"NOOP\n"), (5, Frame::Line(b"NOOP")));
        assert_eq!(f.next(b"0123456789\r\n"), (12, Frame::Line(b"0123456789")));
        assert_eq!(f.next(b"01234567890\r\n"), (13, Frame::TooLong));
        // Long line arriving in pieces: discarded, one TooLong at its end.
        assert_eq!(f.next(b"0123456789abc"), (13, Frame::NeedMore));
        assert_eq!(f.next(b"more"), (4, Frame::NeedMore));
        assert_eq!(f.next(b"end\r\nQUIT\r\n"), (5, Frame::TooLong));
        assert_eq!(f.next(b"QUIT\r\n"), (6, Frame::Line(b"QUIT")));
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(
            parse_command(b"EHLO [127.0.0.1]"),
            Ok(Request::Ehlo { host }) if host == "[127.0.0.1]"
        ));
        assert_eq!(parse_command(b"FOO"), Err(CmdError::Unknown));
        assert_eq!(parse_command(b""), Err(CmdError::Unknown));
        assert!(matches!(parse_command(b"EHLO"), Err(CmdError::Syntax(_))));
        match parse_command(b"MAIL FROM:<abc@[1.2.3.4]> BODY=8BITMIME SMTPUTF8") {
            Ok(Request::Mail { from }) => {
                assert_eq!(from.address, "abc@[1.2.3.4]");
                assert_ne!(from.flags, 0);
            }
            r => panic!("{r:?}"),
        }
        match parse_command(b"RCPT TO:<x@[IPv6:::1]>") {
            Ok(Request::Rcpt { to }) => assert_eq!(to.address, "x@[IPv6:::1]"),
            r => panic!("{r:?}"),
        }
        assert_eq!(
            parse_command(b"RCPT TO:<x@[999.1.1.1]>"),
            Err(CmdError::BadRecipient)
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b> FOO=1"),
            Err(CmdError::Parameter)
        );
    }

    #[test]
    fn helo_names() {
        assert_eq!(helo_problem("[127.0.0.1]"), None);
        assert_eq!(helo_problem("[IPv6:::1]"), None);
        assert_eq!(helo_problem("mail.example.org"), None);
        assert_eq!(helo_problem("mail.example.org."), None);
        assert_eq!(helo_problem("localhost"), Some(HeloProblem::NotFqdn));
        assert_eq!(helo_problem("[1.2.3]"), Some(HeloProblem::Invalid));
        assert_eq!(helo_problem("a..b"), Some(HeloProblem::Invalid));
        assert_eq!(helo_problem("-a.b"), Some(HeloProblem::Invalid));
        assert_eq!(helo_problem("a\u{1}b.c"), Some(HeloProblem::Invalid));
        assert_eq!(helo_problem(""), Some(HeloProblem::Invalid));
    }

    #[test]
    fn data_unstuffs_and_ends() {
        let input = b"Subject: x\r\n\r\n..\r\n..leading\r\nlast\r\n.\r\nQUIT\r\n";
        let (n, end, r) = decode(input);
        assert_eq!(end, Some(DataEnd::Complete));
        assert_eq!(&input[n..], b"QUIT\r\n");
        assert_eq!(
            r,
            DataResult::Message(b"Subject: x\r\n\r\n.\r\n.leading\r\nlast\r\n".to_vec())
        );
        assert_eq!(decode_bytewise(input), (n, end, r));
        // Empty message.
        assert_eq!(
            decode(b".\r\n"),
            (3, Some(DataEnd::Complete), DataResult::Message(vec![]))
        );
    }

    #[test]
    fn data_needs_more_until_real_end() {
        let mut d = DataDecoder::new(1000, 1000);
        assert_eq!(d.feed(b"abc\r\n.\r"), (7, None));
        assert_eq!(d.feed(b"\n"), (1, Some(DataEnd::Complete)));
        assert_eq!(d.finish(), DataResult::Message(b"abc\r\n".to_vec()));
    }

    #[test]
    fn bare_line_endings_are_rejected() {
        let (_, end, r) = decode(b"a\nb\r\n.\r\n");
        assert_eq!(
            (end, r),
            (Some(DataEnd::Complete), DataResult::BareLineEnding)
        );
        let (_, end, r) = decode(b"a\rb\r\n.\r\n");
        assert_eq!(
            (end, r),
            (Some(DataEnd::Complete), DataResult::BareLineEnding)
        );
        // A CR right before the CRLF is a bare CR followed by CRLF.
        let (_, end, r) = decode(b"a\r\r\n.\r\n");
        assert_eq!(
            (end, r),
            (Some(DataEnd::Complete), DataResult::BareLineEnding)
        );
    }

    #[test]
    fn smuggling_sequences_end_ambiguously() {
        for input in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
            b".\nMAIL",
        ] {
            let (_, end, r) = decode(input);
            assert_eq!(end, Some(DataEnd::Ambiguous), "{input:?}");
            assert_eq!(r, DataResult::BareLineEnding, "{input:?}");
            let (_, end2, _) = decode_bytewise(input);
            assert_eq!(end2, Some(DataEnd::Ambiguous), "{input:?}");
        }
    }

    #[test]
    fn size_and_line_limits() {
        let mut big = vec![b'x'; 50];
        big.extend_from_slice(b"\r\n.\r\n");
        let (n, end, r) = decode_with(&big, 40, 1000);
        assert_eq!(
            (n, end, r),
            (big.len(), Some(DataEnd::Complete), DataResult::TooBig)
        );
        let (_, end, r) = decode_with(&big, 1000, 49);
        assert_eq!((end, r), (Some(DataEnd::Complete), DataResult::LineTooLong));
        let (_, end, r) = decode_with(&big, 1000, 50);
        assert_eq!(end, Some(DataEnd::Complete));
        assert!(matches!(r, DataResult::Message(m) if m.len() == 52));
        // Endless input is abandoned.
        let mut d = DataDecoder::new(1024, 1000);
        let chunk = vec![b'y'; 1 << 16];
        let mut end = None;
        for _ in 0..100 {
            end = d.feed(&chunk).1;
            if end.is_some() {
                break;
            }
        }
        assert_eq!(end, Some(DataEnd::Overflow));
    }

    #[test]
    fn random_input_never_panics_and_roundtrips() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = [b'.', b'\r', b'\n', b'a', b' ', 0, 0xff];
        for _ in 0..5000 {
            let len = rng.gen_range(0..64);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let whole = decode(&input);
            assert_eq!(whole, decode_bytewise(&input), "{input:?}");
            assert!(whole.0 <= input.len());
            let _ = parse_command(&input);
            let mut f = LineFramer::new(16);
            let _ = f.next(&input);
        }
        // Stuffing then decoding clean CRLF text gives it back.
        for _ in 0..2000 {
            let lines: Vec<String> = (0..rng.gen_range(0..6))
                .map(|_| {
                    (0..rng.gen_range(0..5))
                        .map(|_| ['.', 'a', ' '][rng.gen_range(0..3)])
                        .collect()
                })
                .collect();
            let msg: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
            let stuffed: String = lines
                .iter()
                .map(|l| {
                    if l.starts_with('.') {
                        format!(".{l}\r\n")
                    } else {
                        format!("{l}\r\n")
                    }
                })
                .collect::<String>()
                + ".\r\n";
            let (n, end, r) = decode(stuffed.as_bytes());
            assert_eq!(n, stuffed.len());
            assert_eq!(end, Some(DataEnd::Complete));
            assert_eq!(r, DataResult::Message(msg.into_bytes()));
        }
    }
}
