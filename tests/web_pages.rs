//! The public web site over real TLS (relay-behaviour §4.3, §4.4, §15): pages with their content
//! and security headers, the index QR decoded back to the invite link, `robots.txt`,
//! `mta-sts.txt`, the `www.` redirect, `/new` over HTTP/1.1 and HTTP/2 with a request body, and
//! the `/new` rate limit.
mod common;

use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use chatmail_box::net::Service;
use common::{TestRelay, DOMAIN};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One request on a fresh TLS connection, HTTP/2 or HTTP/1.1 by ALPN.
async fn send(relay: &TestRelay, h2: bool, req: Request<Full<Bytes>>) -> Resp {
    let tcp = TcpStream::connect(relay.addr(Service::Https))
        .await
        .unwrap();
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = common::connector(alpn)
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(if h2 { &b"h2"[..] } else { &b"http/1.1"[..] })
    );
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), body.collect())
        .await
        .expect("response body in time")
        .unwrap()
        .to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn req(method: &str, host: &str, path: &str, body: &[u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("https://{host}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

async fn get(relay: &TestRelay, path: &str) -> Resp {
    send(relay, false, req("GET", DOMAIN, path, b"")).await
}

fn assert_secure_headers(r: &Resp) {
    let csp = r.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("http"), "CSP names no other origin: {csp}");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert!(r.headers.get("server").is_none());
}

/// Resources a page loads (src= and stylesheet href=) are all same-origin paths.
fn assert_no_foreign_loads(html: &str) {
    for attr in [
        "src=\"",
        "<link rel=\"stylesheet\" href=\"",
        "rel=\"icon\" href=\"",
    ] {
        for part in html.split(attr).skip(1) {
            let url = part.split('"').next().unwrap();
            assert!(url.starts_with('/') && !url.starts_with("//"), "{url}");
        }
    }
    assert!(!html.contains("<script"), "no scripts");
    assert!(!html.contains("@import"));
}

/// Rasterise the served SVG (qrcode's `M{x} {y}h{w}v{h}H{x}V{y}` rectangles) and decode it.
fn decode_svg_qr(html: &str) -> String {
    let svg = &html[html.find("<svg").expect("inline svg")..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    let vb = svg.split("viewBox=\"0 0 ").nth(1).unwrap();
    let mut it = vb.split('"').next().unwrap().split(' ');
    let w: usize = it.next().unwrap().parse().unwrap();
    let h: usize = it.next().unwrap().parse().unwrap();
    let d = svg.split("<path fill=\"#000\" d=\"").nth(1).unwrap();
    let d = d.split('"').next().unwrap();
    let mut dark = vec![false; w * h];
    for rect in d.split('M').filter(|s| !s.is_empty()) {
        let nums: Vec<usize> = rect
            .split(|c: char| c == ' ' || c.is_ascii_alphabetic())
            .filter(|s| !s.is_empty())
            .map(|n| n.parse().unwrap())
            .collect();
        let (x, y, rw, rh) = (nums[0], nums[1], nums[2], nums[3]);
        for yy in y..y + rh {
            for xx in x..x + rw {
                dark[yy * w + xx] = true;
            }
        }
    }
    const SCALE: usize = 6;
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w * SCALE, h * SCALE, |x, y| {
        if dark[(y / SCALE) * w + x / SCALE] {
            0
        } else {
            255
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().unwrap().1
}

/// A relay with certificate files (ACME-like mode: `DCACCOUNT:` invites), reusing the
/// self-signed pair another relay generated.
async fn files_relay(selfsigned: &TestRelay) -> TestRelay {
    let dir = selfsigned.dir.path().join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    assert!(cert.exists() && key.exists());
    TestRelay::start_with(|c| {
        c.tls_external_cert_and_key = format!("{} {}", cert.display(), key.display());
    })
    .await
}

#[tokio::test]
async fn index_in_self_signed_mode_offers_a_fresh_dclogin() {
    let relay = TestRelay::start().await;
    let r = get(&relay, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").starts_with("text/html"));
    assert_secure_headers(&r);
    assert_no_foreign_loads(&r.body);
    assert!(r.body.contains(&format!("Get a {DOMAIN} chat profile")));
    assert!(r.body.contains("How to join"));
    assert_eq!(r.header("cache-control"), "no-store");
    let link = decode_svg_qr(&r.body);
    assert!(link.starts_with("dclogin:"), "{link}");
    assert!(link.contains(&format!("@{DOMAIN}?p=")) && link.ends_with("&v=1&ic=3"));
    assert!(r
        .body
        .contains(&format!("href=\"{}\"", link.replace('&', "&amp;"))));
    let again = decode_svg_qr(&get(&relay, "/").await.body);
    assert_ne!(link, again, "fresh credentials per page view");
    // A page view creates no account.
    assert!(relay.ctx.store.accounts().unwrap().is_empty());
}

#[tokio::test]
async fn index_with_certificate_files_offers_dcaccount() {
    let first = TestRelay::start().await;
    let relay = files_relay(&first).await;
    let invite = format!("DCACCOUNT:https://{DOMAIN}/new");
    let r = get(&relay, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_secure_headers(&r);
    assert_no_foreign_loads(&r.body);
    assert_eq!(decode_svg_qr(&r.body), invite);
    assert!(r.body.contains(&format!(
        "<a class=\"button\" href=\"{invite}\">Get a {DOMAIN} chat profile</a>"
    )));
    // GET /new sends browsers to the app; POST answers JSON without dclogin_url.
    let r = get(&relay, "/new").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.header("location"),
        format!("dcaccount:https://{DOMAIN}/new")
    );
    let r = send(&relay, true, req("POST", DOMAIN, "/new", b"")).await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["email"]
        .as_str()
        .unwrap()
        .ends_with(&format!("@{DOMAIN}")));
    assert!(v.get("dclogin_url").is_none());
}

#[tokio::test]
async fn info_privacy_css_logo_and_text_files() {
    let relay = TestRelay::start_with(|c| {
        c.max_message_size = 31_457_280;
        c.max_mailbox_size = 500 * 1024 * 1024;
        c.delete_mails_after = 20;
        c.username_min_length = 9;
        c.username_max_length = 9;
        c.privacy_postal = "Jane Operator\nRelay Street 1".into();
        c.privacy_mail = "privacy@chat.example".into();
        c.privacy_pdo = "Dee Pee Oh".into();
        c.privacy_supervisor = "The <Authority>".into();
    })
    .await;
    let r = get(&relay, "/info.html").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_secure_headers(&r);
    assert_no_foreign_loads(&r.body);
    for want in [
        "30 MB",
        "500 MB",
        "20 days",
        "nine random",
        "privacy@chat.example",
    ] {
        assert!(r.body.contains(want), "info lacks {want}");
    }
    let r = get(&relay, "/privacy.html").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_secure_headers(&r);
    for want in [
        "Jane Operator",
        "Relay Street 1",
        "Dee Pee Oh",
        "The &lt;Authority&gt;",
    ] {
        assert!(r.body.contains(want), "privacy lacks {want}");
    }
    let r = get(&relay, "/main.css").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").starts_with("text/css"));
    assert!(!r.body.contains("url("), "CSS loads nothing");
    let r = get(&relay, "/logo.svg").await;
    assert_eq!(r.header("content-type"), "image/svg+xml");
    let r = get(&relay, "/robots.txt").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "User-agent: *\nDisallow: /\n");
    for host in [DOMAIN.to_string(), format!("mta-sts.{DOMAIN}")] {
        let r = send(
            &relay,
            false,
            req("GET", &host, "/.well-known/mta-sts.txt", b""),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.header("content-type").starts_with("text/plain"));
        assert_eq!(
            r.body,
            format!("version: STSv1\nmode: enforce\nmx: {DOMAIN}\nmax_age: 2419200\n")
        );
    }
    let r = send(
        &relay,
        false,
        req(
            "GET",
            &format!("autoconfig.{DOMAIN}"),
            "/mail/config-v1.1.xml",
            b"",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("<port>443</port>"));
    let r = get(&relay, "/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_secure_headers(&r);
}

#[tokio::test]
async fn www_redirects_to_the_domain_over_h1_and_h2() {
    let relay = TestRelay::start().await;
    for h2 in [false, true] {
        let r = send(
            &relay,
            h2,
            req("GET", &format!("www.{DOMAIN}"), "/info.html?x=1", b""),
        )
        .await;
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY, "h2={h2}");
        assert_eq!(
            r.header("location"),
            format!("https://{DOMAIN}/info.html?x=1")
        );
        let r = send(
            &relay,
            h2,
            req("POST", &format!("www.{DOMAIN}:443"), "/", b"data"),
        )
        .await;
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY, "h2={h2}");
        assert_eq!(r.header("location"), format!("https://{DOMAIN}/"));
    }
}

#[tokio::test]
async fn new_answers_posts_with_a_body_over_h1_and_h2() {
    let relay = TestRelay::start().await;
    for h2 in [false, true] {
        for body in [&b""[..], b"{\"x\":1}", &[b'a'; 20_000]] {
            let r = send(&relay, h2, req("POST", DOMAIN, "/new", body)).await;
            assert_eq!(r.status, StatusCode::OK, "h2={h2} body {}", body.len());
            assert_eq!(r.header("content-type"), "application/json");
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert!(v["email"]
                .as_str()
                .unwrap()
                .ends_with(&format!("@{DOMAIN}")));
            assert!(v["dclogin_url"].as_str().unwrap().starts_with("dclogin:"));
            // Fresh limiter state is not what this test is about: stay under the burst.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        // An oversized body gets a clean JSON 413 instead of a reset.
        let r = send(
            &relay,
            h2,
            req("POST", DOMAIN, "/new", &vec![b'a'; 100_000]),
        )
        .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "h2={h2}");
        assert!(r.body.contains("\"reason\""));
        // Unknown paths with a body answer too.
        let r = send(&relay, h2, req("POST", DOMAIN, "/nope", b"xyz")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "h2={h2}");
    }
}

#[tokio::test]
async fn new_is_rate_limited_per_client_ip_with_a_json_reason() {
    let relay = TestRelay::start().await;
    let mut codes = Vec::new();
    let mut limited = None;
    for i in 0..12 {
        let r = send(&relay, i % 2 == 0, req("POST", DOMAIN, "/new", b"")).await;
        codes.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.unwrap_or_else(|| panic!("no 429 after the burst: {codes:?}"));
    assert!(
        codes.iter().filter(|c| **c == 200).count() >= 5,
        "{codes:?}"
    );
    assert_eq!(r.header("content-type"), "application/json");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(!v["reason"].as_str().unwrap().is_empty());
    assert!(r.headers.contains_key("retry-after"));
    // The legacy path shares the bucket; after a pause the client gets credentials again.
    let r = get(&relay, "/cgi-bin/newemail.py").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = get(&relay, "/cgi-bin/newemail.py").await;
    assert_eq!(r.status, StatusCode::OK);
    // Pages are not limited.
    assert_eq!(get(&relay, "/").await.status, StatusCode::OK);
}
