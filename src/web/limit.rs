//! Per-client-IP rate limit for `/new` (relay-behaviour §4.3: 2 requests per second, burst 5).
//! IPv6 clients are keyed by their /64, so one host cannot dodge the limit by rotating addresses.
//! Keys whose state is back to fresh are dropped regularly, so memory stays bounded by the
//! clients of the last few seconds. Addresses are never logged.
//!
//! Owns: the keyed GCRA state. Must not know: HTTP.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::state::keyed::DashMapStateStore;
use governor::Quota;

/// Every this many checks, expired keys are dropped.
const GC_EVERY: u64 = 128;

type Inner = governor::RateLimiter<
    IpAddr,
    DashMapStateStore<IpAddr>,
    MonotonicClock,
    governor::middleware::NoOpMiddleware<<MonotonicClock as Clock>::Instant>,
>;

pub struct IpLimiter {
    inner: Inner,
    clock: MonotonicClock,
    checks: AtomicU64,
}

impl IpLimiter {
    /// `per_second` requests per second with a burst of `burst` (0 counts as 1).
    pub fn new(per_second: u32, burst: u32) -> IpLimiter {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        IpLimiter {
            inner: governor::RateLimiter::dashmap_with_clock(
                Quota::per_second(rate).allow_burst(burst),
                MonotonicClock,
            ),
            clock: MonotonicClock,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request. `Err(wait)` when over the limit (nothing is counted then). A missing
    /// address (no TCP peer) shares one bucket.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % GC_EVERY == GC_EVERY - 1 {
            self.inner.retain_recent();
            self.inner.shrink_to_fit();
        }
        let key = key(ip);
        self.inner
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Number of tracked clients.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.inner.len()
    }
}

fn key(ip: Option<IpAddr>) -> IpAddr {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        Some(v4) => v4,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_and_keys_are_per_client() {
        let l = IpLimiter::new(2, 5);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert!(l.check(Some(a)).is_ok());
        }
        let wait = l.check(Some(a)).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(l.check(Some("192.0.2.2".parse().unwrap())).is_ok());
        // Same /64: same bucket.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..5 {
            assert!(l.check(Some(v6a)).is_ok());
        }
        assert!(l.check(Some(v6b)).is_err());
        assert_eq!(l.tracked(), 3);
    }
}
