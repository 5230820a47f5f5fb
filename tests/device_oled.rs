//! The 128×64 SSD1306 screens through a recorded I2C stream: the panel's memory is rebuilt from
//! the bytes the ssd1306 driver sent and the QR is decoded from it with rqrr.

use std::convert::Infallible;

use chatmail_box::device::{oled, screen, Reason, Status};
use embedded_hal::i2c::{ErrorType, I2c, Operation, SevenBitAddress};

#[derive(Default)]
struct Recorder {
    writes: Vec<(u8, Vec<u8>)>,
}

impl ErrorType for Recorder {
    type Error = Infallible;
}

impl I2c<SevenBitAddress> for Recorder {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), Infallible> {
        let mut bytes = Vec::new();
        for op in ops {
            if let Operation::Write(b) = op {
                bytes.extend_from_slice(b);
            }
        }
        self.writes.push((address, bytes));
        Ok(())
    }
}

/// Replays the recorded stream into a 128×64 GDDRAM (horizontal addressing mode: column and
/// page windows from commands 0x21 / 0x22; each data byte is 8 vertical pixels, bit 0 on top).
fn rebuild(writes: &[(u8, Vec<u8>)]) -> Vec<Vec<bool>> {
    let mut ram = vec![vec![false; 128]; 64];
    let (mut c0, mut c1, mut p0, mut p1) = (0usize, 127usize, 0usize, 7usize);
    let (mut col, mut page) = (0usize, 0usize);
    for (addr, w) in writes {
        assert_eq!(*addr, 0x3c);
        match w[0] {
            0x00 => match w.get(1) {
                Some(0x21) => {
                    (c0, c1) = (w[2] as usize, w[3] as usize);
                    col = c0;
                }
                Some(0x22) => {
                    (p0, p1) = (w[2] as usize, w[3] as usize);
                    page = p0;
                }
                _ => {}
            },
            0x40 => {
                for b in &w[1..] {
                    for bit in 0..8 {
                        ram[page * 8 + bit][col] = b & (1 << bit) != 0;
                    }
                    col += 1;
                    if col > c1 {
                        col = c0;
                        page = if page >= p1 { p0 } else { page + 1 };
                    }
                }
            }
            other => panic!("unexpected control byte {other:#x}"),
        }
    }
    ram
}

fn decode(ram: &[Vec<bool>]) -> Vec<String> {
    // Lit pixels are light; QR modules are unlit on a lit quiet zone.
    let mut img =
        rqrr::PreparedImage::prepare_from_greyscale(
            128,
            64,
            |x, y| {
                if ram[y][x] {
                    255
                } else {
                    0
                }
            },
        );
    img.detect_grids()
        .into_iter()
        .filter_map(|g| g.decode().ok().map(|d| d.1))
        .collect()
}

/// Draws the screen for `status` over a recording I2C bus and rebuilds the panel from the bytes.
/// The same screen is then drawn again over embedded-hal-mock's I2C mock with the recorded writes
/// as its expectations: the mock fails on any other transaction, so the stream decoded here is
/// exactly what the driver sends (and it is deterministic). The mock only checks expectations
/// given in advance; it cannot record an unknown stream, hence the recorder.
fn run(status: Status, domain: &str) -> (oled::Drawn, Vec<Vec<bool>>) {
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
    let mut rec = Recorder::default();
    let s = screen(&status, domain, Some("192.168.1.5"));
    let drawn = oled::show(&mut rec, 0x3c, &s, domain).unwrap();
    let expected: Vec<Transaction> = rec
        .writes
        .iter()
        .map(|(addr, bytes)| Transaction::write(*addr, bytes.clone()))
        .collect();
    let mut mock = Mock::new(&expected);
    let again = oled::show(&mut mock, 0x3c, &s, domain).unwrap();
    mock.done();
    assert_eq!(again, drawn);
    (drawn, rebuild(&rec.writes))
}

#[test]
fn invite_for_short_domain_decodes_from_i2c_bytes() {
    let (drawn, ram) = run(Status::Healthy, "box.example");
    assert_eq!(
        drawn.qr.as_deref(),
        Some("DCACCOUNT:https://box.example/new")
    );
    assert_eq!(
        decode(&ram),
        vec!["DCACCOUNT:https://box.example/new".to_string()]
    );
    assert!(drawn.lines.iter().any(|l| l == "box.example"));
}

#[test]
fn bare_form_for_medium_domain() {
    let (drawn, ram) = run(Status::Healthy, "relay.example.org");
    assert_eq!(drawn.qr.as_deref(), Some("DCACCOUNT:relay.example.org"));
    assert_eq!(
        decode(&ram),
        vec!["DCACCOUNT:relay.example.org".to_string()]
    );
}

#[test]
fn wizard_address_before_setup() {
    let (drawn, ram) = run(Status::SetupNeeded, "box.example");
    assert_eq!(decode(&ram), vec!["http://192.168.1.5".to_string()]);
    assert!(
        drawn.lines.concat().contains("chatmail-box.local"),
        "{:?}",
        drawn.lines
    );
}

#[test]
fn long_domain_says_so_and_shows_domain() {
    let d = "relay.example.invalid.long";
    let (drawn, ram) = run(Status::Healthy, d);
    assert_eq!(drawn.qr, None);
    assert!(decode(&ram).is_empty());
    assert_eq!(drawn.lines[0], "QR too long for");
    assert_eq!(drawn.lines[2..].concat(), d);
    assert!(ram.iter().flatten().any(|p| *p), "text is lit");
}

#[test]
fn failed_and_degraded_screens_show_reasons() {
    let (drawn, _) = run(Status::Failed(Reason::ListenerDown), "box.example");
    assert_eq!(drawn.qr, None);
    assert!(drawn.lines.iter().any(|l| l == "listener down"));
    let (drawn, ram) = run(
        Status::Degraded(vec![Reason::ClockNotSynced]),
        "box.example",
    );
    assert!(drawn.qr.is_some());
    assert_eq!(decode(&ram).len(), 1);
    assert!(drawn.lines.concat().contains("clock"));
}
