//! Message bodies as files: `blobs/<xx>/<id>`, written tmp → fsync → rename → fsync dir so that a
//! body is durable before the index refers to it. Files without an index entry are garbage from
//! an interrupted delivery and are removed at start-up.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;

pub(super) struct Blobs {
    root: PathBuf,
}

impl Blobs {
    pub fn open(root: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(&root)?;
        Ok(Blobs { root })
    }

    fn dir_of(&self, id: u64) -> PathBuf {
        self.root.join(format!("{:02x}", id & 0xff))
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir_of(id).join(format!("{id:016x}"))
    }

    /// Write a body durably. Returns only after the file and its directory entry are on disk.
    pub fn write(&self, id: u64, body: &[u8]) -> Result<(), StoreError> {
        let dir = self.dir_of(id);
        if !dir.exists() {
            fs::create_dir_all(&dir)?;
            sync_dir(&self.root)?;
        }
        let final_path = self.path(id);
        let tmp = dir.join(format!("{id:016x}.tmp"));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(body)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &final_path)?;
        sync_dir(&dir)?;
        Ok(())
    }

    pub fn read(&self, id: u64) -> Result<Vec<u8>, StoreError> {
        Ok(fs::read(self.path(id))?)
    }

    pub fn remove(&self, id: u64) {
        // A failure here leaves an orphan that the next start-up sweep removes.
        let _ = fs::remove_file(self.path(id));
    }

    /// Remove every file that is not a live blob (interrupted writes, unacknowledged bodies).
    pub fn sweep(&self, live: &HashSet<u64>) -> Result<usize, StoreError> {
        let mut removed = 0;
        for sub in fs::read_dir(&self.root)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name();
                let name = name.to_string_lossy();
                let keep = u64::from_str_radix(&name, 16)
                    .map(|id| name.len() == 16 && live.contains(&id))
                    .unwrap_or(false);
                if !keep {
                    let _ = fs::remove_file(f.path());
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
