//! TLS: rustls (ring provider) server configurations for each kind of listener, and the
//! certificate behind them — generated self-signed into the data directory, or read from PEM
//! files and re-read when those change.
//!
//! Owns: certificates, protocol versions, ALPN lists. Must not know: what runs inside TLS.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::config::{Config, TlsMode};

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("certificate file {0}: {1}")]
    File(PathBuf, String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// ALPN protocol names used on the multiplexed port.
pub const ALPN_IMAP: &[u8] = b"imap";
pub const ALPN_SMTP: &[u8] = b"smtp";

#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The server configurations of every listener, sharing one reloadable certificate.
pub struct Tls {
    resolver: Arc<Resolver>,
    /// IMAP (993, 143) and submission (465, 587): TLS 1.3 only, no ALPN.
    pub client: Arc<ServerConfig>,
    /// Port 25: TLS 1.2 and 1.3.
    pub mx: Arc<ServerConfig>,
    /// Port 443: TLS 1.2 and 1.3, ALPN imap / smtp / h2 / http/1.1.
    pub https: Arc<ServerConfig>,
    /// PEM of the certificate chain's leaf, for the operator and tests.
    pub cert_pem_path: PathBuf,
    source: TlsMode,
}

impl Tls {
    pub fn new(cfg: &Config) -> Result<Tls, TlsError> {
        let source = cfg.tls_mode();
        let self_signed = || -> Result<(PathBuf, PathBuf), TlsError> {
            let dir = cfg.data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                generate_self_signed(&cfg.mail_domain, &dir)?;
            }
            Ok((c, k))
        };
        let (cert_path, key_path) = match &source {
            TlsMode::Files { cert, key } => (cert.clone(), key.clone()),
            TlsMode::SelfSigned => self_signed()?,
            // An ACME certificate once `src/acme` has one; until then the self-signed one.
            TlsMode::Acme { cert, key } => match load_certified_key(cert, key) {
                Ok(_) => (cert.clone(), key.clone()),
                Err(e) => {
                    if cert.exists() {
                        tracing::warn!("ACME certificate does not load, serving self-signed: {e}");
                    }
                    self_signed()?
                }
            },
        };
        let key = load_certified_key(&cert_path, &key_path)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(key)),
        });
        let build = |versions: &[&'static rustls::SupportedProtocolVersion],
                     alpn: &[&[u8]]|
         -> Result<Arc<ServerConfig>, TlsError> {
            let mut c = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_protocol_versions(versions)?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
            Ok(Arc::new(c))
        };
        Ok(Tls {
            client: build(&[&rustls::version::TLS13], &[])?,
            mx: build(&[&rustls::version::TLS13, &rustls::version::TLS12], &[])?,
            https: build(
                &[&rustls::version::TLS13, &rustls::version::TLS12],
                &[ALPN_IMAP, ALPN_SMTP, b"h2", b"http/1.1"],
            )?,
            resolver,
            cert_pem_path: cert_path,
            source,
        })
    }

    /// Serve the certificate chain and key in these PEM files on every listener from the next
    /// handshake on (used by `src/acme` after issuance or renewal).
    pub fn install(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let k = load_certified_key(cert, key)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(k);
        Ok(())
    }

    /// Re-read certificate files every `every` while they change (files mode only).
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) {
        let TlsMode::Files { cert, key } = self.source.clone() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let mut last = mtimes(&cert, &key);
            loop {
                tokio::time::sleep(every).await;
                let now = mtimes(&cert, &key);
                if now != last {
                    match load_certified_key(&cert, &key) {
                        Ok(k) => {
                            *me.resolver
                                .current
                                .write()
                                .unwrap_or_else(|e| e.into_inner()) = Arc::new(k);
                            tracing::info!("reloaded TLS certificate");
                            last = now;
                        }
                        Err(e) => tracing::warn!("certificate files changed but do not load: {e}"),
                    }
                }
            }
        });
    }
}

fn mtimes(a: &Path, b: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(a), m(b))
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::File(cert.into(), e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File(cert.into(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::File(cert.into(), "no certificate in file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File(key.into(), e.to_string()))?;
    let signing = provider::sign::any_supported_type(&key)
        .map_err(|e| TlsError::File(PathBuf::from("key"), e.to_string()))?;
    Ok(CertifiedKey::new(certs, signing))
}

/// Self-signed EC P-256 certificate: CN and SAN = domain, plus `www.` and `mta-sts.`; an IPv4
/// domain gets an IP SAN. Written atomically (key first, mode 0600).
pub fn generate_self_signed(domain: &str, dir: &Path) -> Result<(), TlsError> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, domain);
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    if let Ok(ip) = domain.parse::<std::net::IpAddr>() {
        params.subject_alt_names.push(SanType::IpAddress(ip));
    } else {
        for name in [
            domain.to_string(),
            format!("www.{domain}"),
            format!("mta-sts.{domain}"),
        ] {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.try_into().map_err(gen)?));
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let cert = params.self_signed(&key).map_err(gen)?;
    std::fs::create_dir_all(dir).map_err(|e| TlsError::File(dir.into(), e.to_string()))?;
    write_atomic(&dir.join("key.pem"), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&dir.join("cert.pem"), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    crate::fsutil::write_atomic(path, data, mode)
        .map_err(|e| TlsError::File(path.into(), e.to_string()))
}
