//! The session's view of its selected mailbox: the ordered list of messages the client has been
//! told about (sequence number = position + 1), sequence-set resolution, and the diff against a
//! fresh store snapshot that yields EXPUNGE / EXISTS / FETCH (FLAGS) updates.
//!
//! Owns: the sequence-number mapping of one session. Pure: no I/O.
//! Must not know: sockets, the wire syntax of responses beyond imap-types values, other sessions.

use std::num::{NonZeroU32, NonZeroU64};

use imap_types::core::Vec1;
use imap_types::fetch::MessageDataItem;
use imap_types::flag::{Flag, FlagFetch};
use imap_types::response::Data;
use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::store::{Flags, MsgInfo, Snapshot};

pub struct View {
    pub name: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    pub highestmodseq: u64,
    /// What the client knows, ordered by UID.
    pub msgs: Vec<MsgInfo>,
    /// The store has expunged messages we could not announce yet (RFC 3501 §7.4.1).
    pub expunge_pending: bool,
    /// Newer flag states of messages in `msgs` that were not announced yet (see [`Mode`]).
    pub pending_flags: Vec<MsgInfo>,
}

/// What a sync may announce.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// EXPUNGE responses are allowed (not during FETCH/STORE/SEARCH by sequence number).
    pub allow_expunge: bool,
    /// Keep flag changes back (before a FETCH): Delta Chat takes the *first* FETCH response
    /// carrying a UID as the answer, so a flag update must not precede the one with the body.
    pub defer_flags: bool,
}

impl Mode {
    pub const ALL: Mode = Mode {
        allow_expunge: true,
        defer_flags: false,
    };
}

impl View {
    pub fn new(snap: Snapshot, read_only: bool) -> View {
        View {
            name: snap.name,
            read_only,
            uidvalidity: snap.uidvalidity,
            highestmodseq: snap.highestmodseq,
            msgs: snap.messages,
            expunge_pending: false,
            pending_flags: Vec::new(),
        }
    }

    pub fn exists(&self) -> u32 {
        u32::try_from(self.msgs.len()).unwrap_or(u32::MAX)
    }

    /// Index of a UID in the view.
    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// Resolve a sequence set (sequence numbers, or UIDs if `uid`) to sorted, unique indexes
    /// into `msgs`. Numbers that match nothing are ignored; ranges may be given in either order.
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        let n = self.msgs.len();
        if n == 0 {
            return Vec::new();
        }
        let star = if uid { self.msgs[n - 1].uid } else { n as u32 };
        let val = |s: &SeqOrUid| match s {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => star,
        };
        let mut out = Vec::new();
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(s) => (val(s), val(s)),
                Sequence::Range(a, b) => (val(a), val(b)),
            };
            let (lo, hi) = (a.min(b), a.max(b));
            if uid {
                let start = self.msgs.partition_point(|m| m.uid < lo);
                for (i, m) in self.msgs.iter().enumerate().skip(start) {
                    if m.uid > hi {
                        break;
                    }
                    out.push(i);
                }
            } else {
                let hi = (hi as usize).min(n);
                for i in (lo as usize)..=hi {
                    if i >= 1 {
                        out.push(i - 1);
                    }
                }
            }
            if out.len() > 4 * n {
                out.sort_unstable();
                out.dedup();
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Record a change the session made itself (so that the next sync does not repeat it).
    pub fn update(&mut self, m: &MsgInfo) {
        self.pending_flags.retain(|p| p.uid != m.uid);
        if let Some(i) = self.index_of(m.uid) {
            self.msgs[i].flags = m.flags;
            self.msgs[i].modseq = m.modseq;
        }
        self.highestmodseq = self.highestmodseq.max(m.modseq);
    }

    /// Remove UIDs the session expunged itself; returns their sequence numbers, highest first,
    /// as they must be announced.
    pub fn remove_uids(&mut self, uids: &[u32]) -> Vec<u32> {
        self.pending_flags.retain(|p| !uids.contains(&p.uid));
        let mut idx: Vec<usize> = uids.iter().filter_map(|u| self.index_of(*u)).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut seqs = Vec::with_capacity(idx.len());
        for i in idx.into_iter().rev() {
            self.msgs.remove(i);
            seqs.push(i as u32 + 1);
        }
        seqs
    }

    /// Apply a deferred flag change of `uid` (the caller is about to report its flags).
    pub fn take_pending(&mut self, uid: u32) {
        if let Some(p) = self.pending_flags.iter().position(|p| p.uid == uid) {
            let m = self.pending_flags.swap_remove(p);
            self.update(&m);
        }
    }

    /// Announce all deferred flag changes.
    pub fn flush_pending(&mut self, condstore: bool) -> Vec<Data<'static>> {
        let pending = std::mem::take(&mut self.pending_flags);
        let mut out = Vec::new();
        for m in pending {
            if let Some(i) = self.index_of(m.uid) {
                self.msgs[i].flags = m.flags;
                self.msgs[i].modseq = m.modseq;
                out.push(flags_fetch(i + 1, &self.msgs[i], true, condstore));
            }
        }
        out
    }

    /// Bring the view up to date with `snap` and return the untagged responses announcing the
    /// difference: EXPUNGEs (descending, if allowed), FETCH FLAGS for changed flags (unless
    /// deferred), then EXISTS if messages arrived.
    pub fn sync(&mut self, snap: &Snapshot, mode: Mode, condstore: bool) -> Vec<Data<'static>> {
        let mut out = Vec::new();
        // Expunges: messages in the view that the snapshot lacks.
        let gone: Vec<usize> = self
            .msgs
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                snap.messages
                    .binary_search_by_key(&m.uid, |s| s.uid)
                    .is_err()
            })
            .map(|(i, _)| i)
            .collect();
        if mode.allow_expunge {
            for &i in gone.iter().rev() {
                let m = self.msgs.remove(i);
                self.pending_flags.retain(|p| p.uid != m.uid);
                if let Some(seq) = NonZeroU32::new(i as u32 + 1) {
                    out.push(Data::Expunge(seq));
                }
            }
            self.expunge_pending = false;
        } else {
            self.expunge_pending = !gone.is_empty();
        }
        // Flag changes. The snapshot supersedes earlier deferred states.
        self.pending_flags.clear();
        for (i, m) in self.msgs.iter_mut().enumerate() {
            let Ok(j) = snap.messages.binary_search_by_key(&m.uid, |s| s.uid) else {
                continue;
            };
            let s = &snap.messages[j];
            if s.flags != m.flags || (condstore && s.modseq != m.modseq) {
                if mode.defer_flags {
                    self.pending_flags.push(*s);
                    continue;
                }
                m.flags = s.flags;
                m.modseq = s.modseq;
                out.push(flags_fetch(i + 1, m, true, condstore));
            }
        }
        // New messages.
        let max = self.msgs.last().map(|m| m.uid).unwrap_or(0);
        let start = snap.messages.partition_point(|m| m.uid <= max);
        if start < snap.messages.len() {
            self.msgs.extend_from_slice(&snap.messages[start..]);
            out.push(Data::Exists(self.exists()));
        }
        self.highestmodseq = self.highestmodseq.max(snap.highestmodseq);
        out
    }
}

/// Store flags as IMAP flags.
pub fn imap_flags(f: Flags) -> Vec<Flag<'static>> {
    let mut v = Vec::new();
    if f.contains(Flags::SEEN) {
        v.push(Flag::Seen);
    }
    if f.contains(Flags::ANSWERED) {
        v.push(Flag::Answered);
    }
    if f.contains(Flags::FLAGGED) {
        v.push(Flag::Flagged);
    }
    if f.contains(Flags::DELETED) {
        v.push(Flag::Deleted);
    }
    if f.contains(Flags::DRAFT) {
        v.push(Flag::Draft);
    }
    v
}

/// IMAP flags as store flags; keywords and unknown system flags are dropped (we do not keep
/// them, and PERMANENTFLAGS says so).
pub fn store_flags(flags: &[Flag<'_>]) -> Flags {
    flags.iter().fold(Flags::empty(), |acc, f| {
        acc.union(match f {
            Flag::Seen => Flags::SEEN,
            Flag::Answered => Flags::ANSWERED,
            Flag::Flagged => Flags::FLAGGED,
            Flag::Deleted => Flags::DELETED,
            Flag::Draft => Flags::DRAFT,
            _ => Flags::empty(),
        })
    })
}

pub fn fetch_flags(f: Flags) -> MessageDataItem<'static> {
    MessageDataItem::Flags(imap_flags(f).into_iter().map(FlagFetch::Flag).collect())
}

pub fn modseq_item(modseq: u64) -> MessageDataItem<'static> {
    MessageDataItem::ModSeq(NonZeroU64::new(modseq).unwrap_or(NonZeroU64::MIN))
}

pub fn uid_item(uid: u32) -> MessageDataItem<'static> {
    MessageDataItem::Uid(NonZeroU32::new(uid).unwrap_or(NonZeroU32::MIN))
}

/// `* seq FETCH (UID u FLAGS (...) [MODSEQ (m)])`
pub fn flags_fetch(seq: usize, m: &MsgInfo, with_uid: bool, condstore: bool) -> Data<'static> {
    let mut items = Vec::new();
    if with_uid {
        items.push(uid_item(m.uid));
    }
    items.push(fetch_flags(m.flags));
    if condstore {
        items.push(modseq_item(m.modseq));
    }
    Data::Fetch {
        seq: NonZeroU32::new(seq as u32).unwrap_or(NonZeroU32::MIN),
        items: Vec1::try_from(items).unwrap_or_else(|_| Vec1::from(uid_item(m.uid))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(uid: u32, flags: Flags) -> MsgInfo {
        MsgInfo {
            uid,
            blob: uid as u64,
            flags,
            modseq: uid as u64,
            size: 10,
            internal_date: 0,
        }
    }

    fn snap(uids: &[u32]) -> Snapshot {
        Snapshot {
            name: "INBOX".into(),
            uidvalidity: 1,
            uidnext: uids.iter().max().map(|u| u + 1).unwrap_or(1),
            highestmodseq: 100,
            messages: uids.iter().map(|&u| msg(u, Flags::empty())).collect(),
        }
    }

    fn set(s: &str) -> SequenceSet {
        s.parse().unwrap()
    }

    #[test]
    fn resolves_sequence_and_uid_sets() {
        let v = View::new(snap(&[3, 5, 7, 9]), false);
        assert_eq!(v.resolve(&set("1:2"), false), vec![0, 1]);
        assert_eq!(v.resolve(&set("3:*"), false), vec![2, 3]);
        assert_eq!(v.resolve(&set("*:3"), false), vec![2, 3]);
        assert_eq!(v.resolve(&set("9"), false), Vec::<usize>::new());
        assert_eq!(v.resolve(&set("4:8"), true), vec![1, 2]);
        assert_eq!(v.resolve(&set("8:4"), true), vec![1, 2]);
        assert_eq!(v.resolve(&set("100:*"), true), vec![3]);
        assert_eq!(v.resolve(&set("1,5,5,9"), true), vec![1, 3]);
        assert_eq!(v.resolve(&set("1:500"), true), vec![0, 1, 2, 3]);
        let empty = View::new(snap(&[]), false);
        assert!(empty.resolve(&set("1:*"), true).is_empty());
    }

    #[test]
    fn sync_reports_expunge_flags_exists() {
        let mut v = View::new(snap(&[1, 2, 3, 4]), false);
        let mut s = snap(&[1, 3, 5]);
        s.messages[1].flags = Flags::SEEN;
        let out = v.sync(&s, Mode::ALL, false);
        // 4 and 2 expunged (descending), 3 is now seq 2 with \Seen, EXISTS 3.
        assert!(matches!(out[0], Data::Expunge(n) if n.get() == 4));
        assert!(matches!(out[1], Data::Expunge(n) if n.get() == 2));
        assert!(matches!(&out[2], Data::Fetch { seq, .. } if seq.get() == 2));
        assert!(matches!(out[3], Data::Exists(3)));
        assert_eq!(v.msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 3, 5]);
    }

    #[test]
    fn sync_defers_expunges_when_not_allowed() {
        let mut v = View::new(snap(&[1, 2]), false);
        let seq_fetch = Mode {
            allow_expunge: false,
            defer_flags: false,
        };
        let out = v.sync(&snap(&[2, 3]), seq_fetch, false);
        assert!(matches!(out[..], [Data::Exists(3)]));
        assert!(v.expunge_pending);
        let out = v.sync(&snap(&[2, 3]), Mode::ALL, false);
        assert!(matches!(out[..], [Data::Expunge(n)] if n.get() == 1));
        assert!(!v.expunge_pending);
    }

    #[test]
    fn deferred_flags_are_applied_or_flushed_later() {
        let mut v = View::new(snap(&[1, 2]), false);
        let mut s = snap(&[1, 2]);
        s.messages[0].flags = Flags::SEEN;
        s.messages[1].flags = Flags::DELETED;
        let before_fetch = Mode {
            allow_expunge: true,
            defer_flags: true,
        };
        assert!(v.sync(&s, before_fetch, false).is_empty());
        assert_eq!(v.msgs[0].flags, Flags::empty());
        // The FETCH reports message 1 itself ...
        v.take_pending(1);
        assert_eq!(v.msgs[0].flags, Flags::SEEN);
        // ... and message 2's change is announced afterwards.
        let out = v.flush_pending(false);
        assert!(matches!(&out[..], [Data::Fetch { seq, .. }] if seq.get() == 2));
        assert!(v.flush_pending(false).is_empty());
    }

    #[test]
    fn remove_uids_descending() {
        let mut v = View::new(snap(&[1, 2, 3]), false);
        assert_eq!(v.remove_uids(&[1, 3]), vec![3, 1]);
        assert_eq!(v.exists(), 1);
    }
}
