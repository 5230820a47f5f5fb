//! Commands that change messages of the selected mailbox: STORE, EXPUNGE, UID EXPUNGE, CLOSE,
//! UNSELECT, COPY and MOVE (with UIDPLUS `COPYUID`, CONDSTORE `UNCHANGEDSINCE`/`MODIFIED`).
//!
//! Owns: announcing the session's own changes so later syncs do not repeat them.
//! Must not know: sockets, sled, framing.

use std::num::NonZeroU32;

use imap_types::command::StoreModifier;
use imap_types::core::{Tag, Vec1};
use imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_types::mailbox::Mailbox;
use imap_types::response::{Code, Data};
use imap_types::sequence::SequenceSet;

use super::codec;
use super::folders::mailbox_name;
use super::session::{Done, Session};
use super::view::{flags_fetch, store_flags};
use crate::replies::imap as r;
use crate::store::{FlagOp, StoreError};

/// Paired UID sets for COPYUID, with runs that are consecutive on both sides as ranges.
fn uid_sets(pairs: &[(u32, u32)]) -> Option<(UidSet, UidSet)> {
    let mut src = Vec::new();
    let mut dst = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j + 1 < pairs.len()
            && pairs[j + 1].0 == pairs[j].0.wrapping_add(1)
            && pairs[j + 1].1 == pairs[j].1.wrapping_add(1)
        {
            j += 1;
        }
        let el = |a: u32, b: u32| -> Option<UidElement> {
            let (a, b) = (NonZeroU32::new(a)?, NonZeroU32::new(b)?);
            Some(if a == b {
                UidElement::Single(a)
            } else {
                UidElement::Range(a, b)
            })
        };
        src.push(el(pairs[i].0, pairs[j].0)?);
        dst.push(el(pairs[i].1, pairs[j].1)?);
        i = j + 1;
    }
    Some((
        UidSet(Vec1::try_from(src).ok()?),
        UidSet(Vec1::try_from(dst).ok()?),
    ))
}

fn copyuid(validity: u32, pairs: &[(u32, u32)]) -> Option<Code<'static>> {
    let (source, destination) = uid_sets(pairs)?;
    Some(Code::CopyUid {
        uid_validity: NonZeroU32::new(validity)?,
        source,
        destination,
    })
}

impl Session {
    fn read_only_refusal(&self, tag: &Tag<'_>) -> Option<Vec<u8>> {
        match self.sel.as_ref() {
            Some(v) if v.read_only => Some(codec::no(
                tag,
                Some(codec::code_atom(r::CODE_CANNOT)),
                r::READ_ONLY,
            )),
            Some(_) => None,
            None => Some(codec::bad(Some(tag), None, r::WRONG_STATE)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn cmd_store(
        &mut self,
        tag: &Tag<'static>,
        set: SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: Vec<Flag<'static>>,
        uid: bool,
        modifiers: Vec<StoreModifier>,
    ) -> Done {
        if let Some(refusal) = self.read_only_refusal(tag) {
            return Ok(refusal);
        }
        let unchanged_since = modifiers
            .iter()
            .map(|StoreModifier::UnchangedSince(n)| *n)
            .next();
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let Some(view) = self.sel.as_ref() else {
            return Ok(codec::bad(Some(tag), None, r::WRONG_STATE));
        };
        let uids: Vec<u32> = view
            .resolve(&set, uid)
            .into_iter()
            .map(|i| view.msgs[i].uid)
            .collect();
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        let flags = store_flags(&flags);
        let what = if uid { "UID STORE" } else { "STORE" };
        if uids.is_empty() {
            return Ok(codec::ok(tag, None, &r::completed(what)));
        }
        let (addr, name) = (self.user(), view.name.clone());
        let res = match self
            .store(move |s| s.store_flags(&addr, &name, &uids, op, flags, unchanged_since))
            .await
        {
            Ok(res) => res,
            Err(e) => return Ok(self.store_failure(tag, &e)),
        };
        let condstore = self.condstore;
        let mut out = Vec::new();
        let mut modified = Vec::new();
        if let Some(view) = self.sel.as_mut() {
            for m in &res.changed {
                view.update(m);
                if response == StoreResponse::Answer {
                    if let Some(i) = view.index_of(m.uid) {
                        out.push(flags_fetch(i + 1, &view.msgs[i], uid, condstore));
                    }
                }
            }
            for u in &res.failed {
                let n = if uid {
                    Some(*u)
                } else {
                    view.index_of(*u).map(|i| i as u32 + 1)
                };
                if let Some(n) = n.and_then(NonZeroU32::new) {
                    modified.push(n);
                }
            }
        }
        for d in out {
            let bytes = codec::encode_data(d);
            self.emit(&bytes).await?;
        }
        let code = SequenceSet::try_from(modified).ok().map(Code::Modified);
        Ok(codec::ok(tag, code, &r::completed(what)))
    }

    pub(super) async fn cmd_expunge(
        &mut self,
        tag: &Tag<'static>,
        set: Option<SequenceSet>,
    ) -> Done {
        if let Some(refusal) = self.read_only_refusal(tag) {
            return Ok(refusal);
        }
        let Some(view) = self.sel.as_ref() else {
            return Ok(codec::bad(Some(tag), None, r::WRONG_STATE));
        };
        let what = if set.is_some() {
            "UID EXPUNGE"
        } else {
            "EXPUNGE"
        };
        let only: Option<Vec<u32>> = set.map(|s| {
            view.resolve(&s, true)
                .into_iter()
                .map(|i| view.msgs[i].uid)
                .collect()
        });
        if only.as_ref().is_some_and(|o| o.is_empty()) {
            return Ok(codec::ok(tag, None, &r::completed(what)));
        }
        let (addr, name) = (self.user(), view.name.clone());
        let removed = match self
            .store(move |s| s.expunge(&addr, &name, only.as_deref()))
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(self.store_failure(tag, &e)),
        };
        self.announce_expunged(&removed).await?;
        Ok(codec::ok(tag, None, &r::completed(what)))
    }

    async fn announce_expunged(&mut self, uids: &[u32]) -> Result<(), super::session::Close> {
        let seqs = match self.sel.as_mut() {
            Some(v) => v.remove_uids(uids),
            None => Vec::new(),
        };
        for s in seqs {
            if let Some(n) = NonZeroU32::new(s) {
                let bytes = codec::encode_data(Data::Expunge(n));
                self.emit(&bytes).await?;
            }
        }
        Ok(())
    }

    /// CLOSE (`expunge`: silently remove `\Deleted` messages first) and UNSELECT.
    pub(super) async fn cmd_close(&mut self, tag: &Tag<'static>, expunge: bool) -> Done {
        let Some(view) = self.sel.take() else {
            return Ok(codec::bad(Some(tag), None, r::WRONG_STATE));
        };
        let what = if expunge { "CLOSE" } else { "UNSELECT" };
        if expunge && !view.read_only {
            let (addr, name) = (self.user(), view.name.clone());
            if let Err(e) = self.store(move |s| s.expunge(&addr, &name, None)).await {
                return Ok(self.store_failure(tag, &e));
            }
        }
        Ok(codec::ok(tag, None, &r::completed(what)))
    }

    /// COPY, MOVE and their UID forms.
    pub(super) async fn cmd_copy(
        &mut self,
        tag: &Tag<'static>,
        set: SequenceSet,
        mailbox: Mailbox<'static>,
        uid: bool,
        is_move: bool,
    ) -> Done {
        if is_move {
            if let Some(refusal) = self.read_only_refusal(tag) {
                return Ok(refusal);
            }
        }
        let what = match (uid, is_move) {
            (false, false) => "COPY",
            (true, false) => "UID COPY",
            (false, true) => "MOVE",
            (true, true) => "UID MOVE",
        };
        let Some(dest) = mailbox_name(&mailbox) else {
            return Ok(codec::no(tag, Some(Code::TryCreate), r::NO_MAILBOX));
        };
        let Some(view) = self.sel.as_ref() else {
            return Ok(codec::bad(Some(tag), None, r::WRONG_STATE));
        };
        let uids: Vec<u32> = view
            .resolve(&set, uid)
            .into_iter()
            .map(|i| view.msgs[i].uid)
            .collect();
        if uids.is_empty() {
            return Ok(codec::ok(tag, None, &r::completed(what)));
        }
        let (addr, from) = (self.user(), view.name.clone());
        let res = self
            .store(move |s| {
                if is_move {
                    s.move_messages(&addr, &from, &dest, &uids)
                } else {
                    s.copy(&addr, &from, &dest, &uids)
                }
            })
            .await;
        let (validity, pairs) = match res {
            Ok(x) => x,
            Err(StoreError::NoMailbox) => {
                return Ok(codec::no(tag, Some(Code::TryCreate), r::NO_MAILBOX))
            }
            Err(e) => return Ok(self.store_failure(tag, &e)),
        };
        let code = copyuid(validity, &pairs);
        if !is_move {
            return Ok(codec::ok(tag, code, &r::completed(what)));
        }
        if code.is_some() {
            self.send(&codec::untagged_ok(code, "Moved"));
        }
        let moved: Vec<u32> = pairs.iter().map(|(s, _)| *s).collect();
        self.announce_expunged(&moved).await?;
        Ok(codec::ok(tag, None, &r::completed(what)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copyuid_ranges() {
        let code = copyuid(5, &[(1, 10), (2, 11), (3, 12), (7, 13)]).unwrap();
        let line = codec::ok(&Tag::try_from("A").unwrap(), Some(code), "done");
        assert_eq!(line, b"A OK [COPYUID 5 1:3,7 10:12,13] done\r\n");
        assert!(copyuid(5, &[]).is_none());
    }
}
