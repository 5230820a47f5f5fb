//! Strict inbound DKIM verification (relay-behaviour §7 step 6, §8.2): at least one signature
//! that verifies and whose `d=` equals the From domain (case-insensitive, exact). Key records
//! come through a bounded LRU cache (1000 entries, TTL honoured); an entry is dropped when a
//! signature made with it fails to verify.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use mail_auth::common::verify::VerifySignature;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, Txt};

/// Why a message failed the origin check. [`DkimFailure::reply`] is the SMTP reply line
/// (without CRLF) for port 25; `/mxdeliv` sends the same line with HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkimFailure {
    /// No `DKIM-Signature` field at all.
    NoSignature,
    /// Signatures present, none valid and aligned with the From domain.
    NoValidSignature,
    /// The key lookup failed temporarily for every otherwise usable signature.
    TempError,
    /// No usable From address.
    NoFrom,
    /// From is an address literal that does not match the connecting IP.
    LiteralMismatch { literal: String, peer: String },
}

pub const NO_SIGNATURE: &str = "554 5.7.1 No DKIM signature found";
pub const NO_VALID_SIGNATURE: &str = "554 5.7.1 No valid DKIM signature found";
pub const TEMP_ERROR: &str = "451 4.7.5 DKIM key lookup failed, try again later";

impl DkimFailure {
    pub fn reply(&self) -> String {
        match self {
            DkimFailure::NoSignature => NO_SIGNATURE.into(),
            DkimFailure::NoValidSignature => NO_VALID_SIGNATURE.into(),
            DkimFailure::TempError => TEMP_ERROR.into(),
            DkimFailure::NoFrom => "500 5.7.1 Invalid FROM header: no From address".into(),
            DkimFailure::LiteralMismatch { literal, peer } => {
                format!(
                    "500 Invalid FROM domain literal: {literal} does not match origin IP {peer}"
                )
            }
        }
    }

    /// Permanent (5xx) or temporary (4xx).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DkimFailure::TempError)
    }
}

impl std::fmt::Display for DkimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reply())
    }
}

/// Capacity of the key record cache.
pub const KEY_CACHE_SIZE: usize = 1000;
/// Longest time a key record is kept, whatever its TTL.
const KEY_CACHE_MAX_AGE: Duration = Duration::from_secs(3600);
/// Key lookup timeout (§8.2).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(60);

struct Entry {
    value: Txt,
    expires: Instant,
    used: u64,
}

/// A bounded LRU cache of DKIM key records.
pub struct KeyCache {
    inner: Mutex<(HashMap<Box<str>, Entry>, u64)>,
    cap: usize,
}

impl KeyCache {
    pub fn new(cap: usize) -> KeyCache {
        KeyCache {
            inner: Mutex::new((HashMap::new(), 0)),
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.0.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn drop_key(&self, name: &str) {
        if let Ok(mut g) = self.inner.lock() {
            g.0.remove(name);
        }
    }
}

impl mail_auth::ResolverCache<Box<str>, Txt> for KeyCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut g = self.inner.lock().ok()?;
        g.1 += 1;
        let tick = g.1;
        let now = Instant::now();
        let e = g.0.get_mut(name)?;
        if e.expires <= now {
            g.0.remove(name);
            return None;
        }
        e.used = tick;
        Some(e.value.clone())
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut g = self.inner.lock().ok()?;
        g.0.remove(name).map(|e| e.value)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        g.1 += 1;
        let tick = g.1;
        let now = Instant::now();
        let expires = valid_until.min(now + KEY_CACHE_MAX_AGE);
        if !g.0.contains_key(&key) && g.0.len() >= self.cap {
            g.0.retain(|_, e| e.expires > now);
            if g.0.len() >= self.cap {
                let oldest =
                    g.0.iter()
                        .min_by_key(|(_, e)| e.used)
                        .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    g.0.remove(&k);
                }
            }
        }
        g.0.insert(
            key,
            Entry {
                value,
                expires,
                used: tick,
            },
        );
    }
}

/// The inbound DKIM verifier, one per process.
pub struct Verifier {
    auth: MessageAuthenticator,
    cache: KeyCache,
}

/// The domain of the first From address of a raw message (lowercase), if any.
pub fn from_domain(msg: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::default().parse_headers(msg)?;
    let addr = parsed.from()?.first()?.address()?.to_string();
    let (_, d) = addr.rsplit_once('@')?;
    (!d.is_empty()).then(|| d.to_ascii_lowercase())
}

impl Verifier {
    pub fn new(resolver: TokioResolver) -> Verifier {
        Verifier {
            auth: MessageAuthenticator(resolver),
            cache: KeyCache::new(KEY_CACHE_SIZE),
        }
    }

    /// Number of cached key records (for tests and metrics).
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// The origin check of §7 step 6 for port 25: an address-literal From domain must equal
    /// `peer_ip` (no DKIM then); any other From domain needs a valid aligned DKIM signature.
    /// `peer_ip` is `None` on `/mxdeliv` (no client IP over HTTP): literal senders then fail.
    pub async fn verify_origin(
        &self,
        msg: &[u8],
        peer_ip: Option<IpAddr>,
    ) -> Result<(), DkimFailure> {
        let Some(domain) = from_domain(msg) else {
            return Err(DkimFailure::NoFrom);
        };
        if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let lit_ip = lit
                .strip_prefix("ipv6:")
                .unwrap_or(lit)
                .parse::<IpAddr>()
                .ok();
            let peer = peer_ip.map(|p| p.to_canonical());
            return match (lit_ip, peer) {
                (Some(a), Some(b)) if a == b => Ok(()),
                (_, p) => Err(DkimFailure::LiteralMismatch {
                    literal: lit.to_string(),
                    peer: p.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into()),
                }),
            };
        }
        self.verify_aligned(msg, &domain).await
    }

    /// Strict verification: Ok iff some signature verifies and its `d=` equals `from_domain`
    /// (case-insensitive) and it signs `From`.
    pub async fn verify_aligned(&self, msg: &[u8], from_domain: &str) -> Result<(), DkimFailure> {
        let Some(am) = AuthenticatedMessage::parse(msg) else {
            return Err(DkimFailure::NoSignature);
        };
        let has_errors = am
            .errors
            .iter()
            .any(|e| matches!(e.header, mail_auth::Error::Dkim(_)));
        if am.dkim_headers.is_empty() && !has_errors {
            return Err(DkimFailure::NoSignature);
        }
        let fut = self
            .auth
            .verify_dkim(Parameters::new(&am).with_txt_cache(&self.cache));
        let out = match tokio::time::timeout(LOOKUP_TIMEOUT, fut).await {
            Ok(o) => o,
            Err(_) => return Err(DkimFailure::TempError),
        };
        let mut temp = false;
        for o in &out {
            let Some(sig) = o.signature() else { continue };
            let aligned = sig.d.eq_ignore_ascii_case(from_domain);
            match o.result() {
                DkimResult::Pass
                    if aligned && sig.h.iter().any(|h| h.eq_ignore_ascii_case("from")) =>
                {
                    return Ok(());
                }
                DkimResult::Fail(_) => self.cache.drop_key(&sig.domain_key()),
                DkimResult::TempError(_) if aligned => temp = true,
                _ => {}
            }
        }
        if temp {
            Err(DkimFailure::TempError)
        } else {
            Err(DkimFailure::NoValidSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::ResolverCache;

    #[test]
    fn cache_is_bounded_and_lru() {
        let c = KeyCache::new(2);
        let t = Instant::now() + Duration::from_secs(60);
        let v = || Txt::Error(mail_auth::Error::ParseError);
        c.insert("a.".into(), v(), t);
        c.insert("b.".into(), v(), t);
        assert!(c.get("a.").is_some());
        c.insert("c.".into(), v(), t);
        assert_eq!(c.len(), 2);
        assert!(c.get("a.").is_some());
        assert!(c.get("b.").is_none());
        c.drop_key("a.");
        assert!(c.get("a.").is_none());
    }

    #[test]
    fn from_domain_lowercase() {
        let m = b"From: Alice <alice@Example.ORG>\r\nTo: b@x\r\n\r\nhi\r\n";
        assert_eq!(from_domain(m).as_deref(), Some("example.org"));
        assert_eq!(from_domain(b"To: b@x\r\n\r\nhi\r\n"), None);
    }
}
