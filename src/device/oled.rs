//! SSD1306 128×64 I2C OLED: the status screens drawn with embedded-graphics through the
//! `ssd1306` crate over any embedded-hal 1.0 I2C bus (linux-embedded-hal's `/dev/i2c-N` on a Pi).
//!
//! Owns: the 128×64 layout (QR left, text right, or text only). Must not know: how the screen
//! was chosen (see `screen`) or the status model.

use std::path::Path;

use embedded_graphics::mono_font::ascii::{FONT_5X8, FONT_6X10};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Baseline, Text};
use ssd1306::mode::DisplayConfig;
use ssd1306::prelude::*;
use ssd1306::{I2CDisplayInterface, Ssd1306};

use super::layout::{wrap_lines, QR_TOO_LONG};
use super::Screen;

pub const WIDTH: usize = 128;
pub const HEIGHT: usize = 64;

/// What [`draw`] put on the panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    /// The QR payload shown, if any.
    pub qr: Option<String>,
    /// Text lines shown.
    pub lines: Vec<String>,
}

/// Draws `screen` on a 128×64 1-bit target. The QR (if one fits at ≥ 2 px per module; invites
/// use the first, most compatible form that fits) goes left as unlit modules on a lit field
/// including the quiet zone; text goes right. If the screen wants a QR but none fits, the text
/// says so.
pub fn draw<D: DrawTarget<Color = BinaryColor>>(
    d: &mut D,
    screen: &Screen,
    domain: &str,
) -> Result<Drawn, D::Error> {
    d.clear(BinaryColor::Off)?;
    let rendered = super::render_screen_qr(screen, domain, WIDTH, HEIGHT);
    let mut lines = screen.lines.clone();
    let text_x = match &rendered {
        Some((_, r)) => {
            let b = &r.bitmap;
            let y0 = (HEIGHT - b.height) / 2;
            let px = (0..b.height).flat_map(|y| {
                (0..b.width).map(move |x| {
                    let c = if b.get(x, y) {
                        BinaryColor::Off
                    } else {
                        BinaryColor::On
                    };
                    Pixel(Point::new(x as i32, (y0 + y) as i32), c)
                })
            });
            d.draw_iter(px)?;
            b.width as i32 + 2
        }
        None => {
            if screen.qr.is_some() {
                lines.splice(0..0, QR_TOO_LONG.map(String::from));
            }
            0
        }
    };
    let font = if text_x > 0 { &FONT_5X8 } else { &FONT_6X10 };
    let style = MonoTextStyle::new(font, BinaryColor::On);
    let (cw, lh) = (
        font.character_size.width as i32,
        font.character_size.height as i32 + 1,
    );
    let max_chars = ((WIDTH as i32 - text_x) / cw).max(1) as usize;
    // Long lines (domains) wrap rather than disappear; what does not fit below is cut.
    let fit = (HEIGHT as i32 / lh) as usize;
    let shown: Vec<String> = wrap_lines(&lines, max_chars)
        .into_iter()
        .take(fit)
        .collect();
    for (i, s) in shown.iter().enumerate() {
        let at = Point::new(text_x, i as i32 * lh);
        Text::with_baseline(s, at, style, Baseline::Top).draw(d)?;
    }
    Ok(Drawn {
        qr: rendered.map(|(t, _)| t),
        lines: shown,
    })
}

/// Initialises an SSD1306 at `address` on `i2c` and shows `screen`.
pub fn show<I: embedded_hal::i2c::I2c>(
    i2c: I,
    address: u8,
    screen: &Screen,
    domain: &str,
) -> std::io::Result<Drawn> {
    fn err<E: std::fmt::Debug>(e: E) -> std::io::Error {
        std::io::Error::other(format!("SSD1306: {e:?}"))
    }
    let iface = I2CDisplayInterface::new_custom_address(i2c, address);
    let mut disp = Ssd1306::new(iface, DisplaySize128x64, DisplayRotation::Rotate0)
        .into_buffered_graphics_mode();
    disp.init().map_err(err)?;
    let drawn = draw(&mut disp, screen, domain).map_err(err)?;
    disp.flush().map_err(err)?;
    Ok(drawn)
}

/// Opens `/dev/i2c-N` and shows `screen` on the SSD1306 at `address` (usually 0x3c).
pub fn show_on_bus(
    bus: &Path,
    address: u8,
    screen: &Screen,
    domain: &str,
) -> std::io::Result<Drawn> {
    let i2c = linux_embedded_hal::I2cdev::new(bus)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", bus.display())))?;
    show(i2c, address, screen, domain)
}
