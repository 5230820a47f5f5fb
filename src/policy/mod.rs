//! Chatmail policy: only encrypted mail enters and leaves, nobody forges a sender, limits hold
//! (relay-behaviour §5, §6, §7). Pure functions over an envelope and message bytes; the SMTP
//! sessions (and later `/mxdeliv`) call them at the right stage and send the reply they return.
//!
//! Owns: the encryption check (MIME, armor, OpenPGP packet sequence via sequoia), the
//! Secure-Join and mailer-daemon exceptions, sender rules, the per-sender rate limit, recipient
//! and size limits, header cleanup, the policy's reply lines ([`replies`]) and decision counters
//! ([`PolicyStats`]). Must not know: sockets, the SMTP state machine, the store, DKIM (the
//! origin check of §7 step 6 belongs to the federation code), account records (inbound asks the
//! caller whether a recipient enforces end-to-end encryption).
//!
//! # Stages (submission, ports 465/587)
//!
//! | stage | call | reply on violation |
//! |---|---|---|
//! | MAIL | [`check_envelope_sender`] | `500 5.1.7 Invalid from address <..>` |
//! | RCPT (every one) | [`check_sender_login`] | `553 5.7.1 ...` |
//! | RCPT (before accepting one) | [`Policy::check_rcpt`]: [`check_recipient_count`], then on the transaction's first recipient [`RateLimiter::check`] | `452 4.5.3 ...` / `450 4.7.1: Too much mail from <addr>, rate limited until: <time>` |
//! | DATA (while reading) | [`check_size`] | `552 5.3.4 Message exceeds maximum size` |
//! | end of DATA | [`check_submission`] | 552, `500 ... Failed to parse message`, `500 5.7.1 Invalid FROM ...`, `523 5.7.1 Encryption Needed: Invalid Unencrypted Mail` |
//!
//! On acceptance the message comes back with the submission header cleanup applied
//! ([`clean_submission_headers`]); whoever stores it in a local mailbox applies
//! [`clean_delivery_headers`] as well (relay-behaviour §7 step 8 holds for local senders too).
//!
//! # Inbound (port 25, `/mxdeliv`)
//!
//! [`check_inbound`] at end of DATA: 552, `500 5.7.1 Invalid FROM header: ...`, 523. A header
//! From that differs from the envelope sender is not rejected: [`Accepted::null_sender`] tells
//! the caller to continue with `MAIL FROM:<>`. An accepted message still needs the origin check
//! (address literal / DKIM, §7 step 6) **on the original bytes** (the returned copy has its
//! `DKIM-Signature` fields removed by [`clean_delivery_headers`]).
//!
//! Every decision at end of DATA (and a rate-limit rejection at RCPT) logs one line at INFO,
//! never with an address; the decisions that reach the encryption check bump [`PolicyStats`].
//!
//! DKIM signing of outbound mail (§8.1) must sign the message returned here, after the cleanup:
//! a signature made before `Subject` is replaced would not verify.

mod encryption;
mod exceptions;
mod headers;
mod mime;
mod ratelimit;
pub mod replies;
mod stats;

pub use encryption::{check_encrypted, is_encrypted, Direction, NotEncrypted};
pub use exceptions::{is_mailer_daemon_report, is_securejoin};
pub use headers::{clean_delivery_headers, clean_submission_headers};
pub use ratelimit::RateLimiter;
pub use replies::Reply;
pub use stats::PolicyStats;

use std::sync::Arc;

use mail_parser::MessageParser;

use crate::config::Config;
use replies::*;
use stats::bump;

/// Most recipients of one message (Postfix `smtpd_recipient_limit`, advertised through the
/// METADATA key `maxsmtprecipients`).
pub const MAX_RECIPIENTS: usize = 1000;

/// The envelope of a message at end of DATA.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// `MAIL FROM` address without angle brackets; empty for the null sender `<>`.
    pub sender: &'a str,
    /// Accepted recipients.
    pub rcpts: &'a [String],
}

/// What kind of mail an accepted message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailClass {
    /// OpenPGP/MIME encrypted (§6.1–6.3).
    Encrypted,
    /// Legacy plaintext Secure-Join request (§6.5).
    SecureJoin,
    /// Inbound mailer-daemon report (§6.6).
    MailerDaemon,
    /// Inbound cleartext to recipients that do not enforce encryption (legacy accounts).
    Cleartext,
}

/// An accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The message after header cleanup: store or forward this one.
    pub message: Vec<u8>,
    /// Inbound only: continue with the null envelope sender `<>` (header From and envelope
    /// sender differ; no bounce must go to the envelope sender).
    pub null_sender: bool,
    pub class: MailClass,
}

/// The decision at end of DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept(Accepted),
    /// Send this reply and keep nothing of the message.
    Reject(Reply),
}

impl Verdict {
    /// The reply of a rejection.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Verdict::Reject(r) => Some(r),
            Verdict::Accept(_) => None,
        }
    }
}

// ---- MAIL / RCPT / DATA stage rules ----

/// Submission rule 4 (MAIL): the envelope sender has exactly one `@`.
pub fn check_envelope_sender(sender: &str) -> Result<(), Reply> {
    if sender.bytes().filter(|&b| b == b'@').count() == 1 {
        Ok(())
    } else {
        Err(Reply::new(policy_invalid_envelope_from(sender)))
    }
}

/// Submission rule 2: `MAIL FROM` equals the SASL login exactly (reported at RCPT).
pub fn check_sender_login(login: &str, sender: &str) -> Result<(), Reply> {
    if login == sender {
        Ok(())
    } else {
        Err(Reply::new(POLICY_SENDER_NOT_OWNED))
    }
}

/// Submission rule 5: may one more recipient be accepted when `accepted` already are?
pub fn check_recipient_count(accepted: usize) -> Result<(), Reply> {
    if accepted < MAX_RECIPIENTS {
        Ok(())
    } else {
        Err(Reply::new(POLICY_TOO_MANY_RECIPIENTS))
    }
}

/// Submission rule 6 / inbound step 7: the message (as received, after dot-unstuffing) is at
/// most `max` bytes. The session can call this while reading DATA with the running size.
pub fn check_size(size: u64, max: u64) -> Result<(), Reply> {
    if size <= max {
        Ok(())
    } else {
        Err(Reply::new(POLICY_MESSAGE_TOO_BIG))
    }
}

// ---- end of DATA ----

fn log_decision(direction: &'static str, decision: &'static str, reason: &'static str) {
    tracing::info!(direction, decision, reason, "policy decision");
}

/// The checks both directions start with: size, parse, a first header From. Returns the parsed
/// message and, if the header From differs from the envelope sender (case-insensitively), that
/// From; or the reason and reply of a rejection.
fn parse_with_from<'m>(
    msg: &'m [u8],
    sender: &str,
    cfg: &Config,
) -> Result<(mail_parser::Message<'m>, Option<String>), (&'static str, Reply)> {
    check_size(msg.len() as u64, cfg.max_message_size).map_err(|r| ("size", r))?;
    let Some(parsed) = MessageParser::default().parse(msg) else {
        return Err((
            "unparseable",
            Reply::new(policy_parse_failed("no header found")),
        ));
    };
    let mismatch = match mime::first_from(&parsed) {
        Err(e) => {
            return Err((
                "from-header",
                Reply::new(policy_invalid_from_header(e.reason())),
            ))
        }
        Ok(from) => (!from.eq_ignore_ascii_case(sender)).then(|| from.to_string()),
    };
    Ok((parsed, mismatch))
}

/// End of DATA on submission: size, parse, header From = envelope sender, encrypted or
/// Secure-Join. Accepts with [`clean_submission_headers`] applied.
pub fn check_submission(
    env: &Envelope<'_>,
    msg: &[u8],
    cfg: &Config,
    stats: &PolicyStats,
) -> Verdict {
    let reject = |reason, reply: Reply| {
        log_decision("outgoing", "reject", reason);
        Verdict::Reject(reply)
    };
    let parsed = match parse_with_from(msg, env.sender, cfg) {
        Ok((_, Some(from))) => {
            return reject(
                "from-mismatch",
                Reply::new(policy_invalid_from(&from, env.sender)),
            );
        }
        Ok((parsed, None)) => parsed,
        Err((reason, reply)) => return reject(reason, reply),
    };
    bump(&stats.filtered_outgoing_mail_count);
    let class = if encryption::check_parsed(&parsed, Direction::Outgoing).is_ok() {
        bump(&stats.outgoing_encrypted_mail_count);
        MailClass::Encrypted
    } else {
        bump(&stats.outgoing_unencrypted_mail_count);
        if !exceptions::is_securejoin_parsed(&parsed) {
            bump(&stats.rejected_unencrypted_mail_count);
            return reject("unencrypted", Reply::new(POLICY_ENCRYPTION_NEEDED));
        }
        MailClass::SecureJoin
    };
    log_decision("outgoing", "accept", class_name(class));
    Verdict::Accept(Accepted {
        message: clean_submission_headers(msg),
        null_sender: false,
        class,
    })
}

/// End of DATA on port 25 / `/mxdeliv`: size, parse, header From present, then encrypted,
/// Secure-Join or mailer-daemon report pass; other cleartext passes only if no recipient
/// enforces encryption. `enforces_e2ee(rcpt)` answers for one recipient address (true for
/// accounts created by this relay; imported accounts keep their own marker); recipients that
/// are not valid addresses count as enforcing. Accepts with [`clean_delivery_headers`] applied.
pub fn check_inbound(
    env: &Envelope<'_>,
    msg: &[u8],
    cfg: &Config,
    stats: &PolicyStats,
    enforces_e2ee: &dyn Fn(&str) -> bool,
) -> Verdict {
    let reject = |reason, reply: Reply| {
        log_decision("incoming", "reject", reason);
        Verdict::Reject(reply)
    };
    // Forwarding/SRS: a header From unlike the envelope sender is not rejected, but no bounce
    // may go to the envelope sender.
    let (parsed, null_sender) = match parse_with_from(msg, env.sender, cfg) {
        Ok((parsed, mismatch)) => (parsed, mismatch.is_some()),
        Err((reason, reply)) => return reject(reason, reply),
    };
    bump(&stats.filtered_incoming_mail_count);
    let class = if encryption::check_parsed(&parsed, Direction::Incoming).is_ok() {
        bump(&stats.incoming_encrypted_mail_count);
        MailClass::Encrypted
    } else if exceptions::is_securejoin_parsed(&parsed) {
        bump(&stats.incoming_encrypted_mail_count);
        MailClass::SecureJoin
    } else {
        bump(&stats.incoming_unencrypted_mail_count);
        if exceptions::is_mailer_daemon_parsed(&parsed) {
            bump(&stats.incoming_mailer_daemon_mail_count);
            MailClass::MailerDaemon
        } else if env
            .rcpts
            .iter()
            .any(|r| check_envelope_sender(r).is_err() || enforces_e2ee(r))
        {
            bump(&stats.rejected_unencrypted_mail_count);
            return reject("unencrypted", Reply::new(POLICY_ENCRYPTION_NEEDED));
        } else {
            MailClass::Cleartext
        }
    };
    log_decision(
        "incoming",
        if null_sender {
            "accept-null-sender"
        } else {
            "accept"
        },
        class_name(class),
    );
    Verdict::Accept(Accepted {
        message: clean_delivery_headers(msg),
        null_sender,
        class,
    })
}

fn class_name(c: MailClass) -> &'static str {
    match c {
        MailClass::Encrypted => "encrypted",
        MailClass::SecureJoin => "securejoin",
        MailClass::MailerDaemon => "mailer-daemon",
        MailClass::Cleartext => "cleartext",
    }
}

// ---- one object for the sessions ----

/// The policy with its state, one per process (share it through `Ctx` in an `Arc`).
pub struct Policy {
    cfg: Arc<Config>,
    pub limiter: RateLimiter,
    pub stats: PolicyStats,
}

impl Policy {
    pub fn new(cfg: Arc<Config>) -> Policy {
        let limiter = RateLimiter::new(cfg.max_user_send_per_minute, cfg.max_user_send_burst_size);
        Policy {
            cfg,
            limiter,
            stats: PolicyStats::new(),
        }
    }

    /// RCPT stage on submission, right before a recipient would be accepted: the recipient
    /// limit, and on the transaction's first recipient (`accepted == 0`) the rate limit for
    /// `sender`. A rejected first recipient consumes nothing, so calling it again for the next
    /// RCPT of the same transaction is correct.
    pub fn check_rcpt(&self, sender: &str, accepted: usize) -> Result<(), Reply> {
        check_recipient_count(accepted)?;
        if accepted == 0 {
            self.limiter.check(sender).inspect_err(|_| {
                log_decision("outgoing", "reject", "rate-limit");
            })?;
        }
        Ok(())
    }

    /// DATA stage: [`check_size`] with the configured maximum.
    pub fn check_size(&self, size: u64) -> Result<(), Reply> {
        check_size(size, self.cfg.max_message_size)
    }

    /// [`check_submission`] with this policy's configuration and counters.
    pub fn check_submission(&self, env: &Envelope<'_>, msg: &[u8]) -> Verdict {
        check_submission(env, msg, &self.cfg, &self.stats)
    }

    /// [`check_inbound`] with this policy's configuration and counters.
    pub fn check_inbound(
        &self,
        env: &Envelope<'_>,
        msg: &[u8],
        enforces_e2ee: &dyn Fn(&str) -> bool,
    ) -> Verdict {
        check_inbound(env, msg, &self.cfg, &self.stats, enforces_e2ee)
    }
}
