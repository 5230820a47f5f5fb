//! QR rendering for the appliance display: sizing per screen, a framebuffer written through a
//! memory-mapped temp file (RGB565 and XRGB8888, padded rows), decoded back with rqrr.

use chatmail_box::device::fb::{self, Framebuffer, Geometry, PixelFormat};
use chatmail_box::device::qr::{self, Bitmap, DEFAULT_FIT};
use chatmail_box::device::{render_screen_qr, screen, Reason, Status};

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

fn fb_roundtrip(g: Geometry) {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("fb0");
    let domain = "relay.example.invalid";
    let cases = [
        (Status::SetupNeeded, "http://chatmail-box.local"),
        (Status::Healthy, INVITE),
        (Status::Degraded(vec![Reason::CertExpiring]), INVITE),
    ];
    for (status, want) in cases {
        let s = screen(&status, domain, None);
        let r = render_screen_qr(&s, domain, g.width, g.height).unwrap();
        {
            let mut f = Framebuffer::open_file(&path, g).unwrap();
            f.show(&r.bitmap).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), g.size());
        let back = fb::read_back(&bytes, &g);
        assert_eq!(decode(&back), vec![want.to_string()], "{status:?} on {g:?}");
    }
    // Failed: no QR, an all-white screen (text is drawn by a later version).
    let s = screen(&Status::Failed(Reason::ListenerDown), domain, None);
    assert!(render_screen_qr(&s, domain, g.width, g.height).is_none());
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
