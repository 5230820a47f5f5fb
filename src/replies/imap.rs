//! IMAP response texts and codes: everything the IMAP session says in more than one place.
//!
//! Texts must be non-empty and free of CR/LF (they become IMAP `text`).

/// Greeting text after `* OK [CAPABILITY ...]`.
pub const GREETING: &str = "chatmail-box ready";

/// Capabilities on a plaintext connection (port 143 before STARTTLS).
pub const CAPS_PLAIN: &[&str] = &["IMAP4rev1", "STARTTLS", "LOGINDISABLED"];

/// Capabilities once TLS is active and the client has logged in. Only what is implemented.
pub const CAPS_AUTHENTICATED: &[&str] = &[
    "IMAP4rev1",
    "IDLE",
    "MOVE",
    "UIDPLUS",
    "CONDSTORE",
    "QUOTA",
    "METADATA",
    "ID",
    "ENABLE",
    "LITERAL+",
    "UNSELECT",
    "XCHATMAIL",
    "XDELTAPUSH",
];

/// Extra capabilities offered over TLS before login.
pub const CAPS_LOGIN: &[&str] = &["AUTH=PLAIN", "SASL-IR"];

/// Our answer to `ID`.
pub const ID_NAME: &str = "chatmail-box";

// ---- response codes (atoms) that imap-types has no variant for ----
pub const CODE_PRIVACYREQUIRED: &str = "PRIVACYREQUIRED";
pub const CODE_AUTHENTICATIONFAILED: &str = "AUTHENTICATIONFAILED";
pub const CODE_UNAVAILABLE: &str = "UNAVAILABLE";
pub const CODE_NONEXISTENT: &str = "NONEXISTENT";
pub const CODE_ALREADYEXISTS: &str = "ALREADYEXISTS";
pub const CODE_CANNOT: &str = "CANNOT";
pub const CODE_LIMIT: &str = "LIMIT";
pub const CODE_SERVERBUG: &str = "SERVERBUG";

// ---- texts ----
pub const BYE_LOGOUT: &str = "Logging out";
pub const BYE_IDLE_TIMEOUT: &str = "Disconnected for inactivity";
pub const BYE_TOO_MANY_ERRORS: &str = "Too many invalid commands";
pub const BYE_TOO_MANY_AUTH_FAILURES: &str = "Too many authentication failures";
pub const BYE_LINE_TOO_LONG: &str = "Command line too long";
pub const BYE_LITERAL_TOO_BIG: &str = "Literal too big";
pub const BYE_UIDVALIDITY: &str = "Selected mailbox was replaced, UIDVALIDITY changed";
pub const LITERAL_READY: &str = "Ready";
pub const IDLING: &str = "idling";
pub const STILL_HERE: &str = "Still here";
pub const STARTTLS_BEGIN: &str = "Begin TLS negotiation now";
pub const LOGGED_IN: &str = "Logged in";
pub const AUTH_FAILED: &str = "Authentication failed";
pub const CREATION_REFUSED: &str = "Account creation is currently not possible, try again later";
pub const PRIVACY_REQUIRED: &str = "Use STARTTLS before logging in";
pub const AUTH_CANCELLED: &str = "Authentication cancelled";
pub const AUTH_MECHANISM: &str = "Unsupported authentication mechanism";
pub const AUTH_INVALID: &str = "Invalid SASL PLAIN response";
pub const SYNTAX_ERROR: &str = "Unknown command or syntax error";
pub const WRONG_STATE: &str = "Command not allowed in this state";
pub const ALREADY_TLS: &str = "TLS is already active";
pub const NOT_SUPPORTED: &str = "Not supported";
pub const TEMP_FAILURE: &str = "Temporary server failure, try again later";
pub const NO_MAILBOX: &str = "Mailbox doesn't exist";
pub const MAILBOX_EXISTS: &str = "Mailbox already exists";
pub const BAD_MAILBOX_NAME: &str = "Invalid mailbox name";
pub const TOO_MANY_MAILBOXES: &str = "Too many mailboxes";
pub const CANNOT_DELETE_INBOX: &str = "INBOX cannot be deleted";
pub const READ_ONLY: &str = "Mailbox is read-only";
pub const TOO_BIG: &str = "Message too big";
pub const OVER_QUOTA: &str = "Mailbox is full";
pub const UNSUPPORTED_FETCH: &str = "Unsupported FETCH item";
pub const UNSUPPORTED_SEARCH: &str = "Unsupported SEARCH key";
pub const BAD_CHARSET: &str = "Unsupported charset";
pub const METADATA_UNSUPPORTED: &str = "Unsupported metadata entry";
pub const QUOTA_NO_ROOT: &str = "No such quota root";
pub const LOGIN_FIRST: &str = "Log in first";
pub const IDLE_DONE_EXPECTED: &str = "Expected DONE";

/// `"<Command> completed"` texts for the tagged OK.
pub fn completed(command: &str) -> String {
    format!("{command} completed")
}

/// Tagged OK texts of METADATA as Dovecot words them (clients and tests match on them).
pub const SETMETADATA_DONE: &str = "Setmetadata completed";
pub const GETMETADATA_DONE: &str = "Getmetadata completed";
