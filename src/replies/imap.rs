//! IMAP response texts and codes.
