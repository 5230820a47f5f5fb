//! What counts as "encrypted" (relay-behaviour §6.1–6.3): the MIME structure, the ASCII armor and
//! the OpenPGP packet sequence of a message, judged without decrypting anything.
//!
//! The MIME layer uses mail-parser, the packet layer sequoia-openpgp's `PacketParser` (no
//! hand-written packet framing). The armor rules are explicit here because they differ by
//! direction (a `Version:` armor header is rejected outgoing and tolerated incoming).

use base64::Engine as _;
use mail_parser::{Message, MessageParser, MessagePart, PartType};
use sequoia_openpgp as openpgp;

use openpgp::packet::header::BodyLength;
use openpgp::packet::Tag;
use openpgp::parse::{Dearmor, PacketParserBuilder, PacketParserResult, Parse};
use openpgp::Packet;

use super::mime;

/// Which way a message travels; the armor rules differ (§6.2 step 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Submitted by a local user (ports 465/587).
    Outgoing,
    /// Received from another server (port 25, `/mxdeliv`).
    Incoming,
}

/// Why a message is not encrypted; for tests and debug logging only (never shown to clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotEncrypted {
    /// The message does not parse as MIME at all.
    Unparseable,
    /// Top-level type is not `multipart/encrypted`, or it has no subparts.
    NotMultipartEncrypted,
    /// Not exactly two subparts, or a subpart is itself multipart / a message.
    Structure,
    /// First part is not `application/pgp-encrypted` with body `Version: 1`.
    VersionPart,
    /// Second part is not `application/octet-stream`.
    PayloadType,
    /// A transfer encoding that does not decode.
    TransferEncoding,
    /// Armor framing or header lines are wrong.
    Armor,
    /// A `Version:` armor header on an outgoing message.
    ArmorVersionHeader,
    /// The armored data is not valid base64.
    Base64,
    /// The decoded binary is not `(PKESK|SKESK)* SEIPD` ending exactly at the end.
    Packets,
}

const ARMOR_BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const ARMOR_END: &[u8] = b"-----END PGP MESSAGE-----";

/// Appended to the decoded binary before the packet walk: a complete Marker packet (tag 10,
/// new format, body "PGP"). The walk must see it directly after the SEIPD; that proves that
/// the SEIPD's declared length (full or partial chunks) ended exactly at the end of the real
/// data: a truncated SEIPD swallows the sentinel, trailing bytes come before it.
const SENTINEL: [u8; 5] = [0xCA, 0x03, b'P', b'G', b'P'];

/// True if `msg` (a complete RFC 5322 message) is an OpenPGP/MIME encrypted message by the rules
/// of relay-behaviour §6.1–6.3.
pub fn is_encrypted(msg: &[u8], dir: Direction) -> bool {
    check_encrypted(msg, dir).is_ok()
}

/// Like [`is_encrypted`], but says why not.
pub fn check_encrypted(msg: &[u8], dir: Direction) -> Result<(), NotEncrypted> {
    let parsed = MessageParser::default()
        .parse(msg)
        .ok_or(NotEncrypted::Unparseable)?;
    check_parsed(&parsed, dir)
}

/// The check on an already parsed message (the policy parses each message once).
pub(crate) fn check_parsed(msg: &Message<'_>, dir: Direction) -> Result<(), NotEncrypted> {
    let root = msg.root_part();
    if !mime::is_type(root, "multipart", "encrypted") {
        return Err(NotEncrypted::NotMultipartEncrypted);
    }
    let children = match &root.body {
        PartType::Multipart(children) if !children.is_empty() => children,
        _ => return Err(NotEncrypted::NotMultipartEncrypted),
    };
    // Upstream accepts a lone version part; chatmail-box requires exactly two (§6.1).
    if children.len() != 2 {
        return Err(NotEncrypted::Structure);
    }
    let mut parts = Vec::with_capacity(2);
    for &id in children {
        let part = msg.part(id).ok_or(NotEncrypted::Structure)?;
        if matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
            return Err(NotEncrypted::Structure);
        }
        parts.push(part);
    }
    check_version_part(parts[0])?;
    let payload = parts[1];
    if !mime::is_type(payload, "application", "octet-stream") {
        return Err(NotEncrypted::PayloadType);
    }
    if payload.is_encoding_problem {
        return Err(NotEncrypted::TransferEncoding);
    }
    let binary = dearmor(payload.contents(), dir)?;
    if packets_ok(binary) {
        Ok(())
    } else {
        Err(NotEncrypted::Packets)
    }
}

fn check_version_part(part: &MessagePart<'_>) -> Result<(), NotEncrypted> {
    if !mime::is_type(part, "application", "pgp-encrypted") || part.is_encoding_problem {
        return Err(NotEncrypted::VersionPart);
    }
    if part.contents().trim_ascii() != b"Version: 1" {
        return Err(NotEncrypted::VersionPart);
    }
    Ok(())
}

/// One line of the armored text without its line ending (LF, CRLF; a lone trailing CR is
/// stripped too so LF-only and CRLF bodies behave the same).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// §6.2: armor framing, the `Version:` header rule, CRC line, base64. Returns the binary.
pub(crate) fn dearmor(body: &[u8], dir: Direction) -> Result<Vec<u8>, NotEncrypted> {
    let mut it = lines(body);
    if it.next() != Some(ARMOR_BEGIN) {
        return Err(NotEncrypted::Armor);
    }
    // Everything after the BEGIN line, with trailing line ends removed, must end with the END
    // line; the lines between are the armor headers and the data.
    let mut inner: Vec<&[u8]> = it.collect();
    while inner.last().is_some_and(|l| l.is_empty()) {
        inner.pop();
    }
    if inner.pop() != Some(ARMOR_END) {
        return Err(NotEncrypted::Armor);
    }
    let mut rest = &inner[..];
    if let Some(first) = rest.first() {
        if first.starts_with(b"Version: ") {
            match dir {
                Direction::Outgoing => return Err(NotEncrypted::ArmorVersionHeader),
                Direction::Incoming => rest = &rest[1..],
            }
        }
    }
    while rest.first().is_some_and(|l| l.is_empty()) {
        rest = &rest[1..];
    }
    // Drop the optional CRC24 line: the last non-empty line when it starts with `=`. A base64
    // data line never starts with `=`, so padding at the end of the data (`...AB==`) is never
    // mistaken for a checksum, whether or not a checksum follows.
    let mut end = rest.len();
    while end > 0 && rest[end - 1].is_empty() {
        end -= 1;
    }
    if end > 0 && rest[end - 1].first() == Some(&b'=') {
        end -= 1;
    }
    let data: Vec<u8> = rest[..end].concat();
    if data.is_empty() {
        return Err(NotEncrypted::Base64);
    }
    // Room for the sentinel, so appending it does not copy the whole binary again.
    let mut binary = Vec::with_capacity(data.len() / 4 * 3 + SENTINEL.len());
    base64::engine::general_purpose::STANDARD
        .decode_vec(&data, &mut binary)
        .map_err(|_| NotEncrypted::Base64)?;
    Ok(binary)
}

/// Where the walk is in the expected sequence `(PKESK|SKESK)* SEIPD SENTINEL EOF`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Zero or more session key packets seen so far.
    SessionKeys,
    /// The SEIPD was seen; next must be the sentinel.
    AfterSeipd,
    /// An indeterminate-length SEIPD runs to the end and swallowed the sentinel; next is EOF.
    SeipdToEnd,
    /// The sentinel was seen; next is EOF.
    Sentinel,
}

/// §6.3 on the decoded binary, walked with sequoia's packet parser without decrypting: zero or
/// more PKESK (tag 1) / SKESK (tag 3), then exactly one SEIPD (tag 18) that ends exactly at
/// the end of the data. Old- and new-format headers and partial body lengths are handled by
/// sequoia. Packets are judged by tag (as upstream), so session key packets of versions or
/// algorithms sequoia does not know still pass; the SEIPD body is skipped, never buffered.
pub(crate) fn packets_ok(mut binary: Vec<u8>) -> bool {
    binary.extend_from_slice(&SENTINEL);
    walk(&binary).unwrap_or(false)
}

fn walk(data: &[u8]) -> openpgp::Result<bool> {
    let mut ppr = PacketParserBuilder::from_bytes(data)?
        .dearmor(Dearmor::Disabled)
        .max_packet_size(1 << 16)
        .automatic_hashing(false)
        .build()?;
    let mut state = Walk::SessionKeys;
    loop {
        let pp = match ppr {
            PacketParserResult::Some(pp) => pp,
            PacketParserResult::EOF(_) => {
                return Ok(matches!(state, Walk::Sentinel | Walk::SeipdToEnd));
            }
        };
        let tag = pp.header().ctb().tag();
        let length = *pp.header().length();
        state = match (state, tag) {
            (Walk::SessionKeys, Tag::PKESK | Tag::SKESK)
                if matches!(length, BodyLength::Full(_)) =>
            {
                Walk::SessionKeys
            }
            (Walk::SessionKeys, Tag::SEIP) => match length {
                BodyLength::Indeterminate => Walk::SeipdToEnd,
                _ => Walk::AfterSeipd,
            },
            (Walk::AfterSeipd, Tag::Marker) if matches!(pp.packet, Packet::Marker(_)) => {
                Walk::Sentinel
            }
            _ => return Ok(false),
        };
        // `next` skips the unread body (the SEIPD content) without buffering it.
        ppr = pp.next()?.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armor(lines_: &[&str], eol: &str) -> Vec<u8> {
        let mut s = String::new();
        for l in lines_ {
            s.push_str(l);
            s.push_str(eol);
        }
        s.into_bytes()
    }

    #[test]
    fn dearmor_crc_and_padding() {
        // "abcd" -> YWJjZA== (ends in padding)
        let with_crc = armor(
            &[
                "-----BEGIN PGP MESSAGE-----",
                "",
                "YWJjZA==",
                "=AAAA",
                "-----END PGP MESSAGE-----",
            ],
            "\r\n",
        );
        assert_eq!(dearmor(&with_crc, Direction::Outgoing).unwrap(), b"abcd");
        let without_crc = armor(
            &[
                "-----BEGIN PGP MESSAGE-----",
                "",
                "YWJjZA==",
                "-----END PGP MESSAGE-----",
            ],
            "\n",
        );
        assert_eq!(dearmor(&without_crc, Direction::Outgoing).unwrap(), b"abcd");
    }

    #[test]
    fn dearmor_version_header_by_direction() {
        let a = armor(
            &[
                "-----BEGIN PGP MESSAGE-----",
                "Version: GopenPGP 2.7.4",
                "",
                "YWJj",
                "-----END PGP MESSAGE-----",
                "",
            ],
            "\r\n",
        );
        assert_eq!(
            dearmor(&a, Direction::Outgoing),
            Err(NotEncrypted::ArmorVersionHeader)
        );
        assert_eq!(dearmor(&a, Direction::Incoming).unwrap(), b"abc");
    }

    #[test]
    fn dearmor_rejects_bad_framing() {
        let no_end = armor(&["-----BEGIN PGP MESSAGE-----", "", "YWJj"], "\r\n");
        assert_eq!(
            dearmor(&no_end, Direction::Incoming),
            Err(NotEncrypted::Armor)
        );
        let comment = armor(
            &[
                "-----BEGIN PGP MESSAGE-----",
                "Comment: x",
                "",
                "YWJj",
                "-----END PGP MESSAGE-----",
            ],
            "\r\n",
        );
        assert_eq!(
            dearmor(&comment, Direction::Incoming),
            Err(NotEncrypted::Base64)
        );
        let empty = armor(
            &["-----BEGIN PGP MESSAGE-----", "-----END PGP MESSAGE-----"],
            "\n",
        );
        assert_eq!(
            dearmor(&empty, Direction::Incoming),
            Err(NotEncrypted::Base64)
        );
    }

    #[test]
    fn packets_reject_junk() {
        assert!(!packets_ok(Vec::new()));
        assert!(!packets_ok(b"hello world".to_vec()));
        // A lone sentinel-like marker is not a message.
        assert!(!packets_ok(SENTINEL.to_vec()));
        // A tiny SEIPD v1 with a full length of 3: version 1 + 2 body bytes.
        assert!(packets_ok(vec![0xD2, 0x03, 0x01, 0xAA, 0xBB]));
        // Truncated by one byte.
        assert!(!packets_ok(vec![0xD2, 0x03, 0x01, 0xAA]));
        // One trailing byte.
        assert!(!packets_ok(vec![0xD2, 0x03, 0x01, 0xAA, 0xBB, 0x00]));
        // An old-format literal data packet.
        assert!(!packets_ok(vec![0xAC, 0x02, b'b', 0x00]));
    }
}
