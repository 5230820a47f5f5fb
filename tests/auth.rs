//! Create-on-login rules through the real `Auth` and `Store` (no sockets needed here; the
//! protocol tests cover LOGIN/AUTH on the wire).
mod common;

use std::sync::Arc;

use chatmail_box::auth::{Auth, AuthError};
use chatmail_box::config::Config;
use chatmail_box::store::Store;

fn setup(f: impl FnOnce(&mut Config)) -> (tempfile::TempDir, Arc<Config>, Store, Auth) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path().to_path_buf());
    f(&mut cfg);
    let cfg = Arc::new(cfg);
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let auth = Auth::new(cfg.clone(), store.clone());
    (dir, cfg, store, auth)
}

#[tokio::test]
async fn first_login_creates_and_wrong_password_changes_nothing() {
    let (_d, _c, store, auth) = setup(|_| {});
    let a = "abcdefghi@_chat.test";
    assert_eq!(
        auth.login("ABCDEFGHI@_chat.test", "password1")
            .await
            .unwrap(),
        a
    );
    let before = store.account(a).unwrap().unwrap();
    assert!(matches!(
        auth.login(a, "password2").await,
        Err(AuthError::Failed)
    ));
    assert_eq!(store.account(a).unwrap().unwrap(), before);
    assert_eq!(auth.login(a, "password1").await.unwrap(), a);
    // two users may share a password; odd characters work
    let odd = r#"pa"ss'w\o/rd"#;
    assert!(auth.login("zzzzzzzzz@_chat.test", odd).await.is_ok());
    assert!(auth.login("yyyyyyyyy@_chat.test", odd).await.is_ok());
    assert!(auth.login("zzzzzzzzz@_chat.test", odd).await.is_ok());
}

#[tokio::test]
async fn creation_rules_refuse_and_store_nothing() {
    let (_d, _c, store, auth) = setup(|_| {});
    for (user, pw) in [
        ("abcdefghi@_chat.test", "admin"),      // password too short
        ("abcdefgh@_chat.test", "password1"),   // local part too short
        ("abcdefghij@_chat.test", "password1"), // too long
        ("abcd+efgh@_chat.test", "password1"),  // bad character
        ("abcd efgh@_chat.test", "password1"),
        ("abcdefghi@other.test", "password1"), // foreign domain
        ("abcdefghi@_chat.test.invalid", "password1"),
        ("abc@efghi@_chat.test", "password1"),
        ("", "password1"),
        ("abcdefghi@_chat.test", ""),
    ] {
        assert!(
            auth.login(user, pw).await.is_err(),
            "{user:?} {pw:?} was accepted"
        );
    }
    assert!(store.accounts().unwrap().is_empty());
}

#[tokio::test]
async fn kill_switch_and_resource_guard_block_only_creation() {
    let (d, _c, store, auth) = setup(|_| {});
    auth.login("existing1@_chat.test", "password1")
        .await
        .unwrap();
    std::fs::write(d.path().join("nocreate"), b"").unwrap();
    assert!(matches!(
        auth.login("newuser01@_chat.test", "password1").await,
        Err(AuthError::CreationRefused(_))
    ));
    assert!(auth
        .login("existing1@_chat.test", "password1")
        .await
        .is_ok());
    std::fs::remove_file(d.path().join("nocreate")).unwrap();
    drop(auth);
    drop(store);

    let (_d, _c, store, auth) = setup(|c| c.min_free_disk_space = u64::MAX);
    store
        .put_account(&chatmail_box::store::Account {
            addr: "existing1@_chat.test".into(),
            password_hash: chatmail_box::auth::hash_password("password1").unwrap(),
            created: 0,
            enforce_e2ee: true,
            last_login_day: 0,
        })
        .unwrap();
    assert!(matches!(
        auth.login("newuser01@_chat.test", "password1").await,
        Err(AuthError::CreationRefused("too little free disk space"))
    ));
    assert!(auth
        .login("existing1@_chat.test", "password1")
        .await
        .is_ok());
    assert_eq!(store.accounts().unwrap().len(), 1);
}

#[tokio::test]
async fn config_flag_kill_switch() {
    let (_d, _c, store, auth) = setup(|c| c.nocreate = true);
    assert!(auth
        .login("newuser01@_chat.test", "password1")
        .await
        .is_err());
    assert!(store.accounts().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_first_logins_leave_one_hash() {
    let (_d, _c, store, auth) = setup(|_| {});
    let auth = Arc::new(auth);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            auth.login("racerace1@_chat.test", "samepassword").await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "racerace1@_chat.test");
    }
    assert_eq!(store.accounts().unwrap().len(), 1);
    // a different password on a concurrent first login fails, never overwrites
    assert!(auth
        .login("racerace1@_chat.test", "otherpassword")
        .await
        .is_err());
}

#[tokio::test]
async fn imported_sha512_crypt_account_logs_in() {
    let (_d, _c, store, auth) = setup(|_| {});
    let params = sha_crypt::Sha512Params::new(5000).unwrap();
    let h = sha_crypt::sha512_simple("legacypass", &params).unwrap();
    store
        .put_account(&chatmail_box::store::Account {
            addr: "legacy001@_chat.test".into(),
            password_hash: format!("{{SHA512-CRYPT}}{h}"),
            created: 0,
            enforce_e2ee: false,
            last_login_day: 0,
        })
        .unwrap();
    assert!(auth
        .login("legacy001@_chat.test", "legacypass")
        .await
        .is_ok());
    assert!(auth
        .login("legacy001@_chat.test", "legacypasX")
        .await
        .is_err());
}

#[test]
fn argon2_verification_cost() {
    // Not a timing assertion: prints the cost so `cargo test -- --nocapture` shows it.
    let h = chatmail_box::auth::hash_password("password1").unwrap();
    let t = std::time::Instant::now();
    for _ in 0..5 {
        assert!(chatmail_box::auth::verify_password("password1", &h));
    }
    println!(
        "argon2id verify: {:.1} ms",
        t.elapsed().as_secs_f64() * 200.0
    );
    let _ = Config::default();
}
