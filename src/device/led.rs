//! Status LED: blink patterns per [`Status`] and a Linux LED class device that shows them.
//!
//! Owns: the patterns (documented in the README's Appliance section) and the sysfs LED protocol
//! (`<root>/<name>/trigger` ← `none`, then `brightness` ← 0/1). The sysfs root is a parameter so
//! tests run against a directory tree. Must not know: how the status is computed.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::status::Status;

/// One step of a pattern: LED on or off for so many milliseconds. A pattern repeats.
pub type Step = (bool, u64);

/// Booting: fast even blink, 5 Hz.
pub const BOOTING: &[Step] = &[(true, 100), (false, 100)];
/// Setup needed: slow even blink, 0.5 Hz (1 s on, 1 s off).
pub const SETUP_NEEDED: &[Step] = &[(true, 1000), (false, 1000)];
/// Healthy: on, with a short "alive" wink (100 ms off) every 3 s.
pub const HEALTHY: &[Step] = &[(true, 2900), (false, 100)];
/// Degraded: two short flashes, then a 1.4 s pause.
pub const DEGRADED: &[Step] = &[(true, 200), (false, 200), (true, 200), (false, 1400)];
/// Failed: three short flashes, then a 1.4 s pause (mostly dark).
pub const FAILED: &[Step] = &[
    (true, 150),
    (false, 150),
    (true, 150),
    (false, 150),
    (true, 150),
    (false, 1250),
];

/// The pattern for a status.
pub fn pattern(status: &Status) -> &'static [Step] {
    match status {
        Status::Booting => BOOTING,
        Status::SetupNeeded => SETUP_NEEDED,
        Status::Healthy => HEALTHY,
        Status::Degraded(_) => DEGRADED,
        Status::Failed(_) => FAILED,
    }
}

/// Period of a pattern in milliseconds.
pub fn period_ms(p: &[Step]) -> u64 {
    p.iter().map(|s| s.1).sum()
}

/// Whether the LED is on `t_ms` after the pattern started (patterns repeat).
pub fn level_at(p: &[Step], t_ms: u64) -> bool {
    let period = period_ms(p);
    if period == 0 {
        return false;
    }
    let mut t = t_ms % period;
    for &(on, d) in p {
        if t < d {
            return on;
        }
        t -= d;
    }
    false
}

/// Something that can be switched on and off.
pub trait Led: Send {
    fn set(&mut self, on: bool) -> io::Result<()>;
}

/// A Linux LED class device, e.g. `/sys/class/leds/ACT`.
pub struct SysfsLed {
    dir: PathBuf,
    old_trigger: Option<String>,
    last: Option<bool>,
}

impl SysfsLed {
    /// Finds the LED `name` under `root` (normally `/sys/class/leds`). The name is matched exactly,
    /// then case-insensitively, then as the function part of `device:color:function` names; `ACT`
    /// also finds `led0` (older Raspberry Pi kernels). Takes it over by writing `none` to `trigger`.
    pub fn open(root: &Path, name: &str) -> io::Result<SysfsLed> {
        let dir = find_led(root, name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no LED {name:?} under {}", root.display()),
            )
        })?;
        let old_trigger = std::fs::read_to_string(dir.join("trigger"))
            .ok()
            .and_then(|s| current_trigger(&s));
        std::fs::write(dir.join("trigger"), "none")?;
        Ok(SysfsLed {
            dir,
            old_trigger,
            last: None,
        })
    }

    /// The LED's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Gives the LED back to the kernel trigger it had before (e.g. `heartbeat`, `mmc0`).
    pub fn restore(&mut self) -> io::Result<()> {
        let t = self.old_trigger.clone().unwrap_or_else(|| "none".into());
        std::fs::write(self.dir.join("trigger"), t)
    }
}

impl Led for SysfsLed {
    fn set(&mut self, on: bool) -> io::Result<()> {
        if self.last == Some(on) {
            return Ok(());
        }
        std::fs::write(self.dir.join("brightness"), if on { "1" } else { "0" })?;
        self.last = Some(on);
        Ok(())
    }
}

/// The selected trigger in a sysfs `trigger` listing (`none [mmc0] heartbeat`), or the whole
/// content when no brackets are present (a plain file in tests).
fn current_trigger(listing: &str) -> Option<String> {
    let s = listing.trim();
    if let (Some(a), Some(b)) = (s.find('['), s.find(']')) {
        if a < b {
            return Some(s[a + 1..b].to_string());
        }
    }
    (!s.is_empty() && !s.contains(' ')).then(|| s.to_string())
}

fn find_led(root: &Path, name: &str) -> Option<PathBuf> {
    let exact = root.join(name);
    if exact.join("brightness").exists() {
        return Some(exact);
    }
    let mut names: Vec<String> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("brightness").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let want = name.to_ascii_lowercase();
    let hit = names
        .iter()
        .find(|n| n.to_ascii_lowercase() == want)
        .or_else(|| {
            names.iter().find(|n| {
                n.rsplit(':').next().map(|f| f.to_ascii_lowercase()) == Some(want.clone())
            })
        })
        .or_else(|| {
            (want == "act")
                .then(|| names.iter().find(|n| n.as_str() == "led0"))
                .flatten()
        })?;
    Some(root.join(hit))
}

/// Drives `led` with the pattern of the current status until the channel closes; then restores
/// nothing (the caller decides). Restarts the pattern whenever the status changes.
pub async fn run<L: Led>(mut led: L, mut rx: tokio::sync::watch::Receiver<Status>) {
    loop {
        let p = pattern(&rx.borrow_and_update().clone());
        let mut i = 0usize;
        loop {
            let (on, ms) = p[i % p.len()];
            if let Err(e) = led.set(on) {
                tracing::warn!("status LED: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
            }
            i += 1;
        }
    }
}
