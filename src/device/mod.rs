//! The appliance device layer: status LED, watchdog and the QR display of a Raspberry Pi box.
//!
//! Optional and inert without hardware: nothing is opened unless configured, and a device that
//! is missing or fails is logged and skipped, never fatal for the relay.
//!
//! - [`status`]: pure status model (booting, setup needed, healthy, degraded, failed).
//! - [`led`]: blink patterns and the Linux LED class device (`/sys/class/leds/<name>`).
//! - [`gpio`]: an LED on a GPIO line through the character device (`led = "gpio:<chip>:<line>"`).
//! - [`watchdog`]: petting `/dev/watchdog` while the relay can serve; magic close on shutdown.
//! - [`qr`]: QR bitmaps with whole pixels per module and a quiet zone, sized to the screen.
//! - [`layout`]: a full screen for a framebuffer of any size: the QR plus the text, scaled.
//! - [`fb`]: the Linux framebuffer (ioctl + mmap), RGB565 / XRGB8888, honouring `line_length`.
//! - [`oled`]: the 128×64 SSD1306 I2C OLED layout and driver.
//!
//! Owns: which screen and pattern a status maps to. Must not know: sockets, the store, protocols
//! (the caller feeds [`status::Inputs`]).

pub mod fb;
pub mod gpio;
pub mod layout;
pub mod led;
pub mod oled;
pub mod qr;
pub mod status;
pub mod watchdog;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use status::{Inputs, Reason, Status, Thresholds};

/// Which display to draw on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Display {
    #[default]
    None,
    /// A Linux framebuffer device such as `/dev/fb0`.
    Fbdev(PathBuf),
    /// A 128×64 SSD1306 OLED on an I2C bus (`/dev/i2c-1`) at a 7-bit address (usually 0x3c).
    Ssd1306 { bus: PathBuf, address: u8 },
}

impl Display {
    /// From the config's `display` value: `none` or empty, a framebuffer path, or
    /// `ssd1306:<i2c bus path>[:<address>]` with the address in hex (`0x3c` when left out).
    /// The address is what follows the last `:`, so a bus path containing `:` needs one.
    pub fn parse(s: &str) -> Result<Display, String> {
        let Some(rest) = s.strip_prefix("ssd1306:") else {
            return Ok(match s {
                "" | "none" => Display::None,
                p => Display::Fbdev(PathBuf::from(p)),
            });
        };
        let (bus, address) = match rest.rsplit_once(':') {
            Some((bus, a)) => {
                let hex = a
                    .strip_prefix("0x")
                    .or_else(|| a.strip_prefix("0X"))
                    .unwrap_or(a);
                let address = u8::from_str_radix(hex, 16)
                    .ok()
                    .filter(|a| (0x03..=0x77).contains(a))
                    .ok_or_else(|| format!("{a:?} is not a 7-bit I2C address such as 0x3c"))?;
                (bus, address)
            }
            None => (rest, 0x3c),
        };
        if !bus.starts_with('/') {
            return Err(format!(
                "{bus:?} is not an I2C bus device path such as /dev/i2c-1"
            ));
        }
        Ok(Display::Ssd1306 {
            bus: PathBuf::from(bus),
            address,
        })
    }
}

/// Device settings; the default does nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// LED class name looked up under `led_root` (e.g. `ACT`), or a GPIO line as
    /// `gpio:<chip label, name or path>:<line>` (e.g. `gpio:pinctrl-bcm2835:17`), or none.
    pub led: Option<String>,
    /// Root of the LED class devices; `/sys/class/leds` except in tests.
    pub led_root: PathBuf,
    /// Watchdog device (e.g. `/dev/watchdog`), or none.
    pub watchdog: Option<PathBuf>,
    /// How often the watchdog is petted; well below the driver's timeout (15 s on bcm2835).
    pub watchdog_interval: Duration,
    pub display: Display,
    /// The box's address on the home network, shown (and encoded in the QR) as the wizard's
    /// address before setup; set at run time, not from the config file.
    pub lan_ip: Option<String>,
}

impl Default for DeviceConfig {
    fn default() -> DeviceConfig {
        DeviceConfig {
            led: None,
            led_root: PathBuf::from("/sys/class/leds"),
            watchdog: None,
            watchdog_interval: Duration::from_secs(5),
            display: Display::None,
            lan_ip: None,
        }
    }
}

impl DeviceConfig {
    /// From the config file's `[device]` table.
    pub fn from_settings(s: &crate::config::DeviceSettings) -> DeviceConfig {
        let d = DeviceConfig::default();
        DeviceConfig {
            led: s.led.clone().filter(|l| !l.is_empty()),
            led_root: s.led_root.clone().unwrap_or(d.led_root),
            watchdog: s.watchdog.clone(),
            watchdog_interval: s
                .watchdog_interval
                .map(|n| Duration::from_secs(n.max(1)))
                .unwrap_or(d.watchdog_interval),
            // Checked by `Config::validate`; an invalid value leaves the display off.
            display: Display::parse(s.display.as_deref().unwrap_or("")).unwrap_or_default(),
            lan_ip: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.led.is_none() && self.watchdog.is_none() && self.display == Display::None
    }
}

/// What the display shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    /// Payload of the QR code, if one is shown.
    pub qr: Option<String>,
    /// Text lines (domain, addresses, reasons), top to bottom.
    pub lines: Vec<String>,
}

/// Where the owner finds the first-boot wizard.
pub const WIZARD_HOST: &str = "chatmail-box.local";

/// The screen for a status: the wizard's address before setup, the invite after it, and the
/// reasons when degraded or failed. `lan_ip` is the box's address on the home network.
pub fn screen(status: &Status, domain: &str, lan_ip: Option<&str>) -> Screen {
    let wizard = match lan_ip {
        Some(ip) => format!("http://{ip}"),
        None => format!("http://{WIZARD_HOST}"),
    };
    match status {
        Status::Booting => Screen {
            qr: None,
            lines: vec!["chatmail-box".into(), "starting...".into()],
        },
        Status::SetupNeeded => Screen {
            qr: Some(wizard.clone()),
            lines: vec!["Setup:".into(), wizard, WIZARD_HOST.into()],
        },
        Status::Healthy => Screen {
            qr: Some(format!("DCACCOUNT:https://{domain}/new")),
            lines: vec![domain.into()],
        },
        Status::Degraded(reasons) => {
            let mut lines = vec![domain.to_string(), "Attention:".into()];
            lines.extend(reasons.iter().map(|r| r.text().to_string()));
            Screen {
                qr: Some(format!("DCACCOUNT:https://{domain}/new")),
                lines,
            }
        }
        Status::Failed(r) => Screen {
            qr: None,
            lines: vec![domain.into(), "NOT SERVING:".into(), r.text().into()],
        },
    }
}

/// Renders the screen's QR as large as fits `width`×`height` at ≥ 2 px per module, with the
/// payload shown. For invites the first (longest, most compatible) form that fits is used
/// ([`qr::fitting_invite`]);
/// `None` when nothing fits or the screen has no QR.
pub fn render_screen_qr(
    s: &Screen,
    domain: &str,
    width: usize,
    height: usize,
) -> Option<(String, qr::RenderedQr)> {
    let payload = s.qr.as_deref()?;
    if payload.starts_with("DCACCOUNT:") {
        qr::fitting_invite(domain, width, height, qr::DEFAULT_FIT)
    } else {
        qr::render_fitting(payload, width, height, qr::DEFAULT_FIT)
            .map(|r| (payload.to_string(), r))
    }
}

/// A running device layer. Feed it with [`Device::update`]; [`Device::shutdown`] disarms the
/// watchdog and hands the LED back.
pub struct Device {
    tx: watch::Sender<Status>,
    thresholds: Thresholds,
    tasks: Vec<JoinHandle<()>>,
}

impl Device {
    /// Opens the configured devices (missing ones are logged and skipped) and starts their tasks.
    /// Must be called inside a tokio runtime.
    pub fn start(cfg: &DeviceConfig, domain: &str) -> Device {
        let (tx, rx) = watch::channel(Status::Booting);
        let mut tasks = Vec::new();
        if let Some((chip, line)) = cfg.led.as_deref().and_then(gpio::parse_spec) {
            match gpio::GpioLed::open(std::path::Path::new("/dev"), &chip, line) {
                Ok(l) => {
                    tracing::info!(gpio = %l.describe(), "status LED");
                    tasks.push(tokio::spawn(led::run(l, rx.clone())));
                }
                Err(e) => tracing::warn!("status LED gpio {chip:?} line {line} not used: {e}"),
            }
        } else if let Some(name) = &cfg.led {
            match led::SysfsLed::open(&cfg.led_root, name) {
                Ok(l) => {
                    tracing::info!(led = %l.dir().display(), "status LED");
                    let rx = rx.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut l = l;
                        led::run(&mut l, rx).await;
                        let _ = l.restore();
                    }));
                }
                Err(e) => tracing::warn!("status LED {name:?} not used: {e}"),
            }
        }
        if let Some(path) = &cfg.watchdog {
            match watchdog::Watchdog::open(path) {
                Ok(w) => {
                    tracing::info!(watchdog = %path.display(), "petting watchdog");
                    tasks.push(tokio::spawn(pet(w, rx.clone(), cfg.watchdog_interval)));
                }
                Err(e) => tracing::warn!("watchdog {} not used: {e}", path.display()),
            }
        }
        if let Display::Fbdev(path) = &cfg.display {
            match fb::Framebuffer::open_device(path) {
                Ok(f) => {
                    tracing::info!(fb = %path.display(), geometry = ?f.geometry, "display");
                    let (domain, lan_ip) = (domain.to_string(), cfg.lan_ip.clone());
                    tasks.push(tokio::spawn(display(
                        Sink::Fb(f),
                        rx.clone(),
                        domain,
                        lan_ip,
                    )));
                }
                Err(e) => tracing::warn!("display {} not used: {e}", path.display()),
            }
        }
        if let Display::Ssd1306 { bus, address } = &cfg.display {
            tracing::info!(bus = %bus.display(), address, "display: SSD1306");
            let (domain, lan_ip) = (domain.to_string(), cfg.lan_ip.clone());
            let sink = Sink::Oled {
                bus: bus.clone(),
                address: *address,
            };
            tasks.push(tokio::spawn(display(sink, rx.clone(), domain, lan_ip)));
        }
        Device {
            tx,
            thresholds: Thresholds::default(),
            tasks,
        }
    }

    /// Recomputes the status from fresh measurements; returns it.
    pub fn update(&self, inputs: &Inputs) -> Status {
        let s = status::evaluate(inputs, &self.thresholds);
        self.tx.send_if_modified(|cur| {
            let changed = *cur != s;
            *cur = s.clone();
            changed
        });
        s
    }

    /// Re-measures what this process can see by itself (disk usage of `data_dir`, clock sync)
    /// every `every`, with the listeners up and setup done; runs until dropped.
    pub async fn monitor(&self, data_dir: &std::path::Path, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let inputs = Inputs {
                started: true,
                listeners_up: true,
                setup_done: true,
                disk_used_percent: status::disk_used_percent(data_dir),
                clock_synced: status::clock_synced(),
                ..Inputs::default()
            };
            let s = self.update(&inputs);
            tracing::debug!(status = ?s, "device status");
        }
    }

    /// Stops the tasks: the watchdog is magic-closed and the LED gets its old trigger back.
    pub async fn shutdown(self) {
        drop(self.tx);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl<L: led::Led + ?Sized> led::Led for &mut L {
    fn set(&mut self, on: bool) -> std::io::Result<()> {
        (**self).set(on)
    }
}

async fn pet(mut w: watchdog::Watchdog, mut rx: watch::Receiver<Status>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        }
        if !matches!(*rx.borrow(), Status::Failed(_)) {
            if let Err(e) = w.pet() {
                tracing::warn!("watchdog: {e}");
            }
        }
    }
    if let Err(e) = w.disarm() {
        tracing::warn!("watchdog magic close: {e}");
    }
}

/// Where screens go.
enum Sink {
    Fb(fb::Framebuffer),
    /// The bus is opened and the SSD1306 initialised for each redraw, so a panel plugged in late
    /// or reset by a brown-out comes back at the next retry.
    Oled {
        bus: PathBuf,
        address: u8,
    },
}

impl Sink {
    /// Blocking: composing a 1080p screen and writing 8 MB of pixel memory, or I2C transfers.
    fn show(&mut self, s: &Screen, domain: &str) -> std::io::Result<()> {
        match self {
            Sink::Fb(f) => {
                let g = f.geometry;
                f.show(&layout::compose(s, domain, g.width, g.height).bitmap)
            }
            Sink::Oled { bus, address } => oled::show_on_bus(bus, *address, s, domain).map(|_| ()),
        }
    }
}

/// How soon a failed redraw is tried again.
const DISPLAY_RETRY: Duration = Duration::from_secs(30);

/// Redraws the display on every status change, off the async workers; a failed redraw is retried
/// every [`DISPLAY_RETRY`] and logged once per status.
async fn display(
    mut sink: Sink,
    mut rx: watch::Receiver<Status>,
    domain: String,
    lan_ip: Option<String>,
) {
    let mut failing = false;
    loop {
        let st = rx.borrow_and_update().clone();
        let s = screen(&st, &domain, lan_ip.as_deref());
        let d = domain.clone();
        let (back, r) = match tokio::task::spawn_blocking(move || {
            // A panic while drawing must not take the display with it: the sink comes back.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.show(&s, &d)))
                .unwrap_or_else(|_| Err(std::io::Error::other("drawing panicked")));
            (sink, r)
        })
        .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("display task: {e}");
                return;
            }
        };
        sink = back;
        match r {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                tracing::warn!("display: {e}");
                failing = true;
            }
            Err(_) => {}
        }
        if failing {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    failing = false;
                }
                _ = tokio::time::sleep(DISPLAY_RETRY) => {}
            }
        } else if rx.changed().await.is_err() {
            return;
        }
    }
}
