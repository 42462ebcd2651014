//! `dump`: issue 16's flow-dump benchmark. Fills isopathd's flow table with `--flows` real
//! flows through the datapath (the live source spreads frames over that many UDP 5-tuples),
//! dumps them over the netlink-format socket with a client that decodes every message,
//! times the CLI's text dump (`isopath flow show`), then loads about as many entries into a
//! kernel conntrack table through the `kernel-conntrack` router and times `conntrack -L`.
//! Prints one JSON object.
//!
//! Then a steady stream over the table's flows (`--stream-rate`), once alone and once with
//! dumps back to back meanwhile: `loss_without_dump`, `loss_with_dump` (the same offered rate;
//! both sources' `sent` are in the report). Not measured: the worker's loop gaps (the worker
//! does not measure them), reported as `null`, never estimated.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use isopath_control::{
    nlserver::client::NlClient,
    proto::{
        msg::{ConnSet, FlowQuery, FlowTableMsg, FlowTableQuery, Message, Request},
        nl::NLM_F_DUMP,
    },
};
use serde_json::{Value, json};

use crate::{
    lab::{Lab, sibling_bin},
    peers::{self, Peer},
    run::{Dir, start_gen},
};

/// Arguments of `dump`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DumpArgs {
    /// Flows to make (distinct UDP 5-tuples: source port 10000 + f % 4096, destination port
    /// 9 + f / 4096), in isopath's table and in the kernel's conntrack table.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    flows: u32,
    /// Longest wait for a table to fill (each of isopath's and conntrack's), and for one dump.
    #[arg(long, default_value = "60", value_parser = crate::parse_secs)]
    secs: Duration,
    /// Rate of the source that fills the tables (k/M suffixes); it sends until the table
    /// holds --flows (or --secs pass).
    #[arg(long, default_value = "400k", value_parser = crate::source::parse_rate)]
    fill_rate: u64,
    /// The dump client's buffer hint (the daemon's part size), bytes.
    #[arg(long, default_value_t = 65536)]
    dump_buf: u32,
    /// Dumps (binary and text, and `conntrack -L`) timed; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    repeat: u32,
    /// Rate of the steady stream forwarded over the table's flows with and without dumps
    /// running meanwhile (0: skip that part).
    #[arg(long, default_value = "100k", value_parser = crate::source::parse_rate)]
    stream_rate: u64,
    /// Length of each of the two streams (without, then with back-to-back dumps).
    #[arg(long, default_value = "4", value_parser = crate::parse_secs)]
    stream_secs: Duration,
    /// Skip the kernel conntrack half.
    #[arg(long)]
    no_conntrack: bool,
    /// Lab prefix ([a-z0-9]{1,10}); default `bd` + this process's id.
    #[arg(long)]
    prefix: Option<String>,
}

/// The lab's source address block (the generator's defaults).
const SRC: [u8; 4] = [198, 18, 0, 1];
const DST: [u8; 4] = [198, 18, 0, 2];

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// `VmRSS` and `VmHWM` of `pid`, KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        st.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn flow_table(c: &mut NlClient) -> Result<FlowTableMsg> {
    match c
        .request(&Request::GetFlowTable(FlowTableQuery { zone: None }), false)?
        .pop()
    {
        Some(Message::NewFlowTable(t)) => Ok(t),
        other => bail!("GETFLOWTAB answered {other:?}"),
    }
}

/// What one binary dump saw.
#[derive(Debug, Default)]
struct DumpResult {
    secs: f64,
    records: u64,
    distinct: u64,
    duplicates: u64,
    /// Records of the generator's 5-tuples, each counted once.
    generated: u64,
    generated_duplicates: u64,
    other_messages: u64,
    interrupted: bool,
}

/// One `GETFLOW` dump through `c`: the time from the request sent to `NLMSG_DONE` parsed,
/// every message decoded on the way (by [`NlClient::request_each`]); ids are kept and
/// counted once each after the clock stops.
fn dump_once(c: &mut NlClient, flows: u32) -> Result<DumpResult> {
    let mut ids: Vec<u64> = Vec::with_capacity(flows as usize + 1024);
    let mut seen = vec![0u64; (flows as usize).div_ceil(64)];
    let mut r = DumpResult::default();
    let q = FlowQuery {
        filter: None,
        limit: None,
        tuple: None,
    };
    let (src, dst) = (std::net::IpAddr::from(SRC), std::net::IpAddr::from(DST));
    let t = Instant::now();
    r.interrupted = c.request_each(&Request::GetFlow(q), NLM_F_DUMP, |m| match m {
        Message::NewFlow(f) => {
            ids.push(f.id);
            if f.proto == 17
                && f.src == src
                && f.dst == dst
                && let (Some(sp), Some(dp)) = (f.sport, f.dport)
                && (10_000..10_000 + crate::wire::PORT_SPAN).contains(&sp)
                && dp >= 9
            {
                let i =
                    u64::from(sp - 10_000) + u64::from(crate::wire::PORT_SPAN) * u64::from(dp - 9);
                if i < u64::from(flows) {
                    let (w, b) = ((i / 64) as usize, i % 64);
                    if seen[w] >> b & 1 == 1 {
                        r.generated_duplicates += 1;
                    } else {
                        seen[w] |= 1 << b;
                        r.generated += 1;
                    }
                }
            }
        }
        _ => r.other_messages += 1,
    })?;
    r.secs = t.elapsed().as_secs_f64();
    r.records = ids.len() as u64;
    ids.sort_unstable();
    ids.dedup();
    r.distinct = ids.len() as u64;
    r.duplicates = r.records - r.distinct;
    Ok(r)
}

/// Sysctls changed for the conntrack half, written back when dropped (also on errors).
struct SysctlGuard<'l> {
    lab: &'l Lab,
    /// Root namespace: (path under /proc/sys, old value).
    root: Vec<(PathBuf, String)>,
    /// The appliance namespace: (key, old value).
    app: Vec<(String, String)>,
}

impl<'l> SysctlGuard<'l> {
    fn new(lab: &'l Lab) -> Self {
        Self {
            lab,
            root: Vec::new(),
            app: Vec::new(),
        }
    }

    fn set_root(&mut self, key: &str, value: &str) -> Result<()> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        let old = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned();
        std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
        self.root.push((path, old));
        Ok(())
    }

    fn set_app(&mut self, key: &str, value: &str) -> Result<()> {
        let old = self
            .lab
            .sh("app", &["sysctl", "-n", key])?
            .trim()
            .to_owned();
        self.lab
            .sh("app", &["sysctl", "-qw", &format!("{key}={value}")])?;
        self.app.push((key.to_owned(), old));
        Ok(())
    }
}

impl Drop for SysctlGuard<'_> {
    fn drop(&mut self) {
        for (key, old) in self.app.drain(..).rev() {
            self.lab
                .sh_quiet("app", &["sysctl", "-qw", &format!("{key}={old}")]);
        }
        for (path, old) in self.root.drain(..).rev() {
            if let Err(e) = std::fs::write(&path, &old) {
                eprintln!(
                    "isopath-bench: could not restore {} to {old}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// Fills a table: the source sends over `flows` 5-tuples at `rate` (frame n in flow
/// n % flows) until `count` reaches `flows` (frames the forwarder drops on one pass make
/// their flows on a later one), then stops; once the count stops growing (2 s) or `limit`
/// passes, returns the source's JSON and the last count.
fn fill(
    lab: &Lab,
    peer: Peer,
    flows: u32,
    rate: u64,
    limit: Duration,
    mut count: impl FnMut() -> Result<u64>,
) -> Result<(Value, u64)> {
    let t = Instant::now();
    let g = start_gen(
        lab,
        Dir::Forward,
        peer,
        "64",
        rate,
        limit.as_secs_f64(),
        flows,
        &[],
    )?;
    let want = u64::from(flows);
    let mut n = count()?;
    while n < want && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
        n = count()?;
    }
    let source = g.stop_json()?;
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) && t.elapsed() < limit + Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        let m = count()?;
        if m != n {
            since = Instant::now();
        }
        n = m;
    }
    Ok((source, n))
}

/// Runs `cmd` with stdout to /dev/null `repeat` times; returns the times and the last
/// stderr.
fn time_to_null(mut cmd: impl FnMut() -> Command, repeat: u32) -> Result<(Vec<f64>, String)> {
    let mut times = Vec::new();
    let mut err = String::new();
    for _ in 0..repeat {
        let mut c = cmd();
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let t = Instant::now();
        let out = c.output().context("starting the command")?;
        times.push(t.elapsed().as_secs_f64());
        err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("{c:?} failed ({}): {err}", out.status);
        }
    }
    Ok((times, err))
}

/// The isopath half: fill, binary dumps, text dumps.
fn isopath_half(lab: &Lab, a: &DumpArgs, work: &Path) -> Result<Value> {
    let capacity = (u64::from(a.flows) + u64::from(a.flows) / 16)
        .clamp(64, u64::from(isopath_datapath::flow::MAX_CAPACITY));
    // Flows must outlive the benchmark: long UDP timeouts, no active updates.
    let flows_toml =
        format!("capacity = {capacity}\nudp_s = 3600\nudp_stream_s = 3600\nactive_timeout = 0\n");
    let run = peers::start_isopath_flows(lab, work, &flows_toml)?;
    let sock = run.socket().context("isopath has a socket")?.to_path_buf();
    let pid = run.pid().context("isopathd's pid")?;
    let mut nl_path = sock.clone().into_os_string();
    nl_path.push(".nl");
    let nl_path = PathBuf::from(nl_path);
    let mut c = NlClient::connect(&nl_path)?.with_timeout(Duration::from_secs(10));

    let t_fill = Instant::now();
    let (source, in_table) = fill(lab, Peer::Isopath, a.flows, a.fill_rate, a.secs, || {
        Ok(flow_table(&mut c)?.count)
    })?;
    let fill_secs = t_fill.elapsed().as_secs_f64();
    let table = flow_table(&mut c)?;

    c.request(
        &Request::SetConn(ConnSet {
            strict: None,
            dump_buf: Some(a.dump_buf),
            join: None,
            leave: None,
        }),
        false,
    )?;
    let mut c = c.with_timeout(a.secs);
    let mut dumps = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..a.repeat {
        let (rss_before, _) = rss_kib(pid)?;
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("clear_refs")?;
        let (rss_reset, hwm_reset) = rss_kib(pid)?;
        let d = dump_once(&mut c, a.flows)?;
        let (rss_after, hwm_after) = rss_kib(pid)?;
        rss.push(json!({
            "rss_before_kib": rss_before, "rss_after_reset_kib": rss_reset, "hwm_after_reset_kib": hwm_reset,
            "hwm_after_kib": hwm_after, "rss_after_kib": rss_after,
            "extra_mib": hwm_after.saturating_sub(rss_reset) as f64 / 1024.0,
        }));
        dumps.push(d);
    }
    let table_after = flow_table(&mut c)?;
    let first = &dumps[0];
    let secs: Vec<f64> = dumps.iter().map(|d| d.secs).collect();
    let secs_med = median(&secs);
    let extra_mib = rss
        .iter()
        .filter_map(|r| r["extra_mib"].as_f64())
        .fold(0.0, f64::max);

    let streams = if a.stream_rate > 0 {
        let without = stream(lab, a, || Ok(()))?;
        let mut during = Vec::new();
        let mut with = stream(lab, a, || {
            let d = dump_once(&mut c, a.flows)?;
            during
                .push(json!({"secs": d.secs, "distinct": d.distinct, "duplicates": d.duplicates}));
            Ok(())
        })?;
        with["dumps"] = json!(during);
        json!({"without_dump": without, "with_dump": with})
    } else {
        Value::Null
    };

    let bin = sibling_bin("isopath")?;
    let (text, _) = time_to_null(
        || {
            let mut c = Command::new(&bin);
            c.arg("-s").arg(&sock).args(["flow", "show"]);
            c
        },
        a.repeat,
    )?;
    drop(c);
    let status = run.isopath_status();
    run.stop()?;
    Ok(json!({
        "flows_offered": a.flows,
        "capacity": capacity,
        "fill": {"source": source, "secs": fill_secs, "table_count": in_table},
        "table": {"count": table.count, "created": table.created, "expired": table.expired,
                  "evicted": table.evicted, "events_suppressed": table.events_suppressed,
                  "count_after_dumps": table_after.count},
        "flows_dumped": first.distinct,
        "records": first.records,
        "duplicates": dumps.iter().map(|d| d.duplicates).sum::<u64>(),
        "generated_flows_dumped": first.generated,
        "generated_duplicates": dumps.iter().map(|d| d.generated_duplicates).sum::<u64>(),
        "every_dump_distinct": dumps.iter().map(|d| d.distinct).collect::<Vec<_>>(),
        "other_messages": first.other_messages,
        "interrupted": dumps.iter().any(|d| d.interrupted),
        "secs": secs_med,
        "secs_runs": secs,
        "mflows_per_s": first.distinct as f64 / secs_med / 1e6,
        "daemon_rss_extra_mib": extra_mib,
        "rss": rss,
        "stream": streams,
        "text_secs": median(&text),
        "text_secs_runs": text,
        "worker": status.map(|s| s["workers"].clone()).unwrap_or(Value::Null),
    }))
}

/// A steady stream over the table's flows (all hits) at `--stream-rate` for
/// `--stream-secs`, `work` called over and over meanwhile; frames sent vs arrived at s0.
fn stream(lab: &Lab, a: &DumpArgs, mut work: impl FnMut() -> Result<()>) -> Result<Value> {
    let s0 = || -> Result<u64> {
        lab.links_packets("far")?
            .get("s0")
            .map(|x| x.0)
            .context("no rx counter for s0")
    };
    let secs = a.stream_secs.as_secs_f64();
    let r0 = s0()?;
    let mut g = start_gen(
        lab,
        Dir::Forward,
        Peer::Isopath,
        "64",
        a.stream_rate,
        secs,
        a.flows,
        &[],
    )?;
    let t = Instant::now();
    let mut calls = 0u64;
    while g.running() && t.elapsed() < a.stream_secs + Duration::from_secs(15) {
        work()?;
        calls += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = g.wait_json(Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_millis(300)); // frames in flight
    let arrived = s0()? - r0;
    let sent = out["sent"].as_u64().unwrap_or(0);
    Ok(json!({
        "rate_pps": a.stream_rate, "secs": out["secs"], "sent": sent, "arrived": arrived,
        "loss": if sent > 0 { json!((sent as f64 - arrived as f64) / sent as f64) } else { Value::Null },
        "work_calls": calls,
    }))
}

/// The kernel half: about `flows` entries in a conntrack table, `conntrack -L` timed.
fn conntrack_half(lab: &Lab, a: &DumpArgs, work: &Path) -> Result<Value> {
    let run = peers::start(lab, Peer::KernelConntrack, work, false)?;
    let mut guard = SysctlGuard::new(lab);
    // conntrack's module is loaded once the peer's `ct` rules exist.
    let max = u64::from(a.flows) + u64::from(a.flows) / 4 + 4096;
    let cur: u64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .context("nf_conntrack_max")?
        .trim()
        .parse()?;
    if cur < max {
        guard.set_root("net.netfilter.nf_conntrack_max", &max.to_string())?;
    }
    guard.set_app("net.netfilter.nf_conntrack_udp_timeout", "3600")?;
    guard.set_app("net.netfilter.nf_conntrack_udp_timeout_stream", "3600")?;
    let count = || -> Result<u64> {
        Ok(lab
            .sh(
                "app",
                &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"],
            )?
            .trim()
            .parse()?)
    };
    let t = Instant::now();
    let (source, entries) = fill(
        lab,
        Peer::KernelConntrack,
        a.flows,
        a.fill_rate,
        a.secs,
        count,
    )?;
    let fill_secs = t.elapsed().as_secs_f64();
    let ns = lab.ns("app");
    let (times, err) = time_to_null(
        || {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns, "conntrack", "-L"]);
            c
        },
        a.repeat,
    )?;
    // "conntrack v1.4.7 (conntrack-tools): 1000000 flow entries have been shown."
    let shown = err
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    let buckets = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_buckets")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let state = run.kernel_state();
    drop(guard);
    run.stop()?;
    Ok(json!({
        "fill": {"source": source, "secs": fill_secs},
        "entries": entries,
        "entries_shown": shown,
        "nf_conntrack_max": max.max(cur),
        "nf_conntrack_buckets": buckets,
        "conntrack_secs": median(&times),
        "conntrack_secs_runs": times,
        "state": state,
    }))
}

pub(crate) fn run(a: &DumpArgs) -> Result<()> {
    peers::check_tools(&[Peer::Isopath, Peer::KernelConntrack])?;
    if !a.no_conntrack {
        let ok = Command::new("sh")
            .args(["-c", "command -v conntrack"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            bail!(
                "conntrack is not installed (scripts/deps.sh installs it), or pass --no-conntrack"
            );
        }
    }
    let prefix = a
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bd{}", std::process::id() % 100_000_000));
    let work = std::env::temp_dir().join(format!("isopath-bench-dump-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let lab = Lab::up(&prefix)?;
    lab.sink_on("far", "s0")?;
    lab.sink_on("far", "s1")?;
    lab.sink_on("traffic", "t0")?;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let iso = isopath_half(&lab, a, &work)?;
    // The kernel releases isopathd's sockets and programs before the router takes the veths.
    std::thread::sleep(Duration::from_millis(500));
    let ct = if a.no_conntrack {
        Value::Null
    } else {
        conntrack_half(&lab, a, &work)?
    };
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
    let ratio = |num: &Value, den: &Value| match (num.as_f64(), den.as_f64()) {
        (Some(n), Some(d)) if d > 0.0 => json!(n / d),
        _ => Value::Null,
    };
    let mut out = json!({
        "kind": "dump",
        "started_unix": started,
        "flows": a.flows,
        "dump_buf": a.dump_buf,
        "repeat": a.repeat,
        "flows_in_table": iso["table"]["count"],
        "flows_dumped": iso["flows_dumped"],
        "duplicates": iso["duplicates"],
        "secs": iso["secs"],
        "mflows_per_s": iso["mflows_per_s"],
        "daemon_rss_extra_mib": iso["daemon_rss_extra_mib"],
        "text_secs": iso["text_secs"],
        "conntrack_secs": ct["conntrack_secs"],
        "ratio_vs_conntrack": ratio(&ct["conntrack_secs"], &iso["text_secs"]),
        "ratio_binary": ratio(&ct["conntrack_secs"], &iso["secs"]),
        "worker_max_loop_gap_us": Value::Null,
        "worker_baseline_loop_gap_us": Value::Null,
        "loss_with_dump": iso["stream"]["with_dump"]["loss"],
        "loss_without_dump": iso["stream"]["without_dump"]["loss"],
        "not_measured": "worker loop gaps: the worker does not measure them; the timed dumps (secs) ran with no traffic, the stream's dumps are under isopath.stream.with_dump.dumps",
        "isopath": iso,
        "conntrack": ct,
    });
    out["goals"] = json!({
        "every_flow_once": out["flows_dumped"] == out["flows_in_table"] && out["duplicates"] == 0,
        "secs_under_1": out["secs"].as_f64().is_some_and(|s| s < 1.0),
        "rss_extra_under_64_mib": out["daemon_rss_extra_mib"].as_f64().is_some_and(|m| m < 64.0),
        "ratio_vs_conntrack_at_least_4": out["ratio_vs_conntrack"].as_f64().map(|r| r >= 4.0),
        "no_more_loss_with_dump": match (out["loss_with_dump"].as_f64(), out["loss_without_dump"].as_f64()) {
            (Some(w), Some(wo)) => json!(w <= wo.max(0.0)),
            _ => Value::Null,
        },
    });
    crate::print_json(&out)
}
