//! The SMTP session state machine: connection-level commands (greeting, EHLO/HELO, STARTTLS,
//! AUTH, RSET, NOOP, VRFY, QUIT), error counting and the command loop that makes pipelining
//! work. Mail transactions (MAIL, RCPT, DATA) are in `transaction.rs`.
//!
//! Owns: which command is allowed in which state, on which port. Must not know: byte-level
//! grammar (codec), sled, TLS certificates, message content rules (policy).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use smtp_proto::{
    EhloResponse, Request, AUTH_LOGIN, AUTH_PLAIN, EXT_8BIT_MIME, EXT_AUTH,
    EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS,
};

use super::codec::{self, CmdError, Frame, HeloProblem, LineFramer};
use super::io::{Io, IoError};
use super::sasl;
use crate::auth::AuthError;
use crate::net::Service;
use crate::replies::smtp as r;
use crate::Ctx;

/// Errors (syntax, sequence, failed AUTH, ...) before the connection is closed with 421.
const MAX_ERRORS: u32 = 20;
/// Failed AUTH attempts per connection before it is closed.
const MAX_AUTH_FAILURES: u32 = 5;

/// What the command loop does next.
pub(super) enum Flow {
    Continue,
    /// Close the connection; the text is the outcome logged for it.
    Close(&'static str),
}

/// An open mail transaction (after MAIL FROM).
pub(super) struct Txn {
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// Submission: the sender is the logged-in address (otherwise every RCPT gets 553).
    pub owned: bool,
    /// Accepted local recipients, canonical.
    pub rcpts: Vec<String>,
    /// Accepted recipients in other domains (submission only), as given with the domain
    /// lower-cased.
    pub remote: Vec<String>,
    /// RCPT commands in this transaction, accepted or not.
    pub attempts: usize,
}

pub(super) struct Session {
    pub ctx: Arc<Ctx>,
    pub io: Io,
    pub service: Service,
    pub peer_ip: Option<IpAddr>,
    framer: LineFramer,
    /// HELO/EHLO seen since the start or the last STARTTLS.
    pub greeted: bool,
    /// Authenticated address (submission).
    pub login: Option<String>,
    pub txn: Option<Txn>,
    errors: u32,
    auth_failures: u32,
    /// Messages accepted on this connection.
    pub messages: u32,
}

enum Sasl {
    Creds(String, String),
    Reply(&'static str),
    Io(IoError),
}

impl Session {
    pub fn new(ctx: Arc<Ctx>, io: Io, service: Service, peer_ip: Option<IpAddr>) -> Session {
        let framer = LineFramer::new(ctx.cfg.max_line_length);
        Session {
            ctx,
            io,
            service,
            peer_ip,
            framer,
            greeted: false,
            login: None,
            txn: None,
            errors: 0,
            auth_failures: 0,
            messages: 0,
        }
    }

    pub fn submission(&self) -> bool {
        self.service != Service::Mx
    }

    /// Run the session to its end; returns the outcome and the number of accepted messages.
    pub async fn run(mut self) -> (&'static str, u32) {
        let greeting = r::greeting(&self.ctx.cfg.mail_domain);
        self.io.reply(&greeting);
        let outcome = loop {
            let flow = match self.next_line().await {
                Ok(Some(line)) => self.command(&line).await,
                Ok(None) => self.error(r::LINE_TOO_LONG),
                Err(e) => self.io_failed(e).await,
            };
            if let Flow::Close(outcome) = flow {
                break outcome;
            }
            if self.io.out_full() {
                if let Err(e) = self.io.flush().await {
                    if let Flow::Close(outcome) = self.io_failed(e).await {
                        break outcome;
                    }
                }
            }
        };
        self.io.close().await;
        (outcome, self.messages)
    }

    /// The next command line from the buffered input, reading (and so flushing the queued
    /// replies) only when no complete line is buffered. `None`: the line was too long.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, IoError> {
        loop {
            let (n, found) = match self.framer.next(self.io.buffered()) {
                (n, Frame::Line(l)) => (n, Some(Some(l.to_vec()))),
                (n, Frame::TooLong) => (n, Some(None)),
                (n, Frame::NeedMore) => (n, None),
            };
            self.io.consume(n);
            match found {
                Some(line) => return Ok(line),
                None => self.io.fill().await?,
            }
        }
    }

    /// The connection broke or timed out.
    pub async fn io_failed(&mut self, e: IoError) -> Flow {
        match e {
            IoError::Eof => Flow::Close("closed by client"),
            IoError::Timeout => {
                let line = r::timeout(&self.ctx.cfg.mail_domain);
                self.io.reply(&line);
                Flow::Close("timeout")
            }
            IoError::Io(e) => {
                tracing::debug!(service = self.service.name(), "smtp i/o error: {e}");
                Flow::Close("i/o error")
            }
        }
    }

    /// Reply with an error that counts towards [`MAX_ERRORS`].
    pub fn error(&mut self, reply: &str) -> Flow {
        self.io.reply(reply);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.io.reply(r::TOO_MANY_ERRORS);
            return Flow::Close("too many errors");
        }
        Flow::Continue
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        let req = match codec::parse_command(line) {
            Ok(req) => req,
            Err(e) => {
                let reply: Cow<'static, str> = match e {
                    CmdError::Unknown => r::UNRECOGNIZED.into(),
                    CmdError::Syntax(usage) => r::syntax(usage).into(),
                    CmdError::BadSender => r::BAD_SENDER_SYNTAX.into(),
                    CmdError::BadRecipient => r::BAD_RCPT_SYNTAX.into(),
                    CmdError::Parameter => r::UNSUPPORTED_PARAMETER.into(),
                };
                return self.error(&reply);
            }
        };
        match req {
            Request::Ehlo { host } => self.hello(&host, true),
            Request::Helo { host } => self.hello(&host, false),
            Request::StartTls => self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => self.data().await,
            Request::Rset => {
                self.txn = None;
                self.io.reply(r::OK);
                Flow::Continue
            }
            Request::Noop { .. } => {
                self.io.reply(r::OK);
                Flow::Continue
            }
            Request::Vrfy { value } => {
                let line = r::vrfy(&codec::printable(&value));
                self.io.reply(&line);
                Flow::Continue
            }
            Request::Help { .. } => {
                self.io.reply(r::HELP);
                Flow::Continue
            }
            Request::Quit => {
                self.io.reply(r::BYE);
                Flow::Close("quit")
            }
            // CHUNKING is not advertised, so BDAT is refused like the other unoffered commands.
            Request::Expn { .. }
            | Request::Bdat { .. }
            | Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(r::NOT_IMPLEMENTED),
        }
    }

    fn hello(&mut self, host: &str, extended: bool) -> Flow {
        match codec::helo_problem(host) {
            Some(HeloProblem::Invalid) => return self.error(r::HELO_INVALID),
            // reject_non_fqdn_helo_hostname only on port 25: on submission the client is
            // authenticated anyway, and common client libraries (lettre, mail-send) greet with
            // the bare machine name.
            Some(HeloProblem::NotFqdn) if self.service == Service::Mx => {
                return self.error(r::HELO_NOT_FQDN)
            }
            _ => {}
        }
        self.txn = None;
        self.greeted = true;
        let domain = self.ctx.cfg.mail_domain.clone();
        if !extended {
            self.io.reply(&r::helo(&domain));
            return Flow::Continue;
        }
        let tls = self.io.is_tls();
        let mut ehlo = EhloResponse::new(domain.as_str());
        ehlo.capabilities =
            EXT_PIPELINING | EXT_8BIT_MIME | EXT_SMTP_UTF8 | EXT_SIZE | EXT_ENHANCED_STATUS_CODES;
        ehlo.size = usize::try_from(self.ctx.cfg.max_message_size).unwrap_or(usize::MAX);
        if !tls {
            ehlo.capabilities |= EXT_START_TLS;
        }
        if tls && self.submission() {
            ehlo.capabilities |= EXT_AUTH;
            ehlo.auth_mechanisms = AUTH_PLAIN | AUTH_LOGIN;
        }
        let mut out = Vec::with_capacity(256);
        // Writing into a Vec cannot fail.
        let _ = ehlo.write(&mut out);
        // smtp-proto's first line carries a joke text; ours is just the domain.
        let rest = out
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(&out[..0], |p| &out[p + 2..]);
        self.io.reply(&r::ehlo_first(&domain));
        self.io.reply_raw(rest);
        Flow::Continue
    }

    async fn starttls(&mut self) -> Flow {
        if self.io.is_tls() {
            return self.error(r::TLS_ACTIVE);
        }
        let cfg = match self.service {
            Service::Mx => self.ctx.tls.mx.clone(),
            _ => self.ctx.tls.client.clone(),
        };
        self.io.reply(r::READY_TLS);
        // RFC 3207: anything pipelined after STARTTLS is discarded, and the session starts over.
        match self.io.starttls(cfg).await {
            Ok(()) => {
                self.greeted = false;
                self.login = None;
                self.txn = None;
                Flow::Continue
            }
            Err(e) => {
                tracing::debug!(service = self.service.name(), "STARTTLS failed: {e:?}");
                Flow::Close("TLS handshake failed")
            }
        }
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        if !self.submission() {
            return self.error(r::AUTH_NOT_ENABLED);
        }
        if !self.io.is_tls() {
            return self.error(r::AUTH_NEEDS_TLS);
        }
        if !self.greeted {
            return self.error(r::NEED_HELO);
        }
        if self.login.is_some() {
            return self.error(r::AUTH_ALREADY);
        }
        if self.txn.is_some() {
            return self.error(r::AUTH_IN_TRANSACTION);
        }
        let outcome = match mechanism {
            AUTH_PLAIN => self.sasl_plain(initial).await,
            AUTH_LOGIN => self.sasl_login(initial).await,
            _ => return self.error(r::AUTH_MECHANISM),
        };
        let (user, pass) = match outcome {
            Sasl::Creds(u, p) => (u, p),
            Sasl::Reply(reply) if reply == r::AUTH_FAILED => return self.auth_failed(),
            Sasl::Reply(reply) => return self.error(reply),
            Sasl::Io(e) => return self.io_failed(e).await,
        };
        match self.ctx.auth.login(&user, &pass).await {
            Ok(addr) => {
                self.login = Some(addr);
                self.io.reply(r::AUTH_OK);
                Flow::Continue
            }
            // Wrong password and refused creation look the same from outside (no probing).
            Err(AuthError::Failed) | Err(AuthError::CreationRefused(_)) => self.auth_failed(),
            Err(e) => {
                tracing::warn!(service = self.service.name(), "authentication error: {e}");
                self.io.reply(r::AUTH_TEMPFAIL);
                Flow::Continue
            }
        }
    }

    fn auth_failed(&mut self) -> Flow {
        self.auth_failures += 1;
        if self.auth_failures >= MAX_AUTH_FAILURES {
            self.io.reply(r::AUTH_FAILED);
            self.io.reply(r::TOO_MANY_ERRORS);
            return Flow::Close("too many failed logins");
        }
        self.error(r::AUTH_FAILED)
    }

    /// Read one SASL client response after sending `challenge`.
    async fn sasl_response(&mut self, challenge: &str) -> Result<Vec<u8>, Sasl> {
        self.io.reply(challenge);
        let line = match self.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return Err(Sasl::Reply(r::LINE_TOO_LONG)),
            Err(e) => return Err(Sasl::Io(e)),
        };
        decode_response(&String::from_utf8_lossy(&line))
    }

    /// The first SASL response: the initial response given with AUTH, or else the answer to
    /// `prompt`.
    async fn first_response(&mut self, initial: &str, prompt: &str) -> Result<Vec<u8>, Sasl> {
        if initial.is_empty() {
            self.sasl_response(prompt).await
        } else {
            decode_response(initial)
        }
    }

    async fn sasl_plain(&mut self, initial: String) -> Sasl {
        let msg = match self.first_response(&initial, r::AUTH_CONTINUE).await {
            Ok(m) => m,
            Err(s) => return s,
        };
        match sasl::plain(&msg) {
            Some((user, pass)) => Sasl::Creds(user, pass),
            None => Sasl::Reply(r::AUTH_FAILED),
        }
    }

    async fn sasl_login(&mut self, initial: String) -> Sasl {
        let user = match self.first_response(&initial, r::AUTH_USERNAME).await {
            Ok(m) => m,
            Err(s) => return s,
        };
        let pass = match self.sasl_response(r::AUTH_PASSWORD).await {
            Ok(m) => m,
            Err(s) => return s,
        };
        match (sasl::login_field(user), sasl::login_field(pass)) {
            (Some(u), Some(p)) => Sasl::Creds(u, p),
            _ => Sasl::Reply(r::AUTH_FAILED),
        }
    }
}

/// A base64 SASL response, or `*` (cancel).
fn decode_response(text: &str) -> Result<Vec<u8>, Sasl> {
    if text.trim() == "*" {
        return Err(Sasl::Reply(r::AUTH_ABORTED));
    }
    sasl::decode(text).ok_or(Sasl::Reply(r::AUTH_BAD_BASE64))
}
