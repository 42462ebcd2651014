//! `isopathd`: the datapath daemon.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use clap::Parser;
use isopath_control::{
    config::Config,
    daemon::{Daemon, exit},
    host::LiveHost,
};
use tracing::error;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ISOPATH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let host = LiveHost::new();
    let plan = match Config::load(&args.config).and_then(|c| c.plan(&host)) {
        Ok(mut plan) => {
            if let Some(s) = args.control_socket {
                plan.control_socket = s;
            }
            plan
        }
        Err(e) => {
            error!("configuration refused: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
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
    let daemon = match Daemon::start(&plan, &host, args.force) {
        Ok(d) => d,
        Err(e) => {
            error!("start failed: {e:#}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    ExitCode::from(daemon.run(&host, &stop))
}
