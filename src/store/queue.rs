//! The outbound queue: messages for other domains, one item per destination domain, each with
//! per-recipient state. Items share the body blob with local deliveries of the same message and
//! hold a blob reference until they are removed.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::codec::be64;
use super::mailbox::{add_messages, Delivery, TxResult};
use super::{now_unix, Flags, Store, StoreError, INBOX};

/// State of one recipient of a queue item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RcptState {
    Pending,
    Delivered,
    /// Permanent failure with the remote reply (bounce material).
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRcpt {
    pub addr: String,
    pub state: RcptState,
}

/// One message for one destination domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueItem {
    pub id: u64,
    pub domain: String,
    /// Envelope sender; empty for the null sender (bounces).
    pub sender: String,
    pub rcpts: Vec<QueuedRcpt>,
    pub blob: u64,
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
    pub next_attempt: i64,
    pub attempts: u32,
    /// Last temporary error, for logs and the status page.
    pub last_error: Option<String>,
}

fn enc(item: &QueueItem) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(item).map_err(|_| StoreError::Corrupt("queue item"))
}

fn dec(v: &[u8]) -> Result<QueueItem, StoreError> {
    serde_json::from_slice(v).map_err(|_| StoreError::Corrupt("queue item"))
}

impl Store {
    /// Accept one message: deliver it to local recipients' INBOXes and queue it for each remote
    /// domain, in one transaction, durably. `remote` is (domain, recipients) per domain. Local
    /// recipients without an account are returned in `missing`.
    pub fn accept_message(
        &self,
        sender: &str,
        local: &[String],
        remote: &[(String, Vec<String>)],
        body: &[u8],
    ) -> Result<(Delivery, Vec<u64>), StoreError> {
        let started = std::time::Instant::now();
        let mut present: Vec<String> = Vec::new();
        let mut missing: Vec<String> = Vec::new();
        for r in local {
            if present.contains(r) || missing.contains(r) {
                continue;
            }
            if self.inner.accounts.get(r.as_bytes())?.is_some() {
                present.push(r.clone());
            } else {
                missing.push(r.clone());
            }
        }
        if present.is_empty() && remote.is_empty() {
            return Ok((
                Delivery {
                    missing,
                    ..Delivery::default()
                },
                Vec::new(),
            ));
        }
        let blob = self.inner.db.generate_id()?;
        let mut ids = Vec::with_capacity(remote.len());
        for _ in remote {
            ids.push(self.inner.db.generate_id()?);
        }
        self.inner.blobs.write(blob, body)?;
        let now = now_unix();
        let items: Vec<QueueItem> = remote
            .iter()
            .zip(&ids)
            .map(|((domain, rcpts), id)| QueueItem {
                id: *id,
                domain: domain.clone(),
                sender: sender.to_string(),
                rcpts: rcpts
                    .iter()
                    .map(|a| QueuedRcpt {
                        addr: a.clone(),
                        state: RcptState::Pending,
                    })
                    .collect(),
                blob,
                size: body.len() as u64,
                created: now,
                next_attempt: now,
                attempts: 0,
                last_error: None,
            })
            .collect();
        let size = body.len() as u64;
        let limit = self.quota_limit();
        let encoded: Vec<Vec<u8>> = items.iter().map(enc).collect::<Result<_, _>>()?;
        let i = &self.inner;
        type Out = (Vec<String>, Vec<u32>, Vec<String>);
        let res = (&i.mailboxes, &i.messages, &i.blobrefs, &i.queue).transaction(
            |(mb, ms, br, q)| -> TxResult<Out> {
                // Quota: a recipient whose usage plus this message exceeds the limit gets nothing.
                let (mut fits, mut full) = (Vec::new(), Vec::new());
                for a in &present {
                    if super::expire::would_exceed(mb, a, size, limit)? {
                        full.push(a.clone());
                    } else {
                        fits.push(a.clone());
                    }
                }
                let targets: Vec<(String, String)> = fits
                    .iter()
                    .map(|a| (a.clone(), INBOX.to_string()))
                    .collect();
                let uids = add_messages(mb, ms, &targets, blob, Flags::empty(), now, size)?;
                for (item, v) in items.iter().zip(&encoded) {
                    q.insert(&item.id.to_be_bytes(), v.clone())?;
                }
                let refs = (fits.len() + items.len()) as i64;
                super::mailbox::bump_ref(br, blob, refs)?;
                Ok((fits, uids, full))
            },
        );
        let (present, uids, full) = match res {
            Ok(u) => u,
            Err(e) => {
                self.inner.blobs.remove(blob);
                return Err(super::mailbox::tx_err(e));
            }
        };
        self.flush()?;
        if present.is_empty() && ids.is_empty() {
            self.inner.blobs.remove(blob);
        }
        for addr in &present {
            self.inner.hub.notify(addr);
        }
        self.after_delivery(started, &present, &full, now);
        self.push_after_delivery(sender, &present);
        if !ids.is_empty() {
            self.inner.queue_wakeup.notify_one();
        }
        Ok((
            Delivery {
                delivered: present.into_iter().zip(uids).collect(),
                missing,
                full,
            },
            ids,
        ))
    }

    /// Every queued item, oldest first.
    pub fn queue_items(&self) -> Result<Vec<QueueItem>, StoreError> {
        let mut out = Vec::new();
        for v in self.inner.queue.iter().values() {
            out.push(dec(&v?)?);
        }
        Ok(out)
    }

    /// The current state of one item, or `None` once it was removed.
    pub fn queue_item(&self, id: u64) -> Result<Option<QueueItem>, StoreError> {
        match self.inner.queue.get(id.to_be_bytes())? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    pub fn queue_len(&self) -> usize {
        self.inner.queue.len()
    }

    /// Persist the state of an item after an attempt.
    pub fn queue_update(&self, item: &QueueItem) -> Result<(), StoreError> {
        let key = item.id.to_be_bytes();
        if self.inner.queue.get(key)?.is_none() {
            return Ok(());
        }
        self.inner.queue.insert(key, enc(item)?)?;
        self.flush()
    }

    /// Remove an item (all recipients done or failed) and release its body.
    pub fn queue_remove(&self, id: u64) -> Result<(), StoreError> {
        let i = &self.inner;
        let freed = (&i.queue, &i.blobrefs)
            .transaction(|(q, br)| -> TxResult<Option<u64>> {
                let Some(v) = q.remove(&id.to_be_bytes())? else {
                    return Ok(None);
                };
                let item =
                    dec(&v).map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                let left = super::mailbox::bump_ref(br, item.blob, -1)?;
                Ok((left <= 0).then_some(item.blob))
            })
            .map_err(super::mailbox::tx_err)?;
        self.flush()?;
        if let Some(b) = freed {
            self.inner.blobs.remove(b);
        }
        Ok(())
    }

    /// The body of a queued message.
    pub fn queue_body(&self, item: &QueueItem) -> Result<Vec<u8>, StoreError> {
        self.inner.blobs.read(item.blob)
    }

    /// Wait until something is queued (or `notify_queue` is called).
    pub async fn queue_wait(&self) {
        self.inner.queue_wakeup.notified().await
    }

    /// Number of live body files (for metrics and tests).
    pub fn blob_count(&self) -> usize {
        self.inner.blobrefs.len()
    }

    /// Refcount of a blob, for tests.
    pub fn blob_refs(&self, blob: u64) -> u64 {
        self.inner
            .blobrefs
            .get(blob.to_be_bytes())
            .ok()
            .flatten()
            .map(|v| be64(&v))
            .unwrap_or(0)
    }
}
