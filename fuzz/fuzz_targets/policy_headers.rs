//! Fuzz the header cleanup: never panics, idempotent, and the body (from the first empty line
//! on) comes out unchanged.
#![no_main]

use chatmail_box::policy::{clean_delivery_headers, clean_submission_headers};
use libfuzzer_sys::fuzz_target;

fn body_offset(msg: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while pos < msg.len() {
        let end = msg[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |i| pos + i + 1);
        if matches!(&msg[pos..end], b"\n" | b"\r\n") {
            return Some(pos);
        }
        pos = end;
    }
    None
}

fuzz_target!(|data: &[u8]| {
    for clean in [clean_submission_headers, clean_delivery_headers] {
        let once = clean(data);
        assert_eq!(clean(&once), once);
        if let Some(off) = body_offset(data) {
            assert!(once.ends_with(&data[off..]));
        }
    }
});
