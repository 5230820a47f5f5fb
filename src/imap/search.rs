//! SEARCH and UID SEARCH: evaluation of search keys over the session's view.
//!
//! Supported: ALL, sequence sets, UID, flag keys (SEEN, UNSEEN, DELETED, ...), NEW/OLD/RECENT,
//! KEYWORD/UNKEYWORD (no keywords are stored), LARGER/SMALLER, BEFORE/ON/SINCE (internal date,
//! UTC), FROM/TO/CC/BCC/SUBJECT/HEADER (substring of unfolded header values, no MIME decoding),
//! BODY/TEXT, MODSEQ, AND/OR/NOT. SENTBEFORE/SENTON/SENTSINCE are refused with BAD.
//!
//! Owns: search semantics. Must not know: sockets, sled, wire syntax.

use std::num::{NonZeroU32, NonZeroU64};

use imap_types::core::{Charset, Tag};
use imap_types::datetime::NaiveDate;
use imap_types::response::{Code, Data};
use imap_types::search::SearchKey;
use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::codec;
use super::message;
use super::session::{Done, Session};
use crate::replies::imap as r;
use crate::store::{Flags, MsgInfo};

/// Per-message facts a key is evaluated against.
struct Target<'a> {
    seq: u32,
    max_seq: u32,
    max_uid: u32,
    info: &'a MsgInfo,
    body: &'a [u8],
}

impl Session {
    pub(super) async fn cmd_search(
        &mut self,
        tag: &Tag<'static>,
        charset: Option<Charset<'static>>,
        criteria: Vec<SearchKey<'static>>,
        uid: bool,
    ) -> Done {
        if let Some(cs) = charset {
            let name = cs.as_ref().to_ascii_lowercase();
            if name != "us-ascii" && name != "utf-8" {
                return Ok(codec::no(
                    tag,
                    Some(Code::BadCharset {
                        allowed: Vec::new(),
                    }),
                    r::BAD_CHARSET,
                ));
            }
        }
        if !criteria.iter().all(supported) {
            return Ok(codec::bad(Some(tag), None, r::UNSUPPORTED_SEARCH));
        }
        let needs_body = criteria.iter().any(needs_body);
        let with_modseq = criteria.iter().any(uses_modseq);
        if with_modseq {
            self.condstore = true;
        }
        let Some(view) = self.sel.as_ref() else {
            return Ok(codec::bad(Some(tag), None, r::WRONG_STATE));
        };
        let msgs: Vec<MsgInfo> = view.msgs.clone();
        let max_seq = msgs.len() as u32;
        let max_uid = msgs.last().map(|m| m.uid).unwrap_or(0);
        let mut hits = Vec::new();
        let mut highest = 0;
        for (i, info) in msgs.iter().enumerate() {
            let body = if needs_body {
                let m = *info;
                match self.store(move |s| s.read_body(&m)).await {
                    Ok(b) => b,
                    Err(_) => continue,
                }
            } else {
                Vec::new()
            };
            let t = Target {
                seq: i as u32 + 1,
                max_seq,
                max_uid,
                info,
                body: &body,
            };
            if criteria.iter().all(|k| eval(k, &t)) {
                let n = if uid { info.uid } else { t.seq };
                if let Some(n) = NonZeroU32::new(n) {
                    hits.push(n);
                }
                highest = highest.max(info.modseq);
            }
        }
        let modseq = if with_modseq {
            NonZeroU64::new(highest)
        } else {
            None
        };
        self.send(&codec::encode_data(Data::Search(hits, modseq)));
        let what = if uid { "UID SEARCH" } else { "SEARCH" };
        Ok(codec::ok(tag, None, &r::completed(what)))
    }
}

fn supported(k: &SearchKey<'_>) -> bool {
    match k {
        SearchKey::SentBefore(_) | SearchKey::SentOn(_) | SearchKey::SentSince(_) => false,
        SearchKey::And(ks) => ks.as_ref().iter().all(supported),
        SearchKey::Or(a, b) => supported(a) && supported(b),
        SearchKey::Not(a) => supported(a),
        _ => true,
    }
}

fn needs_body(k: &SearchKey<'_>) -> bool {
    match k {
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => true,
        SearchKey::And(ks) => ks.as_ref().iter().any(needs_body),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Not(a) => needs_body(a),
        _ => false,
    }
}

fn uses_modseq(k: &SearchKey<'_>) -> bool {
    match k {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(ks) => ks.as_ref().iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(a) => uses_modseq(a),
        _ => false,
    }
}

fn in_set(set: &SequenceSet, value: u32, star: u32) -> bool {
    if star == 0 {
        return false;
    }
    let val = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => star,
    };
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(a) => val(a) == value,
        Sequence::Range(a, b) => {
            let (a, b) = (val(a), val(b));
            a.min(b) <= value && value <= a.max(b)
        }
    })
}

/// Midnight UTC of a date, in unix seconds.
fn midnight(d: &NaiveDate) -> i64 {
    d.as_ref()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or(0)
}

fn header_contains(body: &[u8], name: &[u8], needle: &[u8]) -> bool {
    let (header, _) = message::split(body);
    message::values(header, name)
        .iter()
        .any(|v| message::contains_ci(v, needle))
}

fn eval(k: &SearchKey<'_>, t: &Target<'_>) -> bool {
    let f = t.info.flags;
    match k {
        SearchKey::All => true,
        SearchKey::And(ks) => ks.as_ref().iter().all(|k| eval(k, t)),
        SearchKey::Or(a, b) => eval(a, t) || eval(b, t),
        SearchKey::Not(a) => !eval(a, t),
        SearchKey::SequenceSet(s) => in_set(s, t.seq, t.max_seq),
        SearchKey::Uid(s) => in_set(s, t.info.uid, t.max_uid),
        SearchKey::Answered => f.contains(Flags::ANSWERED),
        SearchKey::Unanswered => !f.contains(Flags::ANSWERED),
        SearchKey::Deleted => f.contains(Flags::DELETED),
        SearchKey::Undeleted => !f.contains(Flags::DELETED),
        SearchKey::Draft => f.contains(Flags::DRAFT),
        SearchKey::Undraft => !f.contains(Flags::DRAFT),
        SearchKey::Flagged => f.contains(Flags::FLAGGED),
        SearchKey::Unflagged => !f.contains(Flags::FLAGGED),
        SearchKey::Seen => f.contains(Flags::SEEN),
        SearchKey::Unseen => !f.contains(Flags::SEEN),
        // No message is ever \Recent here.
        SearchKey::New | SearchKey::Recent => false,
        SearchKey::Old => true,
        SearchKey::Keyword(_) => false,
        SearchKey::Unkeyword(_) => true,
        SearchKey::Larger(n) => t.info.size > u64::from(*n),
        SearchKey::Smaller(n) => t.info.size < u64::from(*n),
        SearchKey::Before(d) => t.info.internal_date < midnight(d),
        SearchKey::Since(d) => t.info.internal_date >= midnight(d),
        SearchKey::On(d) => {
            let m = midnight(d);
            (m..m + 86400).contains(&t.info.internal_date)
        }
        SearchKey::From(s) => header_contains(t.body, b"from", s.as_ref()),
        SearchKey::To(s) => header_contains(t.body, b"to", s.as_ref()),
        SearchKey::Cc(s) => header_contains(t.body, b"cc", s.as_ref()),
        SearchKey::Bcc(s) => header_contains(t.body, b"bcc", s.as_ref()),
        SearchKey::Subject(s) => header_contains(t.body, b"subject", s.as_ref()),
        SearchKey::Header(name, value) => header_contains(t.body, name.as_ref(), value.as_ref()),
        SearchKey::Body(s) => message::contains_ci(message::split(t.body).1, s.as_ref()),
        SearchKey::Text(s) => message::contains_ci(t.body, s.as_ref()),
        SearchKey::ModSequence { modseq, .. } => t.info.modseq >= *modseq,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_types::core::AString;

    const MSG: &[u8] = b"From: Alice <alice@chat.test>\r\nSubject: Hello\r\n\r\nThe body\r\n";

    fn t(info: &MsgInfo) -> Target<'_> {
        Target {
            seq: 2,
            max_seq: 3,
            max_uid: 9,
            info,
            body: MSG,
        }
    }

    #[test]
    fn evaluates_keys() {
        let info = MsgInfo {
            uid: 5,
            blob: 0,
            flags: Flags::SEEN,
            modseq: 4,
            size: MSG.len() as u64,
            internal_date: 86400 * 10 + 5,
        };
        let s = |x: &str| AString::try_from(x.to_string()).unwrap();
        let set = |x: &str| x.parse::<SequenceSet>().unwrap();
        assert!(eval(&SearchKey::From(s("ALICE@chat.test")), &t(&info)));
        assert!(!eval(&SearchKey::From(s("bob")), &t(&info)));
        assert!(eval(&SearchKey::Header(s("subject"), s("hell")), &t(&info)));
        assert!(eval(&SearchKey::Header(s("subject"), s("")), &t(&info)));
        assert!(!eval(&SearchKey::Header(s("x-none"), s("")), &t(&info)));
        assert!(eval(&SearchKey::Body(s("body")), &t(&info)));
        assert!(!eval(&SearchKey::Body(s("hello")), &t(&info)));
        assert!(eval(&SearchKey::Seen, &t(&info)));
        assert!(!eval(&SearchKey::Unseen, &t(&info)));
        assert!(eval(&SearchKey::Uid(set("4:*")), &t(&info)));
        assert!(eval(&SearchKey::Uid(set("*:5")), &t(&info)));
        assert!(!eval(&SearchKey::Uid(set("6:8")), &t(&info)));
        assert!(eval(&SearchKey::SequenceSet(set("2")), &t(&info)));
        assert!(eval(
            &SearchKey::Not(Box::new(SearchKey::SequenceSet(set("3")))),
            &t(&info)
        ));
        let day = |d: u32| {
            NaiveDate::try_from(chrono::NaiveDate::from_ymd_opt(1970, 1, d).unwrap()).unwrap()
        };
        assert!(eval(&SearchKey::On(day(11)), &t(&info)));
        assert!(eval(&SearchKey::Since(day(11)), &t(&info)));
        assert!(!eval(&SearchKey::Before(day(11)), &t(&info)));
        assert!(eval(&SearchKey::Before(day(12)), &t(&info)));
        assert!(!supported(&SearchKey::SentOn(day(1))));
    }
}
