//! Authentication and create-on-login: the rules for who may get a new account, password
//! hashing (argon2id; `{SHA512-CRYPT}` for imported accounts), and the resource guards.
//!
//! Owns: the account-creation policy. Must not know: protocols or reply codes (callers map
//! [`AuthError`] to them), sled keys (it uses the store's API).

mod guard;
pub use guard::free_disk;

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use thiserror::Error;

use crate::config::Config;
use crate::store::{now_unix, Account, Created, Store, StoreError};

pub use guard::{resources_ok, ResourceLimits};

#[derive(Debug, Error)]
pub enum AuthError {
    /// Wrong password, foreign domain, or a login that may not create an account. Callers answer
    /// all of these the same way so nothing can be probed.
    #[error("authentication failed")]
    Failed,
    #[error("account creation refused: {0}")]
    CreationRefused(&'static str),
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Argon2id parameters: 4 MiB, 3 passes, 1 lane. One verification takes a few ms on x86-64 and
/// stays well under 50 ms on a Cortex-A72 (Raspberry Pi 4); see `make bench`.
fn argon2() -> Argon2<'static> {
    let params = Params::new(4096, 3, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(e.to_string()))
}

/// Check a password against a stored hash (argon2 PHC string or `{SHA512-CRYPT}$6$...`).
pub fn verify_password(password: &str, stored: &str) -> bool {
    if let Some(crypt) = stored.strip_prefix("{SHA512-CRYPT}") {
        return sha_crypt::sha512_check(password, crypt).is_ok();
    }
    if stored.starts_with("$6$") {
        return sha_crypt::sha512_check(password, stored).is_ok();
    }
    match PasswordHash::new(stored) {
        Ok(h) => argon2().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// Why an address cannot be created, or `None` if its form is acceptable.
pub fn address_problem(cfg: &Config, addr: &str) -> Option<&'static str> {
    let mut parts = addr.splitn(3, '@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Some("address must contain exactly one @");
    };
    if domain != cfg.address_domain() {
        return Some("foreign domain");
    }
    if local.len() < cfg.username_min_length || local.len() > cfg.username_max_length {
        return Some("local part length out of range");
    }
    if !local
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("local part has characters other than a-z 0-9 . _ -");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Some("local part has misplaced dots");
    }
    None
}

/// Login and create-on-login.
pub struct Auth {
    cfg: Arc<Config>,
    store: Store,
    limits: ResourceLimits,
    /// First logins that were refused account creation (metric `rejected_registrations`).
    rejected: std::sync::atomic::AtomicU64,
}

impl Auth {
    pub fn new(cfg: Arc<Config>, store: Store) -> Auth {
        let limits = ResourceLimits::from_config(&cfg);
        Auth {
            cfg,
            store,
            limits,
            rejected: Default::default(),
        }
    }

    /// Registrations refused since start.
    pub fn rejected_registrations(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn reject(&self) {
        self.rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Authenticate `user`/`password`, creating the account if it does not exist and creation is
    /// allowed. Returns the canonical (lower-cased) address. Runs password hashing on a blocking
    /// thread.
    pub async fn login(&self, user: &str, password: &str) -> Result<String, AuthError> {
        let addr = user.trim().to_ascii_lowercase();
        if password.is_empty() || addr.len() > 320 || password.len() > 1024 {
            return Err(AuthError::Failed);
        }
        let domain_ok = addr
            .rsplit_once('@')
            .is_some_and(|(_, d)| d == self.cfg.address_domain());
        if !domain_ok {
            return Err(AuthError::Failed);
        }
        let store = self.store.clone();
        let existing = {
            let (store, addr) = (store.clone(), addr.clone());
            blocking(move || store.account(&addr)).await??
        };
        if let Some(acct) = existing {
            return self.check(acct, password, addr).await;
        }
        // Creation path.
        if let Some(why) = address_problem(&self.cfg, &addr) {
            tracing::info!(reason = why, "registration rejected");
            self.reject();
            return Err(AuthError::Failed);
        }
        if password.chars().count() < self.cfg.password_min_length {
            tracing::info!(reason = "password too short", "registration rejected");
            self.reject();
            return Err(AuthError::Failed);
        }
        if self.cfg.nocreate || self.cfg.nocreate_file().exists() {
            tracing::info!(reason = "kill switch", "registration rejected");
            self.reject();
            return Err(AuthError::CreationRefused(
                "account creation is switched off",
            ));
        }
        if let Err(why) = resources_ok(&self.limits, &self.cfg.data_dir) {
            tracing::warn!(reason = why, "registration rejected");
            self.reject();
            return Err(AuthError::CreationRefused(why));
        }
        let pw = password.to_string();
        let hash = blocking(move || hash_password(&pw)).await??;
        let acct = Account {
            addr: addr.clone(),
            password_hash: hash,
            created: now_unix(),
            enforce_e2ee: true,
            last_login_day: 0,
        };
        let outcome = {
            let store = store.clone();
            blocking(move || store.create_account(&acct)).await??
        };
        match outcome {
            Created::Created => {
                tracing::info!("created account");
                Ok(addr)
            }
            // Someone else created it between our lookup and our insert: check against theirs.
            Created::Existed(acct) => self.check(acct, password, addr).await,
        }
    }

    async fn check(
        &self,
        acct: Account,
        password: &str,
        addr: String,
    ) -> Result<String, AuthError> {
        if acct.password_hash.is_empty() {
            tracing::error!("account has an empty password record");
            return Err(AuthError::Failed);
        }
        let pw = password.to_string();
        let ok = blocking(move || verify_password(&pw, &acct.password_hash)).await?;
        if ok {
            Ok(addr)
        } else {
            Err(AuthError::Failed)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_reject() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "garbage"));
    }

    #[test]
    fn sha512_crypt_imports_verify() {
        // Produced with this crate at test time, stored in upstream's form.
        let params = sha_crypt::Sha512Params::new(5000).unwrap();
        let h = sha_crypt::sha512_simple("s3cretpass", &params).unwrap();
        let stored = format!("{{SHA512-CRYPT}}{h}");
        assert!(verify_password("s3cretpass", &stored));
        assert!(!verify_password("s3cretpasx", &stored));
    }

    #[test]
    fn address_rules() {
        let cfg = Config {
            mail_domain: "chat.test".into(),
            ..Config::default()
        };
        assert_eq!(address_problem(&cfg, "abcdefghi@chat.test"), None);
        assert_eq!(address_problem(&cfg, "a.b-c_d12@chat.test"), None);
        assert!(address_problem(&cfg, "abcdefgh@chat.test").is_some());
        assert!(address_problem(&cfg, "abcdefghij@chat.test").is_some());
        assert!(address_problem(&cfg, "abcdefgh+@chat.test").is_some());
        assert!(address_problem(&cfg, "abcdEfghi@chat.test").is_some());
        assert!(address_problem(&cfg, "abc efghi@chat.test").is_some());
        assert!(address_problem(&cfg, "abcdefghi@other.test").is_some());
        assert!(address_problem(&cfg, "abc@efghi@chat.test").is_some());
        assert!(address_problem(&cfg, "abc/efghi@chat.test").is_some());
    }
}
