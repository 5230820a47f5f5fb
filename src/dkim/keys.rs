//! DKIM private keys in the data directory: generated once, loaded on every start.
//!
//! RSA keys are stored as PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`, the format of
//! `opendkim-genkey`, so an upstream relay's `/etc/dkimkeys/opendkim.private` can be copied in);
//! PKCS#8 PEM is accepted too. Ed25519 keys are PKCS#8 PEM. Files are created with mode 0600.
//! Signing uses ring (constant-time RSA), generation the RustCrypto `rsa` crate via mail-auth.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use mail_auth::common::crypto::{Algorithm, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// An RSA signing key backed by ring.
pub struct RingRsa(pub RsaKeyPair);

/// An Ed25519 signing key backed by ring.
pub struct RingEd25519(pub Ed25519KeyPair);

fn collect(input: impl Writable) -> Vec<u8> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    input.write(&mut buf);
    buf
}

impl SigningKey for RingRsa {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        let data = collect(input);
        let mut sig = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                &data,
                &mut sig,
            )
            .map_err(|_| {
                mail_auth::Error::Crypto(mail_auth::common::crypto::CryptoError::Library(
                    "RSA signing failed".into(),
                ))
            })?;
        Ok(sig)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaSha256
    }
}

impl SigningKey for RingEd25519 {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        // Ed25519-SHA256 (RFC 8463): the signature is over the SHA-256 hash of the input.
        let digest = self.hash(input);
        Ok(self.0.sign(digest.as_ref()).as_ref().to_vec())
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::Ed25519Sha256
    }
}

/// Path of the key file for `selector`.
pub fn key_path(data_dir: &Path, selector: &str) -> PathBuf {
    data_dir.join("dkim").join(format!("{selector}.private"))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Write a new key file with mode 0600, atomically (tmp + rename + directory fsync).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow!("bad key path"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

/// Load the RSA key at `path`, generating a 2048-bit key first if the file does not exist.
pub fn load_or_generate_rsa(path: &Path) -> anyhow::Result<RsaKeyPair> {
    if !path.exists() {
        let pair = mail_auth::dkim::generate::DkimKeyPair::generate_rsa(2048)
            .map_err(|e| anyhow!("generating the DKIM key: {e}"))?;
        write_private(path, &pem("RSA PRIVATE KEY", pair.private_key()))?;
        tracing::info!(path = %path.display(), "generated a new RSA-2048 DKIM key");
    }
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| anyhow!("{}: not a PEM private key: {e}", path.display()))?;
    let kp = match &der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => bail!("{}: not an RSA key", path.display()),
    };
    kp.map_err(|e| anyhow!("{}: unusable RSA key: {e}", path.display()))
}

/// Load the Ed25519 key at `path`, generating one first if the file does not exist.
pub fn load_or_generate_ed25519(path: &Path) -> anyhow::Result<Ed25519KeyPair> {
    if !path.exists() {
        let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| anyhow!("generating the Ed25519 DKIM key failed"))?;
        write_private(path, &pem("PRIVATE KEY", doc.as_ref()))?;
        tracing::info!(path = %path.display(), "generated a new Ed25519 DKIM key");
    }
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| anyhow!("{}: not a PEM private key: {e}", path.display()))?;
    let PrivateKeyDer::Pkcs8(k) = &der else {
        bail!("{}: not a PKCS#8 Ed25519 key", path.display());
    };
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(k.secret_pkcs8_der())
        .map_err(|e| anyhow!("{}: unusable Ed25519 key: {e}", path.display()))
}

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// SubjectPublicKeyInfo DER of an RSA public key (what `opendkim-genkey` publishes in `p=`).
pub fn rsa_spki(kp: &RsaKeyPair) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const ALG: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(kp.public().as_ref());
    let mut seq = ALG.to_vec();
    seq.extend(der_tlv(0x03, &bits));
    der_tlv(0x30, &seq)
}

/// The raw 32-byte Ed25519 public key (RFC 8463 `p=`).
pub fn ed25519_public(kp: &Ed25519KeyPair) -> Vec<u8> {
    kp.public_key().as_ref().to_vec()
}
