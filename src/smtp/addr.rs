//! Envelope address rules: which domain an address belongs to, its canonical local form
//! (lower case, `+suffix` removed), and sender ownership.
//!
//! Owns: address normalisation. Must not know: the store, replies, sockets.

/// Where a recipient goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    /// An address in our domain, canonical form (`user@domain`, lower case, no `+suffix`).
    Local(String),
    /// Another domain.
    Remote,
}

/// Classify an envelope recipient. `domain` is the relay's address domain (lower case).
/// The empty path (`<postmaster>` as smtp-proto reports it) counts as local `postmaster`.
pub fn destination(addr: &str, domain: &str) -> Destination {
    if addr.is_empty() {
        return Destination::Local(format!("postmaster@{domain}"));
    }
    let Some((local, dom)) = addr.rsplit_once('@') else {
        return Destination::Remote;
    };
    if !dom.eq_ignore_ascii_case(domain) {
        return Destination::Remote;
    }
    let base = local.split_once('+').map_or(local, |(b, _)| b);
    Destination::Local(format!("{}@{domain}", base.to_ascii_lowercase()))
}

/// An address with its domain part lower-cased (the local part is kept as given).
pub fn lower_domain(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((l, d)) => format!("{l}@{}", d.to_ascii_lowercase()),
        None => addr.to_string(),
    }
}

/// Submission rule 4: exactly one `@`, with something on both sides.
pub fn sender_syntax_ok(addr: &str) -> bool {
    matches!(addr.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'))
}

/// Submission rule 2: the envelope sender must be the logged-in address (case-insensitive).
pub fn owned_by(sender: &str, login: &str) -> bool {
    sender.eq_ignore_ascii_case(login)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = "_chat.test";
        assert_eq!(
            destination("Abc+tag@_CHAT.test", d),
            Destination::Local("abc@_chat.test".into())
        );
        assert_eq!(destination("abc@other.test", d), Destination::Remote);
        assert_eq!(destination("abc", d), Destination::Remote);
        assert_eq!(
            destination("x@[1.2.3.4]", "[1.2.3.4]"),
            Destination::Local("x@[1.2.3.4]".into())
        );
        assert!(sender_syntax_ok("a@b"));
        assert!(!sender_syntax_ok("a@b@c"));
        assert!(!sender_syntax_ok(""));
        assert!(!sender_syntax_ok("@b"));
        assert!(owned_by("Abc@X", "abc@x"));
    }
}
