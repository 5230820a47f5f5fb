//! Destination resolution (relay-behaviour §9.2): MX by preference, null MX, NXDOMAIN,
//! implicit MX, address literals, `_` domains without certificate verification, and the
//! `nauta.cu` exception. DNS errors are temporary.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use super::Failure;
use crate::config::Config;

/// One mail exchanger to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name (SNI, `Host:`), or the IP address text for address literals.
    pub host: String,
    /// Known addresses (address literals); empty means "look up A/AAAA".
    pub addrs: Vec<IpAddr>,
    /// Verify the server certificate (false for `_` domains and address literals).
    pub verify: bool,
    /// STARTTLS required (false only for `nauta.cu`).
    pub require_tls: bool,
}

/// The resolver for MX, A/AAAA and DKIM TXT lookups: `dns_nameserver` if set, else the
/// system's resolv.conf (falling back to Quad9 if that cannot be read).
pub fn build_resolver(cfg: &Config) -> TokioResolver {
    let provider = TokioRuntimeProvider::default();
    let mut opts = ResolverOpts::default();
    opts.timeout = std::time::Duration::from_secs(10);
    opts.attempts = 2;
    opts.cache_size = 1024;
    let config = match cfg
        .dns_nameserver
        .as_deref()
        .and_then(crate::config::parse_nameserver)
    {
        Some(sa) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = sa.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = sa.port();
            ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                sa.ip(),
                true,
                vec![udp, tcp],
            )])
        }
        None => match hickory_resolver::system_conf::read_system_conf() {
            Ok((c, o)) => {
                opts = o;
                c
            }
            Err(e) => {
                tracing::warn!("cannot read resolv.conf ({e}); using Quad9");
                ResolverConfig::udp_and_tcp(&hickory_resolver::config::QUAD9)
            }
        },
    };
    let mut b = TokioResolver::builder_with_config(config, provider);
    *b.options_mut() = opts;
    b.build().expect("resolver configuration is valid")
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

pub fn null_mx_reply() -> String {
    "556 5.1.10 Permanent failure: Recipient address has null MX".into()
}

pub fn nxdomain_reply(domain: &str) -> String {
    format!("512 Domain {domain} does not exist")
}

pub fn dns_failed_reply(domain: &str) -> String {
    format!("421 DNS resolution failed for {domain}")
}

/// The mail exchangers for `domain`, best first.
pub async fn resolve(resolver: &TokioResolver, domain: &str) -> Result<Vec<Target>, Failure> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip: IpAddr = lit
            .strip_prefix("ipv6:")
            .unwrap_or(lit)
            .parse()
            .map_err(|_| Failure::Perm(format!("501 5.1.2 Bad address literal {domain}")))?;
        return Ok(vec![Target {
            host: ip.to_string(),
            addrs: vec![ip],
            verify: false,
            require_tls: true,
        }]);
    }
    let verify = !domain.starts_with('_');
    let require_tls = domain != "nauta.cu";
    let lookup = match resolver.lookup(fqdn(&domain), RecordType::MX).await {
        Ok(l) => l,
        Err(e) if e.is_nx_domain() => return Err(Failure::Perm(nxdomain_reply(&domain))),
        Err(e) if e.is_no_records_found() => {
            // Implicit MX (RFC 5321 §5.1): the domain itself.
            return Ok(vec![Target {
                host: domain,
                addrs: Vec::new(),
                verify,
                require_tls,
            }]);
        }
        Err(e) => {
            tracing::debug!("MX lookup failed: {e}");
            return Err(Failure::Temp(dns_failed_reply(&domain)));
        }
    };
    let mut mxs: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
            _ => None,
        })
        .collect();
    if mxs.is_empty() {
        return Ok(vec![Target {
            host: domain,
            addrs: Vec::new(),
            verify,
            require_tls,
        }]);
    }
    // RFC 7505: a single MX with the root as exchange.
    if mxs.iter().any(|(_, h)| h == "." || h.is_empty()) {
        return Err(Failure::Perm(null_mx_reply()));
    }
    mxs.sort_by_key(|(p, _)| *p);
    Ok(mxs
        .into_iter()
        .map(|(_, h)| Target {
            host: h.trim_end_matches('.').to_ascii_lowercase(),
            addrs: Vec::new(),
            verify,
            require_tls,
        })
        .collect())
}

/// IPv4 addresses first, then IPv6.
pub async fn addresses(resolver: &Arc<TokioResolver>, target: &Target) -> Vec<IpAddr> {
    if !target.addrs.is_empty() {
        return target.addrs.clone();
    }
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return vec![ip];
    }
    let name = fqdn(&target.host);
    let (v4, v6) = tokio::join!(
        resolver.lookup(name.clone(), RecordType::A),
        resolver.lookup(name, RecordType::AAAA)
    );
    let mut out = Vec::new();
    for l in [v4, v6].into_iter().flatten() {
        for r in l.answers() {
            match &r.data {
                RData::A(a) => out.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
    }
    out
}
