//! The first-boot wizard and the admin pages over real TLS, with the serve loop of the binary
//! (`setup::serve_loop`) running in this process: setup mode serves the wizard on every path
//! (HTTPS and HTTP); completing it by POSTs switches to the configured relay without a restart;
//! afterwards wizard and status need the admin session (303 to the login / 401), every form
//! needs the CSRF token (403, nothing changes), the session cookie is `Secure; HttpOnly;
//! SameSite=Strict`, wrong passwords fail and logins are rate limited. LAN-only mode hands out
//! `dclogin:` invites with the LAN address and `ic=3`.
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use chatmail_box::config::Config;
use chatmail_box::net::{self, Service};
use chatmail_box::setup::{self, run::RELAY_SERVICES, Hooks, Listeners};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

const DOMAIN: &str = "_wizard.test";
const PASSWORD: &str = "correct horse battery";

/// A relay process-in-a-thread: the serve loop on pinned ephemeral ports, starting unconfigured.
struct BoxUnderTest {
    addrs: HashMap<Service, SocketAddr>,
    dir: tempfile::TempDir,
}

impl BoxUnderTest {
    fn start() -> BoxUnderTest {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Listeners::new();
        let mut addrs = HashMap::new();
        for svc in RELAY_SERVICES {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addrs.insert(*svc, l.local_addr().unwrap());
            listeners.pin(*svc, l);
        }
        let mut base = common::test_config(dir.path().to_path_buf());
        base.mail_domain = String::new();
        base.listen = "127.0.0.1".parse().unwrap();
        base.ports.https = addrs[&Service::Https].port();
        base.ports.http = addrs[&Service::Http].port();
        base.ports.imaps = addrs[&Service::Imaps].port();
        base.ports.submissions = addrs[&Service::Submissions].port();
        // No DNS server: the live check must give up quickly instead of hanging the page.
        base.dns_nameserver = Some("127.0.0.1:9".into());
        base.validate()
            .expect("setup mode is a valid configuration");
        std::thread::spawn(move || {
            let hooks = Hooks {
                shutdown: Box::new(|| Box::pin(std::future::pending())),
                runtime: Box::new(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                }),
                relay: Box::new(|ctx, l, reload| {
                    Box::pin(async move {
                        tokio::select! {
                            _ = net::serve(ctx, l) => {}
                            _ = reload => {}
                        }
                        Ok(())
                    })
                }),
            };
            let mut load = move || -> anyhow::Result<Config> {
                let mut c = base.clone();
                setup::overlay(&mut c)?;
                c.validate()?;
                Ok(c)
            };
            setup::serve_loop(&mut load, &mut listeners, &hooks).unwrap();
        });
        BoxUnderTest { addrs, dir }
    }

    fn https(&self) -> SocketAddr {
        self.addrs[&Service::Https]
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `name=value` of the session cookie this response sets.
    fn session_cookie(&self) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("cmb_session=") && !c.starts_with("cmb_session=;"))
            .map(|c| c.split(';').next().unwrap().to_string())
    }

    fn csrf(&self) -> String {
        let i = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[i + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection (TLS unless `plain`).
async fn request(
    addr: SocketAddr,
    plain: bool,
    method: &str,
    host: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Resp {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    let body = match form {
        Some(f) => {
            b = b.header("content-type", "application/x-www-form-urlencoded");
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(f.iter())
                .finish()
        }
        None => String::new(),
    };
    let req = b.body(Full::new(Bytes::from(body))).unwrap();
    let resp = if plain {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let tls = common::connector(&[b"http/1.1"])
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("response body in time")
        .unwrap()
        .to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(b: &BoxUnderTest, host: &str, path: &str, cookie: Option<&str>) -> Resp {
    request(b.https(), false, "GET", host, path, cookie, None).await
}

async fn post(
    b: &BoxUnderTest,
    host: &str,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> Resp {
    request(b.https(), false, "POST", host, path, cookie, Some(form)).await
}

/// Wait until the relay answers; it may be between generations.
async fn wait_for(b: &BoxUnderTest, host: &str, path: &str, want: &str) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tcp = TcpStream::connect(b.https()).await;
        if tcp.is_ok() {
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::spawn({
                    let addr = b.https();
                    let (host, path) = (host.to_string(), path.to_string());
                    async move { request(addr, false, "GET", &host, &path, None, None).await }
                }),
            )
            .await;
            if let Ok(Ok(r)) = r {
                if r.body.contains(want) {
                    return r;
                }
            }
        }
        assert!(Instant::now() < deadline, "relay never served {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_admin_headers(r: &Resp) {
    let csp = r.header("content-security-policy");
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("http"), "{csp}");
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.header("x-frame-options"), "DENY");
}

fn setup_form<'a>(csrf: &'a str, domain: &'a str, mode: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("mode", mode),
        ("domain", domain),
        ("password", PASSWORD),
        ("password2", PASSWORD),
        ("privacy_mail", "privacy@wizard.example"),
        ("privacy_postal", "Jane Doe\r\nBox Street 1"),
        ("tls", "self-signed"),
    ]
}

#[tokio::test]
async fn wizard_then_relay_then_admin_session_csrf_and_login_limit() {
    let b = BoxUnderTest::start();
    let setup_file = b.dir.path().join("setup.toml");
    // Setup mode: every path, HTTPS and HTTP, is the wizard.
    let first = wait_for(&b, "192.0.2.1", "/", "Set up your chatmail box").await;
    assert_admin_headers(&first);
    for path in ["/info.html", "/new", "/admin", "/some/thing?x=1"] {
        let r = get(&b, "box.local", path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.body.contains("Set up your chatmail box"), "{path}");
        assert!(
            r.body.contains("https://127.0.0.1/"),
            "the LAN address is shown"
        );
    }
    let r = request(
        b.addrs[&Service::Http],
        true,
        "GET",
        "box.local",
        "/",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Set up your chatmail box"));
    let c = r.header("set-cookie");
    assert!(!c.contains("Secure"), "plain-HTTP wizard cookie: {c}");
    assert_eq!(
        get(&b, "x", "/main.css", None).await.header("content-type"),
        "text/css; charset=utf-8"
    );

    // CSRF: no session 401, no or a wrong token 403; nothing is saved.
    let page = get(&b, "box.local", "/", None).await;
    let cookie = page.session_cookie().expect("wizard session cookie");
    let sc = page.header("set-cookie");
    assert!(
        sc.contains("HttpOnly") && sc.contains("SameSite=Strict") && sc.contains("Secure"),
        "{sc}"
    );
    let csrf = page.csrf();
    let good = setup_form(&csrf, DOMAIN, "domain");
    let r = post(&b, "box.local", "/setup", None, &good).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let no_token: Vec<_> = good.iter().filter(|(k, _)| *k != "csrf").copied().collect();
    let r = post(&b, "box.local", "/setup", Some(&cookie), &no_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut wrong = good.clone();
    wrong[0] = ("csrf", "forged");
    let r = post(&b, "box.local", "/setup", Some(&cookie), &wrong).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post(
        &b,
        "box.local",
        "/setup/finish",
        Some(&cookie),
        &[("csrf", "x")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!setup_file.exists());

    // Validation errors are shown with the form.
    let bad = setup_form(&csrf, "not a domain", "domain");
    let r = post(&b, "box.local", "/setup", Some(&cookie), &bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("is not a domain name"), "{}", r.body);
    let mut acme_test = setup_form(&csrf, DOMAIN, "domain");
    acme_test[7] = ("tls", "acme");
    let r = post(&b, "box.local", "/setup", Some(&cookie), &acme_test).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // The form, the DNS page (with a re-check), finish.
    let r = post(&b, "box.local", "/setup", Some(&cookie), &good).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.header("location"), "/setup/dns");
    let t0 = Instant::now();
    let dns = get(&b, "box.local", "/setup/dns", Some(&cookie)).await;
    assert_eq!(dns.status, StatusCode::OK);
    assert!(t0.elapsed() < Duration::from_secs(15), "DNS page too slow");
    assert!(
        dns.body.contains(&format!("MX    10 {DOMAIN}.")),
        "{}",
        dns.body
    );
    assert!(dns.body.contains("opendkim._domainkey"));
    assert!(dns.body.contains("Re-check DNS") && dns.body.contains("Forward these TCP ports"));
    let r = post(
        &b,
        "box.local",
        "/setup/dns",
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(!setup_file.exists(), "nothing saved before Finish");
    let r = post(
        &b,
        "box.local",
        "/setup/finish",
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Setup saved"));
    let saved = setup::load(b.dir.path()).unwrap().unwrap();
    assert_eq!(saved.mail_domain, DOMAIN);
    assert!(saved.admin_password_hash.starts_with("$argon2id$"));
    assert_eq!(saved.privacy_postal, "Jane Doe\nBox Street 1");

    // Same process, now the relay of the chosen domain.
    let index = wait_for(&b, DOMAIN, "/", &format!("Welcome to {DOMAIN}")).await;
    assert!(index.body.contains("dclogin:"));
    let privacy = get(&b, DOMAIN, "/privacy.html", None).await;
    assert!(privacy.body.contains("Box Street 1"));
    // The public pages keep their strict CSP.
    assert!(index
        .header("content-security-policy")
        .contains("form-action 'none'"));

    // Without a session: pages redirect to the login, forms answer 401.
    for path in ["/admin", "/setup", "/setup/dns"] {
        let r = get(&b, DOMAIN, path, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.header("location"), "/admin/login", "{path}");
    }
    for path in ["/setup", "/setup/finish", "/admin/recheck", "/admin/logout"] {
        let r = post(&b, DOMAIN, path, None, &good).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // The wizard's session (over TLS) is the admin's and survived the reload.
    let status = get(&b, DOMAIN, "/admin", Some(&cookie)).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_admin_headers(&status);
    for want in [
        "Accounts",
        "Outgoing queue",
        "Storage",
        "valid until",
        "Version",
        "Recent errors",
    ] {
        assert!(status.body.contains(want), "status page lacks {want}");
    }
    // An admin form without the token changes nothing.
    let mut other = setup_form("", "other.example.org", "domain");
    other.retain(|(k, _)| *k != "csrf");
    let r = post(&b, DOMAIN, "/setup", Some(&cookie), &other).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post(&b, DOMAIN, "/setup/finish", Some(&cookie), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(setup::load(b.dir.path()).unwrap().unwrap(), saved);
    let r = get(&b, DOMAIN, "/setup", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("leave empty to keep the current one"));

    // Login: cookie attributes, wrong password, wrong token, success with a new session id.
    let login = get(&b, DOMAIN, "/admin/login", None).await;
    assert_eq!(login.status, StatusCode::OK);
    assert_admin_headers(&login);
    let sc = login.header("set-cookie").to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(sc.contains(attr), "{sc}");
    }
    let lc = login.session_cookie().unwrap();
    let lcsrf = login.csrf();
    let r = post(
        &b,
        DOMAIN,
        "/admin/login",
        Some(&lc),
        &[("csrf", &lcsrf), ("password", "wrong password!")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("Wrong password"));
    assert!(r.session_cookie().is_none());
    let r = post(
        &b,
        DOMAIN,
        "/admin/login",
        Some(&lc),
        &[("csrf", "nope"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&b, DOMAIN, "/admin", Some(&lc)).await.status,
        StatusCode::SEE_OTHER
    );
    let r = post(
        &b,
        DOMAIN,
        "/admin/login",
        Some(&lc),
        &[("csrf", &lcsrf), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), "/admin");
    let admin = r.session_cookie().expect("new session after login");
    assert_ne!(admin, lc);
    let sc = r.header("set-cookie");
    assert!(
        sc.contains("Secure") && sc.contains("HttpOnly") && sc.contains("SameSite=Strict"),
        "{sc}"
    );
    let s = get(&b, DOMAIN, "/admin", Some(&admin)).await;
    assert_eq!(s.status, StatusCode::OK);
    // Logout needs the token too, then the session is gone.
    let acsrf = s.csrf();
    let r = post(&b, DOMAIN, "/admin/logout", Some(&admin), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post(
        &b,
        DOMAIN,
        "/admin/logout",
        Some(&admin),
        &[("csrf", &acsrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        get(&b, DOMAIN, "/admin", Some(&admin)).await.status,
        StatusCode::SEE_OTHER
    );

    // Rate limit: 5 attempts per minute per client address; then even the right password waits.
    let login = get(&b, DOMAIN, "/admin/login", None).await;
    let (lc, lcsrf) = (login.session_cookie().unwrap(), login.csrf());
    let mut codes = Vec::new();
    for _ in 0..8 {
        let r = post(
            &b,
            DOMAIN,
            "/admin/login",
            Some(&lc),
            &[("csrf", &lcsrf), ("password", "guess guess guess")],
        )
        .await;
        codes.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers.contains_key("retry-after"));
            break;
        }
    }
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    let r = post(
        &b,
        DOMAIN,
        "/admin/login",
        Some(&lc),
        &[("csrf", &lcsrf), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn lan_only_mode_hands_out_dclogin_with_the_lan_address() {
    let b = BoxUnderTest::start();
    let page = wait_for(&b, "127.0.0.1", "/", "LAN only, no domain").await;
    let (cookie, csrf) = (page.session_cookie().unwrap(), page.csrf());
    let mut form = setup_form(&csrf, "", "lan");
    form[7] = ("tls", "acme"); // ignored: LAN-only is always self-signed
    let r = post(&b, "127.0.0.1", "/setup", Some(&cookie), &form).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let dns = get(&b, "127.0.0.1", "/setup/dns", Some(&cookie)).await;
    assert!(dns.body.contains("no DNS records are needed"));
    let r = post(
        &b,
        "127.0.0.1",
        "/setup/finish",
        Some(&cookie),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let saved = setup::load(b.dir.path()).unwrap().unwrap();
    assert!(saved.lan_only);
    assert_eq!(saved.mail_domain, "127.0.0.1");
    assert_eq!(saved.tls, "self-signed");
    let index = wait_for(&b, "127.0.0.1", "/", "Welcome to 127.0.0.1").await;
    let imaps = b.addrs[&Service::Imaps].port();
    let want = format!("&amp;ih=127.0.0.1&amp;ip={imaps}&amp;is=ssl&amp;sh=127.0.0.1");
    assert!(index.body.contains(&want), "{}", index.body);
    assert!(index.body.contains("@[127.0.0.1]?p="));
    assert!(index.body.contains("&amp;ic=3"));
    let status = get(&b, "127.0.0.1", "/admin", Some(&cookie)).await;
    assert_eq!(status.status, StatusCode::OK);
    assert!(status.body.contains("(LAN only)"));
}
