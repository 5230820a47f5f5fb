//! TURN REST credentials (draft-uberti-behave-turn-rest-00, relay-behaviour §18.2) for METADATA
//! `/shared/vendor/deltachat/turn`: username = expiry unix time (now + 5 days), password =
//! base64(HMAC-SHA1(secret, username)), with a random per-install secret kept in
//! `<data_dir>/turn.secret` (mode 0600; a TURN server such as coturn uses the file's text as its
//! `static-auth-secret`).
//!
//! Owns: the secret file and the credential format. Must not know: IMAP, sockets.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;

use crate::config::Config;

/// Credentials are valid this long.
pub const VALIDITY_SECS: i64 = 5 * 86400;

pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("turn.secret")
}

/// The install's secret, created on first use (race-safe: the first writer wins).
pub fn secret(data_dir: &Path) -> std::io::Result<String> {
    let path = secret_path(data_dir);
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(s.to_string());
        }
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = data_dir.join(format!("turn.secret.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(hex.as_bytes())?;
        f.sync_all()?;
    }
    // hard_link fails if another session created the file meanwhile; then use theirs.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(hex),
        Err(_) => Ok(std::fs::read_to_string(&path)?.trim().to_string()),
    }
}

/// `(username, password)` valid until `now + VALIDITY_SECS`.
pub fn credentials(secret: &str, now: i64) -> (String, String) {
    let username = (now + VALIDITY_SECS).to_string();
    (username.clone(), password(secret, &username))
}

/// base64(HMAC-SHA1(secret, username)).
pub fn password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// The advertised host: `turn_host`, else `mail_domain` (an IP address in brackets).
pub fn host(cfg: &Config) -> String {
    let h = cfg
        .turn_host
        .clone()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| cfg.mail_domain.clone());
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        format!("[{bare}]")
    } else {
        h
    }
}

/// The METADATA value `<host>:<port>:<username>:<password>`, or `None` when TURN is not
/// enabled (clients then use their built-in servers) or the secret cannot be read.
pub fn metadata_value(cfg: &Config, now: i64) -> Option<String> {
    if !cfg.turn {
        return None;
    }
    let secret = match secret(&cfg.data_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read or create turn.secret");
            return None;
        }
    };
    let (user, pass) = credentials(&secret, now);
    Some(format!("{}:{}:{user}:{pass}", host(cfg), cfg.turn_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2202_hmac_sha1_vector() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            password("Jefe", "what do ya want for nothing?"),
            base64::engine::general_purpose::STANDARD.encode([
                0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
                0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79
            ])
        );
    }

    #[test]
    fn secret_is_stable_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let a = secret(d.path()).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(secret(d.path()).unwrap(), a);
        let mode = std::fs::metadata(secret_path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn host_brackets_ip_literals() {
        let mut c = Config {
            mail_domain: "1.2.3.4".into(),
            ..Config::default()
        };
        assert_eq!(host(&c), "[1.2.3.4]");
        c.mail_domain = "[::1]".into();
        assert_eq!(host(&c), "[::1]");
        c.mail_domain = "chat.example".into();
        assert_eq!(host(&c), "chat.example");
    }
}
