//! Watchdog petting: a `/dev/watchdog`-like device reboots the box unless it is written to.
//!
//! Owns: the Linux watchdog file protocol (any write pets; writing `V` before close disarms the
//! "magic close" drivers). Must not know: what counts as healthy (the caller decides each tick).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// An open watchdog device. Opening arms it.
pub struct Watchdog {
    file: Option<File>,
}

impl Watchdog {
    pub fn open(path: &Path) -> io::Result<Watchdog> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Watchdog { file: Some(file) })
    }

    /// Resets the watchdog timer.
    pub fn pet(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => {
                f.write_all(b"\0")?;
                f.flush()
            }
            None => Ok(()),
        }
    }

    /// Orderly shutdown: magic close (`V`), so the box does not reboot because the relay stopped.
    pub fn disarm(mut self) -> io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.write_all(b"V")?;
            f.flush()?;
        }
        Ok(())
    }
}
