//! The web site seen by outside tools, each test skipped when its tool is missing: curl over
//! HTTP/2 posting a body to `/new` (curl showed no response at all when the server answered
//! before reading the body), and headless Chromium screenshots of the pages at phone width,
//! saved under `target/web-screenshots/` for people to look at.
mod common;

use std::process::Command;

use chatmail_box::net::Service;
use common::{TestRelay, DOMAIN};

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `curl` with the relay's HTTPS port mapped to `DOMAIN`; returns (status line code, body).
async fn curl(relay: &TestRelay, args: &[&str], path: &str) -> (String, String) {
    let port = relay.addr(Service::Https).port();
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sk",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code} %{http_version}",
    ])
    .arg("--connect-to")
    .arg(format!("{DOMAIN}:443:127.0.0.1:{port}"))
    .args(args)
    .arg(format!("https://{DOMAIN}{path}"));
    let out = cmd.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

#[tokio::test]
async fn curl_posts_new_with_a_body_over_h2_and_h1() {
    if !have("curl") {
        eprintln!("curl not installed: skipped");
        return;
    }
    let relay = TestRelay::start().await;
    for version in ["--http2", "--http1.1"] {
        for data in ["", "x=1", "{\"some\":\"json\"}"] {
            let (status, body) =
                curl(&relay, &[version, "-X", "POST", "--data", data], "/new").await;
            let want = if version == "--http2" {
                "200 2"
            } else {
                "200 1.1"
            };
            assert_eq!(status, want, "{version} {data:?}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(v["email"]
                .as_str()
                .unwrap()
                .ends_with(&format!("@{DOMAIN}")));
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    let (status, body) = curl(&relay, &["--http2", "-X", "POST", "--data", "x"], "/nope").await;
    assert_eq!(status, "404 2", "{body}");
}

#[tokio::test]
async fn chromium_screenshots_of_the_pages() {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| have(b));
    let Some(browser) = browser else {
        eprintln!("chromium not installed: skipped");
        return;
    };
    let relay = TestRelay::start_with(|c| {
        c.privacy_postal = "Jane Operator\nRelay Street 1\n12345 Town".into();
        c.privacy_mail = "privacy@chat.example".into();
    })
    .await;
    let port = relay.addr(Service::Https).port();
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots");
    std::fs::create_dir_all(&out_dir).unwrap();
    for (page, path) in [
        ("index", "/"),
        ("info", "/info.html"),
        ("privacy", "/privacy.html"),
    ] {
        let shot = out_dir.join(format!("{page}-phone.png"));
        let _ = std::fs::remove_file(&shot);
        let profile = tempfile::tempdir().unwrap();
        let status = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            tokio::process::Command::new(browser)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--ignore-certificate-errors",
                    "--hide-scrollbars",
                    "--window-size=390,1400",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg(format!("--screenshot={}", shot.display()))
                .arg(format!("https://127.0.0.1:{port}{path}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status(),
        )
        .await
        .expect("chromium finished in time")
        .unwrap();
        assert!(status.success(), "{page}");
        let len = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(len > 5_000, "{page}: screenshot of {len} bytes");
    }
}
