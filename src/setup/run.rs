//! The serve loop: one *generation* per configuration. Each generation gets a fresh tokio
//! runtime, the effective config (config file + `setup.toml`) and either the setup wizard (no
//! `mail_domain` yet) or the relay. Finishing the wizard (or changing settings in it later)
//! asks for a reload: the generation's runtime is shut down, which drops every task and
//! connection of the old relay and with them the store and its lock, and the next generation
//! starts on the same listening sockets, so no port is ever closed in between.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::Config;
use crate::net::Service;
use crate::store::StoreError;
use crate::Ctx;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Every relay listener, in the order `net::bind_all` binds them.
pub const RELAY_SERVICES: &[Service] = &[
    Service::Mx,
    Service::Submission,
    Service::Submissions,
    Service::Imap,
    Service::Imaps,
    Service::Https,
    Service::Http,
];

/// The wizard listens on HTTPS and HTTP only.
pub const SETUP_SERVICES: &[Service] = &[Service::Https, Service::Http];

/// How long a finished generation's tasks get to end before the next one starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long the next generation waits for the old one to release the store lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Listening sockets kept across generations. Each generation gets its own tokio listeners
/// (duplicated descriptors registered with its runtime); the sockets themselves stay open.
#[derive(Default)]
pub struct Listeners {
    held: HashMap<Service, (std::net::TcpListener, bool)>,
}

impl Listeners {
    pub fn new() -> Listeners {
        Listeners::default()
    }

    /// Serve `svc` on this already bound socket whatever the configured port (tests bind
    /// ephemeral ports).
    pub fn pin(&mut self, svc: Service, l: std::net::TcpListener) {
        self.held.insert(svc, (l, true));
    }

    pub fn addr(&self, svc: Service) -> Option<SocketAddr> {
        self.held.get(&svc).and_then(|(l, _)| l.local_addr().ok())
    }

    /// Tokio listeners for `services` (a configured port 0 disables one), binding what is
    /// missing and closing sockets no longer wanted. Call it inside the generation's runtime.
    pub fn take(
        &mut self,
        cfg: &Config,
        services: &[Service],
    ) -> anyhow::Result<Vec<(Service, TcpListener)>> {
        let p = &cfg.ports;
        let port = |svc: Service| match svc {
            Service::Mx => p.smtp,
            Service::Submission => p.submission,
            Service::Submissions => p.submissions,
            Service::Imap => p.imap,
            Service::Imaps => p.imaps,
            Service::Https => p.https,
            Service::Http => p.http,
        };
        let wanted: Vec<(Service, SocketAddr)> = services
            .iter()
            .filter(|s| port(**s) != 0 || self.held.get(s).is_some_and(|(_, pinned)| *pinned))
            .map(|s| (*s, SocketAddr::new(cfg.listen, port(*s))))
            .collect();
        self.held.retain(|svc, (l, pinned)| {
            *pinned
                || wanted
                    .iter()
                    .any(|(s, a)| s == svc && l.local_addr().ok() == Some(*a))
        });
        let mut out = Vec::new();
        for (svc, addr) in wanted {
            let (l, _) = match self.held.entry(svc) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(v) => {
                    let l = crate::net::bind(addr).map_err(|e| {
                        anyhow::anyhow!("cannot listen on {addr} ({}): {e}", svc.name())
                    })?;
                    v.insert((l.into_std()?, false))
                }
            };
            let dup = l.try_clone()?;
            dup.set_nonblocking(true)?;
            out.push((svc, TcpListener::from_std(dup)?));
        }
        Ok(out)
    }
}

/// What the binary plugs into the loop.
pub struct Hooks {
    /// Resolves when the process should stop (SIGTERM / Ctrl-C in `main`); used while the
    /// wizard runs.
    pub shutdown: Box<dyn Fn() -> BoxFuture<()> + Send + Sync>,
    /// Runs a configured relay on its listeners (background jobs, then `net::serve`) until the
    /// process should stop or the third argument, the reload request, resolves; it then cleans
    /// up (e.g. magic-closes the watchdog) and returns.
    #[allow(clippy::type_complexity)]
    pub relay: Box<
        dyn Fn(
                Arc<Ctx>,
                Vec<(Service, TcpListener)>,
                BoxFuture<()>,
            ) -> BoxFuture<anyhow::Result<()>>
            + Send
            + Sync,
    >,
    /// Builds the runtime of one generation.
    pub runtime: Box<dyn Fn() -> std::io::Result<tokio::runtime::Runtime> + Send + Sync>,
}

enum Exit {
    Shutdown,
    Reload,
}

/// Serve generation after generation until shutdown. `load` returns the effective config
/// (config file + setup overlay) and is called again for every generation.
pub fn serve_loop(
    load: &mut dyn FnMut() -> anyhow::Result<Config>,
    listeners: &mut Listeners,
    hooks: &Hooks,
) -> anyhow::Result<()> {
    loop {
        let cfg = load()?;
        let rt = (hooks.runtime)()?;
        let exit = rt.block_on(generation(cfg, listeners, hooks));
        rt.shutdown_timeout(SHUTDOWN_GRACE);
        match exit? {
            Exit::Shutdown => return Ok(()),
            Exit::Reload => {
                tracing::info!("configuration changed: restarting the relay in-process")
            }
        }
    }
}

async fn generation(cfg: Config, listeners: &mut Listeners, hooks: &Hooks) -> anyhow::Result<Exit> {
    if super::needs_setup(&cfg) {
        let l = listeners.take(&cfg, SETUP_SERVICES)?;
        let reload = Arc::new(Notify::new());
        let site_cfg = cfg.clone();
        let site = crate::web::wizard::SetupSite::new(cfg, reload.clone())?;
        for (svc, l) in &l {
            tracing::info!(service = svc.name(), addr = %l.local_addr()?, "setup wizard listening");
        }
        tracing::info!(
            "not configured yet: open https://{} in a browser on the home network",
            site.lan_host()
        );
        // The appliance shows "setup needed": slow LED blink, the wizard's address on the
        // display, watchdog petted (all inert without `[device]`).
        let mut dev_cfg = crate::device::DeviceConfig::from_settings(&site_cfg.device);
        // No LAN address yet (no default route): the screen falls back to chatmail-box.local
        // rather than showing loopback.
        dev_cfg.lan_ip = (!site.lan_ip().is_loopback()).then(|| site.lan_host());
        let dev = (!dev_cfg.is_empty()).then(|| crate::device::Device::start(&dev_cfg, ""));
        if let Some(d) = &dev {
            d.update(&crate::device::Inputs {
                started: true,
                listeners_up: true,
                setup_done: false,
                ..Default::default()
            });
        }
        let exit = tokio::select! {
            _ = crate::web::wizard::serve_setup(site, l) => Exit::Shutdown,
            _ = reload.notified() => Exit::Reload,
            _ = (hooks.shutdown)() => Exit::Shutdown,
        };
        if let Some(d) = dev {
            d.shutdown().await;
        }
        Ok(exit)
    } else {
        let ctx = open_ctx(cfg).await?;
        let l = listeners.take(&ctx.cfg, RELAY_SERVICES)?;
        let reloading = Arc::new(AtomicBool::new(false));
        let (c, flag) = (ctx.clone(), reloading.clone());
        let stop: BoxFuture<()> = Box::pin(async move {
            c.reload.notified().await;
            flag.store(true, Ordering::SeqCst);
        });
        (hooks.relay)(ctx, l, stop).await?;
        Ok(if reloading.load(Ordering::SeqCst) {
            Exit::Reload
        } else {
            Exit::Shutdown
        })
    }
}

/// `Ctx::new`, waiting while the previous generation still holds the store lock.
pub async fn open_ctx(cfg: Config) -> anyhow::Result<Arc<Ctx>> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        match Ctx::new(cfg.clone()) {
            Ok(c) => return Ok(c),
            Err(e)
                if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Locked(_)))
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e),
        }
    }
}
