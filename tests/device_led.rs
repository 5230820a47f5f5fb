//! Status LED patterns and the LED class protocol against a directory tree laid out like
//! /sys/class/leds, and watchdog petting against a plain file standing in for /dev/watchdog.

use std::path::Path;
use std::time::Duration;

use chatmail_box::device::led::{self, level_at, pattern, period_ms, Led, SysfsLed};
use chatmail_box::device::watchdog::Watchdog;
use chatmail_box::device::{Device, DeviceConfig, Inputs, Reason, Status};

fn all_statuses() -> Vec<Status> {
    vec![
        Status::Booting,
        Status::SetupNeeded,
        Status::Healthy,
        Status::Degraded(vec![Reason::DiskAlmostFull]),
        Status::Failed(Reason::ListenerDown),
    ]
}

/// The on/off sequence sampled every 50 ms over 6 s: what an observer sees.
fn observed(p: &[led::Step]) -> Vec<bool> {
    (0..120).map(|i| level_at(p, i * 50)).collect()
}

#[test]
fn patterns_are_distinct() {
    let seen: Vec<Vec<bool>> = all_statuses()
        .iter()
        .map(|s| observed(pattern(s)))
        .collect();
    for i in 0..seen.len() {
        for j in i + 1..seen.len() {
            assert_ne!(seen[i], seen[j], "patterns {i} and {j} look the same");
        }
    }
}

#[test]
fn pattern_shapes() {
    // Booting: 5 Hz.
    assert_eq!(period_ms(led::BOOTING), 200);
    // Setup needed: 1 s on, 1 s off.
    assert!(level_at(led::SETUP_NEEDED, 500) && !level_at(led::SETUP_NEEDED, 1500));
    // Healthy: on > 90 % of the time.
    let on = observed(led::HEALTHY).iter().filter(|b| **b).count();
    assert!(on * 10 > 120 * 9, "{on}");
    // Degraded: two flashes per period; failed: three.
    let flashes = |p: &[led::Step]| p.iter().filter(|s| s.0).count();
    assert_eq!(flashes(led::DEGRADED), 2);
    assert_eq!(flashes(led::FAILED), 3);
    // Repeats.
    assert_eq!(
        level_at(led::FAILED, 10),
        level_at(led::FAILED, 10 + period_ms(led::FAILED))
    );
}

fn fake_led(root: &Path, name: &str, trigger: &str) {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("trigger"), trigger).unwrap();
    std::fs::write(d.join("brightness"), "0").unwrap();
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn sysfs_led_takes_over_and_restores_trigger() {
    let t = tempfile::tempdir().unwrap();
    fake_led(t.path(), "ACT", "none [heartbeat] mmc0");
    let mut l = SysfsLed::open(t.path(), "ACT").unwrap();
    assert_eq!(read(&t.path().join("ACT/trigger")), "none");
    l.set(true).unwrap();
    assert_eq!(read(&t.path().join("ACT/brightness")), "1");
    l.set(false).unwrap();
    assert_eq!(read(&t.path().join("ACT/brightness")), "0");
    l.restore().unwrap();
    assert_eq!(read(&t.path().join("ACT/trigger")), "heartbeat");
}

#[test]
fn led_name_lookup_at_runtime() {
    let t = tempfile::tempdir().unwrap();
    fake_led(t.path(), "led0", "[mmc0]");
    fake_led(t.path(), "green:status", "none");
    fake_led(t.path(), "PWR", "none");
    // ACT on an older Raspberry Pi kernel is called led0.
    assert!(SysfsLed::open(t.path(), "ACT")
        .unwrap()
        .dir()
        .ends_with("led0"));
    assert!(SysfsLed::open(t.path(), "status")
        .unwrap()
        .dir()
        .ends_with("green:status"));
    assert!(SysfsLed::open(t.path(), "pwr")
        .unwrap()
        .dir()
        .ends_with("PWR"));
    assert!(SysfsLed::open(t.path(), "nope").is_err());
    assert!(SysfsLed::open(&t.path().join("missing"), "ACT").is_err());
}

/// Records every level with the time it was set.
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<(tokio::time::Instant, bool)>>>);
impl Led for Recorder {
    fn set(&mut self, on: bool) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push((tokio::time::Instant::now(), on));
        Ok(())
    }
}

#[tokio::test]
async fn led_task_follows_status_changes() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::watch::channel(Status::Booting);
    let task = tokio::spawn(led::run(Recorder(log.clone()), rx));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let switched = tokio::time::Instant::now();
    tx.send(Status::SetupNeeded).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(tx);
    task.await.unwrap();
    let log = log.lock().unwrap();
    let (booting, setup): (Vec<_>, Vec<_>) = log.iter().partition(|(t, _)| *t < switched);
    // Booting blinks at 5 Hz: about 10 changes in 1 s (fewer if the machine is busy).
    assert!((4..=11).contains(&booting.len()), "{}", booting.len());
    for (i, (_, on)) in booting.iter().enumerate() {
        assert_eq!(*on, i % 2 == 0, "booting blink alternates, starting on");
    }
    // Setup needed restarts its own pattern at once: on for 1 s, off for 1 s.
    assert!(setup[0].1, "setup pattern starts on");
    assert!(setup[0].0.duration_since(switched) < Duration::from_millis(300));
    assert!((2..=3).contains(&setup.len()), "{}", setup.len());
    let gap = setup[1].0.duration_since(setup[0].0);
    assert!(
        gap >= Duration::from_millis(1000) && gap < Duration::from_millis(1400),
        "{gap:?}"
    );
}

#[test]
fn watchdog_pets_and_magic_closes() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("watchdog");
    std::fs::write(&p, "").unwrap();
    let mut w = Watchdog::open(&p).unwrap();
    w.pet().unwrap();
    w.pet().unwrap();
    w.disarm().unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"\0\0V");
}

#[tokio::test]
async fn device_layer_pets_only_while_serving() {
    let t = tempfile::tempdir().unwrap();
    let wd = t.path().join("watchdog");
    std::fs::write(&wd, "").unwrap();
    fake_led(t.path(), "ACT", "[heartbeat]");
    let cfg = DeviceConfig {
        led: Some("ACT".into()),
        led_root: t.path().to_path_buf(),
        watchdog: Some(wd.clone()),
        watchdog_interval: Duration::from_millis(100),
        ..DeviceConfig::default()
    };
    let dev = Device::start(&cfg, "relay.example.org");
    assert_eq!(read(&t.path().join("ACT/trigger")), "none");
    let up = Inputs {
        started: true,
        listeners_up: true,
        ..Inputs::default()
    };
    assert_eq!(dev.update(&up), Status::Healthy);
    tokio::time::sleep(Duration::from_millis(550)).await;
    let petted = std::fs::read(&wd).unwrap().len();
    assert!(petted >= 3, "{petted}");
    let down = Inputs {
        listeners_up: false,
        ..up
    };
    assert_eq!(dev.update(&down), Status::Failed(Reason::ListenerDown));
    // The current-thread runtime runs the petting task only while this test awaits, and the
    // task checks the status at each tick, so no pet follows the update.
    let before = std::fs::read(&wd).unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        std::fs::read(&wd).unwrap().len(),
        before,
        "no petting while failed"
    );
    dev.shutdown().await;
    assert_eq!(*std::fs::read(&wd).unwrap().last().unwrap(), b'V');
    assert_eq!(read(&t.path().join("ACT/trigger")), "heartbeat");
}

#[tokio::test]
async fn nothing_configured_does_nothing() {
    let cfg = DeviceConfig::default();
    assert!(cfg.is_empty());
    let dev = Device::start(&cfg, "x.example");
    dev.shutdown().await;
}
