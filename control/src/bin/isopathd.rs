//! `isopathd`: the datapath daemon.
//!
//! Exit codes: 0 clean stop, 1 start-up or run-time failure (a missing capability included),
//! 2 bad configuration, 3 frames unaccounted for at stop ([`exit`]).

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use isopath_control::{
    config::Config,
    daemon::{Daemon, error_chain, exit},
    host::LiveHost,
    privs, sd_notify,
    topology::Housekeeping,
};
use tracing::{error, info, warn};

/// Set in isopathd's environment (tests only), it starts a thread allowed on every CPU after
/// start-up, which the thread check must report.
const UNPINNED_THREAD_ENV: &str = "ISOPATH_TEST_UNPINNED_THREAD";

/// How long start-up waits for every worker's first poll before it gives up.
const FIRST_POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// The isopath datapath daemon: owns the configured ports, runs the polling workers.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML; see deploy/isopath.toml).
    #[arg(short, long, default_value = "/etc/isopath/isopath.toml")]
    config: PathBuf,
    /// Replace a foreign XDP program found on a configured interface.
    #[arg(long)]
    force: bool,
    /// Override the control socket path of the config file.
    #[arg(long)]
    control_socket: Option<String>,
    /// Validate the configuration against this host and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ISOPATH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter_reloading();
    let log_handle = logs.reload_handle();
    logs.init();
    // `daemon.log_level`, unless ISOPATH_LOG (read above) says otherwise.
    let env_log = std::env::var_os("ISOPATH_LOG").is_some();
    let set_log = move |directives: &str| -> Result<(), String> {
        if env_log {
            info!("daemon.log_level {directives:?} not applied: ISOPATH_LOG is set");
            return Ok(());
        }
        let f = tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        log_handle.reload(f).map_err(|e| e.to_string())
    };
    let host = LiveHost::new();
    let (config, plan) = match Config::load(&args.config).and_then(|c| Ok((c.plan(&host)?, c))) {
        Ok((mut plan, config)) => {
            if let Some(s) = &args.control_socket {
                plan.control_socket.clone_from(s);
            }
            (config, plan)
        }
        Err(e) => {
            error!("configuration refused: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    if let Err(e) = set_log(&plan.log_level) {
        warn!("daemon.log_level: {e}");
    }
    // The placement, as `isopath worker plan` prints it.
    for line in plan.placement.table().lines() {
        info!("placement: {line}");
    }
    for w in &plan.placement.warnings {
        warn!("placement: {w}");
    }
    if args.check_config {
        println!(
            "{}: ok ({} ports, {} workers)",
            args.config.display(),
            plan.ports.len(),
            plan.workers.len()
        );
        return ExitCode::SUCCESS;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            error!("installing the signal handler: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    }
    // SIGHUP (the unit's ExecReload): the control loop reads the configuration again.
    let reload = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()) {
        error!("installing the SIGHUP handler: {e}");
        return ExitCode::from(exit::FAILURE);
    }
    // Before anything touches an interface: a missing capability is named here, not met as
    // EPERM from deep inside libbpf.
    if let Err(e) = privs::acquire() {
        error!("{e}");
        return ExitCode::from(exit::FAILURE);
    }
    // A queue still held by a just-killed instance is waited for in the bind itself (the
    // kernel releases the dead sockets from a workqueue; see XskUmem::bind).
    let mut daemon = match Daemon::start(&plan, &host, args.force) {
        Ok(d) => d,
        Err(e) => {
            error!("start failed: {}", error_chain(&e));
            if e.is_unnamed_foreign()
                && let Some(hint) = privs::foreign_name_hint()
            {
                error!("{hint}");
            }
            return ExitCode::from(exit::FAILURE);
        }
    };
    // Ready means every port bound and attached (Daemon::start) and every worker polling.
    if let Err(e) = wait_first_poll(&daemon, FIRST_POLL_TIMEOUT) {
        error!("start failed: {e}");
        return ExitCode::from(exit::FAILURE);
    }
    // Test-only: a thread that ignores the housekeeping mask, for the thread check to find.
    if std::env::var_os(UNPINNED_THREAD_ENV).is_some()
        && let Some(h) = daemon.housekeeping()
        && let Err(e) = h.spawn_unpinned(stop.clone())
    {
        warn!("{UNPINNED_THREAD_ENV}: {e}");
    }
    // Every thread but the workers must keep off the worker CPUs; say which do not.
    let threads = daemon.check_threads();
    for w in threads.warnings() {
        warn!("{w}");
    }
    info!(
        threads = threads.threads,
        workers_pinned = threads.workers_pinned,
        off_worker_cpus = threads.offenders.is_empty(),
        "thread check"
    );
    if let Err(e) = privs::settle() {
        error!("dropping start-up capabilities: {e}");
        return ExitCode::from(exit::FAILURE);
    }
    match privs::Snapshot::read() {
        Ok(caps) => info!(%caps, "start-up capabilities dropped"),
        Err(e) => warn!("{e}"),
    }
    let status = daemon.status();
    let ready = format!(
        "READY=1\nSTATUS=forwarding: {} ports, {} workers\nMAINPID={}",
        status.ports.len(),
        status.workers.len(),
        std::process::id()
    );
    if let Err(e) = sd_notify::notify(&ready) {
        warn!("sd_notify READY=1: {e}");
    }
    spawn_stop_notifier(stop.clone(), daemon.housekeeping().cloned());
    daemon.set_config(
        args.config.clone(),
        config,
        plan,
        args.control_socket.clone(),
    );
    daemon.set_log_filter(Box::new(set_log));
    ExitCode::from(daemon.run(&host, &stop, &reload))
}

/// Waits until every worker has completed at least one poll loop.
fn wait_first_poll(daemon: &Daemon, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let workers = daemon.status().workers;
        if workers.iter().all(|w| w.loops > 0) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let idle: Vec<Option<usize>> = workers
                .iter()
                .filter(|w| w.loops == 0)
                .map(|w| w.core)
                .collect();
            return Err(format!(
                "workers on cores {idle:?} did not poll within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Tells the service manager `STOPPING=1` as soon as a stop signal arrives (the control loop
/// then drains and detaches, which takes a moment).
fn spawn_stop_notifier(stop: Arc<AtomicBool>, house: Option<Housekeeping>) {
    if std::env::var_os(sd_notify::ENV).is_none() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("isopath-notify".into())
        .spawn(move || {
            if let Some(h) = house
                && let Err(e) = h.pin_current()
            {
                warn!("notifier thread: {e}");
            }
            // Spawned after start-up, it holds the permitted set: it needs none of it.
            if let Err(e) = privs::drop_all_for_thread() {
                warn!("notifier thread: {e}");
            }
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Err(e) = sd_notify::notify("STOPPING=1") {
                warn!("sd_notify STOPPING=1: {e}");
            }
        });
    if let Err(e) = spawned {
        warn!("spawning the stop notifier: {e}");
    }
}
