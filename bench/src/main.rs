//! `isopath-bench`: traffic sources and sinks for the isopath lab.
//!
//! Every subcommand is bounded in time and prints exactly one JSON object on stdout when it
//! ends (exit status 0). Receivers print a line `ready` on stderr once their socket is bound,
//! so a test can start the sender after it. Setup failures (bad arguments, bind or connect
//! errors) exit non-zero with a message on stderr and no JSON.
#![forbid(unsafe_code)]

mod pattern;
mod seq;
mod tcp;
mod udp;

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
}

/// Parses a positive number of seconds (fractions allowed, e.g. 0.5).
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if secs <= 0.0 {
        return Err("must be greater than 0".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Prints `value` as one JSON object on its own line on stdout.
fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::UdpSend(args) => udp::send(args),
        Command::UdpRecv(args) => udp::recv(args),
        Command::TcpSend(args) => tcp::send(args),
        Command::TcpRecv(args) => tcp::recv(args),
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
