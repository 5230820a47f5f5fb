//! IMAP wire codec: turns the client's byte stream into decoded messages (commands, SASL data,
//! IDLE's DONE) and serialises responses. Framing (lines and `{N}`/`{N+}` literals) is done by
//! imap-codec's `Fragmentizer`, parsing by its `CommandCodec`, `AuthenticateDataCodec` and
//! `IdleDoneCodec`, output by `ResponseCodec`/`GreetingCodec`.
//!
//! Owns: line and literal limits, the decision which literals may be announced, and the mapping of
//! decode failures to events. Pure: no I/O, no clock.
//! Must not know: sockets, sessions, the store, capabilities.

use std::borrow::Cow;

use imap_codec::encode::Encoder;
use imap_codec::fragmentizer::{DecodeMessageError, FragmentInfo, Fragmentizer};
use imap_codec::{
    AuthenticateDataCodec, CommandCodec, GreetingCodec, IdleDoneCodec, ResponseCodec,
};
use imap_types::auth::AuthenticateData;
use imap_types::command::Command;
use imap_types::core::{LiteralMode, Tag, Vec1};
use imap_types::response::{
    Capability, Code, CodeOther, CommandContinuationRequest, Data, Greeting, GreetingKind,
    Response, Status, StatusKind,
};
use imap_types::IntoStatic;

/// Size limits applied while framing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line (without literals), in bytes.
    pub max_line: usize,
    /// Largest literal accepted in APPEND (a message).
    pub max_message: u32,
}

impl Limits {
    /// Literals in commands other than APPEND carry strings (passwords, tokens): keep them small.
    fn max_small_literal(&self) -> u32 {
        u32::try_from(self.max_line).unwrap_or(u32::MAX)
    }
    /// A whole non-APPEND command including its literals.
    fn max_small_message(&self) -> usize {
        self.max_line.saturating_mul(8)
    }
    fn fragmentizer_cap(&self) -> u32 {
        self.max_message
            .saturating_add(u32::try_from(self.max_small_message()).unwrap_or(u32::MAX))
    }
}

/// What the session expects next from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Command,
    /// A SASL response line after an AUTHENTICATE continuation.
    AuthData,
    /// `DONE` while idling.
    IdleDone,
}

/// Why the connection cannot continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    LineTooLong,
    /// A non-synchronizing literal over the limit is on its way: we cannot skip it safely.
    LiteralTooBig,
}

/// One framing/decoding outcome.
#[derive(Debug)]
pub enum Event {
    Command(Box<Command<'static>>),
    AuthData(AuthenticateData<'static>),
    IdleDone,
    /// The client announced a synchronizing literal we accept: send a continuation request.
    Continue,
    /// A complete message that did not decode. `tag` when one could be recovered.
    Bad {
        tag: Option<Tag<'static>>,
    },
    /// A synchronizing literal was refused; the client will not send it and the command is void.
    /// `append` tells whether it was an APPEND (answer `NO [TOOBIG]`).
    Refused {
        tag: Option<Tag<'static>>,
        append: bool,
    },
    /// The connection must be closed after an error response.
    Fatal {
        tag: Option<Tag<'static>>,
        why: Fatal,
    },
}

/// Splits client input into messages and decodes them.
pub struct Framer {
    frag: Fragmentizer,
    limits: Limits,
    /// Start of the current line within the current message.
    line_start: usize,
    in_literal: bool,
    /// Bytes fed and bytes consumed by fragments: equal means nothing is buffered unparsed.
    fed: u64,
    consumed: u64,
}

/// After a message this large, the framer's buffers are released if nothing else is pending.
const SHRINK_AFTER: usize = 256 * 1024;

impl Framer {
    pub fn new(limits: Limits) -> Framer {
        Framer {
            frag: Fragmentizer::new(limits.fragmentizer_cap()),
            limits,
            line_start: 0,
            in_literal: false,
            fed: 0,
            consumed: 0,
        }
    }

    /// Append bytes received from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.frag.enqueue_bytes(bytes);
        self.fed += bytes.len() as u64;
    }

    /// Give back the memory of a large message (an APPEND) once it is decoded, if no further
    /// input is buffered: the fragmentizer keeps its buffers' capacity otherwise.
    fn shrink_if_idle(&mut self) {
        if self.frag.message_bytes().len() >= SHRINK_AFTER && self.fed == self.consumed {
            *self = Framer::new(self.limits);
        }
    }

    /// Forget everything received so far (after STARTTLS: no plaintext may survive the upgrade).
    pub fn discard(&mut self) {
        *self = Framer::new(self.limits);
    }

    /// Whether bytes of a started message are buffered (for diagnostics and tests).
    pub fn has_partial(&self) -> bool {
        !self.frag.message_bytes().is_empty()
    }

    fn reset_message_state(&mut self) {
        self.line_start = 0;
        self.in_literal = false;
    }

    fn tag(&self) -> Option<Tag<'static>> {
        self.frag.decode_tag().map(IntoStatic::into_static)
    }

    /// The next event, or `None` if more input is needed.
    pub fn next(&mut self, expect: Expect) -> Option<Event> {
        loop {
            let progressed = self.frag.progress();
            if let Some(info) = progressed {
                self.consumed += info.range().len() as u64;
            }
            let Some(info) = progressed else {
                let partial = self
                    .frag
                    .message_bytes()
                    .len()
                    .saturating_sub(self.line_start);
                if !self.in_literal && partial > self.limits.max_line {
                    let tag = self.tag();
                    self.frag.skip_message();
                    self.reset_message_state();
                    return Some(Event::Fatal {
                        tag,
                        why: Fatal::LineTooLong,
                    });
                }
                return None;
            };
            match info {
                FragmentInfo::Literal { end, .. } => {
                    self.in_literal = false;
                    self.line_start = end;
                }
                FragmentInfo::Line {
                    start,
                    end,
                    announcement,
                    ..
                } => {
                    if end - start > self.limits.max_line + 2 {
                        let tag = self.tag();
                        if announcement.is_some() {
                            return Some(self.fatal(tag, Fatal::LineTooLong));
                        }
                        self.reset_message_state();
                        return Some(Event::Fatal {
                            tag,
                            why: Fatal::LineTooLong,
                        });
                    }
                    let Some(ann) = announcement else {
                        self.reset_message_state();
                        let ev = self.decode(expect);
                        self.shrink_if_idle();
                        return Some(ev);
                    };
                    self.in_literal = true;
                    let append = expect == Expect::Command
                        && command_name(self.frag.message_bytes()).as_deref() == Some("APPEND");
                    let (cap, total_cap) = if append {
                        (
                            self.limits.max_message,
                            self.limits.fragmentizer_cap() as usize,
                        )
                    } else if expect == Expect::Command {
                        (
                            self.limits.max_small_literal(),
                            self.limits.max_small_message(),
                        )
                    } else {
                        // No literals in SASL data or DONE.
                        (0, 0)
                    };
                    let total = self.frag.message_bytes().len() + ann.length as usize;
                    if ann.length > cap || total > total_cap {
                        let tag = self.tag();
                        return Some(match ann.mode {
                            LiteralMode::Sync => {
                                self.frag.skip_message();
                                self.reset_message_state();
                                Event::Refused { tag, append }
                            }
                            LiteralMode::NonSync => self.fatal(tag, Fatal::LiteralTooBig),
                        });
                    }
                    if ann.mode == LiteralMode::Sync {
                        return Some(Event::Continue);
                    }
                }
            }
        }
    }

    fn fatal(&mut self, tag: Option<Tag<'static>>, why: Fatal) -> Event {
        self.frag.skip_message();
        self.reset_message_state();
        Event::Fatal { tag, why }
    }

    fn decode(&self, expect: Expect) -> Event {
        match expect {
            Expect::Command => match self.frag.decode_message(&CommandCodec::default()) {
                Ok(cmd) => Event::Command(Box::new(cmd.into_static())),
                Err(e) => {
                    if let DecodeMessageError::DecodingRemainder { .. } = e {
                        tracing::debug!("imap: trailing bytes after command");
                    }
                    Event::Bad { tag: self.tag() }
                }
            },
            Expect::AuthData => match self.frag.decode_message(&AuthenticateDataCodec::default()) {
                Ok(d) => Event::AuthData(d.into_static()),
                Err(_) => Event::Bad { tag: None },
            },
            Expect::IdleDone => match self.frag.decode_message(&IdleDoneCodec::default()) {
                Ok(_) => Event::IdleDone,
                Err(_) => Event::Bad { tag: None },
            },
        }
    }
}

/// The command name of a (partial) message: the word after the tag, or after `UID`.
/// Upper-cased; `None` if the first line has no name yet.
pub fn command_name(msg: &[u8]) -> Option<String> {
    let line_end = msg.iter().position(|&b| b == b'\n').unwrap_or(msg.len());
    let line = &msg[..line_end];
    let mut words = line
        .split(|&b| b == b' ' || b == b'\r')
        .filter(|w| !w.is_empty());
    let _tag = words.next()?;
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case(b"UID") {
        name = words.next()?;
    }
    Some(String::from_utf8_lossy(name).to_ascii_uppercase())
}

// ---- output ----

/// Serialise one response. Literals in responses never need a continuation, so the fragments
/// are simply concatenated.
pub fn encode(resp: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(resp).dump()
}

pub fn encode_data(data: Data<'_>) -> Vec<u8> {
    encode(&Response::Data(data))
}

/// Replace characters that IMAP `text` cannot carry.
fn clean_text(text: &str) -> Cow<'_, str> {
    if !text.is_empty() && !text.contains(['\r', '\n', '\0']) && !text.starts_with('[') {
        return Cow::Borrowed(text);
    }
    let t: String = text
        .chars()
        .map(|c| {
            if matches!(c, '\r' | '\n' | '\0') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let t = t.trim_start_matches('[').trim().to_string();
    Cow::Owned(if t.is_empty() { "-".to_string() } else { t })
}

/// A status response: tagged if `tag` is given, else untagged.
pub fn status(
    tag: Option<&Tag<'_>>,
    kind: StatusKind,
    code: Option<Code<'_>>,
    text: &str,
) -> Vec<u8> {
    let text = clean_text(text);
    match Status::new(tag.cloned(), kind, code, text.as_ref()) {
        Ok(s) => encode(&Response::Status(s)),
        // Unreachable after clean_text; hand-written so that no input can panic us.
        Err(_) => b"* BAD Internal error\r\n".to_vec(),
    }
}

pub fn ok(tag: &Tag<'_>, code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    status(Some(tag), StatusKind::Ok, code, text)
}

pub fn no(tag: &Tag<'_>, code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    status(Some(tag), StatusKind::No, code, text)
}

/// BAD, tagged if the tag is known.
pub fn bad(tag: Option<&Tag<'_>>, code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    status(tag, StatusKind::Bad, code, text)
}

pub fn untagged_ok(code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    status(None, StatusKind::Ok, code, text)
}

pub fn bye(code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    let text = clean_text(text);
    match Status::bye(code, text.as_ref()) {
        Ok(s) => encode(&Response::Status(s)),
        Err(_) => b"* BYE\r\n".to_vec(),
    }
}

/// `+ text`
pub fn continuation(text: &str) -> Vec<u8> {
    let text = clean_text(text);
    match CommandContinuationRequest::basic(None, text.as_ref()) {
        Ok(c) => encode(&Response::CommandContinuationRequest(c)),
        Err(_) => b"+ \r\n".to_vec(),
    }
}

/// `+ ` with empty base64 data (SASL challenge of PLAIN).
pub fn continuation_empty() -> Vec<u8> {
    encode(&Response::CommandContinuationRequest(
        CommandContinuationRequest::base64(&b""[..]),
    ))
}

pub fn greeting(caps: &[&str], text: &str) -> Vec<u8> {
    let text = clean_text(text);
    match Greeting::new(GreetingKind::Ok, capability_code(caps), text.as_ref()) {
        Ok(g) => GreetingCodec::default().encode(&g).dump(),
        Err(_) => b"* OK\r\n".to_vec(),
    }
}

fn capabilities<'a>(caps: &[&'a str]) -> Option<Vec1<Capability<'a>>> {
    let list: Vec<Capability<'a>> = caps
        .iter()
        .filter_map(|c| Capability::try_from(*c).ok())
        .collect();
    Vec1::try_from(list).ok()
}

/// `[CAPABILITY ...]`
pub fn capability_code<'a>(caps: &[&'a str]) -> Option<Code<'a>> {
    capabilities(caps).map(Code::Capability)
}

/// `* CAPABILITY ...`
pub fn capability_data(caps: &[&str]) -> Vec<u8> {
    match capabilities(caps) {
        Some(c) => encode_data(Data::Capability(c)),
        None => Vec::new(),
    }
}

/// A response code imap-types has no variant for, from a constant atom.
pub fn code_atom(atom: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(atom.as_bytes()))
}

#[cfg(test)]
mod tests;
