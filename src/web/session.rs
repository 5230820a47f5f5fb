//! Admin sessions for the wizard and the status page: a random session id in a cookie
//! (`HttpOnly; SameSite=Strict`, and `Secure` whenever the request came over TLS, i.e. always
//! once the relay is configured), a per-session CSRF token that every form carries, and the
//! login rate limit (governor GCRA: per client IP 5 attempts per minute, all clients together
//! 30 per minute).
//!
//! Sessions live in memory, one store per data directory, so they survive the in-process
//! reload after the wizard but not a restart (the owner logs in again).
//!
//! Owns: session ids, CSRF tokens, the login limiter. Must not know: pages, the store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::setup::Setup;

/// Name of the session cookie.
pub const COOKIE: &str = "cmb_session";
/// A session ends this long after it was created.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// At most this many sessions are kept; the oldest go first.
const MAX_SESSIONS: usize = 256;
/// Login attempts per client IP: 5 per minute, burst 5.
const LOGIN_PER_MINUTE: u32 = 5;
/// Login attempts of all clients together per minute.
const LOGIN_GLOBAL_PER_MINUTE: u32 = 30;

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    /// Logged in as the admin (only ever over TLS).
    pub admin: bool,
    /// The wizard's validated choices, waiting on the DNS page for "Finish".
    pub draft: Option<Setup>,
    created: Instant,
}

type Mw = NoOpMiddleware<<MonotonicClock as Clock>::Instant>;
type KeyedLimiter = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, MonotonicClock, Mw>;
type GlobalLimiter = RateLimiter<NotKeyed, InMemoryState, MonotonicClock, Mw>;

/// Sessions and login limiter of one relay (one data directory).
pub struct Admin {
    sessions: Mutex<HashMap<String, Session>>,
    login_ip: KeyedLimiter,
    login_all: GlobalLimiter,
}

impl Admin {
    fn new() -> Admin {
        let per_ip = NonZeroU32::new(LOGIN_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        let all = NonZeroU32::new(LOGIN_GLOBAL_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Admin {
            sessions: Mutex::new(HashMap::new()),
            login_ip: RateLimiter::dashmap_with_clock(Quota::per_minute(per_ip), MonotonicClock),
            login_all: RateLimiter::direct_with_clock(Quota::per_minute(all), MonotonicClock),
        }
    }

    /// The store of the relay in `data_dir` (created on first use, kept across reloads).
    pub fn of(data_dir: &Path) -> Arc<Admin> {
        static REGISTRY: Mutex<Vec<(PathBuf, Arc<Admin>)>> = Mutex::new(Vec::new());
        let key = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, a)) = reg.iter().find(|(p, _)| *p == key) {
            return a.clone();
        }
        let a = Arc::new(Admin::new());
        reg.push((key, a.clone()));
        a
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live session named by the request's cookie.
    pub fn get(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let mut s = self.lock();
        match s.get(&id) {
            Some(sess) if sess.created.elapsed() < LIFETIME => Some((id, sess.clone())),
            Some(_) => {
                s.remove(&id);
                None
            }
            None => None,
        }
    }

    /// A new session (anonymous unless `admin`); returns its id and CSRF token.
    pub fn start(&self, admin: bool) -> (String, Session) {
        let id = random_token();
        let sess = Session {
            csrf: random_token(),
            admin,
            draft: None,
            created: Instant::now(),
        };
        let mut s = self.lock();
        s.retain(|_, v| v.created.elapsed() < LIFETIME);
        while s.len() >= MAX_SESSIONS {
            // Anonymous sessions go first: a flood of login-page views cannot evict the admin.
            let oldest = s
                .iter()
                .min_by_key(|(_, v)| (v.admin, v.created))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => s.remove(&k),
                None => break,
            };
        }
        s.insert(id.clone(), sess.clone());
        (id, sess)
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.lock().get_mut(id) {
            f(s);
        }
    }

    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Count one login attempt; `Err(wait)` when over the limit.
    pub fn login_allowed(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        let now = MonotonicClock.now();
        if let Some(ip) = ip {
            self.login_ip
                .check_key(&ip.to_canonical())
                .map_err(|n| n.wait_time_from(now))?;
            self.login_ip.retain_recent();
        }
        self.login_all.check().map_err(|n| n.wait_time_from(now))
    }
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// `Set-Cookie` value for session `id`. `secure` is false only for the wizard over plain HTTP
/// on the LAN before setup.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let mut c = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let mut c = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The value of cookie `name` in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// Constant-time comparison of the form's CSRF token with the session's.
pub fn csrf_ok(sess: &Session, form: &Form) -> bool {
    let given = form.get("csrf").as_bytes();
    let want = sess.csrf.as_bytes();
    if given.len() != want.len() || want.is_empty() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// An `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The field's value, trimmed of surrounding whitespace unless it is a password.
    pub fn get(&self, k: &str) -> &str {
        self.0.get(k).map(|s| s.as_str()).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_cookies_and_csrf() {
        let a = Admin::new();
        let (id, s) = a.start(false);
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            format!("x=1; {COOKIE}={id}; y=2").parse().unwrap(),
        );
        let (got, sess) = a.get(&h).unwrap();
        assert_eq!(got, id);
        assert!(!sess.admin);
        let f = Form::parse(format!("csrf={}&a=b+c", s.csrf).as_bytes());
        assert!(csrf_ok(&sess, &f));
        assert_eq!(f.get("a"), "b c");
        assert!(!csrf_ok(&sess, &Form::parse(b"csrf=nope")));
        assert!(!csrf_ok(&sess, &Form::parse(b"")));
        a.end(&id);
        assert!(a.get(&h).is_none());
        assert!(set_cookie("x", true).ends_with("HttpOnly; SameSite=Strict; Secure"));
    }

    #[test]
    fn anonymous_sessions_are_evicted_before_the_admin() {
        let a = Admin::new();
        let (admin, _) = a.start(true);
        for _ in 0..MAX_SESSIONS * 2 {
            a.start(false);
        }
        let mut h = HeaderMap::new();
        h.insert("cookie", format!("{COOKIE}={admin}").parse().unwrap());
        assert!(a.get(&h).is_some_and(|(_, s)| s.admin));
        assert!(a.lock().len() <= MAX_SESSIONS);
    }

    #[test]
    fn login_attempts_are_limited_per_ip() {
        let a = Admin::new();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..LOGIN_PER_MINUTE {
            assert!(a.login_allowed(Some(ip)).is_ok());
        }
        assert!(a.login_allowed(Some(ip)).is_err());
        assert!(a.login_allowed(Some("192.0.2.10".parse().unwrap())).is_ok());
    }
}
