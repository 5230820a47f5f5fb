//! SMTP reply lines (basic and enhanced codes), without the trailing CRLF.
//!
//! Every reply the SMTP sessions send comes from here, so codes and texts can be reviewed in one
//! place. Texts that echo client input take it already sanitised (see `smtp::codec::printable`).
//! Upstream (Postfix + filtermail) wording is kept where clients or tests look at it.

// ---- connection ----

/// First line on every connection.
pub fn greeting(domain: &str) -> String {
    format!("220 {domain} ESMTP chatmail-box")
}

/// First line of the EHLO reply (the capability lines follow).
pub fn ehlo_first(domain: &str) -> String {
    format!("250-{domain}")
}

/// Reply to HELO (no extensions).
pub fn helo(domain: &str) -> String {
    format!("250 {domain}")
}

pub const BYE: &str = "221 2.0.0 Bye";
pub const TOO_MANY_ERRORS: &str = "421 4.7.0 Too many errors, closing connection";

pub fn timeout(domain: &str) -> String {
    format!("421 4.4.2 {domain} Error: timeout exceeded")
}

// ---- generic ----

pub const OK: &str = "250 2.0.0 OK";
pub const HELP: &str =
    "214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY QUIT";
pub const UNRECOGNIZED: &str = "500 5.5.1 Command unrecognized";
pub const NOT_IMPLEMENTED: &str = "502 5.5.1 Command not implemented";
pub const LINE_TOO_LONG: &str = "500 5.5.2 Line too long";
pub const UNSUPPORTED_PARAMETER: &str = "555 5.5.4 Unsupported option";

pub fn syntax(usage: &str) -> String {
    format!("501 5.5.4 Syntax: {usage}")
}

/// VRFY never tells whether an address exists (no enumeration).
pub fn vrfy(arg: &str) -> String {
    format!("252 2.0.0 {arg}")
}

// ---- HELO/EHLO ----

pub const HELO_INVALID: &str = "501 5.5.2 Helo command rejected: Invalid name";
pub const HELO_NOT_FQDN: &str = "504 5.5.2 Helo command rejected: need fully-qualified hostname";
pub const NEED_HELO: &str = "503 5.5.1 Error: send HELO/EHLO first";

// ---- STARTTLS ----

pub const READY_TLS: &str = "220 2.0.0 Ready to start TLS";
pub const TLS_ACTIVE: &str = "503 5.5.1 Error: TLS already active";
pub const MUST_STARTTLS: &str = "530 5.7.0 Must issue a STARTTLS command first";

// ---- AUTH ----

pub const AUTH_OK: &str = "235 2.7.0 Authentication successful";
pub const AUTH_FAILED: &str = "535 5.7.8 Authentication credentials invalid";
pub const AUTH_TEMPFAIL: &str = "454 4.7.0 Temporary authentication failure";
pub const AUTH_NEEDS_TLS: &str =
    "538 5.7.11 Encryption required for requested authentication mechanism";
pub const AUTH_NOT_ENABLED: &str = "503 5.5.1 Error: authentication not enabled";
pub const AUTH_ALREADY: &str = "503 5.5.1 Error: already authenticated";
pub const AUTH_IN_TRANSACTION: &str = "503 5.5.1 Error: MAIL transaction in progress";
pub const AUTH_MECHANISM: &str = "504 5.5.4 Unrecognized authentication type";
pub const AUTH_ABORTED: &str = "501 5.7.0 Authentication aborted";
pub const AUTH_BAD_BASE64: &str = "501 5.5.2 Cannot decode response";
/// Empty server challenge (AUTH PLAIN without an initial response).
pub const AUTH_CONTINUE: &str = "334 ";
/// base64("Username:")
pub const AUTH_USERNAME: &str = "334 VXNlcm5hbWU6";
/// base64("Password:")
pub const AUTH_PASSWORD: &str = "334 UGFzc3dvcmQ6";
pub const AUTH_REQUIRED: &str = "530 5.7.0 Authentication required";

// ---- MAIL ----

pub const SENDER_OK: &str = "250 2.1.0 OK";
pub const NESTED_MAIL: &str = "503 5.5.1 Error: nested MAIL command";
pub const BAD_SENDER_SYNTAX: &str = "501 5.1.7 Bad sender address syntax";
pub const SIZE_LIMIT: &str = "552 5.3.4 Message size exceeds fixed limit";

/// Submission rule 4: the envelope sender must contain exactly one `@`.
pub fn invalid_from(addr: &str) -> String {
    format!("500 5.1.7 Invalid from address <{addr}>")
}

// ---- RCPT ----

pub const RCPT_OK: &str = "250 2.1.5 OK";
pub const NEED_MAIL: &str = "503 5.5.1 Error: need MAIL command";
pub const BAD_RCPT_SYNTAX: &str = "501 5.1.3 Bad recipient address syntax";
/// Submission rule 2 (sender login mismatch); Postfix reports it at RCPT.
pub const SENDER_NOT_OWNED: &str = "553 5.7.1 Sender address rejected: not owned by user";
pub const TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Error: too many recipients";
pub const RELAY_DENIED: &str = "554 5.7.1 Relay access denied";
/// Temporary until federation (outbound delivery) exists; the client keeps retrying.
pub const REMOTE_NOT_YET: &str = "451 4.4.0 Delivery to other domains is not available yet";

pub fn user_unknown(addr: &str) -> String {
    format!("550 5.1.1 <{addr}>: Recipient address rejected: User unknown")
}

// ---- DATA ----

pub const NEED_RCPT: &str = "503 5.5.1 Error: need RCPT command";
pub const NO_VALID_RECIPIENTS: &str = "554 5.5.1 Error: no valid recipients";
pub const START_DATA: &str = "354 Start mail input; end with <CRLF>.<CRLF>";
pub const QUEUED: &str = "250 2.0.0 OK: queued";
pub const MESSAGE_TOO_BIG: &str = "552 5.3.4 Message exceeds maximum size";
pub const BARE_LINE_ENDING: &str = "550 5.6.11 bare LF/CR not allowed";
pub const DATA_LINE_TOO_LONG: &str = "552 5.6.0 Message line too long";
pub const LOCAL_ERROR: &str = "451 4.3.0 Local error in processing";
/// Every accepted recipient's account disappeared before the message could be stored.
/// The only (local) recipient's mailbox is full (relay-behaviour §10).
pub const QUOTA_EXCEEDED: &str = "552 5.2.2 Quota exceeded (mailbox for user is full)";
pub const RECIPIENTS_GONE: &str = "550 5.1.1 Recipient address rejected: User unknown";
