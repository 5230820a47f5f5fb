//! DKIM signing of outgoing mail and locally generated bounces (relay-behaviour §8.1):
//! rsa-sha256, `relaxed/simple`, no `l=`, the OpenDKIM default header set plus `Autocrypt` and
//! `Content-Type`, with the spec's over-signed list, and an optional Ed25519 signature.

use base64::Engine;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use ring::signature::{Ed25519KeyPair, RsaKeyPair};

use super::keys::{ed25519_public, rsa_spki, RingEd25519, RingRsa};

/// OpenDKIM's default signed header set (RFC 4871 §5.5 list), plus `Autocrypt`.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Content-Description",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Message-ID",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Autocrypt",
];

/// Signed one extra time, so that an added copy breaks the signature (§8.1).
pub const OVERSIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Autocrypt",
];

/// The `h=` list handed to mail-auth. mail-auth signs every present instance of a listed name
/// and appends every list entry it did not find, so a name listed twice ends up signed once
/// more than it occurs: exactly OpenDKIM's over-signing.
fn header_list() -> Vec<&'static str> {
    let mut h: Vec<&str> = SIGNED_HEADERS.to_vec();
    h.extend_from_slice(OVERSIGNED_HEADERS);
    h
}

/// Signs messages for one domain.
pub struct Signer {
    domain: String,
    rsa: DkimSigner<RingRsa, Done>,
    rsa_spki: Vec<u8>,
    ed25519: Option<(String, DkimSigner<RingEd25519, Done>, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Upstream: `554 Malformed data` when header and body cannot be split.
    #[error("554 5.6.0 Malformed data")]
    Malformed,
}

impl Signer {
    pub fn new(
        domain: &str,
        selector: &str,
        rsa: RsaKeyPair,
        ed25519: Option<(String, Ed25519KeyPair)>,
    ) -> Signer {
        let spki = rsa_spki(&rsa);
        let rsa = DkimSigner::from_key(RingRsa(rsa))
            .domain(domain)
            .selector(selector)
            .headers(header_list())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Simple);
        let ed25519 = ed25519.map(|(sel, kp)| {
            let public = ed25519_public(&kp);
            let s = DkimSigner::from_key(RingEd25519(kp))
                .domain(domain)
                .selector(sel.clone())
                .headers(header_list())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Simple);
            (sel, s, public)
        });
        Signer {
            domain: domain.to_string(),
            rsa,
            rsa_spki: spki,
            ed25519,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The signed message: `DKIM-Signature` fields prepended (Ed25519 first if configured, RSA
    /// on top), the original bytes unchanged after them.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut out = Vec::with_capacity(msg.len() + 1200);
        if let Some((_, s, _)) = &self.ed25519 {
            let sig = s.sign(msg).map_err(|_| SignError::Malformed)?;
            out.extend_from_slice(sig.to_header().as_bytes());
        }
        let sig = self.rsa.sign(msg).map_err(|_| SignError::Malformed)?;
        let mut all = sig.to_header().into_bytes();
        all.extend_from_slice(&out);
        all.extend_from_slice(msg);
        Ok(all)
    }

    /// TXT value of the RSA key record: `v=DKIM1;k=rsa;p=<base64 SPKI>;s=email;t=s`.
    pub fn rsa_record(&self) -> String {
        let p = base64::engine::general_purpose::STANDARD.encode(&self.rsa_spki);
        format!("v=DKIM1;k=rsa;p={p};s=email;t=s")
    }

    /// (selector, TXT value) of the Ed25519 key record, if configured.
    pub fn ed25519_record(&self) -> Option<(String, String)> {
        self.ed25519.as_ref().map(|(sel, _, public)| {
            let p = base64::engine::general_purpose::STANDARD.encode(public);
            (sel.clone(), format!("v=DKIM1;k=ed25519;p={p};s=email;t=s"))
        })
    }
}

/// Split a TXT value into character-strings of at most 255 bytes (zone-file syntax).
pub fn split_txt(value: &str) -> Vec<String> {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_255() {
        let v = "a".repeat(600);
        let parts = split_txt(&v);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [255, 255, 90]
        );
    }

    #[test]
    fn header_list_oversigns() {
        let h = header_list();
        assert_eq!(h.iter().filter(|x| **x == "From").count(), 2);
        assert_eq!(h.iter().filter(|x| **x == "Content-Type").count(), 1);
        assert_eq!(h.iter().filter(|x| **x == "Autocrypt").count(), 2);
    }
}
