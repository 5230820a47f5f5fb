//! Automatic expiry (relay-behaviour §14): the job that runs at start and then daily, removing
//! old messages (`delete_mails_after`), large seen messages (`delete_large_after`), trimming
//! mailboxes to 70 % of `max_mailbox_size`, and deleting accounts not logged into for
//! `delete_inactive_users_after` days.
//!
//! Owns: the rules and the schedule. Must not know: sled keys (it uses the store's listing and
//! removal functions, which notify IDLE sessions), protocols.
//!
//! Time is a parameter: [`run_once`] takes `now` (unix seconds) so tests can move the clock.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::store::{now_unix, Flags, Store, StoreError};
use crate::Ctx;

/// Messages larger than this (bytes) fall under `delete_large_after`.
pub const LARGE_MESSAGE: u64 = 200_000;
const DAY: i64 = 86400;

/// What one run removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages older than `delete_mails_after`.
    pub old: usize,
    /// Large seen messages older than `delete_large_after`.
    pub large: usize,
    /// Messages removed by quota trimming.
    pub trimmed: usize,
    /// Accounts deleted for inactivity.
    pub accounts: usize,
}

/// Run every rule once as of `now`. Blocking (store I/O): call from a blocking thread.
pub fn run_once(cfg: &Config, store: &Store, now: i64) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let inactive_days = i64::from(cfg.delete_inactive_users_after);
    for acct in store.accounts()? {
        let last_seen = acct.last_login_day.max(acct.created);
        if inactive_days > 0 && last_seen < now - inactive_days * DAY {
            if store.delete_account(&acct.addr)? {
                report.accounts += 1;
            }
            continue;
        }
        let (old, large) = expire_messages(cfg, store, &acct.addr, now)?;
        report.old += old;
        report.large += large;
        if cfg.max_mailbox_size > 0 {
            report.trimmed += store.trim(&acct.addr, cfg.max_mailbox_size / 100 * 70, now)?;
        }
    }
    Ok(report)
}

/// Apply the two retention rules to one account. Returns (old, large) removed.
fn expire_messages(
    cfg: &Config,
    store: &Store,
    addr: &str,
    now: i64,
) -> Result<(usize, usize), StoreError> {
    let mails_days = i64::from(cfg.delete_mails_after);
    let large_days = i64::from(cfg.delete_large_after);
    let (mut old, mut large) = (Vec::new(), Vec::new());
    for (name, m) in store.all_messages(addr)? {
        if mails_days > 0 && m.internal_date < now - mails_days * DAY {
            old.push((name, m));
        } else if large_days > 0
            && m.size > LARGE_MESSAGE
            && m.flags.contains(Flags::SEEN)
            && m.internal_date < now - large_days * DAY
        {
            large.push((name, m));
        }
    }
    let old = store.remove_grouped(addr, old)?;
    let large = store.remove_grouped(addr, large)?;
    Ok((old, large))
}

/// Seconds after midnight (UTC) of the daily run: 00:02, as the reference relay's timer. The
/// appliance keeps its clock in UTC, so "local time" there is UTC.
pub const DAILY_AT: i64 = 2 * 60;

/// The first daily run time strictly after `now` (unix seconds).
pub fn next_daily_run(now: i64) -> i64 {
    let midnight = now - now.rem_euclid(DAY);
    let today = midnight + DAILY_AT;
    if today > now {
        today
    } else {
        today + DAY
    }
}

/// Start the job: once now, then every day at [`DAILY_AT`].
pub fn spawn(ctx: Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let c = ctx.clone();
            let res =
                tokio::task::spawn_blocking(move || run_once(&c.cfg, &c.store, now_unix())).await;
            match res {
                Ok(Ok(r)) => tracing::info!(
                    old = r.old,
                    large = r.large,
                    trimmed = r.trimmed,
                    accounts = r.accounts,
                    "expiry run finished"
                ),
                Ok(Err(e)) => tracing::error!("expiry run failed: {e}"),
                Err(e) => tracing::error!("expiry task failed: {e}"),
            }
            // Sleep in steps of at most an hour so a changed wall clock (NTP after boot on a
            // board without RTC) does not shift the schedule by a day.
            let target = next_daily_run(now_unix());
            loop {
                let left = target - now_unix();
                if left <= 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(left.clamp(1, 3600) as u64)).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_run_is_at_two_past_midnight() {
        let day0 = 20_000 * DAY; // some midnight UTC
        assert_eq!(next_daily_run(day0), day0 + 120);
        assert_eq!(next_daily_run(day0 + 119), day0 + 120);
        assert_eq!(next_daily_run(day0 + 120), day0 + DAY + 120);
        assert_eq!(next_daily_run(day0 + 12 * 3600), day0 + DAY + 120);
        assert_eq!(next_daily_run(day0 + DAY - 1), day0 + DAY + 120);
    }
}
