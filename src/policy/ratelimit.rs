//! Submission rule 3: a keyed GCRA rate limit per envelope sender (governor), checked once per
//! transaction at its first RCPT. `max_user_send_per_minute` messages per minute, the first
//! `max_user_send_burst_size` pass at once. Keys whose state is indistinguishable from a fresh
//! one are garbage-collected, so memory stays bounded by the senders of the last minute or so.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, MonotonicClock};
use governor::state::keyed::DashMapStateStore;
use governor::Quota;

use super::replies::{policy_rate_limited, Reply};

/// Every this many checks, [`RateLimiter::check`] also drops expired keys.
const GC_EVERY: u64 = 256;

type Inner<C> = governor::RateLimiter<
    String,
    DashMapStateStore<String>,
    C,
    governor::middleware::NoOpMiddleware<<C as Clock>::Instant>,
>;

/// Per-sender rate limiter. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct RateLimiter<C: Clock = MonotonicClock> {
    inner: Inner<C>,
    clock: C,
    checks: AtomicU64,
}

impl RateLimiter<MonotonicClock> {
    /// `per_minute` messages per minute with a burst of `burst` (values of 0 count as 1; the
    /// configuration rejects them anyway).
    pub fn new(per_minute: u32, burst: u32) -> RateLimiter<MonotonicClock> {
        RateLimiter::with_clock(per_minute, burst, MonotonicClock)
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// Same with a custom clock (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(per_minute: u32, burst: u32, clock: C) -> RateLimiter<C> {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        RateLimiter {
            inner: governor::RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one message from `sender` (case-insensitive). Over the limit: the
    /// `450 4.7.1: Too much mail from <addr>, rate limited until: <time>` reply, and nothing is
    /// counted.
    pub fn check(&self, sender: &str) -> Result<(), Reply> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % GC_EVERY == GC_EVERY - 1 {
            self.gc();
        }
        let key = sender.to_ascii_lowercase();
        match self.inner.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let until = rfc3339_utc(SystemTime::now() + wait);
                Err(Reply::new(policy_rate_limited(sender, &until)))
            }
        }
    }

    /// Drops keys that are back to a fresh state and shrinks the map. Called from
    /// [`check`](Self::check) now and then; a periodic task may call it too.
    pub fn gc(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    /// Number of senders currently tracked.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// `2026-05-01T12:00:03Z` (whole seconds, rounded up so the client never retries too early).
pub(crate) fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let mut secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs += 1;
    }
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199); // leap year, end of Feb
        assert_eq!(rfc3339_utc(t), "2024-02-29T23:59:59Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_001);
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:01Z");
    }
}
