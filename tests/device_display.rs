//! QR rendering for the appliance display: sizing per screen, a framebuffer written through a
//! memory-mapped temp file (RGB565 and XRGB8888, padded rows); the QR decoded back with rqrr
//! and the text read back by matching the font's glyphs.

use chatmail_box::device::fb::{self, Framebuffer, Geometry, PixelFormat};
use chatmail_box::device::qr::{self, Bitmap, DEFAULT_FIT};
use chatmail_box::device::{layout, screen, Reason, Status};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Baseline, Text};

fn decode(bm: &Bitmap) -> Vec<String> {
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(bm.width, bm.height, |x, y| {
        if bm.get(x, y) {
            0
        } else {
            255
        }
    });
    img.detect_grids()
        .into_iter()
        .map(|g| g.decode().expect("decodes").1)
        .collect()
}

/// Puts a bitmap on a light field with a margin, as a display would show it.
fn on_screen(bm: &Bitmap, w: usize, h: usize) -> Bitmap {
    let mut s = Bitmap::new(w, h);
    s.blit(bm, (w - bm.width) / 2, (h - bm.height) / 2);
    s
}

const INVITE: &str = "DCACCOUNT:https://relay.example.invalid/new";

#[test]
fn scale_is_the_largest_that_fits() {
    // (width, height, expected px per module) for the 29-module invite with a 4-module quiet zone.
    for (w, h, scale) in [
        (320, 240, 6),
        (480, 320, 8),
        (1920, 1080, 29),
        (240, 240, 6),
    ] {
        let r = qr::render_fitting(INVITE, w, h, DEFAULT_FIT).unwrap();
        assert_eq!(r.modules, 29, "{w}x{h}");
        assert_eq!(r.quiet, 4);
        assert_eq!(r.scale, scale, "{w}x{h}");
        assert_eq!(r.bitmap.width, (29 + 8) * scale);
        assert!(r.bitmap.width <= w.min(h));
        // Bigger would not fit.
        assert!((29 + 8) * (scale + 1) > w.min(h));
        assert_eq!(
            decode(&on_screen(&r.bitmap, w, h)),
            vec![INVITE.to_string()]
        );
    }
}

#[test]
fn whole_pixels_per_module_and_light_quiet_zone() {
    let r = qr::render_fitting(INVITE, 320, 240, DEFAULT_FIT).unwrap();
    let (s, q, b) = (r.scale, r.quiet, &r.bitmap);
    for y in 0..b.height {
        for x in 0..b.width {
            let (mx, my) = (x / s, y / s);
            if mx < q || my < q || mx >= q + r.modules || my >= q + r.modules {
                assert!(!b.get(x, y), "quiet zone dark at {x},{y}");
            }
            // Every pixel equals its module's top-left pixel.
            assert_eq!(b.get(x, y), b.get(mx * s, my * s));
        }
    }
}

#[test]
fn oled_128x64_invite_forms() {
    // The full URL needs version 3 (29 modules): only 1 px per module on 64 px, so it is skipped.
    assert!(qr::render_fitting(INVITE, 128, 64, DEFAULT_FIT).is_none());
    // For a short domain the full URL form fits at 2 px per module (version 2, 2-module quiet
    // zone, error correction L).
    let (text, r) = qr::fitting_invite("box.example", 128, 64, DEFAULT_FIT).unwrap();
    assert_eq!(text, "DCACCOUNT:https://box.example/new");
    assert_eq!((r.modules, r.scale, r.quiet), (25, 2, 2));
    assert_eq!(decode(&on_screen(&r.bitmap, 128, 64)), vec![text]);
    // Longest domain for which each form fits (README, Appliance section).
    let longest = |full: bool| {
        (1..40)
            .map(|n| format!("{}.de", "a".repeat(n)))
            .filter(|d| {
                qr::fitting_invite(d, 128, 64, DEFAULT_FIT)
                    .is_some_and(|(t, _)| t.starts_with("DCACCOUNT:https://") == full)
            })
            .map(|d| d.len())
            .max()
            .unwrap()
    };
    println!(
        "longest domain: URL form {}, bare form {}",
        longest(true),
        longest(false)
    );
    assert_eq!(longest(true), 12);
    assert_eq!(longest(false), 24);
    let (text, _) = qr::fitting_invite("relay.example.org", 128, 64, DEFAULT_FIT).unwrap();
    assert_eq!(text, "DCACCOUNT:relay.example.org");
    // A long domain does not fit at all: the screen shows the domain as text instead.
    assert!(qr::fitting_invite("relay.example.invalid.long", 128, 64, DEFAULT_FIT).is_none());
    // On a 320x240 TFT the full URL form is chosen.
    let (text, _) = qr::fitting_invite("relay.example.invalid", 320, 240, DEFAULT_FIT).unwrap();
    assert_eq!(text, INVITE);
}

/// Every glyph of a font at 1 px per font pixel, drawn independently of the layout code.
fn glyphs(font: usize) -> Vec<(char, Bitmap)> {
    let f = layout::FONTS[font];
    let (cw, ch) = (
        f.character_size.width as usize,
        f.character_size.height as usize,
    );
    (' '..='~')
        .map(|c| {
            let mut bm = Bitmap::new(cw, ch);
            let style = MonoTextStyle::new(f, BinaryColor::On);
            let mut buf = [0u8; 4];
            Text::with_baseline(c.encode_utf8(&mut buf), Point::zero(), style, Baseline::Top)
                .draw(&mut layout::Canvas(&mut bm))
                .unwrap();
            (c, bm)
        })
        .collect()
}

/// Reads the text back from the screen's pixels: each character cell is sampled at the centre
/// of every `scale`×`scale` block (which must be uniform) and matched against the font's glyphs.
/// Unknown cells read as '\u{fffd}'; trailing blanks are dropped.
fn read_text(screen: &Bitmap, t: &layout::TextBlock, lines: usize) -> Vec<String> {
    let f = layout::FONTS[t.font];
    let (cw, ch) = (
        f.character_size.width as usize,
        f.character_size.height as usize,
    );
    let font = glyphs(t.font);
    let k = t.scale;
    (0..lines)
        .map(|i| {
            let y0 = t.y + i * t.line_pitch;
            let mut s = String::new();
            let mut x0 = t.x;
            while x0 + cw * k <= screen.width {
                let mut cell = Bitmap::new(cw, ch);
                for cy in 0..ch {
                    for cx in 0..cw {
                        let (px, py) = (x0 + cx * k, y0 + cy * k);
                        let v = screen.get(px + k / 2, py + k / 2);
                        for dy in 0..k {
                            for dx in 0..k {
                                assert_eq!(screen.get(px + dx, py + dy), v, "block at {px},{py}");
                            }
                        }
                        cell.set(cx, cy, v);
                    }
                }
                s.push(
                    font.iter()
                        .find(|(_, g)| *g == cell)
                        .map(|(c, _)| *c)
                        .unwrap_or('\u{fffd}'),
                );
                x0 += cw * k;
            }
            s.trim_end().to_string()
        })
        .collect()
}

/// Composes each screen for `g`, writes it through a memory-mapped file in `g`'s pixel format,
/// and reads the QR (rqrr) and the text back from the bytes.
fn fb_roundtrip(g: Geometry) {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("fb0");
    let domain = "relay.example.invalid";
    let ip = Some("192.168.178.23");
    let cases: [(Status, Option<&str>, &[&str]); 5] = [
        (
            Status::SetupNeeded,
            Some("http://192.168.178.23"),
            &["Setup:", "http://192.168.178.23", "chatmail-box.local"],
        ),
        (Status::Healthy, Some(INVITE), &[domain]),
        (
            Status::Degraded(vec![Reason::CertExpiring, Reason::DiskAlmostFull]),
            Some(INVITE),
            &[
                domain,
                "Attention:",
                Reason::CertExpiring.text(),
                Reason::DiskAlmostFull.text(),
            ],
        ),
        (
            Status::Failed(Reason::ListenerDown),
            None,
            &[domain, "NOT SERVING:", Reason::ListenerDown.text()],
        ),
        (Status::Booting, None, &["chatmail-box", "starting..."]),
    ];
    for (status, want_qr, want_text) in cases {
        let s = screen(&status, domain, ip);
        let c = layout::compose(&s, domain, g.width, g.height);
        assert_eq!((c.bitmap.width, c.bitmap.height), (g.width, g.height));
        {
            let mut f = Framebuffer::open_file(&path, g).unwrap();
            f.show(&c.bitmap).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), g.size());
        let back = fb::read_back(&bytes, &g);
        let want_qr: Vec<String> = want_qr.iter().map(|q| q.to_string()).collect();
        assert_eq!(decode(&back), want_qr, "{status:?} on {g:?}");
        // No line was wrapped or cut on these displays, and every one reads back.
        assert_eq!(c.text.lines, want_text, "{status:?} on {g:?}");
        assert_eq!(
            read_text(&back, &c.text, want_text.len()),
            want_text,
            "{status:?} on {g:?}"
        );
        // Text stays clear of the QR including its quiet zone, and on the screen.
        let f = layout::FONTS[c.text.font];
        let tw = c.text.lines.iter().map(|l| l.len()).max().unwrap()
            * f.character_size.width as usize
            * c.text.scale;
        let th = c.text.lines.len() * c.text.line_pitch;
        assert!(
            c.text.x + tw <= g.width && c.text.y + th <= g.height,
            "{c:?}"
        );
        if let Some(q) = &c.qr {
            let apart = c.text.x >= q.x + q.side
                || c.text.x + tw <= q.x
                || c.text.y >= q.y + q.side
                || c.text.y + th <= q.y;
            assert!(apart, "text over the QR: {status:?} on {g:?}");
            assert!(q.scale >= 2);
        }
        if let Ok(dir) = std::env::var("CHATMAIL_SCREEN_DUMP") {
            let name = format!(
                "{dir}/{}x{}-{}.pbm",
                g.width,
                g.height,
                format!("{status:?}").split('(').next().unwrap()
            );
            let mut out = format!("P1\n{} {}\n", g.width, g.height).into_bytes();
            for y in 0..g.height {
                for x in 0..g.width {
                    out.push(if back.get(x, y) { b'1' } else { b'0' });
                }
                out.push(b'\n');
            }
            std::fs::write(name, out).unwrap();
        }
    }
}

#[test]
fn framebuffer_xrgb8888_hdmi() {
    fb_roundtrip(Geometry {
        width: 1920,
        height: 1080,
        line_length: 1920 * 4,
        format: PixelFormat::Xrgb8888,
    });
}

#[test]
fn framebuffer_rgb565_tft_with_padded_rows() {
    // Row stride larger than width × 2, as some fbtft/DRM drivers report.
    fb_roundtrip(Geometry {
        width: 320,
        height: 240,
        line_length: 704,
        format: PixelFormat::Rgb565,
    });
    fb_roundtrip(Geometry {
        width: 480,
        height: 320,
        line_length: 480 * 2,
        format: PixelFormat::Rgb565,
    });
}

#[test]
fn row_padding_is_not_touched() {
    let g = Geometry {
        width: 4,
        height: 3,
        line_length: 20,
        format: PixelFormat::Xrgb8888,
    };
    let mut buf = vec![0x55u8; g.size()];
    let mut bm = Bitmap::new(2, 2);
    bm.set(0, 0, true);
    fb::show_centered(&mut buf, &g, &bm);
    for y in 0..3 {
        assert!(buf[y * 20 + 16..y * 20 + 20].iter().all(|b| *b == 0x55));
    }
    // (1,0) is the bitmap's dark pixel: XRGB black; (0,0) white.
    assert_eq!(&buf[4..8], &[0, 0, 0, 0xff]);
    assert_eq!(&buf[0..4], &[0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn pixel_formats_from_kernel_fields() {
    assert_eq!(fb::pixel_format(16, 11), Some(PixelFormat::Rgb565));
    assert_eq!(fb::pixel_format(32, 16), Some(PixelFormat::Xrgb8888));
    assert_eq!(fb::pixel_format(32, 0), Some(PixelFormat::Xbgr8888));
    assert_eq!(fb::pixel_format(8, 0), None);
    for f in [
        PixelFormat::Rgb565,
        PixelFormat::Xrgb8888,
        PixelFormat::Xbgr8888,
    ] {
        let mut px = [0u8; 4];
        f.encode((0xff, 0x80, 0), &mut px);
        let (r, g, b) = f.decode(&px);
        assert!(r >= 0xf8 && (0x7c..=0x84).contains(&g) && b == 0, "{f:?}");
    }
}

#[test]
fn long_domain_wraps_and_a_tiny_screen_says_the_qr_does_not_fit() {
    // Portrait 240×320: the 52-character domain cannot stay whole next to or under the QR at
    // any size, so it wraps; every chunk reads back and together they give the domain.
    let domain = "a-rather-long-subdomain.relay-of-the-family.example";
    let s = screen(&Status::Healthy, domain, None);
    let c = layout::compose(&s, domain, 240, 320);
    assert!(c.text.lines.len() > 1, "{:?}", c.text);
    assert_eq!(c.text.lines.concat(), domain);
    let got = read_text(&c.bitmap, &c.text, c.text.lines.len());
    assert_eq!(got.concat(), domain);
    assert_eq!(
        decode(&c.bitmap),
        vec![c.qr.as_ref().unwrap().payload.clone()]
    );
    // 160×50: no invite fits at 2 px per module (the smallest needs 58 px); the screen says so
    // and shows the domain.
    let domain = "relay.example.invalid";
    let s = screen(&Status::Healthy, domain, None);
    let c = layout::compose(&s, domain, 160, 50);
    assert!(c.qr.is_none());
    assert!(decode(&c.bitmap).is_empty());
    let got = read_text(&c.bitmap, &c.text, c.text.lines.len());
    assert_eq!(got, ["QR too long for", "this screen.", domain]);
    // 1.8" TFT, degraded: every reason is shown (wrapped beside the QR) rather than some
    // dropped under it.
    let s = screen(
        &Status::Degraded(vec![Reason::CertExpiring, Reason::DiskAlmostFull]),
        domain,
        None,
    );
    let c = layout::compose(&s, domain, 160, 128);
    let got = read_text(&c.bitmap, &c.text, c.text.lines.len()).concat();
    for want in s.lines.iter() {
        assert!(got.contains(want.as_str()), "{want:?} not in {got:?}");
    }
    assert_eq!(decode(&c.bitmap), vec![c.qr.unwrap().payload]);
    // Non-ASCII text is shown as '?', not dropped or panicking.
    let s = layout::compose(
        &chatmail_box::device::Screen {
            qr: None,
            lines: vec!["bücher.example".into()],
        },
        "",
        320,
        240,
    );
    assert_eq!(read_text(&s.bitmap, &s.text, 1), vec!["b?cher.example"]);
}

#[test]
fn readme_numbers_for_the_healthy_screen() {
    // README, "Display screens": the invite of a 21-character domain with the domain as text.
    let domain = "relay.example.invalid";
    let s = screen(&Status::Healthy, domain, None);
    for (w, h, qr_scale, glyph_h) in [(320, 240, 5, 20), (480, 320, 8, 10), (1920, 1080, 29, 60)] {
        let c = layout::compose(&s, domain, w, h);
        let f = layout::FONTS[c.text.font];
        let got = (
            c.qr.as_ref().unwrap().scale,
            f.character_size.height as usize * c.text.scale,
        );
        assert_eq!(got, (qr_scale, glyph_h), "{w}x{h}");
        assert_eq!(read_text(&c.bitmap, &c.text, 1), vec![domain]);
    }
}
