//! `/mxdeliv`: relay-to-relay delivery over HTTPS (relay-behaviour §9.5). The same inbound
//! policy as port 25 (§7): recipients only in our domain, the encryption / mailer-daemon
//! rules, strict DKIM, delivery header cleanup; unknown local users bounce (§10).
//!
//! Owns: the HTTP mapping of the inbound decision (405 / 400 / 413 / 200). Must not know: sled
//! keys, SMTP grammar, how DKIM works.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::policy::{Envelope, Verdict};
use crate::Ctx;

pub const METHOD_NOT_ALLOWED: &str = "Method Not Allowed";
pub const TOO_BIG: &str = "552 Message exceeds maximum size";
pub const OK: &str = "250 OK";
pub const NO_RECIPIENTS: &str = "554 5.5.1 Error: no valid recipients";
pub const RELAY_DENIED: &str = "554 5.7.1 Relay access denied";
pub const BAD_SENDER: &str = "501 5.1.7 Bad sender address syntax";
pub const LOCAL_ERROR: &str = "451 4.3.0 Local error in processing";

fn reply(status: StatusCode, line: impl Into<String>) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        line.into(),
    )
        .into_response()
}

fn header_values(h: &HeaderMap, name: &str) -> Result<Vec<String>, ()> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().map(|s| s.trim().to_string()).map_err(|_| ()))
        .collect()
}

fn printable(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 320
        && s.bytes().all(|b| (33..=126).contains(&b))
        && !s.contains(['<', '>'])
}

pub async fn mxdeliv(
    State(ctx): State<Arc<Ctx>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED);
    }
    // Envelope.
    let sender = match header_values(&headers, "x-mail-from") {
        Ok(v) if v.len() > 1 => return reply(StatusCode::BAD_REQUEST, BAD_SENDER),
        Ok(v) => v.into_iter().next().unwrap_or_default(),
        Err(()) => return reply(StatusCode::BAD_REQUEST, BAD_SENDER),
    };
    if !sender.is_empty() && (!printable(&sender) || sender.matches('@').count() != 1) {
        return reply(StatusCode::BAD_REQUEST, BAD_SENDER);
    }
    let Ok(raw_rcpts) = header_values(&headers, "x-mail-to") else {
        return reply(StatusCode::BAD_REQUEST, NO_RECIPIENTS);
    };
    if raw_rcpts.is_empty() {
        return reply(StatusCode::BAD_REQUEST, NO_RECIPIENTS);
    }
    if raw_rcpts.len() > crate::policy::MAX_RECIPIENTS {
        return reply(
            StatusCode::BAD_REQUEST,
            "452 4.5.3 Error: too many recipients",
        );
    }
    let domain = ctx.cfg.address_domain();
    let mut rcpts: Vec<String> = Vec::with_capacity(raw_rcpts.len());
    for r in raw_rcpts {
        let r = r.to_ascii_lowercase();
        let ok = printable(&r)
            && r.rsplit_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d == domain);
        if !ok {
            return reply(StatusCode::BAD_REQUEST, RELAY_DENIED);
        }
        if !rcpts.contains(&r) {
            rcpts.push(r);
        }
    }
    // Body, bounded.
    let max = ctx.cfg.max_message_size as usize;
    let msg = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, TOO_BIG),
    };
    // Policy (§7 steps 2–5, 7) on a blocking thread: parsing and the packet walk are CPU work.
    let c = ctx.clone();
    let (s2, r2, m2) = (sender.clone(), rcpts.clone(), msg.clone());
    let verdict = tokio::task::spawn_blocking(move || {
        let env = Envelope {
            sender: &s2,
            rcpts: &r2,
        };
        let store = c.store.clone();
        let enforces = move |addr: &str| match store.account(addr) {
            Ok(Some(a)) => a.enforce_e2ee,
            // Unknown users bounce later; treat them like new accounts.
            _ => true,
        };
        c.policy.check_inbound(&env, &m2, &enforces)
    })
    .await;
    let accepted = match verdict {
        Ok(Verdict::Accept(a)) => a,
        Ok(Verdict::Reject(r)) => {
            let line = r.line().to_string();
            let status = if line.starts_with("552") {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            let line = if status == StatusCode::PAYLOAD_TOO_LARGE {
                TOO_BIG.to_string()
            } else {
                line
            };
            return reply(status, line);
        }
        Err(_) => return reply(StatusCode::INTERNAL_SERVER_ERROR, LOCAL_ERROR),
    };
    // Origin check (§7 step 6) on the bytes as received. No client IP over HTTP: address
    // literal senders fail here and fall back to SMTP.
    if let Err(f) = ctx.dkim.verifier.verify_origin(&msg, None).await {
        tracing::info!(
            direction = "incoming",
            decision = "reject",
            reason = "dkim",
            "mxdeliv"
        );
        let status = if f.is_permanent() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return reply(status, f.reply());
    }
    let bounce_to = if accepted.null_sender {
        String::new()
    } else {
        sender.clone()
    };
    let store = ctx.store.clone();
    let (r3, message) = (rcpts.clone(), accepted.message);
    let stored =
        tokio::task::spawn_blocking(move || store.accept_message(&bounce_to, &r3, &[], &message))
            .await;
    let delivery = match stored {
        Ok(Ok((d, _))) => d,
        Ok(Err(e)) => {
            tracing::error!("mxdeliv: storing failed: {e}");
            return reply(StatusCode::INTERNAL_SERVER_ERROR, LOCAL_ERROR);
        }
        Err(_) => return reply(StatusCode::INTERNAL_SERVER_ERROR, LOCAL_ERROR),
    };
    tracing::info!(
        recipients = delivery.delivered.len(),
        unknown = delivery.missing.len(),
        "mxdeliv: message delivered"
    );
    if !delivery.missing.is_empty() && !accepted.null_sender && !sender.is_empty() {
        // §10: unknown local users bounce instead of being refused (no address probing).
        let failed: Vec<(String, String)> = delivery
            .missing
            .iter()
            .map(|a| {
                let line = format!("550 5.1.1 <{a}>: Recipient address rejected: User unknown");
                (a.clone(), line)
            })
            .collect();
        if let Err(e) = crate::delivery::send_bounce(&ctx, &sender, &failed, &msg).await {
            tracing::error!("mxdeliv: bounce for unknown users failed: {e}");
        }
    }
    reply(StatusCode::OK, OK)
}
