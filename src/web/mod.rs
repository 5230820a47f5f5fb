//! HTTP: autoconfig and (later) the onboarding pages.
//!
//! Owns: HTTP routes. Must not know: sled keys, IMAP/SMTP grammar.

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::net::Conn;
use crate::Ctx;

pub async fn serve_https(ctx: Arc<Ctx>, conn: Conn) {
    let _ = (ctx, conn);
}

pub async fn serve_http(ctx: Arc<Ctx>, stream: TcpStream) {
    let _ = (ctx, stream);
}
