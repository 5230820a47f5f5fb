//! HTTP: the autoconfig XML Delta Chat reads for `dcaccount:` setups, `POST /new`, and the
//! port-80 redirect. The onboarding pages come with their own issue.
//!
//! Owns: HTTP routes and their bodies. Must not know: sled keys, IMAP/SMTP grammar.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::invite;

mod mxdeliv;
use crate::net::Conn;
use crate::Ctx;

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/.well-known/autoconfig/mail/config-v1.1.xml", get(autoconfig))
        .route("/mail/config-v1.1.xml", get(autoconfig))
        .route("/new", any(new_account))
        .route("/mxdeliv", any(mxdeliv::mxdeliv))
        .route("/cgi-bin/newemail.py", any(new_account))
        .route("/", get(index))
        .with_state(ctx)
}

pub async fn serve_https(ctx: Arc<Ctx>, conn: Conn) {
    serve_conn(router(ctx), conn).await
}

pub async fn serve_http(ctx: Arc<Ctx>, stream: TcpStream) {
    let app = Router::new().fallback(redirect).with_state(ctx);
    serve_conn(app, stream).await
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(app: Router, io: S) {
    let svc = TowerToHyperService::new(app);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).await {
        tracing::debug!("http connection ended: {e}");
    }
}

async fn redirect(State(ctx): State<Arc<Ctx>>, uri: Uri) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let to = format!("https://{}{}", ctx.cfg.mail_domain, path);
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)]).into_response()
}

async fn index(State(ctx): State<Arc<Ctx>>) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>{d}</title><h1>{d}</h1>\
         <p>A chatmail relay for Delta Chat. <a href=\"DCACCOUNT:https://{d}/new\">Get a chat profile</a></p>",
        d = ctx.cfg.mail_domain
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
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

async fn autoconfig(State(ctx): State<Arc<Ctx>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        autoconfig_xml(&ctx.cfg.mail_domain),
    )
        .into_response()
}

/// `/new`: fresh credentials as JSON. The account is created at first login.
async fn new_account(
    State(ctx): State<Arc<Ctx>>,
    method: axum::http::Method,
    _headers: HeaderMap,
) -> Response {
    let self_signed = matches!(ctx.cfg.tls_mode(), crate::config::TlsMode::SelfSigned);
    if method == axum::http::Method::GET && !self_signed {
        let to = format!("dcaccount:https://{}/new", ctx.cfg.mail_domain);
        return (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)]).into_response();
    }
    let email = format!(
        "{}@{}",
        invite::random_local(ctx.cfg.username_max_length),
        ctx.cfg.address_domain()
    );
    let password = invite::random_password();
    let mut v = serde_json::json!({ "email": email, "password": password });
    if self_signed {
        v["dclogin_url"] = invite::dclogin(&email, &password, None).into();
    }
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
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
}
