//! DKIM: signing of everything this relay sends (outgoing mail of local users and locally
//! generated bounces) and strict verification of everything it receives from other servers
//! (relay-behaviour §7 step 6, §8).
//!
//! Owns: the key files under `<data_dir>/dkim/`, the signer, the key records for the DNS zone,
//! the verifier with its bounded key cache and the origin-check reply lines. Must not know:
//! sockets, SMTP/HTTP sessions, the store, the queue.
//!
//! API for the SMTP MX session (port 25, end of DATA, on the bytes as received):
//! `ctx.dkim.verifier.verify_origin(&msg, Some(peer_ip)).await` → `Err(f)` ⇒ reply `f.reply()`.

mod keys;
mod sign;
mod verify;

use std::path::PathBuf;
use std::sync::OnceLock;

pub use keys::key_path;
pub use sign::{split_txt, SignError, Signer, OVERSIGNED_HEADERS, SIGNED_HEADERS};
pub use verify::{
    from_domain, DkimFailure, KeyCache, Verifier, KEY_CACHE_SIZE, NO_SIGNATURE, NO_VALID_SIGNATURE,
};

use crate::config::Config;

/// Signer (created lazily: the RSA key is generated on first use) and verifier.
pub struct Dkim {
    domain: String,
    selector: String,
    ed25519: bool,
    data_dir: PathBuf,
    /// IP-only relays sign nothing (§11).
    enabled: bool,
    signer: OnceLock<Option<Signer>>,
    pub verifier: Verifier,
}

impl Dkim {
    pub fn new(cfg: &Config, resolver: hickory_resolver::TokioResolver) -> Dkim {
        Dkim {
            domain: cfg.mail_domain.to_ascii_lowercase(),
            selector: cfg.dkim_selector.clone(),
            ed25519: cfg.dkim_ed25519,
            data_dir: cfg.data_dir.clone(),
            enabled: cfg.ip_domain().is_none(),
            signer: OnceLock::new(),
            verifier: Verifier::new(resolver),
        }
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// Selector of the optional Ed25519 key.
    pub fn ed25519_selector(&self) -> String {
        format!("{}-ed25519", self.selector)
    }

    /// Load (or generate once) the keys. Blocking: call it from a blocking context or at
    /// start-up. `Ok(None)` on IP-only relays.
    pub fn signer(&self) -> anyhow::Result<Option<&Signer>> {
        if let Some(s) = self.signer.get() {
            return Ok(s.as_ref());
        }
        let made = if self.enabled {
            let rsa = keys::load_or_generate_rsa(&key_path(&self.data_dir, &self.selector))?;
            let ed = if self.ed25519 {
                let sel = self.ed25519_selector();
                let kp = keys::load_or_generate_ed25519(&key_path(&self.data_dir, &sel))?;
                Some((sel, kp))
            } else {
                None
            };
            Some(Signer::new(&self.domain, &self.selector, rsa, ed))
        } else {
            None
        };
        // A concurrent first call may have won; either result is equivalent.
        let _ = self.signer.set(made);
        Ok(self.signer.get().and_then(|s| s.as_ref()))
    }

    /// Sign `msg` if this relay signs at all; returns the message unchanged otherwise.
    /// Blocking (key generation on first use, RSA signature).
    pub fn sign_blocking(&self, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
        match self.signer()? {
            Some(s) => Ok(s.sign(msg)?),
            None => Ok(msg.to_vec()),
        }
    }

    /// [`Dkim::sign_blocking`] on tokio's blocking pool.
    pub async fn sign(self: &std::sync::Arc<Self>, msg: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.sign_blocking(&msg)).await?
    }

    /// The TXT records to publish: (owner name relative to the domain, value).
    pub fn dns_records(&self) -> anyhow::Result<Vec<(String, String)>> {
        let Some(s) = self.signer()? else {
            return Ok(Vec::new());
        };
        let mut v = vec![(format!("{}._domainkey", self.selector), s.rsa_record())];
        if let Some((sel, rec)) = s.ed25519_record() {
            v.push((format!("{sel}._domainkey"), rec));
        }
        Ok(v)
    }
}
