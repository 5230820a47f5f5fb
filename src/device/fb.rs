//! Linux framebuffer output (HDMI, SPI TFTs through fbtft/DRM fbdev emulation, QEMU virtio-gpu).
//!
//! Owns: the two fbdev ioctls (`FBIOGET_VSCREENINFO`, `FBIOGET_FSCREENINFO`), the mmap of the
//! pixel memory, and drawing 1-bit bitmaps in RGB565 / XRGB8888 / XBGR8888, stepping rows by
//! `line_length` (not width). A plain file can stand in for the device when the geometry is given,
//! so tests write a temp file and decode it back. Must not know: what is drawn (see `screen`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::qr::Bitmap;

/// Pixel encodings we draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// 16 bpp, 5-6-5, little endian.
    Rgb565,
    /// 32 bpp, blue in the lowest byte (the usual DRM fbdev format).
    Xrgb8888,
    /// 32 bpp, red in the lowest byte.
    Xbgr8888,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb565 => 2,
            PixelFormat::Xrgb8888 | PixelFormat::Xbgr8888 => 4,
        }
    }

    /// Writes an 8-bit-per-channel colour at the start of `out`.
    pub fn encode(self, (r, g, b): (u8, u8, u8), out: &mut [u8]) {
        match self {
            PixelFormat::Rgb565 => {
                let v = ((r as u16 >> 3) << 11) | ((g as u16 >> 2) << 5) | (b as u16 >> 3);
                out[..2].copy_from_slice(&v.to_le_bytes());
            }
            PixelFormat::Xrgb8888 => out[..4].copy_from_slice(&[b, g, r, 0xff]),
            PixelFormat::Xbgr8888 => out[..4].copy_from_slice(&[r, g, b, 0xff]),
        }
    }

    /// Reads back the colour at the start of `px` (inverse of [`encode`](Self::encode), up to
    /// the precision of the format).
    pub fn decode(self, px: &[u8]) -> (u8, u8, u8) {
        match self {
            PixelFormat::Rgb565 => {
                let v = u16::from_le_bytes([px[0], px[1]]);
                let r = ((v >> 11) & 0x1f) as u8;
                let g = ((v >> 5) & 0x3f) as u8;
                let b = (v & 0x1f) as u8;
                (
                    (r << 3) | (r >> 2),
                    (g << 2) | (g >> 4),
                    (b << 3) | (b >> 2),
                )
            }
            PixelFormat::Xrgb8888 => (px[2], px[1], px[0]),
            PixelFormat::Xbgr8888 => (px[0], px[1], px[2]),
        }
    }
}

/// Visible size and memory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next; at least `width * bytes_per_pixel`.
    pub line_length: usize,
    pub format: PixelFormat,
}

impl Geometry {
    /// Bytes of pixel memory the visible area needs.
    pub fn size(&self) -> usize {
        self.line_length * self.height
    }
}

pub const WHITE: (u8, u8, u8) = (0xff, 0xff, 0xff);
pub const BLACK: (u8, u8, u8) = (0, 0, 0);

/// Fills the visible area with one colour (padding bytes past the width are left alone).
pub fn fill(buf: &mut [u8], g: &Geometry, color: (u8, u8, u8)) {
    let bpp = g.format.bytes_per_pixel();
    for y in 0..g.height {
        let row = y * g.line_length;
        for x in 0..g.width {
            g.format.encode(color, &mut buf[row + x * bpp..]);
        }
    }
}

/// Draws `bm` with its top-left corner at (`x0`, `y0`): dark as black, light as white; clipped.
pub fn draw(buf: &mut [u8], g: &Geometry, bm: &Bitmap, x0: usize, y0: usize) {
    let bpp = g.format.bytes_per_pixel();
    for y in 0..bm.height.min(g.height.saturating_sub(y0)) {
        let row = (y0 + y) * g.line_length;
        for x in 0..bm.width.min(g.width.saturating_sub(x0)) {
            let c = if bm.get(x, y) { BLACK } else { WHITE };
            g.format.encode(c, &mut buf[row + (x0 + x) * bpp..]);
        }
    }
}

/// Shows `bm` centred on a white screen.
pub fn show_centered(buf: &mut [u8], g: &Geometry, bm: &Bitmap) {
    fill(buf, g, WHITE);
    let x0 = g.width.saturating_sub(bm.width) / 2;
    let y0 = g.height.saturating_sub(bm.height) / 2;
    draw(buf, g, bm, x0, y0);
}

/// Reads the visible area back as a bitmap (luma < 128 is dark); used by tests and diagnostics.
pub fn read_back(buf: &[u8], g: &Geometry) -> Bitmap {
    let bpp = g.format.bytes_per_pixel();
    let mut bm = Bitmap::new(g.width, g.height);
    for y in 0..g.height {
        for x in 0..g.width {
            let (r, gr, b) = g.format.decode(&buf[y * g.line_length + x * bpp..]);
            let luma = (r as u32 * 299 + gr as u32 * 587 + b as u32 * 114) / 1000;
            bm.set(x, y, luma < 128);
        }
    }
    bm
}

/// Mapped pixel memory of a framebuffer device or a stand-in file.
pub struct Framebuffer {
    pub geometry: Geometry,
    _file: File,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only accessed through &self / &mut self.
unsafe impl Send for Framebuffer {}

impl Framebuffer {
    /// Opens a framebuffer device (`/dev/fb0`), reading geometry and pixel format from the kernel.
    pub fn open_device(path: &Path) -> io::Result<Framebuffer> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let (geometry, smem_len) = query(&file)?;
        if smem_len != 0 && smem_len < geometry.size() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("framebuffer memory {smem_len} B < {geometry:?}"),
            ));
        }
        Framebuffer::map(file, geometry, geometry.size())
    }

    /// Maps a plain file of at least `geometry.size()` bytes (grown if shorter) as a framebuffer.
    pub fn open_file(path: &Path, geometry: Geometry) -> io::Result<Framebuffer> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if (file.metadata()?.len() as usize) < geometry.size() {
            file.set_len(geometry.size() as u64)?;
        }
        Framebuffer::map(file, geometry, geometry.size())
    }

    fn map(file: File, geometry: Geometry, len: usize) -> io::Result<Framebuffer> {
        if len == 0 || geometry.line_length < geometry.width * geometry.format.bytes_per_pixel() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad framebuffer geometry {geometry:?}"),
            ));
        }
        // SAFETY: mapping `len` bytes of an open, read-write file descriptor; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Framebuffer {
            geometry,
            _file: file,
            ptr: ptr as *mut u8,
            len,
        })
    }

    pub fn pixels(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` bytes for the lifetime of self, exclusively borrowed here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Shows `bm` centred on a white screen and flushes the mapping.
    pub fn show(&mut self, bm: &Bitmap) -> io::Result<()> {
        let g = self.geometry;
        show_centered(self.pixels(), &g, bm);
        // SAFETY: syncing the range mapped above.
        if unsafe { libc::msync(self.ptr as *mut libc::c_void, self.len, libc::MS_SYNC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Framebuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Bitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

/// `struct fb_var_screeninfo` (linux/fb.h).
#[repr(C)]
#[derive(Default)]
struct VarScreenInfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: Bitfield,
    green: Bitfield,
    blue: Bitfield,
    transp: Bitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    pixclock: u32,
    left_margin: u32,
    right_margin: u32,
    upper_margin: u32,
    lower_margin: u32,
    hsync_len: u32,
    vsync_len: u32,
    sync: u32,
    vmode: u32,
    rotate: u32,
    colorspace: u32,
    reserved: [u32; 4],
}

/// `struct fb_fix_screeninfo` (linux/fb.h).
#[repr(C)]
#[derive(Default)]
struct FixScreenInfo {
    id: [u8; 16],
    smem_start: libc::c_ulong,
    smem_len: u32,
    type_: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: libc::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

const FBIOGET_VSCREENINFO: u32 = 0x4600;
const FBIOGET_FSCREENINFO: u32 = 0x4602;

fn query(file: &File) -> io::Result<(Geometry, usize)> {
    let mut var = VarScreenInfo::default();
    let mut fix = FixScreenInfo::default();
    let fd = file.as_raw_fd();
    // SAFETY: both ioctls fill a struct of the kernel's layout that we own.
    unsafe {
        if libc::ioctl(fd, FBIOGET_VSCREENINFO as _, &mut var as *mut VarScreenInfo) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(fd, FBIOGET_FSCREENINFO as _, &mut fix as *mut FixScreenInfo) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let format = pixel_format(var.bits_per_pixel, var.red.offset).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "framebuffer pixel format {} bpp (red at bit {}) is not supported",
                var.bits_per_pixel, var.red.offset
            ),
        )
    })?;
    let g = Geometry {
        width: var.xres as usize,
        height: var.yres as usize,
        line_length: fix.line_length as usize,
        format,
    };
    Ok((g, fix.smem_len as usize))
}

/// The format for a bit depth and the red channel's bit offset, as the kernel reports them.
pub fn pixel_format(bits_per_pixel: u32, red_offset: u32) -> Option<PixelFormat> {
    match (bits_per_pixel, red_offset) {
        (16, 11) => Some(PixelFormat::Rgb565),
        (32, 16) => Some(PixelFormat::Xrgb8888),
        (32, 0) => Some(PixelFormat::Xbgr8888),
        _ => None,
    }
}
