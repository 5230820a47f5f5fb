//! The public pages (relay-behaviour §15.1): index with the invite button and QR code, info with
//! the configured limits, privacy from the `privacy_*` keys. Templates, CSS and logo live in
//! `web/` at the repository root and are compiled into the binary; nothing is loaded from
//! another origin. The QR code is an inline SVG rendered by the `qrcode` crate.
//!
//! Self-signed mode (no certificate a client would trust): `DCACCOUNT:https://…/new` cannot work
//! because Delta Chat checks TLS strictly there, so the index carries a fresh `dclogin:` link
//! with `ic=3` instead, rendered on the server (no JavaScript; the page is `no-store`). The
//! account is only created at first login, so a page view creates nothing.
//!
//! Owns: page texts and their variables. Must not know: routing, sockets, the store.

use std::sync::OnceLock;

use minijinja::{context, Environment, Value};

use crate::config::{Config, TlsMode};
use crate::invite;

pub const CSS: &str = include_str!("../../web/main.css");
pub const LOGO_SVG: &str = include_str!("../../web/logo.svg");

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../../web/layout.html")),
    ("index.html", include_str!("../../web/index.html")),
    ("info.html", include_str!("../../web/info.html")),
    ("privacy.html", include_str!("../../web/privacy.html")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            // The templates are part of the binary; the unit tests render every one.
            env.add_template(name, src)
                .expect("valid built-in template");
        }
        env
    })
}

fn render(name: &str, ctx: Value) -> String {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("template {name}: {e}");
            String::from("<!doctype html><title>error</title><p>page unavailable</p>")
        }
    }
}

/// Whether the relay hands out `dclogin:` links instead of `DCACCOUNT:` (self-signed mode).
pub fn self_signed(cfg: &Config) -> bool {
    matches!(cfg.tls_mode(), TlsMode::SelfSigned)
}

/// The invite link of ACME / external-certificate mode (relay-behaviour §4.4).
pub fn dcaccount_link(cfg: &Config) -> String {
    format!("DCACCOUNT:https://{}/new", cfg.mail_domain)
}

/// Fresh credentials `(email, password, dclogin_url)`; `/new` and the self-signed index use
/// them. IP-only relays name the host and implicit-TLS ports in the link (relay-behaviour
/// §4.3), since the client cannot run autoconfig for an address literal.
pub fn fresh_dclogin(cfg: &Config) -> (String, String, String) {
    let email = format!(
        "{}@{}",
        invite::random_local(cfg.username_max_length),
        cfg.address_domain()
    );
    let password = invite::random_password();
    let ip = cfg.ip_domain().map(|ip| ip.to_string());
    let ep = ip.as_deref().map(|host| invite::Endpoints {
        host,
        imap_port: cfg.ports.imaps,
        smtp_port: cfg.ports.submissions,
    });
    let url = invite::dclogin(&email, &password, ep.as_ref());
    (email, password, url)
}

/// `data` as an inline SVG QR code: one unit per module, a four-module quiet zone, scaled by
/// CSS. Error correction H when it fits (as upstream's invite PNG), lower for long links.
pub fn qr_svg(data: &str) -> String {
    use qrcode::{render::svg, EcLevel, QrCode};
    let Some(code) = [EcLevel::H, EcLevel::Q, EcLevel::M, EcLevel::L]
        .into_iter()
        .find_map(|l| QrCode::with_error_correction_level(data, l).ok())
    else {
        return String::new();
    };
    let side = code.width() + 8;
    let svg = code
        .render::<svg::Color>()
        .module_dimensions(1, 1)
        .quiet_zone(true)
        .dark_color(svg::Color("#000"))
        .light_color(svg::Color("#fff"))
        .build();
    let svg = svg
        .strip_prefix(r#"<?xml version="1.0" standalone="yes"?>"#)
        .unwrap_or(&svg);
    svg.replacen(
        &format!(r#" width="{side}" height="{side}""#),
        r#" class="qr" role="img" aria-label="QR code of the invite link""#,
        1,
    )
}

/// Escape for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The index page and whether it must not be cached (it carries fresh credentials).
pub fn index(cfg: &Config) -> (String, bool) {
    let self_signed = self_signed(cfg);
    let invite = if self_signed {
        fresh_dclogin(cfg).2
    } else {
        dcaccount_link(cfg)
    };
    let page = render(
        "index.html",
        context! {
            page => "index",
            domain => &cfg.mail_domain,
            self_signed,
            invite => Value::from_safe_string(html_escape(&invite)),
            qr_svg => Value::from_safe_string(qr_svg(&invite)),
        },
    );
    (page, self_signed)
}

pub fn info(cfg: &Config) -> String {
    let lengths = if cfg.username_min_length == cfg.username_max_length {
        number_word(cfg.username_max_length)
    } else {
        format!(
            "{} to {}",
            number_word(cfg.username_min_length),
            number_word(cfg.username_max_length)
        )
    };
    render(
        "info.html",
        context! {
            page => "info",
            domain => &cfg.mail_domain,
            max_user_send_per_minute => cfg.max_user_send_per_minute,
            max_message_size => human_size(cfg.max_message_size),
            max_mailbox_size => human_size(cfg.max_mailbox_size),
            delete_mails_after => cfg.delete_mails_after,
            delete_large_after => cfg.delete_large_after,
            delete_inactive_users_after => cfg.delete_inactive_users_after,
            username_lengths => lengths,
            privacy_mail => cfg.privacy_mail.trim(),
        },
    )
}

pub fn privacy(cfg: &Config) -> String {
    render(
        "privacy.html",
        context! {
            page => "privacy",
            domain => &cfg.mail_domain,
            delete_mails_after => cfg.delete_mails_after,
            delete_inactive_users_after => cfg.delete_inactive_users_after,
            privacy_postal => cfg.privacy_postal.trim(),
            privacy_mail => cfg.privacy_mail.trim(),
            privacy_pdo => cfg.privacy_pdo.trim(),
            privacy_supervisor => cfg.privacy_supervisor.trim(),
        },
    )
}

/// Small numbers as English words (upstream renders `username_*_length` so), larger as digits.
pub fn number_word(n: usize) -> String {
    const WORDS: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    WORDS
        .get(n)
        .map(|w| w.to_string())
        .unwrap_or_else(|| n.to_string())
}

/// Bytes as MB / GB (binary units, as chatmail.ini sizes), e.g. 31457280 → "30 MB".
pub fn human_size(bytes: u64) -> String {
    const MB: u64 = 1024 * 1024;
    const GB: u64 = 1024 * MB;
    if bytes >= GB && bytes.is_multiple_of(GB) {
        format!("{} GB", bytes / GB)
    } else if bytes >= MB {
        let tenths = (bytes * 10 + MB / 2) / MB;
        if tenths.is_multiple_of(10) {
            format!("{} MB", tenths / 10)
        } else {
            format!("{}.{} MB", tenths / 10, tenths % 10)
        }
    } else {
        format!("{} kB", bytes.div_ceil(1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_sizes() {
        assert_eq!(number_word(9), "nine");
        assert_eq!(number_word(12), "twelve");
        assert_eq!(number_word(13), "13");
        assert_eq!(human_size(31_457_280), "30 MB");
        assert_eq!(human_size(500 * 1024 * 1024), "500 MB");
        assert_eq!(human_size(2048 * 1024 * 1024), "2 GB");
        assert_eq!(human_size(1536 * 1024), "1.5 MB");
        assert_eq!(human_size(2000), "2 kB");
    }

    #[test]
    fn every_template_renders() {
        let mut cfg = Config {
            mail_domain: "chat.example.org".into(),
            privacy_postal: "Jane Doe\nMain Street 1 <b>".into(),
            privacy_mail: "privacy@example.org".into(),
            ..Config::default()
        };
        cfg.tls = "files".into();
        cfg.tls_cert = Some("/c".into());
        cfg.tls_key = Some("/k".into());
        let (index, no_store) = index(&cfg);
        assert!(!no_store);
        assert!(index.contains("href=\"DCACCOUNT:https://chat.example.org/new\""));
        assert!(index.contains("Get a chat.example.org chat profile"));
        assert!(index.contains("<svg"));
        let info = info(&cfg);
        assert!(info.contains("30 MB") && info.contains("500 MB") && info.contains("nine"));
        let privacy = privacy(&cfg);
        assert!(privacy.contains("Jane Doe"));
        assert!(privacy.contains("&lt;b&gt;"), "operator text is escaped");
        cfg.tls = "self-signed".into();
        let (index, no_store) = super::index(&cfg);
        assert!(no_store);
        assert!(index.contains("href=\"dclogin:"));
        assert!(index.contains("&amp;v=1&amp;ic=3"));
        cfg.mail_domain = "192.0.2.7".into();
        cfg.ports.imaps = 993;
        cfg.ports.submissions = 465;
        let (email, _, url) = fresh_dclogin(&cfg);
        assert!(email.ends_with("@[192.0.2.7]"));
        assert!(url.contains("&ih=192.0.2.7&ip=993&is=ssl&sh=192.0.2.7&sp=465&ss=ssl&ic=3"));
    }
}
