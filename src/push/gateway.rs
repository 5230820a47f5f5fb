//! The HTTP client for the notification gateway: `POST <push_url>` with the raw device token as
//! body, over kept-alive HTTP/1.1 connections (https with rustls + ring, webpki roots plus
//! `extra_root_certs`; plain http only for tests and private gateways).
//!
//! Owns: connecting, TLS, the request shape. Must not know: the queue, retry policy, tokens'
//! owners.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::Config;

/// Whole-request timeout (§13: 60 s).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Idle keep-alive connections kept at most (one per worker slot).
const MAX_IDLE: usize = super::CONCURRENCY;

/// Where and how to POST.
pub struct Gateway {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<Arc<ClientConfig>>,
    /// Kept-alive HTTP/1.1 connections, reused for the next POST.
    idle: Mutex<Vec<Sender>>,
}

impl Gateway {
    /// `None` when `push_url` is empty (push disabled).
    pub fn new(cfg: &Config) -> anyhow::Result<Option<Gateway>> {
        let url = cfg.push_url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let uri: Uri = url.parse().with_context(|| format!("push_url {url:?}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("push_url {url:?}: scheme must be https or http"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("push_url {url:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            Some(client_config(cfg.extra_root_certs.as_deref())?)
        } else {
            None
        };
        Ok(Some(Gateway {
            uri,
            host,
            port,
            tls,
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// POST one token; the HTTP status, or an error for network/TLS/timeout failures.
    pub async fn post(&self, token: &str) -> anyhow::Result<u16> {
        match tokio::time::timeout(TIMEOUT, self.post_inner(token)).await {
            Ok(r) => r,
            Err(_) => bail!("push gateway timed out"),
        }
    }

    async fn post_inner(&self, token: &str) -> anyhow::Result<u16> {
        // A kept-alive connection may have been closed by the gateway meanwhile: on failure
        // try once more on a fresh one.
        if let Some(mut send) = self.take_idle() {
            if let Ok(status) = self.send_on(&mut send, token).await {
                self.put_idle(send);
                return Ok(status);
            }
        }
        let mut send = self.connect().await?;
        let status = self.send_on(&mut send, token).await?;
        self.put_idle(send);
        Ok(status)
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, s: Sender) {
        if !s.is_ready() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(s);
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| anyhow!("push gateway connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(cfg) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| anyhow!("push gateway name: {e}"))?;
                let tls = TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| anyhow!("push gateway TLS: {e}"))?;
                handshake(TokioIo::new(tls)).await
            }
            None => handshake(TokioIo::new(tcp)).await,
        }
    }

    async fn send_on(&self, send: &mut Sender, token: &str) -> anyhow::Result<u16> {
        send.ready()
            .await
            .map_err(|e| anyhow!("push gateway connection: {e}"))?;
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let path = self
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(token.to_string())))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| anyhow!("push gateway request: {e}"))?;
        let status = resp.status().as_u16();
        // Read the (small) body so the connection can carry the next request.
        let _ = Limited::new(resp.into_body(), 4096).collect().await;
        Ok(status)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn handshake<I>(io: I) -> anyhow::Result<Sender>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| anyhow!("push gateway HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

fn client_config(extra: Option<&std::path::Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(p) = extra {
        for c in CertificateDer::pem_file_iter(p)
            .with_context(|| format!("extra_root_certs: reading {}", p.display()))?
        {
            let c = c.map_err(|e| anyhow!("extra_root_certs {}: {e}", p.display()))?;
            roots
                .add(c)
                .map_err(|e| anyhow!("extra_root_certs {}: {e}", p.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}
