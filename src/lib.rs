//! chatmail-box: a chatmail relay (SMTP + IMAP + HTTPS) for Delta Chat in one binary.
//!
//! Module map (see ARCHITECTURE.md for invariants and the path of a message):
//! - [`config`]: the TOML configuration and its validation.
//! - [`store`]: durable accounts, mailboxes, bodies, metadata; the only module that knows sled.
//! - [`auth`]: login and create-on-login rules, password hashes, resource guards.
//! - [`tls`]: rustls configurations and certificates.
//! - [`net`]: listeners, connection limits, STARTTLS upgrade, ALPN routing on 443.
//! - [`smtp`]: SMTP codec and sessions (MX on 25, submission on 465/587).
//! - [`imap`]: IMAP codec and sessions (993/143).
//! - [`web`]: HTTP endpoints (autoconfig).
//! - [`replies`]: every SMTP reply line and IMAP response text in one place.
//! - [`invite`]: invite links and the terminal QR code.

pub mod auth;
pub mod config;
pub mod imap;
pub mod invite;
pub mod net;
pub mod policy;
pub mod replies;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod web;

use std::sync::Arc;

/// Everything a session needs, shared by all connections.
pub struct Ctx {
    pub cfg: Arc<config::Config>,
    pub store: store::Store,
    pub auth: auth::Auth,
    pub tls: Arc<tls::Tls>,
}

impl Ctx {
    pub fn new(cfg: config::Config) -> anyhow::Result<Arc<Ctx>> {
        let cfg = Arc::new(cfg);
        let store = store::Store::open(&cfg.data_dir, cfg.index_cache_size)?;
        let tls = Arc::new(tls::Tls::new(&cfg)?);
        let auth = auth::Auth::new(cfg.clone(), store.clone());
        Ok(Arc::new(Ctx {
            cfg,
            store,
            auth,
            tls,
        }))
    }
}
