//! IMAP: 993 (implicit TLS) and 143 (STARTTLS).
//!
//! Owns: the IMAP session state machine. Must not know: sled keys, TLS certificates.

use std::sync::Arc;

use crate::net::Conn;
use crate::Ctx;

/// Serve one IMAP connection.
pub async fn serve(ctx: Arc<Ctx>, conn: Conn) {
    let _ = (ctx, conn);
}
