//! Fuzz-style robustness test with a fixed seed: random and mutated inputs for the encryption
//! check (MIME, armor and packet layers separately) and the header cleanup must never panic,
//! and the cleanup keeps its invariants (idempotent, body untouched).
//! The open-ended fuzzer is `fuzz/fuzz_targets/policy_encryption.rs` (cargo fuzz).

#[path = "policy_corpus.rs"]
mod corpus;

use chatmail_box::policy::{
    clean_delivery_headers, clean_submission_headers, is_encrypted, is_mailer_daemon_report,
    is_securejoin, Direction,
};
use corpus::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ITERATIONS: usize = 3000;

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..8) {
        if v.is_empty() {
            v.push(rng.gen());
            continue;
        }
        let i = rng.gen_range(0..v.len());
        match rng.gen_range(0..7) {
            0 => v[i] = rng.gen(),
            1 => v[i] ^= 1 << rng.gen_range(0..8),
            2 => {
                v.remove(i);
            }
            3 => v.insert(i, rng.gen()),
            4 => v.truncate(i),
            5 => {
                // Duplicate a slice (repeats packets, lines, boundaries).
                let j = rng.gen_range(i..v.len().min(i + 64) + 1);
                let chunk = v[i..j].to_vec();
                v.splice(i..i, chunk);
            }
            _ => {
                // Interesting bytes for the parsers.
                let tokens: [&[u8]; 8] = [
                    b"\r\n",
                    b"\n",
                    b"=",
                    b"--",
                    b"\r\n\r\n",
                    b": ",
                    &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                    &[0xE0],
                ];
                let t = tokens[rng.gen_range(0..tokens.len())];
                v.splice(i..i, t.iter().copied());
            }
        }
    }
    v
}

fn body_offset(msg: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while pos < msg.len() {
        let end = msg[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..end];
        if line == b"\n" || line == b"\r\n" {
            return Some(pos);
        }
        pos = end;
    }
    None
}

fn check_cleanup(input: &[u8]) {
    for clean in [clean_submission_headers, clean_delivery_headers] {
        let once = clean(input);
        assert_eq!(clean(&once), once, "idempotent");
        if let Some(off) = body_offset(input) {
            assert!(once.ends_with(&input[off..]), "body untouched");
        }
    }
}

#[test]
fn fuzz_mime_and_headers() {
    let mut rng = StdRng::seed_from_u64(0x00C4_A7A1_1B0C);
    let seeds = [
        chat_message(ALICE),
        securejoin(ALICE, "vc-request", "Secure-Join: vc-request"),
        mailer_daemon_report(),
        mdn(BOB),
        plain(ALICE),
    ];
    for i in 0..ITERATIONS {
        let input = if i % 10 == 0 {
            let n = rng.gen_range(0..512);
            (0..n).map(|_| rng.gen()).collect()
        } else {
            mutate(&mut rng, &seeds[i % seeds.len()])
        };
        let _ = is_encrypted(&input, Direction::Outgoing);
        let _ = is_encrypted(&input, Direction::Incoming);
        let _ = is_securejoin(&input);
        let _ = is_mailer_daemon_report(&input);
        check_cleanup(&input);
    }
}

#[test]
fn fuzz_armor_layer() {
    let mut rng = StdRng::seed_from_u64(7);
    let k = keys();
    let armored = armor(&encrypt(&[&k.v4_a], &[], b"fuzz"));
    for _ in 0..ITERATIONS {
        let a = mutate(&mut rng, armored.as_bytes());
        let msg = pgp_mime(ALICE, &String::from_utf8_lossy(&a));
        let _ = is_encrypted(&msg, Direction::Incoming);
    }
}

#[test]
fn fuzz_packet_layer() {
    let mut rng = StdRng::seed_from_u64(42);
    let k = keys();
    let seeds = [
        encrypt(&[&k.v4_a, &k.v4_b], &[], b"fuzz"),
        encrypt(&[&k.v6], &[], b"fuzz v2"),
        encrypt(&[], &["pw"], b"skesk"),
        literal(b"literal"),
        signature(&k.v4_a, b"sig"),
    ];
    let mut accepted = 0;
    for i in 0..ITERATIONS {
        let bin = if i % 10 == 0 {
            let n = rng.gen_range(0..256);
            (0..n).map(|_| rng.gen()).collect()
        } else {
            mutate(&mut rng, &seeds[i % seeds.len()])
        };
        let msg = pgp_mime(ALICE, &armor(&bin));
        if is_encrypted(&msg, Direction::Outgoing) {
            accepted += 1;
        }
    }
    // Mutations inside the SEIPD body keep the structure valid, so some pass; most do not.
    assert!(accepted < ITERATIONS / 2, "{accepted} accepted");
}
