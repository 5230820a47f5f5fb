//! SASL PLAIN and LOGIN payload decoding (RFC 4616, draft-murchison-sasl-login).
//!
//! Owns: base64 and PLAIN message parsing. Must not know: accounts, replies, sockets.

use base64::Engine;

/// Decode a base64 client response; a lone `=` is the empty response (RFC 4954).
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Parse a PLAIN message `authzid NUL authcid NUL passwd`. The authorization identity must be
/// empty or the authentication identity itself (no proxy logins).
pub fn plain(msg: &[u8]) -> Option<(String, String)> {
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authz), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let authz = std::str::from_utf8(authz).ok()?;
    let user = std::str::from_utf8(user).ok()?;
    let pass = std::str::from_utf8(pass).ok()?;
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(user) {
        return None;
    }
    Some((user.to_string(), pass.to_string()))
}

/// A LOGIN field (user name or password) as UTF-8.
pub fn login_field(msg: Vec<u8>) -> Option<String> {
    String::from_utf8(msg).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        assert_eq!(
            plain(b"\0u@x\0pw"),
            Some(("u@x".to_string(), "pw".to_string()))
        );
        assert_eq!(
            plain(b"u@x\0u@x\0pw"),
            Some(("u@x".to_string(), "pw".to_string()))
        );
        assert_eq!(plain(b"other\0u@x\0pw"), None);
        assert_eq!(plain(b"u@x\0pw"), None);
        assert_eq!(plain(b"\0u\0p\0w"), None);
        assert_eq!(decode("="), Some(vec![]));
        assert_eq!(decode("AHVAeABwdw=="), Some(b"\0u@x\0pw".to_vec()));
        assert_eq!(decode("!!"), None);
    }
}
