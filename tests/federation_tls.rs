//! Certificate verification on outbound delivery (§9.2, §9.3): domains without a leading `_`
//! need a certificate that chains to a trusted root (`extra_root_certs` in tests), over HTTPS
//! and over SMTP STARTTLS alike. Also `dns --check` against the test DNS server.

#[path = "policy_corpus.rs"]
mod corpus;
#[path = "common/fed.rs"]
mod fed;

use std::path::Path;
use std::time::Duration;

use chatmail_box::delivery::zone;
use fed::{free_port, FedNet};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A test CA in `dir/ca.pem` and a leaf certificate for `domain` in `dir/<domain>.{crt,key}`.
fn make_ca_and_leaf(dir: &Path, domain: &str) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![domain.to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join(format!("{domain}.crt")), leaf.pem()).unwrap();
    std::fs::write(dir.join(format!("{domain}.key")), key.serialize_pem()).unwrap();
}

async fn run(https_blocked: bool, smtp_blocked: bool) {
    let pki = tempfile::tempdir().unwrap();
    make_ca_and_leaf(pki.path(), "two.test");
    let net = FedNet::new().await;
    let dead = free_port();
    let ca = pki.path().join("ca.pem");
    let a = net
        .relay("one.test", "127.0.2.1", |c| {
            c.extra_root_certs = Some(ca.clone());
            if https_blocked {
                c.outbound_https_port = dead;
            }
            if smtp_blocked {
                c.outbound_smtp_port = dead;
            }
        })
        .await;
    let b = net
        .relay("two.test", "127.0.2.2", |c| {
            c.tls = "files".into();
            c.tls_cert = Some(pki.path().join("two.test.crt"));
            c.tls_key = Some(pki.path().join("two.test.key"));
        })
        .await;
    // A third relay with the default self-signed certificate: not trusted.
    let c = net.relay("three.test", "127.0.2.3", |_| {}).await;
    let alice = a.user("alice");
    let bob = b.user("bob");
    let carol = c.user("carol");
    a.send(&alice, &[&bob], &corpus::chat_message(&alice));
    a.send(&alice, &[&carol], &corpus::chat_message(&alice));
    b.wait_inbox(&bob, 1, 30).await;
    // The untrusted one stays queued with a connection failure recorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let items = a.ctx.store.queue_items().unwrap();
        if items.len() == 1 && items[0].attempts >= 1 {
            assert_eq!(items[0].domain, "three.test");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{items:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.inbox(&carol).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_certificate_over_https() {
    run(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_certificate_over_smtp() {
    run(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_check_reports_ok_missing_wrong() {
    let net = FedNet::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = net.config("chat.test", "127.0.2.4".parse().unwrap(), dir.path().into());
    cfg.public_ipv4 = Some("127.0.2.4".parse().unwrap());
    let resolver = chatmail_box::delivery::build_resolver(&cfg);
    let dkim = chatmail_box::dkim::Dkim::new(&cfg, resolver.clone());
    let records = dkim.dns_records().unwrap();
    let z = zone::zone(
        "chat.test",
        Some("127.0.2.4".parse().unwrap()),
        None,
        &records,
    );
    net.dns.a("chat.test", "127.0.2.99".parse().unwrap());
    net.dns.mx("chat.test", 10, "chat.test");
    net.dns
        .txt(&format!("{}.chat.test", records[0].0), &records[0].1);
    let out = zone::check(&resolver, &z).await;
    let state = |name: &str, rtype: &str| {
        out.iter()
            .find(|(r, _, _)| r.name == name && r.rtype == rtype)
            .map(|(_, s, _)| *s)
            .unwrap()
    };
    assert_eq!(state("chat.test.", "A"), zone::Check::Wrong);
    assert_eq!(state("chat.test.", "MX"), zone::Check::Ok);
    assert_eq!(
        state("opendkim._domainkey.chat.test.", "TXT"),
        zone::Check::Ok
    );
    assert_eq!(state("_dmarc.chat.test.", "TXT"), zone::Check::Missing);
    let text = zone::render(&z);
    assert!(text.contains("opendkim._domainkey.chat.test."));
}
