//! Federation test harness: a small authoritative DNS server on loopback (UDP + TCP, built on
//! hickory-proto) and relays that bind their own 127.0.0.x address with the shared SMTP and
//! HTTPS port numbers, so relay A reaches relay B exactly as on the Internet (MX lookup, A
//! record, port 25 / 443 — here the test's port numbers).
//!
//! Include with `#[path = "common/fed.rs"] mod fed;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatmail_box::config::{Config, Ports};
use chatmail_box::store::Account;
use chatmail_box::{delivery, net, Ctx};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

type Zone = HashMap<(String, RecordType), Vec<RData>>;

/// An authoritative DNS server for the test's names. Unknown names answer NXDOMAIN, known
/// names without records of the asked type answer NOERROR with no records.
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn key(name: &str) -> String {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    format!("{n}.")
}

fn answer(zone: &Zone, req: &Message) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.edns = req.edns.clone();
    let Some(q) = req.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    resp.add_query(q.clone());
    let name = key(&q.name().to_ascii());
    let known = zone.keys().any(|(n, _)| *n == name);
    match zone.get(&(name.clone(), q.query_type())) {
        Some(rs) => {
            for r in rs {
                resp.add_answer(Record::from_rdata(q.name().clone(), 60, r.clone()));
            }
        }
        None if known => {}
        None => resp.metadata.response_code = ResponseCode::NXDomain,
    }
    resp
}

impl TestDns {
    pub async fn start() -> TestDns {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let z = zone.clone();
        let t1 = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut resp = answer(&z.lock().unwrap(), &req);
                let mut bytes = resp.to_vec().unwrap();
                if bytes.len() > 1232 {
                    resp = resp.truncate();
                    bytes = resp.to_vec().unwrap();
                }
                let _ = udp.send_to(&bytes, peer).await;
            }
        });
        let z = zone.clone();
        let t2 = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else {
                    continue;
                };
                let z = z.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = s.read_u16().await else { return };
                        let mut buf = vec![0u8; len as usize];
                        if s.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let Ok(req) = Message::from_vec(&buf) else {
                            return;
                        };
                        let bytes = answer(&z.lock().unwrap(), &req).to_vec().unwrap();
                        let _ = s.write_u16(bytes.len() as u16).await;
                        let _ = s.write_all(&bytes).await;
                    }
                });
            }
        });
        TestDns {
            addr,
            zone,
            tasks: vec![t1, t2],
        }
    }

    pub fn add(&self, name: &str, rdata: RData) {
        let rt = rdata.record_type();
        self.zone
            .lock()
            .unwrap()
            .entry((key(name), rt))
            .or_default()
            .push(rdata);
    }

    pub fn a(&self, name: &str, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.add(name, RData::A(A(v4))),
            IpAddr::V6(v6) => self.add(name, RData::AAAA(hickory_proto::rr::rdata::AAAA(v6))),
        }
    }

    pub fn mx(&self, name: &str, pref: u16, host: &str) {
        self.add(
            name,
            RData::MX(MX::new(pref, Name::from_ascii(key(host)).unwrap())),
        );
    }

    /// A TXT record split into 255-byte strings, as a zone file would publish it.
    pub fn txt(&self, name: &str, value: &str) {
        let parts = chatmail_box::dkim::split_txt(value);
        self.add(name, RData::TXT(TXT::new(parts)));
    }
}

/// The loopback network of one test: its DNS server and the shared port numbers.
pub struct FedNet {
    pub dns: TestDns,
    pub smtp_port: u16,
    pub https_port: u16,
}

/// A free port number (bound on 127.0.0.1 and released; other 127.0.0.x addresses share it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl FedNet {
    pub async fn new() -> FedNet {
        FedNet {
            dns: TestDns::start().await,
            smtp_port: free_port(),
            https_port: free_port(),
        }
    }

    /// The config of a relay for `domain` on `ip`: MX and HTTPS only, on the shared ports.
    pub fn config(&self, domain: &str, ip: IpAddr, dir: PathBuf) -> Config {
        Config {
            mail_domain: domain.into(),
            data_dir: dir,
            min_free_disk_space: 0,
            min_available_memory: 0,
            max_load_1m: 1e9,
            listen: ip,
            ports: Ports {
                smtp: self.smtp_port,
                submission: 0,
                submissions: 0,
                imap: 0,
                imaps: 0,
                https: self.https_port,
                http: 0,
            },
            dns_nameserver: Some(self.dns.addr.to_string()),
            outbound_smtp_port: self.smtp_port,
            outbound_https_port: self.https_port,
            delivery_retry_base: 1,
            ..Config::default()
        }
    }

    /// Start a relay and publish its MX, A and DKIM records.
    pub async fn relay(&self, domain: &str, ip: &str, f: impl FnOnce(&mut Config)) -> FedRelay {
        let ip: IpAddr = ip.parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = self.config(domain, ip, dir.path().to_path_buf());
        f(&mut cfg);
        let r = FedRelay::start(dir, cfg).await;
        self.dns.mx(domain, 10, domain);
        self.dns.a(domain, ip);
        self.publish_dkim(&r).await;
        r
    }

    pub async fn publish_dkim(&self, r: &FedRelay) {
        let c = r.ctx.clone();
        let recs = tokio::task::spawn_blocking(move || c.dkim.dns_records().unwrap())
            .await
            .unwrap();
        for (owner, value) in recs {
            self.dns
                .txt(&format!("{owner}.{}", r.ctx.cfg.mail_domain), &value);
        }
    }
}

/// A running relay with its listeners and queue runner.
pub struct FedRelay {
    pub ctx: Arc<Ctx>,
    pub dir: Option<tempfile::TempDir>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FedRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FedRelay {
    pub async fn start(dir: tempfile::TempDir, cfg: Config) -> FedRelay {
        let mut last = None;
        // After a restart, tasks of the previous instance may still hold the data dir briefly.
        for _ in 0..100 {
            match Ctx::new(cfg.clone()) {
                Ok(ctx) => {
                    let listeners = net::bind_all(&ctx).await.unwrap();
                    let serve = tokio::spawn(net::serve(ctx.clone(), listeners));
                    let runner = delivery::spawn(ctx.clone());
                    return FedRelay {
                        ctx,
                        dir: Some(dir),
                        tasks: vec![serve, runner],
                    };
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("relay did not start: {:?}", last);
    }

    /// Stop listeners and runner; returns the data dir and config for a restart.
    pub async fn stop(mut self) -> (tempfile::TempDir, Config) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        let cfg = (*self.ctx.cfg).clone();
        (self.dir.take().unwrap(), cfg)
    }

    pub fn domain(&self) -> &str {
        &self.ctx.cfg.mail_domain
    }

    pub fn addr(&self, local: &str) -> String {
        format!("{local}@{}", self.domain())
    }

    /// Create an account (no password login needed here).
    pub fn user(&self, local: &str) -> String {
        let addr = self.addr(local);
        self.ctx
            .store
            .put_account(&Account {
                addr: addr.clone(),
                password_hash: "{PLAIN}x".into(),
                created: 0,
                enforce_e2ee: true,
                last_login_day: 0,
            })
            .unwrap();
        addr
    }

    /// Queue `msg` from local `sender` to `rcpts` (grouped by domain), as submission will.
    pub fn send(&self, sender: &str, rcpts: &[&str], msg: &[u8]) {
        let mine = self.ctx.cfg.address_domain();
        let mut local = Vec::new();
        let mut remote: Vec<(String, Vec<String>)> = Vec::new();
        for r in rcpts {
            let d = r.rsplit_once('@').unwrap().1.to_string();
            if d == mine {
                local.push(r.to_string());
            } else if let Some(e) = remote.iter_mut().find(|(x, _)| *x == d) {
                e.1.push(r.to_string());
            } else {
                remote.push((d, vec![r.to_string()]));
            }
        }
        self.ctx
            .store
            .accept_message(sender, &local, &remote, msg)
            .unwrap();
    }

    /// Bodies in `addr`'s INBOX.
    pub fn inbox(&self, addr: &str) -> Vec<Vec<u8>> {
        let Some(snap) = self.ctx.store.snapshot(addr, "INBOX").unwrap() else {
            return Vec::new();
        };
        snap.messages
            .iter()
            .map(|m| self.ctx.store.read_body(m).unwrap())
            .collect()
    }

    /// Wait until `addr`'s INBOX holds at least `n` messages.
    pub async fn wait_inbox(&self, addr: &str, n: usize, secs: u64) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let m = self.inbox(addr);
            if m.len() >= n {
                return m;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{addr}: {} of {n} messages after {secs}s", m.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the outbound queue is empty.
    pub async fn wait_queue_empty(&self, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.ctx.store.queue_len() > 0 {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "queue not empty: {:?}",
                    self.ctx.store.queue_items().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
