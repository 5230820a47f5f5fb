//! Resource guard for account creation: load, free memory and free disk. A metric that cannot be
//! read does not block (as upstream); the others still apply.

use std::path::Path;

use crate::config::Config;

#[derive(Debug, Clone)]
pub struct ResourceLimits {
    pub max_load_1m: f64,
    pub min_available_memory: u64,
    pub min_free_disk_space: u64,
}

impl ResourceLimits {
    pub fn from_config(cfg: &Config) -> Self {
        ResourceLimits {
            max_load_1m: cfg.max_load_1m,
            min_available_memory: cfg.min_available_memory,
            min_free_disk_space: cfg.min_free_disk_space,
        }
    }
}

pub fn resources_ok(l: &ResourceLimits, data_dir: &Path) -> Result<(), &'static str> {
    if let Some(load) = load_1m() {
        if load > l.max_load_1m {
            return Err("load too high");
        }
    }
    if let Some(mem) = mem_available() {
        if mem < l.min_available_memory {
            return Err("too little free memory");
        }
    }
    if let Some(disk) = free_disk(data_dir) {
        if disk < l.min_free_disk_space {
            return Err("too little free disk space");
        }
    }
    Ok(())
}

fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Free bytes for unprivileged users on the filesystem holding `dir`.
pub fn free_disk(dir: &Path) -> Option<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; c is a valid NUL-terminated path.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        Some(s.f_bavail as u64 * s.f_frsize as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_block_creation() {
        let generous = ResourceLimits {
            max_load_1m: 1e9,
            min_available_memory: 0,
            min_free_disk_space: 0,
        };
        assert!(resources_ok(&generous, Path::new("/")).is_ok());
        let disk = ResourceLimits {
            min_free_disk_space: u64::MAX,
            ..generous.clone()
        };
        assert_eq!(
            resources_ok(&disk, Path::new("/")),
            Err("too little free disk space")
        );
        let mem = ResourceLimits {
            min_available_memory: u64::MAX,
            ..generous.clone()
        };
        assert_eq!(
            resources_ok(&mem, Path::new("/")),
            Err("too little free memory")
        );
        let load = ResourceLimits {
            max_load_1m: -1.0,
            ..generous
        };
        assert_eq!(resources_ok(&load, Path::new("/")), Err("load too high"));
    }

    #[test]
    fn unreadable_disk_metric_does_not_block() {
        let l = ResourceLimits {
            max_load_1m: 1e9,
            min_available_memory: 0,
            min_free_disk_space: u64::MAX,
        };
        assert!(resources_ok(&l, Path::new("/nonexistent/dir")).is_ok());
    }
}
