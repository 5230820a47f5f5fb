//! The `chatmail-box` binary: CLI and process edge. Errors become `anyhow` only here.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use chatmail_box::config::Config;
use chatmail_box::store::{Account, Store};
use std::sync::Arc;

use chatmail_box::{auth, device, invite, net, setup, Ctx};

#[derive(Parser)]
#[command(
    name = "chatmail-box",
    version,
    about = "A chatmail relay for Delta Chat in one binary"
)]
struct Cli {
    /// Configuration file (TOML). Default: <data-dir>/config.toml if it exists, else built-in
    /// defaults.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir` in the config).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay.
    Serve {
        /// Print a `dclogin:` invite (link and terminal QR) for a fresh account once listening.
        #[arg(long)]
        invite: bool,
        /// Host name or IP address put into the printed invite.
        #[arg(long, default_value = "127.0.0.1")]
        invite_host: String,
    },
    /// Print the invite link and its QR code: `DCACCOUNT:https://<domain>/new`, or with a
    /// self-signed certificate (LAN-only mode) a `dclogin:` link for a fresh account.
    Invite {
        /// Host name or IP address put into a `dclogin:` link (default: the IP of an IP-only
        /// relay, else none).
        #[arg(long)]
        host: Option<String>,
    },
    /// Validate the configuration and print the effective values.
    CheckConfig,
    /// Print the DNS zone to publish (generates the DKIM key on first use).
    Dns {
        /// Public IPv4/IPv6 address for the A/AAAA records (repeatable; overrides
        /// `public_ipv4` / `public_ipv6`).
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// Query each record and show ok / missing / wrong.
        #[arg(long)]
        check: bool,
    },
    /// Set the system clock from an NTP server (SNTP) and mark it synchronised; runs as root
    /// from init on the appliance. Repeats every 15 minutes (every minute while failing).
    Clock {
        /// NTP server: host name or IP address, optionally with :port.
        #[arg(long, default_value = "pool.ntp.org")]
        server: String,
        /// Set the clock once and exit (exit status 1 when no server answered usably).
        #[arg(long)]
        once: bool,
    },
    /// Manage accounts.
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
    },
}

#[derive(Subcommand, Clone)]
enum AccountCmd {
    /// List accounts.
    List,
    /// Add an account (password from --password or generated).
    Add {
        addr: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account and all its mail.
    Delete { addr: String },
    /// Import accounts from an upstream chatmail relay's mailboxes directory
    /// (`<dir>/<addr>/password` holding `{SHA512-CRYPT}$6$...`).
    ImportChatmail { dir: PathBuf },
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let data_dir = cli.data_dir.clone();
    let path = cli.config.clone().or_else(|| {
        let d = data_dir.clone().unwrap_or_else(|| PathBuf::from("data"));
        let p = d.join("config.toml");
        p.exists().then_some(p)
    });
    let mut cfg = match &path {
        Some(p) => {
            let (cfg, warnings) = Config::load(p)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            cfg
        }
        None => Config::default(),
    };
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    // The web wizard's choices (<data_dir>/setup.toml) override the file.
    setup::overlay(&mut cfg)?;
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    {
        use tracing_subscriber::prelude::*;
        // The TURN crates log every malformed datagram at error level, with the sender's
        // address: off by default (no client IPs in logs, no log flood from junk traffic).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "info,turn=off,stun=off,webrtc_util=off".into());
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            // Warnings and errors for the admin status page.
            .with(setup::errors::RecentErrors)
            .init();
    }
    if let Cmd::Clock { server, once } = &cli.cmd {
        return clock(server, *once);
    }
    let cfg = load_config(&cli)?;
    match &cli.cmd {
        Cmd::Serve {
            invite,
            invite_host,
        } => serve(&cli, invite.then(|| invite_host.clone())),
        Cmd::CheckConfig => {
            if setup::needs_setup(&cfg) {
                println!("configuration ok: no mail_domain yet (setup mode: `serve` runs the web wizard)");
            } else {
                println!("configuration ok: mail_domain = {}", cfg.mail_domain);
            }
            println!("{cfg:#?}");
            Ok(())
        }
        Cmd::Invite { host } => match invite::invite_link(&cfg, host.as_deref()) {
            Some(link) => {
                print!("{}", invite::invite_text(&link));
                Ok(())
            }
            None => bail!("no mail_domain yet: finish the setup wizard first"),
        },
        Cmd::Account { cmd } => account(cfg, cmd.clone()),
        Cmd::Dns { ip, check } => dns(cfg, ip.clone(), *check),
        Cmd::Clock { server, once } => clock(server, *once),
    }
}

/// `chatmail-box clock`: up to five tries per round, 2 s apart.
fn clock(server: &str, once: bool) -> anyhow::Result<()> {
    use chatmail_box::clock;
    use std::time::Duration;
    loop {
        let mut synced = false;
        for _ in 0..5 {
            match clock::best_sample(server, Duration::from_secs(2)) {
                Ok(s) => {
                    if let Err(e) = clock::apply(&s) {
                        // Looping: log and retry later rather than exit into a tight respawn
                        // loop under init.
                        if once {
                            return Err(e.into());
                        }
                        tracing::error!("clock: {e}");
                        break;
                    }
                    tracing::info!(
                        offset_s = s.offset,
                        delay_ms = s.delay * 1e3,
                        stratum = s.stratum,
                        "clock synchronised"
                    );
                    synced = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!("clock: {server}: {e}");
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
        }
        if once {
            return if synced {
                Ok(())
            } else {
                bail!("no usable NTP reply from {server}")
            };
        }
        std::thread::sleep(Duration::from_secs(if synced { 900 } else { 60 }));
    }
}

/// glibc keeps freed memory per thread arena and raises its mmap threshold after large frees,
/// so the 4 MiB argon2 buffers of logins on blocking threads would stay resident. Two arenas
/// and a fixed threshold give it back. (The appliance's static musl build does not need this.)
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

fn serve(cli: &Cli, invite_host: Option<String>) -> anyhow::Result<()> {
    tune_allocator();
    // `mdns = true`: chatmail-box.local for the wizard and the relay, for the whole process.
    let _mdns = chatmail_box::mdns::spawn(&load_config(cli)?).unwrap_or_else(|e| {
        tracing::warn!("mDNS announcement failed: {e}");
        None
    });
    let invite_host = Arc::new(invite_host);
    let hooks = setup::Hooks {
        shutdown: Box::new(|| Box::pin(shutdown_signal())),
        runtime: Box::new(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(64)
                .build()
        }),
        relay: Box::new(move |ctx, listeners, reload| {
            Box::pin(relay(ctx, listeners, invite_host.clone(), reload))
        }),
    };
    // Before setup (no mail_domain) the loop runs the web wizard; finishing it, or changing
    // settings later, rebuilds the relay in this process (src/setup/run.rs).
    let mut listeners = setup::Listeners::new();
    setup::serve_loop(&mut || load_config(cli), &mut listeners, &hooks)
}

/// One configured relay on its listeners, until SIGTERM / Ctrl-C or a reload request.
async fn relay(
    ctx: Arc<Ctx>,
    listeners: Vec<(net::Service, tokio::net::TcpListener)>,
    invite_host: Arc<Option<String>>,
    reload: setup::run::BoxFuture<()>,
) -> anyhow::Result<()> {
    // Appliance LED / watchdog / display: inert unless `[device]` is configured.
    let dev_cfg = device::DeviceConfig::from_settings(&ctx.cfg.device);
    let dev = (!dev_cfg.is_empty()).then(|| device::Device::start(&dev_cfg, &ctx.cfg.mail_domain));
    // Generate the DKIM key now (not at the first outgoing message) so `dns` can print it.
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || c.dkim.signer().map(|_| ())).await??;
    let _runner = chatmail_box::delivery::spawn(ctx.clone());
    let _expiry = chatmail_box::expiry::spawn(ctx.clone());
    chatmail_box::metrics::spawn(&ctx).await?;
    let _push = chatmail_box::push::spawn(ctx.clone())?;
    // UDP turn_port when `turn = true` (src/turn); kept alive until shutdown.
    let _turn = chatmail_box::turn::spawn(&ctx.cfg).await?;
    ctx.tls.spawn_reloader(std::time::Duration::from_secs(30));
    // tls = "acme": issue / renew in the background (listeners are bound already); the task
    // stops when `_acme` is dropped.
    let _acme = chatmail_box::acme::spawn(ctx.clone());
    for (svc, l) in &listeners {
        tracing::info!(service = svc.name(), addr = %l.local_addr()?, "listening");
    }
    if let Some(host) = invite_host.as_deref() {
        println!("{}", invite::terminal_invite(&ctx.cfg, host));
    }
    let monitor = async {
        match &dev {
            Some(d) => {
                d.monitor(&ctx.cfg.data_dir, std::time::Duration::from_secs(10))
                    .await
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = net::serve(ctx.clone(), listeners) => {}
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = reload => {}
        _ = monitor => {}
    }
    if let Some(d) = dev {
        d.shutdown().await;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn dns(mut cfg: Config, ips: Vec<std::net::IpAddr>, check: bool) -> anyhow::Result<()> {
    use chatmail_box::delivery::zone;
    for ip in ips {
        match ip {
            std::net::IpAddr::V4(v4) => cfg.public_ipv4 = Some(v4),
            std::net::IpAddr::V6(v6) => cfg.public_ipv6 = Some(v6),
        }
    }
    if cfg.ip_domain().is_some() {
        println!(
            "; {} is an IP-only relay: no DNS zone, no DKIM",
            cfg.mail_domain
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let resolver = chatmail_box::delivery::build_resolver(&cfg);
        let dkim = chatmail_box::dkim::Dkim::new(&cfg, resolver.clone());
        let records = dkim.dns_records()?;
        let z = zone::zone(
            &cfg.mail_domain,
            cfg.public_ipv4.map(Into::into),
            cfg.public_ipv6.map(Into::into),
            &records,
        );
        if !check {
            print!("{}", zone::render(&z));
            return Ok(());
        }
        let mut bad = 0;
        for (r, state, seen) in zone::check(&resolver, &z).await {
            let tag = match state {
                zone::Check::Ok => "ok",
                zone::Check::Missing => "missing",
                zone::Check::Wrong => "wrong",
            };
            if state != zone::Check::Ok && r.required {
                bad += 1;
            }
            println!("{tag:<8} {}", r.line());
            if state == zone::Check::Wrong {
                for s in seen {
                    println!("         found: {s}");
                }
            }
        }
        if bad > 0 {
            anyhow::bail!("{bad} required record(s) missing or wrong");
        }
        Ok(())
    })
}

fn account(cfg: Config, cmd: AccountCmd) -> anyhow::Result<()> {
    let store = Store::open(&cfg.data_dir, cfg.index_cache_size)?;
    match cmd {
        AccountCmd::List => {
            for a in store.accounts()? {
                println!("{}", a.addr);
            }
        }
        AccountCmd::Add { addr, password } => {
            let addr = addr.to_ascii_lowercase();
            if let Some(why) = auth::address_problem(&cfg, &addr) {
                bail!("cannot add {addr}: {why}");
            }
            if store.account(&addr)?.is_some() {
                bail!("{addr} exists already");
            }
            let generated = password.is_none();
            let password = password.unwrap_or_else(invite::random_password);
            if password.chars().count() < cfg.password_min_length {
                bail!(
                    "password shorter than password_min_length ({})",
                    cfg.password_min_length
                );
            }
            store.put_account(&Account {
                addr: addr.clone(),
                password_hash: auth::hash_password(&password)?,
                created: chatmail_box::store::now_unix(),
                enforce_e2ee: true,
                last_login_day: 0,
            })?;
            if generated {
                println!("{addr} {password}");
            } else {
                println!("{addr}");
            }
        }
        AccountCmd::Delete { addr } => {
            if !store.delete_account(&addr.to_ascii_lowercase())? {
                bail!("no account {addr}");
            }
            println!("deleted {addr}");
        }
        AccountCmd::ImportChatmail { dir } => {
            let n = import_chatmail(&store, &dir)?;
            println!("imported {n} accounts");
        }
    }
    Ok(())
}

/// Import `<dir>/<addr>/password` files of an upstream relay. The `enforceE2EEincoming` marker
/// is carried over; the password file's mtime is the last-login day.
fn import_chatmail(store: &Store, dir: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.contains('@') || !e.file_type()?.is_dir() {
            continue;
        }
        let pw_path = e.path().join("password");
        let Ok(hash) = std::fs::read_to_string(&pw_path) else {
            eprintln!("skipping {name}: no password file");
            continue;
        };
        let hash = hash.trim().to_string();
        if hash.is_empty() {
            eprintln!("skipping {name}: empty password file");
            continue;
        }
        let mtime = std::fs::metadata(&pw_path)?
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        store.put_account(&Account {
            addr: name.to_ascii_lowercase(),
            password_hash: hash,
            created: mtime,
            enforce_e2ee: e.path().join("enforceE2EEincoming").exists(),
            last_login_day: mtime / 86400 * 86400,
        })?;
        n += 1;
    }
    Ok(n)
}
