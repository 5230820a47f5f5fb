//! The in-process TURN server (src/turn) against the webrtc-rs TURN client: credentials read over
//! IMAP METADATA allocate a relay address that carries data both ways to a UDP peer; a wrong
//! password, an expired credential and an allocation over the limit are refused, and a released
//! allocation frees its slot.
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chatmail_box::net::Service;
use chatmail_box::push::turn as rest;
use chatmail_box::store::now_unix;
use common::{LineClient, TestRelay, DOMAIN};
use tokio::net::UdpSocket;
use tokio::time::timeout;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);

/// The TURN METADATA value `(host, port, username, password)` over IMAPS.
async fn turn_metadata(relay: &TestRelay) -> (String, u16, String, String) {
    let mut c = LineClient::tls(relay.addr(Service::Imaps), &[]).await;
    c.line().await;
    c.send(&format!(
        "L LOGIN \"turnuser1@{DOMAIN}\" \"turn-password-1\""
    ))
    .await;
    let r = c.imap_until("L").await;
    assert!(r.last().unwrap().starts_with("L OK"), "{r:?}");
    c.send("G GETMETADATA \"\" (/shared/vendor/deltachat/turn)")
        .await;
    let r = c.imap_until("G").await;
    assert_eq!(r.last().unwrap(), "G OK Getmetadata completed", "{r:?}");
    let v = r[0]
        .strip_prefix("* METADATA \"\" (/shared/vendor/deltachat/turn \"")
        .and_then(|v| v.strip_suffix("\")"))
        .unwrap_or_else(|| panic!("unexpected {:?}", r[0]));
    // The password is base64 (no quotes or backslashes), so no unescaping is needed.
    let p: Vec<&str> = v.splitn(4, ':').collect();
    assert_eq!(p.len(), 4, "{v}");
    (
        p[0].to_string(),
        p[1].parse().unwrap(),
        p[2].to_string(),
        p[3].to_string(),
    )
}

/// A listening TURN client on a fresh loopback socket.
async fn client(server: SocketAddr, username: &str, password: &str) -> Client {
    let conn = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let c = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.to_string(),
        password: password.to_string(),
        realm: DOMAIN.to_string(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    })
    .await
    .unwrap();
    c.listen().await.unwrap();
    c
}

/// Try to allocate; `Ok(relay conn)` or the error text.
async fn allocate(
    server: SocketAddr,
    username: &str,
    password: &str,
) -> (Client, Result<impl Conn, String>) {
    let c = client(server, username, password).await;
    let r = timeout(WAIT, c.allocate())
        .await
        .map_err(|_| "allocate timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    (c, r)
}

/// The allocation failed with this TURN error code.
fn assert_refused(err: Option<String>, code: &str, what: &str) {
    let e = err.unwrap_or_else(|| panic!("{what}: allocated"));
    assert!(e.contains(&format!("error {code}")), "{what}: {e}");
}

/// A free UDP port on loopback (bound and released; the relay binds it again).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn metadata_credentials_allocate_and_relay() {
    let port = free_udp_port();
    let relay = TestRelay::start_with(move |c| {
        c.turn = true;
        c.turn_port = port;
        c.listen = LOCALHOST;
    })
    .await;
    let server = chatmail_box::turn::spawn(&relay.ctx.cfg)
        .await
        .unwrap()
        .expect("turn = true starts the server");
    assert_eq!(server.local_addr(), SocketAddr::new(LOCALHOST, port));
    assert_eq!(server.relay_ip(), LOCALHOST);
    let addr = server.local_addr();

    let (host, mport, user, pass) = turn_metadata(&relay).await;
    assert_eq!(host, DOMAIN);
    assert_eq!(mport, port);

    // The advertised credentials allocate a relay address on the listen IP.
    let (c, relay_conn) = allocate(addr, &user, &pass).await;
    let relay_conn = relay_conn.expect("allocation with METADATA credentials");
    let relayed = relay_conn.local_addr().unwrap();
    assert_eq!(relayed.ip(), LOCALHOST);
    assert_ne!(relayed.port(), port);

    // Data flows client -> relay -> peer and back.
    let peer = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    timeout(WAIT, relay_conn.send_to(b"ping", peer_addr))
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from, relayed);
    peer.send_to(b"pong", relayed).await.unwrap();
    let (n, from) = timeout(WAIT, relay_conn.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(from, peer_addr);
    relay_conn.close().await.unwrap();
    c.close().await.unwrap();

    // A wrong password is refused.
    let mut bad = pass.clone();
    bad.replace_range(0..1, if bad.starts_with('A') { "B" } else { "A" });
    let (c, r) = allocate(addr, &user, &bad).await;
    assert_refused(r.err(), "400", "wrong password");
    c.close().await.unwrap();

    // A correctly signed but expired credential is refused.
    let secret = rest::secret(&relay.ctx.cfg.data_dir).unwrap();
    let old = (now_unix() - 10).to_string();
    let (c, r) = allocate(addr, &old, &rest::password(&secret, &old)).await;
    assert_refused(r.err(), "400", "expired credential");
    c.close().await.unwrap();

    // Freshly signed credentials (the METADATA form) still work: the refusals were not blanket.
    let (user2, pass2) = rest::credentials(&secret, now_unix());
    let (c, r) = allocate(addr, &user2, &pass2).await;
    r.expect("fresh credential");
    c.close().await.unwrap();

    server.close().await;
}

#[tokio::test]
async fn allocation_limit_and_release() {
    let sock = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let secret = "0123456789abcdef".to_string();
    let server = chatmail_box::turn::start(
        sock,
        chatmail_box::turn::Options {
            realm: DOMAIN.into(),
            secret: secret.clone(),
            relay_ip: LOCALHOST,
            max_allocations: 1,
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let (user, pass) = rest::credentials(&secret, now_unix());

    let (c1, r1) = allocate(addr, &user, &pass).await;
    let first = r1.expect("first allocation");
    let (c2, r2) = allocate(addr, &user, &pass).await;
    // 508 Insufficient Capacity.
    assert_refused(r2.err(), "508", "allocation over the limit");
    c2.close().await.unwrap();

    // Releasing the first allocation (Refresh with lifetime 0) frees the slot.
    first.close().await.unwrap();
    let mut ok = false;
    for _ in 0..50 {
        let (c, r) = allocate(addr, &user, &pass).await;
        c.close().await.unwrap();
        if r.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "slot not freed after release");
    c1.close().await.unwrap();

    // Dropping the server frees its port (an in-process reload binds it again).
    drop(server);
    let mut rebound = false;
    for _ in 0..50 {
        if UdpSocket::bind(addr).await.is_ok() {
            rebound = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rebound, "TURN port still bound after drop");
}

#[tokio::test]
async fn dual_stack_listener_answers_ipv4_clients_in_ipv4() {
    // The default `listen = "::"`: IPv4 clients reach a dual-stack socket as ::ffff:a.b.c.d.
    let Ok(sock) = UdpSocket::bind("[::]:0").await else {
        eprintln!("no IPv6 on this host; skipped");
        return;
    };
    let port = sock.local_addr().unwrap().port();
    let secret = "fedcba9876543210".to_string();
    let server = chatmail_box::turn::start(
        sock,
        chatmail_box::turn::Options {
            realm: DOMAIN.into(),
            secret: secret.clone(),
            relay_ip: LOCALHOST,
            max_allocations: 4,
        },
    )
    .await
    .unwrap();
    let addr = SocketAddr::new(LOCALHOST, port);
    let (user, pass) = rest::credentials(&secret, now_unix());
    let (c, r) = allocate(addr, &user, &pass).await;
    let relay_conn = r.expect("allocation over the dual-stack socket");
    let mapped = timeout(WAIT, c.send_binding_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mapped.ip(), LOCALHOST, "XOR-MAPPED-ADDRESS {mapped}");

    let peer = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let relayed = relay_conn.local_addr().unwrap();
    peer.send_to(b"early", relayed).await.unwrap(); // no permission yet: dropped
    timeout(WAIT, relay_conn.send_to(b"hi", peer.local_addr().unwrap()))
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"hi");
    peer.send_to(b"back", relayed).await.unwrap();
    let (n, _) = timeout(WAIT, relay_conn.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"back", "only the permitted datagram arrives");
    c.close().await.unwrap();
    server.close().await;
}
