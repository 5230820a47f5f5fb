//! Every SMTP reply line and IMAP response text, in one place: `smtp` and `imap` submodules.

pub mod imap;
pub mod smtp;
