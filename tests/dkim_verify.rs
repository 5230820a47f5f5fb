//! DKIM signing and strict verification, and the `/mxdeliv` endpoint's answers
//! (relay-behaviour §7, §8, §9.5), against relays with keys published in a test DNS server.

mod common;
#[path = "policy_corpus.rs"]
mod corpus;
#[path = "common/fed.rs"]
mod fed;

use std::net::SocketAddr;

use bytes::Bytes;
use chatmail_box::dkim::{DkimFailure, NO_SIGNATURE, NO_VALID_SIGNATURE};
use fed::{FedNet, FedRelay};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;

/// POST (or another method) to `/mxdeliv` over TLS; returns (status, body).
async fn mxdeliv(
    addr: SocketAddr,
    method: &str,
    from: Option<&str>,
    to: &[&str],
    body: Vec<u8>,
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = common::connector(&[b"http/1.1"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri("/mxdeliv")
        .header("host", "relay");
    if let Some(f) = from {
        req = req.header("X-MAIL-FROM", f);
    }
    for t in to {
        req = req.header("X-MAIL-TO", *t);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).trim().to_string())
}

/// The same over HTTP/2 (as upstream relays' clients negotiate it).
async fn mxdeliv_h2(addr: SocketAddr, to: &str, body: Vec<u8>) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = common::connector(&[b"h2"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("https://relay/mxdeliv")
        .header("X-MAIL-TO", to)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).trim().to_string())
}

fn https(r: &FedRelay) -> SocketAddr {
    SocketAddr::new(r.ctx.cfg.listen, r.ctx.cfg.ports.https)
}

fn sign(r: &FedRelay, msg: &[u8]) -> Vec<u8> {
    r.ctx.dkim.sign_blocking(msg).unwrap()
}

struct Setup {
    net: FedNet,
    a: FedRelay,
    b: FedRelay,
    /// A third relay whose key is published, to forge "another domain's signature".
    c: FedRelay,
}

async fn setup(ips: [&str; 3]) -> Setup {
    let net = FedNet::new().await;
    let a = net.relay("_one.test", ips[0], |_| {}).await;
    let b = net.relay("_two.test", ips[1], |_| {}).await;
    let c = net.relay("_three.test", ips[2], |_| {}).await;
    Setup { net, a, b, c }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mxdeliv_status_codes() {
    let s = setup(["127.0.1.1", "127.0.1.2", "127.0.1.3"]).await;
    let (a, b) = (&s.a, &s.b);
    let alice = a.addr("alice");
    let bob = b.user("bob");
    let ep = https(b);
    let good = sign(a, &corpus::chat_message(&alice));

    let (st, text) = mxdeliv(ep, "GET", None, &[], Vec::new()).await;
    assert_eq!((st, text.as_str()), (405, "Method Not Allowed"));
    let (st, _) = mxdeliv(ep, "PUT", Some(&alice), &[&bob], good.clone()).await;
    assert_eq!(st, 405);

    // Not our domain: no open relay.
    let (st, text) = mxdeliv(ep, "POST", Some(&alice), &["x@_one.test"], good.clone()).await;
    assert_eq!(st, 400);
    assert!(text.starts_with("554 5.7.1"), "{text}");
    let (st, text) = mxdeliv(ep, "POST", Some(&alice), &[], good.clone()).await;
    assert_eq!(st, 400, "{text}");

    // HTTP/2: early rejections still answer.
    let (st, text) = mxdeliv_h2(ep, "x@_one.test", good.clone()).await;
    assert_eq!(st, 400, "{text}");
    let mut big = good.clone();
    big.extend(std::iter::repeat_n(
        b'x',
        b.ctx.cfg.max_message_size as usize + 10,
    ));
    let (st, text) = mxdeliv_h2(ep, &bob, big).await;
    assert_eq!(
        (st, text.as_str()),
        (413, "552 Message exceeds maximum size")
    );

    // Too big.
    let mut big = good.clone();
    big.extend(std::iter::repeat_n(
        b'x',
        b.ctx.cfg.max_message_size as usize + 10,
    ));
    let (st, text) = mxdeliv(ep, "POST", Some(&alice), &[&bob], big).await;
    assert_eq!(
        (st, text.as_str()),
        (413, "552 Message exceeds maximum size")
    );

    // Cleartext to an account that enforces encryption.
    let plain = sign(a, &corpus::plain(&alice));
    let (st, text) = mxdeliv(ep, "POST", Some(&alice), &[&bob], plain).await;
    assert_eq!(st, 400);
    assert!(text.starts_with("523 "), "{text}");

    // Accepted and stored, without trace headers.
    let (st, text) = mxdeliv(ep, "POST", Some(&alice), &[&bob], good.clone()).await;
    assert_eq!((st, text.as_str()), (200, "250 OK"));
    let inbox = b.inbox(&bob);
    assert_eq!(inbox.len(), 1);
    assert!(!String::from_utf8_lossy(&inbox[0]).contains("DKIM-Signature"));

    // Envelope sender ≠ header From is not rejected (forwarding).
    let (st, _) = mxdeliv(ep, "POST", Some("fwd@elsewhere.test"), &[&bob], good).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgeries_are_rejected_on_mxdeliv() {
    let s = setup(["127.0.1.4", "127.0.1.5", "127.0.1.6"]).await;
    let (a, b, c) = (&s.a, &s.b, &s.c);
    let alice = a.addr("alice");
    let bob = b.user("bob");
    let ep = https(b);
    let msg = corpus::chat_message(&alice);

    let post = |body: Vec<u8>| {
        let (alice, bob) = (alice.clone(), bob.clone());
        async move { mxdeliv(ep, "POST", Some(&alice), &[&bob], body).await }
    };

    // No signature at all.
    assert_eq!(post(msg.clone()).await, (400, NO_SIGNATURE.to_string()));
    // A broken signature: the body changed after signing.
    let broken = String::from_utf8(sign(a, &msg))
        .unwrap()
        .replace("OpenPGP encrypted message", "OpenPGP encrypted messagE")
        .into_bytes();
    assert_eq!(post(broken).await, (400, NO_VALID_SIGNATURE.to_string()));
    // A header changed after signing.
    let signed = String::from_utf8(sign(a, &msg)).unwrap();
    let tampered = signed
        .replace("Subject: [...]", "Subject: [..]")
        .into_bytes();
    assert_eq!(post(tampered).await, (400, NO_VALID_SIGNATURE.to_string()));
    // Over-signing: an added Subject breaks the signature.
    let mut added = b"Subject: added\r\n".to_vec();
    added.extend_from_slice(signed.as_bytes());
    assert_eq!(post(added).await, (400, NO_VALID_SIGNATURE.to_string()));
    // Another domain's valid signature (d=_three.test on mail From _one.test).
    assert_eq!(
        post(sign(c, &msg)).await,
        (400, NO_VALID_SIGNATURE.to_string())
    );
    // A valid signature of A with a From domain that is not A's.
    let mallory = corpus::chat_message("mallory@_three.test");
    assert_eq!(
        post(sign(a, &mallory)).await,
        (400, NO_VALID_SIGNATURE.to_string())
    );
    // An address-literal sender: no client IP over HTTP, so it never matches.
    let literal = corpus::chat_message("x@[127.0.1.4]");
    let (st, text) = post(literal).await;
    assert_eq!(st, 400);
    assert!(
        text.starts_with("500 Invalid FROM domain literal: 127.0.1.4 does not match origin IP"),
        "{text}"
    );
    assert!(b.inbox(&bob).is_empty());
    // The genuine message passes.
    assert_eq!(post(sign(a, &msg)).await, (200, "250 OK".to_string()));
    assert_eq!(b.inbox(&bob).len(), 1);
    drop(s.net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_api_for_port_25() {
    let s = setup(["127.0.1.7", "127.0.1.8", "127.0.1.9"]).await;
    let (a, b) = (&s.a, &s.b);
    let alice = a.addr("alice");
    let v = &b.ctx.dkim.verifier;
    let msg = corpus::chat_message(&alice);
    let signed = sign(a, &msg);
    assert_eq!(v.verify_aligned(&signed, "_one.test").await, Ok(()));
    assert_eq!(v.verify_aligned(&signed, "_ONE.test").await, Ok(()));
    assert_eq!(v.verify_origin(&signed, None).await, Ok(()));
    assert_eq!(
        v.verify_aligned(&signed, "_three.test").await,
        Err(DkimFailure::NoValidSignature)
    );
    let e = v.verify_origin(&msg, None).await.unwrap_err();
    assert_eq!(e.reply(), "554 5.7.1 No DKIM signature found");
    assert!(e.is_permanent());
    // Address literals: compared with the connecting IP, no DKIM.
    let lit = corpus::chat_message("x@[127.0.1.7]");
    assert_eq!(
        v.verify_origin(&lit, Some("127.0.1.7".parse().unwrap()))
            .await,
        Ok(())
    );
    let e = v
        .verify_origin(&lit, Some("127.0.1.8".parse().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(
        e.reply(),
        "500 Invalid FROM domain literal: 127.0.1.7 does not match origin IP 127.0.1.8"
    );
    // The shared inbound decision that port 25 calls: policy, then origin check.
    let bob = b.user("bob");
    let rcpts = vec![bob.clone()];
    let ok = chatmail_box::delivery::inbound::check(
        &b.ctx,
        "x@[127.0.1.7]",
        &rcpts,
        &lit,
        Some("127.0.1.7".parse().unwrap()),
    )
    .await
    .unwrap();
    chatmail_box::delivery::inbound::deliver(&b.ctx, "x@[127.0.1.7]", &rcpts, ok, &lit)
        .await
        .unwrap();
    assert_eq!(b.inbox(&bob).len(), 1);
    let err = chatmail_box::delivery::inbound::check(&b.ctx, &alice, &rcpts, &msg, None)
        .await
        .unwrap_err();
    assert_eq!(err, NO_SIGNATURE);
    let plain = sign(a, &corpus::plain(&alice));
    let err = chatmail_box::delivery::inbound::check(&b.ctx, &alice, &rcpts, &plain, None)
        .await
        .unwrap_err();
    assert!(err.starts_with("523 "), "{err}");
    // The key record was cached; a failing signature with that key drops the entry.
    assert!(v.cached_keys() >= 1);
    let mut broken = signed.clone();
    let n = broken.len();
    broken[n - 40] ^= 1;
    let before = v.cached_keys();
    assert!(v.verify_aligned(&broken, "_one.test").await.is_err());
    assert_eq!(v.cached_keys(), before);
    // A body-hash failure does not reach the key; a header failure does.
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("Subject: [...]", "Subject: x")
        .into_bytes();
    assert!(v.verify_aligned(&tampered, "_one.test").await.is_err());
    assert_eq!(v.cached_keys(), before - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_private_stable_and_ed25519_signs_too() {
    use std::os::unix::fs::PermissionsExt;
    let net = FedNet::new().await;
    let a = net
        .relay("_ed.test", "127.0.1.10", |c| c.dkim_ed25519 = true)
        .await;
    let b = net.relay("_two.test", "127.0.1.11", |_| {}).await;
    let path = chatmail_box::dkim::key_path(&a.ctx.cfg.data_dir, "opendkim");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let records = a.ctx.dkim.dns_records().unwrap();
    assert_eq!(records.len(), 2);
    assert!(records[0].1.starts_with("v=DKIM1;k=rsa;p=MIIBIjAN"));
    assert!(records[0].1.ends_with(";s=email;t=s"));
    assert!(records[1].1.starts_with("v=DKIM1;k=ed25519;p="));

    let alice = a.addr("alice");
    let signed = sign(&a, &corpus::chat_message(&alice));
    let text = String::from_utf8_lossy(&signed);
    assert_eq!(text.matches("DKIM-Signature:").count(), 2);
    assert!(text.contains("a=rsa-sha256"));
    assert!(text.contains("a=ed25519-sha256"));
    assert!(text.contains("c=relaxed/simple"));
    assert!(!text.contains(" l="));
    assert_eq!(
        b.ctx
            .dkim
            .verifier
            .verify_aligned(&signed, "_ed.test")
            .await,
        Ok(())
    );
    // A restart keeps the key.
    let (dir, cfg) = a.stop().await;
    let a = FedRelay::start(dir, cfg).await;
    assert_eq!(a.ctx.dkim.dns_records().unwrap(), records);
}
