//! The durable state of the relay: accounts, mailboxes (UIDs, flags, MODSEQ), message bodies and
//! per-user metadata, in one data directory.
//!
//! Owns: the sled index and its key layout, the blob files, the data-dir lock, change
//! notification. Must not know: protocols, policy, reply codes.
//!
//! Invariant: every method that changes state returns only after the change is durable (blob
//! fsync'd, sled flushed). UIDVALIDITY of a mailbox never changes and UIDNEXT never goes down.

mod blobs;
mod codec;
mod expire;
mod hub;
mod mailbox;
mod push;
mod queue;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;

use codec::{user_prefix, MailboxRec};

pub use mailbox::{Delivery, FlagOp, FlagResult, Snapshot};
pub use push::PushItem;
pub use queue::{QueueItem, QueuedRcpt, RcptState};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("data directory {0} is in use by another chatmail-box process")]
    Locked(PathBuf),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("index error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt {0} in the index")]
    Corrupt(&'static str),
    #[error("no such account")]
    NoAccount,
    #[error("no such mailbox")]
    NoMailbox,
    #[error("mailbox already exists")]
    MailboxExists,
    #[error("the mailbox is full")]
    UidsExhausted,
}

/// IMAP system flags as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(u8);

impl Flags {
    pub const SEEN: Flags = Flags(1);
    pub const ANSWERED: Flags = Flags(2);
    pub const FLAGGED: Flags = Flags(4);
    pub const DELETED: Flags = Flags(8);
    pub const DRAFT: Flags = Flags(16);
    pub const ALL: [(Flags, &'static str); 5] = [
        (Flags::SEEN, "\\Seen"),
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::DRAFT, "\\Draft"),
    ];

    pub fn bits(self) -> u8 {
        self.0
    }
    pub fn from_bits(b: u8) -> Flags {
        Flags(b & 0x1f)
    }
    pub fn empty() -> Flags {
        Flags(0)
    }
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    pub fn minus(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
    /// Parse one flag name such as `\Seen` (case-insensitive). Keywords give `None`.
    pub fn parse(name: &str) -> Option<Flags> {
        Flags::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(f, _)| *f)
    }
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Flags::ALL
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

/// One message as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgInfo {
    pub uid: u32,
    pub blob: u64,
    pub flags: Flags,
    pub modseq: u64,
    pub size: u64,
    /// Unix seconds.
    pub internal_date: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub addr: String,
    /// PHC string (`$argon2id$...`) or `{SHA512-CRYPT}$6$...`.
    pub password_hash: String,
    /// Unix seconds.
    pub created: i64,
    /// Refuse cleartext inbound mail (accounts created here always; imported ones may not).
    pub enforce_e2ee: bool,
    /// Last IMAP login, truncated to the UTC day (unix seconds).
    pub last_login_day: i64,
}

pub enum Created {
    Created,
    Existed(Account),
}

pub(crate) struct Inner {
    db: sled::Db,
    accounts: sled::Tree,
    mailboxes: sled::Tree,
    messages: sled::Tree,
    blobrefs: sled::Tree,
    meta: sled::Tree,
    queue: sled::Tree,
    blobs: blobs::Blobs,
    hub: hub::Hub,
    queue_wakeup: tokio::sync::Notify,
    /// Push-notification queue (`push.rs`) and its worker's wake-up.
    push: sled::Tree,
    push_wakeup: tokio::sync::Notify,
    /// Quota state (limit, rejection counter); see `expire.rs`.
    quota: expire::QuotaState,
    /// sled's log file (`index/db`), fsync'd after every flush: see [`Store::flush`].
    index_file: File,
    _lock: File,
}

/// Cheap to clone; all clones share one open store.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub const INBOX: &str = "INBOX";

/// Normalise a mailbox name: INBOX is case-insensitive (RFC 3501), others are kept as given.
pub fn normalise_mailbox(name: &str) -> &str {
    if name.eq_ignore_ascii_case(INBOX) {
        INBOX
    } else {
        name
    }
}

impl Store {
    /// Open (or create) the store in `dir`. Fails with [`StoreError::Locked`] if another process
    /// holds the directory. Removes blob files left behind by interrupted deliveries.
    pub fn open(dir: &Path, cache_capacity: u64) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        let db = sled::Config::new()
            .path(dir.join("index"))
            .cache_capacity(cache_capacity)
            .mode(sled::Mode::LowSpace)
            .open()?;
        // sled creates its files without syncing the directory; make them survive a power cut.
        let index_file = File::open(dir.join("index").join("db"))?;
        index_file.sync_all()?;
        blobs::sync_dir(&dir.join("index"))?;
        blobs::sync_dir(dir)?;
        let inner = Inner {
            accounts: db.open_tree("accounts")?,
            mailboxes: db.open_tree("mailboxes")?,
            messages: db.open_tree("messages")?,
            blobrefs: db.open_tree("blobrefs")?,
            meta: db.open_tree("meta")?,
            queue: db.open_tree("queue")?,
            blobs: blobs::Blobs::open(dir.join("blobs"))?,
            hub: hub::Hub::default(),
            queue_wakeup: tokio::sync::Notify::new(),
            push: db.open_tree("push")?,
            push_wakeup: tokio::sync::Notify::new(),
            quota: expire::QuotaState::default(),
            db,
            index_file,
            _lock: lock,
        };
        let live: HashSet<u64> = inner
            .blobrefs
            .iter()
            .keys()
            .map(|k| k.map(|k| codec::be64(&k)))
            .collect::<Result<_, _>>()?;
        let removed = inner.blobs.sweep(&live)?;
        if removed > 0 {
            tracing::info!(removed, "removed unreferenced message files");
        }
        let store = Store {
            inner: Arc::new(inner),
        };
        store.init_usage()?;
        Ok(store)
    }

    /// Makes every committed transaction durable. sled 0.34's flush writes its log with
    /// `sync_file_range` only, which persists neither the file's metadata (the log grows by
    /// appending, so its new size) nor the disk's write cache: after a power cut the last
    /// acknowledged commits could vanish (seen in `make qemu-test`: a hard reset ~50 ms after
    /// a 250 lost that message). An fsync of the log file closes that gap.
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        self.inner.index_file.sync_all()?;
        Ok(())
    }

    // ---- accounts ----

    pub fn account(&self, addr: &str) -> Result<Option<Account>, StoreError> {
        match self.inner.accounts.get(addr.as_bytes())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("account record")),
        }
    }

    /// Create the account with its INBOX unless it exists. Race-safe: of concurrent callers for
    /// one address exactly one creates; the others get the stored account back.
    pub fn create_account(&self, acct: &Account) -> Result<Created, StoreError> {
        let value = serde_json::to_vec(acct).map_err(|_| StoreError::Corrupt("account record"))?;
        let cas = self.inner.accounts.compare_and_swap(
            acct.addr.as_bytes(),
            None as Option<&[u8]>,
            Some(value),
        )?;
        match cas {
            Ok(()) => {
                self.ensure_mailbox(&acct.addr, INBOX)?;
                self.flush()?;
                self.count_created_account();
                Ok(Created::Created)
            }
            Err(e) => {
                let cur = e.current.ok_or(StoreError::Corrupt("account record"))?;
                let acct = serde_json::from_slice(&cur)
                    .map_err(|_| StoreError::Corrupt("account record"))?;
                // The creator may not have flushed yet; make the record durable before we let
                // this login succeed too.
                self.flush()?;
                Ok(Created::Existed(acct))
            }
        }
    }

    /// Insert or replace an account (CLI import and add).
    pub fn put_account(&self, acct: &Account) -> Result<(), StoreError> {
        let value = serde_json::to_vec(acct).map_err(|_| StoreError::Corrupt("account record"))?;
        self.inner.accounts.insert(acct.addr.as_bytes(), value)?;
        self.ensure_mailbox(&acct.addr, INBOX)?;
        self.flush()
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.accounts.iter() {
            let (_, v) = kv?;
            out.push(
                serde_json::from_slice(&v).map_err(|_| StoreError::Corrupt("account record"))?,
            );
        }
        Ok(out)
    }

    /// Record an IMAP login day; writes only when the day changed.
    pub fn record_login_day(&self, addr: &str, day: i64) -> Result<(), StoreError> {
        if let Some(mut a) = self.account(addr)? {
            if a.last_login_day != day {
                a.last_login_day = day;
                let v =
                    serde_json::to_vec(&a).map_err(|_| StoreError::Corrupt("account record"))?;
                self.inner.accounts.insert(addr.as_bytes(), v)?;
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Delete an account and everything it owns. Returns false if it did not exist.
    pub fn delete_account(&self, addr: &str) -> Result<bool, StoreError> {
        if self.inner.accounts.get(addr.as_bytes())?.is_none() {
            return Ok(false);
        }
        for name in self.mailboxes(addr)? {
            self.delete_mailbox_inner(addr, &name)?;
        }
        let prefix = user_prefix(addr);
        for k in self.inner.meta.scan_prefix(&prefix).keys() {
            self.inner.meta.remove(k?)?;
        }
        self.push_remove_user(addr)?;
        self.inner.accounts.remove(addr.as_bytes())?;
        self.inner.mailboxes.remove(expire::usage_key(addr))?;
        self.flush()?;
        self.inner.hub.notify(addr);
        Ok(true)
    }

    // ---- metadata ----

    /// Add or refresh a push device token.
    pub fn add_device_token(&self, addr: &str, token: &str, now: i64) -> Result<(), StoreError> {
        let k = token_key(addr, token);
        self.inner.meta.insert(k, &now.to_be_bytes())?;
        self.flush()
    }

    /// Valid tokens (set within the last 90 days and not in the future); stale ones are purged.
    pub fn device_tokens(&self, addr: &str, now: i64) -> Result<Vec<String>, StoreError> {
        let prefix = token_key(addr, "");
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for kv in self.inner.meta.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let ts = if v.len() == 8 {
                codec::be64(&v) as i64
            } else {
                0
            };
            let token = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if ts > now - 90 * 86400 && ts < now + 60 {
                out.push(token);
            } else {
                stale.push(k);
            }
        }
        if !stale.is_empty() {
            for k in stale {
                self.inner.meta.remove(k)?;
            }
            self.flush()?;
        }
        Ok(out)
    }

    pub fn remove_device_token(&self, addr: &str, token: &str) -> Result<(), StoreError> {
        self.inner.meta.remove(token_key(addr, token))?;
        self.flush()
    }

    /// Wait handle for changes to any mailbox of `addr`.
    pub fn subscribe(&self, addr: &str) -> watch::Receiver<u64> {
        self.inner.hub.subscribe(addr)
    }

    /// On-disk size of the index and of the blobs, in bytes.
    pub fn index_size(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }
}

fn token_key(addr: &str, token: &str) -> Vec<u8> {
    let mut k = user_prefix(addr);
    k.extend_from_slice(b"devicetoken\0");
    k.extend_from_slice(token.as_bytes());
    k
}

fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    use std::os::unix::io::AsRawFd;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    // SAFETY: flock on a valid open descriptor has no memory effects.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StoreError::Locked(dir.to_path_buf()));
    }
    Ok(f)
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl MailboxRec {
    fn new(id: u64) -> MailboxRec {
        MailboxRec {
            id,
            // Seconds since 2020 fit in u32 for a century and differ per creation.
            uidvalidity: (now_unix() - 1_577_836_800).clamp(1, u32::MAX as i64) as u32,
            uidnext: 1,
            highestmodseq: 1,
        }
    }
}
