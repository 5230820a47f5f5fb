//! Fuzz the encryption check at each layer: the first input byte picks the layer and the
//! direction, the rest is the whole message (MIME layer), the armored payload (armor layer) or
//! the binary OpenPGP data (packet layer, wrapped in armor and MIME here).
#![no_main]

use base64::Engine as _;
use chatmail_box::policy::{is_encrypted, is_mailer_daemon_report, is_securejoin, Direction};
use libfuzzer_sys::fuzz_target;

fn pgp_mime(armored: &[u8]) -> Vec<u8> {
    let mut m = b"From: <a@b.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    m.extend_from_slice(armored);
    m.extend_from_slice(b"\r\n--B--\r\n");
    m
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let dir = if selector & 1 == 0 {
        Direction::Outgoing
    } else {
        Direction::Incoming
    };
    match (selector >> 1) % 3 {
        0 => {
            let _ = is_encrypted(rest, dir);
            let _ = is_securejoin(rest);
            let _ = is_mailer_daemon_report(rest);
        }
        1 => {
            let _ = is_encrypted(&pgp_mime(rest), dir);
        }
        _ => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
            let mut armored = b"-----BEGIN PGP MESSAGE-----\r\n\r\n".to_vec();
            for line in b64.as_bytes().chunks(76) {
                armored.extend_from_slice(line);
                armored.extend_from_slice(b"\r\n");
            }
            armored.extend_from_slice(b"-----END PGP MESSAGE-----\r\n");
            let _ = is_encrypted(&pgp_mime(&armored), dir);
        }
    }
});
