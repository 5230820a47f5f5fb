//! Store-level tests: durability rules, UID monotonicity, race-safe creation.
mod common;

use chatmail_box::store::{Account, Created, FlagOp, Flags, Store, StoreError, INBOX};

fn acct(addr: &str) -> Account {
    Account {
        addr: addr.into(),
        password_hash: "x".into(),
        created: 0,
        enforce_e2ee: true,
        last_login_day: 0,
    }
}

#[test]
fn uidnext_survives_reopen_and_expunge() {
    let dir = tempfile::tempdir().unwrap();
    let a = "alice0001@_chat.test".to_string();
    let validity;
    {
        let s = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            s.create_account(&acct(&a)).unwrap(),
            Created::Created
        ));
        for i in 0..5 {
            let d = s
                .deliver(std::slice::from_ref(&a), format!("msg {i}").as_bytes())
                .unwrap();
            assert_eq!(d.delivered[0].1, i + 1);
        }
        let snap = s.snapshot(&a, INBOX).unwrap().unwrap();
        validity = snap.uidvalidity;
        let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
        s.store_flags(&a, INBOX, &uids, FlagOp::Add, Flags::DELETED, None)
            .unwrap();
        assert_eq!(s.expunge(&a, INBOX, None).unwrap().len(), 5);
    }
    let s = Store::open(dir.path(), 1 << 20).unwrap();
    let snap = s.snapshot(&a, "inbox").unwrap().unwrap();
    assert_eq!(snap.uidnext, 6);
    assert_eq!(snap.uidvalidity, validity);
    assert!(snap.messages.is_empty());
    let d = s.deliver(std::slice::from_ref(&a), b"again").unwrap();
    assert_eq!(d.delivered[0].1, 6);
    // blobs of expunged messages are gone, the live one reads back
    let snap = s.snapshot(&a, INBOX).unwrap().unwrap();
    assert_eq!(s.read_body(&snap.messages[0]).unwrap(), b"again");
}

#[test]
fn data_dir_is_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Store::open(dir.path(), 1 << 20).unwrap();
    match Store::open(dir.path(), 1 << 20) {
        Err(StoreError::Locked(_)) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
}

#[test]
fn unknown_recipients_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), 1 << 20).unwrap();
    let a = "alice0001@_chat.test".to_string();
    s.create_account(&acct(&a)).unwrap();
    let d = s
        .deliver(&[a.clone(), "nobody000@_chat.test".into()], b"hi")
        .unwrap();
    assert_eq!(d.delivered.len(), 1);
    assert_eq!(d.missing, vec!["nobody000@_chat.test".to_string()]);
}

#[test]
fn orphan_blobs_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let _s = Store::open(dir.path(), 1 << 20).unwrap();
    }
    let orphan = dir.path().join("blobs/07/0000000000000007");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"half written").unwrap();
    let _s = Store::open(dir.path(), 1 << 20).unwrap();
    assert!(!orphan.exists());
}

#[test]
fn copy_move_and_modseq() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), 1 << 20).unwrap();
    let a = "alice0001@_chat.test".to_string();
    s.create_account(&acct(&a)).unwrap();
    s.create_mailbox(&a, "DeltaChat").unwrap();
    assert!(matches!(
        s.create_mailbox(&a, "DeltaChat"),
        Err(StoreError::MailboxExists)
    ));
    s.deliver(std::slice::from_ref(&a), b"one").unwrap();
    s.deliver(std::slice::from_ref(&a), b"two").unwrap();
    let before = s.snapshot(&a, INBOX).unwrap().unwrap().highestmodseq;
    let r = s
        .store_flags(&a, INBOX, &[1], FlagOp::Add, Flags::SEEN, None)
        .unwrap();
    assert!(r.changed[0].modseq > before);
    let r = s
        .store_flags(&a, INBOX, &[2], FlagOp::Add, Flags::SEEN, Some(0))
        .unwrap();
    assert_eq!(r.failed, vec![2]);
    let (_, pairs) = s.move_messages(&a, INBOX, "DeltaChat", &[1]).unwrap();
    assert_eq!(pairs, vec![(1, 1)]);
    let inbox = s.snapshot(&a, INBOX).unwrap().unwrap();
    assert_eq!(inbox.messages.len(), 1);
    let dc = s.snapshot(&a, "DeltaChat").unwrap().unwrap();
    assert_eq!(s.read_body(&dc.messages[0]).unwrap(), b"one");
    assert!(dc.messages[0].flags.contains(Flags::SEEN));
    assert_eq!(
        s.mailboxes(&a).unwrap(),
        vec!["INBOX".to_string(), "DeltaChat".into()]
    );
    assert!(s.delete_account(&a).unwrap());
    assert!(s.snapshot(&a, INBOX).unwrap().is_none());
}

#[test]
fn concurrent_creation_leaves_one_account() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), 1 << 20).unwrap();
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut a = acct("raceracer@_chat.test");
                a.password_hash = format!("h{i}");
                matches!(s.create_account(&a).unwrap(), Created::Created)
            })
        })
        .collect();
    let created = handles
        .into_iter()
        .filter(|_| true)
        .map(|h| h.join().unwrap())
        .filter(|c| *c)
        .count();
    assert_eq!(created, 1);
    assert_eq!(s.accounts().unwrap().len(), 1);
}

#[test]
fn accept_message_delivers_and_queues_with_shared_body() {
    use chatmail_box::store::RcptState;
    let dir = tempfile::tempdir().unwrap();
    let a = "alice0001@_chat.test".to_string();
    let blob;
    {
        let s = Store::open(dir.path(), 1 << 20).unwrap();
        s.create_account(&acct(&a)).unwrap();
        let remote = vec![
            (
                "other.test".to_string(),
                vec!["bob@other.test".to_string(), "carol@other.test".into()],
            ),
            (
                "third.test".to_string(),
                vec!["dave@third.test".to_string()],
            ),
        ];
        let (d, ids) = s
            .accept_message(&a, std::slice::from_ref(&a), &remote, b"body")
            .unwrap();
        assert_eq!(d.delivered.len(), 1);
        assert_eq!(ids.len(), 2);
        let items = s.queue_items().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].rcpts.len(), 2);
        assert!(items
            .iter()
            .all(|i| i.rcpts.iter().all(|r| r.state == RcptState::Pending)));
        blob = items[0].blob;
        assert_eq!(s.blob_refs(blob), 3);
        assert_eq!(s.queue_body(&items[1]).unwrap(), b"body");
    }
    // survives a restart; removing items and expunging releases the body
    let s = Store::open(dir.path(), 1 << 20).unwrap();
    let items = s.queue_items().unwrap();
    assert_eq!(items.len(), 2);
    let mut first = items[0].clone();
    first.attempts = 1;
    first.rcpts[0].state = RcptState::Delivered;
    s.queue_update(&first).unwrap();
    assert_eq!(s.queue_items().unwrap()[0].attempts, 1);
    for i in &items {
        s.queue_remove(i.id).unwrap();
    }
    assert_eq!(s.queue_len(), 0);
    assert_eq!(s.blob_refs(blob), 1);
    s.store_flags(&a, INBOX, &[1], FlagOp::Add, Flags::DELETED, None)
        .unwrap();
    s.expunge(&a, INBOX, None).unwrap();
    assert_eq!(s.blob_refs(blob), 0);
    assert_eq!(s.blob_count(), 0);
}
