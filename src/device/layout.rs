//! Screen layout for framebuffers of any size (HDMI, SPI TFTs): one full-screen 1-bit bitmap with
//! the QR and the screen's text lines, the text drawn with embedded-graphics' mono fonts scaled
//! by whole pixels.
//!
//! Two arrangements are tried, text below the QR and text right of it. One that shows every line
//! beats one that must drop some; then one that keeps every line whole beats one that wraps (an
//! IP address or a domain split over two lines is hard to type); then the larger QR wins, then
//! the larger text. Owns: that choice and the text sizing. Must not
//! know: pixel formats or the device (see `fb`), or how the screen was chosen (see `screen`).

use std::convert::Infallible;

use embedded_graphics::mono_font::ascii::{FONT_10X20, FONT_6X10};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Baseline, Text};

use super::qr::{Bitmap, RenderedQr};
use super::Screen;

/// Fonts tried, larger first. Both are ASCII; other characters are drawn as `?`.
pub const FONTS: [&MonoFont<'static>; 2] = [&FONT_10X20, &FONT_6X10];

/// Put above the text when the screen wants a QR but none fits at 2 px per module.
pub(super) const QR_TOO_LONG: [&str; 2] = ["QR too long for", "this screen."];

/// Text below the QR: the most of the height it may take. Text right of the QR: the least of the
/// width kept for it (the QR gets at most the rest). In percent.
const TEXT_SHARE: usize = 34;

/// Where text went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBlock {
    /// Top-left corner of the first line.
    pub x: usize,
    pub y: usize,
    /// Index into [`FONTS`].
    pub font: usize,
    /// Screen pixels per font pixel.
    pub scale: usize,
    /// Screen pixels from one line's top to the next.
    pub line_pitch: usize,
    /// The lines as drawn, after wrapping.
    pub lines: Vec<String>,
}

/// A composed screen.
#[derive(Debug, Clone)]
pub struct Composed {
    /// `width`×`height`, dark on light.
    pub bitmap: Bitmap,
    pub qr: Option<PlacedQr>,
    pub text: TextBlock,
}

/// Where the QR went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedQr {
    /// The payload (for invites, the form that fitted).
    pub payload: String,
    /// Top-left corner and side in pixels, quiet zone included.
    pub x: usize,
    pub y: usize,
    pub side: usize,
    /// Pixels per module.
    pub scale: usize,
}

/// Lays `screen` out on a `width`×`height` display. The QR keeps its own quiet zone; text keeps
/// a margin of 1/40 of the longer side. Lines that do not fit even at the smallest size are cut.
pub fn compose(screen: &Screen, domain: &str, width: usize, height: usize) -> Composed {
    let margin = (width.max(height) / 40).max(2);
    let mut lines: Vec<String> = screen.lines.iter().map(|l| ascii(l)).collect();
    let wants_qr = screen.qr.is_some();
    let render = |w: usize, h: usize| super::render_screen_qr(screen, domain, w, h);
    let mut best: Option<Candidate> = None;
    if wants_qr {
        for arrangement in [Arrangement::Below, Arrangement::Right] {
            if let Some(c) = candidate(arrangement, &lines, width, height, margin, &render) {
                if best.as_ref().is_none_or(|b| c.score() > b.score()) {
                    best = Some(c);
                }
            }
        }
        if best.is_none() {
            lines.splice(0..0, QR_TOO_LONG.map(String::from));
        }
    }
    let mut bitmap = Bitmap::new(width, height);
    let c = match best {
        Some(c) => c,
        None => {
            // Text only, centred.
            let (bw, bh) = (
                width.saturating_sub(2 * margin),
                height.saturating_sub(2 * margin),
            );
            let fit = fit_text(&lines, bw, bh);
            let (tw, th) = fit.extent();
            let text = fit.place(
                margin + bw.saturating_sub(tw) / 2,
                margin + bh.saturating_sub(th) / 2,
            );
            draw_text(&mut bitmap, &text);
            return Composed {
                bitmap,
                qr: None,
                text,
            };
        }
    };
    bitmap.blit(&c.qr.1.bitmap, c.qr_at.0, c.qr_at.1);
    draw_text(&mut bitmap, &c.text);
    Composed {
        bitmap,
        qr: Some(PlacedQr {
            side: c.qr.1.bitmap.width,
            scale: c.qr.1.scale,
            payload: c.qr.0,
            x: c.qr_at.0,
            y: c.qr_at.1,
        }),
        text: c.text,
    }
}

#[derive(Clone, Copy)]
enum Arrangement {
    Below,
    Right,
}

struct Candidate {
    qr: (String, RenderedQr),
    qr_at: (usize, usize),
    text: TextBlock,
    cut: bool,
    wrapped: bool,
}

impl Candidate {
    fn score(&self) -> (bool, bool, usize, usize) {
        let glyph_h = FONTS[self.text.font].character_size.height as usize * self.text.scale;
        (!self.cut, !self.wrapped, self.qr.1.scale, glyph_h)
    }
}

fn candidate(
    a: Arrangement,
    lines: &[String],
    width: usize,
    height: usize,
    margin: usize,
    render: &dyn Fn(usize, usize) -> Option<(String, RenderedQr)>,
) -> Option<Candidate> {
    match a {
        Arrangement::Below => {
            let bw = width.saturating_sub(2 * margin);
            let budget = height * TEXT_SHARE / 100;
            let fit = fit_text(lines, bw, budget);
            let (tw, th) = fit.extent();
            let qr_h = height.saturating_sub(th + 2 * margin);
            let qr = render(width, qr_h)?;
            let side = qr.1.bitmap.width;
            let used = side + th + margin;
            let top = height.saturating_sub(used) / 2;
            let (cut, wrapped) = (fit.cut, fit.wrapped);
            let text = fit.place(margin + bw.saturating_sub(tw) / 2, top + side);
            Some(Candidate {
                qr_at: ((width - side) / 2, top),
                cut,
                wrapped,
                qr,
                text,
            })
        }
        Arrangement::Right => {
            let qr_w = width.saturating_sub(width * TEXT_SHARE / 100).min(height);
            let qr = render(qr_w, height)?;
            let side = qr.1.bitmap.width;
            let bw = width.saturating_sub(side + margin);
            let bh = height.saturating_sub(2 * margin);
            let fit = fit_text(lines, bw, bh);
            let (tw, th) = fit.extent();
            let left = width.saturating_sub(side + tw + margin) / 2;
            let (cut, wrapped) = (fit.cut, fit.wrapped);
            let text = fit.place(left + side, margin + bh.saturating_sub(th) / 2);
            Some(Candidate {
                qr_at: (left, (height - side) / 2),
                cut,
                wrapped,
                qr,
                text,
            })
        }
    }
}

/// A font, scale and wrapping that fits a box.
struct TextFit {
    font: usize,
    scale: usize,
    lines: Vec<String>,
    /// Some line was split.
    wrapped: bool,
    /// Some (wrapped) lines did not fit and were dropped.
    cut: bool,
}

impl TextFit {
    fn pitch(&self) -> usize {
        (FONTS[self.font].character_size.height as usize + 1) * self.scale
    }

    fn extent(&self) -> (usize, usize) {
        let cw = FONTS[self.font].character_size.width as usize * self.scale;
        let longest = self.lines.iter().map(|l| l.len()).max().unwrap_or(0);
        (longest * cw, self.lines.len() * self.pitch())
    }

    fn place(self, x: usize, y: usize) -> TextBlock {
        TextBlock {
            x,
            y,
            font: self.font,
            scale: self.scale,
            line_pitch: self.pitch(),
            lines: self.lines,
        }
    }
}

/// The largest glyphs for which `lines` fit `w`×`h`, preferring no wrapping: first every
/// font and scale without wrapping, then with wrapping; at worst the small font at scale 1,
/// wrapped and cut to the lines that fit.
fn fit_text(lines: &[String], w: usize, h: usize) -> TextFit {
    for wrap in [false, true] {
        let mut best: Option<TextFit> = None;
        for (fi, font) in FONTS.iter().enumerate() {
            let (cw, ch) = (
                font.character_size.width as usize,
                font.character_size.height as usize + 1,
            );
            for scale in (1..=64).rev() {
                let max_chars = w / (cw * scale);
                if max_chars == 0 {
                    continue;
                }
                let wrapped = wrap_lines(lines, max_chars);
                let is_wrapped = wrapped.len() > lines.len();
                if (is_wrapped && !wrap) || wrapped.len() * ch * scale > h {
                    continue;
                }
                let better = best.as_ref().is_none_or(|b| {
                    let bh = FONTS[b.font].character_size.height as usize * b.scale;
                    (ch - 1) * scale > bh
                });
                if better {
                    best = Some(TextFit {
                        font: fi,
                        scale,
                        lines: wrapped,
                        wrapped: is_wrapped,
                        cut: false,
                    });
                }
                break;
            }
        }
        if let Some(b) = best {
            return b;
        }
    }
    let small = FONTS.len() - 1;
    let (cw, ch) = (
        FONTS[small].character_size.width as usize,
        FONTS[small].character_size.height as usize + 1,
    );
    let mut shown = wrap_lines(lines, (w / cw).max(1));
    let wrapped = shown.len() > lines.len();
    let all = shown.len();
    shown.truncate(h / ch);
    TextFit {
        font: small,
        scale: 1,
        wrapped,
        cut: shown.len() < all,
        lines: shown,
    }
}

/// Splits lines longer than `max_chars` into chunks; the split is by character, since the
/// lines are addresses and domains without spaces.
pub(super) fn wrap_lines(lines: &[String], max_chars: usize) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines {
        let chars: Vec<char> = l.chars().collect();
        if chars.is_empty() {
            out.push(String::new());
        }
        out.extend(chars.chunks(max_chars).map(|c| c.iter().collect()));
    }
    out
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Draws each line at 1 px per font pixel, then blows it up by `scale` onto `bm`.
fn draw_text(bm: &mut Bitmap, t: &TextBlock) {
    let font = FONTS[t.font];
    let (cw, ch) = (
        font.character_size.width as usize,
        font.character_size.height as usize,
    );
    for (i, line) in t.lines.iter().enumerate() {
        let mut glyphs = Bitmap::new(line.len() * cw, ch);
        let style = MonoTextStyle::new(font, BinaryColor::On);
        let Ok(_) = Text::with_baseline(line, Point::zero(), style, Baseline::Top)
            .draw(&mut Canvas(&mut glyphs));
        bm.blit_scaled(&glyphs, t.x, t.y + i * t.line_pitch, t.scale);
    }
}

/// embedded-graphics target over a [`Bitmap`]: on is dark.
pub struct Canvas<'a>(pub &'a mut Bitmap);

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.0.width as u32, self.0.height as u32)
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = BinaryColor;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<BinaryColor>>>(
        &mut self,
        px: I,
    ) -> Result<(), Infallible> {
        for Pixel(p, c) in px {
            if p.x >= 0 && p.y >= 0 {
                self.0.set(p.x as usize, p.y as usize, c.is_on());
            }
        }
        Ok(())
    }
}
