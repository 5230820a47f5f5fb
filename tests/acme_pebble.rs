//! ACME against a real ACME server: pebble (Debian package `pebble`), started by each test on
//! loopback with its own HTTPS certificate (a test CA made here with rcgen) and `-dnsserver`
//! pointing at the test's DNS server, which maps the relay's names to 127.0.0.1. pebble
//! validates HTTP-01 on the relay's port-80 listener (its `httpPort` is that listener's port).
//!
//! - issuance: a relay with `tls = "acme"` serves its self-signed certificate, then one from
//!   pebble that a client trusting only pebble's root (management API `/roots/0`) verifies on
//!   IMAPS and HTTPS; files land in `<data>/acme/` with 0600 keys; a check of a long-lived
//!   certificate does not renew it;
//! - renewal: with short-lived certificates (pebble `certificateValidityPeriod` below the
//!   30-day window) a check replaces the certificate without a restart (new serial on a fresh
//!   connection), and a restarted TLS layer serves the stored one;
//! - failure: a name pebble cannot resolve, and a name on pebble's block list: the status holds
//!   pebble's problem detail and the relay keeps its self-signed certificate.

mod common;
#[path = "common/fed.rs"]
mod fed;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_box::acme::{AcmeState, AcmeStatus};
use chatmail_box::net::Service;
use common::TestRelay;
use fed::{free_port, TestDns};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const DOMAIN: &str = "chat.acme.test";

/// A pebble process on loopback; killed on drop.
struct Pebble {
    child: Child,
    _dir: tempfile::TempDir,
    listen: SocketAddr,
    mgmt: SocketAddr,
    /// PEM of the CA behind pebble's own HTTPS certificate (for `extra_root_certs`).
    https_ca: PathBuf,
    log: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pebble_binary() -> String {
    for p in ["/usr/bin/pebble", "/usr/local/bin/pebble"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "pebble is not installed: these tests need the ACME test server \
         (Debian: `apt-get install pebble`; .ci/run installs it)"
    );
}

impl Pebble {
    /// Start pebble validating HTTP-01 on `http_port`, resolving names with `dns`.
    async fn start(
        http_port: u16,
        dns: SocketAddr,
        validity_secs: Option<u64>,
        blocklist: &[&str],
    ) -> Pebble {
        let bin = pebble_binary();
        let dir = tempfile::tempdir().unwrap();
        // pebble's own HTTPS certificate, issued by a throw-away CA.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble https test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &ca).unwrap();
        let https_ca = dir.path().join("https-ca.pem");
        std::fs::write(&https_ca, ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf_cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();

        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mgmt: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut conf = serde_json::json!({
            "listenAddress": listen.to_string(),
            "managementListenAddress": mgmt.to_string(),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "domainBlocklist": blocklist,
        });
        if let Some(v) = validity_secs {
            conf["certificateValidityPeriod"] = v.into();
        }
        let conf_path = dir.path().join("pebble.json");
        std::fs::write(
            &conf_path,
            serde_json::json!({ "pebble": conf }).to_string(),
        )
        .unwrap();
        let log = dir.path().join("pebble.log");
        let child = Command::new(bin)
            .arg("-config")
            .arg(&conf_path)
            .arg("-dnsserver")
            .arg(dns.to_string())
            .arg("-strict=false")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("pebble.err")).unwrap())
            .spawn()
            .expect("starting pebble");
        let p = Pebble {
            child,
            _dir: dir,
            listen,
            mgmt,
            https_ca,
            log,
        };
        let t0 = Instant::now();
        while TcpStream::connect(p.listen).await.is_err()
            || TcpStream::connect(p.mgmt).await.is_err()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "pebble did not start listening: {}",
                p.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let err = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        format!("--- pebble stdout ---\n{out}\n--- pebble stderr ---\n{err}")
    }

    /// The root that issues the relay's certificates (regenerated at each pebble start).
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let pem = https_get(self.mgmt, "/roots/0", &self.https_ca).await;
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM root from /roots/0")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// GET over HTTPS/1.1 from pebble's management API, trusting `ca`.
async fn https_get(addr: SocketAddr, path: &str, ca: &Path) -> String {
    use http_body_util::BodyExt;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    assert!(rsp.status().is_success(), "GET {path}: {}", rsp.status());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The leaf certificate a fresh TLS connection to `addr` gets, verified against `root` for
/// `DOMAIN` (or not verified at all when `root` is `None`).
async fn served_cert(
    addr: SocketAddr,
    root: Option<&CertificateDer<'static>>,
    alpn: &[&[u8]],
) -> Result<Vec<u8>, String> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let mut cfg = match root {
        Some(r) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(r.clone()).unwrap();
            b.with_root_certificates(roots).with_no_client_auth()
        }
        None => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(chatmail_box::delivery::tlsconf::NoVerify))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok(leaf)
}

fn serial(der: &[u8]) -> Vec<u8> {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.raw_serial().to_vec()
}

fn self_signed(der: &[u8]) -> bool {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.issuer() == c.subject()
}

fn dns_for(dns: &TestDns, domain: &str) {
    for n in [
        domain.to_string(),
        format!("www.{domain}"),
        format!("mta-sts.{domain}"),
    ] {
        dns.a(&n, "127.0.0.1".parse().unwrap());
    }
}

async fn acme_relay(domain: &str, dns: &TestDns, pebble_dir: &str, https_ca: &Path) -> TestRelay {
    let (dir_url, ca) = (pebble_dir.to_string(), https_ca.to_path_buf());
    let dns_addr = dns.addr.to_string();
    let domain = domain.to_string();
    TestRelay::start_with(move |c| {
        c.mail_domain = domain;
        c.tls = "acme".into();
        c.acme_directory = dir_url;
        c.acme_email = "owner@example.org".into();
        c.extra_root_certs = Some(ca);
        c.dns_nameserver = Some(dns_addr);
    })
    .await
}

/// Wait until the ACME state leaves Waiting/Issuing (or `pred` holds); panics after 90 s.
async fn wait_status(
    relay: &TestRelay,
    pebble: &Pebble,
    pred: impl Fn(&AcmeStatus) -> bool,
) -> AcmeStatus {
    let t0 = Instant::now();
    loop {
        let s = relay.ctx.acme.status();
        if pred(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "ACME status did not arrive: {s:?}\n{}",
            pebble.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_from_pebble_served_on_every_tls_listener() {
    let t0 = Instant::now();
    let dns = TestDns::start().await;
    dns_for(&dns, DOMAIN);
    // pebble needs the relay's port-80 port before it starts and the relay needs pebble's URL
    // and CA: pick a free port, start pebble, then the relay with an HTTP listener on it.
    let http_port = free_port();
    let pebble = Pebble::start(http_port, dns.addr, None, &[]).await;
    let relay = acme_relay(DOMAIN, &dns, &pebble.directory(), &pebble.https_ca).await;
    let http = chatmail_box::net::bind(format!("127.0.0.1:{http_port}").parse().unwrap())
        .expect("binding the port-80 stand-in");
    let _http_task = tokio::spawn(chatmail_box::net::serve(
        relay.ctx.clone(),
        vec![(Service::Http, http)],
    ));

    // Before the first certificate: the self-signed one.
    assert_eq!(relay.ctx.acme.status().state, AcmeState::Waiting);
    let before = served_cert(relay.addr(Service::Imaps), None, &[])
        .await
        .unwrap();
    assert!(self_signed(&before), "self-signed certificate before ACME");

    let task = chatmail_box::acme::spawn(relay.ctx.clone()).expect("tls = acme starts a task");
    let st = wait_status(&relay, &pebble, |s| {
        matches!(s.state, AcmeState::Valid | AcmeState::Failed)
    })
    .await;
    assert_eq!(st.state, AcmeState::Valid, "{st:?}\n{}", pebble.logs());
    assert!(st.last_error.is_none());
    assert!(st.last_attempt.is_some());
    let not_after = st.cert_not_after.expect("cert_not_after");
    assert!(not_after > std::time::SystemTime::now() + Duration::from_secs(60 * 86400));
    assert_eq!(
        st.names,
        vec![
            DOMAIN.to_string(),
            format!("www.{DOMAIN}"),
            format!("mta-sts.{DOMAIN}")
        ]
    );
    eprintln!("issued after {:?}", t0.elapsed());

    // A client that trusts only pebble's root verifies the relay on IMAPS, HTTPS (and the
    // mail ALPN on 443) and on submissions.
    let root = pebble.issuing_root().await;
    let imaps = served_cert(relay.addr(Service::Imaps), Some(&root), &[])
        .await
        .expect("IMAPS certificate verifies against pebble's root");
    let https = served_cert(relay.addr(Service::Https), Some(&root), &[b"http/1.1"])
        .await
        .expect("HTTPS certificate verifies against pebble's root");
    served_cert(relay.addr(Service::Https), Some(&root), &[b"imap"])
        .await
        .expect("443/imap verifies");
    served_cert(relay.addr(Service::Submissions), Some(&root), &[])
        .await
        .expect("465 verifies");
    assert_eq!(imaps, https);
    assert!(!self_signed(&imaps));
    // The IMAP session still works over the new certificate.
    {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(relay.addr(Service::Imaps))
            .await
            .unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"* OK"), "{:?}", &buf[..n]);
    }

    // Files in the data dir; keys 0600.
    let acme_dir = relay.dir.path().join("acme");
    use std::os::unix::fs::PermissionsExt;
    for f in ["account.json", "key.pem"] {
        let mode = std::fs::metadata(acme_dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert!(acme_dir.join("cert.pem").exists());

    // A long-lived certificate is not renewed by a check.
    let first = st.last_attempt;
    relay.ctx.acme.check_now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = relay.ctx.acme.status();
    assert_eq!(st.state, AcmeState::Valid);
    assert_eq!(
        st.last_attempt, first,
        "no new order for a certificate not yet due"
    );
    let again = served_cert(relay.addr(Service::Imaps), Some(&root), &[])
        .await
        .unwrap();
    assert_eq!(serial(&again), serial(&imaps));
    drop(task);
    eprintln!("issuance test took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificate_is_renewed_without_restart() {
    let t0 = Instant::now();
    let dns = TestDns::start().await;
    dns_for(&dns, DOMAIN);
    let http_port = free_port();
    // 10 days: inside the 30-day renewal window from the start.
    let pebble = Pebble::start(http_port, dns.addr, Some(10 * 86400), &[]).await;
    let relay = acme_relay(DOMAIN, &dns, &pebble.directory(), &pebble.https_ca).await;
    let http = chatmail_box::net::bind(format!("127.0.0.1:{http_port}").parse().unwrap()).unwrap();
    let _http_task = tokio::spawn(chatmail_box::net::serve(
        relay.ctx.clone(),
        vec![(Service::Http, http)],
    ));
    let task = chatmail_box::acme::spawn(relay.ctx.clone()).unwrap();
    let st = wait_status(&relay, &pebble, |s| {
        matches!(s.state, AcmeState::Valid | AcmeState::Failed)
    })
    .await;
    assert_eq!(st.state, AcmeState::Valid, "{st:?}\n{}", pebble.logs());
    let na1 = st.cert_not_after.unwrap();
    assert!(na1 < std::time::SystemTime::now() + Duration::from_secs(11 * 86400));
    let root = pebble.issuing_root().await;
    let c1 = served_cert(relay.addr(Service::Imaps), Some(&root), &[])
        .await
        .unwrap();
    let first_attempt = st.last_attempt;

    // The next check finds it due and renews.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    relay.ctx.acme.check_now();
    let st = wait_status(&relay, &pebble, |s| {
        s.last_attempt != first_attempt && matches!(s.state, AcmeState::Valid | AcmeState::Failed)
    })
    .await;
    assert_eq!(st.state, AcmeState::Valid, "{st:?}\n{}", pebble.logs());
    let c2 = served_cert(relay.addr(Service::Imaps), Some(&root), &[])
        .await
        .expect("renewed certificate verifies");
    assert_ne!(
        serial(&c1),
        serial(&c2),
        "a fresh connection gets the new certificate"
    );
    let h2 = served_cert(relay.addr(Service::Https), Some(&root), &[b"h2"])
        .await
        .unwrap();
    assert_eq!(
        serial(&h2),
        serial(&c2),
        "every listener serves the renewed certificate"
    );
    // The stored certificate is the new one, and a restarted TLS layer serves it.
    let tls = chatmail_box::tls::Tls::new(&relay.ctx.cfg).unwrap();
    assert!(
        tls.cert_pem_path.ends_with("acme/cert.pem"),
        "{:?}",
        tls.cert_pem_path
    );
    let stored = CertificateDer::pem_file_iter(&tls.cert_pem_path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(serial(&stored), serial(&c2));
    drop(task);
    eprintln!("renewal test took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_issuance_reports_the_acme_servers_reason() {
    let t0 = Instant::now();
    let dns = TestDns::start().await;
    // Not published: pebble cannot resolve the name.
    let nowhere = "nowhere.acme.test";
    let http_port = free_port();
    let pebble = Pebble::start(http_port, dns.addr, None, &["blocked.test"]).await;
    let relay = acme_relay(nowhere, &dns, &pebble.directory(), &pebble.https_ca).await;
    let http = chatmail_box::net::bind(format!("127.0.0.1:{http_port}").parse().unwrap()).unwrap();
    let _http_task = tokio::spawn(chatmail_box::net::serve(
        relay.ctx.clone(),
        vec![(Service::Http, http)],
    ));
    let task = chatmail_box::acme::spawn(relay.ctx.clone()).unwrap();
    let st = wait_status(&relay, &pebble, |s| {
        matches!(s.state, AcmeState::Valid | AcmeState::Failed)
    })
    .await;
    assert_eq!(st.state, AcmeState::Failed, "{st:?}");
    let why = st.last_error.clone().expect("a reason");
    eprintln!("reported reason (unresolvable name): {why}");
    assert!(why.contains(nowhere), "{why}");
    assert!(why.contains("urn:ietf:params:acme:error:"), "{why}");
    assert!(st.cert_not_after.is_none());
    // Still the self-signed certificate, on every listener.
    let c = served_cert(relay.addr(Service::Imaps), None, &[])
        .await
        .unwrap();
    assert!(self_signed(&c));
    let c = served_cert(relay.addr(Service::Https), None, &[b"http/1.1"])
        .await
        .unwrap();
    assert!(self_signed(&c));
    assert!(!relay.dir.path().join("acme/cert.pem").exists());
    drop(task);

    // A name the CA refuses: the order itself is rejected with pebble's detail.
    let relay2 = acme_relay(
        "chat.blocked.test",
        &dns,
        &pebble.directory(),
        &pebble.https_ca,
    )
    .await;
    dns_for(&dns, "chat.blocked.test");
    let task = chatmail_box::acme::spawn(relay2.ctx.clone()).unwrap();
    let st = wait_status(&relay2, &pebble, |s| {
        matches!(s.state, AcmeState::Valid | AcmeState::Failed)
    })
    .await;
    assert_eq!(st.state, AcmeState::Failed, "{st:?}");
    let why = st.last_error.clone().unwrap();
    eprintln!("reported reason (blocked name): {why}");
    assert!(why.contains("rejectedIdentifier"), "{why}");
    assert!(why.contains("blocked"), "{why}");
    drop(task);
    eprintln!("failure test took {:?}", t0.elapsed());
}
