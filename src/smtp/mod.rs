//! SMTP: MX on 25 and submission on 465/587.
//!
//! Owns: the SMTP session state machine. Must not know: sled keys, TLS certificates.

use std::net::IpAddr;
use std::sync::Arc;

use crate::net::{Conn, Service};
use crate::Ctx;

/// Serve one SMTP connection.
pub async fn serve(ctx: Arc<Ctx>, conn: Conn, service: Service, peer_ip: Option<IpAddr>) {
    let _ = (ctx, conn, service, peer_ip);
}
