//! SMTP: MX on 25 and submission on 465/587 (and 443 with ALPN `smtp`).
//!
//! Layout: `codec` (pure byte grammar: line framing, command parsing, DATA decoding),
//! `addr` and `sasl` (pure helpers), `io` (buffered socket I/O, timeouts, STARTTLS switch),
//! `session` (state machine, connection-level commands), `transaction` (MAIL/RCPT/DATA and
//! delivery), `policy` (end-of-DATA hook). Reply texts live in `replies::smtp`.
//!
//! Owns: the SMTP protocol and envelope policy. Must not know: sled keys, TLS certificates.
//! Privacy: nothing here logs client IPs, addresses or message content at info level, and no
//! `Received:` header is ever added.

mod addr;
pub mod codec;
mod io;
pub mod policy;
mod sasl;
mod session;
mod transaction;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::net::{Conn, Service};
use crate::Ctx;

/// A session waiting longer than this for the next command (or DATA bytes) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Serve one SMTP connection until QUIT, EOF, timeout or a fatal error.
pub async fn serve(ctx: Arc<Ctx>, conn: Conn, service: Service, peer_ip: Option<IpAddr>) {
    let io = io::Io::new(conn, IDLE_TIMEOUT);
    let (outcome, messages) = session::Session::new(ctx, io, service, peer_ip).run().await;
    tracing::info!(
        service = service.name(),
        outcome,
        messages,
        "smtp connection closed"
    );
}
