//! `isopath-bench failover`: carrier-loss failovers through isopath's bond, measured with the
//! bench's own line-rate parts.
//!
//! The lab: `t0 → up0 ⇄ bond0 {m0, m1} → s0 | s1` (far side: a Linux bridge over s0 and s1).
//! isopathd cross-connects up0 with an active-backup bond over m0 and m1 (no primary, so the
//! failovers go back and forth). The source is `gen` (XDP live frames on t0, core 0, one flow,
//! per-frame sequence numbers, paced). The receiver (`failover recv`, in the far namespace,
//! core 0 under SCHED_FIFO as the RFC 2544 latency receiver) binds AF_XDP sockets on every RX
//! queue of **both** s0 and s1 with isopath's XDP program: whichever member is active, its
//! frames are taken at the far veth's ingress, before the bridge. The bridge therefore never
//! sees them and needs nothing (no learning, no flooding back into the backup member: the
//! frames are addressed to br0's MAC and stop at s0/s1).
//!
//! The receiver records, for every sequence number, the arrival time (wall clock, ns, read once
//! per RX burst) and the interface it came in on, in an array preallocated for rate × seconds
//! (no allocation per frame). Duplicates and reordered arrivals are counted exactly, and their
//! sequence numbers logged (bounded) so that each failover gets its own counts.
//!
//! Definitions (the bonding issue's):
//! - **trigger**: the moment `ip -n FAR link set sX down` (the active member's far end)
//!   returns, wall clock;
//! - **detection**: the bond's `active_changed` event timestamp (isopathd's wall clock) minus the
//!   trigger; negative when the bond switched while `ip` was still running (the kernel delivers
//!   the carrier loss during the call);
//! - **resume**: arrival of the first frame after the trigger that is newer than every frame
//!   that arrived before it, minus the trigger;
//! - **gap**: the longest silence at the far side (time between two consecutive arrivals,
//!   either member) from the window's start up to the first arrival through the new member:
//!   the traffic gap of the failover, wherever it falls relative to the trigger; with it, how
//!   far apart the two frames bounding it were sent (close to the gap: the frames between were
//!   lost or never sent; far below it: they were held up on the way, e.g. a descheduled core);
//! - **lost**: sequence numbers of the failover's window never received. The window of a
//!   failover is the stream from `--window-ms` (50) before its trigger to as long after: every
//!   number sent in between, exact (lost frames are counted by number, not estimated); loss
//!   outside every window is reported as background loss.
//!
//! `--rates 100k,max`: `max` first searches the highest rate the bond forwards with zero loss
//! in steady state (the RFC 2544 binary search of `search.rs`, trials counted by the same
//! receiver), then runs the failovers at that rate.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    lab::{Lab, MAC_BR0, Proc, isopath_status, sibling_bin},
    report::{self, FailoverEvent, FailoverRun, FailoverSeries, Machine, Report, SizeResult},
    search::{self, DirCount, SearchParams, Trial},
    xsk::{Rx, RxSink},
};

/// Duplicate and reordered arrivals whose sequence numbers are logged (per kind); beyond that
/// the totals stay exact but the per-failover counts become lower bounds (`log_overflow`).
const EVENT_LOG: usize = 1 << 20;
/// Per-ms timeline around each trigger: from -20 ms to +30 ms.
const TIMELINE_FROM_MS: i64 = -20;
const TIMELINE_MS: usize = 50;
/// Most sequence numbers a receiver preallocates (8 bytes each).
const MAX_CAPACITY: u64 = 1 << 29;
/// Interfaces the receiver takes frames on (s0, s1).
const FAR_ENDS: [&str; 2] = ["s0", "s1"];

/// `isopath-bench failover`: runs, or the receiver they start.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct FailoverCmd {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Clone, Subcommand)]
enum Sub {
    /// The failover receiver (started by `failover` in the far namespace): AF_XDP on every
    /// queue of each --iface, per-sequence arrival times; when it stops (SIGINT or --secs) it
    /// reads --control and prints its analysis as JSON.
    Recv(RecvArgs),
}

/// A failover rate: a number of frames per second, or `max` (search it first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateSpec {
    Fixed(u64),
    Max,
}

fn parse_rate_spec(s: &str) -> Result<RateSpec, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(RateSpec::Max);
    }
    match crate::source::parse_rate(s)? {
        0 => Err("a failover rate must be above 0 (or `max`)".into()),
        r => Ok(RateSpec::Fixed(r)),
    }
}

/// Arguments of `failover` (the runs).
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// Rates to run the failovers at, in order (k/M suffixes); `max` = the highest rate the
    /// bond forwards without loss in steady state, searched first.
    #[arg(long, value_delimiter = ',', default_value = "100k", value_parser = parse_rate_spec)]
    rates: Vec<RateSpec>,
    /// Failovers per rate (alternating m0 → m1, m1 → m0).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Time from one pull to the next, ms (the pulled link comes back halfway).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    period_ms: u64,
    /// Each failover's window: the frames sent from this long before its trigger to this long
    /// after (its loss; loss elsewhere is background), ms; at most half the period.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(10..=30_000))]
    window_ms: u64,
    /// Frame size with FCS.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// `max`: highest rate tried (the first trial).
    #[arg(long, default_value = "3M", value_parser = crate::source::parse_rate)]
    max_rate: u64,
    /// `max`: search resolution (pps).
    #[arg(long, default_value = "25k", value_parser = crate::source::parse_rate)]
    resolution: u64,
    /// `max`: length of one trial.
    #[arg(long, default_value = "2", value_parser = crate::parse_secs)]
    trial_secs: Duration,
    /// `max`: most trials.
    #[arg(long, default_value_t = 8)]
    max_trials: u32,
    /// Lab prefix ([a-z0-9]{1,10}); default `fo` + this process's id.
    #[arg(long)]
    prefix: Option<String>,
    /// Directory for report.json, summary.md and failover.svg.
    #[arg(long, default_value = "bench-failover")]
    out: PathBuf,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
    /// Print the report JSON on stdout (implies --quiet).
    #[arg(long)]
    json: bool,
}

/// Arguments of `failover recv`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RecvArgs {
    /// Interfaces to receive on (at most 2; port index = order given).
    #[arg(long, required = true)]
    iface: Vec<String>,
    /// Longest run.
    #[arg(long, value_parser = crate::parse_secs)]
    secs: Duration,
    /// Sequence numbers to preallocate for (rate × seconds, with margin).
    #[arg(long)]
    capacity: u64,
    /// Read when the receiver stops: `sent N`, `window_ns N` and `trigger UNIX_NS PORT`
    /// lines (PORT: index of the interface whose frames stop).
    #[arg(long)]
    control: PathBuf,
    /// Core to pin to.
    #[arg(long)]
    core: Option<usize>,
}

pub(crate) fn main(c: &FailoverCmd) -> Result<()> {
    match &c.sub {
        Some(Sub::Recv(a)) => recv(a),
        None => run(&c.run),
    }
}

/// Wall clock in ns since the epoch: the clock of isopathd's bond events.
fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------------------------------------
// Per-sequence arrivals (the receiver's hot path) and their analysis (pure, unit-tested).

/// When (and on which port) every sequence number of one probe stream arrived.
#[derive(Debug)]
pub(crate) struct Arrivals {
    /// Per sequence number: arrival time in wall-clock ns with bit 0 replaced by the port
    /// index; 0 = not arrived.
    at: Vec<u64>,
    /// Per sequence number: its TX timestamp from the probe (low 32 bits of the source's
    /// CLOCK_MONOTONIC, ns).
    tx: Vec<u32>,
    highest: Option<u32>,
    dup_log: Vec<u32>,
    reorder_log: Vec<u32>,
    duplicates: u64,
    reordered: u64,
    beyond_capacity: u64,
    other: u64,
    per_port: [u64; 2],
}

impl Arrivals {
    /// Room for sequence numbers `0..capacity`; every page is touched here, not while frames
    /// arrive.
    pub(crate) fn new(capacity: usize) -> Self {
        let mut at = vec![0u64; capacity];
        let mut tx = vec![0u32; capacity];
        // Fault every page in now (a zeroed allocation is mapped lazily).
        for i in (0..capacity).step_by(512) {
            at[i] = std::hint::black_box(0);
            tx[i] = std::hint::black_box(0);
        }
        Self {
            at,
            tx,
            highest: None,
            dup_log: Vec::with_capacity(EVENT_LOG),
            reorder_log: Vec::with_capacity(EVENT_LOG),
            duplicates: 0,
            reordered: 0,
            beyond_capacity: 0,
            other: 0,
            per_port: [0; 2],
        }
    }

    /// Records one arrival of `seq` (sent at `ts`) on `port` (0 or 1) at wall-clock `t` ns.
    /// Never allocates.
    #[inline]
    pub(crate) fn record(&mut self, seq: u32, port: usize, t: u64, ts: u32) {
        let port = port & 1;
        let Some(slot) = self.at.get_mut(seq as usize) else {
            self.beyond_capacity += 1;
            return;
        };
        self.per_port[port] += 1;
        if *slot != 0 {
            self.duplicates += 1;
            if self.dup_log.len() < self.dup_log.capacity() {
                self.dup_log.push(seq);
            }
            return;
        }
        *slot = (t & !1).max(2) | port as u64;
        self.tx[seq as usize] = ts;
        match self.highest {
            Some(h) if seq < h => {
                self.reordered += 1;
                if self.reorder_log.len() < self.reorder_log.capacity() {
                    self.reorder_log.push(seq);
                }
            }
            _ => self.highest = Some(seq),
        }
    }
}

impl RxSink for Arrivals {
    #[inline]
    fn frame(&mut self, port: usize, now: u64, data: &[u8]) {
        match crate::wire::parse(data) {
            Some(p) if p.flow == 0 => self.record(p.seq, port, now, p.ts),
            _ => self.other += 1,
        }
    }

    fn second(&mut self, t: f64, frames: u64) {
        crate::xsk::progress(&json!({"t": t, "packets": frames, "highest": self.highest}));
    }
}

/// One trigger as the receiver is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trigger {
    pub(crate) unix_ns: u64,
    /// Port index (receiver's interface order) whose frames stop: the pulled far end.
    pub(crate) pulled: usize,
}

/// One failover as the far side saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Window {
    pub(crate) trigger_unix_ns: u64,
    /// The window's sequence numbers: `seq_first..seq_end`.
    pub(crate) seq_first: u64,
    pub(crate) seq_end: u64,
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
    pub(crate) resume_ms: Option<f64>,
    pub(crate) last_on_old_ms: Option<f64>,
    pub(crate) first_on_new_ms: Option<f64>,
    pub(crate) gap_ms: Option<f64>,
    /// TX time of the frame that ended the gap minus that of the frame before it.
    pub(crate) gap_send_ms: Option<f64>,
    /// Frames per ms from -20 ms to +30 ms around the trigger.
    pub(crate) per_ms: Vec<u32>,
}

/// The whole stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub(crate) sent: u64,
    /// Distinct sequence numbers of `0..sent` received.
    pub(crate) received: u64,
    pub(crate) lost: u64,
    /// Lost outside every failover's window.
    pub(crate) background_lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
    pub(crate) beyond_capacity: u64,
    /// Frames that were not this stream's probes (peer notifications, the far kernel's).
    pub(crate) other_frames: u64,
    pub(crate) per_port: [u64; 2],
    /// More duplicates or reorderings than the log holds: per-window counts are lower bounds.
    pub(crate) log_overflow: bool,
}

fn ms(t: u64, trig: u64) -> f64 {
    (t as i64 - trig as i64) as f64 / 1e6
}

/// Analyses the arrivals of a stream of `sent` frames around `triggers` (sorted, at least
/// `2 × half_window_ns` apart): each failover's window covers the numbers sent from
/// `half_window_ns` before its trigger to `half_window_ns` after.
pub(crate) fn analyse(
    a: &Arrivals,
    sent: u64,
    triggers: &[Trigger],
    half_window_ns: u64,
) -> (Totals, Vec<Window>) {
    let n = (sent as usize).min(a.at.len());
    let at = &a.at[..n];
    let received = at.iter().filter(|&&v| v != 0).count() as u64;
    // Boundary k: one plus the highest number that arrived before time bounds[k]. Since lost
    // frames have no arrival time, windows are cut where the stream's arrivals cross a time.
    let bounds: Vec<u64> = triggers
        .iter()
        .flat_map(|t| {
            [
                t.unix_ns.saturating_sub(half_window_ns),
                t.unix_ns,
                t.unix_ns + half_window_ns,
            ]
        })
        .collect();
    let mut first_after = vec![0u64; bounds.len()];
    for (s, &v) in at.iter().enumerate() {
        if v == 0 {
            continue;
        }
        let k = bounds.partition_point(|&b| b <= v & !1);
        if k < bounds.len() {
            first_after[k] = first_after[k].max(s as u64 + 1);
        }
    }
    for k in 1..first_after.len() {
        first_after[k] = first_after[k].max(first_after[k - 1]);
    }
    let mut windows = Vec::with_capacity(triggers.len());
    let mut lost_in_windows = 0u64;
    let mut times = Vec::new();
    for (i, t) in triggers.iter().enumerate() {
        let (lo, mid, hi) = (
            first_after[3 * i] as usize,
            first_after[3 * i + 1] as usize,
            first_after[3 * i + 2] as usize,
        );
        let trig = t.unix_ns;
        let mut w = Window {
            trigger_unix_ns: trig,
            seq_first: lo as u64,
            seq_end: hi as u64,
            per_ms: vec![0; TIMELINE_MS],
            ..Window::default()
        };
        let (mut last_old, mut first_new, mut resume) = (None::<u64>, None::<u64>, None::<u64>);
        times.clear();
        for (s, &v) in at[lo..hi].iter().enumerate() {
            if v == 0 {
                continue;
            }
            w.received += 1;
            let (tm, port) = (v & !1, (v & 1) as usize);
            times.push((tm, lo + s));
            if port == t.pulled {
                last_old = Some(last_old.map_or(tm, |x| x.max(tm)));
            } else {
                first_new = Some(first_new.map_or(tm, |x| x.min(tm)));
            }
            if lo + s >= mid && tm >= trig {
                resume = Some(resume.map_or(tm, |x| x.min(tm)));
            }
            let off = (tm as i64 - trig as i64).div_euclid(1_000_000) - TIMELINE_FROM_MS;
            if (0..TIMELINE_MS as i64).contains(&off) {
                w.per_ms[off as usize] += 1;
            }
        }
        w.lost = (hi - lo) as u64 - w.received;
        let inside = |s: &&u32| (lo..hi).contains(&(**s as usize));
        w.duplicates = a.dup_log.iter().filter(inside).count() as u64;
        w.reordered = a.reorder_log.iter().filter(inside).count() as u64;
        w.resume_ms = resume.map(|x| ms(x, trig));
        w.last_on_old_ms = last_old.map(|x| ms(x, trig));
        w.first_on_new_ms = first_new.map(|x| ms(x, trig));
        if let Some(f) = first_new {
            let from = trig.saturating_sub(half_window_ns);
            times.retain(|&(x, _)| x >= from && x <= f);
            times.sort_unstable();
            if let Some(p) = times.windows(2).max_by_key(|p| p[1].0 - p[0].0) {
                let ((t0, s0), (t1, s1)) = (p[0], p[1]);
                w.gap_ms = Some((t1 - t0) as f64 / 1e6);
                // The same two frames' TX times: about the gap when the frames between them
                // were lost (or never sent); far below it when they were held up on the way.
                w.gap_send_ms = Some(f64::from(a.tx[s1].wrapping_sub(a.tx[s0]) as i32) / 1e6);
            }
        }
        lost_in_windows += w.lost;
        windows.push(w);
    }
    let lost = n as u64 - received + (sent - n as u64);
    let totals = Totals {
        sent,
        received,
        lost,
        background_lost: lost - lost_in_windows,
        duplicates: a.duplicates,
        reordered: a.reordered,
        beyond_capacity: a.beyond_capacity,
        other_frames: a.other,
        per_port: a.per_port,
        log_overflow: a.dup_log.len() == EVENT_LOG || a.reorder_log.len() == EVENT_LOG,
    };
    (totals, windows)
}

/// What the harness tells the receiver when it stops it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Control {
    sent: Option<u64>,
    half_window_ns: u64,
    triggers: Vec<Trigger>,
}

fn parse_control(text: &str) -> Result<Control> {
    let mut c = Control {
        half_window_ns: 500_000_000,
        ..Control::default()
    };
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let num = |j: usize| -> Result<u64> {
            f.get(j)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("control line {}: {l:?}", i + 1))
        };
        match f.first().copied() {
            None => {}
            Some("sent") => c.sent = Some(num(1)?),
            Some("window_ns") => c.half_window_ns = num(1)?,
            Some("trigger") => c.triggers.push(Trigger {
                unix_ns: num(1)?,
                pulled: num(2)? as usize,
            }),
            Some(_) => bail!("control line {}: {l:?}", i + 1),
        }
    }
    c.triggers.sort_by_key(|t| t.unix_ns);
    Ok(c)
}

fn recv(a: &RecvArgs) -> Result<()> {
    if a.iface.len() > FAR_ENDS.len() {
        bail!("at most {} interfaces", FAR_ENDS.len());
    }
    if a.capacity == 0 || a.capacity > MAX_CAPACITY {
        bail!("--capacity must be 1..={MAX_CAPACITY}");
    }
    let stop = crate::bpf::stop_flag()?;
    crate::bpf::pin(a.core)?;
    let ifaces: Vec<&str> = a.iface.iter().map(String::as_str).collect();
    let mut rx = Rx::open(&ifaces)?;
    let mut arr = Arrivals::new(a.capacity as usize);
    eprintln!("ready");
    let t = rx.run(a.secs, &stop, unix_ns, &mut arr);
    let control = match std::fs::read_to_string(&a.control) {
        Ok(text) => parse_control(&text)?,
        Err(_) => Control::default(),
    };
    let sent = control
        .sent
        .unwrap_or_else(|| arr.highest.map_or(0, |h| u64::from(h) + 1));
    let (totals, windows) = analyse(&arr, sent, &control.triggers, control.half_window_ns);
    crate::print_json(&json!({
        "secs": t.secs,
        "frames": t.frames,
        "capacity": a.capacity,
        "totals": totals,
        "windows": windows,
        "ports": rx.report(),
    }))
}

// ---------------------------------------------------------------------------------------------
// The harness.

/// The bonded lab with isopathd running on it.
struct BondLab {
    // Held for its Drop: stops isopathd before the lab goes (fields drop in order).
    _daemon: Proc,
    lab: Lab,
    socket: PathBuf,
    work: PathBuf,
    bench: String,
}

impl BondLab {
    fn up(prefix: &str, work: &Path) -> Result<Self> {
        let lab = Lab::up(prefix)?;
        let socket = PathBuf::from(format!("/run/isopath/bench-{prefix}.sock"));
        // No primary: a returning member does not take over again, so the pulls alternate.
        let cfg = format!(
            "[daemon]\ncontrol_socket = \"{}\"\n[workers]\ncores = [1]\n\
             [[port]]\nname = \"up0\"\n[[port]]\nname = \"m0\"\n[[port]]\nname = \"m1\"\n\
             [[bond]]\nname = \"bond0\"\nmembers = [\"m0\", \"m1\"]\n\
             [[cross_connect]]\na = \"up0\"\nb = \"bond0\"\n",
            socket.display()
        );
        let path = work.join("isopath-bond.toml");
        std::fs::write(&path, cfg)?;
        let d = sibling_bin("isopathd")?.display().to_string();
        let mut daemon = lab.spawn(
            "app",
            "isopathd",
            &[d, "-c".into(), path.display().to_string(), "--force".into()],
        )?;
        daemon.wait_ready(Duration::from_secs(15), Some(" ready "))?;
        Ok(Self {
            _daemon: daemon,
            lab,
            socket,
            work: work.to_path_buf(),
            bench: sibling_bin("isopath-bench")?.display().to_string(),
        })
    }

    fn status(&self) -> Result<Value> {
        isopath_status(&self.socket)
    }

    /// Every counter on the way: isopathd's (`port.counter`) and the kernel's for each link of
    /// the three namespaces (`role/link.counter`), with the status document they came from.
    fn counters(&self) -> Result<(BTreeMap<String, u64>, Value)> {
        let st = self.status()?;
        let mut m = datapath_counters(&st);
        for role in ["traffic", "app", "far"] {
            kernel_counters(&self.lab, role, &mut m)?;
        }
        Ok((m, st))
    }

    /// Starts the receiver on s0 and s1 (core 0, SCHED_FIFO: it shares the core with the
    /// source, which would otherwise hold it for whole scheduler slices).
    fn receiver(&self, capacity: u64, secs: f64) -> Result<(Proc, PathBuf)> {
        let control = self.work.join("control");
        let _ = std::fs::remove_file(&control);
        let mut args: Vec<String> = ["chrt", "-f", "10", &self.bench, "failover", "recv"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for i in FAR_ENDS {
            args.extend(["--iface".into(), i.into()]);
        }
        args.extend([
            "--core".into(),
            "0".into(),
            "--secs".into(),
            format!("{secs:.1}"),
            "--capacity".into(),
            capacity.to_string(),
            "--control".into(),
            control.display().to_string(),
        ]);
        let mut p = self.lab.spawn("far", "failover recv", &args)?;
        p.wait_ready(Duration::from_secs(20), None)?;
        Ok((p, control))
    }

    /// Starts the live source on t0 (core 0): one flow, `rate` frames per second for `secs`.
    fn source(&self, size: usize, rate: u64, secs: f64) -> Result<Proc> {
        let args: Vec<String> = [
            self.bench.as_str(),
            "gen",
            "--iface",
            "t0",
            "--core",
            "0",
            "--size",
            &size.to_string(),
            "--rate",
            &rate.to_string(),
            "--dst-mac",
            MAC_BR0,
            "--secs",
            &format!("{secs:.3}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut p = self.lab.spawn("traffic", "gen", &args)?;
        p.wait_ready(Duration::from_secs(10), None)?;
        Ok(p)
    }

    /// Ends a receiver: writes its control file, stops it, returns its analysis.
    fn finish_receiver(
        &self,
        rx: Proc,
        control: &Path,
        sent: u64,
        half_window_ns: u64,
        triggers: &[Trigger],
    ) -> Result<Value> {
        let mut text = format!("sent {sent}\nwindow_ns {half_window_ns}\n");
        for t in triggers {
            let _ = writeln!(text, "trigger {} {}", t.unix_ns, t.pulled);
        }
        std::fs::write(control, text)?;
        rx.stop_json()
    }

    /// One steady trial at `rate` (no failover): frames sent vs distinct frames received.
    fn trial(&self, size: usize, rate: u64, secs: Duration) -> Result<(Trial, Value)> {
        let s = secs.as_secs_f64();
        let (c0, _) = self.counters()?;
        let (rx, control) = self.receiver(capacity(rate, s), s + 30.0)?;
        let g = self
            .source(size, rate, s)?
            .wait_json(secs + Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_millis(300)); // frames in flight
        let sent = g["sent"].as_u64().unwrap_or(0);
        let r = self.finish_receiver(rx, &control, sent, 0, &[])?;
        let received = r["totals"]["received"].as_u64().unwrap_or(0);
        let where_ = json!({"counters": delta(&c0, &self.counters()?.0), "receiver": r});
        let gsecs = g["secs"].as_f64().unwrap_or(s).max(1e-9);
        Ok((
            Trial {
                target_pps: rate,
                sent,
                received,
                offered_pps: sent as f64 / gsecs,
                received_pps: received as f64 / gsecs,
                forward: DirCount { sent, received },
                reverse: None,
            },
            where_,
        ))
    }
}

/// Sequence numbers to preallocate for `rate` over `secs`, with margin.
fn capacity(rate: u64, secs: f64) -> u64 {
    ((rate as f64 * secs * 1.1) as u64 + 65_536).min(MAX_CAPACITY)
}

/// The far end of a member (the veth peer the harness pulls) and its receiver port index.
fn far_end(member: &str) -> Result<(&'static str, usize)> {
    match member {
        "m0" => Ok((FAR_ENDS[0], 0)),
        "m1" => Ok((FAR_ENDS[1], 1)),
        m => bail!("unexpected active member {m:?}"),
    }
}

fn ip_link(ns: &str, dev: &str, state: &str) -> Result<()> {
    let st = Command::new("ip")
        .args(["-n", ns, "link", "set", dev, state])
        .status()
        .with_context(|| format!("ip -n {ns} link set {dev} {state}"))?;
    if !st.success() {
        bail!("ip -n {ns} link set {dev} {state}: {st}");
    }
    Ok(())
}

fn say(quiet: bool, text: &str) {
    if !quiet {
        eprintln!("failover: {text}");
    }
}

/// The bond's `active_changed` events: (wall-clock ns, detail).
fn bond_events(st: &Value) -> Vec<(u64, String)> {
    st["bonds"][0]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "active_changed")
        .filter_map(|e| Some((e["unix_ns"].as_u64()?, e["detail"].as_str()?.to_owned())))
        .collect()
}

/// isopathd's per-port counters (packets, drops by reason, XDP and kernel socket counters)
/// and the bond's drops, as flat `port.counter` names.
fn datapath_counters(st: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for p in st["ports"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?");
        for k in ["rx_packets", "tx_packets"] {
            m.insert(format!("{name}.{k}"), p[k].as_u64().unwrap_or(0));
        }
        for (group, prefix) in [("drops", ""), ("xdp", "xdp."), ("xsk", "xsk.")] {
            for (k, v) in p[group].as_object().into_iter().flatten() {
                m.insert(format!("{name}.{prefix}{k}"), v.as_u64().unwrap_or(0));
            }
        }
    }
    for (k, v) in st["bonds"][0]["drops"].as_object().into_iter().flatten() {
        m.insert(format!("bond0.{k}"), v.as_u64().unwrap_or(0));
    }
    m
}

/// The kernel's counters of every link in the lab's namespace `role` (packets and drops each
/// way), as `role/link.counter`.
fn kernel_counters(lab: &Lab, role: &str, m: &mut BTreeMap<String, u64>) -> Result<()> {
    let out = Command::new("ip")
        .args(["-n", &lab.ns(role), "-s", "-j", "link", "show"])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("ip -s -j link show in {}", lab.ns(role)))?;
    for l in v.as_array().into_iter().flatten() {
        let name = l["ifname"].as_str().unwrap_or("?");
        let st = if l["stats64"].is_object() {
            &l["stats64"]
        } else {
            &l["stats"]
        };
        for dir in ["rx", "tx"] {
            for k in ["packets", "dropped"] {
                if let Some(n) = st[dir][k].as_u64() {
                    m.insert(format!("{role}/{name}.{dir}_{k}"), n);
                }
            }
        }
    }
    Ok(())
}

/// The counters that moved between two snapshots, and by how much.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, &v) in after {
        let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
        if d > 0 {
            m.insert(k.clone(), json!(d));
        }
    }
    Value::Object(m)
}

/// Failovers at `rate`: steady traffic, the active member's far end pulled every period.
fn series(
    bl: &BondLab,
    a: &RunArgs,
    rate: u64,
    stop: &AtomicBool,
) -> Result<(Vec<FailoverRun>, FailoverSeries)> {
    let period = Duration::from_millis(a.period_ms);
    let warmup = period;
    let tail = Duration::from_millis(500);
    let total = warmup + period * a.runs + tail;
    let secs = total.as_secs_f64();
    let (c0, st0) = bl.counters()?;
    let (rx, control) = bl.receiver(capacity(rate, secs), secs + 60.0)?;
    let gen_proc = bl.source(a.size, rate, secs)?;
    let start = Instant::now();
    let ns_far = bl.lab.ns("far");
    let mut triggers = Vec::new();
    let mut froms = Vec::new();
    for i in 0..a.runs {
        let at = start + warmup + period * i;
        crate::bpf::sleep_until(at, stop);
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let active = bl.status()?["bonds"][0]["active"]
            .as_str()
            .context("the bond has no active member")?
            .to_owned();
        let (far, pulled) = far_end(&active)?;
        ip_link(&ns_far, far, "down")?;
        let trig = unix_ns();
        triggers.push(Trigger {
            unix_ns: trig,
            pulled,
        });
        froms.push(active.clone());
        crate::bpf::sleep_until(at + period / 2, stop);
        ip_link(&ns_far, far, "up")?;
        say(
            a.quiet,
            &format!("{rate} pps: failover {}/{} from {active}", i + 1, a.runs),
        );
    }
    let g = gen_proc.wait_json(total + Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(300)); // frames in flight
    let (c1, st) = bl.counters()?;
    let sent = g["sent"].as_u64().unwrap_or(0);
    let half = (Duration::from_millis(a.window_ms).min(period / 2)).as_nanos() as u64;
    let r = bl.finish_receiver(rx, &control, sent, half, &triggers)?;
    let windows: Vec<Window> = serde_json::from_value(r["windows"].clone())?;
    let totals: Totals = serde_json::from_value(r["totals"].clone())?;
    let events = bond_events(&st);
    let mut runs = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let trig = w.trigger_unix_ns;
        let next = triggers.get(i + 1).map_or(u64::MAX, |t| t.unix_ns);
        let from = &froms[i];
        if w.resume_ms.is_none() || w.first_on_new_ms.is_none() {
            // Its loss past the window counts as background: say so rather than hide it.
            eprintln!(
                "failover: {rate} pps #{}: no frame through the new member within {} ms of the trigger (--window-ms)",
                i + 1,
                half / 1_000_000
            );
        }
        let change = events.iter().find(|(t, d)| {
            *t + 50_000_000 > trig && *t < next && d.contains(&format!("{from} ->"))
        });
        let detection_ms = change.map(|(t, _)| ms(*t, trig));
        let to = change
            .and_then(|(_, d)| d.split("-> ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("?");
        let mut ev = vec![FailoverEvent {
            t_ms: 0.0,
            what: format!("trigger: {} down", FAR_ENDS[triggers[i].pulled]),
        }];
        if let Some(l) = w.last_on_old_ms {
            // The closest the far side sees to the carrier loss itself.
            ev.push(FailoverEvent {
                t_ms: l,
                what: "last frame through the old member".into(),
            });
        }
        if let Some(d) = detection_ms {
            ev.push(FailoverEvent {
                t_ms: d,
                what: "bond: active member changed".into(),
            });
        }
        if let Some(f) = w.first_on_new_ms {
            ev.push(FailoverEvent {
                t_ms: f,
                what: "first frame through the new member".into(),
            });
        }
        runs.push(FailoverRun {
            name: format!("{} pps #{} {from}->{to}", rate, i + 1),
            events: ev,
            timeline: w
                .per_ms
                .iter()
                .enumerate()
                .map(|(k, &n)| ((k as i64 + TIMELINE_FROM_MS) as f64, f64::from(n) * 1000.0))
                .collect(),
            outage_ms: w.gap_ms,
            gap_send_ms: w.gap_send_ms,
            lost: w.lost,
            rate_pps: rate,
            detection_ms,
            resume_ms: w.resume_ms,
            duplicates: w.duplicates,
            reordered: w.reordered,
        });
    }
    let failovers = |s: &Value| s["bonds"][0]["failovers"].as_u64().unwrap_or(0);
    let s = FailoverSeries {
        rate_pps: rate,
        failovers: a.runs,
        bond_failovers: failovers(&st) - failovers(&st0),
        sent: totals.sent,
        received: totals.received,
        lost: totals.lost,
        background_lost: totals.background_lost,
        duplicates: totals.duplicates,
        reordered: totals.reordered,
        offered_pps: g["rate_pps"].as_f64().unwrap_or(0.0),
        extra: json!({
            "beyond_capacity": totals.beyond_capacity,
            "other_frames": totals.other_frames,
            "per_port": totals.per_port,
            "log_overflow": totals.log_overflow,
            // Where the frames went, hop by hop: the kernel's link counters (t0 TX, up0 RX,
            // m0/m1 TX and drops, s0/s1 RX), isopathd's (XDP redirects, socket drops, worker
            // RX/TX, drops by reason); the receiver's sockets are in receiver_ports.
            "counters": delta(&c0, &c1),
            "receiver_ports": r["ports"],
            "source": g,
        }),
    };
    Ok((runs, s))
}

fn run(a: &RunArgs) -> Result<()> {
    let stop = crate::bpf::stop_flag()?;
    let quiet = a.quiet || a.json;
    let prefix = a
        .prefix
        .clone()
        .unwrap_or_else(|| format!("fo{}", std::process::id() % 100_000_000));
    let work = std::env::temp_dir().join(format!("isopath-failover-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = (|| -> Result<Report> {
        let bl = BondLab::up(&prefix, &work)?;
        let mut report = Report {
            schema: report::SCHEMA.into(),
            kind: "failover".into(),
            started_unix: unix_ns() / 1_000_000_000,
            machine: Machine::this(),
            versions: [("isopath-bench".into(), env!("CARGO_PKG_VERSION").into())].into(),
            config: json!({
                "rates": a.rates.iter().map(|r| match r { RateSpec::Fixed(n) => json!(n), RateSpec::Max => json!("max") }).collect::<Vec<_>>(),
                "runs": a.runs, "period_ms": a.period_ms, "size": a.size,
                "max_rate_pps": a.max_rate, "resolution_pps": a.resolution,
                "trial_secs": a.trial_secs.as_secs_f64(), "max_trials": a.max_trials,
                "lab": prefix, "source": "live, t0, core 0, 1 flow",
                "receiver": "AF_XDP on s0 and s1 (far side, before the bridge), core 0, SCHED_FIFO",
                "bond": "up0 <-> bond0 {m0, m1}, active-backup, carrier monitor, no primary",
                "trigger": "ip -n FAR link set <active member's far end> down returns (wall clock)",
                "detection": "bond active_changed event timestamp - trigger",
                "resume": "first arrival after the trigger newer than every arrival before it - trigger",
                "gap": "longest silence between consecutive arrivals from trigger - window_ms to the first arrival through the new member",
                "gap_send": "TX time of the frame ending the gap - TX time of the frame before it (close to the gap: frames lost or not sent; far below: frames delayed)",
                "window_ms": a.window_ms,
                "lost": "sequence numbers sent from window_ms before the trigger to window_ms after, never received",
            }),
            ..Report::default()
        };
        // Learning frames: a short slow stream before anything is measured.
        bl.trial(a.size, 10_000, Duration::from_millis(500))?;
        let mut search_trials = Value::Null;
        for &spec in &a.rates {
            let rate = match spec {
                RateSpec::Fixed(r) => r,
                RateSpec::Max => {
                    let p = SearchParams {
                        max_pps: a.max_rate,
                        resolution_pps: a.resolution,
                        loss_tolerance: 0.0,
                        max_trials: a.max_trials,
                    };
                    let mut err = None;
                    // Where each trial's frames went (kept with the series at the found rate).
                    let mut details = Vec::new();
                    let res = search::search(p, |rate| {
                        if err.is_some() || stop.load(Ordering::Relaxed) {
                            return Trial::failed(rate);
                        }
                        say(quiet, &format!("search: trial at {rate} pps"));
                        match bl.trial(a.size, rate, a.trial_secs) {
                            Ok((t, w)) => {
                                say(quiet, &format!("  sent {} received {}", t.sent, t.received));
                                details.push(json!({
                                    "target_pps": rate, "sent": t.sent, "received": t.received,
                                    "counters": w["counters"],
                                    "receiver_ports": w["receiver"]["ports"],
                                }));
                                t
                            }
                            Err(e) => {
                                err = Some(e);
                                Trial::failed(rate)
                            }
                        }
                    });
                    if let Some(e) = err {
                        return Err(e);
                    }
                    if stop.load(Ordering::Relaxed) {
                        bail!("interrupted");
                    }
                    let mut curve = res.trials.clone();
                    curve.sort_by(|x, y| x.offered_pps.total_cmp(&y.offered_pps));
                    let rate = res.throughput_pps;
                    report.rfc2544.push(SizeResult {
                        peer: "isopath-bond".into(),
                        size: a.size.to_string(),
                        throughput: Some(res),
                        loss_curve: curve,
                        ..SizeResult::default()
                    });
                    if rate == 0 {
                        // The report keeps the trials; the other rates still run.
                        eprintln!(
                            "failover: no trial passed (frames lost at every rate tried): no failovers at `max`; where the frames went: {}",
                            Value::Array(details)
                        );
                        continue;
                    }
                    let offered = report
                        .rfc2544
                        .last()
                        .and_then(|r| r.throughput.as_ref()?.best)
                        .map_or(0.0, |b| b.offered_pps);
                    if offered < 0.9 * rate as f64 {
                        // The source, not the bond, set the limit: say so; the failovers run
                        // at the same target and get the same offered rate.
                        eprintln!(
                            "failover: at the {rate} pps target the source offered only {offered:.0} pps and nothing was lost: the lab forwards all the source can offer"
                        );
                    }
                    say(quiet, &format!("highest rate without loss: {rate} pps"));
                    search_trials = Value::Array(details);
                    rate
                }
            };
            let (runs, mut s) = series(&bl, a, rate, &stop)?;
            if !search_trials.is_null() {
                s.extra["search_trials"] = std::mem::take(&mut search_trials);
            }
            report.failover.extend(runs);
            report.failover_series.push(s);
        }
        Ok(report)
    })();
    let _ = std::fs::remove_dir_all(&work);
    let report = result?;
    report::write_all(&report, &a.out)?;
    if a.json {
        crate::print_json(&report)?;
    } else {
        print!("{}", report::markdown(&report));
        eprintln!("report: {}", a.out.join("report.json").display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000_000_000;

    /// A stream of `n` frames, one per 10 µs from T0, through port 0 until `switch` (a time),
    /// port 1 after it; frames sent within `[lose_from, lose_to)` are lost.
    fn stream(n: u32, switch: u64, lose: (u64, u64)) -> Arrivals {
        let mut a = Arrivals::new(n as usize + 10);
        for s in 0..n {
            let t = T0 + u64::from(s) * 10_000;
            if (lose.0..lose.1).contains(&t) {
                continue;
            }
            a.record(s, usize::from(t >= switch), t + 50_000, t as u32);
        }
        a
    }

    #[test]
    fn one_failover_counted_exactly() {
        // 100 kpps for 2 s; the switch at +1 s; frames sent in [+999 ms, +1001.5 ms) lost
        // (250 frames); the trigger at +1002 ms.
        let n = 200_000;
        let trig = T0 + 1002 * MS;
        let a = stream(n, T0 + 1000 * MS, (T0 + 999 * MS, T0 + 1_001_500_000));
        let (tot, w) = analyse(
            &a,
            u64::from(n),
            &[Trigger {
                unix_ns: trig,
                pulled: 0,
            }],
            500 * MS,
        );
        assert_eq!(tot.lost, 250);
        assert_eq!(tot.background_lost, 0);
        assert_eq!((tot.duplicates, tot.reordered), (0, 0));
        assert_eq!(w.len(), 1);
        let w = &w[0];
        assert_eq!(w.lost, 250);
        assert_eq!(w.received + w.lost, w.seq_end - w.seq_first);
        // Last through the old member: sent at +998.99 ms, arrived 50 µs later.
        assert!((w.last_on_old_ms.unwrap() - (-2.96)).abs() < 1e-6, "{w:?}");
        // First through the new one: sent at +1001.5 ms.
        assert!((w.first_on_new_ms.unwrap() - (-0.45)).abs() < 1e-6, "{w:?}");
        assert!((w.gap_ms.unwrap() - 2.51).abs() < 1e-6, "{w:?}");
        // The frames around the gap were sent as far apart: the ones between were lost.
        assert!((w.gap_send_ms.unwrap() - 2.51).abs() < 1e-6, "{w:?}");
        // Resume: the first arrival at or after the trigger.
        assert!(
            w.resume_ms.unwrap() >= 0.0 && w.resume_ms.unwrap() < 0.011,
            "{w:?}"
        );
        assert_eq!(w.per_ms.len(), TIMELINE_MS);
        // 100 frames per ms away from the failover, none in the lost stretch.
        assert_eq!(w.per_ms[0], 100);
        assert_eq!(w.per_ms[(-2 - TIMELINE_FROM_MS) as usize], 0);
    }

    #[test]
    fn loss_outside_the_window_is_background() {
        // As above, plus 100 frames lost 500 ms after the trigger: with a 50 ms window they
        // are background loss, not the failover's.
        let n = 200_000;
        let trig = T0 + 1002 * MS;
        let mut a = stream(n, T0 + 1000 * MS, (T0 + 999 * MS, T0 + 1_001_500_000));
        for s in 150_200..150_300u32 {
            let i = s as usize;
            a.at[i] = 0;
        }
        let t = Trigger {
            unix_ns: trig,
            pulled: 0,
        };
        let (tot, w) = analyse(&a, u64::from(n), &[t], 50 * MS);
        assert_eq!((tot.lost, tot.background_lost, w[0].lost), (350, 100, 250));
        assert_eq!(w[0].seq_end - w[0].seq_first, 10_000);
    }

    #[test]
    fn duplicates_reordering_and_tail_loss() {
        let mut a = Arrivals::new(100);
        for s in [0, 1, 3, 2, 2, 5] {
            a.record(s, 0, T0 + u64::from(s) * MS, 0);
        }
        a.record(1000, 0, T0, 0); // beyond the capacity
        // 10 sent: 4, 6, 7, 8, 9 never arrived.
        let (tot, w) = analyse(&a, 10, &[], 500 * MS);
        assert!(w.is_empty());
        assert_eq!(
            (tot.received, tot.lost, tot.duplicates, tot.reordered),
            (5, 5, 1, 1)
        );
        assert_eq!(tot.background_lost, 5);
        assert_eq!(tot.beyond_capacity, 1);
        assert_eq!(tot.per_port, [6, 0]);
    }

    #[test]
    fn windows_split_the_stream_between_triggers() {
        // 3 s at 100 kpps, failovers at +1 s (0 -> 1) and +2 s (1 -> 0), nothing lost: the
        // windows are [+0.5, +1.5) and [+1.5, +2.5) seconds of the stream.
        let n = 300_000u32;
        let mut a = Arrivals::new(n as usize);
        for s in 0..n {
            let t = T0 + u64::from(s) * 10_000;
            let port = usize::from((T0 + 1000 * MS..T0 + 2000 * MS).contains(&t));
            a.record(s, port, t, t as u32);
        }
        let trig = [
            Trigger {
                unix_ns: T0 + 1000 * MS,
                pulled: 0,
            },
            Trigger {
                unix_ns: T0 + 2000 * MS,
                pulled: 1,
            },
        ];
        let (tot, w) = analyse(&a, u64::from(n), &trig, 500 * MS);
        assert_eq!(tot.lost, 0);
        assert_eq!((w[0].seq_first, w[0].seq_end), (50_000, 150_000));
        assert_eq!((w[1].seq_first, w[1].seq_end), (150_000, 250_000));
        assert!(w.iter().all(|w| w.lost == 0 && w.gap_ms == Some(0.01)));
        assert_eq!(w[1].first_on_new_ms, Some(0.0));
    }

    #[test]
    fn control_file() {
        let c = parse_control("sent 5\nwindow_ns 7\ntrigger 30 1\ntrigger 20 0\n").unwrap();
        assert_eq!(c.sent, Some(5));
        assert_eq!(c.half_window_ns, 7);
        assert_eq!(
            c.triggers,
            [
                Trigger {
                    unix_ns: 20,
                    pulled: 0
                },
                Trigger {
                    unix_ns: 30,
                    pulled: 1
                }
            ]
        );
        assert!(parse_control("trigger x 1").is_err());
        assert!(parse_control("bogus").is_err());
    }

    #[test]
    fn rate_specs() {
        assert_eq!(parse_rate_spec("max"), Ok(RateSpec::Max));
        assert_eq!(parse_rate_spec("100k"), Ok(RateSpec::Fixed(100_000)));
        assert!(parse_rate_spec("0").is_err());
        assert!(parse_rate_spec("x").is_err());
    }
}
