//! Counters of policy decisions, with the upstream metric names (relay-behaviour §19) so the
//! metrics endpoint can export them unchanged for existing dashboards.

use std::sync::atomic::{AtomicU64, Ordering};

/// Atomic counters, incremented by the check functions of [`super`].
#[derive(Debug, Default)]
pub struct PolicyStats {
    /// Submitted messages that reached the encryption check (encrypted + unencrypted).
    pub filtered_outgoing_mail_count: AtomicU64,
    /// Submitted messages that are encrypted.
    pub outgoing_encrypted_mail_count: AtomicU64,
    /// Submitted messages that are not encrypted (Secure-Join requests included).
    pub outgoing_unencrypted_mail_count: AtomicU64,
    /// Messages rejected with 523, both directions.
    pub rejected_unencrypted_mail_count: AtomicU64,
    /// Inbound messages that reached the encryption check.
    pub filtered_incoming_mail_count: AtomicU64,
    /// Inbound messages that are encrypted (or Secure-Join requests).
    pub incoming_encrypted_mail_count: AtomicU64,
    /// Inbound messages that are not encrypted.
    pub incoming_unencrypted_mail_count: AtomicU64,
    /// Inbound cleartext mailer-daemon reports that were let through.
    pub incoming_mailer_daemon_mail_count: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl PolicyStats {
    pub fn new() -> PolicyStats {
        PolicyStats::default()
    }

    /// Every counter with its metric name, in a fixed order.
    pub fn snapshot(&self) -> [(&'static str, u64); 8] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "filtered_outgoing_mail_count",
                g(&self.filtered_outgoing_mail_count),
            ),
            (
                "outgoing_encrypted_mail_count",
                g(&self.outgoing_encrypted_mail_count),
            ),
            (
                "outgoing_unencrypted_mail_count",
                g(&self.outgoing_unencrypted_mail_count),
            ),
            (
                "rejected_unencrypted_mail_count",
                g(&self.rejected_unencrypted_mail_count),
            ),
            (
                "filtered_incoming_mail_count",
                g(&self.filtered_incoming_mail_count),
            ),
            (
                "incoming_encrypted_mail_count",
                g(&self.incoming_encrypted_mail_count),
            ),
            (
                "incoming_unencrypted_mail_count",
                g(&self.incoming_unencrypted_mail_count),
            ),
            (
                "incoming_mailer_daemon_mail_count",
                g(&self.incoming_mailer_daemon_mail_count),
            ),
        ]
    }

    /// One counter by its metric name.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}
