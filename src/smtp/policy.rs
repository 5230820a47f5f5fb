//! End-of-DATA policy hook: the single place where a complete message and its envelope are
//! judged before it is stored. The encryption requirement (relay-behaviour §5 rule 9, §7),
//! header From checks and header cleanup (Received, X-Mailer, ... removal) plug in here.
//!
//! Owns: the accept/reject decision and message rewriting. Must not know: sockets, the SMTP
//! state machine, storage.

use std::borrow::Cow;
use std::net::IpAddr;

use bytes::Bytes;

use crate::net::Service;
use crate::Ctx;

/// The envelope of a message at end of DATA.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub service: Service,
    /// `MAIL FROM` address; empty for the null sender `<>` (port 25 only).
    pub sender: &'a str,
    /// The authenticated address (submission only).
    pub login: Option<&'a str>,
    /// Accepted recipients, canonical, all local for now.
    pub rcpts: &'a [String],
    /// The client's address, for the origin check of address-literal senders (§7 step 6).
    /// Never store or log it.
    pub peer_ip: Option<IpAddr>,
}

/// What happens to the message.
#[derive(Debug)]
pub enum Verdict {
    /// Store this (possibly rewritten) message.
    Accept(Bytes),
    /// Reply with this line (from `replies::smtp`) and store nothing.
    Reject(Cow<'static, str>),
}

/// Judge a message. For now every message is accepted unchanged; the encryption policy and
/// header cleanup come with their own issue.
pub async fn check(_ctx: &Ctx, _env: &Envelope<'_>, message: Bytes) -> Verdict {
    Verdict::Accept(message)
}
