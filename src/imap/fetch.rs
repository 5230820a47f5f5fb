//! FETCH and UID FETCH: item expansion, CONDSTORE (`MODSEQ`, `CHANGEDSINCE`), implicit `\Seen`,
//! body sections (`BODY[]`, `HEADER`, `HEADER.FIELDS[.NOT]`, `TEXT`, partial `<a.b>`), and a
//! simple ENVELOPE.
//!
//! Owns: rendering one message's FETCH response. Must not know: sockets, sled, framing.

use std::borrow::Cow;
use std::collections::HashSet;
use std::num::NonZeroU32;

use imap_types::command::FetchModifier;
use imap_types::core::{IString, Literal, NString, Tag, Vec1};
use imap_types::datetime::DateTime;
use imap_types::envelope::{Address, Envelope};
use imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_types::response::Data;
use imap_types::sequence::SequenceSet;
use imap_types::IntoStatic;

use super::codec;
use super::message;
use super::session::{Done, Session};
use super::view::{fetch_flags, modseq_item, uid_item};
use crate::replies::imap as r;
use crate::store::{FlagOp, Flags, MsgInfo};

impl Session {
    pub(super) async fn cmd_fetch(
        &mut self,
        tag: &Tag<'static>,
        set: SequenceSet,
        items: MacroOrMessageDataItemNames<'static>,
        uid: bool,
        modifiers: Vec<FetchModifier>,
    ) -> Done {
        use MessageDataItemName as N;
        let mut names: Vec<N<'static>> = match items {
            MacroOrMessageDataItemNames::Macro(m) => m
                .expand()
                .into_iter()
                .map(IntoStatic::into_static)
                .collect(),
            MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
        };
        let mut changed_since = None;
        for m in modifiers {
            match m {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => {
                    return Ok(codec::bad(Some(tag), None, r::NOT_SUPPORTED));
                }
            }
        }
        if names.iter().any(|n| {
            matches!(
                n,
                N::Body | N::BodyStructure | N::Binary { .. } | N::BinarySize { .. }
            )
        }) {
            return Ok(codec::bad(Some(tag), None, r::UNSUPPORTED_FETCH));
        }
        if changed_since.is_some() || names.contains(&N::ModSeq) {
            self.condstore = true;
        }
        if uid && !names.contains(&N::Uid) {
            names.insert(0, N::Uid);
        }
        if (changed_since.is_some() || (self.condstore && names.contains(&N::Flags)))
            && !names.contains(&N::ModSeq)
        {
            names.push(N::ModSeq);
        }
        let needs_body = names.iter().any(|n| {
            matches!(
                n,
                N::BodyExt { .. } | N::Rfc822 | N::Rfc822Header | N::Rfc822Text | N::Envelope
            )
        });
        let sets_seen = names.iter().any(|n| {
            matches!(
                n,
                N::BodyExt { peek: false, .. } | N::Rfc822 | N::Rfc822Text
            )
        });

        let Some(view) = self.sel.as_mut() else {
            return Ok(codec::bad(Some(tag), None, r::WRONG_STATE));
        };
        let mut idx = view.resolve(&set, uid);
        if names.contains(&N::Flags) {
            // Flag changes held back before this FETCH are reported in its own responses.
            for &i in &idx {
                let uid = view.msgs[i].uid;
                view.take_pending(uid);
            }
        }
        if let Some(cs) = changed_since {
            idx.retain(|&i| view.msgs[i].modseq > cs);
        }
        let mut seen_now = HashSet::new();
        if sets_seen && !view.read_only {
            let unseen: Vec<u32> = idx
                .iter()
                .map(|&i| &view.msgs[i])
                .filter(|m| !m.flags.contains(Flags::SEEN))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let name = view.name.clone();
                let addr = self.user();
                let res = self
                    .store(move |s| {
                        s.store_flags(&addr, &name, &unseen, FlagOp::Add, Flags::SEEN, None)
                    })
                    .await;
                match res {
                    Ok(res) => {
                        if let Some(view) = self.sel.as_mut() {
                            for m in &res.changed {
                                view.update(m);
                                seen_now.insert(m.uid);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(service = "imap", "cannot set \\Seen: {e}"),
                }
            }
        }
        let targets: Vec<(usize, MsgInfo)> = match self.sel.as_ref() {
            Some(view) => idx.iter().map(|&i| (i + 1, view.msgs[i])).collect(),
            None => Vec::new(),
        };
        for (seq, info) in targets {
            let body = if needs_body {
                match self.store(move |s| s.read_body(&info)).await {
                    Ok(b) => Some(b),
                    // Expunged by another session meanwhile: nothing to show.
                    Err(_) => continue,
                }
            } else {
                None
            };
            let add_flags = seen_now.contains(&info.uid) && !names.contains(&N::Flags);
            let bytes = render(
                seq,
                &info,
                &names,
                body.as_deref(),
                add_flags,
                self.condstore,
            );
            self.emit(&bytes).await?;
        }
        let what = if uid { "UID FETCH" } else { "FETCH" };
        Ok(codec::ok(tag, None, &r::completed(what)))
    }
}

/// One `* seq FETCH (...)` response.
pub fn render(
    seq: usize,
    info: &MsgInfo,
    names: &[MessageDataItemName<'_>],
    body: Option<&[u8]>,
    add_flags: bool,
    condstore: bool,
) -> Vec<u8> {
    use MessageDataItemName as N;
    let body = body.unwrap_or(b"");
    let (header, text) = message::split(body);
    let mut items: Vec<MessageDataItem<'_>> = Vec::with_capacity(names.len() + 2);
    for n in names {
        match n {
            N::Uid => items.push(uid_item(info.uid)),
            N::Flags => items.push(fetch_flags(info.flags)),
            N::ModSeq => items.push(modseq_item(info.modseq)),
            N::Rfc822Size => {
                items.push(MessageDataItem::Rfc822Size(
                    u32::try_from(info.size).unwrap_or(u32::MAX),
                ));
            }
            N::InternalDate => {
                if let Some(d) = internal_date(info.internal_date) {
                    items.push(MessageDataItem::InternalDate(d));
                }
            }
            N::BodyExt {
                section, partial, ..
            } => {
                let data = section_bytes(body, header, text, section.as_ref());
                let (origin, data) = match partial {
                    Some((start, len)) => (Some(*start), slice(data, *start, len.get())),
                    None => (None, data),
                };
                items.push(MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin,
                    data: nstring(data),
                });
            }
            N::Rfc822 => items.push(MessageDataItem::Rfc822(nstring(Cow::Borrowed(body)))),
            N::Rfc822Header => items.push(MessageDataItem::Rfc822Header(nstring(Cow::Borrowed(
                header,
            )))),
            N::Rfc822Text => items.push(MessageDataItem::Rfc822Text(nstring(Cow::Borrowed(text)))),
            N::Envelope => items.push(MessageDataItem::Envelope(envelope(header))),
            _ => {}
        }
    }
    if add_flags {
        items.push(fetch_flags(info.flags));
        if condstore && !names.contains(&N::ModSeq) {
            items.push(modseq_item(info.modseq));
        }
    }
    let items = Vec1::try_from(items).unwrap_or_else(|_| Vec1::from(uid_item(info.uid)));
    let seq = NonZeroU32::new(u32::try_from(seq).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    codec::encode_data(Data::Fetch { seq, items })
}

fn section_bytes<'a>(
    body: &'a [u8],
    header: &'a [u8],
    text: &'a [u8],
    section: Option<&Section<'_>>,
) -> Cow<'a, [u8]> {
    let names = |list: &Vec1<imap_types::core::AString<'_>>| -> Vec<Vec<u8>> {
        list.as_ref().iter().map(|a| a.as_ref().to_vec()).collect()
    };
    match section {
        None => Cow::Borrowed(body),
        Some(Section::Header(None)) => Cow::Borrowed(header),
        Some(Section::HeaderFields(None, list)) => {
            let n = names(list);
            let refs: Vec<&[u8]> = n.iter().map(|v| v.as_slice()).collect();
            Cow::Owned(message::select_fields(header, &refs, false))
        }
        Some(Section::HeaderFieldsNot(None, list)) => {
            let n = names(list);
            let refs: Vec<&[u8]> = n.iter().map(|v| v.as_slice()).collect();
            Cow::Owned(message::select_fields(header, &refs, true))
        }
        Some(Section::Text(None)) => Cow::Borrowed(text),
        // Without MIME parsing only a single-part message's part 1 (its text) is known.
        Some(Section::Part(part))
            if part.0.as_ref().len() == 1 && part.0.as_ref()[0].get() == 1 =>
        {
            let multipart = message::values(header, b"content-type")
                .first()
                .is_some_and(|v| message::contains_ci(&v[..v.len().min(10)], b"multipart"));
            if multipart {
                Cow::Borrowed(b"")
            } else {
                Cow::Borrowed(text)
            }
        }
        Some(_) => Cow::Borrowed(b""),
    }
}

fn slice(data: Cow<'_, [u8]>, start: u32, len: u32) -> Cow<'_, [u8]> {
    let s = (start as usize).min(data.len());
    let e = s.saturating_add(len as usize).min(data.len());
    match data {
        Cow::Borrowed(b) => Cow::Borrowed(&b[s..e]),
        Cow::Owned(v) => Cow::Owned(v[s..e].to_vec()),
    }
}

/// A literal for message data. IMAP literals cannot carry NUL; like Dovecot we send 0x80 instead.
fn nstring(data: Cow<'_, [u8]>) -> NString<'_> {
    let lit = if data.contains(&0) {
        Literal::try_from(denul(&data))
    } else {
        match data {
            Cow::Borrowed(b) => Literal::try_from(b),
            Cow::Owned(v) => Literal::try_from(v),
        }
    };
    NString(lit.ok().map(IString::Literal))
}

fn denul(b: &[u8]) -> Vec<u8> {
    b.iter().map(|&c| if c == 0 { 0x80 } else { c }).collect()
}

fn internal_date(unix: i64) -> Option<DateTime> {
    let dt = chrono::DateTime::from_timestamp(unix, 0)
        .or_else(|| chrono::DateTime::from_timestamp(0, 0))?;
    DateTime::try_from(dt.fixed_offset()).ok()
}

/// A string for envelope fields: quoted when possible, else a literal.
fn env_string(v: &[u8]) -> NString<'static> {
    if v.is_empty() {
        return NString(None);
    }
    NString(IString::try_from(denul(v)).ok())
}

fn first_value(header: &[u8], name: &[u8]) -> NString<'static> {
    match message::values(header, name).first() {
        Some(v) => env_string(v),
        None => NString(None),
    }
}

/// Split an address list on commas outside quotes and angle brackets.
fn split_addresses(v: &[u8]) -> Vec<&[u8]> {
    let (mut out, mut start, mut quoted, mut angle) = (Vec::new(), 0, false, false);
    let mut escaped = false;
    for (i, &c) in v.iter().enumerate() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&v[start..]);
    out.into_iter()
        .map(|a| a.trim_ascii())
        .filter(|a| !a.is_empty())
        .collect()
}

fn addresses(header: &[u8], name: &[u8]) -> Vec<Address<'static>> {
    let mut out = Vec::new();
    for value in message::values(header, name) {
        for a in split_addresses(&value) {
            let (display, spec) = match (
                a.iter().position(|&c| c == b'<'),
                a.iter().rposition(|&c| c == b'>'),
            ) {
                (Some(l), Some(r)) if l < r => (a[..l].trim_ascii(), &a[l + 1..r]),
                _ => (&b""[..], a),
            };
            let display = display
                .strip_prefix(b"\"")
                .and_then(|d| d.strip_suffix(b"\""))
                .unwrap_or(display);
            let (mailbox, host) = match spec.iter().rposition(|&c| c == b'@') {
                Some(at) => (&spec[..at], &spec[at + 1..]),
                None => (spec, &b""[..]),
            };
            out.push(Address {
                name: env_string(display),
                adl: NString(None),
                mailbox: env_string(mailbox),
                host: env_string(host),
            });
        }
    }
    out
}

/// ENVELOPE from the header (RFC 3501 §7.4.2): no MIME word decoding, no group syntax.
fn envelope(header: &[u8]) -> Envelope<'static> {
    let from = addresses(header, b"from");
    let sender = match addresses(header, b"sender") {
        s if s.is_empty() => from.clone(),
        s => s,
    };
    let reply_to = match addresses(header, b"reply-to") {
        s if s.is_empty() => from.clone(),
        s => s,
    };
    Envelope {
        date: first_value(header, b"date"),
        subject: first_value(header, b"subject"),
        from,
        sender,
        reply_to,
        to: addresses(header, b"to"),
        cc: addresses(header, b"cc"),
        bcc: addresses(header, b"bcc"),
        in_reply_to: first_value(header, b"in-reply-to"),
        message_id: first_value(header, b"message-id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Flags;

    const MSG: &[u8] =
        b"From: \"Alice A\" <alice@x.test>\r\nTo: b@y.test, c@z.test\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nbody\0x\r\n";

    fn info() -> MsgInfo {
        MsgInfo {
            uid: 7,
            blob: 1,
            flags: Flags::SEEN,
            modseq: 3,
            size: MSG.len() as u64,
            internal_date: 1_700_000_000,
        }
    }

    fn fetch(items: &str) -> String {
        let cmd = format!("A UID FETCH 7 {items}\r\n");
        let mut f = codec::Framer::new(codec::Limits {
            max_line: 1000,
            max_message: 1000,
        });
        f.feed(cmd.as_bytes());
        let Some(codec::Event::Command(c)) = f.next(codec::Expect::Command) else {
            panic!("parse {items}")
        };
        let imap_types::command::CommandBody::Fetch {
            macro_or_item_names,
            ..
        } = c.body
        else {
            panic!()
        };
        let names = match macro_or_item_names {
            MacroOrMessageDataItemNames::Macro(m) => m
                .expand()
                .into_iter()
                .map(IntoStatic::into_static)
                .collect(),
            MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
        };
        String::from_utf8_lossy(&render(2, &info(), &names, Some(MSG), false, false)).into_owned()
    }

    #[test]
    fn header_fields_echo_and_content() {
        let out = fetch("(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID FROM)])");
        assert_eq!(
            out,
            format!(
                "* 2 FETCH (UID 7 RFC822.SIZE {} BODY[HEADER.FIELDS (MESSAGE-ID FROM)] {{53}}\r\nFrom: \"Alice A\" <alice@x.test>\r\nMessage-ID: <1@x>\r\n\r\n)\r\n",
                MSG.len()
            )
        );
    }

    #[test]
    fn full_body_partial_text_and_nul() {
        let out = fetch("(FLAGS BODY.PEEK[])");
        assert!(
            out.starts_with("* 2 FETCH (FLAGS (\\Seen) BODY[] {"),
            "{out}"
        );
        assert!(
            out.contains("body\u{FFFD}x"),
            "NUL must be replaced: {out:?}"
        );
        let out = fetch("(BODY.PEEK[TEXT]<0.4>)");
        assert_eq!(out, "* 2 FETCH (BODY[TEXT]<0> {4}\r\nbody)\r\n");
        let out = fetch("(INTERNALDATE)");
        assert!(
            out.contains("INTERNALDATE \"14-Nov-2023 22:13:20 +0000\""),
            "{out}"
        );
    }

    #[test]
    fn envelope_renders() {
        let out = fetch("(ENVELOPE)");
        assert!(
            out.contains("((\"Alice A\" NIL \"alice\" \"x.test\"))"),
            "{out}"
        );
        assert!(out.contains("\"<1@x>\")"), "{out}");
    }
}
