//! In-process TURN server (RFC 5766, webrtc-rs `turn` crate) on UDP `turn_port` when
//! `turn = true`, replacing upstream's chatmail-turn daemon (relay-behaviour §2.1): realm =
//! `mail_domain`, long-term credentials in the TURN REST form that METADATA
//! `/shared/vendor/deltachat/turn` hands out (username = expiry unix time, optionally
//! `expiry:anything`; password = base64(HMAC-SHA1(turn.secret, username)), [`crate::push::turn`]).
//! Expired usernames are refused, so an allocation cannot be refreshed past its credential's
//! expiry; the crate caps one allocation lifetime at 3600 s.
//!
//! Relay sockets are bound on any free UDP port of the relay address ([`relay_ip`]): the
//! `listen` address if it is a specific one, else the IP of `mail_domain`, `public_ipv4`,
//! `public_ipv6`, else the local address of the default route. At most [`MAX_ALLOCATIONS`]
//! relay sockets exist at once.
//!
//! Known limit of the crate (0.17): every unauthenticated request leaves a nonce in a map that is
//! only pruned when that nonce is presented again, so junk traffic grows memory slowly.
//!
//! Owns: the UDP listener on `turn_port`, relay sockets, the allocation bound, the credential
//! check. Must not know: IMAP or how credentials are advertised, the store.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use turn::auth::{generate_auth_key, AuthHandler};
use turn::relay::RelayAddressGenerator;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;

use crate::config::Config;

/// Relay sockets (allocations) alive at once; each is one UDP socket and two tasks.
pub const MAX_ALLOCATIONS: usize = 1000;

/// A running TURN server. [`Turn::close`] stops it and waits; dropping it stops it too (the
/// crate's tasks end when the server's command channel closes, freeing the UDP port).
pub struct Turn {
    server: Server,
    local: SocketAddr,
    relay_ip: IpAddr,
}

/// What [`start`] needs besides the listening socket.
pub struct Options {
    /// The realm sent to clients; credentials for another realm are refused.
    pub realm: String,
    /// The shared secret of the REST credentials (`turn.secret`).
    pub secret: String,
    /// The address relay sockets are bound on and announced with.
    pub relay_ip: IpAddr,
    pub max_allocations: usize,
}

impl Turn {
    /// The UDP address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address relayed transport addresses carry.
    pub fn relay_ip(&self) -> IpAddr {
        self.relay_ip
    }

    /// Stop listening and close all allocations.
    pub async fn close(self) {
        if let Err(e) = self.server.close().await {
            tracing::warn!(error = %e, "closing the TURN server");
        }
    }
}

/// Start the server from the config: `None` unless `turn = true`. Binds `listen`:`turn_port`
/// and creates `turn.secret` if METADATA has not done so yet.
pub async fn spawn(cfg: &Config) -> anyhow::Result<Option<Turn>> {
    if !cfg.turn {
        return Ok(None);
    }
    let secret = crate::push::turn::secret(&cfg.data_dir).context("reading turn.secret")?;
    let addr = SocketAddr::new(cfg.listen, cfg.turn_port);
    let sock = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("cannot listen on udp {addr} (turn)"))?;
    let opts = Options {
        realm: cfg.mail_domain.clone(),
        secret,
        relay_ip: relay_ip(cfg)?,
        max_allocations: MAX_ALLOCATIONS,
    };
    start(sock, opts).await.map(Some)
}

/// Serve TURN on an already bound UDP socket.
pub async fn start(sock: UdpSocket, opts: Options) -> anyhow::Result<Turn> {
    let local = sock.local_addr()?;
    let relay_ip = opts.relay_ip;
    let server = Server::new(ServerConfig {
        conn_configs: vec![ConnConfig {
            conn: Arc::new(Listener { sock }),
            relay_addr_generator: Box::new(Relays {
                ip: relay_ip,
                slots: Arc::new(Semaphore::new(opts.max_allocations)),
            }),
        }],
        realm: opts.realm.clone(),
        auth_handler: Arc::new(RestAuth {
            secret: opts.secret,
            realm: opts.realm,
        }),
        // 0 = the crate's default (10 min).
        channel_bind_timeout: std::time::Duration::ZERO,
        alloc_close_notify: None,
    })
    .await
    .context("starting the TURN server")?;
    tracing::info!(service = "turn", addr = %local, relay_ip = %relay_ip, "listening");
    Ok(Turn {
        server,
        local,
        relay_ip,
    })
}

/// The address relay sockets use: a specific `listen` address, else the IP of `mail_domain`,
/// `public_ipv4`, `public_ipv6`, else the local address of the default route (no packet sent).
pub fn relay_ip(cfg: &Config) -> anyhow::Result<IpAddr> {
    if !cfg.listen.is_unspecified() {
        return Ok(cfg.listen);
    }
    if let Some(ip) = cfg.ip_domain() {
        return Ok(ip.into());
    }
    if let Some(ip) = cfg.public_ipv4 {
        return Ok(ip.into());
    }
    if let Some(ip) = cfg.public_ipv6.filter(|_| !cfg.disable_ipv6) {
        return Ok(ip.into());
    }
    crate::net::default_route_ip().ok_or_else(|| {
        anyhow::anyhow!(
            "turn: no relay address (set `listen` to a specific address or `public_ipv4`)"
        )
    })
}

/// TURN REST credentials: username `<expiry>` or `<expiry>:<anything>`, checked against the
/// clock; the key is derived from the password the secret gives for that username.
struct RestAuth {
    secret: String,
    realm: String,
}

impl AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        _src: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        if realm != self.realm {
            return Err(turn::Error::Other("wrong realm".into()));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if !unexpired(username, now) {
            return Err(turn::Error::Other("expired or malformed username".into()));
        }
        let password = crate::push::turn::password(&self.secret, username);
        Ok(generate_auth_key(username, realm, &password))
    }
}

/// Whether the username's leading expiry timestamp lies in the future.
fn unexpired(username: &str, now: u64) -> bool {
    let expiry = username.split(':').next().unwrap_or_default();
    matches!(expiry.parse::<u64>(), Ok(t) if t > now)
}

/// The `turn_port` socket. On a dual-stack `[::]` socket IPv4 clients arrive as `::ffff:a.b.c.d`;
/// they are shown to the server as plain IPv4 (so XOR-MAPPED-ADDRESS is an IPv4 address) and
/// mapped back when sending.
struct Listener {
    sock: UdpSocket,
}

fn unmap(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl Listener {
    fn target(&self, a: SocketAddr) -> SocketAddr {
        match (a, self.sock.local_addr()) {
            (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => a,
        }
    }
}

#[async_trait]
impl webrtc_util::Conn for Listener {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.sock.connect(self.target(addr)).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.sock.recv(buf).await?)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let (n, from) = self.sock.recv_from(buf).await?;
        Ok((n, unmap(from)))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.sock.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self.sock.send_to(buf, self.target(target)).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(unmap(self.sock.local_addr()?))
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Binds relay sockets on `ip` (any free port), each holding one of `slots`.
struct Relays {
    ip: IpAddr,
    slots: Arc<Semaphore>,
}

#[async_trait]
impl RelayAddressGenerator for Relays {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn webrtc_util::Conn + Send + Sync>, SocketAddr), turn::Error> {
        if use_ipv4 != self.ip.is_ipv4() {
            return Err(turn::Error::Other("address family not served".into()));
        }
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(service = "turn", "allocation limit reached");
            turn::Error::Other("allocation limit reached".into())
        })?;
        // Bind the wildcard of the family when announcing an address that is not local (NAT).
        let bind_ip = if is_local(self.ip) {
            self.ip
        } else if self.ip.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let sock = UdpSocket::bind((bind_ip, requested_port)).await?;
        let mut addr = sock.local_addr()?;
        addr.set_ip(self.ip);
        Ok((Arc::new(RelaySocket { sock, _slot: slot }), addr))
    }
}

/// Whether `ip` is an address of this host (binding it succeeds).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// A relay socket; its allocation slot is freed when the allocation drops it.
struct RelaySocket {
    sock: UdpSocket,
    _slot: OwnedSemaphorePermit,
}

#[async_trait]
impl webrtc_util::Conn for RelaySocket {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.sock.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.sock.recv(buf).await?)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        Ok(self.sock.recv_from(buf).await?)
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.sock.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self.sock.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.sock.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(unexpired("1000", 999));
        assert!(unexpired("1000:alice", 999));
        assert!(!unexpired("1000", 1000));
        assert!(!unexpired("999:alice", 1000));
        assert!(!unexpired("alice", 0));
        assert!(!unexpired("", 0));
        assert!(!unexpired("-5", 0));
    }

    #[test]
    fn relay_ip_choice() {
        let mut c = Config {
            listen: "10.1.2.3".parse().unwrap(),
            mail_domain: "1.2.3.4".into(),
            ..Config::default()
        };
        assert_eq!(relay_ip(&c).unwrap(), "10.1.2.3".parse::<IpAddr>().unwrap());
        c.listen = Ipv6Addr::UNSPECIFIED.into();
        assert_eq!(relay_ip(&c).unwrap(), "1.2.3.4".parse::<IpAddr>().unwrap());
        c.mail_domain = "chat.example".into();
        c.public_ipv4 = Some("5.6.7.8".parse().unwrap());
        assert_eq!(relay_ip(&c).unwrap(), "5.6.7.8".parse::<IpAddr>().unwrap());
        c.public_ipv4 = None;
        c.public_ipv6 = Some("2001:db8::1".parse().unwrap());
        assert_eq!(
            relay_ip(&c).unwrap(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
