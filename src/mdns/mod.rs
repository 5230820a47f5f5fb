//! mDNS announcement on the home network: `chatmail-box.local` (an A/AAAA record of the box's
//! LAN address) and the `_http._tcp` / `_https._tcp` services of the web wizard and invite page,
//! so a browser on the LAN finds the box as `http://chatmail-box.local` before any DNS exists.
//!
//! Owns: the mdns-sd responder (its own thread, no tokio), the announced names and the choice
//! of the announced address. Runs only with `mdns = true` (the appliance's config; off by
//! default so tests and servers announce nothing). Must not know: HTTP, certificates, the store.

use std::net::IpAddr;

use mdns_sd::{ServiceDaemon, ServiceInfo};

use crate::config::Config;

/// The announced host name.
pub const HOST: &str = "chatmail-box.local.";
/// The service instance name of both services.
pub const INSTANCE: &str = "chatmail-box";

/// A running responder; dropping it sends goodbye packets and stops the thread.
pub struct Announcer {
    daemon: ServiceDaemon,
    /// The address in the A/AAAA record.
    pub addr: IpAddr,
}

impl Drop for Announcer {
    fn drop(&mut self) {
        for ty in ["_http._tcp.local.", "_https._tcp.local."] {
            let _ = self.daemon.unregister(&format!("{INSTANCE}.{ty}"));
        }
        let _ = self.daemon.shutdown();
    }
}

/// Start announcing if `mdns = true` (else `Ok(None)`): `chatmail-box.local` →
/// [`crate::setup::lan_ip`], `_http._tcp` on `ports.http` and `_https._tcp` on `ports.https`
/// (a port of 0, a closed listener, is not announced).
pub fn spawn(cfg: &Config) -> Result<Option<Announcer>, mdns_sd::Error> {
    if !cfg.mdns {
        return Ok(None);
    }
    let addr = crate::setup::lan_ip(cfg);
    let daemon = ServiceDaemon::new_with_port(cfg.mdns_port)?;
    for (ty, port) in [
        ("_http._tcp.local.", cfg.ports.http),
        ("_https._tcp.local.", cfg.ports.https),
    ] {
        if port == 0 {
            continue;
        }
        let info = ServiceInfo::new(ty, INSTANCE, HOST, addr, port, [("path", "/")].as_slice())?;
        daemon.register(info)?;
    }
    tracing::info!(host = HOST, %addr, port = cfg.mdns_port, "announcing over mDNS");
    Ok(Some(Announcer { daemon, addr }))
}
