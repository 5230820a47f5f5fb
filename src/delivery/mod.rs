//! Outbound delivery (relay-behaviour §9, §10): the queue runner that takes items from the
//! store's persistent outbound queue, resolves the destination, delivers over HTTPS
//! `/mxdeliv` or SMTP with STARTTLS, records per-recipient results, retries with backoff and
//! bounces permanent failures and expired messages to the sender.
//!
//! Owns: destination resolution, the outbound TLS client configurations and trust roots, the
//! `/mxdeliv` and SMTP clients, the "no-mxdeliv" memory, retry timing, bounce (DSN) generation,
//! the DNS zone printed by `chatmail-box dns`. Must not know: sled keys (only the store's queue
//! API), inbound sessions, IMAP.
//!
//! Entry points: [`spawn`] starts the runner (from `serve`); `Store::accept_message` queues
//! mail (the SMTP submission session calls it for remote recipients); [`inbound::check`] and
//! [`inbound::deliver`] are the inbound decision and delivery shared by port 25 and
//! `/mxdeliv`.

mod bounce;
mod https;
pub mod inbound;
mod resolve;
mod runner;
mod smtp;
pub mod tlsconf;
pub mod zone;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use bounce::{build_bounce, send_bounce};
pub use resolve::{addresses, build_resolver, resolve, Target};
pub use runner::spawn;

use crate::config::Config;

/// A failed delivery, with the reply line to log or put into a bounce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Retry later.
    Temp(String),
    /// Give up on the recipient and bounce.
    Perm(String),
}

impl Failure {
    pub fn text(&self) -> &str {
        match self {
            Failure::Temp(t) | Failure::Perm(t) => t,
        }
    }

    /// Classify an SMTP reply line by its first digit.
    pub fn from_reply(line: &str) -> Failure {
        if line.starts_with('5') {
            Failure::Perm(line.to_string())
        } else {
            Failure::Temp(line.to_string())
        }
    }
}

/// How long a host that accepted mail over SMTP is not tried over HTTPS (§9.3).
const NO_MXDELIV_FOR: Duration = Duration::from_secs(30 * 60);
/// Bound of the no-mxdeliv memory.
const NO_MXDELIV_CAP: usize = 10_000;

/// Shared state of outbound delivery, one per process.
pub struct Delivery {
    pub resolver: Arc<hickory_resolver::TokioResolver>,
    tls: tlsconf::ClientConfigs,
    no_mxdeliv: Mutex<HashMap<String, Instant>>,
    ehlo: String,
    smtp_port: u16,
    https_port: u16,
}

impl Delivery {
    pub fn new(
        cfg: &Config,
        resolver: hickory_resolver::TokioResolver,
    ) -> anyhow::Result<Delivery> {
        Ok(Delivery {
            resolver: Arc::new(resolver),
            tls: tlsconf::ClientConfigs::new(cfg.extra_root_certs.as_deref())?,
            no_mxdeliv: Mutex::new(HashMap::new()),
            ehlo: cfg.mail_domain.clone(),
            smtp_port: cfg.outbound_smtp_port,
            https_port: cfg.outbound_https_port,
        })
    }

    fn skip_https(&self, host: &str) -> bool {
        let Ok(mut m) = self.no_mxdeliv.lock() else {
            return false;
        };
        match m.get(host) {
            Some(t) if t.elapsed() < NO_MXDELIV_FOR => true,
            Some(_) => {
                m.remove(host);
                false
            }
            None => false,
        }
    }

    fn mark_no_https(&self, host: &str) {
        if let Ok(mut m) = self.no_mxdeliv.lock() {
            if m.len() >= NO_MXDELIV_CAP {
                m.retain(|_, t| t.elapsed() < NO_MXDELIV_FOR);
                if m.len() >= NO_MXDELIV_CAP {
                    m.clear();
                }
            }
            m.insert(host.to_string(), Instant::now());
        }
    }

    fn clear_no_https(&self, host: &str) {
        if let Ok(mut m) = self.no_mxdeliv.lock() {
            m.remove(host);
        }
    }

    /// Deliver one message to `rcpts` (all in `domain`). Returns one result per recipient, in
    /// order. Tries every MX: HTTPS `/mxdeliv` first (unless the host is in the no-mxdeliv
    /// memory), then SMTP.
    pub async fn deliver(
        &self,
        domain: &str,
        sender: &str,
        rcpts: &[String],
        body: bytes::Bytes,
    ) -> Vec<Result<&'static str, Failure>> {
        let all = |f: Failure| rcpts.iter().map(|_| Err(f.clone())).collect();
        let targets = match resolve(&self.resolver, domain).await {
            Ok(t) => t,
            Err(f) => return all(f),
        };
        let mut last = (String::from(domain), String::from("no address"));
        for t in &targets {
            let addrs = addresses(&self.resolver, t).await;
            if addrs.is_empty() {
                last = (t.host.clone(), "no address records".into());
                continue;
            }
            if !self.skip_https(&t.host) {
                for ip in &addrs {
                    match https::post(self, t, *ip, sender, rcpts, body.clone()).await {
                        Ok(()) => return rcpts.iter().map(|_| Ok("HTTPS")).collect(),
                        Err(e) => {
                            tracing::info!(
                                via = "https",
                                "delivery attempt failed: {}",
                                redact(&e.to_string())
                            );
                            // Another address may connect; a rejection or TLS failure ends
                            // HTTPS for this host. Either way SMTP is tried next.
                            if e.downcast_ref::<https::ConnectFailed>().is_none() {
                                break;
                            }
                        }
                    }
                }
            }
            for ip in &addrs {
                match smtp::send(self, t, *ip, sender, rcpts, &body).await {
                    smtp::Outcome::Done(per) => {
                        self.mark_no_https(&t.host);
                        return per.into_iter().map(|r| r.map(|()| "SMTP")).collect();
                    }
                    smtp::Outcome::Rejected(f) => return all(f),
                    smtp::Outcome::Connect(e) => {
                        self.clear_no_https(&t.host);
                        tracing::info!(
                            via = "smtp",
                            "delivery attempt failed: {}",
                            redact(&e.to_string())
                        );
                        last = (t.host.clone(), e);
                    }
                }
            }
        }
        all(Failure::Temp(format!(
            "421 Failed to connect to any mail server; last attempt to {}: {}",
            last.0, last.1
        )))
    }
}

/// Replace every word containing `@` (addresses echoed by remote servers) for INFO logs.
pub fn redact(s: &str) -> String {
    s.split(' ')
        .map(|w| if w.contains('@') { "<address>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_addresses() {
        assert_eq!(
            super::redact("550 5.1.1 <bob@x.org>: unknown"),
            "550 5.1.1 <address> unknown"
        );
    }

    #[test]
    fn reply_class() {
        use super::Failure;
        assert!(matches!(Failure::from_reply("550 no"), Failure::Perm(_)));
        assert!(matches!(Failure::from_reply("451 later"), Failure::Temp(_)));
    }
}
