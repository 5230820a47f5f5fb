//! Header cleanup exactness (relay-behaviour §5 "After acceptance", §7 step 8): only top-level
//! fields change, folded continuation lines go with their field, everything else is
//! byte-for-byte the input.

use chatmail_box::policy::{clean_delivery_headers, clean_submission_headers};

const BODY: &str = "--b\r\nReceived: from inner part\r\nSubject: inner\r\nX-Mailer: inner\r\n\r\nReceived: a body line\r\nUser-Agent: body\r\n--b--\r\n";

fn message(headers: &str) -> String {
    format!("{headers}\r\n{BODY}")
}

#[test]
fn submission_cleanup_exact() {
    let input = message(concat!(
        "Received: from [192.0.2.1] (helo=[127.0.0.1])\r\n",
        "\tby relay.example with ESMTPSA id 42\r\n",
        "\tfor <bob@relay.example>; Mon, 4 May 2026 10:00:00 +0000\r\n",
        "From: <alice@relay.example>\r\n",
        "X-Originating-IP: [192.0.2.1]\r\n",
        "Subject: a very secret\r\n",
        " folded subject\r\n",
        "x-mailer: Delta Chat\r\n",
        "User-Agent: DC/2.65\r\n",
        "  continued agent\r\n",
        "Message-ID: <m@localhost>\r\n",
        "received: second one\r\n",
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n",
    ));
    let expected = message(concat!(
        "From: <alice@relay.example>\r\n",
        "Subject: [...]\r\n",
        "Message-ID: <m@localhost>\r\n",
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n",
    ));
    let out = clean_submission_headers(input.as_bytes());
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn subject_replaced_everywhere_at_top_level() {
    let input = "Subject: one\r\nSUBJECT : two\r\nSubject:\r\nTo: x\r\n\r\nSubject: body\r\n";
    let out = clean_submission_headers(input.as_bytes());
    assert_eq!(
        out,
        b"Subject: [...]\r\nSubject: [...]\r\nSubject: [...]\r\nTo: x\r\n\r\nSubject: body\r\n"
    );
    // Similar names are not touched.
    let input = "Subject-Extra: x\r\nX-Received: y\r\nReceivedX: z\r\n\r\n";
    assert_eq!(clean_submission_headers(input.as_bytes()), input.as_bytes());
}

#[test]
fn delivery_cleanup_exact() {
    let input = message(concat!(
        "DKIM-Signature: v=1; a=rsa-sha256; d=other.example; s=dkim;\r\n",
        "\th=from:to:subject; bh=abc=;\r\n",
        "\tb=def\r\n",
        "Authentication-Results: relay.example; dkim=pass\r\n",
        "Received: from other.example\r\n",
        "Subject: kept at delivery\r\n",
        "X-Mailer: kept at delivery\r\n",
        "From: <carol@other.example>\r\n",
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n",
    ));
    let expected = message(concat!(
        "Subject: kept at delivery\r\n",
        "X-Mailer: kept at delivery\r\n",
        "From: <carol@other.example>\r\n",
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n",
    ));
    let out = clean_delivery_headers(input.as_bytes());
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn line_endings_and_odd_bytes_kept() {
    // LF-only input stays LF-only; non-UTF-8 bytes survive untouched.
    let input = b"Received: x\n y\nSubject: \xff\xfe\nTo: \xe9t\xe9\n\nbody \xff\nReceived: body\n";
    let out = clean_submission_headers(input);
    assert_eq!(
        out,
        b"Subject: [...]\nTo: \xe9t\xe9\n\nbody \xff\nReceived: body\n".to_vec()
    );
    // No body separator: the whole input is headers. No trailing newline on the last field.
    assert_eq!(
        clean_submission_headers(b"To: x\r\nSubject: y"),
        b"To: x\r\nSubject: [...]".to_vec()
    );
    // Nothing to do: identical output.
    let input = b"From: a\r\nTo: b\r\n\r\nhello\r\n\r\n";
    assert_eq!(clean_submission_headers(input), input.to_vec());
    assert_eq!(clean_delivery_headers(input), input.to_vec());
    // Empty input and body-only input.
    assert_eq!(clean_submission_headers(b""), b"".to_vec());
    assert_eq!(
        clean_submission_headers(b"\r\nReceived: x\r\n"),
        b"\r\nReceived: x\r\n".to_vec()
    );
}

#[test]
fn removing_a_field_never_glues_lines() {
    // A dropped field at the very end of the header block, followed by the separator.
    let input = b"To: b\r\nReceived: x\r\n\tfolded\r\n\r\nbody";
    assert_eq!(
        clean_submission_headers(input),
        b"To: b\r\n\r\nbody".to_vec()
    );
    // A dropped field at the end of input without a newline.
    assert_eq!(
        clean_delivery_headers(b"To: b\r\nReceived: x"),
        b"To: b\r\n".to_vec()
    );
}
