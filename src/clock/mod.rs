//! Clock: an SNTP client (RFC 4330) that sets the kernel clock and its "synchronised" status.
//!
//! The appliance has no RTC and needs the right time before ACME and TLS. `chatmail-box clock`
//! runs as root from init (the relay itself runs unprivileged and only *reads* the kernel's sync
//! status, `device::status::clock_synced`). It exists because BusyBox's ntpd clears `STA_UNSYNC`
//! without resetting the kernel's maximum error, so the kernel marks the clock unsynchronised
//! again within a second and the status LED would stay "degraded" forever; Debian's static
//! BusyBox (the emulated test image) has no ntpd at all.
//!
//! Owns: the 48-byte NTP packet (pure [`request`] / [`parse_reply`], fuzzable), querying servers,
//! stepping or slewing the clock and setting `maxerror` so the kernel reports it synchronised.
//! Must not know about the relay, its config or its store. Hand-written rather than a crate: the
//! client part of NTP is one fixed-size packet, and the kernel discipline (adjtimex with
//! `ADJ_MAXERROR`) is the part that matters here, which SNTP crates do not do.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX: u64 = 2_208_988_800;
/// Offsets above this are stepped (clock_settime); smaller ones are slewed (adjtime).
const STEP_THRESHOLD: f64 = 0.128;
/// Longest round trip accepted, seconds (queries time out after 2 s anyway).
const MAX_DELAY: f64 = 2.0;
/// NTP's limit on a server's root distance (RFC 5905 MAXDIST), seconds.
const MAX_ROOT_DISTANCE: f64 = 1.5;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClockError {
    #[error("reply too short ({0} bytes)")]
    Short(usize),
    #[error("reply is not a server reply (mode {0})")]
    NotServer(u8),
    #[error("reply does not answer our request (origin timestamp differs)")]
    WrongOrigin,
    #[error("server is not synchronised (leap indicator 3 or stratum {0})")]
    Unsynchronised(u8),
    #[error("reply has no transmit timestamp")]
    NoTransmit,
    #[error("reply arrived before it was sent (clock stepped during the query)")]
    Negative,
    #[error("reply is implausible (timestamps out of order, delay or root distance too large)")]
    Implausible,
    #[error("no address for {0}")]
    NoAddress(String),
    #[error("network: {0}")]
    Io(String),
    #[error("setting the clock failed: {0}")]
    Set(String),
}

/// One measurement against a server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds to add to the local clock.
    pub offset: f64,
    /// Round-trip delay in seconds.
    pub delay: f64,
    pub stratum: u8,
    /// The server's root delay/2 + root dispersion, seconds.
    pub root_error: f64,
}

/// A client request (version 4, mode 3). Its transmit timestamp is a random nonce, as chrony
/// sends: it does not leak our clock and a reply must echo it as its origin timestamp.
pub fn request(nonce: [u8; 8]) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = (4 << 3) | 3;
    p[40..48].copy_from_slice(&nonce);
    p
}

fn ntp_time(b: &[u8]) -> f64 {
    let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64;
    let frac = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as f64 / 4_294_967_296.0;
    // Era 1 starts in 2036: small values are after it (this code is newer than 1968).
    let secs = if secs < 1 << 31 {
        secs + (1 << 32)
    } else {
        secs
    };
    (secs as i64 - NTP_UNIX as i64) as f64 + frac
}

fn short_time(b: &[u8]) -> f64 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64 / 65536.0
}

/// Checks a reply to the request with `nonce`, sent at local time `t1` and received at `t4`
/// (Unix seconds), and computes the offset (RFC 4330 §5).
pub fn parse_reply(buf: &[u8], nonce: [u8; 8], t1: f64, t4: f64) -> Result<Sample, ClockError> {
    if buf.len() < 48 {
        return Err(ClockError::Short(buf.len()));
    }
    let mode = buf[0] & 7;
    if mode != 4 {
        return Err(ClockError::NotServer(mode));
    }
    if buf[24..32] != nonce {
        return Err(ClockError::WrongOrigin);
    }
    let stratum = buf[1];
    if buf[0] >> 6 == 3 || stratum == 0 || stratum > 15 {
        return Err(ClockError::Unsynchronised(stratum));
    }
    if buf[40..48] == [0; 8] {
        return Err(ClockError::NoTransmit);
    }
    if t4 < t1 {
        return Err(ClockError::Negative);
    }
    let t2 = ntp_time(&buf[32..40]);
    let t3 = ntp_time(&buf[40..48]);
    let delay = (t4 - t1) - (t3 - t2);
    let root_error = short_time(&buf[4..8]) / 2.0 + short_time(&buf[8..12]);
    // A zero receive timestamp, a server that answered before it received, a round trip of
    // more than MAX_DELAY or a root distance above NTP's 1.5 s limit: not a time to set.
    if buf[32..40] == [0; 8]
        || t3 < t2
        || !(-0.001..=MAX_DELAY).contains(&delay)
        || root_error > MAX_ROOT_DISTANCE
    {
        return Err(ClockError::Implausible);
    }
    Ok(Sample {
        offset: ((t2 - t1) + (t3 - t4)) / 2.0,
        delay: delay.max(0.0),
        stratum,
        root_error,
    })
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One query to one address.
pub fn query(addr: SocketAddr, timeout: Duration) -> Result<Sample, ClockError> {
    let io = |e: std::io::Error| ClockError::Io(e.to_string());
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).map_err(io)?;
    sock.connect(addr).map_err(io)?;
    sock.set_read_timeout(Some(timeout)).map_err(io)?;
    let nonce: [u8; 8] = rand::random();
    let t1 = now();
    sock.send(&request(nonce)).map_err(io)?;
    let mut buf = [0u8; 512];
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // Stray datagrams (late replies to an earlier query) are skipped until the deadline.
        let n = sock.recv(&mut buf).map_err(io)?;
        match parse_reply(&buf[..n], nonce, t1, now()) {
            Err(ClockError::WrongOrigin) if std::time::Instant::now() < deadline => continue,
            r => return r,
        }
    }
}

/// Queries up to four addresses of `server` (`host` or `host:port`, default port 123) and
/// returns the sample with the smallest delay.
pub fn best_sample(server: &str, timeout: Duration) -> Result<Sample, ClockError> {
    let target = if let Ok(ip) = server.parse::<std::net::IpAddr>() {
        SocketAddr::new(ip, 123).to_string()
    } else if server.contains(':') {
        server.to_string() // host:port or [v6]:port
    } else {
        format!("{server}:123")
    };
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| ClockError::Io(format!("{server}: {e}")))?
        .take(4)
        .collect();
    if addrs.is_empty() {
        return Err(ClockError::NoAddress(server.into()));
    }
    let mut best: Option<Sample> = None;
    let mut last_err = None;
    for a in addrs {
        match query(a, timeout) {
            Ok(s) if best.is_none_or(|b| s.delay < b.delay) => best = Some(s),
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    best.ok_or_else(|| last_err.unwrap_or(ClockError::NoAddress(server.into())))
}

/// Applies a sample to the kernel clock (needs CAP_SYS_TIME): steps large offsets, slews small
/// ones, then clears `STA_UNSYNC` with a `maxerror` of the sample's error bound. The kernel adds
/// 500 µs/s to that bound and marks the clock unsynchronised once it passes 16 s (about 9 hours
/// without a new sample).
pub fn apply(s: &Sample) -> Result<(), ClockError> {
    let err = |what: &str| ClockError::Set(format!("{what}: {}", std::io::Error::last_os_error()));
    if s.offset.abs() > STEP_THRESHOLD {
        let t = now() + s.offset;
        let ts = libc::timespec {
            tv_sec: t.floor() as _,
            tv_nsec: ((t - t.floor()) * 1e9) as _,
        };
        // SAFETY: a valid timespec for CLOCK_REALTIME.
        if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
            return Err(err("clock_settime"));
        }
    } else {
        // SAFETY: a zeroed timex with only the single-shot offset set (old-style adjtime).
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        tx.modes = libc::ADJ_OFFSET_SINGLESHOT as _;
        tx.offset = (s.offset * 1e6) as libc::c_long;
        if unsafe { libc::adjtimex(&mut tx) } < 0 {
            return Err(err("adjtimex offset"));
        }
    }
    let bound_us = ((s.delay / 2.0 + s.root_error + 0.001) * 1e6) as libc::c_long;
    // SAFETY: as above; status 0 clears STA_UNSYNC and leaves the kernel PLL off.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = (libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR) as _;
    tx.status = 0;
    tx.maxerror = bound_us;
    tx.esterror = bound_us;
    if unsafe { libc::adjtimex(&mut tx) } < 0 {
        return Err(err("adjtimex status"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(nonce: [u8; 8], t2: f64, t3: f64) -> [u8; 48] {
        let enc = |t: f64| {
            let s = (t.floor() as u64 + NTP_UNIX) as u32;
            let f = ((t - t.floor()) * 4_294_967_296.0) as u32;
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&s.to_be_bytes());
            b[4..].copy_from_slice(&f.to_be_bytes());
            b
        };
        let mut p = [0u8; 48];
        p[0] = (4 << 3) | 4;
        p[1] = 2;
        p[8..12].copy_from_slice(&(65536u32 / 100).to_be_bytes()); // 10 ms dispersion
        p[24..32].copy_from_slice(&nonce);
        p[32..40].copy_from_slice(&enc(t2));
        p[40..48].copy_from_slice(&enc(t3));
        p
    }

    #[test]
    fn offset_and_delay() {
        let n = [1, 2, 3, 4, 5, 6, 7, 8];
        // Local clock 100 s behind; 20 ms each way; 1 ms in the server.
        let (t1, t4) = (1_800_000_000.0, 1_800_000_000.041);
        let s = parse_reply(&reply(n, t1 + 100.020, t1 + 100.021), n, t1, t4).unwrap();
        assert!((s.offset - 100.0).abs() < 1e-4, "{s:?}");
        assert!((s.delay - 0.040).abs() < 1e-4, "{s:?}");
        assert_eq!(s.stratum, 2);
        assert!((s.root_error - 0.01).abs() < 1e-3);
    }

    #[test]
    fn rejects_bad_replies() {
        let n = [9; 8];
        let t = 1_800_000_000.0;
        let good = reply(n, t, t);
        assert_eq!(
            parse_reply(&good[..47], n, t, t),
            Err(ClockError::Short(47))
        );
        assert_eq!(
            parse_reply(&good, [8; 8], t, t),
            Err(ClockError::WrongOrigin)
        );
        let mut p = good;
        p[0] = (4 << 3) | 3;
        assert_eq!(parse_reply(&p, n, t, t), Err(ClockError::NotServer(3)));
        let mut p = good;
        p[0] |= 3 << 6;
        assert!(matches!(
            parse_reply(&p, n, t, t),
            Err(ClockError::Unsynchronised(_))
        ));
        let mut p = good;
        p[1] = 0; // kiss-o'-death
        assert_eq!(parse_reply(&p, n, t, t), Err(ClockError::Unsynchronised(0)));
        let mut p = good;
        p[40..48].fill(0);
        assert_eq!(parse_reply(&p, n, t, t), Err(ClockError::NoTransmit));
        assert_eq!(parse_reply(&good, n, t, t - 1.0), Err(ClockError::Negative));
        // Implausible: a zero receive timestamp (read as 2036), transmit before receive, a
        // 10 s round trip, a 2 s root dispersion.
        let mut p = good;
        p[32..40].fill(0);
        assert_eq!(parse_reply(&p, n, t, t), Err(ClockError::Implausible));
        let p = reply(n, t + 1.0, t);
        assert_eq!(parse_reply(&p, n, t, t), Err(ClockError::Implausible));
        assert_eq!(
            parse_reply(&good, n, t, t + 10.0),
            Err(ClockError::Implausible)
        );
        let mut p = good;
        p[8..12].copy_from_slice(&(2u32 << 16).to_be_bytes());
        assert_eq!(parse_reply(&p, n, t, t), Err(ClockError::Implausible));
    }

    #[test]
    fn request_is_a_v4_client_packet_with_the_nonce() {
        let p = request([7; 8]);
        assert_eq!(p[0], 0x23);
        assert_eq!(&p[40..], &[7; 8]);
        assert!(p[1..40].iter().all(|&b| b == 0));
    }
}
