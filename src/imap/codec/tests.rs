//! Codec tests: the Delta Chat command corpus decodes, limits hold, and garbage never panics.

use imap_types::command::CommandBody;

use super::*;

const LIMITS: Limits = Limits {
    max_line: 1000,
    max_message: 10_000,
};

fn one(input: &[u8]) -> Event {
    let mut f = Framer::new(LIMITS);
    f.feed(input);
    f.next(Expect::Command).expect("an event")
}

fn cmd(input: &[u8]) -> CommandBody<'static> {
    match one(input) {
        Event::Command(c) => c.body,
        other => panic!(
            "not a command: {other:?} for {:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

#[test]
fn delta_chat_corpus_decodes() {
    let corpus: &[&[u8]] = &[
        b"A0001 LOGIN \"alice0001@chat.test\" \"p\\\"a\\\\ss\"\r\n",
        b"A2 ID (\"name\" \"Delta Chat\")\r\n",
        b"A3 GETQUOTAROOT \"INBOX\"\r\n",
        b"A4 GETMETADATA \"\" (/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay /shared/vendor/deltachat/turn /shared/vendor/deltachat/maxsmtprecipients /shared/vendor/deltachat/appversions)\r\n",
        b"A5 SELECT \"INBOX\"\r\n",
        b"A6 UID FETCH 1:500 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE X-MICROSOFT-ORIGINAL-MESSAGE-ID FROM CONTENT-TYPE SECURE-JOIN CHAT-VERSION CHAT-IS-POST-MESSAGE AUTOCRYPT-SETUP-MESSAGE)])\r\n",
        b"A7 IDLE\r\n",
        b"A8 UID FETCH 1 (FLAGS BODY.PEEK[])\r\n",
        b"A9 UID STORE 1 +FLAGS (\\Deleted)\r\n",
        b"A10 CLOSE\r\n",
        b"A11 SELECT \"INBOX\" (CONDSTORE)\r\n",
        b"A12 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5)\r\n",
        b"A13 UID SEARCH FROM \"alice@chat.test\"\r\n",
        b"A14 SETMETADATA \"INBOX\" (/private/devicetoken \"openpgp:abc\")\r\n",
        b"A15 SETMETADATA \"INBOX\" (/private/devicetoken {4+}\r\n1111)\r\n",
        b"A16 LIST \"\" *\r\n",
        b"A17 EXAMINE \"INBOX.DeltaChat\"\r\n",
        b"A18 UID MOVE 1:3 \"DeltaChat\"\r\n",
        b"A19 ENABLE CONDSTORE\r\n",
        b"A20 STATUS \"INBOX\" (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)\r\n",
        b"A21 AUTHENTICATE PLAIN\r\n",
        b"A22 UID STORE 1:2 (UNCHANGEDSINCE 7) +FLAGS.SILENT (\\Seen)\r\n",
        b"A23 UID EXPUNGE 4\r\n",
        b"A24 STARTTLS\r\n",
        b"a25 noop\n",
    ];
    for c in corpus {
        cmd(c);
    }
}

#[test]
fn login_quoted_escapes() {
    let CommandBody::Login { username, password } = cmd(b"A LOGIN \"a@b\" \"p\\\"a\\\\ss\"\r\n")
    else {
        panic!()
    };
    assert_eq!(username.as_ref(), b"a@b");
    assert_eq!(password.declassify().as_ref(), b"p\"a\\ss");
}

#[test]
fn sync_literal_needs_continuation_then_decodes() {
    let mut f = Framer::new(LIMITS);
    f.feed(b"A1 APPEND INBOX (\\Seen) {5}\r\n");
    assert!(matches!(f.next(Expect::Command), Some(Event::Continue)));
    assert!(f.next(Expect::Command).is_none());
    f.feed(b"hello\r\n");
    let Some(Event::Command(c)) = f.next(Expect::Command) else {
        panic!()
    };
    assert!(matches!(c.body, CommandBody::Append { .. }));
}

#[test]
fn large_messages_then_pipelined_commands() {
    let limits = Limits {
        max_line: 1000,
        max_message: 1 << 20,
    };
    let body = vec![b'x'; 300 * 1024];
    // Alone: the framer resets its buffers afterwards and keeps working.
    let mut f = Framer::new(limits);
    f.feed(format!("A1 APPEND INBOX {{{}+}}\r\n", body.len()).as_bytes());
    f.feed(&body);
    f.feed(b"\r\n");
    assert!(matches!(f.next(Expect::Command), Some(Event::Command(_))));
    assert!(!f.has_partial());
    f.feed(b"A2 NOOP\r\n");
    assert!(matches!(f.next(Expect::Command), Some(Event::Command(_))));
    // With a pipelined command behind it, nothing is lost.
    let mut f = Framer::new(limits);
    f.feed(format!("A1 APPEND INBOX {{{}+}}\r\n", body.len()).as_bytes());
    f.feed(&body);
    f.feed(b"\r\nA2 NOOP\r\n");
    assert!(matches!(f.next(Expect::Command), Some(Event::Command(_))));
    let Some(Event::Command(c)) = f.next(Expect::Command) else {
        panic!("pipelined command lost")
    };
    assert_eq!(c.tag.as_ref(), "A2");
}

#[test]
fn oversized_sync_literal_is_refused_and_skipped() {
    let mut f = Framer::new(LIMITS);
    f.feed(b"A1 APPEND INBOX {20000}\r\nA2 NOOP\r\n");
    match f.next(Expect::Command) {
        Some(Event::Refused { tag, append }) => {
            assert_eq!(tag.unwrap().as_ref(), "A1");
            assert!(append);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(f.next(Expect::Command), Some(Event::Command(_))));
}

#[test]
fn oversized_nonsync_literal_is_fatal() {
    let mut f = Framer::new(LIMITS);
    f.feed(b"A1 APPEND INBOX {20000+}\r\n");
    assert!(matches!(
        f.next(Expect::Command),
        Some(Event::Fatal {
            why: Fatal::LiteralTooBig,
            ..
        })
    ));
}

#[test]
fn small_commands_get_small_literals() {
    let mut f = Framer::new(LIMITS);
    f.feed(b"A1 LOGIN {5000}\r\n");
    assert!(matches!(
        f.next(Expect::Command),
        Some(Event::Refused { append: false, .. })
    ));
}

#[test]
fn long_line_is_fatal() {
    let mut f = Framer::new(LIMITS);
    f.feed(b"A1 NOOP ");
    f.feed(&[b'x'; 2000]);
    assert!(matches!(
        f.next(Expect::Command),
        Some(Event::Fatal {
            why: Fatal::LineTooLong,
            ..
        })
    ));
}

#[test]
fn garbage_is_bad_with_tag() {
    match one(b"A1 FROBNICATE x\r\n") {
        Event::Bad { tag } => assert_eq!(tag.unwrap().as_ref(), "A1"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(one(b"\r\n"), Event::Bad { tag: None }));
}

#[test]
fn idle_done_and_auth_data() {
    let mut f = Framer::new(LIMITS);
    f.feed(b"DONE\r\n");
    assert!(matches!(f.next(Expect::IdleDone), Some(Event::IdleDone)));
    f.feed(b"AGFAYgBj\r\n");
    match f.next(Expect::AuthData) {
        Some(Event::AuthData(AuthenticateData::Continue(d))) => {
            assert_eq!(d.declassify().as_ref(), b"\0a@b\0c")
        }
        other => panic!("{other:?}"),
    }
    f.feed(b"*\r\n");
    assert!(matches!(
        f.next(Expect::AuthData),
        Some(Event::AuthData(AuthenticateData::Cancel))
    ));
}

#[test]
fn discard_drops_pipelined_input() {
    let mut f = Framer::new(LIMITS);
    f.feed(b"A1 STARTTLS\r\nA2 LOGIN a b\r\n");
    assert!(matches!(f.next(Expect::Command), Some(Event::Command(_))));
    f.discard();
    assert!(f.next(Expect::Command).is_none());
}

#[test]
fn command_names() {
    assert_eq!(command_name(b"a uid fetch 1"), Some("FETCH".into()));
    assert_eq!(command_name(b"a APPEND x {3}\r\n"), Some("APPEND".into()));
    assert_eq!(command_name(b"a"), None);
}

#[test]
fn responses_encode() {
    let t = Tag::try_from("A1").unwrap();
    assert_eq!(ok(&t, None, "done"), b"A1 OK done\r\n");
    assert_eq!(bad(None, None, ""), b"* BAD -\r\n");
    assert_eq!(continuation("Ready"), b"+ Ready\r\n");
    let g = greeting(&["IMAP4rev1", "STARTTLS", "LOGINDISABLED"], "hi");
    assert_eq!(
        g,
        b"* OK [CAPABILITY IMAP4REV1 STARTTLS LOGINDISABLED] hi\r\n"
    );
    assert_eq!(
        no(&t, Some(code_atom("PRIVACYREQUIRED")), "x"),
        b"A1 NO [PRIVACYREQUIRED] x\r\n"
    );
}

/// Deterministic pseudo-random generator (xorshift) so the fuzz test needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_input_never_panics() {
    let alphabet: &[u8] = b"A1 UIDFETCHSTORELOGINAPPEND(){}+*:,\\\"\r\n[]<>.0123456789~%";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let mut f = Framer::new(LIMITS);
        let len = (rng.next() % 300) as usize;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            let r = rng.next();
            bytes.push(if round % 2 == 0 {
                alphabet[(r % alphabet.len() as u64) as usize]
            } else {
                r as u8
            });
        }
        // Feed in random chunks, with all three expectations.
        let mut pos = 0;
        while pos < bytes.len() {
            let n = 1 + (rng.next() % 40) as usize;
            let end = (pos + n).min(bytes.len());
            f.feed(&bytes[pos..end]);
            pos = end;
            let expect = match rng.next() % 3 {
                0 => Expect::Command,
                1 => Expect::AuthData,
                _ => Expect::IdleDone,
            };
            for _ in 0..100 {
                if f.next(expect).is_none() {
                    break;
                }
            }
        }
    }
}

#[test]
fn delta_chat_prefix_lines_with_garbage_never_panic() {
    let mut rng = Rng(42);
    let base: &[u8] =
        b"A6 UID FETCH 1:500 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)])\r\n";
    for _ in 0..2000 {
        let mut v = base.to_vec();
        for _ in 0..3 {
            let i = (rng.next() % v.len() as u64) as usize;
            v[i] = rng.next() as u8;
        }
        let mut f = Framer::new(LIMITS);
        f.feed(&v);
        while f.next(Expect::Command).is_some() {}
    }
}
