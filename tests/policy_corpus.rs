//! Test corpus for the chatmail policy, generated at test time: real OpenPGP messages made with
//! sequoia (keys generated here), wrapped in ASCII armor and Delta Chat's MIME layout, plus
//! the hand-made broken variants the policy must reject.
//!
//! Included by the `policy_*` test files with `#[path = "policy_corpus.rs"] mod corpus;`; as a
//! test target of its own it holds no tests.
#![allow(dead_code)]

use std::io::Write;
use std::sync::OnceLock;

use base64::Engine as _;
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Signer};
use openpgp::types::Features;

pub const ALICE: &str = "alice@chat.example";
pub const BOB: &str = "bob@chat.example";

/// Keys are generated once per test binary.
pub struct Keys {
    /// v4 keys that only announce SEIPD v1.
    pub v4_a: Cert,
    pub v4_b: Cert,
    /// A v6 (RFC 9580) key: messages to it use SEIPD v2.
    pub v6: Cert,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let v4 = |uid: &str| {
            CertBuilder::general_purpose(Some(uid))
                .set_profile(openpgp::Profile::RFC4880)
                .unwrap()
                .set_features(Features::empty().set_seipdv1())
                .unwrap()
                .generate()
                .unwrap()
                .0
        };
        let v6 = CertBuilder::general_purpose(Some(BOB))
            .set_profile(openpgp::Profile::RFC9580)
            .unwrap()
            .generate()
            .unwrap()
            .0;
        Keys {
            v4_a: v4(ALICE),
            v4_b: v4(BOB),
            v6,
        }
    })
}

/// Binary OpenPGP message (no armor) encrypted to `certs` and/or `passwords`.
pub fn encrypt(certs: &[&Cert], passwords: &[&str], plaintext: &[u8]) -> Vec<u8> {
    let p = StandardPolicy::new();
    let mut recipients = Vec::new();
    for cert in certs {
        recipients.extend(
            cert.keys()
                .with_policy(&p, None)
                .supported()
                .alive()
                .revoked(false)
                .for_transport_encryption(),
        );
    }
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let enc = if recipients.is_empty() {
            Encryptor::with_passwords(message, passwords.iter().copied())
        } else {
            Encryptor::for_recipients(message, recipients).add_passwords(passwords.iter().copied())
        };
        let message = enc.build().unwrap();
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(plaintext).unwrap();
        w.finalize().unwrap();
    }
    sink
}

/// A plain literal data packet (not encrypted).
pub fn literal(plaintext: &[u8]) -> Vec<u8> {
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(plaintext).unwrap();
        w.finalize().unwrap();
    }
    sink
}

/// A detached signature packet by `cert`.
pub fn signature(cert: &Cert, data: &[u8]) -> Vec<u8> {
    let p = StandardPolicy::new();
    let keypair = cert
        .keys()
        .unencrypted_secret()
        .with_policy(&p, None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .unwrap()
        .key()
        .clone()
        .into_keypair()
        .unwrap();
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let mut s = Signer::new(message, keypair)
            .unwrap()
            .detached()
            .build()
            .unwrap();
        s.write_all(data).unwrap();
        s.finalize().unwrap();
    }
    sink
}

/// A compressed data packet (algorithm 0, uncompressed) wrapping a literal packet; built by
/// hand so it does not depend on sequoia's compression features.
pub fn compressed(plaintext: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend(literal(plaintext));
    new_packet(8, &body)
}

/// One packet of a binary message, as test code sees it (new-format headers only; that is
/// what sequoia writes).
#[derive(Debug, Clone)]
pub struct RawPacket {
    pub tag: u8,
    /// The body, partial chunks joined.
    pub body: Vec<u8>,
    /// The packet as it appeared (header included).
    pub raw: Vec<u8>,
    pub partial: bool,
}

/// Splits a new-format binary message into packets (test helper; the policy itself never
/// frames packets by hand).
pub fn split(bin: &[u8]) -> Vec<RawPacket> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bin.len() {
        let start = i;
        let ctb = bin[i];
        assert_eq!(ctb & 0xC0, 0xC0, "test helper expects new-format packets");
        let tag = ctb & 0x3F;
        i += 1;
        let mut body = Vec::new();
        let mut partial = false;
        loop {
            let b0 = bin[i] as usize;
            let (len, hdr, more) = if b0 < 192 {
                (b0, 1, false)
            } else if b0 < 224 {
                (((b0 - 192) << 8) + bin[i + 1] as usize + 192, 2, false)
            } else if b0 == 255 {
                let l = u32::from_be_bytes(bin[i + 1..i + 5].try_into().unwrap()) as usize;
                (l, 5, false)
            } else {
                (1usize << (b0 & 0x1F), 1, true)
            };
            i += hdr;
            body.extend_from_slice(&bin[i..i + len]);
            i += len;
            if !more {
                break;
            }
            partial = true;
        }
        out.push(RawPacket {
            tag,
            body,
            raw: bin[start..i].to_vec(),
            partial,
        });
    }
    out
}

/// New-format packet with a 5-octet (or 1-octet when short) full length.
pub fn new_packet(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xC0 | tag];
    if body.len() < 192 {
        v.push(body.len() as u8);
    } else {
        v.push(0xFF);
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

/// Old-format (legacy) packet as GnuPG writes PKESK: tag in bits 5..2, length type in 1..0.
/// `two_octets` forces a 2-octet length even for short bodies (GnuPG's `0x85` form).
pub fn legacy_packet(tag: u8, body: &[u8], two_octets: bool) -> Vec<u8> {
    assert!(tag < 16);
    let mut v;
    if body.len() < 256 && !two_octets {
        v = vec![0x80 | (tag << 2), body.len() as u8];
    } else if body.len() < 65536 {
        v = vec![0x80 | (tag << 2) | 1];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    } else {
        v = vec![0x80 | (tag << 2) | 2];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

/// SEIPD packet `p` rewritten with partial body lengths of `chunk` (a power of two ≥ 512).
pub fn partial_packet(tag: u8, body: &[u8], chunk: usize) -> Vec<u8> {
    assert!(chunk.is_power_of_two() && chunk >= 512);
    let mut v = vec![0xC0 | tag];
    let mut rest = body;
    while rest.len() > chunk {
        v.push(0xE0 | chunk.trailing_zeros() as u8);
        v.extend_from_slice(&rest[..chunk]);
        rest = &rest[chunk..];
    }
    v.extend_from_slice(&new_packet(0, rest)[1..]);
    v
}

/// OpenPGP CRC-24 (RFC 9580 §6.1).
pub fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xB704CE;
    for &b in data {
        crc ^= (b as u32) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x1000000 != 0 {
                crc ^= 0x1864CFB;
            }
        }
    }
    crc & 0xFFFFFF
}

/// ASCII armor options.
#[derive(Clone, Copy)]
pub struct ArmorOpts {
    pub eol: &'static str,
    pub crc: bool,
    pub version_header: bool,
}

impl Default for ArmorOpts {
    fn default() -> Self {
        ArmorOpts {
            eol: "\r\n",
            crc: true,
            version_header: false,
        }
    }
}

pub fn armor_with(bin: &[u8], o: ArmorOpts) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut s = format!("-----BEGIN PGP MESSAGE-----{}", o.eol);
    if o.version_header {
        s += &format!("Version: GopenPGP 2.7.4{}", o.eol);
        s += &format!("Comment: https://gopenpgp.org{}", o.eol);
    }
    s += o.eol;
    let enc = b64.encode(bin);
    for line in enc.as_bytes().chunks(76) {
        s += std::str::from_utf8(line).unwrap();
        s += o.eol;
    }
    if o.crc {
        s += &format!("={}{}", b64.encode(&crc24(bin).to_be_bytes()[1..]), o.eol);
    }
    s += &format!("-----END PGP MESSAGE-----{}", o.eol);
    s
}

pub fn armor(bin: &[u8]) -> String {
    armor_with(bin, ArmorOpts::default())
}

/// Delta Chat's outer message (client-contract §3) around an armored payload.
pub fn pgp_mime(from: &str, armored: &str) -> Vec<u8> {
    pgp_mime_parts(
        from,
        &[
            version_part("Version: 1"),
            payload_part("application/octet-stream", armored),
        ],
    )
}

pub fn version_part(body: &str) -> String {
    format!(
        "Content-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\n{body}\r\n"
    )
}

pub fn payload_part(ctype: &str, armored: &str) -> String {
    format!(
        "Content-Type: {ctype}; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\nContent-Disposition: inline; filename=\"encrypted.asc\";\r\n\r\n{armored}"
    )
}

pub fn pgp_mime_parts(from: &str, parts: &[String]) -> Vec<u8> {
    let mut s = format!(
        "From: <{from}>\r\nDate: Mon, 04 May 2026 10:00:00 +0000\r\nMessage-ID: <1b2c3d@localhost>\r\nMIME-Version: 1.0\r\nTo: \"hidden-recipients\": ;\r\nSubject: [...]\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n boundary=\"OXqgqx9bm4k0Y4SjVt0wOaLT0yTLmM\"\r\n\r\n"
    );
    for p in parts {
        s += "--OXqgqx9bm4k0Y4SjVt0wOaLT0yTLmM\r\n";
        s += p;
        s += "\r\n";
    }
    s += "--OXqgqx9bm4k0Y4SjVt0wOaLT0yTLmM--\r\n";
    s.into_bytes()
}

/// A normal Delta Chat chat message from `from`: PKESK + SEIPD v1 to two v4 keys.
pub fn chat_message(from: &str) -> Vec<u8> {
    let k = keys();
    let bin = encrypt(&[&k.v4_a, &k.v4_b], &[], b"Chat-Version: 1.0\r\n\r\nhello");
    pgp_mime(from, &armor(&bin))
}

/// Legacy plaintext Secure-Join request (§6.5) with the given header step and body text.
pub fn securejoin(from: &str, header: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{BOB}>\r\nSubject: Message from {from}\r\nSecure-Join: {header}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"sj\"\r\n\r\n--sj\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\n{body}\r\n--sj--\r\n"
    )
    .into_bytes()
}

/// A delivery status notification from a mailer daemon.
pub fn mailer_daemon_report() -> Vec<u8> {
    b"From: MAILER-DAEMON@other.example (Mail Delivery System)\r\nTo: <alice@chat.example>\r\nSubject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"dsn\"\r\n\r\n--dsn\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host other.example.\r\n--dsn\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; other.example\r\n\r\nFinal-Recipient: rfc822; x@other.example\r\nAction: failed\r\nStatus: 5.1.1\r\n--dsn--\r\n".to_vec()
}

/// A user's read receipt (MDN): a multipart/report that is not exempt.
pub fn mdn(from: &str) -> Vec<u8> {
    format!("From: <{from}>\r\nTo: <{ALICE}>\r\nSubject: Receipt Notification\r\nAuto-Submitted: auto-replied\r\nChat-Version: 1.0\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification;\r\n boundary=\"mdn\"\r\n\r\n--mdn\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis is a receipt notification.\r\n--mdn\r\nContent-Type: message/disposition-notification\r\n\r\nReporting-UA: Delta Chat\r\nOriginal-Message-ID: <x@localhost>\r\nDisposition: manual-action/MDN-sent-automatically; displayed\r\n--mdn--\r\n").into_bytes()
}

/// An Autocrypt Setup Message to self (the legacy exception is not implemented: rejected).
pub fn autocrypt_setup_message(from: &str) -> Vec<u8> {
    format!("From: <{from}>\r\nTo: <{from}>\r\nSubject: Autocrypt Setup Message\r\nAutocrypt-Setup-Message: v1\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"asm\"\r\n\r\n--asm\r\nContent-Type: text/plain\r\n\r\nThis is the Autocrypt Setup Message.\r\n--asm\r\nContent-Type: application/autocrypt-setup\r\nContent-Disposition: attachment; filename=\"autocrypt-setup-message.html\"\r\n\r\n<html><body><pre>\r\n-----BEGIN PGP MESSAGE-----\r\nPassphrase-Format: numeric9x4\r\n\r\nwy4ECQMI\r\n-----END PGP MESSAGE-----\r\n</pre></body></html>\r\n--asm--\r\n").into_bytes()
}

/// A plain cleartext message.
pub fn plain(from: &str) -> Vec<u8> {
    format!("From: <{from}>\r\nTo: <{BOB}>\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello, cleartext.\r\n").into_bytes()
}
