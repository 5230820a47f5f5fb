//! The first-boot wizard. Before setup it is the whole site, on HTTPS (self-signed for the LAN
//! address) and plain HTTP; afterwards it lives at `/setup` behind the admin session.
//!
//! Steps: one form (domain or LAN-only mode, admin password, privacy contact, certificate mode),
//! then the DNS page (records from `delivery::zone`, checked live, a re-check button, the ports
//! to open), then "Finish", which writes `setup.toml` and reloads the relay in-process.
//! Every form carries the session's CSRF token; a POST without it changes nothing.
//!
//! Owns: the wizard's pages and form validation. Must not know: sled keys, the serve loop
//! (it only notifies the reload).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use minijinja::context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use super::admin::{page, ADMIN_CSP};
use super::session::{csrf_ok, set_cookie, Admin, Form, Session};
use crate::config::Config;
use crate::delivery::zone;
use crate::net::Service;
use crate::setup::{self, Setup};
use crate::Ctx;

/// Shortest admin password accepted.
pub const MIN_PASSWORD: usize = 10;
/// Longest free-text field accepted.
const MAX_FIELD: usize = 2000;
/// The DNS check gives up after this long (the page must not hang on a dead resolver).
const DNS_CHECK_TIMEOUT: Duration = Duration::from_secs(6);
/// Connections the wizard serves at once.
const MAX_CONNECTIONS: usize = 64;

/// How the wizard asks for a rebuild of the relay.
#[derive(Clone)]
pub(super) enum Reload {
    /// Setup mode: the serve loop waits on this.
    Setup(Arc<Notify>),
    /// A configured relay (`Ctx::reload`).
    Relay(Arc<Ctx>),
}

impl Reload {
    /// Notify shortly after the answer went out (the reload ends this connection).
    fn fire(self) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match self {
                Reload::Setup(n) => n.notify_one(),
                Reload::Relay(c) => c.reload.notify_one(),
            }
        });
    }
}

/// What one wizard request works with, in setup mode or on a configured relay.
pub(super) struct Wiz {
    /// The effective configuration now.
    pub cfg: Arc<Config>,
    /// The persisted choices (a configured relay set up by the wizard).
    pub current: Option<Setup>,
    pub admin: Arc<Admin>,
    /// Setup mode: no admin password exists yet, the wizard is open to the LAN.
    pub setup_mode: bool,
    /// The request came over TLS.
    pub secure: bool,
    pub lan_ip: IpAddr,
    pub reload: Reload,
}

/// The wizard's state in setup mode (no `Ctx` exists then).
#[derive(Clone)]
pub struct SetupSite {
    cfg: Arc<Config>,
    lan_ip: IpAddr,
    admin: Arc<Admin>,
    reload: Arc<Notify>,
    tls: Arc<rustls::ServerConfig>,
}

impl SetupSite {
    /// `cfg` is the effective config without a mail domain; `reload` is notified on "Finish".
    /// The HTTPS certificate is a self-signed one for the LAN address, kept in
    /// `<data_dir>/setup/tls/` (the relay's own certificate is made for its domain later).
    pub fn new(cfg: Config, reload: Arc<Notify>) -> anyhow::Result<SetupSite> {
        let lan_ip = setup::lan_ip(&cfg);
        let tls_cfg = Config {
            mail_domain: lan_ip.to_string(),
            data_dir: cfg.data_dir.join("setup"),
            tls: "self-signed".into(),
            tls_cert: None,
            tls_key: None,
            tls_external_cert_and_key: String::new(),
            ..cfg.clone()
        };
        let tls = crate::tls::Tls::new(&tls_cfg)?;
        Ok(SetupSite {
            admin: Admin::of(&cfg.data_dir),
            cfg: Arc::new(cfg),
            lan_ip,
            reload,
            tls: tls.https.clone(),
        })
    }

    /// The box's LAN address, as found when the site was set up (loopback when none).
    pub fn lan_ip(&self) -> IpAddr {
        self.lan_ip
    }

    /// Host part of the wizard's URL.
    pub fn lan_host(&self) -> String {
        match self.lan_ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        }
    }

    fn wiz(&self, secure: bool) -> Wiz {
        Wiz {
            cfg: self.cfg.clone(),
            current: None,
            admin: self.admin.clone(),
            setup_mode: true,
            secure,
            lan_ip: self.lan_ip,
            reload: Reload::Setup(self.reload.clone()),
        }
    }
}

#[derive(Clone)]
struct SetupState {
    site: SetupSite,
    secure: bool,
}

/// Accept loops of setup mode: TLS on the HTTPS listener, plain HTTP on the other; every path
/// is the wizard.
pub async fn serve_setup(site: SetupSite, listeners: Vec<(Service, TcpListener)>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for (svc, l) in listeners {
        let site = site.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    continue;
                };
                let site = site.clone();
                tokio::spawn(async move {
                    if svc == Service::Https {
                        let acc = tokio_rustls::TlsAcceptor::from(site.tls.clone());
                        let hs = tokio::time::timeout(Duration::from_secs(30), acc.accept(stream));
                        if let Ok(Ok(tls)) = hs.await {
                            super::serve_conn(setup_router(site, true), tls).await;
                        }
                    } else {
                        super::serve_conn(setup_router(site, false), stream).await;
                    }
                    drop(permit);
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn setup_router(site: SetupSite, secure: bool) -> Router {
    Router::new()
        .route("/main.css", get(super::css))
        .route("/logo.svg", get(super::logo))
        .fallback(setup_any)
        .layer(axum::middleware::from_fn(super::read_body_first))
        .with_state(SetupState { site, secure })
}

/// Setup mode: `POST /setup`, `GET|POST /setup/dns`, `POST /setup/finish`; everything else
/// shows the form.
async fn setup_any(State(st): State<SetupState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, super::MAX_BODY)
        .await
        .unwrap_or_default();
    let w = st.site.wiz(st.secure);
    let r = match (parts.method.clone(), parts.uri.path()) {
        (Method::POST, "/setup") => form_post(w, &parts.headers, &body).await,
        (Method::GET, "/setup/dns") => dns_page(w, &parts.headers).await,
        (Method::POST, "/setup/dns") => dns_recheck(w, &parts.headers, &body),
        (Method::POST, "/setup/finish") => finish(w, &parts.headers, &body).await,
        _ => form_page(w, &parts.headers),
    };
    security_headers(r)
}

/// The headers every wizard/admin response gets (the relay's `site` layer adds them on a
/// configured relay, but keeps this CSP, which allows posting forms to this origin).
pub(super) fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ADMIN_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

fn with_cookie(mut r: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// The session a page is shown with: the admin's (configured relay) or any (setup mode; one is
/// started if the browser has none). `Err` is the answer for a visitor without access.
fn session_for_page(
    w: &Wiz,
    headers: &HeaderMap,
) -> Result<(String, Session, Option<String>), Box<Response>> {
    match w.admin.get(headers) {
        Some((id, s)) if w.setup_mode || s.admin => Ok((id, s, None)),
        _ if !w.setup_mode => Err(Box::new(see_other("/admin/login"))),
        _ => {
            let (id, s) = w.admin.start(false);
            let c = set_cookie(&id, w.secure);
            Ok((id, s, Some(c)))
        }
    }
}

/// A form POST: the session (admin unless in setup mode) and its CSRF token. Without a session
/// 401, with a wrong token 403; nothing is changed either way.
pub(super) fn session_for_post(
    admin: &Admin,
    setup_mode: bool,
    headers: &HeaderMap,
    form: &Form,
) -> Result<(String, Session), Box<Response>> {
    let Some((id, s)) = admin.get(headers) else {
        return Err(Box::new(refusal(
            StatusCode::UNAUTHORIZED,
            "Please log in first.",
        )));
    };
    if !setup_mode && !s.admin {
        return Err(Box::new(refusal(
            StatusCode::UNAUTHORIZED,
            "Please log in first.",
        )));
    }
    if !csrf_ok(&s, form) {
        return Err(Box::new(refusal(
            StatusCode::FORBIDDEN,
            "The form was stale or did not come from this page. Reload the page and try again.",
        )));
    }
    Ok((id, s))
}

pub(super) fn refusal(status: StatusCode, why: &str) -> Response {
    let body = page(
        "message.html",
        context! { title => status.canonical_reason().unwrap_or("Error"), message => why,
        link => "/admin", link_text => "Back" },
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Values shown in the form: the draft, else the persisted choices, else defaults.
fn form_values(w: &Wiz, sess: &Session) -> Setup {
    if let Some(d) = &sess.draft {
        return d.clone();
    }
    if let Some(c) = &w.current {
        return c.clone();
    }
    Setup {
        tls: "acme".into(),
        ..Setup::default()
    }
}

fn render_form(w: &Wiz, sess: &Session, v: &Setup, errors: &[String]) -> String {
    page(
        "wizard.html",
        context! {
            setup_mode => w.setup_mode,
            csrf => &sess.csrf,
            lan_ip => w.lan_ip.to_string(),
            lan_ok => w.lan_ip.is_ipv4(),
            lan_only => v.lan_only,
            domain => if v.lan_only { "" } else { v.mail_domain.as_str() },
            privacy_mail => &v.privacy_mail,
            privacy_postal => &v.privacy_postal,
            tls => &v.tls,
            tls_cert => v.tls_cert.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            tls_key => v.tls_key.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            acme_email => &v.acme_email,
            password_required => w.setup_mode || w.current.is_none(),
            min_password => MIN_PASSWORD,
            errors => errors,
        },
    )
}

pub(super) fn form_page(w: Wiz, headers: &HeaderMap) -> Response {
    let (_, sess, cookie) = match session_for_page(&w, headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let v = form_values(&w, &sess);
    with_cookie(
        html(StatusCode::OK, render_form(&w, &sess, &v, &[])),
        cookie,
    )
}

pub(super) async fn form_post(w: Wiz, headers: &HeaderMap, body: &Bytes) -> Response {
    let form = Form::parse(body);
    let (id, sess) = match session_for_post(&w.admin, w.setup_mode, headers, &form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match validate(&w, &form).await {
        Ok(draft) => {
            w.admin.update(&id, |s| s.draft = Some(draft));
            see_other("/setup/dns")
        }
        Err((v, errors)) => html(
            StatusCode::UNPROCESSABLE_ENTITY,
            render_form(&w, &sess, &v, &errors),
        ),
    }
}

/// Check the form; `Ok` is the draft to show on the DNS page, `Err` the values to show again
/// with the reasons.
async fn validate(w: &Wiz, f: &Form) -> Result<Setup, (Setup, Vec<String>)> {
    let mut errors = Vec::new();
    let path = |k: &str| {
        let v = f.get(k).trim();
        (!v.is_empty()).then(|| std::path::PathBuf::from(v))
    };
    let lan_only = f.get("mode") == "lan";
    let mut v = Setup {
        mail_domain: f
            .get("domain")
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase(),
        lan_only,
        admin_password_hash: w
            .current
            .as_ref()
            .map(|c| c.admin_password_hash.clone())
            .unwrap_or_default(),
        privacy_mail: f.get("privacy_mail").trim().to_string(),
        privacy_postal: f.get("privacy_postal").trim().replace("\r\n", "\n"),
        tls: f.get("tls").to_string(),
        tls_cert: path("tls_cert"),
        tls_key: path("tls_key"),
        acme_email: f.get("acme_email").trim().to_string(),
    };
    if lan_only {
        match w.lan_ip {
            IpAddr::V4(ip) => v.mail_domain = ip.to_string(),
            IpAddr::V6(_) => errors.push(
                "LAN-only mode needs an IPv4 address on the home network; this box has none."
                    .into(),
            ),
        }
        v.tls = "self-signed".into();
    } else if !setup::valid_domain(&v.mail_domain) {
        errors.push(format!(
            "\u{201c}{}\u{201d} is not a domain name (e.g. chat.example.org).",
            v.mail_domain
        ));
    }
    if !setup::TLS_MODES.contains(&v.tls.as_str()) {
        errors.push("Choose how the relay gets its certificate.".into());
    }
    if v.tls == "acme" && v.mail_domain.starts_with('_') {
        errors.push(
            "Domains starting with _ are test domains: no public CA issues certificates for them. Choose a self-signed certificate.".into(),
        );
    }
    if v.tls == "files" && (v.tls_cert.is_none() || v.tls_key.is_none()) {
        errors.push("Give the paths of the certificate chain and of the key (PEM).".into());
    }
    if !v.privacy_mail.is_empty() && !v.privacy_mail.contains('@') {
        errors.push("The privacy contact must be an e-mail address.".into());
    }
    if [&v.privacy_mail, &v.privacy_postal, &v.acme_email]
        .iter()
        .any(|s| s.len() > MAX_FIELD)
    {
        errors.push("A field is too long.".into());
    }
    let pw = f.get("password");
    if pw.is_empty() {
        if v.admin_password_hash.is_empty() {
            errors.push(format!(
                "Choose an admin password (at least {MIN_PASSWORD} characters)."
            ));
        }
    } else if pw.chars().count() < MIN_PASSWORD {
        errors.push(format!(
            "The admin password needs at least {MIN_PASSWORD} characters."
        ));
    } else if pw != f.get("password2") {
        errors.push("The two passwords differ.".into());
    }
    if errors.is_empty() {
        let mut merged = (*w.cfg).clone();
        v.apply(&mut merged);
        if let Err(e) = merged.validate() {
            errors.push(format!("The configuration would not be valid: {e}"));
        } else if v.tls == "files" {
            if let Err(e) = crate::tls::Tls::new(&merged) {
                errors.push(format!("The certificate files do not load: {e}"));
            }
        }
    }
    if !errors.is_empty() {
        return Err((v, errors));
    }
    if !pw.is_empty() {
        let pw = pw.to_string();
        match tokio::task::spawn_blocking(move || crate::auth::hash_password(&pw)).await {
            Ok(Ok(h)) => v.admin_password_hash = h,
            _ => return Err((v, vec!["Could not hash the password.".into()])),
        }
    }
    Ok(v)
}

/// One row of the DNS table.
#[derive(serde::Serialize)]
pub(super) struct DnsRow {
    pub line: String,
    pub single: Option<String>,
    pub state: &'static str,
    pub required: bool,
    pub seen: Vec<String>,
}

/// The zone of `cfg` with the live state of each record. `None` for IP-only (LAN) relays.
pub(super) async fn dns_rows(cfg: &Config) -> Option<(Vec<DnsRow>, bool)> {
    if cfg.ip_domain().is_some() {
        return None;
    }
    let resolver = crate::delivery::build_resolver(cfg);
    let c = cfg.clone();
    let r2 = resolver.clone();
    let dkim = tokio::task::spawn_blocking(move || crate::dkim::Dkim::new(&c, r2).dns_records())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let z = zone::zone(
        &cfg.mail_domain,
        cfg.public_ipv4.map(Into::into),
        cfg.public_ipv6.map(Into::into),
        &dkim,
    );
    let mut set = tokio::task::JoinSet::new();
    for (i, r) in z.iter().enumerate() {
        let (res, r) = (resolver.clone(), r.clone());
        set.spawn(async move { (i, zone::check(&res, std::slice::from_ref(&r)).await) });
    }
    let mut states: Vec<Option<(zone::Check, Vec<String>)>> = vec![None; z.len()];
    let timed_out = tokio::time::timeout(DNS_CHECK_TIMEOUT, async {
        while let Some(Ok((i, mut res))) = set.join_next().await {
            if let Some((_, st, seen)) = res.pop() {
                states[i] = Some((st, seen));
            }
        }
    })
    .await
    .is_err();
    let rows = z
        .iter()
        .zip(states)
        .map(|(r, st)| DnsRow {
            line: r.line(),
            single: (r.rtype == "TXT" && r.value.len() > 255).then(|| r.single_string()),
            state: match st.as_ref().map(|s| s.0) {
                Some(zone::Check::Ok) => "ok",
                Some(zone::Check::Missing) => "missing",
                Some(zone::Check::Wrong) => "wrong",
                None => "unknown",
            },
            required: r.required,
            seen: st.map(|s| s.1).unwrap_or_default(),
        })
        .collect();
    Some((rows, timed_out))
}

/// The ports a relay needs reachable, for the hint on the DNS and status pages.
pub(super) fn port_hint(cfg: &Config) -> Vec<(u16, &'static str)> {
    let p = &cfg.ports;
    [
        (p.smtp, "SMTP from other mail servers"),
        (p.http, "HTTP (certificate requests, redirect)"),
        (p.https, "HTTPS, and IMAP/SMTP over 443"),
        (p.submissions, "SMTP submission (TLS)"),
        (p.submission, "SMTP submission (STARTTLS)"),
        (p.imaps, "IMAP (TLS)"),
        (p.imap, "IMAP (STARTTLS)"),
    ]
    .into_iter()
    .filter(|(port, _)| *port != 0)
    .collect()
}

pub(super) async fn dns_page(w: Wiz, headers: &HeaderMap) -> Response {
    let (_, sess, cookie) = match session_for_page(&w, headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(draft) = sess.draft.clone() else {
        return with_cookie(see_other("/setup"), cookie);
    };
    let mut merged = (*w.cfg).clone();
    draft.apply(&mut merged);
    let dns = dns_rows(&merged).await;
    let (rows, timed_out) = dns.unwrap_or_default();
    let body = page(
        "wizard_dns.html",
        context! {
            setup_mode => w.setup_mode,
            csrf => &sess.csrf,
            domain => &draft.mail_domain,
            lan_only => draft.lan_only,
            test_domain => draft.mail_domain.starts_with('_'),
            tls => &draft.tls,
            has_a => merged.public_ipv4.is_some() || merged.public_ipv6.is_some(),
            rows => rows,
            timed_out,
            lan_ip => w.lan_ip.to_string(),
            ports => port_hint(&merged),
        },
    );
    with_cookie(html(StatusCode::OK, body), cookie)
}

pub(super) fn dns_recheck(w: Wiz, headers: &HeaderMap, body: &Bytes) -> Response {
    let form = Form::parse(body);
    match session_for_post(&w.admin, w.setup_mode, headers, &form) {
        Ok(_) => see_other("/setup/dns"),
        Err(r) => *r,
    }
}

pub(super) async fn finish(w: Wiz, headers: &HeaderMap, body: &Bytes) -> Response {
    let form = Form::parse(body);
    let (id, sess) = match session_for_post(&w.admin, w.setup_mode, headers, &form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(draft) = sess.draft.clone() else {
        return see_other("/setup");
    };
    let cfg = w.cfg.clone();
    let d = draft.clone();
    let saved = tokio::task::spawn_blocking(move || {
        // A generated certificate for another name would be served on: make a new one.
        if d.tls == "self-signed" && d.mail_domain != cfg.mail_domain {
            let dir = cfg.data_dir.join("tls");
            let _ = std::fs::remove_file(dir.join("cert.pem"));
            let _ = std::fs::remove_file(dir.join("key.pem"));
        }
        setup::save(&cfg.data_dir, &d)
    })
    .await;
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!("wizard: {e}");
            return refusal(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
        Err(e) => return refusal(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    tracing::info!(domain = %draft.mail_domain, lan_only = draft.lan_only, tls = %draft.tls, "setup saved");
    // The owner who just chose the password stays logged in (over TLS only).
    w.admin.update(&id, |s| {
        s.draft = None;
        s.admin = w.secure;
    });
    let host = match draft.mail_domain.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => draft.mail_domain.clone(),
    };
    let https = w.cfg.ports.https;
    let origin = if https == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{https}")
    };
    w.reload.clone().fire();
    html(
        StatusCode::OK,
        page(
            "wizard_done.html",
            context! { setup_mode => w.setup_mode, domain => &draft.mail_domain, origin },
        ),
    )
}

/// A [`Wiz`] for a configured relay (routes in `admin.rs`).
pub(super) fn for_relay(ctx: &Arc<Ctx>) -> Wiz {
    Wiz {
        cfg: ctx.cfg.clone(),
        current: setup::load(&ctx.cfg.data_dir).ok().flatten(),
        admin: Admin::of(&ctx.cfg.data_dir),
        setup_mode: false,
        secure: true,
        lan_ip: setup::lan_ip(&ctx.cfg),
        reload: Reload::Relay(ctx.clone()),
    }
}
