//! TLS and listener behaviour: ALPN routing on 443, TLS 1.3 only for mail protocols, the
//! self-signed certificate's names, certificate reload from files.
mod common;

use chatmail_box::net::Service;
use common::{LineClient, TestRelay, DOMAIN};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn alpn_on_443_routes_imap_smtp_and_http() {
    let relay = TestRelay::start().await;
    let https = relay.addr(Service::Https);

    let mut imap = LineClient::tls(https, &[b"imap"]).await;
    let greeting = imap.line().await;
    assert!(greeting.starts_with("* OK"), "{greeting}");

    let mut smtp = LineClient::tls(https, &[b"smtp"]).await;
    let (code, _) = smtp.smtp_reply().await;
    assert_eq!(code, 220);

    for alpn in [&[b"http/1.1".as_slice()][..], &[]] {
        let mut web = LineClient::tls(https, alpn).await;
        web.send_raw(
            format!("GET /.well-known/autoconfig/mail/config-v1.1.xml HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let mut body = String::new();
        web.r.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("<port>443</port>"), "{body}");
    }
}

#[tokio::test]
async fn new_returns_fresh_credentials_and_http_redirects() {
    let relay = TestRelay::start().await;
    let mut emails = Vec::new();
    for _ in 0..2 {
        let mut web = LineClient::tls(relay.addr(Service::Https), &[b"http/1.1"]).await;
        web.send_raw(format!("POST /new HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
        let mut resp = String::new();
        web.r.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let json: serde_json::Value =
            serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let email = json["email"].as_str().unwrap().to_string();
        assert!(email.ends_with(&format!("@{DOMAIN}")));
        assert!(json["password"].as_str().unwrap().len() > 9);
        assert!(json["dclogin_url"]
            .as_str()
            .unwrap()
            .starts_with("dclogin:"));
        emails.push(email);
    }
    assert_ne!(emails[0], emails[1]);
    // /new never creates the account
    assert!(relay.ctx.store.accounts().unwrap().is_empty());

    let mut s = TcpStream::connect(relay.addr(Service::Http)).await.unwrap();
    s.write_all(b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 301"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains(&format!("location: https://{DOMAIN}/x?y=1")),
        "{resp}"
    );
}

#[tokio::test]
async fn mail_protocols_need_tls13() {
    let relay = TestRelay::start().await;
    let tls12 = || common::connector_with(&[&rustls::version::TLS12], &[b"imap"]);
    let name = || ServerName::try_from(DOMAIN).unwrap();
    // 993 speaks TLS 1.3 only: a TLS 1.2 client cannot even handshake.
    let tcp = TcpStream::connect(relay.addr(Service::Imaps))
        .await
        .unwrap();
    assert!(tls12().connect(name(), tcp).await.is_err());
    // 443 accepts TLS 1.2 for HTTPS, but ALPN imap over TLS 1.2 gets no IMAP greeting.
    let tcp = TcpStream::connect(relay.addr(Service::Https))
        .await
        .unwrap();
    let mut t = tls12().connect(name(), tcp).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), t.read_to_end(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "got {:?}",
        String::from_utf8_lossy(&buf)
    );
    // the same with TLS 1.3 works
    let mut ok = LineClient::tls(relay.addr(Service::Https), &[b"imap"]).await;
    assert!(ok.line().await.starts_with("* OK"));
}

#[test]
fn self_signed_certificate_names_the_domain() {
    let d = tempfile::tempdir().unwrap();
    chatmail_box::tls::generate_self_signed("_chat.test", d.path()).unwrap();
    let pem = std::fs::read(d.path().join("cert.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let text = String::from_utf8_lossy(der.as_ref());
    for name in ["_chat.test", "www._chat.test", "mta-sts._chat.test"] {
        assert!(text.contains(name), "SAN {name} missing");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.path().join("key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "key readable by others");
}

#[tokio::test]
async fn certificate_files_are_reloaded_when_they_change() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    chatmail_box::tls::generate_self_signed("one.test", &certs).unwrap();
    let cert = certs.join("cert.pem");
    let key = certs.join("key.pem");
    let relay = TestRelay::start_with(|c| {
        c.tls = "files".into();
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;
    relay
        .ctx
        .tls
        .spawn_reloader(std::time::Duration::from_millis(100));
    let seen = |relay: &TestRelay| {
        let addr = relay.addr(Service::Imaps);
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let t = common::connector(&[])
                .connect(ServerName::try_from("x.test").unwrap(), tcp)
                .await
                .unwrap();
            let der = t.get_ref().1.peer_certificates().unwrap()[0].clone();
            String::from_utf8_lossy(der.as_ref()).contains("two.test")
        }
    };
    assert!(!seen(&relay).await);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // mtime granularity
    chatmail_box::tls::generate_self_signed("two.test", &certs).unwrap();
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if seen(&relay).await {
            ok = true;
            break;
        }
    }
    assert!(ok, "new certificate never served");
}
