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

use crate::Ctx;

pub const METHOD_NOT_ALLOWED: &str = "Method Not Allowed";
pub const TOO_BIG: &str = "552 Message exceeds maximum size";
pub const OK: &str = "250 OK";
pub const NO_RECIPIENTS: &str = "554 5.5.1 Error: no valid recipients";
pub const RELAY_DENIED: &str = "554 5.7.1 Relay access denied";
pub const BAD_SENDER: &str = "501 5.1.7 Bad sender address syntax";

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

/// Read at most `max` bytes; `None` if the body is larger. The rest of an oversized body is
/// read and discarded (up to a bound), so the client sees the 413 instead of a reset.
async fn read_body(body: Body, max: usize) -> Option<bytes::Bytes> {
    use http_body_util::BodyExt;
    const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(30);
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    loop {
        let frame = if seen > max {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(f) => f,
                Err(_) => return None,
            }
        } else {
            body.frame().await
        };
        let Some(Ok(frame)) = frame else {
            break;
        };
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= max {
                buf.extend_from_slice(&data);
            } else if seen > max.saturating_mul(4) {
                return None;
            }
        }
    }
    (seen <= max).then(|| buf.freeze())
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
    // Body first, bounded: an HTTP/2 client gets no answer if the server replies before the
    // request body was read.
    let max = ctx.cfg.max_message_size as usize;
    let Some(msg) = read_body(body, max).await else {
        return reply(StatusCode::PAYLOAD_TOO_LARGE, TOO_BIG);
    };
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
    // Policy and origin check (§7 steps 2–7). No client IP over HTTP: address-literal
    // senders fail the origin check here and fall back to SMTP.
    let accepted = match crate::delivery::inbound::check(&ctx, &sender, &rcpts, &msg, None).await {
        Ok(a) => a,
        Err(line) if line.starts_with("552") => {
            return reply(StatusCode::PAYLOAD_TOO_LARGE, TOO_BIG)
        }
        Err(line) if line.starts_with('4') => return reply(StatusCode::SERVICE_UNAVAILABLE, line),
        Err(line) => return reply(StatusCode::BAD_REQUEST, line),
    };
    if let Err(line) =
        crate::delivery::inbound::deliver(&ctx, &sender, &rcpts, accepted, &msg).await
    {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, line);
    }
    reply(StatusCode::OK, OK)
}
