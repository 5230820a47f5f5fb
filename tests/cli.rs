//! The binary's CLI: check-config, account management, import, the data-dir lock, invite.
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chatmail-box"))
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).env("RUST_LOG", "warn").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_the_bad_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("c.toml");
    std::fs::write(
        &cfg,
        "mail_domain = \"chat.example.org\"\nmax_message_size = \"huge\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["--config", cfg.to_str().unwrap(), "check-config"]);
    assert!(!ok);
    assert!(err.contains("max_message_size"), "{err}");

    std::fs::write(
        &cfg,
        "mail_domain = \"chat.example.org\"\npassword_min_length = 0\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["--config", cfg.to_str().unwrap(), "check-config"]);
    assert!(!ok);
    assert!(err.contains("password_min_length"), "{err}");

    std::fs::write(&cfg, "mail_domain = \"chat.example.org\"\nfoo = 1\n").unwrap();
    let (ok, out, err) = run(&["--config", cfg.to_str().unwrap(), "check-config"]);
    assert!(ok, "{err}");
    assert!(err.contains("unknown config key `foo`"), "{err}");
    assert!(out.contains("chat.example.org"));
}

#[test]
fn account_add_list_delete() {
    let d = tempfile::tempdir().unwrap();
    let dd = d.path().to_str().unwrap();
    let (ok, out, err) = run(&[
        "--data-dir",
        dd,
        "account",
        "add",
        "abcdefghi@_chatmail.localhost",
    ]);
    assert!(ok, "{err}");
    let pw = out
        .split_whitespace()
        .nth(1)
        .expect("generated password printed");
    assert!(pw.len() >= 9);
    let (ok, _, err) = run(&[
        "--data-dir",
        dd,
        "account",
        "add",
        "ABCDEFGHI@_chatmail.localhost",
    ]);
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, _, err) = run(&["--data-dir", dd, "account", "add", "x@_chatmail.localhost"]);
    assert!(!ok && err.contains("length"), "{err}");
    let (_, out, _) = run(&["--data-dir", dd, "account", "list"]);
    assert_eq!(out.trim(), "abcdefghi@_chatmail.localhost");
    let (ok, _, _) = run(&[
        "--data-dir",
        dd,
        "account",
        "delete",
        "abcdefghi@_chatmail.localhost",
    ]);
    assert!(ok);
    let (_, out, _) = run(&["--data-dir", dd, "account", "list"]);
    assert!(out.trim().is_empty());
    let (ok, _, _) = run(&[
        "--data-dir",
        dd,
        "account",
        "delete",
        "abcdefghi@_chatmail.localhost",
    ]);
    assert!(!ok);
}

#[test]
fn import_chatmail_mailboxes() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("mail");
    let params = sha_crypt::Sha512Params::new(5000).unwrap();
    for (addr, marker) in [
        ("legacy001@_chatmail.localhost", false),
        ("newer0001@_chatmail.localhost", true),
    ] {
        let p = src.join(addr);
        std::fs::create_dir_all(&p).unwrap();
        let h = sha_crypt::sha512_simple("importpass", &params).unwrap();
        std::fs::write(p.join("password"), format!("{{SHA512-CRYPT}}{h}\n")).unwrap();
        if marker {
            std::fs::write(p.join("enforceE2EEincoming"), b"").unwrap();
        }
    }
    std::fs::create_dir_all(src.join("empty0001@_chatmail.localhost")).unwrap();
    std::fs::create_dir_all(src.join("pending_notifications")).unwrap();
    let data = d.path().join("data");
    let (ok, out, err) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "account",
        "import-chatmail",
        src.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 2 accounts"), "{out}");
    let store = chatmail_box::store::Store::open(&data, 1 << 20).unwrap();
    let legacy = store
        .account("legacy001@_chatmail.localhost")
        .unwrap()
        .unwrap();
    assert!(!legacy.enforce_e2ee);
    assert!(chatmail_box::auth::verify_password(
        "importpass",
        &legacy.password_hash
    ));
    assert!(
        store
            .account("newer0001@_chatmail.localhost")
            .unwrap()
            .unwrap()
            .enforce_e2ee
    );
}

#[test]
fn second_process_on_one_data_dir_fails_clearly() {
    let d = tempfile::tempdir().unwrap();
    let _held = chatmail_box::store::Store::open(d.path(), 1 << 20).unwrap();
    let (ok, _, err) = run(&["--data-dir", d.path().to_str().unwrap(), "account", "list"]);
    assert!(!ok);
    assert!(
        err.contains("in use by another chatmail-box process"),
        "{err}"
    );
}

/// The terminal QR of `invite` (Unicode half blocks, light modules painted for dark terminals)
/// turned back into a bitmap and decoded.
fn decode_terminal_qr(out: &str) -> String {
    let rows: Vec<Vec<char>> = out
        .lines()
        .filter(|l| {
            l.chars().count() >= 21 && l.chars().all(|c| matches!(c, '█' | '▀' | '▄' | ' '))
        })
        .map(|l| l.chars().collect())
        .collect();
    assert!(rows.len() >= 11, "no QR in the output:\n{out}");
    // Each character is one module wide and two modules high: (top, bottom) painted.
    let mut light: Vec<Vec<bool>> = Vec::new();
    for r in &rows {
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in r {
            let (t, b) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            top.push(t);
            bottom.push(b);
        }
        light.push(top);
        light.push(bottom);
    }
    const S: usize = 4;
    let (w, h) = (light[0].len(), light.len());
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w * S, h * S, |x, y| {
        if light[y / S].get(x / S).copied().unwrap_or(true) {
            255
        } else {
            0
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in:\n{out}");
    grids[0].decode().expect("QR decodes").1
}

#[test]
fn invite_prints_link_and_qr() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("c.toml");
    let data = d.path().join("data");
    std::fs::write(
        &cfg,
        format!(
            "mail_domain = \"chat.example.org\"\ntls = \"acme\"\ndata_dir = {:?}\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, out, err) = run(&["--config", cfg.to_str().unwrap(), "invite"]);
    assert!(ok, "{err}");
    let link = "DCACCOUNT:https://chat.example.org/new";
    assert!(out.lines().any(|l| l.trim() == link), "{out}");
    assert_eq!(decode_terminal_qr(&out), link);

    // LAN-only (self-signed, the LAN address as domain): a dclogin: link for a fresh account
    // that names the IP and accepts the certificate.
    std::fs::write(
        &cfg,
        format!(
            "mail_domain = \"192.168.1.20\"\ntls = \"self-signed\"\ndata_dir = {:?}\n\
             [ports]\nimaps = 993\nsubmissions = 465\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, out, err) = run(&["--config", cfg.to_str().unwrap(), "invite"]);
    assert!(ok, "{err}");
    let link = out
        .lines()
        .find(|l| l.starts_with("dclogin:"))
        .unwrap_or_else(|| panic!("no dclogin link in:\n{out}"));
    assert!(link.contains("@[192.168.1.20]?p="), "{link}");
    assert!(link.contains("&ih=192.168.1.20&ip=993&is=ssl&sh=192.168.1.20&sp=465&ss=ssl&ic=3"));
    assert_eq!(decode_terminal_qr(&out), link);
    // Each call invents a fresh account.
    let (_, again, _) = run(&["--config", cfg.to_str().unwrap(), "invite"]);
    assert!(!again.contains(link));

    // Before setup there is nothing to invite to.
    std::fs::write(&cfg, "mail_domain = \"\"\n").unwrap();
    let (ok, _, err) = run(&["--config", cfg.to_str().unwrap(), "invite"]);
    assert!(!ok);
    assert!(err.contains("mail_domain"), "{err}");
}
