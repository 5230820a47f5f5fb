//! chatmail-box: a chatmail relay (SMTP + IMAP + HTTPS) for Delta Chat in one binary.
//!
//! Module map (see ARCHITECTURE.md for invariants and the path of a message):
//! - [`config`]: the TOML configuration and its validation.
//! - [`store`]: durable accounts, mailboxes, bodies, metadata; the only module that knows sled.
//! - [`auth`]: login and create-on-login rules, password hashes, resource guards.
//! - [`tls`]: rustls configurations and certificates.
//! - [`acme`]: certificates from an ACME CA (HTTP-01), renewed in the background.
//! - [`net`]: listeners, connection limits, STARTTLS upgrade, ALPN routing on 443.
//! - [`smtp`]: SMTP codec and sessions (MX on 25, submission on 465/587).
//! - [`imap`]: IMAP codec and sessions (993/143).
//! - [`web`]: HTTP endpoints (autoconfig).
//! - [`replies`]: every SMTP reply line and IMAP response text in one place.
//! - [`invite`]: invite links and the terminal QR code.
//! - [`mdns`]: `chatmail-box.local` and the web services announced over mDNS (`mdns = true`).
//! - [`setup`]: the first-boot wizard's persisted choices and the serve loop that reloads them.
//! - [`dkim`]: DKIM keys, signing and strict inbound verification.
//! - [`delivery`]: the outbound queue runner, `/mxdeliv` and SMTP clients, bounces, DNS zone.
//! - [`expiry`]: the daily retention job (old/large mail, quota trimming, inactive accounts).
//! - [`metrics`]: Prometheus text on a private address.
//! - [`device`]: the appliance LED, watchdog and QR display (optional, inert without hardware).
//! - [`push`]: the push-notification worker (device tokens POSTed to the gateway).
//! - [`turn`]: the in-process TURN server on UDP `turn_port` (REST credentials from `push::turn`).

pub mod acme;
pub mod auth;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod device;
pub mod dkim;
pub mod expiry;
pub mod fsutil;
pub mod imap;
pub mod invite;
pub mod mdns;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod push;
pub mod replies;
pub mod setup;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod turn;
pub mod web;

use std::sync::Arc;

/// Everything a session needs, shared by all connections.
pub struct Ctx {
    pub cfg: Arc<config::Config>,
    pub store: store::Store,
    pub auth: auth::Auth,
    pub tls: Arc<tls::Tls>,
    /// ACME certificate state (`tls = "acme"`); `acme::spawn(ctx)` starts the renewal task.
    pub acme: Arc<acme::Acme>,
    /// Inbound policy (encryption, sender rules, rate limit) with its counters.
    pub policy: policy::Policy,
    /// DKIM signer (key generated lazily) and strict verifier.
    pub dkim: Arc<dkim::Dkim>,
    /// Outbound delivery; `delivery::spawn(ctx)` starts the queue runner.
    pub delivery: delivery::Delivery,
    /// Prometheus instruments (`metrics::spawn` serves them on `metrics_listen`).
    pub metrics: Arc<metrics::Metrics>,
    /// Notified when the relay must be rebuilt from its (changed) configuration; the serve loop
    /// (`setup::serve_loop`) waits on it.
    pub reload: tokio::sync::Notify,
}

impl Ctx {
    pub fn new(cfg: config::Config) -> anyhow::Result<Arc<Ctx>> {
        let cfg = Arc::new(cfg);
        let store = store::Store::open(&cfg.data_dir, cfg.index_cache_size)?;
        store.set_quota_limit(cfg.max_mailbox_size);
        let metrics = Arc::new(metrics::Metrics::new());
        metrics.observe_store(&store);
        let tls = Arc::new(tls::Tls::new(&cfg)?);
        let acme = Arc::new(acme::Acme::new(&cfg));
        let auth = auth::Auth::new(cfg.clone(), store.clone());
        let resolver = delivery::build_resolver(&cfg);
        let dkim = Arc::new(dkim::Dkim::new(&cfg, resolver.clone()));
        let delivery = delivery::Delivery::new(&cfg, resolver)?;
        let policy = policy::Policy::new(cfg.clone());
        Ok(Arc::new(Ctx {
            cfg,
            store,
            auth,
            tls,
            acme,
            policy,
            dkim,
            delivery,
            metrics,
            reload: tokio::sync::Notify::new(),
        }))
    }
}
