//! Shared integration-test harness: a real relay in this process on loopback ports, and small
//! line-based clients over real TLS.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chatmail_box::config::Config;
// Accepts any server certificate (the relay's own verifier for `_` domains): these tests
// exercise protocols, not PKI. (The real-client tests check certificates strictly.)
use chatmail_box::delivery::tlsconf::NoVerify as AnyCert;
use chatmail_box::net::{self, Service};
use chatmail_box::Ctx;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub const DOMAIN: &str = "_chat.test";

pub struct TestRelay {
    pub ctx: Arc<Ctx>,
    pub addrs: HashMap<Service, SocketAddr>,
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn test_config(dir: PathBuf) -> Config {
    Config {
        mail_domain: DOMAIN.into(),
        data_dir: dir,
        min_free_disk_space: 0,
        min_available_memory: 0,
        max_load_1m: 1e9,
        // Tests send more than the default burst; the rate-limit tests lower these again.
        max_user_send_per_minute: 100_000,
        max_user_send_burst_size: 100_000,
        ..Config::default()
    }
}

impl TestRelay {
    pub async fn start() -> TestRelay {
        Self::start_with(|_| {}).await
    }

    /// Start a relay with a modified test config; every service on an ephemeral 127.0.0.1 port.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestRelay {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path().to_path_buf());
        f(&mut cfg);
        Self::start_in(dir, cfg).await
    }

    pub async fn start_in(dir: tempfile::TempDir, cfg: Config) -> TestRelay {
        let ctx = Ctx::new(cfg).unwrap();
        let mut listeners = Vec::new();
        let mut addrs = HashMap::new();
        for svc in [
            Service::Mx,
            Service::Submission,
            Service::Submissions,
            Service::Imap,
            Service::Imaps,
            Service::Https,
            Service::Http,
        ] {
            let l = net::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            addrs.insert(svc, l.local_addr().unwrap());
            listeners.push((svc, l));
        }
        let task = tokio::spawn(net::serve(ctx.clone(), listeners));
        TestRelay {
            ctx,
            addrs,
            dir,
            task,
        }
    }

    pub fn addr(&self, svc: Service) -> SocketAddr {
        self.addrs[&svc]
    }
}

pub fn connector(alpn: &[&[u8]]) -> TlsConnector {
    connector_with(rustls::DEFAULT_VERSIONS, alpn)
}

pub fn connector_with(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> TlsConnector {
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

pub type BoxStream = Box<dyn AsyncStream>;
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// A line-oriented client over any stream.
pub struct LineClient {
    pub r: BufReader<BoxStream>,
}

impl LineClient {
    pub async fn plain(addr: SocketAddr) -> LineClient {
        let s = TcpStream::connect(addr).await.unwrap();
        LineClient {
            r: BufReader::new(Box::new(s)),
        }
    }

    pub async fn tls(addr: SocketAddr, alpn: &[&[u8]]) -> LineClient {
        let s = TcpStream::connect(addr).await.unwrap();
        let t = connector(alpn)
            .connect(ServerName::try_from(DOMAIN).unwrap(), s)
            .await
            .unwrap();
        LineClient {
            r: BufReader::new(Box::new(t)),
        }
    }

    /// Upgrade after a STARTTLS exchange. Panics if data was already buffered.
    pub async fn upgrade(self) -> LineClient {
        assert!(self.r.buffer().is_empty(), "data buffered before TLS");
        let inner = self.r.into_inner();
        let t = connector(&[])
            .connect(ServerName::try_from(DOMAIN).unwrap(), inner)
            .await
            .unwrap();
        LineClient {
            r: BufReader::new(Box::new(t)),
        }
    }

    pub async fn send(&mut self, line: &str) {
        let s = self.r.get_mut();
        s.write_all(line.as_bytes()).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        s.flush().await.unwrap();
    }

    pub async fn send_raw(&mut self, data: &[u8]) {
        let s = self.r.get_mut();
        s.write_all(data).await.unwrap();
        s.flush().await.unwrap();
    }

    /// One line without CRLF; empty string at EOF.
    pub async fn line(&mut self) -> String {
        let mut l = String::new();
        let fut = self.r.read_line(&mut l);
        tokio::time::timeout(std::time::Duration::from_secs(20), fut)
            .await
            .expect("timed out waiting for a line")
            .unwrap();
        l.trim_end_matches(['\r', '\n']).to_string()
    }

    /// Read an SMTP reply (all continuation lines); returns (code, full text).
    pub async fn smtp_reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let l = self.line().await;
            assert!(l.len() >= 3, "short SMTP reply: {l:?}");
            text.push_str(&l);
            text.push('\n');
            if l.as_bytes().get(3) != Some(&b'-') {
                return (l[..3].parse().unwrap(), text);
            }
        }
    }

    /// Read IMAP lines until the tagged response for `tag`; returns all lines.
    pub async fn imap_until(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line().await;
            assert!(
                !l.is_empty() || !out.is_empty(),
                "EOF before tagged response"
            );
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }
}

pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A Delta-Chat-shaped PGP/MIME message (CRLF line ends, no terminating dot): a PKESK and a
/// SEIPD packet with `payload` bytes of "ciphertext", ASCII-armored. `preamble` goes before the
/// first MIME boundary, where the encryption check ignores it (handy for dot-stuffing tests).
pub fn pgp_message(from: &str, to: &str, payload: usize, preamble: &str) -> String {
    use base64::Engine;
    // PKESK v3: version, key id, RSA, one 2048-bit MPI.
    let mut pkesk = vec![3, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0x08, 0x00];
    pkesk.extend(std::iter::repeat_n(0xa5, 256));
    // SEIPD v1: version, then the "ciphertext".
    let mut seipd = vec![1u8];
    seipd.extend((0..payload as u32).map(|i| (i * 31 + 7) as u8));
    let mut pk = openpgp_packet(1, &pkesk);
    pk.extend(openpgp_packet(18, &seipd));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pk);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: [...]\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n\
         {preamble}--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n\
         -----BEGIN PGP MESSAGE-----\r\n\r\n{}\r\n-----END PGP MESSAGE-----\r\n\r\n--b--\r\n",
        lines.join("\r\n")
    )
}

/// SMTP DATA payload for `msg`: dot-stuffed, terminated with `.`.
pub fn data_of(msg: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in msg.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    out.push_str(".\r\n");
    out.into_bytes()
}

/// An OpenPGP packet with a new-format header.
pub fn openpgp_packet(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0xc0 | tag];
    match body.len() {
        n if n < 192 => p.push(n as u8),
        n if n < 8384 => {
            let l = n - 192;
            p.push(((l >> 8) + 192) as u8);
            p.push((l & 0xff) as u8);
        }
        n => {
            p.push(0xff);
            p.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    p.extend_from_slice(body);
    p
}
