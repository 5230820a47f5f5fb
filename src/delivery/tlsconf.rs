//! Outbound TLS client configurations (rustls + ring, TLS ≥ 1.2): verified against Mozilla's
//! roots (webpki-roots) plus `extra_root_certs`, or unverified for `_` domains and address
//! literals (§9.2). HTTPS offers ALPN `h2`, `http/1.1`; SMTP offers none.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

pub struct ClientConfigs {
    pub https_verified: Arc<ClientConfig>,
    pub https_unverified: Arc<ClientConfig>,
    pub smtp_verified: Arc<ClientConfig>,
    pub smtp_unverified: Arc<ClientConfig>,
}

impl ClientConfigs {
    pub fn new(extra_roots: Option<&Path>) -> anyhow::Result<ClientConfigs> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(p) = extra_roots {
            let certs = CertificateDer::pem_file_iter(p)
                .with_context(|| format!("extra_root_certs: reading {}", p.display()))?;
            for c in certs {
                let c = c.map_err(|e| anyhow!("extra_root_certs {}: {e}", p.display()))?;
                roots
                    .add(c)
                    .map_err(|e| anyhow!("extra_root_certs {}: {e}", p.display()))?;
            }
        }
        let roots = Arc::new(roots);
        let make = |verified: bool, alpn: &[&[u8]]| -> anyhow::Result<Arc<ClientConfig>> {
            let b = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?;
            let mut c = if verified {
                b.with_root_certificates(roots.clone())
                    .with_no_client_auth()
            } else {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify))
                    .with_no_client_auth()
            };
            c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
            Ok(Arc::new(c))
        };
        let h: &[&[u8]] = &[b"h2", b"http/1.1"];
        Ok(ClientConfigs {
            https_verified: make(true, h)?,
            https_unverified: make(false, h)?,
            smtp_verified: make(true, &[])?,
            smtp_unverified: make(false, &[])?,
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server name for SNI and verification: a DNS name, or an IP address.
pub fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(host.to_string()).map_err(|e| anyhow!("bad server name {host:?}: {e}"))
}

/// Accepts any certificate (still checks handshake signatures against it).
#[derive(Debug)]
pub struct NoVerify;

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
