//! QR codes for the attached display: a 1-bit bitmap with whole pixels per module and a quiet
//! zone, scaled as large as fits a given screen area, and the choice of invite form that fits.
//!
//! Owns: QR sizing (appliance.md §8). Must not know: the display hardware or pixel formats.

use qrcode::{Color, EcLevel, QrCode};

/// A 1-bit image, row-major; `true` is dark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub width: usize,
    pub height: usize,
    pub dark: Vec<bool>,
}

impl Bitmap {
    /// An all-light bitmap.
    pub fn new(width: usize, height: usize) -> Bitmap {
        Bitmap {
            width,
            height,
            dark: vec![false; width * height],
        }
    }
    pub fn get(&self, x: usize, y: usize) -> bool {
        self.dark[y * self.width + x]
    }
    pub fn set(&mut self, x: usize, y: usize, dark: bool) {
        if x < self.width && y < self.height {
            self.dark[y * self.width + x] = dark;
        }
    }
    /// Copies `src` with its top-left corner at (`x`, `y`), clipped.
    pub fn blit(&mut self, src: &Bitmap, x: usize, y: usize) {
        self.blit_scaled(src, x, y, 1);
    }
    /// Copies `src` enlarged `scale` times (each pixel a `scale`×`scale` block) with its
    /// top-left corner at (`x`, `y`), clipped.
    pub fn blit_scaled(&mut self, src: &Bitmap, x: usize, y: usize, scale: usize) {
        for sy in 0..src.height {
            for sx in 0..src.width {
                let dark = src.get(sx, sy);
                for dy in 0..scale {
                    for dx in 0..scale {
                        self.set(x + sx * scale + dx, y + sy * scale + dy, dark);
                    }
                }
            }
        }
    }
}

/// A rendered QR code and how it was sized.
#[derive(Debug, Clone)]
pub struct RenderedQr {
    /// Includes the quiet zone (light).
    pub bitmap: Bitmap,
    /// Modules per side without the quiet zone.
    pub modules: usize,
    /// Pixels per module.
    pub scale: usize,
    /// Quiet zone in modules on each side.
    pub quiet: usize,
    pub ec: EcLevel,
}

/// Sizing rules.
#[derive(Debug, Clone, Copy)]
pub struct Fit {
    /// Smallest acceptable pixels per module.
    pub min_scale: usize,
    /// Quiet zones to try, largest (preferred) first, in modules.
    pub quiet_zones: &'static [usize],
}

/// Standard: at least 2 px per module, 4-module quiet zone, falling back to 2 modules (below the
/// standard, appliance.md §8) only when 4 does not fit at the minimum scale.
pub const DEFAULT_FIT: Fit = Fit {
    min_scale: 2,
    quiet_zones: &[4, 2],
};

/// Renders `text` as large as fits in `max_w`×`max_h`, or `None` if it does not fit at
/// `fit.min_scale`. Error correction M is preferred; L is used when it gives a larger scale.
pub fn render_fitting(text: &str, max_w: usize, max_h: usize, fit: Fit) -> Option<RenderedQr> {
    let side = max_w.min(max_h);
    let mut best: Option<(usize, usize, EcLevel, QrCode)> = None; // (scale, quiet, ec, code)
    for ec in [EcLevel::M, EcLevel::L] {
        let Ok(code) = QrCode::with_error_correction_level(text.as_bytes(), ec) else {
            continue;
        };
        let n = code.width();
        for &q in fit.quiet_zones {
            let scale = side / (n + 2 * q);
            if scale < fit.min_scale {
                continue;
            }
            let better = match &best {
                None => true,
                Some((s, bq, _, _)) => scale > *s || (scale == *s && q > *bq),
            };
            if better {
                best = Some((scale, q, ec, code.clone()));
            }
            break; // a larger quiet zone at the same code is preferred: stop at the first fit
        }
    }
    let (scale, quiet, ec, code) = best?;
    Some(render(&code, scale, quiet, ec))
}

fn render(code: &QrCode, scale: usize, quiet: usize, ec: EcLevel) -> RenderedQr {
    let n = code.width();
    let colors = code.to_colors();
    let px = (n + 2 * quiet) * scale;
    let mut bm = Bitmap::new(px, px);
    for my in 0..n {
        for mx in 0..n {
            if colors[my * n + mx] == Color::Dark {
                for dy in 0..scale {
                    for dx in 0..scale {
                        bm.set((mx + quiet) * scale + dx, (my + quiet) * scale + dy, true);
                    }
                }
            }
        }
    }
    RenderedQr {
        bitmap: bm,
        modules: n,
        scale,
        quiet,
        ec,
    }
}

/// Invite payloads for `domain`, longest (most compatible) first: the account-creation URL, then
/// the bare domain (clients ≥ 2.23 invent credentials, client-contract.md §4.1).
pub fn invite_forms(domain: &str) -> Vec<String> {
    vec![
        format!("DCACCOUNT:https://{domain}/new"),
        format!("DCACCOUNT:{domain}"),
    ]
}

/// The first invite form that fits `max_w`×`max_h` at `fit.min_scale`, rendered; `None` when no
/// form fits scannably (the screen then says so and shows the domain as text).
pub fn fitting_invite(
    domain: &str,
    max_w: usize,
    max_h: usize,
    fit: Fit,
) -> Option<(String, RenderedQr)> {
    invite_forms(domain)
        .into_iter()
        .find_map(|t| render_fitting(&t, max_w, max_h, fit).map(|r| (t, r)))
}
