//! Mailbox-level commands: SELECT/EXAMINE, CREATE, DELETE, LIST/LSUB, STATUS and APPEND, plus
//! mailbox-name rules (hierarchy delimiter `.`, INBOX case-insensitive).
//!
//! Owns: mailbox naming and listing. Must not know: sled, sockets, message parsing.

use std::borrow::Cow;
use std::num::{NonZeroU32, NonZeroU64};

use imap_types::command::SelectParameter;
use imap_types::core::{Atom, QuotedChar};
use imap_types::datetime::DateTime;
use imap_types::extensions::binary::LiteralOrLiteral8;
use imap_types::flag::{Flag, FlagNameAttribute, FlagPerm};
use imap_types::mailbox::{ListMailbox, Mailbox};
use imap_types::response::{Code, Data};
use imap_types::status::{StatusDataItem, StatusDataItemName};

use super::codec;
use super::session::{Done, Session};
use super::view::{imap_flags, store_flags, View};
use crate::replies::imap as r;
use crate::store::{Flags, StoreError, INBOX};

/// Hierarchy delimiter.
pub const DELIMITER: char = '.';
/// Most mailboxes one user may have (chatmail clients use INBOX only).
const MAX_MAILBOXES: usize = 64;
/// Longest mailbox name in bytes.
const MAX_NAME: usize = 200;

/// The store name of a mailbox argument, or `None` if it is not acceptable.
pub fn mailbox_name(m: &Mailbox<'_>) -> Option<String> {
    let raw = match m {
        Mailbox::Inbox => return Some(INBOX.to_string()),
        Mailbox::Other(o) => o.as_ref(),
    };
    let s = std::str::from_utf8(raw).ok()?;
    let s = s.trim_end_matches(DELIMITER);
    if s.is_empty()
        || s.len() > MAX_NAME
        || s.chars().any(|c| c.is_control() || c == '*' || c == '%')
    {
        return None;
    }
    if s.eq_ignore_ascii_case(INBOX) {
        return Some(INBOX.to_string());
    }
    Some(s.to_string())
}

/// A mailbox name for output.
fn out_mailbox(name: &str) -> Option<Mailbox<'static>> {
    if name == INBOX {
        return Some(Mailbox::Inbox);
    }
    Mailbox::try_from(name.to_string()).ok()
}

/// LIST wildcard match: `*` matches anything, `%` anything but the delimiter. Dynamic
/// programming over (pattern, name) positions, so no pattern can make it slow.
pub fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    if pattern.len() > 1024 {
        return false;
    }
    let n = name.len();
    // next[j]: pattern[i+1..] matches name[j..]; cur[j]: pattern[i..] matches name[j..].
    let mut next = vec![false; n + 1];
    next[n] = true;
    for &c in pattern.iter().rev() {
        let mut cur = vec![false; n + 1];
        for j in (0..=n).rev() {
            cur[j] = match c {
                b'*' => next[j] || (j < n && cur[j + 1]),
                b'%' => next[j] || (j < n && name[j] != DELIMITER as u8 && cur[j + 1]),
                c => j < n && name[j] == c && next[j + 1],
            };
        }
        next = cur;
    }
    next[0]
}

fn list_matches(pattern: &[u8], name: &str) -> bool {
    if name == INBOX {
        // INBOX is case-insensitive: compare against the pattern with its INBOX prefix normalised.
        if pattern.len() >= 5 && pattern[..5].eq_ignore_ascii_case(b"INBOX") {
            let mut p = b"INBOX".to_vec();
            p.extend_from_slice(&pattern[5..]);
            return wildcard_match(&p, name.as_bytes());
        }
    }
    wildcard_match(pattern, name.as_bytes())
}

fn system_flags() -> Vec<Flag<'static>> {
    imap_flags(Flags::from_bits(0x1f))
}

impl Session {
    pub(super) async fn cmd_select(
        &mut self,
        tag: &imap_types::core::Tag<'static>,
        mailbox: Mailbox<'static>,
        params: Vec<SelectParameter>,
        read_only: bool,
    ) -> Done {
        // RFC 3501: a SELECT leaves the selected state even if it fails.
        self.sel = None;
        for p in &params {
            match p {
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync { .. } => {
                    return Ok(codec::bad(Some(tag), None, r::NOT_SUPPORTED))
                }
            }
        }
        let Some(name) = mailbox_name(&mailbox) else {
            return Ok(codec::no(
                tag,
                Some(codec::code_atom(r::CODE_NONEXISTENT)),
                r::NO_MAILBOX,
            ));
        };
        if let Some(rx) = self.rx.as_mut() {
            rx.borrow_and_update();
        }
        let addr = self.user();
        let snap = match self.store(move |s| s.snapshot(&addr, &name)).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(self.store_failure(tag, &StoreError::NoMailbox)),
            Err(e) => return Ok(self.store_failure(tag, &e)),
        };
        self.send(&codec::encode_data(Data::Flags(system_flags())));
        self.send(&codec::encode_data(Data::Exists(
            u32::try_from(snap.messages.len()).unwrap_or(u32::MAX),
        )));
        self.send(&codec::encode_data(Data::Recent(0)));
        if let Some(i) = snap
            .messages
            .iter()
            .position(|m| !m.flags.contains(Flags::SEEN))
        {
            if let Some(n) = NonZeroU32::new(i as u32 + 1) {
                self.send(&codec::untagged_ok(Some(Code::Unseen(n)), "First unseen"));
            }
        }
        if let Some(v) = NonZeroU32::new(snap.uidvalidity) {
            self.send(&codec::untagged_ok(
                Some(Code::UidValidity(v)),
                "UIDs valid",
            ));
        }
        if let Some(n) = NonZeroU32::new(snap.uidnext) {
            self.send(&codec::untagged_ok(
                Some(Code::UidNext(n)),
                "Predicted next UID",
            ));
        }
        let perm: Vec<FlagPerm<'static>> = if read_only {
            Vec::new()
        } else {
            system_flags().into_iter().map(FlagPerm::Flag).collect()
        };
        self.send(&codec::untagged_ok(
            Some(Code::PermanentFlags(perm)),
            "Flags permitted",
        ));
        let hms = NonZeroU64::new(snap.highestmodseq).unwrap_or(NonZeroU64::MIN);
        self.send(&codec::untagged_ok(
            Some(Code::HighestModSeq(hms)),
            "Highest",
        ));
        self.sel = Some(View::new(snap, read_only));
        let (code, what) = if read_only {
            (Code::ReadOnly, "EXAMINE")
        } else {
            (Code::ReadWrite, "SELECT")
        };
        Ok(codec::ok(tag, Some(code), &r::completed(what)))
    }

    pub(super) async fn cmd_create(
        &mut self,
        tag: &imap_types::core::Tag<'static>,
        mailbox: Mailbox<'static>,
    ) -> Done {
        let Some(name) = mailbox_name(&mailbox) else {
            return Ok(codec::no(
                tag,
                Some(codec::code_atom(r::CODE_CANNOT)),
                r::BAD_MAILBOX_NAME,
            ));
        };
        if name == INBOX {
            return Ok(self.store_failure(tag, &StoreError::MailboxExists));
        }
        let addr = self.user();
        let res = self
            .store(move |s| {
                if s.mailboxes(&addr)?.len() >= MAX_MAILBOXES {
                    return Ok(false);
                }
                s.create_mailbox(&addr, &name).map(|_| true)
            })
            .await;
        Ok(match res {
            Ok(true) => codec::ok(tag, None, &r::completed("CREATE")),
            Ok(false) => codec::no(
                tag,
                Some(codec::code_atom(r::CODE_LIMIT)),
                r::TOO_MANY_MAILBOXES,
            ),
            Err(e) => self.store_failure(tag, &e),
        })
    }

    pub(super) async fn cmd_delete(
        &mut self,
        tag: &imap_types::core::Tag<'static>,
        mailbox: Mailbox<'static>,
    ) -> Done {
        let Some(name) = mailbox_name(&mailbox) else {
            return Ok(self.store_failure(tag, &StoreError::NoMailbox));
        };
        if name == INBOX {
            return Ok(codec::no(
                tag,
                Some(codec::code_atom(r::CODE_CANNOT)),
                r::CANNOT_DELETE_INBOX,
            ));
        }
        let addr = self.user();
        let n = name.clone();
        match self.store(move |s| s.delete_mailbox(&addr, &n)).await {
            Ok(()) => {
                if self.sel.as_ref().is_some_and(|v| v.name == name) {
                    self.sel = None;
                }
                Ok(codec::ok(tag, None, &r::completed("DELETE")))
            }
            Err(e) => Ok(self.store_failure(tag, &e)),
        }
    }

    pub(super) async fn cmd_list(
        &mut self,
        tag: &imap_types::core::Tag<'static>,
        reference: Mailbox<'static>,
        pattern: ListMailbox<'static>,
        lsub: bool,
    ) -> Done {
        let what = if lsub { "LSUB" } else { "LIST" };
        let pattern: &[u8] = match &pattern {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        };
        let delimiter = QuotedChar::try_from(DELIMITER).ok();
        if pattern.is_empty() {
            // `LIST "" ""`: the hierarchy delimiter and root.
            if !lsub {
                if let (Ok(root), Ok(noselect)) =
                    (Mailbox::try_from(""), Atom::try_from("Noselect"))
                {
                    self.send(&codec::encode_data(Data::List {
                        items: vec![FlagNameAttribute::from(noselect)],
                        delimiter,
                        mailbox: root,
                    }));
                }
            }
            return Ok(codec::ok(tag, None, &r::completed(what)));
        }
        let mut full: Vec<u8> = match &reference {
            Mailbox::Inbox => b"INBOX".to_vec(),
            Mailbox::Other(o) => o.as_ref().to_vec(),
        };
        full.extend_from_slice(pattern);
        let addr = self.user();
        let names = match self.store(move |s| s.mailboxes(&addr)).await {
            Ok(n) => n,
            Err(e) => return Ok(self.store_failure(tag, &e)),
        };
        for name in &names {
            if !list_matches(&full, name) {
                continue;
            }
            let prefix = format!("{name}{DELIMITER}");
            let children = names.iter().any(|n| n.starts_with(&prefix));
            let attr = if children {
                "HasChildren"
            } else {
                "HasNoChildren"
            };
            let (Some(mailbox), Ok(attr)) = (out_mailbox(name), Atom::try_from(attr)) else {
                continue;
            };
            let items = vec![FlagNameAttribute::from(attr)];
            let data = if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            };
            self.send(&codec::encode_data(data));
        }
        Ok(codec::ok(tag, None, &r::completed(what)))
    }

    pub(super) async fn cmd_status(
        &mut self,
        tag: &imap_types::core::Tag<'static>,
        mailbox: Mailbox<'static>,
        items: Vec<StatusDataItemName>,
    ) -> Done {
        let Some(name) = mailbox_name(&mailbox) else {
            return Ok(self.store_failure(tag, &StoreError::NoMailbox));
        };
        let addr = self.user();
        let snap = match self.store(move |s| s.snapshot(&addr, &name)).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(self.store_failure(tag, &StoreError::NoMailbox)),
            Err(e) => return Ok(self.store_failure(tag, &e)),
        };
        let count =
            |f: &dyn Fn(Flags) -> bool| snap.messages.iter().filter(|m| f(m.flags)).count() as u32;
        let mut out = Vec::new();
        for item in items {
            out.push(match item {
                StatusDataItemName::Messages => {
                    StatusDataItem::Messages(snap.messages.len() as u32)
                }
                StatusDataItemName::Recent => StatusDataItem::Recent(0),
                StatusDataItemName::UidNext => StatusDataItem::UidNext(
                    NonZeroU32::new(snap.uidnext).unwrap_or(NonZeroU32::MIN),
                ),
                StatusDataItemName::UidValidity => StatusDataItem::UidValidity(
                    NonZeroU32::new(snap.uidvalidity).unwrap_or(NonZeroU32::MIN),
                ),
                StatusDataItemName::Unseen => {
                    StatusDataItem::Unseen(count(&|f| !f.contains(Flags::SEEN)))
                }
                StatusDataItemName::Deleted => {
                    StatusDataItem::Deleted(count(&|f| f.contains(Flags::DELETED)))
                }
                StatusDataItemName::DeletedStorage => StatusDataItem::DeletedStorage(
                    snap.messages
                        .iter()
                        .filter(|m| m.flags.contains(Flags::DELETED))
                        .map(|m| m.size)
                        .sum(),
                ),
                StatusDataItemName::HighestModSeq => {
                    self.condstore = true;
                    StatusDataItem::HighestModSeq(snap.highestmodseq)
                }
            });
        }
        self.send(&codec::encode_data(Data::Status {
            mailbox,
            items: Cow::Owned(out),
        }));
        Ok(codec::ok(tag, None, &r::completed("STATUS")))
    }

    pub(super) async fn cmd_append(
        &mut self,
        tag: &imap_types::core::Tag<'static>,
        mailbox: Mailbox<'static>,
        flags: Vec<Flag<'static>>,
        date: Option<DateTime>,
        message: LiteralOrLiteral8<'static>,
    ) -> Done {
        let Some(name) = mailbox_name(&mailbox) else {
            return Ok(codec::no(tag, Some(Code::TryCreate), r::NO_MAILBOX));
        };
        let body: Vec<u8> = match message {
            LiteralOrLiteral8::Literal(l) => l.into_inner().into_owned(),
            LiteralOrLiteral8::Literal8(l) => l.data.into_owned(),
        };
        if body.len() as u64 > self.ctx.cfg.max_message_size {
            return Ok(codec::no(tag, Some(Code::TooBig), r::TOO_BIG));
        }
        let flags = store_flags(&flags);
        let date = date
            .map(|d| d.as_ref().timestamp())
            .unwrap_or_else(crate::store::now_unix);
        let (addr, limit) = (self.user(), self.ctx.cfg.max_mailbox_size);
        let res = self
            .store(move |s| {
                if s.usage(&addr)? + body.len() as u64 > limit {
                    return Ok(None);
                }
                s.append(&addr, &name, flags, date, &body).map(Some)
            })
            .await;
        Ok(match res {
            Ok(Some((validity, uid))) => {
                let code = match (NonZeroU32::new(validity), NonZeroU32::new(uid)) {
                    (Some(uid_validity), Some(uid)) => Some(Code::AppendUid { uid_validity, uid }),
                    _ => None,
                };
                codec::ok(tag, code, &r::completed("APPEND"))
            }
            Ok(None) => codec::no(tag, Some(Code::OverQuota), r::OVER_QUOTA),
            Err(StoreError::NoMailbox) => codec::no(tag, Some(Code::TryCreate), r::NO_MAILBOX),
            Err(e) => self.store_failure(tag, &e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*", b"INBOX"));
        assert!(wildcard_match(b"*", b"INBOX.DeltaChat"));
        assert!(wildcard_match(b"%", b"INBOX"));
        assert!(!wildcard_match(b"%", b"INBOX.DeltaChat"));
        assert!(wildcard_match(b"INBOX.%", b"INBOX.DeltaChat"));
        assert!(wildcard_match(b"D*t", b"DeltaChat"));
        assert!(!wildcard_match(b"D*x", b"DeltaChat"));
        assert!(list_matches(b"inbox", "INBOX"));
        assert!(!list_matches(b"inbox", "Other"));
        // Pathological patterns terminate.
        let p = b"*%*%*%*%*%*%*%*%*%*%*%*%*%*%*%*%*%*%x";
        assert!(!wildcard_match(
            p,
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
    }

    #[test]
    fn names() {
        assert_eq!(mailbox_name(&Mailbox::Inbox).as_deref(), Some("INBOX"));
        let m = Mailbox::try_from("DeltaChat.").unwrap();
        assert_eq!(mailbox_name(&m).as_deref(), Some("DeltaChat"));
        let m = Mailbox::try_from("a*b").unwrap();
        assert_eq!(mailbox_name(&m), None);
    }
}
