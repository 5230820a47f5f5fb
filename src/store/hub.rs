//! Change notification: every committed change to a user's mailboxes bumps that user's counter,
//! and IDLE sessions wait on it. Entries exist only while someone listens.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Default)]
pub(super) struct Hub {
    users: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Hub {
    pub fn subscribe(&self, addr: &str) -> watch::Receiver<u64> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() > 64 && users.len().is_power_of_two() {
            users.retain(|_, s| s.receiver_count() > 0);
        }
        match users.get(addr) {
            Some(s) => s.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                users.insert(addr.to_string(), tx);
                rx
            }
        }
    }

    pub fn notify(&self, addr: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = users.get(addr) {
            if s.receiver_count() == 0 {
                users.remove(addr);
            } else {
                s.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
    }
}
