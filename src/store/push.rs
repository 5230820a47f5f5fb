//! The persistent push-notification queue (relay-behaviour §13): one item per (delivery, device
//! token), tree `push`, keyed by a sled id so iteration is oldest first.
//!
//! Owns: the `push` tree's keys and values. Must not know: HTTP, the gateway, retry policy.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// One pending notification for one device token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushItem {
    pub id: u64,
    /// Owner of the token (the recipient of the delivery).
    pub addr: String,
    /// The opaque device token, POSTed verbatim.
    pub token: String,
    /// Unix seconds when the item was queued (the retry schedule counts from here).
    pub first_ts: i64,
    /// Attempts made so far.
    pub attempt: u32,
    /// Unix seconds of the next attempt.
    pub next_at: i64,
}

fn enc(item: &PushItem) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(item).map_err(|_| StoreError::Corrupt("push item"))
}

impl Store {
    /// After a durable delivery from `sender` to local `rcpts`: queue one push item per valid
    /// device token of every recipient that is not the sender (own copies never notify).
    /// Returns the number of items queued.
    pub fn push_enqueue(
        &self,
        sender: &str,
        rcpts: &[String],
        now: i64,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for addr in rcpts {
            if addr.eq_ignore_ascii_case(sender) {
                continue;
            }
            for token in self.device_tokens(addr, now)? {
                let item = PushItem {
                    id: self.inner.db.generate_id()?,
                    addr: addr.clone(),
                    token,
                    first_ts: now,
                    attempt: 0,
                    next_at: now,
                };
                self.inner.push.insert(item.id.to_be_bytes(), enc(&item)?)?;
                n += 1;
            }
        }
        if n > 0 {
            self.flush()?;
            self.inner.push_wakeup.notify_one();
        }
        Ok(n)
    }

    /// Delivery hook: like [`Store::push_enqueue`] with the current time, logging failures
    /// (the message is already delivered; a lost notification must not fail it).
    pub(super) fn push_after_delivery(&self, sender: &str, rcpts: &[String]) {
        if let Err(e) = self.push_enqueue(sender, rcpts, super::now_unix()) {
            tracing::warn!(error = %e, "could not queue push notifications");
        }
    }

    /// Every queued push item, oldest first. Malformed records are removed.
    pub fn push_items(&self) -> Result<Vec<PushItem>, StoreError> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for kv in self.inner.push.iter() {
            let (k, v) = kv?;
            match serde_json::from_slice::<PushItem>(&v) {
                Ok(i) => out.push(i),
                Err(_) => bad.push(k),
            }
        }
        if !bad.is_empty() {
            for k in bad {
                self.inner.push.remove(k)?;
            }
            self.flush()?;
        }
        Ok(out)
    }

    pub fn push_len(&self) -> usize {
        self.inner.push.len()
    }

    /// Persist an item's attempt count and next attempt (no-op if it was removed meanwhile).
    pub fn push_update(&self, item: &PushItem) -> Result<(), StoreError> {
        let key = item.id.to_be_bytes();
        if self.inner.push.get(key)?.is_none() {
            return Ok(());
        }
        self.inner.push.insert(key, enc(item)?)?;
        self.flush()
    }

    pub fn push_remove(&self, id: u64) -> Result<(), StoreError> {
        self.inner.push.remove(id.to_be_bytes())?;
        self.flush()
    }

    /// Remove every queued notification of an account (account deletion).
    pub fn push_remove_user(&self, addr: &str) -> Result<(), StoreError> {
        let mut gone = false;
        for item in self.push_items()? {
            if item.addr == addr {
                self.inner.push.remove(item.id.to_be_bytes())?;
                gone = true;
            }
        }
        if gone {
            self.flush()?;
        }
        Ok(())
    }

    /// Wait until a push item is queued or [`Store::push_wake`] is called.
    pub async fn push_wait(&self) {
        self.inner.push_wakeup.notified().await
    }

    /// Wake the push worker (an attempt finished, or a test wants a rescan).
    pub fn push_wake(&self) {
        self.inner.push_wakeup.notify_one();
    }
}
