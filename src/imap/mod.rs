//! IMAP: 993 (implicit TLS), 143 (STARTTLS) and the `imap` ALPN on 443.
//!
//! Layout: [`codec`] frames and (de)serialises with imap-codec (pure); `session` owns the
//! connection, state and dispatch; `view` maps sequence numbers and computes updates; `folders`,
//! `fetch`, `search`, `update`, `idle` and `meta` implement the commands; `message` slices
//! RFC 5322 messages.
//!
//! Owns: the IMAP protocol. Must not know: sled keys, TLS certificates, SMTP.

pub mod codec;
mod fetch;
mod folders;
mod idle;
mod login;
mod message;
mod meta;
mod search;
mod session;
mod update;
mod view;

use std::sync::Arc;

use crate::net::Conn;
use crate::Ctx;

/// Serve one IMAP connection until the client leaves; logs one line at the end.
pub async fn serve(ctx: Arc<Ctx>, conn: Conn) {
    session::run(ctx, conn).await;
}
