//! ACME (`tls = "acme"`): obtains and renews the relay's certificate from an ACME CA (Let's
//! Encrypt by default, `acme_directory`) with instant-acme on ring and HTTP-01 challenges, which
//! the port-80 listener answers from [`Acme::challenge_response`].
//!
//! A background task ([`spawn`]) issues a certificate at start when there is no valid one,
//! checks again daily and renews `acme_renew_before_days` (30) days before expiry; after a
//! failure it retries with backoff (5 min doubling to 1 day), and [`Acme::check_now`] forces a
//! check. A new certificate is written to `<data_dir>/acme/` (account.json and key.pem mode
//! 0600, cert.pem; each written atomically) and handed to [`crate::tls::Tls::install`], so every
//! TLS listener uses it from its next handshake; until the first one exists the self-signed
//! certificate is served. [`Acme::status`] reports the state and, after a failure, the ACME
//! server's problem detail for the wizard and the status page.
//!
//! Owns: the ACME account, orders, challenge tokens, the files in `<data_dir>/acme/`, the
//! renewal schedule. Must not know: listeners and sockets (the web module serves the challenge
//! answers), what runs inside TLS, the store.

mod http;

use crate::fsutil::write_atomic;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, Problem, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{Config, TlsMode};
use crate::Ctx;

/// Time between checks while the certificate is valid.
const CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);
/// First retry after a failed issuance; doubles up to [`CHECK_EVERY`].
const RETRY_FIRST: Duration = Duration::from_secs(5 * 60);
/// How long the CA may take to validate the challenges and to sign.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the certificate lifecycle stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeState {
    /// `tls` is not `"acme"`.
    Disabled,
    /// No ACME certificate yet and no attempt made (the self-signed one is served).
    Waiting,
    /// An order is in progress.
    Issuing,
    /// A certificate from the CA is served and not yet due for renewal.
    Valid,
    /// The last attempt failed (see `last_error`); a previous certificate, if any
    /// (`cert_not_after`), is still served.
    Failed,
}

/// What the wizard and the status page show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcmeStatus {
    pub state: AcmeState,
    /// The names the certificate is for (domain, `www.`, `mta-sts.`).
    pub names: Vec<String>,
    /// Why the last attempt failed: the ACME server's problem detail (and type), or the local
    /// error (e.g. the CA could not be reached).
    pub last_error: Option<String>,
    /// Expiry of the ACME certificate being served.
    pub cert_not_after: Option<SystemTime>,
    /// Start of the last issuance attempt (successful or not).
    pub last_attempt: Option<SystemTime>,
}

/// ACME state shared by the background task, the port-80 challenge route and status readers.
pub struct Acme {
    enabled: bool,
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    directory_url: String,
    email: String,
    renew_before: Duration,
    extra_roots: Option<PathBuf>,
    names: Vec<String>,
    challenges: Mutex<HashMap<String, String>>,
    status: Mutex<AcmeStatus>,
    wake: Notify,
}

impl Acme {
    pub fn new(cfg: &Config) -> Acme {
        let (enabled, cert, key) = match cfg.tls_mode() {
            // No domain yet (setup mode): nothing to ask for.
            TlsMode::Acme { cert, key } if !cfg.mail_domain.is_empty() => (true, cert, key),
            _ => (false, PathBuf::new(), PathBuf::new()),
        };
        let d = cfg.mail_domain.to_ascii_lowercase();
        let names = vec![d.clone(), format!("www.{d}"), format!("mta-sts.{d}")];
        let cert_not_after = enabled
            .then(|| read_cert(&cert).ok())
            .flatten()
            .map(|c| c.not_after);
        Acme {
            enabled,
            dir: cfg.acme_dir(),
            cert,
            key,
            directory_url: cfg.acme_directory.clone(),
            email: cfg.acme_email.trim().to_string(),
            renew_before: Duration::from_secs(u64::from(cfg.acme_renew_before_days) * 86400),
            extra_roots: cfg.extra_root_certs.clone(),
            challenges: Mutex::new(HashMap::new()),
            status: Mutex::new(AcmeStatus {
                state: if enabled {
                    AcmeState::Waiting
                } else {
                    AcmeState::Disabled
                },
                names: if enabled { names.clone() } else { Vec::new() },
                last_error: None,
                cert_not_after,
                last_attempt: None,
            }),
            names,
            wake: Notify::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn status(&self) -> AcmeStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The key authorization for an HTTP-01 token of a running order, served as the body of
    /// `http://<name>/.well-known/acme-challenge/<token>`.
    pub fn challenge_response(&self, token: &str) -> Option<String> {
        self.challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// Check (and issue or renew if due) now instead of at the next scheduled time, e.g. after
    /// the owner fixed DNS.
    pub fn check_now(&self) {
        self.wake.notify_one();
    }

    fn set_status(&self, f: impl FnOnce(&mut AcmeStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// When the served certificate needs renewal, or `None` if there is no usable one (missing,
    /// unreadable, key mismatch, or not covering every name).
    fn renewal_due(&self) -> Option<(SystemTime, SystemTime)> {
        let c = read_cert(&self.cert).ok()?;
        let key = std::fs::read_to_string(&self.key).ok()?;
        let key = rcgen::KeyPair::from_pem(&key).ok()?;
        if key.public_key_raw() != c.spki || !self.names.iter().all(|n| c.names.contains(n)) {
            return None;
        }
        let due = c
            .not_after
            .checked_sub(self.renew_before)
            .unwrap_or(UNIX_EPOCH);
        Some((due, c.not_after))
    }

    /// One scheduled check; returns the time until the next one.
    async fn check(&self, ctx: &Ctx, failures: &mut u32) -> Duration {
        let now = SystemTime::now();
        if let Some((due, not_after)) = self.renewal_due() {
            if let Ok(left) = due.duration_since(now) {
                self.set_status(|s| {
                    s.state = AcmeState::Valid;
                    s.cert_not_after = Some(not_after);
                });
                return left.min(CHECK_EVERY);
            }
        }
        self.set_status(|s| {
            s.state = AcmeState::Issuing;
            s.last_attempt = Some(now);
        });
        tracing::info!(names = ?self.names, directory = %self.directory_url, "requesting an ACME certificate");
        match self.issue(ctx).await {
            Ok(not_after) => {
                *failures = 0;
                tracing::info!(?not_after, "ACME certificate installed");
                self.set_status(|s| {
                    s.state = AcmeState::Valid;
                    s.last_error = None;
                    s.cert_not_after = Some(not_after);
                });
                // Even a certificate that is due again at once (shorter than the renewal
                // window) waits for the next daily check.
                CHECK_EVERY
            }
            Err(reason) => {
                *failures = failures.saturating_add(1);
                let wait = RETRY_FIRST
                    .saturating_mul(1 << (*failures - 1).min(10))
                    .min(CHECK_EVERY);
                tracing::warn!(
                    "ACME certificate request failed (retry in {} s): {reason}",
                    wait.as_secs()
                );
                self.set_status(|s| {
                    s.state = AcmeState::Failed;
                    s.last_error = Some(reason);
                });
                wait
            }
        }
    }

    /// Run one order to the end and install the certificate; `Err` carries the reason shown to
    /// the owner.
    async fn issue(&self, ctx: &Ctx) -> Result<SystemTime, String> {
        let tls = crate::delivery::tlsconf::ClientConfigs::new(self.extra_roots.as_deref())
            .map_err(|e| e.to_string())?
            .https_verified;
        let http = || {
            Box::new(http::Client {
                tls: tls.clone(),
                resolver: ctx.delivery.resolver.clone(),
            })
        };
        let account = self.account(http).await?;
        let ids: Vec<Identifier> = self.names.iter().cloned().map(Identifier::Dns).collect();
        let mut order = match account.new_order(&NewOrder::new(&ids)).await {
            Ok(o) => o,
            Err(e) => {
                if let instant_acme::Error::Api(p) = &e {
                    if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist")
                    {
                        // The CA forgot the account (e.g. a staging reset): a new one next time.
                        let _ = std::fs::remove_file(self.dir.join("account.json"));
                    }
                }
                return Err(reason(&e));
            }
        };

        // Publish every HTTP-01 answer, then tell the CA to validate.
        let mut tokens = Tokens(self, Vec::new());
        let mut auths = order.authorizations();
        while let Some(a) = auths.next().await {
            let mut a = a.map_err(|e| reason(&e))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization for {} is {other:?}", a.identifier())),
            }
            let ident = a.identifier().to_string();
            let mut ch = a
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| format!("the CA offers no http-01 challenge for {ident}"))?;
            let token = ch.token.clone();
            self.challenges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token.clone(), ch.key_authorization().as_str().to_string());
            tokens.1.push(token);
            ch.set_ready().await.map_err(|e| reason(&e))?;
        }

        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retry).await;
        match status {
            Ok(OrderStatus::Ready) => {}
            Ok(_) => {
                // Invalid: the reason is in the failed challenge of an authorization.
                let mut why = Vec::new();
                let mut auths = order.authorizations();
                while let Some(Ok(mut a)) = auths.next().await {
                    if let Ok(st) = a.refresh().await {
                        for c in &st.challenges {
                            if let Some(p) = &c.error {
                                why.push(format!("{}: {}", st.identifier(), describe(p)));
                            }
                        }
                    }
                }
                if why.is_empty() {
                    why.push(match &order.state().error {
                        Some(p) => describe(p),
                        None => "the order became invalid".into(),
                    });
                }
                return Err(why.join("; "));
            }
            Err(e) => return Err(reason(&e)),
        }
        drop(tokens);

        // Our own key and CSR (EC P-256, like the self-signed certificate and acmetool).
        let gen = |e: rcgen::Error| format!("CSR: {e}");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
        let mut params = rcgen::CertificateParams::new(self.names.clone()).map_err(gen)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(gen)?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| reason(&e))?;
        let chain = order
            .poll_certificate(&retry)
            .await
            .map_err(|e| reason(&e))?;

        let io = |e: std::io::Error| format!("writing {}: {e}", self.dir.display());
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        write_atomic(&self.key, key.serialize_pem().as_bytes(), 0o600).map_err(io)?;
        write_atomic(&self.cert, chain.as_bytes(), 0o644).map_err(io)?;
        let info = read_cert(&self.cert)?;
        ctx.tls
            .install(&self.cert, &self.key)
            .map_err(|e| e.to_string())?;
        Ok(info.not_after)
    }

    /// The stored account for this directory, or a new one (stored with mode 0600).
    async fn account(&self, http: impl Fn() -> Box<http::Client>) -> Result<Account, String> {
        #[derive(Serialize, Deserialize)]
        struct Stored {
            directory: String,
            credentials: AccountCredentials,
        }
        let path = self.dir.join("account.json");
        if let Ok(text) = std::fs::read(&path) {
            match serde_json::from_slice::<Stored>(&text) {
                Ok(s) if s.directory == self.directory_url => {
                    return Account::builder_with_http(http())
                        .from_credentials(s.credentials)
                        .await
                        .map_err(|e| reason(&e));
                }
                Ok(_) => tracing::info!("acme_directory changed: creating a new ACME account"),
                Err(e) => tracing::warn!("{}: {e}; creating a new ACME account", path.display()),
            }
        }
        let contact = format!("mailto:{}", self.email);
        let contacts: Vec<&str> = if self.email.is_empty() {
            Vec::new()
        } else {
            vec![contact.as_str()]
        };
        let (account, credentials) = Account::builder_with_http(http())
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory_url.clone(),
                None,
            )
            .await
            .map_err(|e| reason(&e))?;
        let stored = serde_json::to_vec(&Stored {
            directory: self.directory_url.clone(),
            credentials,
        })
        .map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.dir)
            .and_then(|_| write_atomic(&path, &stored, 0o600))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(account)
    }
}

/// Removes the published challenge answers when the order is over (or failed).
struct Tokens<'a>(&'a Acme, Vec<String>);

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        let mut m = self.0.challenges.lock().unwrap_or_else(|e| e.into_inner());
        for t in &self.1 {
            m.remove(t);
        }
    }
}

/// The ACME problem as the owner should read it: detail, type, and per-name subproblems.
fn describe(p: &Problem) -> String {
    let mut s = p.detail.clone().unwrap_or_else(|| "no detail".into());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(" ({t})"));
    }
    for sp in &p.subproblems {
        s.push_str("; ");
        if let Some(i) = &sp.identifier {
            s.push_str(&format!("{}: ", i.authorized(false)));
        }
        s.push_str(sp.detail.as_deref().unwrap_or("no detail"));
        if let Some(t) = &sp.r#type {
            s.push_str(&format!(" ({t})"));
        }
    }
    s
}

fn reason(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => describe(p),
        other => other.to_string(),
    }
}

/// The parts of the served certificate that the schedule needs.
pub(crate) struct CertInfo {
    pub(crate) not_after: SystemTime,
    names: Vec<String>,
    /// The raw subject public key (EC point), compared with key.pem's.
    spki: Vec<u8>,
}

/// The first certificate of a PEM file: expiry, DNS names, public key.
pub(crate) fn read_cert(path: &Path) -> Result<CertInfo, String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("{}: no certificate", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, c) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let secs = c.validity().not_after.timestamp().max(0) as u64;
    let mut names = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok(CertInfo {
        not_after: UNIX_EPOCH + Duration::from_secs(secs),
        names,
        spki: c.public_key().subject_public_key.data.to_vec(),
    })
}

/// The running certificate task; dropping it stops the task (a reload of the relay builds a
/// new `Ctx` and a new task).
pub struct AcmeTask(tokio::task::JoinHandle<()>);

impl Drop for AcmeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start the certificate task when `tls = "acme"`; `None` otherwise. The first check runs at
/// once; the listeners should be bound already so that the CA can reach port 80.
pub fn spawn(ctx: Arc<Ctx>) -> Option<AcmeTask> {
    if !ctx.acme.enabled {
        return None;
    }
    Some(AcmeTask(tokio::spawn(async move {
        let acme = ctx.acme.clone();
        let mut failures = 0u32;
        loop {
            let next = acme.check(&ctx, &mut failures).await;
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = acme.wake.notified() => {}
            }
        }
    })))
}
