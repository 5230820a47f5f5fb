//! Prometheus metrics: the upstream counter names (relay-behaviour §19) plus ours (delivery
//! latency, connections per protocol, queue depth, storage bytes, accounts), served as
//! OpenMetrics text on a private address (`metrics_listen`, off by default).
//!
//! Owns: the registry and the live instruments (histogram, connection counters), the HTTP
//! listener. Must not know: sled keys, protocols (it reads counters the store and the policy
//! keep, and the accept loop calls [`Metrics::connection`]).
//!
//! The upstream names are exported as gauges set at scrape time, because an OpenMetrics counter
//! would be renamed `<name>_total` and break existing dashboards.

use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::Ctx;

type Labels = Vec<(String, String)>;

/// Names of the upstream counters fed from the store (the policy's come from its snapshot).
const STORE_COUNTERS: [(&str, &str); 6] = [
    (
        "delivered_mail",
        "Messages stored into local mailboxes (per recipient)",
    ),
    (
        "quota_exceeded",
        "Local recipients refused because the mailbox was full",
    ),
    ("created_accounts", "Accounts created since start"),
    (
        "rejected_registrations",
        "First logins refused account creation (address, password, kill switch, resources)",
    ),
    (
        "quota_expire_runs",
        "Quota trimming runs that removed messages",
    ),
    (
        "quota_expire_removed_files",
        "Messages removed by quota trimming",
    ),
];

pub struct Metrics {
    registry: Registry,
    /// Upstream-named values, set from their sources on each scrape.
    scraped: Vec<(&'static str, Gauge<i64, AtomicI64>)>,
    delivered: Counter,
    latency: Histogram,
    connections: Family<Labels, Counter>,
    queue_depth: Gauge,
    storage: Family<Labels, Gauge>,
    accounts: Gauge,
    push: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut scraped = Vec::new();
        let policy_names = crate::policy::PolicyStats::default().snapshot();
        let names = STORE_COUNTERS
            .iter()
            .map(|(n, h)| (*n, *h))
            .chain(policy_names.iter().map(|(n, _)| (*n, "Policy decisions")));
        for (name, help) in names {
            let g = Gauge::<i64, AtomicI64>::default();
            registry.register(name, help, g.clone());
            scraped.push((name, g));
        }
        let delivered = Counter::default();
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "chatmail_delivery_seconds",
            "Time to store one accepted message (local mailboxes and queue)",
            latency.clone(),
        );
        let connections = Family::<Labels, Counter>::default();
        registry.register(
            "chatmail_connections",
            "Accepted connections per listener",
            connections.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "chatmail_queue_depth",
            "Outbound queue items (one per message and destination domain)",
            queue_depth.clone(),
        );
        let storage = Family::<Labels, Gauge>::default();
        registry.register(
            "chatmail_storage_bytes",
            "Bytes on disk (kind=messages|index|total)",
            storage.clone(),
        );
        let accounts = Gauge::default();
        registry.register("chatmail_accounts", "Accounts", accounts.clone());
        let push = Family::<Labels, Counter>::default();
        registry.register(
            "chatmail_push_attempts",
            "Push gateway attempts by outcome (delivered|token_gone|retry|dropped)",
            push.clone(),
        );
        Metrics {
            registry,
            scraped,
            delivered,
            latency,
            connections,
            queue_depth,
            storage,
            accounts,
            push,
        }
    }

    /// Count one push gateway attempt by its outcome label.
    pub fn push_outcome(&self, outcome: &str) {
        self.push
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }

    /// Count an accepted connection on the listener `service` (e.g. "imaps").
    pub fn connection(&self, service: &str) {
        self.connections
            .get_or_create(&vec![("protocol".to_string(), service.to_string())])
            .inc();
    }

    /// Record one delivery (called by the store's delivery observer).
    pub fn delivery(&self, seconds: f64, delivered: usize) {
        self.latency.observe(seconds);
        self.delivered.inc_by(delivered as u64);
    }

    /// Hook the store's delivery path to this instance.
    pub fn observe_store(self: &Arc<Self>, store: &crate::store::Store) {
        let m = self.clone();
        store.set_delivery_observer(Box::new(move |secs, delivered, _full| {
            m.delivery(secs, delivered)
        }));
    }

    fn set(&self, name: &str, v: u64) {
        if let Some((_, g)) = self.scraped.iter().find(|(n, _)| *n == name) {
            g.set(v.min(i64::MAX as u64) as i64);
        }
    }

    /// The OpenMetrics text for a scrape, with the scrape-time values refreshed from `ctx`.
    /// Walks the store's blob list; call it on a blocking thread.
    pub fn render(&self, ctx: &Ctx) -> String {
        let store = &ctx.store;
        self.set("delivered_mail", self.delivered.get());
        self.set("quota_exceeded", store.quota_exceeded_count());
        self.set("created_accounts", store.created_accounts_count());
        self.set("rejected_registrations", ctx.auth.rejected_registrations());
        let (runs, removed) = store.quota_trim_counts();
        self.set("quota_expire_runs", runs);
        self.set("quota_expire_removed_files", removed);
        for (name, v) in ctx.policy.stats.snapshot() {
            self.set(name, v);
        }
        self.queue_depth.set(store.queue_len() as i64);
        let (blobs, index) = (store.blob_bytes() as i64, store.index_size() as i64);
        for (kind, v) in [
            ("messages", blobs),
            ("index", index),
            ("total", blobs + index),
        ] {
            self.storage
                .get_or_create(&vec![("kind".to_string(), kind.to_string())])
                .set(v);
        }
        self.accounts.set(store.account_count() as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serve `GET /metrics` (any path) on `addr` until the task is dropped. Plain HTTP/1.1: the
/// address must be private (loopback or an internal network).
pub async fn serve(ctx: Arc<Ctx>, listener: tokio::net::TcpListener) {
    use axum::routing::get;
    let app = axum::Router::new().fallback(get(move || {
        let ctx = ctx.clone();
        async move {
            let c = ctx.clone();
            let body = tokio::task::spawn_blocking(move || c.metrics.render(&c))
                .await
                .unwrap_or_default();
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                body,
            )
        }
    }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics listener failed: {e}");
    }
}

/// Bind `metrics_listen` if configured and spawn the listener. Returns the bound address.
pub async fn spawn(ctx: &Arc<Ctx>) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = ctx.cfg.metrics_listen else {
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (metrics): {e}"))?;
    let bound = l.local_addr()?;
    tracing::info!(service = "metrics", addr = %bound, "listening");
    tokio::spawn(serve(ctx.clone(), l));
    Ok(Some(bound))
}
