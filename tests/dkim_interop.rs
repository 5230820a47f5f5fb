//! Our DKIM signatures checked by an independent verifier: dkimpy (Debian `python3-dkim`),
//! with the key record handed to it directly. Skipped (with a notice) if dkimpy is missing.

use std::process::Command;

use chatmail_box::config::Config;
use chatmail_box::dkim::Dkim;

const VERIFY: &str = r#"
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
rec = open(sys.argv[2], 'rb').read()
def dns(name, timeout=5):
    return rec if name.startswith(sys.argv[3].encode()) else None
ok = dkim.verify(msg, dnsfunc=dns)
print("PASS" if ok else "FAIL")
"#;

fn python_with_dkim() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import dkim"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn verify(py: &str, dir: &std::path::Path, msg: &[u8], record: &str, selector: &str) -> String {
    std::fs::write(dir.join("msg.eml"), msg).unwrap();
    std::fs::write(dir.join("rec.txt"), record).unwrap();
    std::fs::write(dir.join("v.py"), VERIFY).unwrap();
    let out = Command::new(py)
        .arg(dir.join("v.py"))
        .arg(dir.join("msg.eml"))
        .arg(dir.join("rec.txt"))
        .arg(format!("{selector}._domainkey."))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn dkimpy_verifies_our_rsa_and_ed25519_signatures() {
    let Some(py) = python_with_dkim() else {
        eprintln!("SKIPPED: dkimpy (python3-dkim) not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        mail_domain: "chat.example.org".into(),
        data_dir: dir.path().join("data"),
        dkim_ed25519: true,
        ..Config::default()
    };
    let dkim = Dkim::new(&cfg, chatmail_box::delivery::build_resolver(&cfg));
    let msg = b"From: Alice <alice@chat.example.org>\r\nTo: bob@other.example\r\nSubject: [...]\r\nDate: Mon, 04 May 2026 10:00:00 +0000\r\nMessage-ID: <x@chat.example.org>\r\nAutocrypt: addr=alice@chat.example.org; keydata=AAAA\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello\r\n.leading dot\r\n\r\n";
    let signed = dkim.sign_blocking(msg).unwrap();
    let records = dkim.dns_records().unwrap();
    let (rsa_owner, rsa_rec) = &records[0];
    let (ed_owner, ed_rec) = &records[1];
    // Only the RSA key is resolvable: the RSA signature must pass on its own.
    let rsa_sel = rsa_owner.trim_end_matches("._domainkey");
    let only_rsa = {
        // Drop the Ed25519 signature (the second field) for this check.
        let s = String::from_utf8(signed.clone()).unwrap();
        let second = s[1..].find("DKIM-Signature:").unwrap() + 1;
        let end = s[second..].find("\r\nFrom:").unwrap() + second + 2;
        format!("{}{}", &s[..second], &s[end..]).into_bytes()
    };
    assert_eq!(verify(py, dir.path(), &only_rsa, rsa_rec, rsa_sel), "PASS");
    // An added Subject (over-signed) breaks it for dkimpy too.
    let mut added = b"Subject: added\r\n".to_vec();
    added.extend_from_slice(&only_rsa);
    assert_eq!(verify(py, dir.path(), &added, rsa_rec, rsa_sel), "FAIL");
    // dkimpy verifies the first signature: put the Ed25519 one on top.
    let ed_sel = ed_owner.trim_end_matches("._domainkey");
    let s = String::from_utf8(signed).unwrap();
    let second = s[1..].find("DKIM-Signature:").unwrap() + 1;
    let end = s[second..].find("\r\nFrom:").unwrap() + second + 2;
    let ed_first = format!("{}{}", &s[second..end], &s[end..]).into_bytes();
    assert_eq!(verify(py, dir.path(), &ed_first, ed_rec, ed_sel), "PASS");
}
