//! Mailbox operations of the store: delivery, append, flags, expunge, copy/move, snapshots.
//! Every change runs as one sled transaction over the mailbox record, the message records and
//! the blob reference counts, then flushes, then notifies listeners.

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::codec::{self, decode_msg, encode_msg, mailbox_key, msg_key, user_prefix, MailboxRec};
use super::expire::bump_usage;
use super::{normalise_mailbox, Flags, MsgInfo, Store, StoreError, INBOX};

/// How a STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// Insert one message record per (address, mailbox) target inside a transaction: next UID,
/// bumped HIGHESTMODSEQ. Returns the UIDs in target order.
pub(super) fn add_messages(
    mb: &TransactionalTree,
    ms: &TransactionalTree,
    targets: &[(String, String)],
    blob: u64,
    flags: Flags,
    date: i64,
    size: u64,
) -> TxResult<Vec<u32>> {
    let mut uids = Vec::with_capacity(targets.len());
    for (addr, name) in targets {
        let Some(mut rec) = get_mbox(mb, addr, name)? else {
            return abort(StoreError::NoMailbox);
        };
        if rec.uidnext == u32::MAX {
            return abort(StoreError::UidsExhausted);
        }
        let uid = rec.uidnext;
        rec.uidnext += 1;
        rec.highestmodseq += 1;
        let info = MsgInfo {
            uid,
            blob,
            flags,
            modseq: rec.highestmodseq,
            size,
            internal_date: date,
        };
        ms.insert(&msg_key(rec.id, uid), encode_msg(&info))?;
        mb.insert(mailbox_key(addr, name), rec.encode())?;
        bump_usage(mb, addr, size as i64)?;
        uids.push(uid);
    }
    Ok(uids)
}

/// A consistent view of one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    /// Ordered by UID; the index in this vector + 1 is the message sequence number.
    pub messages: Vec<MsgInfo>,
}

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(super) fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

fn get_mbox(t: &TransactionalTree, addr: &str, name: &str) -> TxResult<Option<MailboxRec>> {
    match t.get(mailbox_key(addr, name))? {
        None => Ok(None),
        Some(v) => MailboxRec::decode(&v)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
    }
}

pub(super) fn bump_ref(t: &TransactionalTree, blob: u64, delta: i64) -> TxResult<i64> {
    let k = blob.to_be_bytes();
    let cur = t.get(k)?.map(|v| codec::be64(&v) as i64).unwrap_or(0);
    let new = cur + delta;
    if new <= 0 {
        t.remove(&k)?;
    } else {
        t.insert(&k, &(new as u64).to_be_bytes())?;
    }
    Ok(new)
}

impl Store {
    pub(super) fn ensure_mailbox(&self, addr: &str, name: &str) -> Result<bool, StoreError> {
        let key = mailbox_key(addr, normalise_mailbox(name));
        if self.inner.mailboxes.get(&key)?.is_some() {
            return Ok(false);
        }
        let rec = MailboxRec::new(self.inner.db.generate_id()?);
        let r = self.inner.mailboxes.compare_and_swap(
            key,
            None as Option<&[u8]>,
            Some(rec.encode()),
        )?;
        Ok(r.is_ok())
    }

    /// Names of the user's mailboxes, INBOX first.
    pub fn mailboxes(&self, addr: &str) -> Result<Vec<String>, StoreError> {
        let prefix = user_prefix(addr);
        let mut names = Vec::new();
        for k in self.inner.mailboxes.scan_prefix(&prefix).keys() {
            let k = k?;
            names.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        names.sort_by_key(|n| (n != INBOX, n.clone()));
        Ok(names)
    }

    pub fn create_mailbox(&self, addr: &str, name: &str) -> Result<(), StoreError> {
        if self.inner.accounts.get(addr.as_bytes())?.is_none() {
            return Err(StoreError::NoAccount);
        }
        if !self.ensure_mailbox(addr, name)? {
            return Err(StoreError::MailboxExists);
        }
        self.flush()
    }

    pub fn delete_mailbox(&self, addr: &str, name: &str) -> Result<(), StoreError> {
        if normalise_mailbox(name) == INBOX {
            return Err(StoreError::NoMailbox);
        }
        self.delete_mailbox_inner(addr, name)?;
        self.flush()?;
        self.inner.hub.notify(addr);
        Ok(())
    }

    pub(super) fn delete_mailbox_inner(&self, addr: &str, name: &str) -> Result<(), StoreError> {
        let key = mailbox_key(addr, normalise_mailbox(name));
        let rec = match self.inner.mailboxes.get(&key)? {
            None => return Err(StoreError::NoMailbox),
            Some(v) => MailboxRec::decode(&v)?,
        };
        let mut freed = Vec::new();
        let i = &self.inner;
        for kv in i.messages.scan_prefix(rec.id.to_be_bytes()) {
            let (k, v) = kv?;
            let m = decode_msg(codec::uid_of_key(&k), &v)?;
            // Message, blob reference and usage counter change together.
            let left = (&i.mailboxes, &i.messages, &i.blobrefs)
                .transaction(|(mb, ms, br)| {
                    if ms.remove(&k)?.is_none() {
                        return Ok(1);
                    }
                    bump_usage(mb, addr, -(m.size as i64))?;
                    bump_ref(br, m.blob, -1)
                })
                .map_err(tx_err)?;
            if left <= 0 {
                freed.push(m.blob);
            }
        }
        self.inner.mailboxes.remove(key)?;
        self.flush()?;
        for b in freed {
            self.inner.blobs.remove(b);
        }
        Ok(())
    }

    /// A consistent snapshot of a mailbox, or `None` if it does not exist.
    pub fn snapshot(&self, addr: &str, name: &str) -> Result<Option<Snapshot>, StoreError> {
        let name = normalise_mailbox(name);
        // Read the record and the messages in one transaction-free pass; retry if a concurrent
        // change moved highestmodseq underneath us.
        for _ in 0..8 {
            let Some(before) = self.inner.mailboxes.get(mailbox_key(addr, name))? else {
                return Ok(None);
            };
            let rec = MailboxRec::decode(&before)?;
            let mut messages = Vec::new();
            for kv in self.inner.messages.scan_prefix(rec.id.to_be_bytes()) {
                let (k, v) = kv?;
                messages.push(decode_msg(codec::uid_of_key(&k), &v)?);
            }
            let after = self.inner.mailboxes.get(mailbox_key(addr, name))?;
            if after.as_deref() == Some(&before[..]) {
                return Ok(Some(Snapshot {
                    name: name.to_string(),
                    uidvalidity: rec.uidvalidity,
                    uidnext: rec.uidnext,
                    highestmodseq: rec.highestmodseq,
                    messages,
                }));
            }
        }
        Err(StoreError::Corrupt("mailbox changing too fast to read"))
    }

    /// Deliver one body to the INBOX of every recipient, atomically and durably. Recipients
    /// without an account are returned in the `missing` list and get nothing.
    pub fn deliver(&self, rcpts: &[String], body: &[u8]) -> Result<Delivery, StoreError> {
        Ok(self.accept_message("", rcpts, &[], body)?.0)
    }

    /// APPEND: store a body into one mailbox with flags and date. Returns (UIDVALIDITY, UID).
    pub fn append(
        &self,
        addr: &str,
        name: &str,
        flags: Flags,
        date: i64,
        body: &[u8],
    ) -> Result<(u32, u32), StoreError> {
        let name = normalise_mailbox(name).to_string();
        let snap_validity = match self.inner.mailboxes.get(mailbox_key(addr, &name))? {
            None => return Err(StoreError::NoMailbox),
            Some(v) => MailboxRec::decode(&v)?.uidvalidity,
        };
        let uids = self.insert_body(&[(addr.to_string(), name)], body, flags, date)?;
        Ok((snap_validity, uids[0]))
    }

    fn insert_body(
        &self,
        targets: &[(String, String)],
        body: &[u8],
        flags: Flags,
        date: i64,
    ) -> Result<Vec<u32>, StoreError> {
        let blob = self.inner.db.generate_id()?;
        self.inner.blobs.write(blob, body)?;
        let i = &self.inner;
        let res = (&i.mailboxes, &i.messages, &i.blobrefs).transaction(|(mb, ms, br)| {
            let uids = add_messages(mb, ms, targets, blob, flags, date, body.len() as u64)?;
            bump_ref(br, blob, targets.len() as i64)?;
            Ok(uids)
        });
        let uids = match res {
            Ok(u) => u,
            Err(e) => {
                self.inner.blobs.remove(blob);
                return Err(tx_err(e));
            }
        };
        self.flush()?;
        for (addr, _) in targets {
            self.inner.hub.notify(addr);
        }
        Ok(uids)
    }

    /// The body of a message.
    pub fn read_body(&self, info: &MsgInfo) -> Result<Vec<u8>, StoreError> {
        self.inner.blobs.read(info.blob)
    }

    /// Change flags of the given UIDs. With `unchanged_since`, messages whose MODSEQ is higher are
    /// left alone and returned in `failed` (RFC 7162). Returns the changed messages.
    pub fn store_flags(
        &self,
        addr: &str,
        name: &str,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
        unchanged_since: Option<u64>,
    ) -> Result<FlagResult, StoreError> {
        let name = normalise_mailbox(name);
        let i = &self.inner;
        let res = (&i.mailboxes, &i.messages).transaction(|(mb, ms)| {
            let Some(mut rec) = get_mbox(mb, addr, name)? else {
                return abort(StoreError::NoMailbox);
            };
            let mut out = FlagResult::default();
            for &uid in uids {
                let key = msg_key(rec.id, uid);
                let Some(v) = ms.get(key)? else { continue };
                let mut m = decode_msg(uid, &v).map_err(ConflictableTransactionError::Abort)?;
                if unchanged_since.is_some_and(|u| m.modseq > u) {
                    out.failed.push(uid);
                    continue;
                }
                let new = match op {
                    FlagOp::Add => m.flags.union(flags),
                    FlagOp::Remove => m.flags.minus(flags),
                    FlagOp::Replace => flags,
                };
                if new != m.flags {
                    rec.highestmodseq += 1;
                    m.flags = new;
                    m.modseq = rec.highestmodseq;
                    ms.insert(&key, encode_msg(&m))?;
                }
                out.changed.push(m);
            }
            mb.insert(mailbox_key(addr, name), rec.encode())?;
            Ok(out)
        });
        let out = res.map_err(tx_err)?;
        self.flush()?;
        self.inner.hub.notify(addr);
        Ok(out)
    }

    /// Remove messages flagged `\Deleted` (only among `only`, if given). Returns removed UIDs.
    pub fn expunge(
        &self,
        addr: &str,
        name: &str,
        only: Option<&[u32]>,
    ) -> Result<Vec<u32>, StoreError> {
        let name = normalise_mailbox(name);
        let Some(snap) = self.snapshot(addr, name)? else {
            return Err(StoreError::NoMailbox);
        };
        let doomed: Vec<MsgInfo> = snap
            .messages
            .iter()
            .filter(|m| m.flags.contains(Flags::DELETED))
            .filter(|m| only.is_none_or(|o| o.contains(&m.uid)))
            .copied()
            .collect();
        self.remove_messages(addr, name, &doomed)
    }

    pub(super) fn remove_messages(
        &self,
        addr: &str,
        name: &str,
        doomed: &[MsgInfo],
    ) -> Result<Vec<u32>, StoreError> {
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let i = &self.inner;
        let (removed, freed) = (&i.mailboxes, &i.messages, &i.blobrefs)
            .transaction(|(mb, ms, br)| {
                let Some(mut rec) = get_mbox(mb, addr, name)? else {
                    return abort(StoreError::NoMailbox);
                };
                let mut removed = Vec::new();
                let mut freed = Vec::new();
                for m in doomed {
                    if ms.remove(&msg_key(rec.id, m.uid))?.is_some() {
                        bump_usage(mb, addr, -(m.size as i64))?;
                        removed.push(m.uid);
                        if bump_ref(br, m.blob, -1)? <= 0 {
                            freed.push(m.blob);
                        }
                    }
                }
                rec.highestmodseq += 1;
                mb.insert(mailbox_key(addr, name), rec.encode())?;
                Ok((removed, freed))
            })
            .map_err(tx_err)?;
        self.flush()?;
        for b in freed {
            self.inner.blobs.remove(b);
        }
        self.inner.hub.notify(addr);
        Ok(removed)
    }

    /// Copy messages to another mailbox of the same user. Returns (source UID, new UID) pairs and
    /// the target's UIDVALIDITY.
    pub fn copy(
        &self,
        addr: &str,
        from: &str,
        to: &str,
        uids: &[u32],
    ) -> Result<(u32, Vec<(u32, u32)>), StoreError> {
        let (from, to) = (normalise_mailbox(from), normalise_mailbox(to));
        let i = &self.inner;
        let out = (&i.mailboxes, &i.messages, &i.blobrefs)
            .transaction(|(mb, ms, br)| {
                let Some(src) = get_mbox(mb, addr, from)? else {
                    return abort(StoreError::NoMailbox);
                };
                let Some(mut dst) = get_mbox(mb, addr, to)? else {
                    return abort(StoreError::NoMailbox);
                };
                let mut pairs = Vec::new();
                for &uid in uids {
                    let Some(v) = ms.get(msg_key(src.id, uid))? else {
                        continue;
                    };
                    let mut m = decode_msg(uid, &v).map_err(ConflictableTransactionError::Abort)?;
                    if dst.uidnext == u32::MAX {
                        return abort(StoreError::UidsExhausted);
                    }
                    dst.highestmodseq += 1;
                    m.uid = dst.uidnext;
                    m.modseq = dst.highestmodseq;
                    dst.uidnext += 1;
                    ms.insert(&msg_key(dst.id, m.uid), encode_msg(&m))?;
                    bump_usage(mb, addr, m.size as i64)?;
                    bump_ref(br, m.blob, 1)?;
                    pairs.push((uid, m.uid));
                }
                mb.insert(mailbox_key(addr, to), dst.encode())?;
                Ok((dst.uidvalidity, pairs))
            })
            .map_err(tx_err)?;
        self.flush()?;
        self.inner.hub.notify(addr);
        Ok(out)
    }

    /// MOVE = copy, then remove the sources. Returns what `copy` returns.
    pub fn move_messages(
        &self,
        addr: &str,
        from: &str,
        to: &str,
        uids: &[u32],
    ) -> Result<(u32, Vec<(u32, u32)>), StoreError> {
        let snap = self.snapshot(addr, from)?.ok_or(StoreError::NoMailbox)?;
        let (validity, pairs) = self.copy(addr, from, to, uids)?;
        let moved: Vec<MsgInfo> = snap
            .messages
            .iter()
            .filter(|m| pairs.iter().any(|(s, _)| *s == m.uid))
            .copied()
            .collect();
        self.remove_messages(addr, normalise_mailbox(from), &moved)?;
        Ok((validity, pairs))
    }

    /// Bytes used by all messages of the user, summed over the message records (slow; the
    /// counter behind [`Store::usage`] must always equal this).
    pub fn usage_scan(&self, addr: &str) -> Result<u64, StoreError> {
        let prefix = user_prefix(addr);
        let mut total = 0;
        for v in self.inner.mailboxes.scan_prefix(&prefix).values() {
            let rec = MailboxRec::decode(&v?)?;
            for m in self
                .inner
                .messages
                .scan_prefix(rec.id.to_be_bytes())
                .values()
            {
                let v = m?;
                total += decode_msg(0, &v)?.size;
            }
        }
        Ok(total)
    }
}

/// Outcome of a delivery.
#[derive(Debug, Default)]
pub struct Delivery {
    /// (recipient, UID in their INBOX)
    pub delivered: Vec<(String, u32)>,
    /// Recipients without an account.
    pub missing: Vec<String>,
    /// Recipients whose mailbox is full (quota exceeded): they got nothing.
    pub full: Vec<String>,
}

#[derive(Debug, Default)]
pub struct FlagResult {
    pub changed: Vec<MsgInfo>,
    pub failed: Vec<u32>,
}
