//! The DNS zone an operator publishes (relay-behaviour §16), for `chatmail-box dns`, and a
//! basic check of what the resolver currently sees (`dns --check`).

use std::net::IpAddr;

use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::dkim::split_txt;

/// One record of the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneRecord {
    /// Fully qualified owner name with the trailing dot.
    pub name: String,
    pub rtype: &'static str,
    /// The value as a zone file wants it (TXT values unquoted, see [`ZoneRecord::line`]).
    pub value: String,
    pub required: bool,
}

impl ZoneRecord {
    /// The zone-file line. TXT values longer than 255 bytes are split into several strings.
    pub fn line(&self) -> String {
        let v = if self.rtype == "TXT" {
            split_txt(&self.value)
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            self.value.clone()
        };
        format!("{:<34} 3600 IN {:<5} {v}", self.name, self.rtype)
    }

    /// The TXT value as one quoted string (many DNS web UIs want this form).
    pub fn single_string(&self) -> String {
        format!("\"{}\"", self.value)
    }
}

/// The zone for `domain`. `dkim` holds (relative owner, TXT value) from `Dkim::dns_records`.
pub fn zone(
    domain: &str,
    ipv4: Option<IpAddr>,
    ipv6: Option<IpAddr>,
    dkim: &[(String, String)],
) -> Vec<ZoneRecord> {
    let d = format!("{}.", domain.trim_end_matches('.'));
    let rec = |name: String, rtype, value: String, required| ZoneRecord {
        name,
        rtype,
        value,
        required,
    };
    let mut z = Vec::new();
    if let Some(ip) = ipv4 {
        z.push(rec(d.clone(), "A", ip.to_string(), true));
    }
    if let Some(ip) = ipv6 {
        z.push(rec(d.clone(), "AAAA", ip.to_string(), true));
    }
    z.push(rec(d.clone(), "MX", format!("10 {d}"), true));
    let stamp = chrono::DateTime::from_timestamp(crate::store::now_unix(), 0)
        .map(|t| t.format("%Y%m%d%H%M").to_string())
        .unwrap_or_default();
    z.push(rec(
        format!("_mta-sts.{d}"),
        "TXT",
        format!("v=STSv1; id={stamp}"),
        true,
    ));
    z.push(rec(format!("mta-sts.{d}"), "CNAME", d.clone(), true));
    z.push(rec(format!("www.{d}"), "CNAME", d.clone(), true));
    for (owner, value) in dkim {
        z.push(rec(format!("{owner}.{d}"), "TXT", value.clone(), true));
    }
    z.push(rec(d.clone(), "TXT", "v=spf1 a ~all".into(), false));
    z.push(rec(
        format!("_dmarc.{d}"),
        "TXT",
        "v=DMARC1;p=reject;adkim=s;aspf=s".into(),
        false,
    ));
    z.push(rec(
        d.clone(),
        "CAA",
        "0 issue \"letsencrypt.org\"".into(),
        false,
    ));
    z.push(rec(
        format!("_adsp._domainkey.{d}"),
        "TXT",
        "dkim=discardable".into(),
        false,
    ));
    for (svc, port) in [
        ("submission", 587),
        ("submissions", 465),
        ("imap", 143),
        ("imaps", 993),
    ] {
        z.push(rec(
            format!("_{svc}._tcp.{d}"),
            "SRV",
            format!("0 1 {port} {d}"),
            false,
        ));
    }
    z
}

/// The zone as text: required records, then recommended ones, then the DKIM records again as
/// single strings.
pub fn render(z: &[ZoneRecord]) -> String {
    let mut out = String::from("; Required\n");
    for r in z.iter().filter(|r| r.required) {
        out.push_str(&r.line());
        out.push('\n');
    }
    out.push_str("\n; Recommended\n");
    for r in z.iter().filter(|r| !r.required) {
        out.push_str(&r.line());
        out.push('\n');
    }
    out.push_str("\n; DKIM records as one string (for DNS web interfaces)\n");
    for r in z
        .iter()
        .filter(|r| r.name.contains("._domainkey.") && r.rtype == "TXT")
    {
        if r.value.starts_with("v=DKIM1") {
            out.push_str(&format!("{} TXT {}\n", r.name, r.single_string()));
        }
    }
    out
}

/// Result of checking one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Ok,
    Missing,
    Wrong,
}

fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Query each record and compare (whitespace- and case-insensitive; TXT strings joined).
pub async fn check(
    resolver: &TokioResolver,
    z: &[ZoneRecord],
) -> Vec<(ZoneRecord, Check, Vec<String>)> {
    let mut out = Vec::new();
    for r in z {
        let rt = match r.rtype {
            "A" => RecordType::A,
            "AAAA" => RecordType::AAAA,
            "MX" => RecordType::MX,
            "TXT" => RecordType::TXT,
            "CNAME" => RecordType::CNAME,
            "SRV" => RecordType::SRV,
            "CAA" => RecordType::CAA,
            _ => continue,
        };
        let seen: Vec<String> = match resolver.lookup(r.name.clone(), rt).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter(|a| a.record_type() == rt)
                .map(|a| match &a.data {
                    RData::TXT(t) => t
                        .txt_data
                        .iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect::<String>(),
                    other => other.to_string(),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let want = norm(&r.value);
        let state = if seen.is_empty() {
            Check::Missing
        } else if r.name.starts_with("_mta-sts.") {
            // Any STSv1 id is fine: an already published id is kept.
            if seen.iter().any(|s| s.starts_with("v=STSv1")) {
                Check::Ok
            } else {
                Check::Wrong
            }
        } else if seen.iter().any(|s| norm(s) == want) {
            Check::Ok
        } else {
            Check::Wrong
        };
        out.push((r.clone(), state, seen));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_has_required_records() {
        let z = zone(
            "chat.example.org",
            Some("1.2.3.4".parse().unwrap()),
            None,
            &[(
                "opendkim._domainkey".into(),
                format!("v=DKIM1;k=rsa;p={};s=email;t=s", "A".repeat(392)),
            )],
        );
        let text = render(&z);
        assert!(text.contains("chat.example.org."));
        assert!(text.contains("MX    10 chat.example.org."));
        assert!(text.contains("opendkim._domainkey.chat.example.org."));
        assert!(text.contains("\"v=spf1 a ~all\""));
        assert!(text.contains("_submissions._tcp.chat.example.org."));
        // split and single-string variants
        let dkim = z.iter().find(|r| r.name.starts_with("opendkim")).unwrap();
        assert!(dkim.line().contains("\" \""));
        assert!(!dkim.single_string().contains("\" \""));
    }
}
