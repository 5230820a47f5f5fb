//! The encryption check (relay-behaviour §6.1–6.3) against a corpus made at test time with
//! sequoia: real PKESK/SKESK + SEIPD v1/v2 messages and hand-broken variants.

#[path = "policy_corpus.rs"]
mod corpus;

use chatmail_box::policy::{check_encrypted, is_encrypted, Direction, NotEncrypted};
use corpus::*;

const OUT: Direction = Direction::Outgoing;
const IN: Direction = Direction::Incoming;

fn both(msg: &[u8]) -> (bool, bool) {
    (is_encrypted(msg, OUT), is_encrypted(msg, IN))
}

fn wrap(bin: &[u8]) -> Vec<u8> {
    pgp_mime(ALICE, &armor(bin))
}

#[test]
fn pkesk_seipd_v1_passes() {
    let k = keys();
    let bin = encrypt(&[&k.v4_a], &[], b"hello");
    let packets = split(&bin);
    assert_eq!(packets.iter().map(|p| p.tag).collect::<Vec<_>>(), [1, 18]);
    assert_eq!(packets[1].body[0], 1, "SEIPD v1");
    assert_eq!(both(&wrap(&bin)), (true, true));
}

#[test]
fn seipd_v2_passes() {
    let k = keys();
    let bin = encrypt(&[&k.v6], &[], b"hello");
    let packets = split(&bin);
    assert_eq!(packets.last().unwrap().tag, 18);
    assert_eq!(packets.last().unwrap().body[0], 2, "SEIPD v2");
    assert_eq!(packets[0].body[0], 6, "PKESK v6");
    assert_eq!(both(&wrap(&bin)), (true, true));
}

#[test]
fn several_pkesk_pass() {
    let k = keys();
    let bin = encrypt(&[&k.v4_a, &k.v4_b], &[], b"group message");
    let tags: Vec<u8> = split(&bin).iter().map(|p| p.tag).collect();
    assert_eq!(tags, [1, 1, 18]);
    assert_eq!(both(&wrap(&bin)), (true, true));
    assert_eq!(both(&chat_message(ALICE)), (true, true));
}

#[test]
fn skesk_only_passes() {
    // SecureJoin v3 `vc-request-pubkey`: symmetrically encrypted.
    let bin = encrypt(
        &[],
        &["securejoin/0123456789ABCDEF/secret"],
        b"Secure-Join: vc-request-pubkey",
    );
    let tags: Vec<u8> = split(&bin).iter().map(|p| p.tag).collect();
    assert_eq!(tags, [3, 18]);
    assert_eq!(both(&wrap(&bin)), (true, true));
}

#[test]
fn pkesk_and_skesk_pass() {
    let k = keys();
    let bin = encrypt(&[&k.v4_a], &["pw"], b"x");
    let tags: Vec<u8> = split(&bin).iter().map(|p| p.tag).collect();
    assert_eq!(tags, [1, 3, 18]);
    assert_eq!(both(&wrap(&bin)), (true, true));
}

#[test]
fn legacy_header_pkesk_passes() {
    // GnuPG writes PKESK with an old-format header (filtermail issue #43).
    let k = keys();
    let packets = split(&encrypt(&[&k.v4_a, &k.v4_b], &[], b"hello"));
    for two_octets in [false, true] {
        let mut bin = Vec::new();
        for p in &packets[..2] {
            bin.extend(legacy_packet(p.tag, &p.body, two_octets));
        }
        bin.extend_from_slice(&packets[2].raw);
        assert_eq!(bin[0] & 0xC0, 0x80, "old-format CTB");
        assert_eq!(both(&wrap(&bin)), (true, true), "two_octets={two_octets}");
    }
}

#[test]
fn partial_body_length_seipd_passes() {
    let k = keys();
    // A large message, its SEIPD re-framed with 8 KiB partial chunks (as streaming writers
    // such as GnuPG emit it), together with a legacy-format PKESK.
    let big = vec![b'x'; 200_000];
    let packets = split(&encrypt(&[&k.v4_a], &[], &big));
    let seipd = packets.last().unwrap();
    let mut bin = legacy_packet(1, &packets[0].body, true);
    bin.extend(partial_packet(18, &seipd.body, 8192));
    assert!(split_partial_count(&bin) > 20);
    assert_eq!(both(&wrap(&bin)), (true, true));
    // Truncated inside a partial chunk, and cut at a chunk boundary.
    assert!(!is_encrypted(&wrap(&bin[..bin.len() - 5000]), IN));
    assert!(!is_encrypted(
        &wrap(&bin[..bin.len() - seipd.body.len() % 8192 - 2]),
        IN
    ));

    // And a small SEIPD re-framed by hand with 512-byte chunks and a 5-octet final length.
    let packets = split(&encrypt(&[&k.v4_a], &[], &[b'y'; 3000]));
    let seipd = packets.last().unwrap();
    let mut bin = packets[0].raw.clone();
    bin.extend(partial_packet(18, &seipd.body, 512));
    assert!(split(&bin).last().unwrap().partial);
    assert_eq!(both(&wrap(&bin)), (true, true));
}

/// Number of partial chunks of the last packet (hand count: the legacy PKESK first).
fn split_partial_count(bin: &[u8]) -> usize {
    // Skip the legacy 2-octet-length PKESK.
    let len = u16::from_be_bytes([bin[1], bin[2]]) as usize;
    let mut i = 3 + len + 1;
    let mut chunks = 0;
    while bin[i] >= 224 && bin[i] < 255 {
        i += 1 + (1usize << (bin[i] & 0x1F));
        chunks += 1;
    }
    chunks
}

#[test]
fn full_length_forms_pass() {
    let k = keys();
    let packets = split(&encrypt(&[&k.v4_a], &[], &[b'z'; 3000]));
    let mut bin = packets[0].raw.clone();
    bin.extend(new_packet(18, &packets[1].body));
    assert_eq!(both(&wrap(&bin)), (true, true));
}

#[test]
fn armor_variants() {
    let k = keys();
    let bin = encrypt(&[&k.v4_a], &[], &[b'p'; 100]);
    let crlf_no_crc = ArmorOpts {
        crc: false,
        ..Default::default()
    };
    let lf = ArmorOpts {
        eol: "\n",
        ..Default::default()
    };
    let lf_no_crc = ArmorOpts {
        eol: "\n",
        crc: false,
        ..Default::default()
    };
    // Several lengths, so that data ending in `=`/`==` padding and data without padding both
    // occur, with and without a CRC line.
    let mut paddings = std::collections::HashSet::new();
    for n in 100..103 {
        let b = encrypt(&[&k.v4_a], &[], &vec![b'p'; n]);
        paddings.insert(b.len() % 3);
        for opts in [ArmorOpts::default(), crlf_no_crc, lf, lf_no_crc] {
            let msg = pgp_mime(ALICE, &armor_with(&b, opts));
            assert_eq!(both(&msg), (true, true), "len {} crc {}", b.len(), opts.crc);
        }
    }
    assert_eq!(paddings.len(), 3, "all padding variants covered");
    // Whole message with LF-only line endings.
    let msg = wrap(&bin);
    let lf_msg: Vec<u8> = String::from_utf8(msg)
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    assert_eq!(both(&lf_msg), (true, true));
}

#[test]
fn version_armor_header_outgoing_rejected_incoming_accepted() {
    let k = keys();
    let bin = encrypt(&[&k.v4_a], &[], b"hi");
    let opts = ArmorOpts {
        version_header: true,
        ..Default::default()
    };
    // armor_with adds Version + Comment; keep only the Version line as ProtonMail does.
    let armored = armor_with(&bin, opts).replace("Comment: https://gopenpgp.org\r\n", "");
    let msg = pgp_mime(ALICE, &armored);
    assert_eq!(
        check_encrypted(&msg, OUT),
        Err(NotEncrypted::ArmorVersionHeader)
    );
    assert!(is_encrypted(&msg, IN));
}

#[test]
fn fake_encrypted_text_plain_fails() {
    let k = keys();
    let armored = armor(&encrypt(&[&k.v4_a], &[], b"hi"));
    let msg = format!(
        "From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{armored}"
    );
    assert_eq!(
        check_encrypted(msg.as_bytes(), OUT),
        Err(NotEncrypted::NotMultipartEncrypted)
    );
    assert!(!is_encrypted(msg.as_bytes(), IN));
}

#[test]
fn literal_compressed_signature_fail() {
    let k = keys();
    for (what, bin) in [
        ("literal", literal(b"Buy viagra!")),
        ("compressed", compressed(b"Buy viagra!")),
        ("signature", signature(&k.v4_a, b"Buy viagra!")),
    ] {
        assert_eq!(
            check_encrypted(&wrap(&bin), OUT),
            Err(NotEncrypted::Packets),
            "{what}"
        );
        assert!(!is_encrypted(&wrap(&bin), IN), "{what}");
    }
    // A literal packet hidden after a valid PKESK, or before the SEIPD.
    let good = split(&encrypt(&[&k.v4_a], &[], b"hi"));
    let mut bin = good[0].raw.clone();
    bin.extend(literal(b"x"));
    assert!(!is_encrypted(&wrap(&bin), IN));
    let mut bin = good[0].raw.clone();
    bin.extend(literal(b"x"));
    bin.extend_from_slice(&good[1].raw);
    assert!(!is_encrypted(&wrap(&bin), IN));
    // PKESK only, no SEIPD.
    assert!(!is_encrypted(&wrap(&good[0].raw), IN));
    // Two SEIPDs.
    let mut bin = good[0].raw.clone();
    bin.extend_from_slice(&good[1].raw);
    bin.extend_from_slice(&good[1].raw);
    assert!(!is_encrypted(&wrap(&bin), IN));
    // SEIPD before PKESK.
    let mut bin = good[1].raw.clone();
    bin.extend_from_slice(&good[0].raw);
    assert!(!is_encrypted(&wrap(&bin), IN));
}

#[test]
fn trailing_garbage_and_truncation_fail() {
    let k = keys();
    for plaintext in [&b"short"[..], &[b'L'; 200_000][..]] {
        let bin = encrypt(&[&k.v4_a], &[], plaintext);
        assert!(is_encrypted(&wrap(&bin), OUT));
        for trailer in [&[0u8][..], b"garbage", &[0xCA, 0x03, b'P', b'G', b'P']] {
            let mut b = bin.clone();
            b.extend_from_slice(trailer);
            assert!(!is_encrypted(&wrap(&b), IN), "trailer {trailer:?}");
        }
        for cut in [1, 2, 5, 100] {
            let b = &bin[..bin.len() - cut];
            assert!(!is_encrypted(&wrap(b), IN), "cut {cut}");
        }
    }
}

#[test]
fn mime_structure_failures() {
    let k = keys();
    let armored = armor(&encrypt(&[&k.v4_a], &[], b"hi"));
    let v = version_part("Version: 1");
    let p = payload_part("application/octet-stream", &armored);
    // Three parts.
    let msg = pgp_mime_parts(ALICE, &[v.clone(), p.clone(), p.clone()]);
    assert_eq!(check_encrypted(&msg, IN), Err(NotEncrypted::Structure));
    // One part (upstream accepts a lone version part; chatmail-box does not).
    let msg = pgp_mime_parts(ALICE, std::slice::from_ref(&v));
    assert_eq!(check_encrypted(&msg, IN), Err(NotEncrypted::Structure));
    // Swapped order.
    let msg = pgp_mime_parts(ALICE, &[p.clone(), v.clone()]);
    assert_eq!(check_encrypted(&msg, IN), Err(NotEncrypted::VersionPart));
    // Wrong version body.
    for body in ["Version: 2", "Version:1", "", "Version: 1\r\nVersion: 1"] {
        let msg = pgp_mime_parts(ALICE, &[version_part(body), p.clone()]);
        assert_eq!(
            check_encrypted(&msg, IN),
            Err(NotEncrypted::VersionPart),
            "{body:?}"
        );
    }
    // Surrounding whitespace is trimmed.
    let msg = pgp_mime_parts(ALICE, &[version_part("  Version: 1\r\n"), p.clone()]);
    assert!(is_encrypted(&msg, OUT));
    // Wrong payload type.
    let msg = pgp_mime_parts(ALICE, &[v.clone(), payload_part("text/plain", &armored)]);
    assert_eq!(check_encrypted(&msg, IN), Err(NotEncrypted::PayloadType));
    // Nested multipart as second part.
    let nested = format!(
        "Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n--inner\r\n{p}\r\n--inner--\r\n"
    );
    let msg = pgp_mime_parts(ALICE, &[v.clone(), nested]);
    assert_eq!(check_encrypted(&msg, IN), Err(NotEncrypted::Structure));
    // Upper-case content types are fine.
    let msg = String::from_utf8(pgp_mime_parts(ALICE, &[v, p]))
        .unwrap()
        .replace("multipart/encrypted", "Multipart/Encrypted")
        .replace("application/octet-stream", "APPLICATION/OCTET-STREAM");
    assert!(is_encrypted(msg.as_bytes(), OUT));
}

#[test]
fn base64_transfer_encoded_payload_passes() {
    use base64::Engine as _;
    let k = keys();
    let armored = armor(&encrypt(&[&k.v4_a], &[], b"hi"));
    let b64 = base64::engine::general_purpose::STANDARD.encode(armored.as_bytes());
    let part = format!(
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}"
    );
    let msg = pgp_mime_parts(ALICE, &[version_part("Version: 1"), part]);
    assert!(is_encrypted(&msg, OUT));
}

#[test]
fn armor_failures() {
    let k = keys();
    let bin = encrypt(&[&k.v4_a], &[], b"hi");
    let armored = armor(&bin);
    let cases: Vec<(&str, String)> = vec![
        (
            "no begin",
            armored.replacen("-----BEGIN PGP MESSAGE-----\r\n", "", 1),
        ),
        (
            "no end",
            armored.replace("-----END PGP MESSAGE-----\r\n", ""),
        ),
        (
            "signature kind",
            armored.replace("PGP MESSAGE", "PGP SIGNATURE"),
        ),
        ("text before", format!("hello\r\n{armored}")),
        ("text after", format!("{armored}trailing text\r\n")),
        (
            "invalid base64",
            armored.replacen("\r\n\r\n", "\r\n\r\n!!!!", 1),
        ),
        (
            "space in data",
            armored.replacen("\r\n\r\n", "\r\n\r\nAA AA", 1),
        ),
        (
            "unknown header",
            armored.replacen("\r\n\r\n", "\r\nComment: x\r\n\r\n", 1),
        ),
        (
            "empty",
            "-----BEGIN PGP MESSAGE-----\r\n\r\n-----END PGP MESSAGE-----\r\n".into(),
        ),
    ];
    for (what, a) in cases {
        let msg = pgp_mime(ALICE, &a);
        assert!(!is_encrypted(&msg, OUT), "{what}");
        assert!(!is_encrypted(&msg, IN), "{what}");
    }
    // Extra empty lines at the end of the armor are fine.
    let msg = pgp_mime(ALICE, &format!("{armored}\r\n\r\n"));
    assert!(is_encrypted(&msg, OUT));
}

#[test]
fn securejoin_and_plain_are_not_encrypted() {
    assert_eq!(
        check_encrypted(
            &securejoin(ALICE, "vc-request", "Secure-Join: vc-request"),
            IN
        ),
        Err(NotEncrypted::NotMultipartEncrypted)
    );
    assert!(!is_encrypted(&plain(ALICE), IN));
    assert!(!is_encrypted(&mdn(BOB), IN));
    assert!(!is_encrypted(&autocrypt_setup_message(ALICE), OUT));
    assert!(!is_encrypted(&mailer_daemon_report(), IN));
    assert!(!is_encrypted(b"", IN));
    assert!(!is_encrypted(b"\r\n\r\n", IN));
}

#[test]
fn large_message_passes() {
    // ~12 MiB of ciphertext, re-framed with 64 KiB partial chunks: the walk skips the SEIPD
    // body without buffering it.
    let k = keys();
    let packets = split(&encrypt(&[&k.v4_a], &[], &vec![b'q'; 12 << 20]));
    let mut bin = packets[0].raw.clone();
    bin.extend(partial_packet(18, &packets[1].body, 1 << 16));
    let msg = wrap(&bin);
    let t = std::time::Instant::now();
    assert!(is_encrypted(&msg, OUT));
    eprintln!("{} bytes checked in {:?}", msg.len(), t.elapsed());
    let mut cut = bin.clone();
    cut.truncate(bin.len() - 1);
    assert!(!is_encrypted(&wrap(&cut), IN));
}
