//! `isopath-bench`: traffic sources, sinks and the line-rate benchmark suite for the isopath
//! lab.
//!
//! Two layers:
//! - **primitives**, each run inside one lab namespace and pinned to one core: kernel-socket
//!   sources and sinks (`udp-send`, `udp-recv`, `tcp-send`, `tcp-recv`), the line-rate source
//!   (`gen`: XDP live frames or AF_XDP), the verifying AF_XDP receiver (`recv`), the bare AF_XDP
//!   reference loops (`xsk-fwd`, `xsk-drop`) and the XDP_DROP ceiling (`xdp-drop`);
//! - **runs**, started from the root namespace, that build a lab, start the primitives and the
//!   peers in it, and write a report (`compare`, `rfc2544`, `failover`), and `report`, which
//!   renders a stored report again.
//!
//! Every subcommand is bounded in time and prints exactly one JSON object on stdout when it
//! ends (exit status 0). Receivers print a line `ready` on stderr once their socket is bound,
//! so a test can start the sender after it; long-running primitives print `progress {json}`
//! lines on stderr once per second. Setup failures (bad arguments, bind or connect errors)
//! exit non-zero with a message on stderr and no JSON.
#![forbid(unsafe_code)]

mod bpf;
mod dump;
mod failover;
mod hist;
mod lab;
mod pattern;
mod pcap;
mod peers;
mod redirect;
mod report;
mod run;
mod search;
mod seq;
mod source;
mod tcp;
mod track;
mod udp;
mod wire;
mod xsk;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde::Serialize;

/// Traffic sources and sinks for the isopath lab (kernel sockets, std only).
#[derive(Debug, Parser)]
#[command(name = "isopath-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send numbered UDP datagrams: each payload is a big-endian u64 sequence number, then
    /// byte i = (seq + i) as u8. Prints {"sent","bytes",...}.
    UdpSend(udp::SendArgs),
    /// Receive and verify UDP datagrams from udp-send until all expected ones arrived or the
    /// timeout. Prints "ready" on stderr once bound; then
    /// {"received","bytes","corrupt","duplicates","out_of_order","missing",...}.
    UdpRecv(udp::RecvArgs),
    /// Send a byte stream over one TCP connection: byte i = (i % 251) as u8.
    /// Prints {"sent_bytes",...}.
    TcpSend(tcp::SendArgs),
    /// Accept one TCP connection and verify its stream until EOF or the timeout. Prints
    /// "ready" on stderr once listening; then {"received_bytes","corrupt","ok",...}.
    TcpRecv(tcp::RecvArgs),
    /// Line-rate source on one interface: XDP live frames (default) or AF_XDP; probes carry
    /// flow, sequence number and TX time. Prints {"sent","secs","rate_pps",...}.
    Gen(source::GenArgs),
    /// Verifying AF_XDP receiver: per-flow loss, duplicates, reordering, latency histogram,
    /// cross-checked with the kernel's XDP_STATISTICS.
    Recv(RecvArgs),
    /// The bare AF_XDP forwarder (no processing): the lab's AF_XDP forwarding ceiling.
    XskFwd(BareArgs),
    /// The bare AF_XDP rx-drop loop: frames reach user space and are returned to the pool.
    XskDrop(BareArgs),
    /// A tiny XDP_DROP program that counts: the lab's receive ceiling.
    XdpDrop(XdpDropArgs),
    /// The xdp-redirect peer's cross-connect: XDP_REDIRECT from --iface to --to (and back).
    XdpRedirect(redirect::XdpRedirectArgs),
    /// XDP_PASS on interfaces, so that veths accept redirected frames (NAPI).
    XdpPass(redirect::XdpPassArgs),
    /// Every peer and ceiling on the same lab path, alternating A B A B: forwarding rates,
    /// ratios, CPU per core. Builds its own lab; writes report.json, summary.md, SVG plots.
    Compare(run::CompareArgs),
    /// RFC 2544 throughput (binary search for zero loss), loss curve, latency and back-to-back
    /// per frame size. Builds its own lab; writes report.json, summary.md, SVG plots.
    Rfc2544(run::Rfc2544Args),
    /// Carrier-loss failovers through isopath's bond at set rates (or the highest the bond
    /// forwards without loss: `--rates 100k,max`), every frame numbered and timed at the far
    /// side (AF_XDP on s0 and s1). Builds its own lab; writes report.json, summary.md, SVG.
    Failover(failover::FailoverCmd),
    /// Issue 16's flow-dump benchmark: fills isopath's flow table with --flows real flows,
    /// dumps them over the netlink-format socket (binary and `isopath flow show`), and times
    /// `conntrack -L` over as many kernel entries. Builds its own lab; prints one JSON object.
    Dump(dump::DumpArgs),
    /// Renders a stored report.json as the Markdown summary (and plots with --out).
    Report(run::ReportArgs),
}

/// Arguments of `recv`.
#[derive(Debug, clap::Args)]
struct RecvArgs {
    /// Interface to receive on (every RX queue gets a socket).
    #[arg(long)]
    iface: String,
    /// How long to receive.
    #[arg(long, value_parser = parse_secs)]
    secs: Duration,
    /// Core to pin to.
    #[arg(long)]
    core: Option<usize>,
}

/// Arguments of `xsk-fwd` and `xsk-drop`.
#[derive(Debug, clap::Args)]
struct BareArgs {
    /// Interface to receive on.
    #[arg(long)]
    iface: String,
    /// Interface to forward to (`xsk-fwd`; frames from it go back to --iface).
    #[arg(long)]
    to: Option<String>,
    #[arg(long, value_parser = parse_secs)]
    secs: Duration,
    #[arg(long)]
    core: Option<usize>,
    /// Frames per RX burst (1..=256; isopath's default burst is 64).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=256))]
    batch: u16,
}

/// Arguments of `xdp-drop`.
#[derive(Debug, clap::Args)]
struct XdpDropArgs {
    #[arg(long)]
    iface: String,
    #[arg(long, value_parser = parse_secs)]
    secs: Duration,
}

/// Parses a positive number of seconds (fractions allowed, e.g. 0.5).
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if secs <= 0.0 {
        return Err("must be greater than 0".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Seconds since an arbitrary fixed point (for rates between two reads).
fn now_secs() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

/// Prints `value` as one JSON object on its own line on stdout.
fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Attaches the counting XDP_DROP program and reports its count every second.
fn xdp_drop(a: &XdpDropArgs) -> Result<()> {
    let stop = bpf::stop_flag()?;
    let ifindex = isopath_datapath::xsk::if_index(&a.iface)?;
    let d = bpf::DropCounter::attach(ifindex)?;
    eprintln!("ready");
    let start = std::time::Instant::now();
    let mut last = 0;
    let mut next = start;
    while start.elapsed() < a.secs && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        next += Duration::from_secs(1);
        bpf::sleep_until(next.min(start + a.secs), &stop);
        let n = d.count()?;
        xsk::progress(
            &serde_json::json!({"t": start.elapsed().as_secs_f64(), "packets": n, "pps": n - last}),
        );
        last = n;
    }
    let n = d.count()?;
    let secs = start.elapsed().as_secs_f64();
    print_json(
        &serde_json::json!({"iface": a.iface, "dropped": n, "secs": secs, "rate_pps": n as f64 / secs}),
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::UdpSend(args) => udp::send(args),
        Command::UdpRecv(args) => udp::recv(args),
        Command::TcpSend(args) => tcp::send(args),
        Command::TcpRecv(args) => tcp::recv(args),
        Command::Gen(args) => source::run(args),
        Command::Recv(a) => bpf::stop_flag()
            .and_then(|stop| xsk::recv(&a.iface, a.secs, a.core, &stop))
            .and_then(|r| print_json(&r)),
        Command::XskFwd(a) => {
            let Some(to) = a.to.as_deref() else {
                eprintln!("isopath-bench: error: xsk-fwd needs --to");
                return ExitCode::FAILURE;
            };
            bpf::stop_flag()
                .and_then(|stop| {
                    xsk::bare(&a.iface, Some(to), a.batch.into(), a.secs, a.core, &stop)
                })
                .and_then(|r| print_json(&r))
        }
        Command::XskDrop(a) => bpf::stop_flag()
            .and_then(|stop| xsk::bare(&a.iface, None, a.batch.into(), a.secs, a.core, &stop))
            .and_then(|r| print_json(&r)),
        Command::XdpDrop(a) => xdp_drop(a),
        Command::XdpRedirect(a) => redirect::run_redirect(a),
        Command::XdpPass(a) => redirect::run_pass(a),
        Command::Compare(a) => run::compare(a),
        Command::Rfc2544(a) => run::rfc2544(a),
        Command::Failover(a) => failover::main(a),
        Command::Dump(a) => dump::run(a),
        Command::Report(a) => run::render(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("isopath-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secs_parsing() {
        assert_eq!(parse_secs("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("nan").is_err());
        assert!(parse_secs("inf").is_err());
        assert!(parse_secs("x").is_err());
    }
}
