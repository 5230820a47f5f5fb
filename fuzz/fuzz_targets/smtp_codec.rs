//! Fuzz the SMTP codec: command-line framing and parsing, HELO checks, and the DATA decoder
//! (dot-unstuffing, size and line limits, bare CR/LF and smuggling detection). The first byte
//! picks the chunk size the input is fed in, so buffering boundaries are exercised too.
#![no_main]

use chatmail_box::smtp::codec::{
    helo_problem, parse_command, DataDecoder, DataEnd, Frame, LineFramer,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let chunk = (sel as usize % 64) + 1;

    // Command path: frame lines as they trickle in, parse each one.
    let mut framer = LineFramer::new(512);
    let mut buf: Vec<u8> = Vec::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let (n, frame) = framer.next(&buf);
            let line = match frame {
                Frame::Line(l) => Some(l.to_vec()),
                Frame::TooLong => None,
                Frame::NeedMore => {
                    buf.drain(..n);
                    break;
                }
            };
            buf.drain(..n);
            if let Some(l) = line {
                let _ = parse_command(&l);
                let _ = helo_problem(&String::from_utf8_lossy(&l));
            }
        }
    }

    // DATA path: fed in chunks, the result must not depend on the chunking.
    // Like the session: a buffer that the decoder consumes from and the socket appends to.
    let decode = |step: usize| {
        let mut d = DataDecoder::new(4096, 256);
        let mut pending: Vec<u8> = Vec::new();
        let mut consumed = 0usize;
        let mut end: Option<DataEnd> = None;
        for piece in rest.chunks(step) {
            pending.extend_from_slice(piece);
            let (n, e) = d.feed(&pending);
            assert!(n <= pending.len());
            pending.drain(..n);
            consumed += n;
            if e.is_some() {
                end = e;
                break;
            }
        }
        (consumed, end.map(|e| format!("{e:?}")), format!("{:?}", d.finish()))
    };
    let whole = decode(rest.len().max(1));
    let pieces = decode(chunk);
    assert_eq!(whole, pieces, "chunking changed the DATA result");
});
