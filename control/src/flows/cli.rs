//! `isopath flow`: the CLI's side of `flow count` and `flow show`.

use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::reply::{DEFAULT_LIMIT, FlowCount, FlowRow, FlowShow, MAX_LIMIT};
use crate::client;

/// `isopath flow ...`.
#[derive(Debug, Subcommand)]
pub enum FlowCmd {
    /// Flows in each worker's table: in use, capacity, inserts, expiries, full.
    Count {
        /// Print the JSON document.
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// The flows, one line each with conntrack's fields (`flow show limit 50`).
    Show {
        /// `limit N`: at most N flows (default 1000, at most 100000).
        #[arg(num_args = 0..=2, value_names = ["limit", "N"])]
        words: Vec<String>,
        /// Print the JSON document.
        #[arg(short = 'j', long)]
        json: bool,
    },
}

/// Runs `cmd` against the daemon at `socket`.
///
/// # Errors
/// The daemon cannot be reached, refuses the request, or the arguments are wrong.
pub fn run_cli(socket: &Path, cmd: &FlowCmd) -> anyhow::Result<()> {
    match cmd {
        FlowCmd::Count { json } => {
            let v = client::request(socket, "flow count")?;
            if *json {
                println!("{v}");
                return Ok(());
            }
            let c: FlowCount = serde_json::from_value(v).context("the flow count reply")?;
            if c.workers.is_empty() {
                println!("flow tracking is off ([flows] enabled = false)");
            }
            for w in &c.workers {
                println!(
                    "worker {}: {} of {} flows in use, inserts {}, expiries {}, full {}",
                    w.worker, w.in_use, w.capacity, w.inserts, w.expiries, w.full
                );
            }
        }
        FlowCmd::Show { words, json } => {
            let limit = match words.as_slice() {
                [] => DEFAULT_LIMIT,
                [k, n] if k == "limit" => n
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .with_context(|| format!("limit {n:?}: expected 1 to {MAX_LIMIT}"))?,
                _ => bail!("usage: isopath flow show [limit N]"),
            };
            let v = client::request(socket, &format!("flow show limit {limit}"))?;
            if *json {
                println!("{v}");
                return Ok(());
            }
            let s: FlowShow = serde_json::from_value(v).context("the flow show reply")?;
            for f in &s.flows {
                println!("{}", line(f));
            }
            let more = if s.truncated { " (limit reached)" } else { "" };
            println!("{} flows shown of {}{more}", s.flows.len(), s.total);
        }
    }
    Ok(())
}

/// One flow as `conntrack -L` prints one, plus where each direction came in.
fn line(f: &FlowRow) -> String {
    let vlan = if f.vlan.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = f.vlan.iter().map(u16::to_string).collect();
        format!(" vlan={}", ids.join("."))
    };
    format!(
        "{:<7} {:>6} {} src={} dst={} sport={} dport={} packets={} bytes={} src={} dst={} sport={} dport={} packets={} bytes={} ingress={} reply_ingress={}{vlan} zone={} worker={}",
        f.proto,
        f.expires_in_s,
        f.state,
        f.src,
        f.dst,
        f.sport,
        f.dport,
        f.orig_packets,
        f.orig_bytes,
        f.dst,
        f.src,
        f.dport,
        f.sport,
        f.reply_packets,
        f.reply_bytes,
        f.ingress.as_deref().unwrap_or("-"),
        f.reply_ingress.as_deref().unwrap_or("-"),
        f.zone,
        f.worker,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_like_conntrack() {
        let f = FlowRow {
            proto: "tcp".into(),
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            sport: 40001,
            dport: 9001,
            orig_packets: 10,
            orig_bytes: 1000,
            reply_packets: 5,
            reply_bytes: 260,
            state: "ESTABLISHED".into(),
            first_seen: 1.0,
            last_seen: 2.0,
            expires_in_s: 299,
            ingress: Some("up0".into()),
            reply_ingress: Some("m0".into()),
            vlan: vec![100],
            zone: 0,
            worker: 0,
            slot: 7,
        };
        assert_eq!(
            line(&f),
            "tcp        299 ESTABLISHED src=198.18.0.1 dst=198.18.0.2 sport=40001 dport=9001 \
             packets=10 bytes=1000 src=198.18.0.2 dst=198.18.0.1 sport=9001 dport=40001 \
             packets=5 bytes=260 ingress=up0 reply_ingress=m0 vlan=100 zone=0 worker=0"
        );
    }
}
