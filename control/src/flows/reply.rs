//! The replies of `flow count` and `flow show`, built from the workers' flow tables as typed
//! structs (serialised at the socket, rendered by the CLI).

use std::{net::IpAddr, time::SystemTime};

use isopath_datapath::flow::{FlowReader, FlowSnapshot, ReadError};
use serde::{Deserialize, Serialize};

/// Most records one `flow show` returns (the reply is one JSON line on the control socket);
/// `flow show` without `limit` returns [`DEFAULT_LIMIT`].
pub const MAX_LIMIT: u64 = 100_000;
/// Records `flow show` returns without `limit`.
pub const DEFAULT_LIMIT: u64 = 1000;

/// The workers' tables as the daemon hands them to a request: by worker index, `None` where
/// tracking is off.
pub type Readers<'a> = [Option<&'a FlowReader>];

/// `flow count`: `{"workers":[{"worker","in_use","capacity","inserts","expiries","full"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCount {
    /// One entry per worker that tracks flows.
    pub workers: Vec<WorkerFlows>,
}

/// One worker's table counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFlows {
    /// The worker's index.
    pub worker: usize,
    /// Flows in the table now.
    pub in_use: u64,
    /// Flows the table holds.
    pub capacity: u64,
    /// Flows inserted since start.
    pub inserts: u64,
    /// Flows expired (idle timeout) since start.
    pub expiries: u64,
    /// New flows not tracked because the table was full (`flow_table_full`); their frames
    /// were forwarded.
    pub full: u64,
}

/// The table's counters in `isopath status` (each worker's `flows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFlowStatus {
    /// Whether the worker tracks flows (`[flows] enabled`).
    pub enabled: bool,
    /// The counters (absent when tracking is off).
    #[serde(flatten)]
    pub counters: Option<WorkerFlows>,
}

/// `flow show`: records with conntrack's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowShow {
    /// The records, worker by worker in slab order.
    pub flows: Vec<FlowRow>,
    /// Live flows seen during the walk (`flows` holds at most the limit of them).
    pub total: u64,
    /// Whether the limit cut the list short.
    pub truncated: bool,
    /// Slots the worker kept rewriting during every retry of the read (skipped).
    pub busy: u64,
}

/// One flow, oriented as it was opened (`src` is the originator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the IP protocol number.
    pub proto: String,
    /// The originator's address.
    pub src: IpAddr,
    /// The replier's address.
    pub dst: IpAddr,
    /// The originator's port (ICMP: the echo identifier).
    pub sport: u16,
    /// The replier's port (ICMP: the echo identifier).
    pub dport: u16,
    /// Packets from the originator.
    pub orig_packets: u64,
    /// L3 bytes (IP total length) from the originator.
    pub orig_bytes: u64,
    /// Packets from the replier.
    pub reply_packets: u64,
    /// L3 bytes from the replier.
    pub reply_bytes: u64,
    /// conntrack's state name: `SYN_SENT` .. `CLOSE` for TCP, `UNREPLIED` or `ASSURED`.
    pub state: String,
    /// First packet, Unix time in seconds.
    pub first_seen: f64,
    /// Last packet, Unix time in seconds.
    pub last_seen: f64,
    /// Seconds until it expires if no packet comes.
    pub expires_in_s: u64,
    /// The port the originator's packets entered by.
    pub ingress: Option<String>,
    /// The port the replier's packets entered by (none until a reply).
    pub reply_ingress: Option<String>,
    /// VLAN ids, outer first (empty: untagged).
    pub vlan: Vec<u16>,
    /// Zone (0 until namespaces use it).
    pub zone: u16,
    /// The worker whose table holds it.
    pub worker: usize,
    /// Its slab position (stable for the flow's life).
    pub slot: u32,
}

/// The counters of one worker's table.
pub fn worker_flows(worker: usize, r: &FlowReader) -> WorkerFlows {
    let c = r.counters();
    WorkerFlows {
        worker,
        in_use: c.in_use.get(),
        capacity: u64::from(r.capacity()),
        inserts: c.inserts.get(),
        expiries: c.expiries.get(),
        full: c.full.get(),
    }
}

/// A worker's `flows` in `isopath status`.
pub fn worker_status(worker: usize, r: Option<&FlowReader>) -> WorkerFlowStatus {
    WorkerFlowStatus {
        enabled: r.is_some(),
        counters: r.map(|r| worker_flows(worker, r)),
    }
}

/// `flow count`.
pub fn count(readers: &Readers<'_>) -> FlowCount {
    FlowCount {
        workers: readers
            .iter()
            .enumerate()
            .filter_map(|(w, r)| r.map(|r| worker_flows(w, r)))
            .collect(),
    }
}

/// `flow show` of at most `limit` records; `ports` names the ingress port ids (id `n` is
/// `ports[n - 1]`).
pub fn show(readers: &Readers<'_>, limit: u64, ports: &[String], wall_now: SystemTime) -> FlowShow {
    let wall = wall_now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut out = FlowShow {
        flows: Vec::new(),
        total: 0,
        truncated: false,
        busy: 0,
    };
    for (worker, r) in readers.iter().enumerate() {
        let Some(r) = r else { continue };
        for slot in 0..r.capacity() {
            match r.read(slot) {
                Ok(f) => {
                    out.total += 1;
                    if (out.flows.len() as u64) < limit {
                        out.flows.push(row(&f, worker, r.now_ns(), wall, ports));
                    } else {
                        out.truncated = true;
                    }
                }
                Err(ReadError::Busy) => out.busy += 1,
                Err(ReadError::Free | ReadError::OutOfRange) => {}
            }
        }
    }
    out
}

fn row(f: &FlowSnapshot, worker: usize, now_ns: u64, wall: f64, ports: &[String]) -> FlowRow {
    let ((src, sport), (dst, dport)) = f.orig();
    let proto = match (f.key.proto(), f.key.is_v6()) {
        (6, _) => "tcp".to_owned(),
        (17, _) => "udp".to_owned(),
        (1, false) => "icmp".to_owned(),
        (58, true) => "icmpv6".to_owned(),
        (p, _) => p.to_string(),
    };
    // Times are in the worker's flow clock (read every loop, so `now_ns` is microseconds
    // old): turned into wall time by their age.
    let unix = |t_ns: u64| wall - now_ns.saturating_sub(t_ns) as f64 / 1e9;
    let ingress = |id: u8| ports.get(usize::from(id).checked_sub(1)?).cloned();
    FlowRow {
        proto,
        src,
        dst,
        sport,
        dport,
        orig_packets: f.packets[0],
        orig_bytes: f.bytes[0],
        reply_packets: f.packets[1],
        reply_bytes: f.bytes[1],
        state: f.state.name().to_owned(),
        first_seen: (unix(f.first_seen_ns) * 1000.0).round() / 1000.0,
        last_seen: (unix(f.last_seen_ns) * 1000.0).round() / 1000.0,
        expires_in_s: f.expires_in_ms / 1000,
        ingress: ingress(f.ingress[0]),
        reply_ingress: ingress(f.ingress[1]),
        vlan: f.key.vlan().into_iter().filter(|&v| v != 0).collect(),
        zone: f.key.zone(),
        worker,
        slot: f.slot,
    }
}

/// Answers a `flow ...` request (`words` after `flow`): `count`, or `show [limit N]`.
/// Returns the reply document and whether the request was understood.
pub fn answer(
    words: &[&str],
    readers: &Readers<'_>,
    ports: &[String],
) -> (serde_json::Value, bool) {
    let reply = match words {
        ["count"] => serde_json::to_value(count(readers)),
        ["show"] => serde_json::to_value(show(readers, DEFAULT_LIMIT, ports, SystemTime::now())),
        ["show", "limit", n] => match n.parse::<u64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => {
                serde_json::to_value(show(readers, n, ports, SystemTime::now()))
            }
            _ => return error(format!("limit {n:?}: expected 1 to {MAX_LIMIT}")),
        },
        _ => {
            return error(format!(
                "unknown flow request {:?}; known: flow count, flow show [limit N]",
                words.join(" ")
            ));
        }
    };
    match reply {
        Ok(v) => (v, true),
        Err(e) => error(e.to_string()),
    }
}

fn error(message: String) -> (serde_json::Value, bool) {
    (serde_json::json!({ "error": message }), false)
}
