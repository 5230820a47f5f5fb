//! Push notifications (relay-behaviour §13): the worker that drains the persistent push queue
//! (`Store::push_*`, filled by every local delivery from someone else) by POSTing each device
//! token to the notification gateway.
//!
//! 200 ⇒ done; 410 ⇒ done and the token is removed; anything else or a network error ⇒ retry
//! `base`, `8·base`, `64·base`, `512·base` seconds after the first attempt (base 8 s), dropped
//! after five attempts or when the next attempt would be more than 5 h after the first. At most
//! [`CONCURRENCY`] requests run at once.
//!
//! Owns: the retry policy and the worker loop. Must not know: sled, IMAP, message contents or
//! senders (only the opaque token leaves the relay).

mod gateway;
pub mod turn;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use gateway::Gateway;

use crate::store::{now_unix, PushItem, Store};
use crate::Ctx;

/// Requests in flight at most.
pub const CONCURRENCY: usize = 4;
/// Attempts per notification (0, +1, +8, +64, +512 × base).
pub const MAX_ATTEMPTS: u32 = 5;
/// No attempt later than this after the first one.
pub const DEADLINE_SECS: i64 = 5 * 3600;
/// Longest sleep of the idle loop (a safety net; wake-ups normally come from the store).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// When to try again after `done` failed attempts (≥ 1), or `None` when the item is dropped.
pub fn next_attempt(first_ts: i64, done: u32, base: u64) -> Option<i64> {
    if done == 0 {
        return Some(first_ts);
    }
    if done >= MAX_ATTEMPTS {
        return None;
    }
    let delay = base.saturating_mul(8u64.saturating_pow(done - 1));
    let at = first_ts.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
    (at <= first_ts.saturating_add(DEADLINE_SECS)).then_some(at)
}

/// What an attempt's outcome means for the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The gateway says the token is gone (HTTP 410).
    TokenGone,
    Retry,
}

pub fn classify(res: &anyhow::Result<u16>) -> Outcome {
    match res {
        Ok(200) => Outcome::Delivered,
        Ok(410) => Outcome::TokenGone,
        _ => Outcome::Retry,
    }
}

/// Start the push worker. Fails on a bad `push_url`; with an empty `push_url` nothing is sent
/// and queued items are discarded.
pub fn spawn(ctx: Arc<Ctx>) -> anyhow::Result<JoinHandle<()>> {
    let gw = Gateway::new(&ctx.cfg)?;
    Ok(tokio::spawn(async move {
        match gw {
            Some(gw) => run(ctx, Arc::new(gw)).await,
            None => {
                tracing::info!("push notifications disabled (push_url is empty)");
                discard(&ctx.store).await
            }
        }
    }))
}

/// Push disabled: keep the queue empty.
async fn discard(store: &Store) {
    loop {
        blocking(store, |s| {
            for item in s.push_items()? {
                s.push_remove(item.id)?;
            }
            Ok(())
        })
        .await;
        store.push_wait().await;
    }
}

async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Option<T> {
    let s = store.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::error!("push queue: {e}");
            None
        }
        Err(_) => None,
    }
}

async fn run(ctx: Arc<Ctx>, gw: Arc<Gateway>) {
    let store = ctx.store.clone();
    let base = ctx.cfg.push_retry_base_secs.max(1);
    let inflight: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let sem = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        let items = blocking(&store, |s| s.push_items())
            .await
            .unwrap_or_default();
        let now = now_unix();
        let mut wake_in = MAX_SLEEP;
        for item in items {
            if inflight
                .lock()
                .map(|s| s.contains(&item.id))
                .unwrap_or(true)
            {
                continue;
            }
            if item.next_at > now {
                let secs = u64::try_from(item.next_at - now).unwrap_or(0);
                wake_in = wake_in.min(Duration::from_secs(secs));
                continue;
            }
            if let Ok(mut s) = inflight.lock() {
                s.insert(item.id);
            }
            let (store, gw, sem, inflight) =
                (store.clone(), gw.clone(), sem.clone(), inflight.clone());
            let metrics = ctx.metrics.clone();
            tokio::spawn(async move {
                let id = item.id;
                if let Ok(_permit) = sem.acquire().await {
                    let outcome = attempt(&store, &gw, item, base).await;
                    metrics.push_outcome(outcome);
                }
                if let Ok(mut s) = inflight.lock() {
                    s.remove(&id);
                }
                store.push_wake();
            });
        }
        tokio::select! {
            _ = store.push_wait() => {}
            _ = tokio::time::sleep(wake_in) => {}
        }
    }
}

/// One POST and its consequences in the queue. Returns the outcome's metrics label:
/// `delivered`, `token_gone`, `retry` or `dropped` (retry deadline passed).
async fn attempt(store: &Store, gw: &Gateway, mut item: PushItem, base: u64) -> &'static str {
    let res = gw.post(&item.token).await;
    let id = item.id;
    match classify(&res) {
        Outcome::Delivered => {
            tracing::debug!(id, "notification delivered");
            blocking(store, move |s| s.push_remove(id)).await;
            "delivered"
        }
        Outcome::TokenGone => {
            tracing::info!(id, "push gateway: device token expired, removing it");
            blocking(store, move |s| {
                s.remove_device_token(&item.addr, &item.token)?;
                s.push_remove(id)
            })
            .await;
            "token_gone"
        }
        Outcome::Retry => {
            item.attempt += 1;
            match next_attempt(item.first_ts, item.attempt, base) {
                Some(at) => {
                    match &res {
                        Ok(code) => tracing::info!(id, code, "push gateway failed; will retry"),
                        Err(e) => tracing::info!(id, error = %e, "push gateway failed; will retry"),
                    }
                    item.next_at = at;
                    blocking(store, move |s| s.push_update(&item)).await;
                    "retry"
                }
                None => {
                    tracing::warn!(id, "notification exceeded deadline");
                    blocking(store, move |s| s.push_remove(id)).await;
                    "dropped"
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_the_spec() {
        let t0 = 1_000_000;
        let at: Vec<_> = (1..=5).map(|n| next_attempt(t0, n, 8)).collect();
        assert_eq!(
            at,
            vec![
                Some(t0 + 8),
                Some(t0 + 64),
                Some(t0 + 512),
                Some(t0 + 4096),
                None
            ]
        );
        // A base that would exceed the 5 h deadline drops the item.
        assert_eq!(next_attempt(t0, 4, 100), None);
    }

    #[test]
    fn outcomes() {
        assert_eq!(classify(&Ok(200)), Outcome::Delivered);
        assert_eq!(classify(&Ok(410)), Outcome::TokenGone);
        assert_eq!(classify(&Ok(500)), Outcome::Retry);
        assert_eq!(classify(&Ok(204)), Outcome::Retry);
        assert_eq!(classify(&Err(anyhow::anyhow!("x"))), Outcome::Retry);
    }
}
