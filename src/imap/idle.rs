//! IDLE (RFC 2177): announce changes of the selected mailbox as soon as the store commits them,
//! send `* OK Still here` keepalives, and finish on DONE.
//!
//! Owns: the IDLE loop. Must not know: sockets (it uses the session's wait primitive), sled.

use std::time::{Duration, Instant};

use imap_types::core::Tag;

use super::codec::{self, Event, Expect};
use super::session::{Close, Done, Session, Wake};
use super::view::Mode;
use crate::replies::imap as r;

/// Keepalive interval (Dovecot's `imap_idle_notify_interval`); clients give up after 5 min.
const KEEPALIVE: Duration = Duration::from_secs(120);

impl Session {
    pub(super) async fn cmd_idle(&mut self, tag: &Tag<'static>) -> Done {
        self.send(&codec::continuation(r::IDLING));
        // Changes that happened before IDLE are announced right away.
        self.sync_changes(Mode::ALL).await?;
        self.flush().await?;
        let mut keepalive = Instant::now() + KEEPALIVE;
        loop {
            while let Some(ev) = self.framer.next(Expect::IdleDone) {
                return match ev {
                    Event::IdleDone => Ok(codec::ok(tag, None, &r::completed("IDLE"))),
                    Event::Continue => continue,
                    Event::Fatal { .. } => {
                        self.send(&codec::bye(None, r::BYE_LINE_TOO_LONG));
                        Err(Close("limit exceeded"))
                    }
                    _ => {
                        self.stats.bad += 1;
                        Ok(codec::bad(Some(tag), None, r::IDLE_DONE_EXPECTED))
                    }
                };
            }
            // An IDLE connection may wait for hours: hold no output buffer meanwhile.
            self.out = Vec::new();
            match self.wait_idle(keepalive).await? {
                Wake::Input => {}
                Wake::Changed => self.force_sync(Mode::ALL).await?,
                Wake::Timer => {
                    self.send(&codec::untagged_ok(None, r::STILL_HERE));
                    keepalive = Instant::now() + KEEPALIVE;
                }
            }
            self.flush().await?;
        }
    }
}
