//! The HTTP client instant-acme talks through: one HTTPS connection per request over rustls
//! (ring) with Mozilla's roots plus `extra_root_certs`, names resolved with the relay's resolver.
//! (instant-acme's own client would pull hyper-rustls and the platform verifier, which needs a
//! system CA store the appliance does not have.)

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::HOST;
use hyper::{Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::delivery::tlsconf;

/// Whole-request timeout.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read (certificate chains are a few KiB).
const MAX_BODY: usize = 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) struct Client {
    pub tls: Arc<rustls::ClientConfig>,
    pub resolver: Arc<hickory_resolver::TokioResolver>,
}

impl HttpClient for Client {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let uri = req.uri().to_string();
            match tokio::time::timeout(TIMEOUT, send(tls, resolver, req)).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(
                    format!("request to {uri}: {e}").into(),
                )),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("request to {uri} timed out").into(),
                )),
            }
        })
    }
}

async fn addrs(
    resolver: &hickory_resolver::TokioResolver,
    host: &str,
) -> Result<Vec<IpAddr>, BoxError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let ips: Vec<IpAddr> = resolver.lookup_ip(host).await?.iter().collect();
    if ips.is_empty() {
        return Err(format!("{host} has no address").into());
    }
    Ok(ips)
}

async fn send(
    tls: Arc<rustls::ClientConfig>,
    resolver: Arc<hickory_resolver::TokioResolver>,
    req: Request<BodyWrapper<Bytes>>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let uri = req.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err("the ACME server must be reached over https".into());
    }
    let host = uri.host().ok_or("URL without host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let mut last: Option<BoxError> = None;
    let mut tcp = None;
    for ip in addrs(&resolver, &host).await? {
        match TcpStream::connect(SocketAddr::new(ip, port)).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(format!("connect to {ip}:{port}: {e}").into()),
        }
    }
    let tcp = match tcp {
        Some(t) => t,
        None => return Err(last.unwrap_or_else(|| "no address".into())),
    };
    let name = tlsconf::server_name(host.trim_start_matches('[').trim_end_matches(']'))?;
    let tls = TlsConnector::from(tls).connect(name, tcp).await?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let rsp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        send.send_request(req).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        // HTTP/1.1: origin-form target plus Host.
        let (mut parts, body) = req.into_parts();
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(&host)
            .to_string();
        parts.headers.insert(HOST, authority.parse()?);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        parts.uri = path.parse::<Uri>()?;
        send.send_request(Request::from_parts(parts, body)).await?
    };
    let (parts, body) = rsp.into_parts();
    let body = Limited::new(body, MAX_BODY).collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
