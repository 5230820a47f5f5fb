//! Invite links (`dclogin:`, `DCACCOUNT:`), fresh credentials, and the terminal QR code.
//!
//! Owns: the link formats of client-contract.md §4.1. Must not know: sockets or the store.

use rand::distributions::{Alphanumeric, DistString, Uniform};
use rand::Rng;

use crate::config::Config;

/// A random local part of `len` characters from `[a-z0-9]`.
pub fn random_local(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    let d = Uniform::new(0, CHARS.len());
    (0..len).map(|_| CHARS[rng.sample(d)] as char).collect()
}

/// A random password of 20 alphanumeric characters (upstream's `/new` uses
/// `password_min_length + 3`; longer is fine for every client).
pub fn random_password() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 20)
}

/// Percent-encode everything except RFC 3986 unreserved characters (and `keep`).
pub fn percent_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep.contains(&b)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where the client should connect, for `dclogin:` links.
pub struct Endpoints<'a> {
    pub host: &'a str,
    pub imap_port: u16,
    pub smtp_port: u16,
}

/// `dclogin:<addr>?p=<pw>&v=1[&ih=..&ip=..&is=ssl&sh=..&sp=..&ss=ssl]&ic=3`
pub fn dclogin(addr: &str, password: &str, ep: Option<&Endpoints>) -> String {
    let mut s = format!(
        "dclogin:{}?p={}&v=1",
        percent_encode(addr, b"@[]"),
        percent_encode(password, b"")
    );
    if let Some(ep) = ep {
        let host = percent_encode(ep.host, b"[]:");
        s.push_str(&format!(
            "&ih={host}&ip={}&is=ssl&sh={host}&sp={}&ss=ssl",
            ep.imap_port, ep.smtp_port
        ));
    }
    s.push_str("&ic=3");
    s
}

/// Render `data` as a QR code with Unicode half blocks (two modules per character cell).
pub fn terminal_qr(data: &str) -> String {
    match qrcode::QrCode::with_error_correction_level(data, qrcode::EcLevel::L) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

/// The link `chatmail-box invite` prints: `DCACCOUNT:https://<domain>/new` when the relay has a
/// certificate clients trust (ACME or certificate files), else (self-signed, including LAN-only
/// mode whose domain is the LAN address) a `dclogin:` link for a fresh account with `ic=3`,
/// naming `host` (default: the IP of an IP-only relay) and the implicit-TLS ports when known.
/// `None` before setup (no `mail_domain`).
pub fn invite_link(cfg: &Config, host: Option<&str>) -> Option<String> {
    let domain = cfg.mail_domain.trim();
    if domain.is_empty() {
        return None;
    }
    if !matches!(cfg.tls_mode(), crate::config::TlsMode::SelfSigned) {
        return Some(format!("DCACCOUNT:https://{domain}/new"));
    }
    let addr = format!(
        "{}@{}",
        random_local(cfg.username_max_length),
        cfg.address_domain()
    );
    let ip = cfg.ip_domain().map(|ip| ip.to_string());
    let ep = host.or(ip.as_deref()).map(|host| Endpoints {
        host,
        imap_port: cfg.ports.imaps,
        smtp_port: cfg.ports.submissions,
    });
    Some(dclogin(&addr, &random_password(), ep.as_ref()))
}

/// What `chatmail-box invite` prints: the QR code in the terminal and the link under it.
pub fn invite_text(link: &str) -> String {
    format!(
        "Scan with Delta Chat (or open the link on the phone):\n\n{}\n{link}\n",
        terminal_qr(link)
    )
}

/// The invite `make run` prints: fresh credentials as a `dclogin:` link that points a client on
/// this machine at `host` with the configured implicit-TLS ports, plus its QR code. The account
/// is created when the client first logs in.
pub fn terminal_invite(cfg: &Config, host: &str) -> String {
    let addr = format!(
        "{}@{}",
        random_local(cfg.username_max_length),
        cfg.address_domain()
    );
    let link = dclogin(
        &addr,
        &random_password(),
        Some(&Endpoints {
            host,
            imap_port: cfg.ports.imaps,
            smtp_port: cfg.ports.submissions,
        }),
    );
    format!(
        "\nScan with Delta Chat (or paste the link into \"Add account\" → \"Use other server\"):\n\n{}\n{link}\n",
        terminal_qr(&link)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dclogin_encodes_like_upstream() {
        let s = dclogin("ab@[1.2.3.4]", "p@ss w+rd", None);
        assert_eq!(s, "dclogin:ab@[1.2.3.4]?p=p%40ss%20w%2Brd&v=1&ic=3");
        let s = dclogin(
            "a@x",
            "pw",
            Some(&Endpoints {
                host: "127.0.0.1",
                imap_port: 993,
                smtp_port: 465,
            }),
        );
        assert!(s.contains("&ih=127.0.0.1&ip=993&is=ssl&sh=127.0.0.1&sp=465&ss=ssl&ic=3"));
    }

    #[test]
    fn random_credentials_have_the_right_shape() {
        let l = random_local(9);
        assert_eq!(l.len(), 9);
        assert!(l
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(random_password(), random_password());
        assert!(terminal_qr("dclogin:x").contains('█'));
    }
}
