//! Store side of quotas and expiry: the per-account usage counter, the quota check at delivery,
//! trimming, and the listing/removal primitives the daily expiry job (`crate::expiry`) uses.
//!
//! Owns: the usage-counter keys (kept in the `mailboxes` tree under a NUL-led prefix that no
//! `addr NUL name` key can have, so every mailbox transaction can update them), the quota limit
//! and counters. Must not know: protocols, reply codes, configuration files, the job schedule.
//!
//! Invariant: `usage(addr)` equals the sum of the sizes of all message records of `addr`
//! (`usage_scan`); every insert/remove of a message record updates it in the same transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use sled::transaction::TransactionalTree;

use super::codec::{be64, decode_msg, MailboxRec};
use super::mailbox::TxResult;
use super::{codec, normalise_mailbox, MsgInfo, Store, StoreError};

const USAGE_PREFIX: &[u8] = b"\0usage\0";
/// Present once every account's counter has been computed (stores created before the counter).
const USAGE_READY: &[u8] = b"\0usage-ready";

/// Seconds a message is protected from quota trimming.
pub const TRIM_PROTECT_SECS: i64 = 86400;

/// Called after each delivery with (time spent in `accept_message`, recipients delivered,
/// recipients over quota). Set once by the metrics module.
pub type DeliveryObserver = Box<dyn Fn(f64, usize, usize) + Send + Sync>;

#[derive(Default)]
pub(crate) struct QuotaState {
    /// Bytes per mailbox owner; 0 = unlimited.
    limit: AtomicU64,
    exceeded: AtomicU64,
    trim_runs: AtomicU64,
    trim_removed: AtomicU64,
    created: AtomicU64,
    observer: OnceLock<DeliveryObserver>,
}

pub(super) fn usage_key(addr: &str) -> Vec<u8> {
    let mut k = USAGE_PREFIX.to_vec();
    k.extend_from_slice(addr.as_bytes());
    k
}

fn usage_tx(mb: &TransactionalTree, addr: &str) -> TxResult<u64> {
    Ok(mb.get(usage_key(addr))?.map(|v| be64(&v)).unwrap_or(0))
}

/// Add `delta` bytes to the usage counter of `addr` inside a transaction on the mailboxes tree.
pub(super) fn bump_usage(mb: &TransactionalTree, addr: &str, delta: i64) -> TxResult<u64> {
    let new = (usage_tx(mb, addr)? as i64 + delta).max(0) as u64;
    mb.insert(usage_key(addr), &new.to_be_bytes())?;
    Ok(new)
}

/// Whether delivering `size` more bytes to `addr` would exceed `limit` (0 = unlimited).
pub(super) fn would_exceed(
    mb: &TransactionalTree,
    addr: &str,
    size: u64,
    limit: u64,
) -> TxResult<bool> {
    Ok(limit > 0 && usage_tx(mb, addr)? + size > limit)
}

impl Store {
    /// Compute the usage counters once for a store that predates them.
    pub(super) fn init_usage(&self) -> Result<(), StoreError> {
        if self.inner.mailboxes.get(USAGE_READY)?.is_some() {
            return Ok(());
        }
        for kv in self.inner.accounts.iter() {
            let (k, _) = kv?;
            let addr = String::from_utf8_lossy(&k).into_owned();
            let used = self.usage_scan(&addr)?;
            self.inner
                .mailboxes
                .insert(usage_key(&addr), &used.to_be_bytes())?;
        }
        self.inner.mailboxes.insert(USAGE_READY, &[1u8])?;
        self.flush()
    }

    /// Bytes used by all messages of the user (the counter; cheap).
    pub fn usage(&self, addr: &str) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .mailboxes
            .get(usage_key(addr))?
            .map(|v| be64(&v))
            .unwrap_or(0))
    }

    /// Set the per-account limit enforced by `accept_message` (0 = unlimited).
    pub fn set_quota_limit(&self, bytes: u64) {
        self.inner.quota.limit.store(bytes, Ordering::Relaxed);
    }

    pub fn quota_limit(&self) -> u64 {
        self.inner.quota.limit.load(Ordering::Relaxed)
    }

    /// Recipients refused because their mailbox was full, since start.
    pub fn quota_exceeded_count(&self) -> u64 {
        self.inner.quota.exceeded.load(Ordering::Relaxed)
    }

    /// (trim runs that removed something, messages removed by trimming), since start.
    pub fn quota_trim_counts(&self) -> (u64, u64) {
        let q = &self.inner.quota;
        (
            q.trim_runs.load(Ordering::Relaxed),
            q.trim_removed.load(Ordering::Relaxed),
        )
    }

    pub(super) fn count_created_account(&self) {
        self.inner.quota.created.fetch_add(1, Ordering::Relaxed);
    }

    /// Accounts created by login since start.
    pub fn created_accounts_count(&self) -> u64 {
        self.inner.quota.created.load(Ordering::Relaxed)
    }

    pub fn account_count(&self) -> usize {
        self.inner.accounts.len()
    }

    /// Install the delivery observer (metrics). Only the first call has an effect.
    pub fn set_delivery_observer(&self, f: DeliveryObserver) {
        let _ = self.inner.quota.observer.set(f);
    }

    /// Bookkeeping after `accept_message` committed: log and count full mailboxes, trim
    /// recipients past 75 % of the limit, report to the observer.
    pub(super) fn after_delivery(
        &self,
        started: Instant,
        delivered: &[String],
        full: &[String],
        now: i64,
    ) {
        if !full.is_empty() {
            self.inner
                .quota
                .exceeded
                .fetch_add(full.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                recipients = full.len(),
                "quota exceeded: mailbox full, message not stored for those recipients"
            );
        }
        let limit = self.quota_limit();
        if limit > 0 {
            for addr in delivered {
                if self.usage(addr).unwrap_or(0) > limit / 100 * 75 {
                    if let Err(e) = self.trim(addr, limit / 100 * 70, now) {
                        tracing::error!("quota trimming failed: {e}");
                    }
                }
            }
        }
        if let Some(f) = self.inner.quota.observer.get() {
            f(started.elapsed().as_secs_f64(), delivered.len(), full.len());
        }
    }

    /// Every message of the user as (mailbox, message), in no particular order.
    pub fn all_messages(&self, addr: &str) -> Result<Vec<(String, MsgInfo)>, StoreError> {
        let prefix = codec::user_prefix(addr);
        let mut out = Vec::new();
        for kv in self.inner.mailboxes.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let rec = MailboxRec::decode(&v)?;
            for m in self.inner.messages.scan_prefix(rec.id.to_be_bytes()) {
                let (k, v) = m?;
                out.push((name.clone(), decode_msg(codec::uid_of_key(&k), &v)?));
            }
        }
        Ok(out)
    }

    /// Remove the given messages of one mailbox regardless of flags (expiry). IDLE sessions
    /// are notified. Returns the removed UIDs.
    pub fn remove_expired(
        &self,
        addr: &str,
        name: &str,
        doomed: &[MsgInfo],
    ) -> Result<Vec<u32>, StoreError> {
        self.remove_messages(addr, normalise_mailbox(name), doomed)
    }

    /// Quota trimming: remove the user's oldest messages (by internal date, any mailbox) until
    /// usage ≤ `target`, never a message younger than 24 h before `now` (stop there). Returns
    /// the number of messages removed.
    pub fn trim(&self, addr: &str, target: u64, now: i64) -> Result<usize, StoreError> {
        let mut used = self.usage(addr)?;
        if used <= target {
            return Ok(0);
        }
        let mut all = self.all_messages(addr)?;
        all.sort_by_key(|(name, m)| (m.internal_date, name.clone(), m.uid));
        let mut doomed: Vec<(String, MsgInfo)> = Vec::new();
        for (name, m) in all {
            if used <= target || m.internal_date > now - TRIM_PROTECT_SECS {
                break;
            }
            used = used.saturating_sub(m.size);
            doomed.push((name, m));
        }
        let removed = self.remove_grouped(addr, doomed)?;
        if removed > 0 {
            let q = &self.inner.quota;
            q.trim_runs.fetch_add(1, Ordering::Relaxed);
            q.trim_removed.fetch_add(removed as u64, Ordering::Relaxed);
            tracing::info!("quota-expire: removed {removed} message(s)");
        }
        Ok(removed)
    }

    /// Remove (mailbox, message) pairs, one transaction per mailbox. Returns how many went.
    pub fn remove_grouped(
        &self,
        addr: &str,
        mut doomed: Vec<(String, MsgInfo)>,
    ) -> Result<usize, StoreError> {
        doomed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut removed = 0;
        let mut i = 0;
        while i < doomed.len() {
            let name = doomed[i].0.clone();
            let group: Vec<MsgInfo> = doomed[i..]
                .iter()
                .take_while(|(n, _)| *n == name)
                .map(|(_, m)| *m)
                .collect();
            i += group.len();
            match self.remove_expired(addr, &name, &group) {
                Ok(uids) => removed += uids.len(),
                Err(StoreError::NoMailbox) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Bytes of message bodies on disk (live blobs only).
    pub fn blob_bytes(&self) -> u64 {
        let mut total = 0;
        for k in self.inner.blobrefs.iter().keys().flatten() {
            if let Ok(md) = std::fs::metadata(self.inner.blobs.path(be64(&k))) {
                total += md.len();
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Account, Flags, INBOX};

    #[test]
    fn counters_are_rebuilt_for_a_store_that_predates_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let a = "someone@example.org";
        store
            .put_account(&Account {
                addr: a.into(),
                password_hash: String::new(),
                created: 0,
                enforce_e2ee: true,
                last_login_day: 0,
            })
            .unwrap();
        store.append(a, INBOX, Flags::empty(), 1, b"12345").unwrap();
        store.append(a, INBOX, Flags::SEEN, 2, b"123").unwrap();
        assert_eq!(store.usage(a).unwrap(), 8);
        // Simulate the old layout: no counters at all.
        store.inner.mailboxes.remove(usage_key(a)).unwrap();
        store.inner.mailboxes.remove(USAGE_READY).unwrap();
        assert_eq!(store.usage(a).unwrap(), 0);
        store.init_usage().unwrap();
        assert_eq!(store.usage(a).unwrap(), 8);
        assert_eq!(store.usage_scan(a).unwrap(), 8);
        // The counter keys are invisible to the mailbox listing.
        assert_eq!(store.mailboxes(a).unwrap(), vec![INBOX.to_string()]);
    }
}
