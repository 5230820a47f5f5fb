//! Configuration: one TOML file with the chatmail.ini key names and defaults, plus our own keys
//! for listeners, the data directory and TLS.
//!
//! Owns: parsing, defaults, validation with errors that name the key. Must not know: sockets,
//! the store, protocols.

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Syntax(PathBuf, String),
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// TLS certificate source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Generate a self-signed certificate into the data directory (once).
    SelfSigned,
    /// Certificate chain and key from PEM files; re-read when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// Obtained and renewed by `src/acme` into these files (in `<data_dir>/acme/`); the
    /// self-signed certificate is served until the first one exists.
    Acme { cert: PathBuf, key: PathBuf },
}

/// Listener ports; 0 disables a listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Ports {
    pub smtp: u16,
    pub submission: u16,
    pub submissions: u16,
    pub imap: u16,
    pub imaps: u16,
    pub https: u16,
    pub http: u16,
}

impl Ports {
    pub fn standard() -> Ports {
        Ports {
            smtp: 25,
            submission: 587,
            submissions: 465,
            imap: 143,
            imaps: 993,
            https: 443,
            http: 80,
        }
    }
    /// Used when the process cannot bind privileged ports.
    pub fn unprivileged() -> Ports {
        Ports {
            smtp: 2525,
            submission: 5587,
            submissions: 5465,
            imap: 5143,
            imaps: 5993,
            https: 5443,
            http: 5080,
        }
    }
}

impl Default for Ports {
    fn default() -> Ports {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            Ports::standard()
        } else {
            Ports::unprivileged()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub mail_domain: String,
    pub max_user_send_per_minute: u32,
    pub max_user_send_burst_size: u32,
    #[serde(deserialize_with = "mb_size")]
    pub max_mailbox_size: u64,
    pub max_message_size: u64,
    pub delete_mails_after: u32,
    pub delete_large_after: u32,
    pub delete_inactive_users_after: u32,
    pub username_min_length: usize,
    pub username_max_length: usize,
    pub password_min_length: usize,
    pub max_load_1m: f64,
    #[serde(deserialize_with = "mb_size")]
    pub min_available_memory: u64,
    #[serde(deserialize_with = "mb_size")]
    pub min_free_disk_space: u64,
    pub max_imap_connections: usize,
    pub max_smtp_connections: usize,
    pub tls_external_cert_and_key: String,
    pub disable_ipv6: bool,
    pub privacy_postal: String,
    pub privacy_mail: String,
    pub privacy_pdo: String,
    pub privacy_supervisor: String,
    pub iroh_relay: Option<String>,
    /// ACME account contact e-mail (tls = "acme"); empty: no contact.
    pub acme_email: String,
    /// Operator kill switch for account creation (a `nocreate` file in the data dir also works).
    pub nocreate: bool,

    // ---- chatmail-box keys ----
    pub data_dir: PathBuf,
    /// Address all listeners bind to.
    pub listen: IpAddr,
    pub ports: Ports,
    /// `self-signed`, `files` or `acme`.
    pub tls: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// ACME directory URL (tls = "acme"); default Let's Encrypt production.
    pub acme_directory: String,
    /// Renew an ACME certificate this many days before it expires.
    pub acme_renew_before_days: u32,
    /// sled page cache in bytes.
    pub index_cache_size: u64,
    /// Longest command line accepted by SMTP and IMAP, in bytes.
    pub max_line_length: usize,
    /// IMAP commands per second per connection before the session is slowed down.
    pub imap_commands_per_second: u32,

    // ---- federation (src/dkim, src/delivery) ----
    /// DKIM selector; the key lives in `<data_dir>/dkim/<selector>.private`.
    pub dkim_selector: String,
    /// Also sign with an Ed25519 key (selector `<dkim_selector>-ed25519`).
    pub dkim_ed25519: bool,
    /// DNS server for MX/A/TXT lookups as `IP` or `IP:port`; default: the system's resolv.conf.
    pub dns_nameserver: Option<String>,
    /// PEM file with extra trusted root certificates for outbound TLS (tests, private CAs).
    pub extra_root_certs: Option<PathBuf>,
    /// Port outbound SMTP connects to (25; other values only for tests).
    pub outbound_smtp_port: u16,
    /// Port outbound `/mxdeliv` connects to (443; other values only for tests).
    pub outbound_https_port: u16,
    /// First retry delay of the outbound queue in seconds (doubles per attempt, at most 1 h).
    pub delivery_retry_base: u64,
    /// Seconds a message may stay queued before it bounces (Postfix maximal_queue_lifetime).
    pub queue_lifetime: u64,
    /// Public addresses printed by `chatmail-box dns` (A / AAAA).
    pub public_ipv4: Option<std::net::Ipv4Addr>,
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    /// Private address of the Prometheus metrics endpoint (e.g. "127.0.0.1:9100"); off if unset.
    pub metrics_listen: Option<std::net::SocketAddr>,

    // ---- push and server metadata (src/push, src/imap/meta.rs) ----
    /// Push notification gateway; each device token is POSTed here (empty disables push).
    pub push_url: String,
    /// First retry delay of a failed notification in seconds (then ×8 per attempt; tests only).
    pub push_retry_base_secs: u64,
    /// Run the TURN server (src/turn) on UDP `turn_port` and advertise its credentials in METADATA.
    pub turn: bool,
    /// TURN host advertised; default `mail_domain`.
    pub turn_host: Option<String>,
    pub turn_port: u16,
    /// JSON served as METADATA `appversions`; default an empty client list.
    pub appversions_file: Option<PathBuf>,

    // ---- mDNS (src/mdns) ----
    /// Announce `chatmail-box.local` (A record of the LAN address) and `_http._tcp` /
    /// `_https._tcp` services on the local network. Off by default; the appliance turns it on.
    pub mdns: bool,
    /// UDP port of the mDNS responder (5353; tests use another one).
    pub mdns_port: u16,

    // ---- appliance (src/device) ----
    /// `[device]`: status LED, watchdog and display of the Raspberry Pi appliance; all off.
    pub device: DeviceSettings,
}

/// The `[device]` table (src/device): everything off unless set, and inert without hardware.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceSettings {
    /// LED class name looked up under /sys/class/leds at run time (e.g. "ACT"; "led0" is found
    /// for "ACT" on older Pi kernels).
    pub led: Option<String>,
    /// Directory holding the LED class devices; default /sys/class/leds.
    pub led_root: Option<PathBuf>,
    /// Watchdog device petted while the relay can serve (e.g. "/dev/watchdog").
    pub watchdog: Option<PathBuf>,
    /// Seconds between pets; default 5 (the Pi's bcm2835 watchdog times out after 15 s).
    pub watchdog_interval: Option<u64>,
    /// "none" (default), a framebuffer device such as "/dev/fb0", or a 128×64 SSD1306 OLED as
    /// "ssd1306:/dev/i2c-1" (address 0x3c) or "ssd1306:/dev/i2c-1:0x3d".
    pub display: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mail_domain: "_chatmail.localhost".into(),
            max_user_send_per_minute: 60,
            max_user_send_burst_size: 10,
            max_mailbox_size: 500 * MB,
            max_message_size: 31_457_280,
            delete_mails_after: 20,
            delete_large_after: 7,
            delete_inactive_users_after: 90,
            username_min_length: 9,
            username_max_length: 9,
            password_min_length: 9,
            max_load_1m: 5.0,
            min_available_memory: 200 * MB,
            min_free_disk_space: 1024 * MB,
            max_imap_connections: 10_000,
            max_smtp_connections: 1000,
            tls_external_cert_and_key: String::new(),
            disable_ipv6: false,
            privacy_postal: String::new(),
            privacy_mail: String::new(),
            privacy_pdo: String::new(),
            privacy_supervisor: String::new(),
            iroh_relay: None,
            acme_email: String::new(),
            nocreate: false,
            data_dir: PathBuf::from("data"),
            listen: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ports: Ports::default(),
            tls: "self-signed".into(),
            tls_cert: None,
            tls_key: None,
            acme_directory: LETS_ENCRYPT.into(),
            acme_renew_before_days: 30,
            index_cache_size: 8 * MB,
            max_line_length: 8192,
            imap_commands_per_second: 200,
            dkim_selector: "opendkim".into(),
            dkim_ed25519: false,
            dns_nameserver: None,
            extra_root_certs: None,
            outbound_smtp_port: 25,
            outbound_https_port: 443,
            delivery_retry_base: 60,
            queue_lifetime: 2 * 86400,
            public_ipv4: None,
            public_ipv6: None,
            metrics_listen: None,
            push_url: "https://notifications.delta.chat/notify".into(),
            push_retry_base_secs: 8,
            turn: false,
            turn_host: None,
            turn_port: 3478,
            appversions_file: None,
            mdns: false,
            mdns_port: 5353,
            device: DeviceSettings::default(),
        }
    }
}

const MB: u64 = 1024 * 1024;

/// Let's Encrypt's production ACME directory, the default `acme_directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

const KNOWN_LEGACY: &[&str] = &[
    "filtermail_smtp_port",
    "filtermail_smtp_port_incoming",
    "filtermail_http_port_incoming",
    "filtermail_lmtp_port_transport",
    "postfix_reinject_port",
    "postfix_reinject_port_incoming",
    "turn_socket_path",
    "mailboxes_dir",
    "passdb_path",
    "www_folder",
    "mtail_address",
    "imap_rawlog",
    "imap_compress",
];

/// chatmail.ini size: a number of MB, or a number with K/M/G (optionally followed by B).
fn parse_mb_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1024),
        'M' => (&t[..t.len() - 1], MB),
        'G' => (&t[..t.len() - 1], 1024 * MB),
        _ => (t, MB),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

fn mb_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        N(u64),
        S(String),
    }
    match S::deserialize(d)? {
        S::N(n) => n
            .checked_mul(MB)
            .ok_or_else(|| serde::de::Error::custom("size too large")),
        S::S(s) => parse_mb_size(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a size: {s:?} (e.g. 500M, 2G)"))),
    }
}

impl Config {
    /// Parse TOML text. Returns the config and warnings for unknown keys.
    pub fn parse(text: &str, origin: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(origin.into(), e.to_string()))?;
        let cfg: Config = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Syntax(origin.into(), e.to_string()))?;
        let known = known_keys();
        let warnings = table
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| format!("unknown config key `{k}` ignored"))
            .collect();
        cfg.validate()?;
        Ok((cfg, warnings))
    }

    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        Config::parse(&text, path)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.mail_domain;
        // An empty mail_domain is setup mode: `serve` runs the web wizard (src/setup).
        if !d.is_empty()
            && (d.len() > 253
                || d.starts_with('.')
                || d.ends_with('.')
                || d.contains("..")
                || !d
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(invalid(
                "mail_domain",
                format!("{d:?} is not a domain name or IPv4 address"),
            ));
        }
        crate::device::Display::parse(self.device.display.as_deref().unwrap_or(""))
            .map_err(|e| invalid("device.display", e))?;
        if self.username_min_length == 0 {
            return Err(invalid("username_min_length", "must be at least 1"));
        }
        if self.username_max_length < self.username_min_length {
            return Err(invalid(
                "username_max_length",
                "must not be below username_min_length",
            ));
        }
        if self.username_max_length > 64 {
            return Err(invalid("username_max_length", "must be at most 64"));
        }
        if self.password_min_length == 0 {
            return Err(invalid("password_min_length", "must be at least 1"));
        }
        if self.max_message_size < 1024 {
            return Err(invalid("max_message_size", "must be at least 1024 bytes"));
        }
        if self.max_user_send_per_minute == 0 {
            return Err(invalid("max_user_send_per_minute", "must be at least 1"));
        }
        if self.max_user_send_burst_size == 0 {
            return Err(invalid("max_user_send_burst_size", "must be at least 1"));
        }
        if self.max_line_length < 1000 {
            return Err(invalid(
                "max_line_length",
                "must be at least 1000 (RFC 5321)",
            ));
        }
        if self.dkim_selector.is_empty()
            || !self
                .dkim_selector
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(invalid("dkim_selector", "must be letters, digits, - or _"));
        }
        if let Some(ns) = &self.dns_nameserver {
            if parse_nameserver(ns).is_none() {
                return Err(invalid(
                    "dns_nameserver",
                    format!("{ns:?} is not IP or IP:port"),
                ));
            }
        }
        if self.delivery_retry_base == 0 {
            return Err(invalid("delivery_retry_base", "must be at least 1"));
        }
        if self.imap_commands_per_second == 0 {
            return Err(invalid("imap_commands_per_second", "must be at least 1"));
        }
        if !self.tls_external_cert_and_key.trim().is_empty()
            && self.tls_external_cert_and_key.split_whitespace().count() != 2
        {
            return Err(invalid(
                "tls_external_cert_and_key",
                "must be two paths separated by a space: CERT KEY",
            ));
        }
        match self.tls.as_str() {
            "self-signed" => {}
            "files" => {
                if self.tls_cert.is_none() {
                    return Err(invalid("tls_cert", "required when tls = \"files\""));
                }
                if self.tls_key.is_none() {
                    return Err(invalid("tls_key", "required when tls = \"files\""));
                }
            }
            "acme" => {
                // (An empty domain is setup mode: the wizard picks the domain first.)
                if !d.is_empty()
                    && (self.ip_domain().is_some() || d.starts_with('_') || !d.contains('.'))
                {
                    return Err(invalid(
                        "tls",
                        format!("\"acme\" needs a public domain name, not {d:?}"),
                    ));
                }
                if !self.acme_directory.starts_with("https://") {
                    return Err(invalid("acme_directory", "must be an https:// URL"));
                }
                if self.acme_renew_before_days == 0 {
                    return Err(invalid("acme_renew_before_days", "must be at least 1"));
                }
            }
            other => {
                return Err(invalid(
                    "tls",
                    format!("{other:?}: expected \"self-signed\", \"files\" or \"acme\""),
                ))
            }
        }
        Ok(())
    }

    pub fn tls_mode(&self) -> TlsMode {
        let ext: Vec<&str> = self.tls_external_cert_and_key.split_whitespace().collect();
        if ext.len() == 2 {
            return TlsMode::Files {
                cert: ext[0].into(),
                key: ext[1].into(),
            };
        }
        match (&self.tls[..], &self.tls_cert, &self.tls_key) {
            ("files", Some(c), Some(k)) => TlsMode::Files {
                cert: c.clone(),
                key: k.clone(),
            },
            ("acme", _, _) => TlsMode::Acme {
                cert: self.acme_dir().join("cert.pem"),
                key: self.acme_dir().join("key.pem"),
            },
            _ => TlsMode::SelfSigned,
        }
    }

    /// An IP-only relay: addresses look like `user@[1.2.3.4]`.
    pub fn ip_domain(&self) -> Option<std::net::Ipv4Addr> {
        self.mail_domain.parse().ok()
    }

    /// The domain part used in addresses.
    pub fn address_domain(&self) -> String {
        match self.ip_domain() {
            Some(ip) => format!("[{ip}]"),
            None => self.mail_domain.to_ascii_lowercase(),
        }
    }

    /// ACME account, certificate chain and key (`src/acme`).
    pub fn acme_dir(&self) -> PathBuf {
        self.data_dir.join("acme")
    }

    /// Path of the operator's kill-switch file.
    pub fn nocreate_file(&self) -> PathBuf {
        self.data_dir.join("nocreate")
    }
}

/// `IP` (port 53) or `IP:port` / `[IPv6]:port`.
pub fn parse_nameserver(s: &str) -> Option<std::net::SocketAddr> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Some(a);
    }
    s.parse::<IpAddr>()
        .ok()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
}

fn known_keys() -> Vec<&'static str> {
    let mut v = vec![
        "mail_domain",
        "max_user_send_per_minute",
        "max_user_send_burst_size",
        "max_mailbox_size",
        "max_message_size",
        "delete_mails_after",
        "delete_large_after",
        "delete_inactive_users_after",
        "username_min_length",
        "username_max_length",
        "password_min_length",
        "max_load_1m",
        "min_available_memory",
        "min_free_disk_space",
        "max_imap_connections",
        "max_smtp_connections",
        "tls_external_cert_and_key",
        "disable_ipv6",
        "privacy_postal",
        "privacy_mail",
        "privacy_pdo",
        "privacy_supervisor",
        "iroh_relay",
        "acme_email",
        "nocreate",
        "data_dir",
        "listen",
        "ports",
        "tls",
        "tls_cert",
        "tls_key",
        "acme_directory",
        "acme_renew_before_days",
        "index_cache_size",
        "max_line_length",
        "imap_commands_per_second",
        "dkim_selector",
        "dkim_ed25519",
        "dns_nameserver",
        "extra_root_certs",
        "outbound_smtp_port",
        "outbound_https_port",
        "delivery_retry_base",
        "queue_lifetime",
        "public_ipv4",
        "public_ipv6",
        "metrics_listen",
        "push_url",
        "push_retry_base_secs",
        "turn",
        "turn_host",
        "turn_port",
        "appversions_file",
        "mdns",
        "mdns_port",
        "device",
    ];
    v.extend_from_slice(KNOWN_LEGACY);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(Config, Vec<String>), ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn defaults_match_chatmail_ini() {
        let (c, w) = parse("mail_domain = \"chat.example.org\"").unwrap();
        assert!(w.is_empty());
        assert_eq!(c.max_message_size, 31_457_280);
        assert_eq!(c.max_mailbox_size, 500 * MB);
        assert_eq!((c.username_min_length, c.username_max_length), (9, 9));
        assert_eq!(c.password_min_length, 9);
        assert_eq!(c.max_user_send_per_minute, 60);
        assert_eq!(c.max_user_send_burst_size, 10);
        assert_eq!(c.delete_mails_after, 20);
        assert_eq!(c.tls_mode(), TlsMode::SelfSigned);
    }

    #[test]
    fn sizes_parse_like_chatmail() {
        assert_eq!(parse_mb_size("500M"), Some(500 * MB));
        assert_eq!(parse_mb_size("2G"), Some(2048 * MB));
        assert_eq!(parse_mb_size("100MB"), Some(100 * MB));
        assert_eq!(parse_mb_size("256"), Some(256 * MB));
        assert_eq!(parse_mb_size("lots"), None);
        let (c, _) = parse("max_mailbox_size = \"2G\"").unwrap();
        assert_eq!(c.max_mailbox_size, 2048 * MB);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("username_min_length = 10\nusername_max_length = 9")
            .unwrap_err()
            .to_string();
        assert!(e.contains("username_max_length"), "{e}");
        let e = parse("max_message_size = \"big\"").unwrap_err().to_string();
        assert!(e.contains("max_message_size"), "{e}");
        let e = parse("tls = \"files\"").unwrap_err().to_string();
        assert!(e.contains("tls_cert"), "{e}");
        let e = parse("tls_external_cert_and_key = \"/a\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_external_cert_and_key"), "{e}");
        let e = parse("mail_domain = \"../x\"").unwrap_err().to_string();
        assert!(e.contains("mail_domain"), "{e}");
        let e = parse("max_mailbox_size = \"lots\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_mailbox_size"), "{e}");
    }

    #[test]
    fn unknown_keys_warn_and_external_cert_overrides() {
        let (c, w) = parse(
            "frobnicate = 1\npassthrough_senders = \"x\"\ntls_external_cert_and_key = \"/c.pem /k.pem\"",
        )
        .unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            c.tls_mode(),
            TlsMode::Files {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            }
        );
    }

    #[test]
    fn acme_mode_and_its_keys() {
        let (c, w) =
            parse("mail_domain = \"chat.example.org\"\ntls = \"acme\"\nacme_email = \"a@b.org\"")
                .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.acme_directory, LETS_ENCRYPT);
        assert_eq!(c.acme_renew_before_days, 30);
        assert!(matches!(c.tls_mode(), TlsMode::Acme { .. }));
        let e = parse("mail_domain = \"_x.test\"\ntls = \"acme\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tls`"), "{e}");
        let e = parse("mail_domain = \"c.example\"\ntls = \"acme\"\nacme_directory = \"http://x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("acme_directory"), "{e}");
    }

    #[test]
    fn empty_mail_domain_is_setup_mode() {
        let (c, _) = parse("mail_domain = \"\"").unwrap();
        assert!(c.mail_domain.is_empty());
    }

    #[test]
    fn ip_domain_addresses() {
        let (c, _) = parse("mail_domain = \"1.3.3.7\"").unwrap();
        assert_eq!(c.address_domain(), "[1.3.3.7]");
    }
}
