//! Login: STARTTLS, LOGIN and AUTHENTICATE PLAIN (with and without initial response), create on
//! first login (via `auth`), the login-day record, failure delays and limits.
//!
//! Owns: the not-authenticated state. Must not know: password hashing or account rules (that is
//! `auth`), sockets (the session upgrades TLS), sled.

use std::borrow::Cow;
use std::time::Duration;

use imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_types::core::Tag;
use imap_types::secret::Secret;

use super::codec::{self, Event, Expect};
use super::session::{Close, Done, Session};
use crate::auth::AuthError;
use crate::replies::imap as r;

/// Time for the client to answer an AUTHENTICATE continuation.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Failed logins tolerated per connection.
const MAX_AUTH_FAILURES: u32 = 3;
/// Delay before answering a failed login.
const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(1000);

impl Session {
    pub(super) async fn cmd_starttls(&mut self, tag: &Tag<'static>) -> Done {
        if self.is_tls() {
            return Ok(codec::bad(Some(tag), None, r::ALREADY_TLS));
        }
        self.send(&codec::ok(tag, None, r::STARTTLS_BEGIN));
        self.upgrade_tls().await?;
        Ok(Vec::new())
    }

    fn login_precheck(&self, tag: &Tag<'_>) -> Option<Vec<u8>> {
        if self.addr.is_some() {
            return Some(codec::bad(Some(tag), None, r::WRONG_STATE));
        }
        if !self.is_tls() {
            return Some(codec::no(
                tag,
                Some(codec::code_atom(r::CODE_PRIVACYREQUIRED)),
                r::PRIVACY_REQUIRED,
            ));
        }
        None
    }

    pub(super) async fn cmd_login(&mut self, tag: &Tag<'static>, user: &[u8], pass: &[u8]) -> Done {
        if let Some(refusal) = self.login_precheck(tag) {
            return Ok(refusal);
        }
        let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass)) else {
            return self.login_failed(tag).await;
        };
        self.login(tag, user, pass).await
    }

    pub(super) async fn cmd_authenticate(
        &mut self,
        tag: &Tag<'static>,
        mechanism: AuthMechanism<'static>,
        initial: Option<Secret<Cow<'static, [u8]>>>,
    ) -> Done {
        if let Some(refusal) = self.login_precheck(tag) {
            return Ok(refusal);
        }
        if mechanism != AuthMechanism::Plain {
            return Ok(codec::no(
                tag,
                Some(codec::code_atom(r::CODE_CANNOT)),
                r::AUTH_MECHANISM,
            ));
        }
        let data: Vec<u8> = match initial {
            Some(d) => d.declassify().to_vec(),
            None => {
                self.send(&codec::continuation_empty());
                match self.next_event(Expect::AuthData, AUTH_TIMEOUT).await? {
                    Event::AuthData(AuthenticateData::Continue(d)) => d.declassify().to_vec(),
                    Event::AuthData(AuthenticateData::Cancel) => {
                        return Ok(codec::bad(Some(tag), None, r::AUTH_CANCELLED))
                    }
                    Event::Fatal { .. } => {
                        self.send(&codec::bye(None, r::BYE_LINE_TOO_LONG));
                        return Err(Close("limit exceeded"));
                    }
                    _ => return Ok(codec::bad(Some(tag), None, r::AUTH_INVALID)),
                }
            }
        };
        // PLAIN: authzid NUL authcid NUL passwd (RFC 4616).
        let mut parts = data.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(codec::bad(Some(tag), None, r::AUTH_INVALID));
        };
        let (Ok(authz), Ok(authc), Ok(pass)) = (
            std::str::from_utf8(authz),
            std::str::from_utf8(authc),
            std::str::from_utf8(pass),
        ) else {
            return self.login_failed(tag).await;
        };
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc) {
            return self.login_failed(tag).await;
        }
        let (authc, pass) = (authc.to_string(), pass.to_string());
        self.login(tag, &authc, &pass).await
    }

    async fn login(&mut self, tag: &Tag<'static>, user: &str, pass: &str) -> Done {
        match self.ctx.auth.login(user, pass).await {
            Ok(addr) => {
                let day = crate::store::now_unix() / 86400 * 86400;
                let a = addr.clone();
                if let Err(e) = self.store(move |s| s.record_login_day(&a, day)).await {
                    tracing::warn!(service = "imap", "cannot record login day: {e}");
                }
                self.rx = Some(self.ctx.store.subscribe(&addr));
                self.addr = Some(addr);
                let caps = self.caps();
                Ok(codec::ok(tag, codec::capability_code(&caps), r::LOGGED_IN))
            }
            Err(AuthError::Failed) => self.login_failed(tag).await,
            Err(AuthError::CreationRefused(_)) => Ok(codec::no(
                tag,
                Some(codec::code_atom(r::CODE_UNAVAILABLE)),
                r::CREATION_REFUSED,
            )),
            Err(e) => {
                tracing::warn!(service = "imap", "login error: {e}");
                Ok(codec::no(
                    tag,
                    Some(codec::code_atom(r::CODE_UNAVAILABLE)),
                    r::TEMP_FAILURE,
                ))
            }
        }
    }

    async fn login_failed(&mut self, tag: &Tag<'static>) -> Done {
        self.stats.auth_failures += 1;
        tokio::time::sleep(AUTH_FAILURE_DELAY).await;
        let no = codec::no(
            tag,
            Some(codec::code_atom(r::CODE_AUTHENTICATIONFAILED)),
            r::AUTH_FAILED,
        );
        if self.stats.auth_failures >= MAX_AUTH_FAILURES {
            self.send(&no);
            self.send(&codec::bye(None, r::BYE_TOO_MANY_AUTH_FAILURES));
            return Err(Close("too many authentication failures"));
        }
        Ok(no)
    }
}
