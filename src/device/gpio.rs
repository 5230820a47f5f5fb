//! A status LED on a GPIO line, through the Linux GPIO character device (`/dev/gpiochipN`).
//!
//! Owns: the uAPI v1 line-handle protocol (`GPIO_GET_CHIPINFO_IOCTL`, `GPIO_GET_LINEHANDLE_IOCTL`,
//! `GPIOHANDLE_SET_LINE_VALUES_IOCTL`) with plain `libc::ioctl`, and finding a chip by its label
//! (`9030000.pl061` on QEMU virt, `pinctrl-bcm2835` on a Pi 3 / Zero 2 W), its name or its path.
//! Configured as `led = "gpio:<chip>:<line>"` in `[device]`. Must not know: patterns or status.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::led::Led;

const GPIO_MAX_LINES: usize = 64;
const GPIOHANDLE_REQUEST_OUTPUT: u32 = 1 << 1;

#[repr(C)]
struct ChipInfo {
    name: [u8; 32],
    label: [u8; 32],
    lines: u32,
}

#[repr(C)]
struct HandleRequest {
    lineoffsets: [u32; GPIO_MAX_LINES],
    flags: u32,
    default_values: [u8; GPIO_MAX_LINES],
    consumer_label: [u8; 32],
    lines: u32,
    fd: i32,
}

#[repr(C)]
struct HandleData {
    values: [u8; GPIO_MAX_LINES],
}

/// `_IOC(dir, 0xB4, nr, size)` with the generic Linux encoding (x86, arm, arm64, riscv).
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (0xB4 << 8) | nr
}
const IOC_READ: u32 = 2;
const IOC_RW: u32 = 3;
const GPIO_GET_CHIPINFO_IOCTL: u32 = ioc(IOC_READ, 0x01, std::mem::size_of::<ChipInfo>());
const GPIO_GET_LINEHANDLE_IOCTL: u32 = ioc(IOC_RW, 0x03, std::mem::size_of::<HandleRequest>());
const GPIOHANDLE_GET_LINE_VALUES_IOCTL: u32 = ioc(IOC_RW, 0x08, std::mem::size_of::<HandleData>());
const GPIOHANDLE_SET_LINE_VALUES_IOCTL: u32 = ioc(IOC_RW, 0x09, std::mem::size_of::<HandleData>());

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// `(name, label, lines)` of an open chip.
fn chip_info(f: &File) -> io::Result<(String, String, u32)> {
    let mut info = ChipInfo {
        name: [0; 32],
        label: [0; 32],
        lines: 0,
    };
    // SAFETY: the kernel writes at most size_of::<ChipInfo>() bytes into `info`.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), GPIO_GET_CHIPINFO_IOCTL as _, &mut info) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cstr(&info.name), cstr(&info.label), info.lines))
}

/// Parses `gpio:<chip>:<line>` (the `[device] led` value for a GPIO LED).
pub fn parse_spec(s: &str) -> Option<(String, u32)> {
    let rest = s.strip_prefix("gpio:")?;
    let (chip, line) = rest.rsplit_once(':')?;
    if chip.is_empty() {
        return None;
    }
    Some((chip.to_string(), line.parse().ok()?))
}

/// Finds the chip named `chip` under `dev` (normally `/dev`): a path, a name (`gpiochip0`) or a
/// label (`9030000.pl061`, `pinctrl-bcm2835`).
pub fn find_chip(dev: &Path, chip: &str) -> io::Result<(PathBuf, File)> {
    let open = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
    if chip.starts_with('/') {
        let p = PathBuf::from(chip);
        let f = open(&p)?;
        return Ok((p, f));
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dev)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("gpiochip"))
        .map(|e| e.path())
        .collect();
    paths.sort();
    for p in paths {
        let Ok(f) = open(&p) else { continue };
        let Ok((name, label, _)) = chip_info(&f) else {
            continue;
        };
        if name == chip || label == chip {
            return Ok((p, f));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no GPIO chip named or labelled {chip:?} under {}",
            dev.display()
        ),
    ))
}

/// One output line held for the LED; released (line back to the kernel) when dropped.
pub struct GpioLed {
    chip: PathBuf,
    line: u32,
    handle: OwnedFd,
    last: Option<bool>,
}

impl GpioLed {
    /// Requests `line` of `chip` (see [`find_chip`]) as an output, initially off.
    pub fn open(dev: &Path, chip: &str, line: u32) -> io::Result<GpioLed> {
        let (path, f) = find_chip(dev, chip)?;
        let mut req = HandleRequest {
            lineoffsets: [0; GPIO_MAX_LINES],
            flags: GPIOHANDLE_REQUEST_OUTPUT,
            default_values: [0; GPIO_MAX_LINES],
            consumer_label: [0; 32],
            lines: 1,
            fd: -1,
        };
        req.lineoffsets[0] = line;
        let label = b"chatmail-box status";
        req.consumer_label[..label.len()].copy_from_slice(label);
        // SAFETY: `req` is a valid gpiohandle_request; the kernel fills in `fd`.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), GPIO_GET_LINEHANDLE_IOCTL as _, &mut req) };
        if r < 0 || req.fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a fresh file descriptor we now own.
        let handle = unsafe { OwnedFd::from_raw_fd(req.fd) };
        Ok(GpioLed {
            chip: path,
            line,
            handle,
            last: None,
        })
    }

    /// `<chip path>:<line>` for logs.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.chip.display(), self.line)
    }

    /// Reads the line's current value back.
    pub fn get(&self) -> io::Result<bool> {
        let mut d = HandleData {
            values: [0; GPIO_MAX_LINES],
        };
        // SAFETY: `d` is a valid gpiohandle_data for the kernel to fill.
        let r = unsafe {
            libc::ioctl(
                self.handle.as_raw_fd(),
                GPIOHANDLE_GET_LINE_VALUES_IOCTL as _,
                &mut d,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(d.values[0] != 0)
    }
}

impl Led for GpioLed {
    fn set(&mut self, on: bool) -> io::Result<()> {
        if self.last == Some(on) {
            return Ok(());
        }
        let mut d = HandleData {
            values: [0; GPIO_MAX_LINES],
        };
        d.values[0] = on as u8;
        // SAFETY: `d` is a valid gpiohandle_data; the handle holds exactly one line.
        let r = unsafe {
            libc::ioctl(
                self.handle.as_raw_fd(),
                GPIOHANDLE_SET_LINE_VALUES_IOCTL as _,
                &mut d,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.last = Some(on);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // From <linux/gpio.h> on arm64 and x86_64.
        assert_eq!(GPIO_GET_CHIPINFO_IOCTL, 0x8044_b401);
        assert_eq!(GPIO_GET_LINEHANDLE_IOCTL, 0xc16c_b403);
        assert_eq!(GPIOHANDLE_GET_LINE_VALUES_IOCTL, 0xc040_b408);
        assert_eq!(GPIOHANDLE_SET_LINE_VALUES_IOCTL, 0xc040_b409);
    }

    #[test]
    fn spec_parsing() {
        assert_eq!(
            parse_spec("gpio:9030000.pl061:4"),
            Some(("9030000.pl061".into(), 4))
        );
        assert_eq!(
            parse_spec("gpio:/dev/gpiochip0:17"),
            Some(("/dev/gpiochip0".into(), 17))
        );
        assert_eq!(parse_spec("ACT"), None);
        assert_eq!(parse_spec("gpio::3"), None);
        assert_eq!(parse_spec("gpio:chip:x"), None);
    }

    #[test]
    fn missing_chip_is_an_error() {
        let d = std::env::temp_dir().join(format!("gpio-none-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(GpioLed::open(&d, "9030000.pl061", 4).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
