//! First-boot setup: the choices of the web wizard, persisted in `<data_dir>/setup.toml` and laid
//! over the configuration at every start (and every in-process reload), the LAN address the
//! wizard is announced on, and the serve loop that rebuilds the relay when the wizard finishes.
//!
//! A relay is in *setup mode* while its effective `mail_domain` is empty: the appliance ships a
//! config with `mail_domain = ""` and no `setup.toml`. In setup mode only HTTP and HTTPS listen
//! and every page is the wizard (`web::wizard`).
//!
//! Owns: the setup file (atomic write: tmp + fsync + rename + directory fsync, mode 0600), its
//! validation and overlay, the generation loop. Must not know: HTTP, templates, sled keys.

pub mod errors;
pub mod run;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;

pub use run::{serve_loop, Hooks, Listeners};

/// File name of the persisted wizard choices inside the data directory.
pub const FILE: &str = "setup.toml";

/// Certificate modes the wizard offers (the `tls` config key).
pub const TLS_MODES: &[&str] = &["acme", "files", "self-signed"];

/// The wizard's choices. Every field but the password hash maps onto a config key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Setup {
    /// The mail domain; in LAN-only mode the box's LAN IPv4 address (an IP-only relay).
    pub mail_domain: String,
    /// LAN-only mode: no public DNS, self-signed certificate, `dclogin:` invites with `ic=3`.
    pub lan_only: bool,
    /// argon2id hash of the admin password (`auth::hash_password`).
    pub admin_password_hash: String,
    pub privacy_mail: String,
    pub privacy_postal: String,
    /// `acme`, `files` or `self-signed`.
    pub tls: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// ACME account contact (`acme_email`).
    pub acme_email: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Syntax(PathBuf, String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// Path of the setup file of `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The persisted choices, `None` before the wizard finished once.
pub fn load(data_dir: &Path) -> Result<Option<Setup>, SetupError> {
    let p = path(data_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SetupError::Read(p, e)),
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| SetupError::Syntax(p, e.to_string()))
}

/// Write `setup` atomically: a crash leaves the old file or the new one, never a torn one.
pub fn save(data_dir: &Path, setup: &Setup) -> Result<(), SetupError> {
    let p = path(data_dir);
    let err = |e| SetupError::Write(p.clone(), e);
    let text = toml::to_string(setup)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    std::fs::create_dir_all(data_dir).map_err(err)?;
    crate::fsutil::write_atomic(&p, text.as_bytes(), 0o600).map_err(err)
}

impl Setup {
    /// Lay the choices over `cfg` (the config file and defaults stay the base).
    pub fn apply(&self, cfg: &mut Config) {
        cfg.mail_domain = self.mail_domain.clone();
        cfg.privacy_mail = self.privacy_mail.clone();
        cfg.privacy_postal = self.privacy_postal.clone();
        cfg.tls = self.tls.clone();
        cfg.tls_cert = self.tls_cert.clone();
        cfg.tls_key = self.tls_key.clone();
        cfg.acme_email = self.acme_email.clone();
        // The wizard's certificate choice wins over an upstream-style external pair.
        cfg.tls_external_cert_and_key = String::new();
    }
}

/// Apply `<data_dir>/setup.toml` (if any) to `cfg`. Returns the choices.
pub fn overlay(cfg: &mut Config) -> Result<Option<Setup>, SetupError> {
    let s = load(&cfg.data_dir)?;
    if let Some(s) = &s {
        s.apply(cfg);
    }
    Ok(s)
}

/// Setup mode: no mail domain yet.
pub fn needs_setup(cfg: &Config) -> bool {
    cfg.mail_domain.trim().is_empty()
}

/// The address the box is reached on in the home network: the `listen` address if it is a
/// specific one, else the source address of the default route (found by connecting a UDP
/// socket, which sends nothing), else loopback.
pub fn lan_ip(cfg: &Config) -> IpAddr {
    if !cfg.listen.is_unspecified() {
        return cfg.listen;
    }
    crate::net::default_route_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A mail domain a person may type: a host name (labels of letters, digits, `-`, `_`), lower
/// case, no trailing dot. `_` domains are test relays with a self-signed certificate.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_overlay() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let s = Setup {
            mail_domain: "chat.example.org".into(),
            admin_password_hash: "$argon2id$x".into(),
            privacy_mail: "p@example.org".into(),
            tls: "files".into(),
            tls_cert: Some("/c.pem".into()),
            tls_key: Some("/k.pem".into()),
            ..Setup::default()
        };
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s.clone()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(dir.path())).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        assert!(!dir.path().join("setup.toml.tmp").exists());
        let mut cfg = Config {
            mail_domain: String::new(),
            data_dir: dir.path().into(),
            tls_external_cert_and_key: "/a /b".into(),
            ..Config::default()
        };
        assert!(needs_setup(&cfg));
        overlay(&mut cfg).unwrap();
        assert!(!needs_setup(&cfg));
        assert_eq!(cfg.mail_domain, "chat.example.org");
        assert_eq!(
            cfg.tls_mode(),
            crate::config::TlsMode::Files {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            }
        );
        std::fs::write(path(dir.path()), "nonsense = [").unwrap();
        assert!(load(dir.path()).is_err());
    }

    #[test]
    fn domains() {
        assert!(valid_domain("chat.example.org"));
        assert!(valid_domain("_chat.test"));
        assert!(!valid_domain("localhost"));
        assert!(!valid_domain("Chat.example.org"));
        assert!(!valid_domain("a..b"));
        assert!(!valid_domain("-a.b"));
        assert!(!valid_domain("a b.c"));
    }
}
