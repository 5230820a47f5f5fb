//! Listeners: bind every configured port, cap connections, run TLS handshakes, and hand each
//! connection to its protocol session. On 443 the negotiated ALPN picks IMAP, SMTP or HTTP.
//!
//! Owns: sockets, connection limits, the [`Conn`] stream type and its STARTTLS upgrade. Must not
//! know: protocol grammar or policy.

mod conn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

pub use conn::Conn;

use crate::tls::{ALPN_IMAP, ALPN_SMTP};
use crate::Ctx;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Port 25: MX, STARTTLS required before MAIL.
    Mx,
    /// Port 587: submission with STARTTLS.
    Submission,
    /// Port 465: submission with implicit TLS.
    Submissions,
    /// Port 143: IMAP with STARTTLS.
    Imap,
    /// Port 993: IMAP with implicit TLS.
    Imaps,
    /// Port 443: TLS, then ALPN routing.
    Https,
    /// Port 80: plain HTTP.
    Http,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Mx => "smtp",
            Service::Submission => "submission",
            Service::Submissions => "submissions",
            Service::Imap => "imap",
            Service::Imaps => "imaps",
            Service::Https => "https",
            Service::Http => "http",
        }
    }
}

/// Handshakes that take longer are dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bind all configured listeners. Returns the bound addresses (useful with port 0 in tests is not
/// supported: ports come from the config).
pub async fn bind_all(ctx: &Arc<Ctx>) -> anyhow::Result<Vec<(Service, TcpListener)>> {
    let p = &ctx.cfg.ports;
    let mut out = Vec::new();
    for (svc, port) in [
        (Service::Mx, p.smtp),
        (Service::Submission, p.submission),
        (Service::Submissions, p.submissions),
        (Service::Imap, p.imap),
        (Service::Imaps, p.imaps),
        (Service::Https, p.https),
        (Service::Http, p.http),
    ] {
        if port == 0 {
            continue;
        }
        let addr = SocketAddr::new(ctx.cfg.listen, port);
        let l = bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({}): {e}", svc.name()))?;
        out.push((svc, l));
    }
    Ok(out)
}

pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

/// Run the accept loops forever.
pub async fn serve(ctx: Arc<Ctx>, listeners: Vec<(Service, TcpListener)>) {
    let imap_limit = Arc::new(Semaphore::new(ctx.cfg.max_imap_connections));
    let mut tasks = tokio::task::JoinSet::new();
    for (svc, l) in listeners {
        let limit = match svc {
            Service::Imap | Service::Imaps => imap_limit.clone(),
            Service::Mx => Arc::new(Semaphore::new(ctx.cfg.max_smtp_connections.max(1) * 10)),
            _ => Arc::new(Semaphore::new(ctx.cfg.max_smtp_connections.max(1))),
        };
        let ctx = ctx.clone();
        tasks.spawn(accept_loop(ctx, svc, l, limit));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(ctx: Arc<Ctx>, svc: Service, l: TcpListener, limit: Arc<Semaphore>) {
    loop {
        let (stream, _peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(service = svc.name(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Over the limit: close at once. No client address is logged.
            tracing::warn!(service = svc.name(), "connection limit reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        ctx.metrics.connection(svc.name());
        let ctx = ctx.clone();
        tokio::spawn(async move {
            handle(ctx, svc, stream).await;
            drop(permit);
        });
    }
}

async fn handle(ctx: Arc<Ctx>, svc: Service, stream: TcpStream) {
    let peer_ip = stream.peer_addr().ok().map(|a| a.ip());
    match svc {
        Service::Mx => crate::smtp::serve(ctx, Conn::Plain(stream), svc, peer_ip).await,
        Service::Submission => crate::smtp::serve(ctx, Conn::Plain(stream), svc, peer_ip).await,
        Service::Imap => crate::imap::serve(ctx, Conn::Plain(stream)).await,
        Service::Submissions => {
            if let Some(c) = handshake(ctx.tls.client.clone(), stream).await {
                crate::smtp::serve(ctx, c, svc, peer_ip).await
            }
        }
        Service::Imaps => {
            if let Some(c) = handshake(ctx.tls.client.clone(), stream).await {
                crate::imap::serve(ctx, c).await
            }
        }
        Service::Https => {
            let Some(c) = handshake(ctx.tls.https.clone(), stream).await else {
                return;
            };
            let (alpn, v13) = c.alpn_and_tls13();
            match alpn.as_deref() {
                Some(a) if a == ALPN_IMAP && v13 => crate::imap::serve(ctx, c).await,
                Some(a) if a == ALPN_SMTP && v13 => {
                    crate::smtp::serve(ctx, c, Service::Submissions, peer_ip).await
                }
                Some(a) if a == ALPN_IMAP || a == ALPN_SMTP => {
                    tracing::info!(service = "https", "refused mail protocol below TLS 1.3");
                }
                _ => crate::web::serve_https(ctx, c, peer_ip).await,
            }
        }
        Service::Http => crate::web::serve_http(ctx, stream).await,
    }
}

async fn handshake(cfg: Arc<rustls::ServerConfig>, stream: TcpStream) -> Option<Conn> {
    let acc = TlsAcceptor::from(cfg);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(stream)).await {
        Ok(Ok(s)) => Some(Conn::Tls(Box::new(s))),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake failed: {e}");
            None
        }
        Err(_) => None,
    }
}

/// The local address of the default IPv4 route (the box's LAN address), found by connecting a
/// UDP socket towards a documentation address: no packet is sent. `None` without such a route.
pub fn default_route_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((std::net::Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}
