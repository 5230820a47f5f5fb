//! Server and mailbox metadata (RFC 5464 GETMETADATA/SETMETADATA: push device tokens, the
//! Delta Chat server keys) and quotas (RFC 2087 GETQUOTA/GETQUOTAROOT).
//!
//! Owns: which METADATA entries exist and their values, quota reporting.
//! Must not know: sockets, sled, framing.

use imap_types::core::{AString, IString, NString, NString8, Tag, Vec1};
use imap_types::extensions::metadata::{Entry, EntryValue, MetadataResponse};
use imap_types::extensions::quota::{QuotaGet, Resource};
use imap_types::mailbox::Mailbox;
use imap_types::response::Data;

use super::codec;
use super::folders::mailbox_name;
use super::session::{Done, Session};
use crate::replies::imap as r;
use crate::store::{now_unix, StoreError};

const DEVICE_TOKEN: &str = "/private/devicetoken";
/// Value of `/shared/vendor/deltachat/maxsmtprecipients` (upstream serves 1000; its presence
/// also tells clients ≥ 2.58 that the relay supports push).
const MAX_SMTP_RECIPIENTS: &str = "1000";
/// `appversions` when no operator file is configured: a valid, empty client list.
const APPVERSIONS_DEFAULT: &str = r#"{"clients":[]}"#;
/// Longest device token accepted (the client sends at most 4096 bytes).
const MAX_TOKEN: usize = 4096;

/// What a METADATA mailbox argument designates.
enum Target {
    Server,
    Mailbox(String),
}

fn target(m: &Mailbox<'_>) -> Option<Target> {
    match m {
        Mailbox::Other(o) if o.as_ref().is_empty() => Some(Target::Server),
        m => mailbox_name(m).map(Target::Mailbox),
    }
}

fn nstring8(v: Option<String>) -> NString8<'static> {
    NString8::NString(NString(v.and_then(|v| IString::try_from(v).ok())))
}

fn valid_token(t: &[u8]) -> bool {
    !t.is_empty() && t.len() <= MAX_TOKEN && t.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Single-line minified JSON of the operator's `appversions_file` (key order kept), else
/// [`APPVERSIONS_DEFAULT`]. Re-read on every request so the operator can replace the file
/// without a restart.
fn appversions(cfg: &crate::config::Config) -> String {
    let Some(path) = &cfg.appversions_file else {
        return APPVERSIONS_DEFAULT.to_string();
    };
    let checked = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| {
            serde_json::from_str::<serde::de::IgnoredAny>(&t)
                .map(|_| t)
                .map_err(|e| e.to_string())
        });
    match checked {
        Ok(text) => minify_json(&text),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "appversions_file unusable");
            APPVERSIONS_DEFAULT.to_string()
        }
    }
}

/// Drop the whitespace outside strings of valid JSON.
fn minify_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut esc) = (false, false);
    for ch in text.chars() {
        if in_str {
            out.push(ch);
            match (esc, ch) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
        } else if !ch.is_whitespace() {
            in_str = ch == '"';
            out.push(ch);
        }
    }
    out
}

impl Session {
    /// Value of a server entry, `None` = NIL.
    fn server_entry(&self, entry: &str) -> Option<String> {
        let cfg = &self.ctx.cfg;
        match entry {
            "/shared/admin" if !cfg.privacy_mail.is_empty() => {
                Some(format!("mailto:{}", cfg.privacy_mail))
            }
            "/shared/vendor/deltachat/maxsmtprecipients" => Some(MAX_SMTP_RECIPIENTS.to_string()),
            "/shared/vendor/deltachat/irohrelay" => {
                cfg.iroh_relay.clone().filter(|u| !u.trim().is_empty())
            }
            // Fresh credentials on every read; NIL unless a TURN server is configured.
            "/shared/vendor/deltachat/turn" => crate::push::turn::metadata_value(cfg, now_unix()),
            "/shared/vendor/deltachat/appversions" => Some(appversions(cfg)),
            // /shared/comment and anything unknown.
            _ => None,
        }
    }

    async fn mailbox_exists(&self, name: &str) -> Result<bool, StoreError> {
        let (addr, name) = (self.user(), name.to_string());
        self.store(move |s| Ok(s.mailboxes(&addr)?.contains(&name)))
            .await
    }

    pub(super) async fn cmd_getmetadata(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        entries: Vec<Entry<'static>>,
    ) -> Done {
        let Some(target) = target(&mailbox) else {
            return Ok(self.store_failure(tag, &StoreError::NoMailbox));
        };
        let mut tokens = None;
        if let Target::Mailbox(name) = &target {
            match self.mailbox_exists(name).await {
                Ok(true) => {}
                Ok(false) => return Ok(self.store_failure(tag, &StoreError::NoMailbox)),
                Err(e) => return Ok(self.store_failure(tag, &e)),
            }
            let wants_tokens = name == crate::store::INBOX
                && entries
                    .iter()
                    .any(|e| e.as_ref().eq_ignore_ascii_case(DEVICE_TOKEN.as_bytes()));
            if wants_tokens {
                let addr = self.user();
                match self
                    .store(move |s| s.device_tokens(&addr, now_unix()))
                    .await
                {
                    Ok(t) if !t.is_empty() => tokens = Some(t.join(" ")),
                    Ok(_) => {}
                    Err(e) => return Ok(self.store_failure(tag, &e)),
                }
            }
        }
        let mut values = Vec::with_capacity(entries.len());
        for entry in entries {
            let name = String::from_utf8_lossy(entry.as_ref()).to_ascii_lowercase();
            let value = match &target {
                Target::Server => self.server_entry(&name),
                Target::Mailbox(_) if name == DEVICE_TOKEN => tokens.clone(),
                Target::Mailbox(_) => None,
            };
            values.push(EntryValue {
                entry,
                value: nstring8(value),
            });
        }
        if let Ok(items) = Vec1::try_from(values) {
            self.send(&codec::encode_data(Data::Metadata {
                mailbox,
                items: MetadataResponse::WithValues(items),
            }));
        }
        Ok(codec::ok(tag, None, r::GETMETADATA_DONE))
    }

    pub(super) async fn cmd_setmetadata(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        entries: Vec<EntryValue<'static>>,
    ) -> Done {
        let is_inbox =
            matches!(target(&mailbox), Some(Target::Mailbox(n)) if n == crate::store::INBOX);
        // Validate everything first: SETMETADATA is all or nothing.
        let mut new_tokens = Vec::new();
        for ev in &entries {
            let name = String::from_utf8_lossy(ev.entry.as_ref()).to_ascii_lowercase();
            if !is_inbox || name != DEVICE_TOKEN {
                return Ok(codec::no(tag, None, r::METADATA_UNSUPPORTED));
            }
            let value: Option<&[u8]> = match &ev.value {
                NString8::NString(NString(Some(s))) => Some(s.as_ref()),
                NString8::NString(NString(None)) => None,
                NString8::Literal8(l) => Some(l.data.as_ref()),
            };
            match value {
                // Removing a token is the push gateway's business (HTTP 410), not a client's.
                None => {}
                Some(v) if valid_token(v) => {
                    new_tokens.push(String::from_utf8_lossy(v).into_owned())
                }
                Some(_) => return Ok(codec::no(tag, None, r::METADATA_UNSUPPORTED)),
            }
        }
        if !new_tokens.is_empty() {
            let addr = self.user();
            let res = self
                .store(move |s| {
                    let now = now_unix();
                    for t in &new_tokens {
                        s.add_device_token(&addr, t, now)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = res {
                return Ok(self.store_failure(tag, &e));
            }
        }
        Ok(codec::ok(tag, None, r::SETMETADATA_DONE))
    }

    fn quota_data(&self, used: u64) -> Option<Data<'static>> {
        let kb = |b: u64| b.div_ceil(1024);
        let q = QuotaGet::new(
            Resource::Storage,
            kb(used),
            kb(self.ctx.cfg.max_mailbox_size),
        );
        Some(Data::Quota {
            root: AString::try_from("").ok()?,
            quotas: Vec1::from(q),
        })
    }

    async fn usage(&self) -> Result<u64, StoreError> {
        let addr = self.user();
        self.store(move |s| s.usage(&addr)).await
    }

    pub(super) async fn cmd_getquotaroot(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
    ) -> Done {
        let Some(name) = mailbox_name(&mailbox) else {
            return Ok(self.store_failure(tag, &StoreError::NoMailbox));
        };
        match self.mailbox_exists(&name).await {
            Ok(true) => {}
            Ok(false) => return Ok(self.store_failure(tag, &StoreError::NoMailbox)),
            Err(e) => return Ok(self.store_failure(tag, &e)),
        }
        let used = match self.usage().await {
            Ok(u) => u,
            Err(e) => return Ok(self.store_failure(tag, &e)),
        };
        if let Ok(root) = AString::try_from("") {
            self.send(&codec::encode_data(Data::QuotaRoot {
                mailbox,
                roots: vec![root],
            }));
        }
        if let Some(d) = self.quota_data(used) {
            self.send(&codec::encode_data(d));
        }
        Ok(codec::ok(tag, None, &r::completed("GETQUOTAROOT")))
    }

    pub(super) async fn cmd_getquota(&mut self, tag: &Tag<'static>, root: &[u8]) -> Done {
        if !root.is_empty() {
            return Ok(codec::no(tag, None, r::QUOTA_NO_ROOT));
        }
        let used = match self.usage().await {
            Ok(u) => u,
            Err(e) => return Ok(self.store_failure(tag, &e)),
        };
        if let Some(d) = self.quota_data(used) {
            self.send(&codec::encode_data(d));
        }
        Ok(codec::ok(tag, None, &r::completed("GETQUOTA")))
    }
}

#[cfg(test)]
mod tests {
    use super::minify_json;

    #[test]
    fn minify_keeps_strings_and_order() {
        let t = "{\n \"b\" : [1, 2],\n \"a\": \"x y \\\" z\\\\\" }\n";
        assert_eq!(minify_json(t), r#"{"b":[1,2],"a":"x y \" z\\"}"#);
    }
}
