//! One IMAP connection: socket I/O with timeouts, rate limiting and error counting, the TLS
//! upgrade, the protocol state (not authenticated → authenticated → selected), and dispatch of
//! decoded commands to the handlers in the sibling modules.
//!
//! Owns: the connection and its limits, the session state, when updates may be sent (RFC 3501
//! §7.4.1). Must not know: framing and wire syntax (the codec), sled, message parsing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imap_types::command::{Command, CommandBody};
use imap_types::core::{IString, NString, Tag};
use imap_types::extensions::enable::CapabilityEnable;
use imap_types::response::{Code, Data};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::codec::{self, Event, Expect, Framer, Limits};
use super::view::{Mode, View};
use crate::net::Conn;
use crate::replies::imap as r;
use crate::store::{Snapshot, Store, StoreError};
use crate::Ctx;

/// Without a command for this long (outside IDLE) the client is logged out.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A write that does not complete in this time means the client is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);
/// Syntax errors tolerated before the connection is closed.
const MAX_BAD_COMMANDS: u32 = 20;
/// Output is flushed once this much is buffered.
const FLUSH_AT: usize = 256 * 1024;

/// What ended a wait in IDLE.
pub enum Wake {
    Input,
    Changed,
    Timer,
}

/// Why the connection ends (for the log line).
#[derive(Debug, Clone, Copy)]
pub struct Close(pub &'static str);

/// Result of a command handler: the tagged completion (possibly empty if already sent).
pub type Done = Result<Vec<u8>, Close>;

#[derive(Default)]
pub struct Stats {
    pub commands: u64,
    pub bad: u32,
    pub auth_failures: u32,
}

pub struct Session {
    pub ctx: Arc<Ctx>,
    conn: Option<Conn>,
    pub framer: Framer,
    pub(super) out: Vec<u8>,
    rbuf: Vec<u8>,
    /// Logged-in address.
    pub addr: Option<String>,
    /// Change notifications for `addr`, subscribed at login so no change can be missed.
    pub rx: Option<watch::Receiver<u64>>,
    pub sel: Option<View>,
    /// CONDSTORE enabled (ENABLE, SELECT (CONDSTORE), CHANGEDSINCE, MODSEQ).
    pub condstore: bool,
    pub stats: Stats,
    rate: (Instant, u32),
}

/// Serve one connection until it ends, then log one line.
pub async fn run(ctx: Arc<Ctx>, conn: Conn) {
    let started = Instant::now();
    let limits = Limits {
        max_line: ctx.cfg.max_line_length.max(1024),
        max_message: u32::try_from(ctx.cfg.max_message_size).unwrap_or(u32::MAX),
    };
    let mut s = Session {
        ctx,
        conn: Some(conn),
        framer: Framer::new(limits),
        out: Vec::with_capacity(4096),
        // Small: an IDLE session costs this much for as long as it is open; large literals are
        // read in several passes.
        rbuf: vec![0; 4 * 1024],
        addr: None,
        rx: None,
        sel: None,
        condstore: false,
        stats: Stats::default(),
        rate: (Instant::now(), 0),
    };
    let reason = match s.main().await {
        Ok(()) => "logout",
        Err(Close(why)) => why,
    };
    let _ = s.flush().await;
    let tls = s.is_tls();
    if let Some(mut c) = s.conn.take() {
        let _ = tokio::time::timeout(Duration::from_secs(5), c.shutdown()).await;
    }
    tracing::info!(
        service = "imap",
        tls,
        authenticated = s.addr.is_some(),
        commands = s.stats.commands,
        bad_commands = s.stats.bad,
        duration_ms = started.elapsed().as_millis() as u64,
        reason,
        "imap connection closed"
    );
}

impl Session {
    pub fn is_tls(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.is_tls())
    }

    /// Capabilities for the current state.
    pub fn caps(&self) -> Vec<&'static str> {
        if !self.is_tls() {
            return r::CAPS_PLAIN.to_vec();
        }
        let mut caps = r::CAPS_AUTHENTICATED.to_vec();
        if self.addr.is_none() {
            caps.extend_from_slice(r::CAPS_LOGIN);
        }
        caps
    }

    // ---- I/O ----

    /// Queue output.
    pub fn send(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Queue output and flush if a lot is pending.
    pub async fn emit(&mut self, bytes: &[u8]) -> Result<(), Close> {
        self.send(bytes);
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Close("connection gone"));
        };
        let fut = async {
            conn.write_all(&self.out).await?;
            conn.flush().await
        };
        let res = tokio::time::timeout(WRITE_TIMEOUT, fut).await;
        self.out.clear();
        if self.out.capacity() > 4 * FLUSH_AT {
            // A large FETCH passed through: do not keep its buffer for the connection's life.
            self.out = Vec::with_capacity(4096);
        }
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close("write error")),
            Err(_) => Err(Close("write timeout")),
        }
    }

    /// Read more input into the framer. Cancel-safe (used in IDLE's select).
    pub async fn read_more(&mut self) -> Result<(), Close> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(Close("connection gone"));
        };
        match conn.read(&mut self.rbuf).await {
            Ok(0) => Err(Close("eof")),
            Ok(n) => {
                self.framer.feed(&self.rbuf[..n]);
                Ok(())
            }
            Err(_) => Err(Close("read error")),
        }
    }

    /// Wait for client input, a change of the user's mailboxes, or `until` (IDLE).
    pub async fn wait_idle(&mut self, until: Instant) -> Result<Wake, Close> {
        enum Got {
            Read(std::io::Result<usize>),
            Changed(bool),
            Timer,
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Close("connection gone"));
        };
        let rbuf = &mut self.rbuf;
        let rx = self.rx.as_mut();
        let changed = async {
            match rx {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let got = tokio::select! {
            r = conn.read(rbuf) => Got::Read(r),
            ok = changed => Got::Changed(ok),
            _ = tokio::time::sleep_until(until.into()) => Got::Timer,
        };
        match got {
            Got::Read(Ok(0)) => Err(Close("eof")),
            Got::Read(Ok(n)) => {
                self.framer.feed(&self.rbuf[..n]);
                Ok(Wake::Input)
            }
            Got::Read(Err(_)) => Err(Close("read error")),
            Got::Changed(ok) => {
                if !ok {
                    // The notifier went away: subscribe again and re-check the mailbox.
                    let addr = self.user();
                    self.rx = Some(self.ctx.store.subscribe(&addr));
                }
                Ok(Wake::Changed)
            }
            Got::Timer => Ok(Wake::Timer),
        }
    }

    /// The next framed event, reading as needed. Accepted synchronizing literals get their
    /// continuation request here.
    pub async fn next_event(&mut self, expect: Expect, timeout: Duration) -> Result<Event, Close> {
        loop {
            while let Some(ev) = self.framer.next(expect) {
                if let Event::Continue = ev {
                    self.send(&codec::continuation(r::LITERAL_READY));
                    continue;
                }
                return Ok(ev);
            }
            self.flush().await?;
            match tokio::time::timeout(timeout, self.read_more()).await {
                Ok(res) => res?,
                Err(_) => {
                    self.send(&codec::bye(None, r::BYE_IDLE_TIMEOUT));
                    return Err(Close("timeout"));
                }
            }
        }
    }

    /// Run a store operation on the blocking pool.
    pub async fn store<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let st = self.ctx.store.clone();
        match tokio::task::spawn_blocking(move || f(&st)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Io(std::io::Error::other("store task failed"))),
        }
    }

    /// The tagged NO for a store failure; logs the error (never message content).
    pub fn store_failure(&self, tag: &Tag<'_>, e: &StoreError) -> Vec<u8> {
        match e {
            StoreError::NoMailbox => codec::no(
                tag,
                Some(codec::code_atom(r::CODE_NONEXISTENT)),
                r::NO_MAILBOX,
            ),
            StoreError::MailboxExists => codec::no(
                tag,
                Some(codec::code_atom(r::CODE_ALREADYEXISTS)),
                r::MAILBOX_EXISTS,
            ),
            StoreError::UidsExhausted => codec::no(tag, Some(Code::OverQuota), r::OVER_QUOTA),
            e => {
                tracing::warn!(service = "imap", "store error: {e}");
                codec::no(
                    tag,
                    Some(codec::code_atom(r::CODE_SERVERBUG)),
                    r::TEMP_FAILURE,
                )
            }
        }
    }

    /// The address of the logged-in user (handlers run only when logged in).
    pub fn user(&self) -> String {
        self.addr.clone().unwrap_or_default()
    }

    async fn throttle(&mut self) {
        let limit = self.ctx.cfg.imap_commands_per_second.max(1);
        let now = Instant::now();
        if now.duration_since(self.rate.0) >= Duration::from_secs(1) {
            self.rate = (now, 0);
        }
        self.rate.1 += 1;
        if self.rate.1 > limit {
            let until = self.rate.0 + Duration::from_secs(1);
            tokio::time::sleep_until(until.into()).await;
            self.rate = (Instant::now(), 1);
        }
    }

    /// Count a bad command and answer BAD; closes after too many.
    fn bad_command(&mut self, tag: Option<&Tag<'_>>, text: &str) -> Result<(), Close> {
        self.stats.bad += 1;
        self.send(&codec::bad(tag, None, text));
        if self.stats.bad >= MAX_BAD_COMMANDS {
            self.send(&codec::bye(None, r::BYE_TOO_MANY_ERRORS));
            return Err(Close("too many bad commands"));
        }
        Ok(())
    }

    // ---- main loop ----

    async fn main(&mut self) -> Result<(), Close> {
        let caps = self.caps();
        self.send(&codec::greeting(&caps, r::GREETING));
        loop {
            match self.next_event(Expect::Command, IDLE_TIMEOUT).await? {
                Event::Command(cmd) => {
                    self.throttle().await;
                    self.stats.commands += 1;
                    self.dispatch(*cmd).await?;
                }
                Event::Bad { tag } => self.bad_command(tag.as_ref(), r::SYNTAX_ERROR)?,
                Event::Refused { tag, append } => match (tag, append) {
                    (Some(tag), true) => {
                        self.send(&codec::no(&tag, Some(Code::TooBig), r::TOO_BIG))
                    }
                    (tag, _) => self.bad_command(tag.as_ref(), r::BYE_LITERAL_TOO_BIG)?,
                },
                Event::Fatal { tag, why } => {
                    let text = match why {
                        codec::Fatal::LineTooLong => r::BYE_LINE_TOO_LONG,
                        codec::Fatal::LiteralTooBig => r::BYE_LITERAL_TOO_BIG,
                    };
                    if let Some(tag) = tag {
                        self.send(&codec::bad(Some(&tag), Some(Code::TooBig), text));
                    }
                    self.send(&codec::bye(None, text));
                    return Err(Close("limit exceeded"));
                }
                Event::AuthData(_) | Event::IdleDone | Event::Continue => {
                    self.bad_command(None, r::SYNTAX_ERROR)?
                }
            }
        }
    }

    /// What may be announced before and after this command. No EXPUNGE around FETCH, STORE,
    /// SEARCH (and COPY) by sequence number, whose numbering must stay stable; no flag update
    /// before a FETCH's own responses.
    fn sync_modes(body: &CommandBody<'_>) -> (Mode, Mode) {
        let allow_expunge = match body {
            CommandBody::Fetch { uid, .. }
            | CommandBody::Store { uid, .. }
            | CommandBody::Search { uid, .. }
            | CommandBody::Copy { uid, .. } => *uid,
            _ => true,
        };
        let after = Mode {
            allow_expunge,
            defer_flags: false,
        };
        let before = Mode {
            defer_flags: matches!(body, CommandBody::Fetch { .. }),
            ..after
        };
        (before, after)
    }

    async fn dispatch(&mut self, cmd: Command<'static>) -> Result<(), Close> {
        let Command { tag, body } = cmd;
        let (before, after) = Self::sync_modes(&body);
        let selected_cmd = matches!(
            body,
            CommandBody::Check
                | CommandBody::Expunge
                | CommandBody::ExpungeUid { .. }
                | CommandBody::Search { .. }
                | CommandBody::Fetch { .. }
                | CommandBody::Store { .. }
                | CommandBody::Copy { .. }
                | CommandBody::Move { .. }
                | CommandBody::Close
                | CommandBody::Unselect
                | CommandBody::Sort { .. }
                | CommandBody::Thread { .. }
        );
        let any_state = matches!(
            body,
            CommandBody::Capability
                | CommandBody::Noop
                | CommandBody::Logout
                | CommandBody::Id { .. }
                | CommandBody::StartTLS
                | CommandBody::Login { .. }
                | CommandBody::Authenticate { .. }
        );
        if !any_state && self.addr.is_none() {
            return self.bad_command(Some(&tag), r::LOGIN_FIRST);
        }
        if selected_cmd && self.sel.is_none() {
            return self.bad_command(Some(&tag), r::WRONG_STATE);
        }
        let keeps_selection = !matches!(
            body,
            CommandBody::Select { .. }
                | CommandBody::Examine { .. }
                | CommandBody::Close
                | CommandBody::Unselect
                | CommandBody::Logout
                | CommandBody::Idle
        );
        if keeps_selection {
            self.sync_changes(before).await?;
        }
        let done = self.execute(&tag, body).await?;
        if keeps_selection {
            self.sync_changes(after).await?;
        }
        self.send(&done);
        Ok(())
    }

    async fn execute(&mut self, tag: &Tag<'static>, body: CommandBody<'static>) -> Done {
        use CommandBody as C;
        match body {
            C::Capability => {
                let caps = self.caps();
                self.send(&codec::capability_data(&caps));
                Ok(codec::ok(tag, None, &r::completed("CAPABILITY")))
            }
            C::Noop | C::Check => Ok(codec::ok(tag, None, &r::completed("NOOP"))),
            C::Logout => {
                self.send(&codec::bye(None, r::BYE_LOGOUT));
                self.send(&codec::ok(tag, None, &r::completed("LOGOUT")));
                Err(Close("logout"))
            }
            C::StartTLS => self.cmd_starttls(tag).await,
            C::Login { username, password } => {
                let user = username.as_ref().to_vec();
                let pass = password.declassify().as_ref().to_vec();
                self.cmd_login(tag, &user, &pass).await
            }
            C::Authenticate {
                mechanism,
                initial_response,
            } => {
                self.cmd_authenticate(tag, mechanism, initial_response)
                    .await
            }
            C::Id { .. } => {
                let params = match (IString::try_from("name"), IString::try_from(r::ID_NAME)) {
                    (Ok(k), Ok(v)) => Some(vec![(k, NString(Some(v)))]),
                    _ => None,
                };
                self.send(&codec::encode_data(Data::Id { parameters: params }));
                Ok(codec::ok(tag, None, &r::completed("ID")))
            }
            C::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for c in capabilities.into_inner() {
                    if let CapabilityEnable::CondStore = c {
                        self.condstore = true;
                        enabled.push(c);
                    }
                }
                self.send(&codec::encode_data(Data::Enabled {
                    capabilities: enabled,
                }));
                Ok(codec::ok(tag, None, &r::completed("ENABLE")))
            }
            C::Select {
                mailbox,
                parameters,
            } => self.cmd_select(tag, mailbox, parameters, false).await,
            C::Examine {
                mailbox,
                parameters,
            } => self.cmd_select(tag, mailbox, parameters, true).await,
            C::Create { mailbox } => self.cmd_create(tag, mailbox).await,
            C::Delete { mailbox } => self.cmd_delete(tag, mailbox).await,
            C::Rename { .. } => Ok(codec::no(
                tag,
                Some(codec::code_atom(r::CODE_CANNOT)),
                r::NOT_SUPPORTED,
            )),
            C::Subscribe { .. } => Ok(codec::ok(tag, None, &r::completed("SUBSCRIBE"))),
            C::Unsubscribe { .. } => Ok(codec::ok(tag, None, &r::completed("UNSUBSCRIBE"))),
            C::List {
                reference,
                mailbox_wildcard,
            } => self.cmd_list(tag, reference, mailbox_wildcard, false).await,
            C::Lsub {
                reference,
                mailbox_wildcard,
            } => self.cmd_list(tag, reference, mailbox_wildcard, true).await,
            C::Status {
                mailbox,
                item_names,
            } => self.cmd_status(tag, mailbox, item_names.into_owned()).await,
            C::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.cmd_append(tag, mailbox, flags, date, message).await,
            C::Idle => self.cmd_idle(tag).await,
            C::GetQuota { root } => self.cmd_getquota(tag, root.as_ref()).await,
            C::GetQuotaRoot { mailbox } => self.cmd_getquotaroot(tag, mailbox).await,
            C::SetQuota { .. } => Ok(codec::no(
                tag,
                Some(codec::code_atom(r::CODE_CANNOT)),
                r::NOT_SUPPORTED,
            )),
            C::GetMetadata {
                mailbox, entries, ..
            } => {
                self.cmd_getmetadata(tag, mailbox, entries.into_inner())
                    .await
            }
            C::SetMetadata {
                mailbox,
                entry_values,
            } => {
                self.cmd_setmetadata(tag, mailbox, entry_values.into_inner())
                    .await
            }
            C::Close => self.cmd_close(tag, true).await,
            C::Unselect => self.cmd_close(tag, false).await,
            C::Expunge => self.cmd_expunge(tag, None).await,
            C::ExpungeUid { sequence_set } => self.cmd_expunge(tag, Some(sequence_set)).await,
            C::Search {
                charset,
                criteria,
                uid,
            } => {
                self.cmd_search(tag, charset, criteria.into_inner(), uid)
                    .await
            }
            C::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                self.cmd_fetch(tag, sequence_set, macro_or_item_names, uid, modifiers)
                    .await
            }
            C::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                self.cmd_store(tag, sequence_set, kind, response, flags, uid, modifiers)
                    .await
            }
            C::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.cmd_copy(tag, sequence_set, mailbox, uid, false).await,
            C::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.cmd_copy(tag, sequence_set, mailbox, uid, true).await,
            _ => {
                // SORT, THREAD, COMPRESS, ...: not advertised.
                self.stats.bad += 1;
                Ok(codec::bad(Some(tag), None, r::NOT_SUPPORTED))
            }
        }
    }

    // ---- selected-state updates ----

    /// Whether the user's mailboxes changed since the view was last synchronised.
    fn changed(&mut self) -> bool {
        match self.rx.as_mut() {
            Some(rx) => rx.has_changed().unwrap_or(true),
            None => false,
        }
    }

    /// Send pending EXPUNGE/EXISTS/FETCH updates for the selected mailbox, if anything changed.
    pub async fn sync_changes(&mut self, mode: Mode) -> Result<(), Close> {
        let Some(view) = self.sel.as_ref() else {
            return Ok(());
        };
        let expunges = mode.allow_expunge && view.expunge_pending;
        let flags = !mode.defer_flags && !view.pending_flags.is_empty();
        if self.changed() || expunges {
            return self.force_sync(mode).await;
        }
        if flags {
            let condstore = self.condstore;
            let updates = match self.sel.as_mut() {
                Some(v) => v.flush_pending(condstore),
                None => Vec::new(),
            };
            for d in updates {
                let bytes = codec::encode_data(d);
                self.emit(&bytes).await?;
            }
        }
        Ok(())
    }

    /// Take a fresh snapshot and announce the differences to the view.
    pub async fn force_sync(&mut self, mode: Mode) -> Result<(), Close> {
        let Some(view) = self.sel.as_ref() else {
            return Ok(());
        };
        // Mark seen *before* the snapshot: a change after this point re-flags the receiver.
        if let Some(rx) = self.rx.as_mut() {
            rx.borrow_and_update();
        }
        let (addr, name, validity) = (self.user(), view.name.clone(), view.uidvalidity);
        let snap = match self.store(move |s| s.snapshot(&addr, &name)).await {
            Ok(Some(s)) => s,
            Ok(None) => Snapshot {
                name: String::new(),
                uidvalidity: validity,
                uidnext: 1,
                highestmodseq: 1,
                messages: Vec::new(),
            },
            Err(e) => {
                tracing::warn!(service = "imap", "snapshot failed: {e}");
                return Ok(());
            }
        };
        if snap.uidvalidity != validity {
            // The mailbox was deleted and created again: the client's UIDs mean nothing now.
            self.send(&codec::bye(None, r::BYE_UIDVALIDITY));
            return Err(Close("selected mailbox replaced"));
        }
        let condstore = self.condstore;
        let updates = match self.sel.as_mut() {
            Some(v) => v.sync(&snap, mode, condstore),
            None => Vec::new(),
        };
        for d in updates {
            let bytes = codec::encode_data(d);
            self.emit(&bytes).await?;
        }
        Ok(())
    }

    /// STARTTLS after the tagged OK: drop buffered plaintext, then handshake.
    pub async fn upgrade_tls(&mut self) -> Result<(), Close> {
        self.flush().await?;
        // Anything the client pipelined after STARTTLS is plaintext injection: drop it.
        self.framer.discard();
        let Some(conn) = self.conn.take() else {
            return Err(Close("connection gone"));
        };
        match conn.starttls(self.ctx.tls.client.clone()).await {
            Ok(c) => {
                self.conn = Some(c);
                Ok(())
            }
            Err(_) => Err(Close("STARTTLS handshake failed")),
        }
    }
}
