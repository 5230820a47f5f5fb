//! The appliance status model: a pure function from health inputs to one of five states.
//!
//! Owns: the thresholds that separate healthy, degraded and failed. Must not know: how the inputs
//! are measured (listeners, store, clock) or how the state is shown (LED, display).

use std::time::Duration;

/// What the owner sees on the LED and the display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The relay is starting; listeners are not bound yet.
    Booting,
    /// The first-boot wizard has not been completed (no domain configured yet).
    SetupNeeded,
    /// Everything is fine.
    Healthy,
    /// Serving, but something needs attention soon; the reasons say what.
    Degraded(Vec<Reason>),
    /// The relay cannot serve; the reason says why.
    Failed(Reason),
}

/// Why the status is degraded or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A configured listener is not bound.
    ListenerDown,
    /// The TLS certificate expires within the warning window.
    CertExpiring,
    /// The TLS certificate has expired: clients refuse to connect.
    CertExpired,
    /// The DNS self-check (MX, A/AAAA, DKIM) fails.
    DnsCheckFailing,
    /// The outbound queue holds more messages than the threshold.
    QueueBackingUp,
    /// The data partition is more than the threshold full.
    DiskAlmostFull,
    /// The system clock is not synchronised (ACME and TLS need it).
    ClockNotSynced,
}

impl Reason {
    /// One short line for the display.
    pub fn text(&self) -> &'static str {
        match self {
            Reason::ListenerDown => "listener down",
            Reason::CertExpiring => "certificate expiring",
            Reason::CertExpired => "certificate expired",
            Reason::DnsCheckFailing => "DNS check failing",
            Reason::QueueBackingUp => "queue backing up",
            Reason::DiskAlmostFull => "disk almost full",
            Reason::ClockNotSynced => "clock not synced",
        }
    }
}

/// Measurements the status is computed from. `None` means "not measured": it never degrades.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// All listeners have been started (false while booting).
    pub started: bool,
    /// Every configured listener is bound and accepting.
    pub listeners_up: bool,
    /// The setup wizard has been completed (a mail domain exists).
    pub setup_done: bool,
    /// Time until the TLS certificate expires; zero or less is encoded as `Some(ZERO)`.
    pub cert_expires_in: Option<Duration>,
    /// Result of the last DNS self-check.
    pub dns_ok: Option<bool>,
    /// Messages waiting in the outbound queue.
    pub queue_depth: Option<u64>,
    /// Used fraction of the data partition, in percent (0–100).
    pub disk_used_percent: Option<f64>,
    /// The kernel reports the clock as synchronised.
    pub clock_synced: Option<bool>,
}

impl Default for Inputs {
    fn default() -> Inputs {
        Inputs {
            started: false,
            listeners_up: false,
            setup_done: true,
            cert_expires_in: None,
            dns_ok: None,
            queue_depth: None,
            disk_used_percent: None,
            clock_synced: None,
        }
    }
}

/// Limits beyond which the status degrades.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub cert_warning: Duration,
    pub queue_depth: u64,
    pub disk_used_percent: f64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            cert_warning: Duration::from_secs(14 * 24 * 3600),
            queue_depth: 1000,
            disk_used_percent: 90.0,
        }
    }
}

/// Computes the status. Order of precedence: booting, failed, setup needed, degraded, healthy.
pub fn evaluate(i: &Inputs, t: &Thresholds) -> Status {
    if !i.started {
        return Status::Booting;
    }
    if !i.listeners_up {
        return Status::Failed(Reason::ListenerDown);
    }
    if i.setup_done && i.cert_expires_in == Some(Duration::ZERO) {
        return Status::Failed(Reason::CertExpired);
    }
    if !i.setup_done {
        return Status::SetupNeeded;
    }
    let mut reasons = Vec::new();
    if matches!(i.cert_expires_in, Some(d) if d < t.cert_warning) {
        reasons.push(Reason::CertExpiring);
    }
    if i.dns_ok == Some(false) {
        reasons.push(Reason::DnsCheckFailing);
    }
    if matches!(i.queue_depth, Some(q) if q > t.queue_depth) {
        reasons.push(Reason::QueueBackingUp);
    }
    if matches!(i.disk_used_percent, Some(p) if p > t.disk_used_percent) {
        reasons.push(Reason::DiskAlmostFull);
    }
    if i.clock_synced == Some(false) {
        reasons.push(Reason::ClockNotSynced);
    }
    if reasons.is_empty() {
        Status::Healthy
    } else {
        Status::Degraded(reasons)
    }
}

/// Used percentage of the filesystem holding `path` (statvfs), for [`Inputs::disk_used_percent`].
pub fn disk_used_percent(path: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let total = st.f_blocks as f64;
    if total == 0.0 {
        return None;
    }
    let avail = st.f_bavail as f64;
    Some(100.0 * (total - avail) / total)
}

/// Whether the kernel clock is synchronised (adjtimex: not `TIME_ERROR`).
pub fn clock_synced() -> Option<bool> {
    // SAFETY: a zeroed timex with modes = 0 only reads the kernel state.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::adjtimex(&mut tx) };
    if r < 0 {
        None
    } else {
        Some(r != libc::TIME_ERROR)
    }
}
