//! mDNS (src/mdns): the relay binary started with `mdns = true` announces `chatmail-box.local`
//! with its LAN address and the `_https._tcp` service; an mdns-sd resolver in the test finds both.
//!
//! Multicast does not work on `lo` (no MULTICAST flag), so the relay listens on the machine's
//! LAN address (the default route's source address, as on the appliance) and both sides use a
//! private mDNS port (no clash with a responder on 5353); the multicast packets loop back on that
//! interface. Without a non-loopback IPv4 address the test says so and passes without checking.
use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdns_sd::{HostnameResolutionEvent, ServiceDaemon, ServiceEvent};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn relay_announces_chatmail_box_local() {
    let lan = chatmail_box::setup::lan_ip(&chatmail_box::config::Config {
        listen: "0.0.0.0".parse().unwrap(),
        ..Default::default()
    });
    if lan.is_loopback() || !lan.is_ipv4() {
        eprintln!("SKIPPED: no non-loopback IPv4 LAN address here ({lan}); multicast needs one");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mdns_port = free_port(lan); // a TCP port number that is free is a fine private UDP port too
    let https = free_port(lan);
    let http = free_port(lan);
    let cfg = d.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "mail_domain = \"_mdns.test\"\ndata_dir = {:?}\nlisten = \"{lan}\"\nmdns = true\n\
             mdns_port = {mdns_port}\nmax_load_1m = 10000.0\n[ports]\nsmtp = 0\nsubmission = 0\n\
             submissions = 0\nimap = 0\nimaps = 0\nhttps = {https}\nhttp = {http}\n",
            d.path().join("data").to_str().unwrap()
        ),
    )
    .unwrap();
    let _relay = Kill(
        Command::new(env!("CARGO_BIN_EXE_chatmail-box"))
            .args(["--config", cfg.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let t0 = Instant::now();
    let browser = ServiceDaemon::new_with_port(mdns_port).unwrap();
    let rx = browser
        .resolve_hostname(chatmail_box::mdns::HOST, Some(20_000))
        .unwrap();
    let mut found = None;
    while let Ok(ev) = rx.recv_timeout(Duration::from_secs(25)) {
        match ev {
            HostnameResolutionEvent::AddressesFound(_, addrs) => {
                let ips: Vec<IpAddr> = addrs.iter().map(|a| a.to_ip_addr()).collect();
                if ips.contains(&lan) {
                    found = Some(ips);
                    break;
                }
            }
            HostnameResolutionEvent::SearchTimeout(_) => break,
            _ => {}
        }
    }
    let ips = found.unwrap_or_else(|| panic!("chatmail-box.local did not resolve to {lan}"));
    eprintln!("chatmail-box.local -> {ips:?} after {:?}", t0.elapsed());

    let rx = browser.browse("_https._tcp.local.").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let svc = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(s)) if s.host == chatmail_box::mdns::HOST => break s,
            Ok(_) => {}
            Err(_) => panic!("no _https._tcp service for chatmail-box.local"),
        }
    };
    assert_eq!(svc.port, https);
    assert!(svc.addresses.iter().any(|a| a.to_ip_addr() == lan));
    let _ = browser.shutdown();
}
