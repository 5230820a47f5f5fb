//! The inbound decision shared by port 25 and `/mxdeliv` (relay-behaviour §7, §10): the
//! policy's encryption / mailer-daemon rules, then the origin check (address literal or strict
//! DKIM) on the bytes as received, then durable delivery with header cleanup; unknown local
//! users bounce to the sender instead of being refused.
//!
//! Protocol-neutral: callers map the returned reply line onto SMTP or HTTP.

use std::net::IpAddr;
use std::sync::Arc;

use crate::policy::{Accepted, Envelope, Verdict};
use crate::Ctx;

const LOCAL_ERROR: &str = "451 4.3.0 Local error in processing";

/// §7 steps 2–7 for a message to local `rcpts` (already checked to be in our domain).
/// `peer_ip` is the connecting client's address on port 25, `None` on `/mxdeliv`.
/// `Err` holds the complete reply line (`523 …`, `554 5.7.1 No DKIM signature found`, …).
pub async fn check(
    ctx: &Arc<Ctx>,
    sender: &str,
    rcpts: &[String],
    msg: &[u8],
    peer_ip: Option<IpAddr>,
) -> Result<Accepted, String> {
    let c = ctx.clone();
    let (s, r, m) = (sender.to_string(), rcpts.to_vec(), msg.to_vec());
    let verdict = tokio::task::spawn_blocking(move || {
        let env = Envelope {
            sender: &s,
            rcpts: &r,
        };
        let store = c.store.clone();
        let enforces = move |addr: &str| match store.account(addr) {
            Ok(Some(a)) => a.enforce_e2ee,
            // Unknown users bounce later; treat them like new accounts.
            _ => true,
        };
        c.policy.check_inbound(&env, &m, &enforces)
    })
    .await
    .map_err(|_| LOCAL_ERROR.to_string())?;
    let accepted = match verdict {
        Verdict::Accept(a) => a,
        Verdict::Reject(r) => return Err(r.line().to_string()),
    };
    if let Err(f) = ctx.dkim.verifier.verify_origin(msg, peer_ip).await {
        tracing::info!(
            direction = "incoming",
            decision = "reject",
            reason = "origin",
            "origin check failed"
        );
        return Err(f.reply());
    }
    Ok(accepted)
}

/// Store an accepted message (already cleaned by the policy) for `rcpts`, durably; then bounce
/// to `sender` for recipients without an account (unless the null sender applies). Returns
/// once the store has returned: only then may the caller answer 250 / 200.
pub async fn deliver(
    ctx: &Arc<Ctx>,
    sender: &str,
    rcpts: &[String],
    accepted: Accepted,
    original: &[u8],
) -> Result<(), String> {
    let store = ctx.store.clone();
    let r = rcpts.to_vec();
    let message = accepted.message;
    let stored = tokio::task::spawn_blocking(move || store.accept_message("", &r, &[], &message))
        .await
        .map_err(|_| LOCAL_ERROR.to_string())?;
    let delivery = match stored {
        Ok((d, _)) => d,
        Err(e) => {
            tracing::error!("inbound: storing failed: {e}");
            return Err(LOCAL_ERROR.to_string());
        }
    };
    tracing::info!(
        recipients = delivery.delivered.len(),
        unknown = delivery.missing.len(),
        "inbound message delivered"
    );
    if delivery.delivered.is_empty() && delivery.missing.is_empty() && !delivery.full.is_empty() {
        // Every recipient is over quota: refuse, so the sending server reports it.
        tracing::info!(recipients = delivery.full.len(), "inbound: quota exceeded");
        return Err(crate::replies::smtp::QUOTA_EXCEEDED.to_string());
    }
    if !accepted.null_sender && !sender.is_empty() {
        let mut failed: Vec<(String, String)> = delivery
            .missing
            .iter()
            .map(|a| {
                let line = format!("550 5.1.1 <{a}>: Recipient address rejected: User unknown");
                (a.clone(), line)
            })
            .collect();
        failed.extend(
            delivery
                .full
                .iter()
                .map(|a| (a.clone(), crate::replies::smtp::QUOTA_EXCEEDED.to_string())),
        );
        if !failed.is_empty() {
            if let Err(e) = super::send_bounce(ctx, sender, &failed, original).await {
                tracing::error!("inbound: bounce for undeliverable recipients failed: {e}");
            }
        }
    }
    Ok(())
}
