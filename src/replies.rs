//! Every SMTP reply line and IMAP response text, in one place.
