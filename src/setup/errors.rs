//! The last warnings and errors of the process, for the admin status page: a `tracing` layer
//! that keeps the newest [`KEEP`] WARN/ERROR events in memory (message and target only; the
//! relay logs no addresses, so neither does this).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How many events are kept.
pub const KEEP: usize = 50;

#[derive(Debug, Clone)]
pub struct Recent {
    /// Unix time.
    pub time: i64,
    pub level: &'static str,
    pub target: String,
    pub message: String,
}

static RECENT: Mutex<VecDeque<Recent>> = Mutex::new(VecDeque::new());

/// The layer to add to the subscriber (`main.rs`).
pub struct RecentErrors;

struct Msg(String);

impl Visit for Msg {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl<S: Subscriber> Layer<S> for RecentErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut m = Msg(String::new());
        event.record(&mut m);
        record(Recent {
            time: crate::store::now_unix(),
            level: if level == Level::ERROR {
                "error"
            } else {
                "warn"
            },
            target: event.metadata().target().to_string(),
            message: m.0,
        });
    }
}

/// Keep one event (also for callers that report without `tracing`).
pub fn record(r: Recent) {
    let mut q = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if q.len() == KEEP {
        q.pop_front();
    }
    q.push_back(r);
}

/// The kept events, newest first.
pub fn recent() -> Vec<Recent> {
    let q = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    q.iter().rev().cloned().collect()
}
