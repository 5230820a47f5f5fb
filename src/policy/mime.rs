//! Small helpers over mail-parser's `Message` shared by the policy checks: content types, the
//! first occurrence of a header (mail-parser's own lookups return the last one), the first
//! `From:` address.

use mail_parser::{HeaderName, HeaderValue, Message, MessagePart};

/// True if the part's `Content-Type` is `ctype/subtype` (case-insensitive).
pub(crate) fn is_type(part: &MessagePart<'_>, ctype: &str, subtype: &str) -> bool {
    part.headers
        .iter()
        .find(|h| h.name == HeaderName::ContentType)
        .and_then(|h| h.value.as_content_type())
        .is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case(ctype)
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
        })
}

/// The raw (unparsed) value of the first top-level header called `name` (case-insensitive),
/// trimmed. None if absent or not UTF-8.
pub(crate) fn first_header_raw<'m>(msg: &'m Message<'_>, name: &str) -> Option<&'m str> {
    let h = msg
        .root_part()
        .headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
    let raw = msg
        .raw_message
        .get(h.offset_start as usize..h.offset_end as usize)?;
    std::str::from_utf8(raw).ok().map(str::trim)
}

/// Why the first `From:` address could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FromError {
    Missing,
    NoAddress,
}

impl FromError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            FromError::Missing => "missing From header",
            FromError::NoAddress => "no address in From header",
        }
    }
}

/// The first address of the first top-level `From:` header.
pub(crate) fn first_from<'m>(msg: &'m Message<'_>) -> Result<&'m str, FromError> {
    let h = msg
        .root_part()
        .headers
        .iter()
        .find(|h| h.name == HeaderName::From)
        .ok_or(FromError::Missing)?;
    let addr = match &h.value {
        HeaderValue::Address(a) => a.first().and_then(|a| a.address()),
        _ => None,
    };
    addr.map(str::trim)
        .filter(|a| !a.is_empty())
        .ok_or(FromError::NoAddress)
}
