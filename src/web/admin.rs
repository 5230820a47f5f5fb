//! The admin pages of a configured relay: login (argon2 hash from `setup.toml`, rate limited),
//! logout, the status page (accounts, queue, storage, certificate expiry, DNS check, version,
//! recent errors) and the wizard at `/setup`, all behind the admin session. Pages without a
//! session redirect to the login (GET) or answer 401 (POST); every form needs the CSRF token.
//!
//! Templates are `web/admin_*.html`, `web/wizard*.html` and `web/message.html`, compiled in.
//! These pages send their own CSP, which differs from the public one only in
//! `form-action 'self'`.
//!
//! Owns: the admin routes and the status model. Must not know: sled keys.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use minijinja::{context, Environment, Value};

use super::session::{clear_cookie, csrf_ok, set_cookie, Admin, Form};
use super::wizard::{self, refusal, security_headers, see_other};
use super::{PeerIp, WebState};
use crate::Ctx;

/// The public CSP with form posts allowed to this origin.
pub const ADMIN_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                             base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const TEMPLATES: &[(&str, &str)] = &[
    (
        "admin_layout.html",
        include_str!("../../web/admin_layout.html"),
    ),
    (
        "admin_login.html",
        include_str!("../../web/admin_login.html"),
    ),
    (
        "admin_status.html",
        include_str!("../../web/admin_status.html"),
    ),
    ("message.html", include_str!("../../web/message.html")),
    ("wizard.html", include_str!("../../web/wizard.html")),
    ("wizard_dns.html", include_str!("../../web/wizard_dns.html")),
    (
        "wizard_done.html",
        include_str!("../../web/wizard_done.html"),
    ),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .expect("valid built-in template");
        }
        env
    })
}

/// Render an admin/wizard template.
pub(super) fn page(name: &str, ctx: Value) -> String {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("template {name}: {e}");
            String::from("<!doctype html><title>error</title><p>page unavailable</p>")
        }
    }
}

/// Admin and wizard routes of a configured relay (merged into `web::router`).
pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin", get(status))
        .route("/admin/", get(status))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/recheck", post(recheck))
        .route("/setup", get(setup_form).post(setup_post))
        .route("/setup/dns", get(setup_dns).post(setup_recheck))
        .route("/setup/finish", post(setup_finish))
}

fn html(status: StatusCode, body: String) -> Response {
    security_headers(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

async fn setup_form(State(s): State<WebState>, headers: HeaderMap) -> Response {
    security_headers(wizard::form_page(wizard::for_relay(&s.ctx), &headers))
}

async fn setup_post(State(s): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    security_headers(wizard::form_post(wizard::for_relay(&s.ctx), &headers, &body).await)
}

async fn setup_dns(State(s): State<WebState>, headers: HeaderMap) -> Response {
    security_headers(wizard::dns_page(wizard::for_relay(&s.ctx), &headers).await)
}

async fn setup_recheck(State(s): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    security_headers(wizard::dns_recheck(
        wizard::for_relay(&s.ctx),
        &headers,
        &body,
    ))
}

async fn setup_finish(State(s): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    security_headers(wizard::finish(wizard::for_relay(&s.ctx), &headers, &body).await)
}

fn admin_of(ctx: &Ctx) -> Arc<Admin> {
    Admin::of(&ctx.cfg.data_dir)
}

async fn login_page(State(s): State<WebState>, headers: HeaderMap) -> Response {
    let admin = admin_of(&s.ctx);
    if let Some((_, sess)) = admin.get(&headers) {
        if sess.admin {
            return security_headers(see_other("/admin"));
        }
        return html(StatusCode::OK, login_html(&s.ctx, &sess.csrf, None));
    }
    let (id, sess) = admin.start(false);
    let mut r = html(StatusCode::OK, login_html(&s.ctx, &sess.csrf, None));
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&id, true)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn login_html(ctx: &Ctx, csrf: &str, error: Option<&str>) -> String {
    page(
        "admin_login.html",
        context! { domain => &ctx.cfg.mail_domain, csrf, error },
    )
}

async fn login(
    State(s): State<WebState>,
    peer: Option<Extension<PeerIp>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admin = admin_of(&s.ctx);
    let ip = peer.and_then(|Extension(PeerIp(ip))| ip);
    if let Err(wait) = admin.login_allowed(ip) {
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            page(
                "message.html",
                context! { title => "Too many attempts",
                message => "Too many login attempts. Wait a minute and try again.",
                link => "/admin/login", link_text => "Back to the login" },
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let form = Form::parse(&body);
    let Some((old_id, sess)) = admin.get(&headers) else {
        return security_headers(refusal(
            StatusCode::FORBIDDEN,
            "Your browser sent no session cookie. Reload the login page and try again.",
        ));
    };
    if !csrf_ok(&sess, &form) {
        return security_headers(refusal(
            StatusCode::FORBIDDEN,
            "The form was stale or did not come from this page. Reload the page and try again.",
        ));
    }
    let hash = crate::setup::load(&s.ctx.cfg.data_dir)
        .ok()
        .flatten()
        .map(|st| st.admin_password_hash)
        .unwrap_or_default();
    let pw = form.get("password").to_string();
    let ok = !hash.is_empty()
        && tokio::task::spawn_blocking(move || crate::auth::verify_password(&pw, &hash))
            .await
            .unwrap_or(false);
    if !ok {
        tracing::info!("admin login failed");
        return html(
            StatusCode::UNAUTHORIZED,
            login_html(&s.ctx, &sess.csrf, Some("Wrong password.")),
        );
    }
    // A fresh session id after login (no fixation of the anonymous one).
    admin.end(&old_id);
    let (id, _) = admin.start(true);
    let mut r = security_headers(see_other("/admin"));
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&id, true)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The admin session of the request, or the answer for a visitor without one.
fn require_admin(
    ctx: &Ctx,
    headers: &HeaderMap,
    form: Option<&Form>,
) -> Result<String, Box<Response>> {
    let admin = admin_of(ctx);
    let r = match form {
        Some(f) => super::wizard::session_for_post(&admin, false, headers, f).map(|(id, _)| id),
        None => match admin.get(headers) {
            Some((id, s)) if s.admin => Ok(id),
            _ => Err(Box::new(see_other("/admin/login"))),
        },
    };
    r.map_err(|e| Box::new(security_headers(*e)))
}

async fn logout(State(s): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let id = match require_admin(&s.ctx, &headers, Some(&form)) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    admin_of(&s.ctx).end(&id);
    let mut r = security_headers(see_other("/admin/login"));
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(true)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn recheck(State(s): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Err(r) = require_admin(&s.ctx, &headers, Some(&form)) {
        return *r;
    }
    // A failed ACME order is retried now too (the owner may just have fixed DNS).
    s.ctx.acme.check_now();
    security_headers(see_other("/admin"))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

async fn status(State(s): State<WebState>, headers: HeaderMap) -> Response {
    let id = match require_admin(&s.ctx, &headers, None) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let Some((_, sess)) = admin_of(&s.ctx).get(&headers).filter(|(i, _)| *i == id) else {
        return security_headers(see_other("/admin/login"));
    };
    let ctx = s.ctx.clone();
    let c = ctx.clone();
    let numbers = tokio::task::spawn_blocking(move || {
        let st = &c.store;
        (
            st.account_count(),
            st.queue_len(),
            st.push_len(),
            st.blob_bytes(),
            st.index_size(),
            crate::auth::free_disk(&c.cfg.data_dir),
            crate::acme::read_cert(&c.tls.cert_pem_path)
                .ok()
                .map(|i| unix(i.not_after)),
        )
    })
    .await;
    let Ok((accounts, queue, push, blobs, index, free, not_after)) = numbers else {
        return security_headers(refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "status unavailable",
        ));
    };
    let cfg = &ctx.cfg;
    let acme = ctx.acme.status();
    let now = unix(SystemTime::now());
    let cert_days = not_after.map(|t| (t - now).div_euclid(86400));
    let dns = wizard::dns_rows(cfg).await;
    let (dns_rows, dns_timed_out) = dns.unwrap_or_default();
    let errors: Vec<Value> = crate::setup::errors::recent()
        .into_iter()
        .map(|e| {
            Value::from_serialize(serde_json::json!({
                "time": date(e.time), "level": e.level, "target": e.target, "message": e.message,
            }))
        })
        .collect();
    let setup = crate::setup::load(&cfg.data_dir).ok().flatten();
    let tls_mode = match cfg.tls_mode() {
        crate::config::TlsMode::SelfSigned => "self-signed",
        crate::config::TlsMode::Files { .. } => "certificate files",
        crate::config::TlsMode::Acme { .. } => "ACME",
    };
    let body = page(
        "admin_status.html",
        context! {
            domain => &cfg.mail_domain,
            version => env!("CARGO_PKG_VERSION"),
            csrf => &sess.csrf,
            lan_only => setup.as_ref().is_some_and(|s| s.lan_only) || cfg.ip_domain().is_some(),
            wizard => setup.is_some(),
            tls_mode,
            accounts,
            queue,
            push,
            storage_messages => super::pages::human_size(blobs),
            storage_index => super::pages::human_size(index),
            disk_free => free.map(super::pages::human_size),
            quota => super::pages::human_size(cfg.max_mailbox_size),
            cert_not_after => not_after.map(date),
            cert_days,
            cert_warn => cert_days.is_some_and(|d| d < 14),
            acme_enabled => ctx.acme.enabled(),
            acme_state => format!("{:?}", acme.state).to_lowercase(),
            acme_error => acme.last_error,
            acme_not_after => acme.cert_not_after.map(|t| date(unix(t))),
            dns_rows,
            dns_timed_out,
            ports => wizard::port_hint(cfg),
            errors,
            nocreate => cfg.nocreate || cfg.nocreate_file().exists(),
        },
    );
    html(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_admin_template_parses() {
        for (name, _) in super::TEMPLATES {
            super::env().get_template(name).unwrap();
        }
    }

    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01 00:00 UTC");
    }
}
