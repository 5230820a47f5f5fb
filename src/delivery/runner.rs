//! The queue runner: one task that picks due queue items and runs one attempt per item, with at
//! most [`PER_DOMAIN`] concurrent attempts per destination domain and [`MAX_CONCURRENT`] in all
//! (§9.1). After an attempt the item is updated durably (per-recipient states, next attempt
//! with exponential backoff) or removed once every recipient is delivered or failed; permanent
//! failures and expired messages bounce. At-least-once: an attempt that was interrupted before
//! the store recorded it is repeated after a restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{redact, Failure};
use crate::store::{now_unix, QueueItem, RcptState};
use crate::Ctx;

/// Concurrent attempts per destination domain.
pub const PER_DOMAIN: usize = 4;
/// Concurrent attempts in all (upstream: ≤ 500 concurrent deliveries).
pub const MAX_CONCURRENT: usize = 200;
/// Longest backoff between attempts.
const MAX_BACKOFF: u64 = 3600;
/// Longest sleep when nothing is due (the queue is re-read then).
const IDLE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Running {
    ids: HashSet<u64>,
    per_domain: HashMap<String, usize>,
}

/// One running attempt's place in [`Running`]; released on drop.
struct Slot {
    id: u64,
    domain: String,
    running: Arc<Mutex<Running>>,
    done: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut r) = self.running.lock() {
            r.ids.remove(&self.id);
            if let Some(n) = r.per_domain.get_mut(&self.domain) {
                *n -= 1;
                if *n == 0 {
                    r.per_domain.remove(&self.domain);
                }
            }
        }
        self.done.notify_one();
    }
}

/// Start the runner. It runs until the runtime shuts down or the handle is aborted.
pub fn spawn(ctx: Arc<Ctx>) -> JoinHandle<()> {
    tokio::spawn(run(ctx))
}

async fn run(ctx: Arc<Ctx>) {
    let running = Arc::new(Mutex::new(Running::default()));
    let done = Arc::new(Notify::new());
    loop {
        let store = ctx.store.clone();
        let items = match tokio::task::spawn_blocking(move || store.queue_items()).await {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                tracing::error!("reading the outbound queue failed: {e}");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let now = now_unix();
        let mut next = now + IDLE.as_secs() as i64;
        for item in items {
            if item.next_attempt > now {
                next = next.min(item.next_attempt);
                continue;
            }
            {
                let Ok(mut r) = running.lock() else { break };
                if r.ids.contains(&item.id) {
                    continue;
                }
                if r.ids.len() >= MAX_CONCURRENT {
                    break;
                }
                let n = r.per_domain.entry(item.domain.clone()).or_default();
                if *n >= PER_DOMAIN {
                    continue;
                }
                *n += 1;
                r.ids.insert(item.id);
            }
            let slot = Slot {
                id: item.id,
                domain: item.domain.clone(),
                running: running.clone(),
                done: done.clone(),
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                // The slot is released when the attempt ends, even by a panic.
                let _slot = slot;
                attempt(&ctx, item).await;
            });
        }
        let wait = Duration::from_secs((next - now).clamp(0, IDLE.as_secs() as i64) as u64);
        tokio::select! {
            _ = ctx.store.queue_wait() => {}
            _ = done.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
        }
    }
}

/// Backoff after `attempts` failed attempts: base·2^(attempts-1), at most one hour.
pub fn backoff(base: u64, attempts: u32) -> u64 {
    base.saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
        .min(MAX_BACKOFF.max(base))
}

async fn attempt(ctx: &Arc<Ctx>, item: QueueItem) {
    // The runner started this from a snapshot of the queue. An earlier attempt on the same item
    // may have ended since the snapshot was read (finished, or rescheduled), so work on the
    // item's current state: starting from the stale copy would deliver it a second time.
    let store = ctx.store.clone();
    let id = item.id;
    let mut item = match tokio::task::spawn_blocking(move || store.queue_item(id)).await {
        Ok(Ok(Some(fresh))) if fresh.next_attempt <= now_unix() => fresh,
        Ok(Ok(_)) => return,
        Ok(Err(e)) => {
            tracing::error!(queue_id = id, "reading a queue item failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let store = ctx.store.clone();
    let it = item.clone();
    let body = match tokio::task::spawn_blocking(move || store.queue_body(&it)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::error!(queue_id = item.id, "queued body unreadable: {e}");
            return reschedule(ctx, item, "451 4.3.0 queued body unreadable".into()).await;
        }
        Err(_) => return,
    };
    let pending: Vec<String> = item
        .rcpts
        .iter()
        .filter(|r| r.state == RcptState::Pending)
        .map(|r| r.addr.clone())
        .collect();
    let expired = now_unix() - item.created > ctx.cfg.queue_lifetime as i64;
    let results: Vec<Result<&'static str, Failure>> = if pending.is_empty() {
        Vec::new()
    } else if expired {
        let why = item
            .last_error
            .clone()
            .unwrap_or_else(|| "421 4.4.7 delivery time expired".into());
        pending
            .iter()
            .map(|_| Err(Failure::Perm(format!("{why} (delivery time expired)"))))
            .collect()
    } else {
        let signed = match sign_if_ours(ctx, &item, body.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(queue_id = item.id, "DKIM signing failed: {e}");
                return reschedule(ctx, item, "451 4.3.0 DKIM signing failed".into()).await;
            }
        };
        ctx.delivery
            .deliver(&item.domain, &item.sender, &pending, signed.into())
            .await
    };
    let mut temp_error = None;
    for (addr, res) in pending.iter().zip(results) {
        let Some(r) = item.rcpts.iter_mut().find(|r| &r.addr == addr) else {
            continue;
        };
        match res {
            Ok(via) => {
                r.state = RcptState::Delivered;
                tracing::info!(queue_id = item.id, via, "delivered");
            }
            Err(Failure::Perm(t)) => {
                tracing::info!(
                    queue_id = item.id,
                    "delivery failed permanently: {}",
                    redact(&t)
                );
                r.state = RcptState::Failed(t);
            }
            Err(Failure::Temp(t)) => temp_error = Some(t),
        }
    }
    if let Some(t) = temp_error {
        return reschedule(ctx, item, t).await;
    }
    finish(ctx, item, &body).await;
}

/// Sign with our DKIM key iff the envelope sender is one of our users (bounces are signed when
/// they are made; relayed mail is never signed).
async fn sign_if_ours(ctx: &Arc<Ctx>, item: &QueueItem, body: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let ours = item
        .sender
        .rsplit_once('@')
        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&ctx.cfg.address_domain()));
    if ours {
        ctx.dkim.sign(body).await
    } else {
        Ok(body)
    }
}

async fn reschedule(ctx: &Arc<Ctx>, mut item: QueueItem, error: String) {
    item.attempts += 1;
    let delay = backoff(ctx.cfg.delivery_retry_base, item.attempts);
    item.next_attempt = now_unix() + delay as i64;
    tracing::info!(
        queue_id = item.id,
        attempts = item.attempts,
        retry_in = delay,
        "delivery attempt failed; deferred: {}",
        redact(&error)
    );
    item.last_error = Some(error);
    let store = ctx.store.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.queue_update(&item)).await {
        tracing::error!("updating the outbound queue failed: {e}");
    }
}

/// Every recipient is delivered or failed: bounce the failures, then drop the item.
async fn finish(ctx: &Arc<Ctx>, item: QueueItem, body: &[u8]) {
    let failed: Vec<(String, String)> = item
        .rcpts
        .iter()
        .filter_map(|r| match &r.state {
            RcptState::Failed(t) => Some((r.addr.clone(), t.clone())),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        if let Err(e) = super::send_bounce(ctx, &item.sender, &failed, body).await {
            // Keep the item (with its recorded states) and try the bounce again later.
            tracing::error!(queue_id = item.id, "generating a bounce failed: {e}");
            return reschedule(ctx, item, "451 4.3.0 bounce generation failed".into()).await;
        }
    }
    let store = ctx.store.clone();
    let id = item.id;
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.queue_remove(id)).await {
        tracing::error!("removing a queue item failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(super::backoff(60, 1), 60);
        assert_eq!(super::backoff(60, 2), 120);
        assert_eq!(super::backoff(60, 30), 3600);
        assert_eq!(super::backoff(1, 1), 1);
    }
}
