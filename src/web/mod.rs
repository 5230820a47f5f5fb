//! HTTP on 443 (and the port-80 redirect): the public pages (index with the invite QR, info,
//! privacy, `robots.txt`), the well-known endpoints (autoconfig, `mta-sts.txt`), `POST /new`
//! and `/mxdeliv`. `www.<domain>` redirects to `<domain>`. Every response carries security
//! headers (a CSP without other origins, `nosniff`) and no server version.
//!
//! Request bodies are read (bounded) before any handler answers: an HTTP/2 client gets no
//! response when the server replies before the request body was consumed.
//!
//! Owns: HTTP routes and their bodies. Must not know: sled keys, IMAP/SMTP grammar.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

mod admin;
mod limit;
mod mxdeliv;
pub mod pages;
mod session;
pub mod wizard;
use crate::net::Conn;
use crate::Ctx;

/// Largest request body the public routes accept (`/new` posts an empty body).
const MAX_BODY: usize = 64 * 1024;
/// Time a client gets to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// `/new` per client IP: 2 per second, burst 5 (relay-behaviour §4.3).
const NEW_PER_SECOND: u32 = 2;
const NEW_BURST: u32 = 5;

pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
pub const ROBOTS_TXT: &str = "User-agent: *\nDisallow: /\n";

/// Per-relay web state; shared by all connections of one [`Ctx`].
#[derive(Clone)]
pub struct WebState {
    ctx: Arc<Ctx>,
    new_limit: Arc<limit::IpLimiter>,
}

impl FromRef<WebState> for Arc<Ctx> {
    fn from_ref(s: &WebState) -> Arc<Ctx> {
        s.ctx.clone()
    }
}

impl WebState {
    /// The state of `ctx`'s relay. Kept in a small registry beside the `Ctx` (which this module
    /// does not own) so that the rate limit spans connections; entries die with their `Ctx`.
    fn of(ctx: &Arc<Ctx>) -> WebState {
        type Registry = Vec<(Weak<Ctx>, Arc<limit::IpLimiter>)>;
        static REGISTRY: Mutex<Registry> = Mutex::new(Vec::new());
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|(w, _)| w.strong_count() > 0);
        let found = reg
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(ctx)))
            .map(|(_, l)| l.clone());
        let new_limit = found.unwrap_or_else(|| {
            let l = Arc::new(limit::IpLimiter::new(NEW_PER_SECOND, NEW_BURST));
            reg.push((Arc::downgrade(ctx), l.clone()));
            l
        });
        WebState {
            ctx: ctx.clone(),
            new_limit,
        }
    }
}

/// The client's address, from the connection (never logged).
#[derive(Clone, Copy, Debug)]
pub struct PeerIp(pub Option<IpAddr>);

pub fn router(ctx: Arc<Ctx>) -> Router {
    let state = WebState::of(&ctx);
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/info.html", get(info))
        .route("/info", get(info))
        .route("/privacy.html", get(privacy))
        .route("/privacy", get(privacy))
        .route("/main.css", get(css))
        .route("/logo.svg", get(logo))
        .route("/robots.txt", get(robots))
        .route("/.well-known/mta-sts.txt", get(mta_sts))
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            get(autoconfig),
        )
        .route("/mail/config-v1.1.xml", get(autoconfig))
        .route("/new", any(new_account))
        .route("/cgi-bin/newemail.py", any(new_account))
        // The wizard at /setup and the status page at /admin, behind the admin session.
        .merge(admin::routes())
        .fallback(not_found)
        .layer(middleware::from_fn(read_body_first))
        // /mxdeliv reads (and bounds) its body itself, with the message size limit.
        .route("/mxdeliv", any(mxdeliv::mxdeliv))
        .layer(middleware::from_fn_with_state(state.clone(), site))
        .with_state(state)
}

pub async fn serve_https(ctx: Arc<Ctx>, conn: Conn, peer_ip: Option<IpAddr>) {
    serve_conn(router(ctx).layer(Extension(PeerIp(peer_ip))), conn).await
}

pub async fn serve_http(ctx: Arc<Ctx>, stream: TcpStream) {
    let app = Router::new()
        .route("/.well-known/acme-challenge/{token}", get(acme_challenge))
        .fallback(redirect)
        .layer(middleware::from_fn(read_body_first))
        .with_state(ctx);
    serve_conn(app, stream).await
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(app: Router, io: S) {
    let svc = TowerToHyperService::new(app);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).await {
        tracing::debug!("http connection ended: {e}");
    }
}

/// The host a request is for (HTTP/2 `:authority` or HTTP/1 `Host`), lower-case, no port.
fn request_host(req: &Request) -> Option<String> {
    let h = match req.uri().host() {
        Some(h) => h.to_string(),
        None => {
            let h = req.headers().get(header::HOST)?.to_str().ok()?;
            let h = if h.starts_with('[') {
                h.split_inclusive(']').next().unwrap_or(h)
            } else {
                h.split(':').next().unwrap_or(h)
            };
            h.to_string()
        }
    };
    Some(h.trim_end_matches('.').to_ascii_lowercase())
}

/// `www.<domain>` ⇒ 301 to `https://<domain><uri>`; security headers on every response.
async fn site(State(s): State<WebState>, req: Request, next: Next) -> Response {
    let domain = s.ctx.cfg.mail_domain.to_ascii_lowercase();
    let mut resp = if request_host(&req).is_some_and(|h| h == format!("www.{domain}")) {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let to = format!("https://{}{path}", s.ctx.cfg.mail_domain);
        // The body is not needed, but must be consumed for HTTP/2 clients.
        let _ = read_limited(req.into_body(), MAX_BODY).await;
        moved(&to)
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Admin and wizard pages set their own CSP (forms may post to this origin).
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.remove(header::SERVER);
    resp
}

enum BodyError {
    TooLarge,
    Timeout,
}

/// Read at most `max` bytes of `body`. A larger body is drained (up to 16 × `max`) so that the
/// client sees the error answer instead of a reset.
async fn read_limited(body: Body, max: usize) -> Result<bytes::Bytes, BodyError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(f) => f,
            Err(_) => return Err(BodyError::Timeout),
        };
        let Some(Ok(frame)) = frame else {
            break;
        };
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= max {
                buf.extend_from_slice(&data);
            } else if seen > max.saturating_mul(16) {
                break;
            }
        }
    }
    if seen > max {
        return Err(BodyError::TooLarge);
    }
    Ok(buf.freeze())
}

/// Consume the request body (bounded) before the handler runs; the handler gets it buffered.
async fn read_body_first(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match read_limited(body, MAX_BODY).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(BodyError::TooLarge) => {
            json_reason(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.")
        }
        Err(BodyError::Timeout) => json_reason(StatusCode::REQUEST_TIMEOUT, "Request timed out."),
    }
}

fn json_reason(status: StatusCode, reason: &str) -> Response {
    let v = serde_json::json!({ "reason": reason });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn moved(to: &str) -> Response {
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)]).into_response()
}

/// HTTP-01 answers of a running ACME order (port 80; never redirected).
async fn acme_challenge(
    State(ctx): State<Arc<Ctx>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match ctx.acme.challenge_response(&token) {
        Some(key_auth) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_auth,
        )
            .into_response(),
        None => not_found().await,
    }
}

async fn redirect(State(ctx): State<Arc<Ctx>>, uri: Uri) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    moved(&format!("https://{}{}", ctx.cfg.mail_domain, path))
}

fn html(body: String, no_store: bool) -> Response {
    let cache = if no_store { "no-store" } else { "max-age=300" };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

async fn index(State(s): State<WebState>) -> Response {
    let (page, no_store) = pages::index(&s.ctx.cfg);
    html(page, no_store)
}

async fn info(State(s): State<WebState>) -> Response {
    html(pages::info(&s.ctx.cfg), false)
}

async fn privacy(State(s): State<WebState>) -> Response {
    html(pages::privacy(&s.ctx.cfg), false)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::CSS,
    )
        .into_response()
}

async fn logo() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::LOGO_SVG,
    )
        .into_response()
}

async fn robots() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        ROBOTS_TXT,
    )
        .into_response()
}

/// The MTA-STS policy (relay-behaviour §15.3), served on `<domain>` and `mta-sts.<domain>`.
pub fn mta_sts_txt(domain: &str) -> String {
    format!("version: STSv1\nmode: enforce\nmx: {domain}\nmax_age: 2419200\n")
}

async fn mta_sts(State(s): State<WebState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        mta_sts_txt(&s.ctx.cfg.mail_domain),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Not Found\n",
    )
        .into_response()
}

/// Mozilla autoconfig: IMAP 993/SSL, 143/STARTTLS, 443/SSL; SMTP 465/SSL, 587/STARTTLS, 443/SSL.
pub fn autoconfig_xml(domain: &str) -> String {
    let server = |kind: &str, tag: &str, port: u16, sock: &str| {
        format!(
            "    <{tag} type=\"{kind}\">\n      <hostname>{domain}</hostname>\n      <port>{port}</port>\n      \
             <socketType>{sock}</socketType>\n      <authentication>password-cleartext</authentication>\n      \
             <username>%EMAILADDRESS%</username>\n    </{tag}>\n"
        )
    };
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  \
         <emailProvider id=\"{domain}\">\n    <domain>{domain}</domain>\n    \
         <displayName>{domain} chatmail</displayName>\n    <displayShortName>{domain}</displayShortName>\n"
    );
    for (p, s) in [(993, "SSL"), (143, "STARTTLS"), (443, "SSL")] {
        x.push_str(&server("imap", "incomingServer", p, s));
    }
    for (p, s) in [(465, "SSL"), (587, "STARTTLS"), (443, "SSL")] {
        x.push_str(&server("smtp", "outgoingServer", p, s));
    }
    x.push_str("  </emailProvider>\n</clientConfig>\n");
    x
}

async fn autoconfig(State(s): State<WebState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        autoconfig_xml(&s.ctx.cfg.mail_domain),
    )
        .into_response()
}

/// `/new`: fresh credentials as JSON; the account is created at first login. Rate limited per
/// client IP with a JSON reason Delta Chat shows.
async fn new_account(
    State(s): State<WebState>,
    peer: Option<Extension<PeerIp>>,
    method: Method,
) -> Response {
    let ip = peer.and_then(|Extension(PeerIp(ip))| ip);
    if let Err(wait) = s.new_limit.check(ip) {
        let secs = wait.as_secs().max(1).to_string();
        let mut r = json_reason(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many new chat profiles requested from your network; please try again in a few seconds.",
        );
        if let Ok(v) = HeaderValue::from_str(&secs) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let cfg = &s.ctx.cfg;
    let self_signed = pages::self_signed(cfg);
    if method == Method::GET && !self_signed {
        return moved(&format!("dcaccount:https://{}/new", cfg.mail_domain));
    }
    let (email, password, dclogin_url) = pages::fresh_dclogin(cfg);
    let mut v = serde_json::json!({ "email": email, "password": password });
    if self_signed {
        v["dclogin_url"] = dclogin_url.into();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn autoconfig_lists_three_ports_each() {
        let x = super::autoconfig_xml("_chat.test");
        assert_eq!(x.matches("<incomingServer type=\"imap\">").count(), 3);
        assert_eq!(x.matches("<outgoingServer type=\"smtp\">").count(), 3);
        assert!(x.contains("<port>443</port>"));
        assert!(x.contains("<username>%EMAILADDRESS%</username>"));
    }

    #[test]
    fn mta_sts_policy_text() {
        assert_eq!(
            super::mta_sts_txt("c.example"),
            "version: STSv1\nmode: enforce\nmx: c.example\nmax_age: 2419200\n"
        );
    }
}
