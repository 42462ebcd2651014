//! `isopath`: the command-line client of `isopathd`.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use isopath_control::client;
use serde_json::Value;

/// Query and control a running isopathd.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The daemon's control socket.
    #[arg(
        short,
        long,
        default_value = "/run/isopath/isopathd.sock",
        global = true
    )]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Ports, counters and workers.
    Status {
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Per-port packet rates, one line per port per interval (plain lines, for logs and pipes).
    Rates {
        /// Interval between samples, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Number of intervals to print (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("isopath: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        Cmd::Status { json } => {
            let v = client::request(&args.socket, "status")?;
            if json {
                println!("{v}");
            } else {
                print_status(&v);
            }
        }
        Cmd::Rates { interval_ms, count } => {
            let interval = Duration::from_millis(interval_ms.max(10));
            // On a terminal one line is redrawn in place; in a pipe or a log, plain lines.
            let tty = std::io::stdout().is_terminal();
            let mut prev = client::request(&args.socket, "status")?;
            let mut n = 0;
            while count == 0 || n < count {
                std::thread::sleep(interval);
                let cur = client::request(&args.socket, "status")?;
                let line = rates_line(&prev, &cur).context("malformed status")?;
                if tty {
                    print!("\r\x1b[2K{line}");
                    std::io::stdout().flush()?;
                } else {
                    println!("{line}");
                }
                prev = cur;
                n += 1;
            }
            if tty {
                println!();
            }
        }
    }
    Ok(())
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn print_status(v: &Value) {
    println!(
        "isopathd pid {} uptime {} ms",
        u(v, "pid"),
        u(v, "uptime_ms")
    );
    for p in v["ports"].as_array().into_iter().flatten() {
        println!(
            "port {} link {} queues {} bind {} xdp {}",
            p["name"].as_str().unwrap_or("?"),
            p["link"].as_str().unwrap_or("?"),
            u(p, "queues"),
            p["bind"].as_str().unwrap_or("-"),
            p["xdp_mode"].as_str().unwrap_or("-"),
        );
        println!(
            "    rx {} pkts {} bytes   tx {} pkts {} bytes",
            u(p, "rx_packets"),
            u(p, "rx_bytes"),
            u(p, "tx_packets"),
            u(p, "tx_bytes")
        );
        let drops: Vec<String> = p["drops"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {}", v.as_u64().unwrap_or(0)))
            .collect();
        println!("    drops: {}", drops.join(", "));
        let xsk: Vec<String> = p["xsk"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {}", v.as_u64().unwrap_or(0)))
            .collect();
        println!("    kernel xsk: {}", xsk.join(", "));
    }
    for w in v["workers"].as_array().into_iter().flatten() {
        let f = &w["frames"];
        println!(
            "worker core {} loops {} busy {}  frames total {} free {} in_fill {} in_tx {}",
            w["core"],
            u(w, "loops"),
            u(w, "busy_loops"),
            u(f, "total"),
            u(f, "free"),
            u(f, "in_fill"),
            u(f, "in_tx")
        );
    }
}

fn rates_line(prev: &Value, cur: &Value) -> Option<String> {
    let dt = (u(cur, "uptime_ms").saturating_sub(u(prev, "uptime_ms"))).max(1) as f64 / 1000.0;
    let mut line = String::new();
    for p in cur["ports"].as_array()? {
        let name = p["name"].as_str()?;
        let q = prev["ports"]
            .as_array()?
            .iter()
            .find(|x| x["name"] == name)?;
        let rate = |k: &str| u(p, k).saturating_sub(u(q, k)) as f64 / dt;
        let drops: u64 = p["drops"]
            .as_object()?
            .values()
            .filter_map(Value::as_u64)
            .sum();
        let pdrops: u64 = q["drops"]
            .as_object()?
            .values()
            .filter_map(Value::as_u64)
            .sum();
        line.push_str(&format!(
            "{name}: rx {:>9.0} pps {:>8.2} Mb/s  tx {:>9.0} pps  drop {:>7.0} pps | ",
            rate("rx_packets"),
            rate("rx_bytes") * 8.0 / 1e6,
            rate("tx_packets"),
            drops.saturating_sub(pdrops) as f64 / dt
        ));
    }
    Some(line.trim_end_matches(" | ").to_owned())
}
