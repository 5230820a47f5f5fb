//! `/mxdeliv` client (relay-behaviour §9.5): `POST https://<mx>/mxdeliv` with `X-MAIL-FROM`
//! (omitted for the null sender), one `X-MAIL-TO` per recipient and the signed message as
//! body; 2xx is success, anything else a failure (the caller falls back to SMTP).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{tlsconf, Delivery, Target};

/// The TCP connection could not be made (the next address may work).
#[derive(Debug)]
pub struct ConnectFailed(pub String);

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectFailed {}

/// Whole-request timeout (§9.5: 60 s read/write).
const TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// POST the message; `Ok` on a 2xx answer.
pub async fn post(
    d: &Delivery,
    t: &Target,
    ip: IpAddr,
    sender: &str,
    rcpts: &[String],
    body: Bytes,
) -> anyhow::Result<()> {
    match tokio::time::timeout(TIMEOUT, post_inner(d, t, ip, sender, rcpts, body)).await {
        Ok(r) => r,
        Err(_) => bail!("HTTPS to {} timed out", t.host),
    }
}

async fn post_inner(
    d: &Delivery,
    t: &Target,
    ip: IpAddr,
    sender: &str,
    rcpts: &[String],
    body: Bytes,
) -> anyhow::Result<()> {
    let sa = SocketAddr::new(ip, d.https_port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(sa))
        .await
        .map_err(|_| {
            anyhow!(ConnectFailed(format!(
                "HTTPS connect to {} timed out",
                t.host
            )))
        })?
        .map_err(|e| anyhow!(ConnectFailed(format!("HTTPS connect to {}: {e}", t.host))))?;
    let _ = tcp.set_nodelay(true);
    let cfg = if t.verify {
        d.tls.https_verified.clone()
    } else {
        d.tls.https_unverified.clone()
    };
    let tls = TlsConnector::from(cfg)
        .connect(tlsconf::server_name(&t.host)?, tcp)
        .await
        .map_err(|e| anyhow!("HTTPS TLS with {}: {e}", t.host))?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let hostpart = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    let authority = if d.https_port == 443 {
        hostpart
    } else {
        format!("{hostpart}:{}", d.https_port)
    };
    let uri = if h2 {
        format!("https://{authority}/mxdeliv")
    } else {
        "/mxdeliv".to_string()
    };
    let mut req = Request::post(uri).header(hyper::header::HOST, authority.as_str());
    if !sender.is_empty() {
        req = req.header("X-MAIL-FROM", sender);
    }
    for r in rcpts {
        req = req.header("X-MAIL-TO", r.as_str());
    }
    let req = req
        .header(hyper::header::CONTENT_TYPE, "message/rfc822")
        .body(Full::new(body))?;
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| anyhow!("HTTP/2 with {}: {e}", t.host))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = req;
        req.headers_mut().remove(hyper::header::HOST);
        send.send_request(req).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| anyhow!("HTTP/1.1 with {}: {e}", t.host))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        send.send_request(req).await
    }
    .map_err(|e| anyhow!("HTTPS request to {}: {e}", t.host))?;
    let status = resp.status();
    let text = match Limited::new(resp.into_body(), 2048).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        Err(_) => String::new(),
    };
    if status.is_success() {
        Ok(())
    } else {
        bail!("{} answered {}: {}", t.host, status.as_u16(), text)
    }
}
