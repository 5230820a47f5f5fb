//! Server METADATA over real IMAP sockets: all six keys Delta Chat asks for answer, the TURN
//! value carries REST credentials that verify with HMAC-SHA1 over the per-install secret, and
//! `appversions` comes minified from the operator's replaceable file.
mod common;

use base64::Engine;
use chatmail_box::net::Service;
use chatmail_box::store::now_unix;
use common::{LineClient, TestRelay, DOMAIN};

const PASS: &str = "meta-password-1";

async fn login(relay: &TestRelay, local: &str) -> LineClient {
    let mut c = LineClient::tls(relay.addr(Service::Imaps), &[]).await;
    c.line().await;
    c.send(&format!("L LOGIN \"{local}@{DOMAIN}\" \"{PASS}\""))
        .await;
    let r = c.imap_until("L").await;
    assert!(r.last().unwrap().starts_with("L OK"), "{r:?}");
    c
}

/// Undo IMAP quoting (`"..."` with `\"` and `\\`); `None` for NIL.
fn unquote(v: &str) -> Option<String> {
    if v == "NIL" {
        return None;
    }
    let inner = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a quoted string: {v:?}"));
    let mut out = String::new();
    let mut esc = false;
    for ch in inner.chars() {
        if esc || ch != '\\' {
            out.push(ch);
            esc = false;
        } else {
            esc = true;
        }
    }
    Some(out)
}

/// GETMETADATA of one server key; its value (`None` = NIL).
async fn get(c: &mut LineClient, n: u32, key: &str) -> Option<String> {
    let tag = format!("G{n}");
    c.send(&format!("{tag} GETMETADATA \"\" ({key})")).await;
    let r = c.imap_until(&tag).await;
    assert_eq!(
        r.last().unwrap(),
        &format!("{tag} OK Getmetadata completed")
    );
    assert_eq!(r.len(), 2, "{r:?}");
    let prefix = format!("* METADATA \"\" ({key} ");
    let v = r[0]
        .strip_prefix(&prefix)
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected {:?}", r[0]));
    unquote(v)
}

#[tokio::test]
async fn all_six_server_keys_answer() {
    let files = tempfile::tempdir().unwrap();
    let appv = files.path().join("appversions.json");
    std::fs::write(
        &appv,
        "{\n  \"clients\": [\n    {\"clientId\": \"deltachat\", \"sources\": [{\"sourceId\": \"gplay\", \"versionInteger\": 754, \"versionString\": \"2.57.0\", \"downloadUrl\": \"https://download.delta.chat/x\"}]}\n  ]\n}\n",
    )
    .unwrap();
    let a = appv.clone();
    let relay = TestRelay::start_with(move |c| {
        c.turn = true;
        c.iroh_relay = Some("https://iroh.example.org".into());
        c.privacy_mail = "privacy@example.org".into();
        c.appversions_file = Some(a);
    })
    .await;
    let mut c = login(&relay, "metaowner").await;
    assert_eq!(get(&mut c, 1, "/shared/comment").await, None);
    assert_eq!(
        get(&mut c, 2, "/shared/admin").await.as_deref(),
        Some("mailto:privacy@example.org")
    );
    assert_eq!(
        get(&mut c, 3, "/shared/vendor/deltachat/irohrelay")
            .await
            .as_deref(),
        Some("https://iroh.example.org")
    );
    assert_eq!(
        get(&mut c, 4, "/shared/vendor/deltachat/maxsmtprecipients")
            .await
            .as_deref(),
        Some("1000")
    );
    let v = get(&mut c, 5, "/shared/vendor/deltachat/appversions")
        .await
        .unwrap();
    assert_eq!(
        v,
        r#"{"clients":[{"clientId":"deltachat","sources":[{"sourceId":"gplay","versionInteger":754,"versionString":"2.57.0","downloadUrl":"https://download.delta.chat/x"}]}]}"#
    );
    // The operator replaces the file: the next read serves it, no restart needed.
    std::fs::write(&appv, "{\"clients\": []}").unwrap();
    assert_eq!(
        get(&mut c, 6, "/shared/vendor/deltachat/appversions")
            .await
            .as_deref(),
        Some(r#"{"clients":[]}"#)
    );

    // TURN: <host>:3478:<expiry>:<base64 HMAC-SHA1(secret, expiry)>.
    let before = now_unix();
    let v = get(&mut c, 7, "/shared/vendor/deltachat/turn")
        .await
        .unwrap();
    let parts: Vec<&str> = v.splitn(4, ':').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], DOMAIN);
    assert_eq!(parts[1], "3478");
    let expiry: i64 = parts[2].parse().unwrap();
    assert!(
        (before + 5 * 86400..=now_unix() + 5 * 86400).contains(&expiry),
        "{expiry}"
    );
    let secret_file = relay.ctx.cfg.data_dir.join("turn.secret");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "turn.secret must be private");
    }
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        secret.trim().as_bytes(),
    );
    let mac = base64::engine::general_purpose::STANDARD
        .decode(parts[3])
        .unwrap();
    ring::hmac::verify(&key, parts[2].as_bytes(), &mac).expect("TURN password verifies");
    // Credentials come from the same secret on every read.
    let v2 = get(&mut c, 8, "/shared/vendor/deltachat/turn")
        .await
        .unwrap();
    let p2: Vec<&str> = v2.splitn(4, ':').collect();
    let mac2 = base64::engine::general_purpose::STANDARD
        .decode(p2[3])
        .unwrap();
    ring::hmac::verify(&key, p2[2].as_bytes(), &mac2).unwrap();
}

#[tokio::test]
async fn defaults_without_turn_or_files() {
    let relay = TestRelay::start().await;
    let mut c = login(&relay, "metadflt1").await;
    assert_eq!(get(&mut c, 1, "/shared/vendor/deltachat/turn").await, None);
    assert_eq!(
        get(&mut c, 2, "/shared/vendor/deltachat/appversions")
            .await
            .as_deref(),
        Some(r#"{"clients":[]}"#)
    );
    assert_eq!(
        get(&mut c, 3, "/shared/vendor/deltachat/irohrelay").await,
        None
    );
    assert_eq!(get(&mut c, 4, "/shared/admin").await, None);
    assert!(!relay.ctx.cfg.data_dir.join("turn.secret").exists());
}
