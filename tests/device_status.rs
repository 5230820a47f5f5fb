//! The appliance status model (src/device/status.rs) and the screen each status maps to.

use std::time::Duration;

use chatmail_box::device::{screen, status::evaluate, Inputs, Reason, Status, Thresholds};

fn healthy_inputs() -> Inputs {
    Inputs {
        started: true,
        listeners_up: true,
        setup_done: true,
        cert_expires_in: Some(Duration::from_secs(60 * 24 * 3600)),
        dns_ok: Some(true),
        queue_depth: Some(3),
        disk_used_percent: Some(42.0),
        clock_synced: Some(true),
    }
}

#[test]
fn booting_until_started() {
    let i = Inputs::default();
    assert_eq!(evaluate(&i, &Thresholds::default()), Status::Booting);
}

#[test]
fn healthy_when_all_inputs_fine() {
    assert_eq!(
        evaluate(&healthy_inputs(), &Thresholds::default()),
        Status::Healthy
    );
}

#[test]
fn unmeasured_inputs_do_not_degrade() {
    let i = Inputs {
        started: true,
        listeners_up: true,
        ..Inputs::default()
    };
    assert_eq!(evaluate(&i, &Thresholds::default()), Status::Healthy);
}

#[test]
fn setup_needed_before_wizard() {
    let i = Inputs {
        setup_done: false,
        cert_expires_in: None,
        ..healthy_inputs()
    };
    assert_eq!(evaluate(&i, &Thresholds::default()), Status::SetupNeeded);
}

#[test]
fn listener_down_is_failed_even_before_setup() {
    let i = Inputs {
        listeners_up: false,
        setup_done: false,
        ..healthy_inputs()
    };
    assert_eq!(
        evaluate(&i, &Thresholds::default()),
        Status::Failed(Reason::ListenerDown)
    );
}

#[test]
fn expired_certificate_is_failed() {
    let i = Inputs {
        cert_expires_in: Some(Duration::ZERO),
        ..healthy_inputs()
    };
    assert_eq!(
        evaluate(&i, &Thresholds::default()),
        Status::Failed(Reason::CertExpired)
    );
}

#[test]
fn each_degradation_reason() {
    let t = Thresholds::default();
    let cases: Vec<(Inputs, Reason)> = vec![
        (
            Inputs {
                cert_expires_in: Some(Duration::from_secs(3 * 24 * 3600)),
                ..healthy_inputs()
            },
            Reason::CertExpiring,
        ),
        (
            Inputs {
                dns_ok: Some(false),
                ..healthy_inputs()
            },
            Reason::DnsCheckFailing,
        ),
        (
            Inputs {
                queue_depth: Some(1001),
                ..healthy_inputs()
            },
            Reason::QueueBackingUp,
        ),
        (
            Inputs {
                disk_used_percent: Some(90.5),
                ..healthy_inputs()
            },
            Reason::DiskAlmostFull,
        ),
        (
            Inputs {
                clock_synced: Some(false),
                ..healthy_inputs()
            },
            Reason::ClockNotSynced,
        ),
    ];
    for (i, r) in cases {
        assert_eq!(evaluate(&i, &t), Status::Degraded(vec![r]));
    }
}

#[test]
fn thresholds_are_exclusive_bounds() {
    let t = Thresholds::default();
    let i = Inputs {
        queue_depth: Some(1000),
        disk_used_percent: Some(90.0),
        cert_expires_in: Some(Duration::from_secs(14 * 24 * 3600)),
        ..healthy_inputs()
    };
    assert_eq!(evaluate(&i, &t), Status::Healthy);
}

#[test]
fn several_reasons_are_all_reported() {
    let i = Inputs {
        disk_used_percent: Some(97.0),
        clock_synced: Some(false),
        ..healthy_inputs()
    };
    assert_eq!(
        evaluate(&i, &Thresholds::default()),
        Status::Degraded(vec![Reason::DiskAlmostFull, Reason::ClockNotSynced])
    );
}

#[test]
fn screens_per_status() {
    let d = "relay.example.org";
    let s = screen(&Status::SetupNeeded, d, Some("192.168.1.23"));
    assert_eq!(s.qr.as_deref(), Some("http://192.168.1.23"));
    assert!(s.lines.iter().any(|l| l == "chatmail-box.local"));

    let s = screen(&Status::Healthy, d, None);
    assert_eq!(
        s.qr.as_deref(),
        Some("DCACCOUNT:https://relay.example.org/new")
    );
    assert_eq!(s.lines, vec![d.to_string()]);

    let s = screen(&Status::Degraded(vec![Reason::DiskAlmostFull]), d, None);
    assert!(s.qr.is_some());
    assert!(s.lines.iter().any(|l| l == "disk almost full"));

    let s = screen(&Status::Failed(Reason::ListenerDown), d, None);
    assert_eq!(s.qr, None);
    assert!(s.lines.iter().any(|l| l == "listener down"));
}

#[test]
fn disk_and_clock_probes_answer_on_this_machine() {
    let p = chatmail_box::device::status::disk_used_percent(std::path::Path::new("/")).unwrap();
    assert!((0.0..=100.0).contains(&p), "{p}");
    assert!(chatmail_box::device::status::clock_synced().is_some());
}

#[test]
fn device_table_in_config() {
    use chatmail_box::config::Config;
    use chatmail_box::device::{DeviceConfig, Display};
    let text = r#"
mail_domain = "box.example"

[device]
led = "ACT"
watchdog = "/dev/watchdog"
watchdog_interval = 3
display = "/dev/fb0"
"#;
    let (cfg, warnings) = Config::parse(text, std::path::Path::new("t.toml")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let d = DeviceConfig::from_settings(&cfg.device);
    assert_eq!(d.led.as_deref(), Some("ACT"));
    assert_eq!(d.led_root, std::path::PathBuf::from("/sys/class/leds"));
    assert_eq!(d.watchdog_interval, Duration::from_secs(3));
    assert_eq!(d.display, Display::Fbdev("/dev/fb0".into()));

    let (cfg, _) =
        Config::parse("mail_domain = \"box.example\"\n", std::path::Path::new("t")).unwrap();
    assert!(DeviceConfig::from_settings(&cfg.device).is_empty());

    let bad = "mail_domain = \"box.example\"\n[device]\nled_name = \"ACT\"\n";
    assert!(Config::parse(bad, std::path::Path::new("t")).is_err());

    // The OLED: bus and address, 0x3c by default; a bad address or bus is a config error that
    // names the key.
    for (value, want) in [
        ("ssd1306:/dev/i2c-1", Some(("/dev/i2c-1", 0x3c))),
        ("ssd1306:/dev/i2c-3:0x3d", Some(("/dev/i2c-3", 0x3d))),
        ("ssd1306:/dev/i2c-1:3C", Some(("/dev/i2c-1", 0x3c))),
        ("ssd1306:/dev/i2c-1:0X3D", Some(("/dev/i2c-1", 0x3d))),
        ("ssd1306:/dev/i2c-1:0x80", None),
        ("ssd1306:/dev/i2c-1:zz", None),
        ("ssd1306:i2c-1", None),
        ("ssd1306:", None),
    ] {
        let text = format!("mail_domain = \"box.example\"\n[device]\ndisplay = \"{value}\"\n");
        match (Config::parse(&text, std::path::Path::new("t")), want) {
            (Ok((cfg, _)), Some((bus, address))) => assert_eq!(
                DeviceConfig::from_settings(&cfg.device).display,
                Display::Ssd1306 {
                    bus: bus.into(),
                    address
                },
                "{value}"
            ),
            (Err(e), None) => assert!(e.to_string().contains("device.display"), "{value}: {e}"),
            (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
        }
    }
}
