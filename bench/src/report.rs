//! The report of a run: one JSON document (schema [`SCHEMA`]), rendered as a Markdown summary
//! and SVG plots. `isopath-bench report FILE` renders a stored document again.
//!
//! # Schema `isopath-bench.report.v1`
//! - `schema`, `kind` (`compare` | `rfc2544`), `started_unix`, `machine` (hostname, kernel,
//!   cpus, cpu model), `versions` (tool → version), `config` (the run's arguments, free form);
//! - `peers`: per peer, its runs (`round`, `offered_pps`, `arrived_pps`, `secs`,
//!   `cpu_busy_pct` per core, `directions` of a both-ways run, `extra`), medians, and where
//!   arrivals were counted;
//! - `ratios`: named quotients of two peers' median rates;
//! - `rfc2544`: per peer and frame size, the throughput search (every trial: target, sent,
//!   received, offered and arrival rates), the loss-versus-offered-load curve, latency at a
//!   fraction of the throughput (HDR-style summary and buckets), back-to-back bursts;
//! - `failover`: failover runs of the bonding issue (`isopath-bench failover`): per failover
//!   its name, events `{t_ms, what}` relative to the trigger, a rate timeline `[t_ms, pps]`,
//!   `outage_ms` (the traffic gap), `lost`, and `rate_pps`, `detection_ms`, `resume_ms`,
//!   `duplicates`, `reordered`; `failover_series`: per rate, the stream's exact totals.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::{
    hist::HistogramDump,
    search::{SearchResult, Trial},
    track::FlowStats,
};

pub(crate) const SCHEMA: &str = "isopath-bench.report.v1";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) schema: String,
    pub(crate) kind: String,
    pub(crate) started_unix: u64,
    pub(crate) machine: Machine,
    pub(crate) versions: BTreeMap<String, String>,
    pub(crate) config: serde_json::Value,
    #[serde(default)]
    pub(crate) peers: Vec<PeerResult>,
    #[serde(default)]
    pub(crate) ratios: Vec<Ratio>,
    #[serde(default)]
    pub(crate) rfc2544: Vec<SizeResult>,
    #[serde(default)]
    pub(crate) failover: Vec<FailoverRun>,
    /// Per rate of `isopath-bench failover`: the whole stream's exact counts.
    #[serde(default)]
    pub(crate) failover_series: Vec<FailoverSeries>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) hostname: String,
    pub(crate) kernel: String,
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
}

impl Machine {
    pub(crate) fn this() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let cpuinfo = read("/proc/cpuinfo");
        Self {
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .unwrap_or("")
                .trim()
                .to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RunResult {
    pub(crate) round: u32,
    pub(crate) offered_pps: f64,
    pub(crate) arrived_pps: f64,
    pub(crate) secs: f64,
    pub(crate) cpu_busy_pct: Vec<f64>,
    /// Both-ways runs: each direction's source and arrivals (`offered_pps` and `arrived_pps`
    /// above are their sums); empty for one-way runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) directions: Vec<DirectionResult>,
    #[serde(default)]
    pub(crate) extra: serde_json::Value,
}

/// One direction of a both-ways run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DirectionResult {
    /// `t0->far` or `far->t0`.
    pub(crate) direction: String,
    pub(crate) offered_pps: f64,
    pub(crate) arrived_pps: f64,
    /// Frames the direction's source sent over its whole run (warm-up included).
    #[serde(default)]
    pub(crate) sent: u64,
    /// Frames of that direction that arrived from the source's start until after it stopped.
    #[serde(default)]
    pub(crate) arrived: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PeerResult {
    pub(crate) peer: String,
    pub(crate) description: String,
    pub(crate) ceiling: bool,
    pub(crate) counted_at: String,
    pub(crate) frame_size: String,
    pub(crate) runs: Vec<RunResult>,
    pub(crate) median_pps: f64,
    pub(crate) min_pps: f64,
    pub(crate) max_pps: f64,
    pub(crate) median_offered_pps: f64,
}

impl PeerResult {
    pub(crate) fn finish(&mut self) {
        let a: Vec<f64> = self.runs.iter().map(|r| r.arrived_pps).collect();
        let o: Vec<f64> = self.runs.iter().map(|r| r.offered_pps).collect();
        self.median_pps = median(&a);
        self.median_offered_pps = median(&o);
        self.min_pps = a.iter().copied().fold(f64::INFINITY, f64::min);
        self.max_pps = a.iter().copied().fold(0.0, f64::max);
        if a.is_empty() {
            self.min_pps = 0.0;
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Ratio {
    pub(crate) name: String,
    pub(crate) value: f64,
    /// The target the issue sets, if any (the ratio passes when `value >= target`).
    pub(crate) target: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LatencyResult {
    pub(crate) rate_pps: u64,
    pub(crate) fraction_of_throughput: f64,
    pub(crate) received: u64,
    pub(crate) flows: FlowStats,
    pub(crate) histogram: HistogramDump,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct BackToBack {
    /// Longest burst (frames at the source's full rate) that arrived without loss.
    pub(crate) max_burst: u64,
    /// `[burst, sent, received]` per trial.
    pub(crate) trials: Vec<(u64, u64, u64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SizeResult {
    pub(crate) peer: String,
    pub(crate) size: String,
    pub(crate) throughput: Option<SearchResult>,
    /// Trials sorted by offered load: the loss-versus-load curve.
    pub(crate) loss_curve: Vec<Trial>,
    pub(crate) latency: Option<LatencyResult>,
    pub(crate) back_to_back: Option<BackToBack>,
    pub(crate) cpu_busy_pct: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FailoverEvent {
    pub(crate) t_ms: f64,
    pub(crate) what: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FailoverRun {
    pub(crate) name: String,
    pub(crate) events: Vec<FailoverEvent>,
    pub(crate) timeline: Vec<(f64, f64)>,
    /// The traffic gap: the longest silence at the far side before the first frame through the
    /// new member (`isopath-failover` documents: their resume time).
    pub(crate) outage_ms: Option<f64>,
    pub(crate) lost: u64,
    #[serde(default)]
    pub(crate) rate_pps: u64,
    /// The bond's event time minus the trigger (`ip link set ... down` returned).
    #[serde(default)]
    pub(crate) detection_ms: Option<f64>,
    /// First arrival after the trigger newer than every arrival before it, minus the trigger.
    #[serde(default)]
    pub(crate) resume_ms: Option<f64>,
    /// TX time of the frame that ended the gap minus that of the frame before it.
    #[serde(default)]
    pub(crate) gap_send_ms: Option<f64>,
    #[serde(default)]
    pub(crate) duplicates: u64,
    #[serde(default)]
    pub(crate) reordered: u64,
}

/// One rate of `isopath-bench failover`: the stream's exact counts (every sequence number).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FailoverSeries {
    pub(crate) rate_pps: u64,
    /// Failovers triggered, and those the bond counted.
    pub(crate) failovers: u32,
    pub(crate) bond_failovers: u64,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) lost: u64,
    /// Lost outside every failover's window.
    pub(crate) background_lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
    pub(crate) offered_pps: f64,
    pub(crate) extra: serde_json::Value,
}

pub(crate) fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn mpps(v: f64) -> String {
    format!("{:.3}", v / 1e6)
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

/// The Markdown summary.
pub(crate) fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# isopath-bench {} report\n", r.kind);
    let _ = writeln!(
        m,
        "Machine: {} ({} CPUs, {}), kernel {}. Versions: {}.\n",
        r.machine.hostname,
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.kernel,
        r.versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !r.peers.is_empty() {
        let _ = writeln!(
            m,
            "| peer | frame | counted at | median Mpps | min | max | offered Mpps | runs | CPU % per core (median run) |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|");
        for p in &r.peers {
            let cpu = p
                .runs
                .iter()
                .min_by(|a, b| {
                    (a.arrived_pps - p.median_pps)
                        .abs()
                        .total_cmp(&(b.arrived_pps - p.median_pps).abs())
                })
                .map(|x| {
                    x.cpu_busy_pct
                        .iter()
                        .map(|c| format!("{c:.0}"))
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_default();
            let _ = writeln!(
                m,
                "| {}{} | {} | {} | **{}** | {} | {} | {} | {} | {} |",
                p.peer,
                if p.ceiling { " (ceiling)" } else { "" },
                p.frame_size,
                p.counted_at,
                mpps(p.median_pps),
                mpps(p.min_pps),
                mpps(p.max_pps),
                mpps(p.median_offered_pps),
                p.runs
                    .iter()
                    .map(|x| mpps(x.arrived_pps))
                    .collect::<Vec<_>>()
                    .join(" "),
                cpu
            );
        }
        let _ = writeln!(m);
        directions_table(&mut m, r);
    }
    if !r.ratios.is_empty() {
        let _ = writeln!(m, "| ratio | value | target | |");
        let _ = writeln!(m, "|---|---|---|---|");
        for x in &r.ratios {
            let (t, ok) = match x.target {
                Some(t) => (
                    format!("≥ {t:.2}"),
                    if x.value >= t { "met" } else { "**not met**" },
                ),
                None => (String::new(), ""),
            };
            let _ = writeln!(m, "| {} | {:.3} | {t} | {ok} |", x.name, x.value);
        }
        let _ = writeln!(m);
    }
    if !r.rfc2544.is_empty() {
        if r.config["both_ways"] == true {
            let _ = writeln!(
                m,
                "Both ways: rates are per direction (each source sends at the rate shown); every trial counts the frames of both directions.\n"
            );
        }
        let _ = writeln!(
            m,
            "| peer | frame | zero-loss throughput Mpps | Mbit/s (L1) | trials | latency rate Mpps | p50 µs | p99 µs | p99.9 µs | max µs | lost / reordered / dup | back-to-back frames |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for s in &r.rfc2544 {
            let tp = s.throughput.as_ref().map_or(0, |t| t.throughput_pps);
            let size: f64 = s
                .size
                .parse::<crate::wire::FrameSize>()
                .map_or(64.0, |f| f.mean());
            let l1 = tp as f64 * (size + 20.0) * 8.0 / 1e6;
            let (lr, p50, p99, p999, max, lrd) = match &s.latency {
                Some(l) => {
                    let h = &l.histogram.summary;
                    (
                        mpps(l.rate_pps as f64),
                        us(h.p50_ns),
                        us(h.p99_ns),
                        us(h.p999_ns),
                        us(h.max_ns),
                        format!(
                            "{} / {} / {}",
                            l.flows.lost, l.flows.reordered, l.flows.duplicates
                        ),
                    )
                }
                None => Default::default(),
            };
            let _ = writeln!(
                m,
                "| {} | {} | **{}** | {:.0} | {} | {lr} | {p50} | {p99} | {p999} | {max} | {lrd} | {} |",
                s.peer,
                s.size,
                mpps(tp as f64),
                l1,
                s.throughput.as_ref().map_or(0, |t| t.trials.len()),
                s.back_to_back
                    .as_ref()
                    .map_or(String::new(), |b| b.max_burst.to_string()),
            );
        }
        let _ = writeln!(m);
    }
    if !r.failover_series.is_empty() {
        let _ = writeln!(
            m,
            "| failover rate (pps): target (offered) | failovers (bond) | detection ms median / worst | resume ms median / worst | gap ms median / worst | lost median / worst (as time at the rate) | background lost | duplicates | reordered |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|");
        for s in &r.failover_series {
            let runs: Vec<&FailoverRun> = r
                .failover
                .iter()
                .filter(|f| f.rate_pps == s.rate_pps)
                .collect();
            // Lost frames also as the time they cover at the offered rate: a stall of the
            // receiver does not change it.
            let lost_stat = |v: Vec<f64>, rate: u64| {
                if v.is_empty() || rate == 0 {
                    return "-".to_string();
                }
                let worst = v.iter().copied().fold(f64::MIN, f64::max);
                let t = |n: f64| n * 1e3 / rate as f64;
                let med = median(&v);
                format!("{med:.0} / {worst:.0} ({:.2} / {:.2} ms)", t(med), t(worst))
            };
            let stat = |v: Vec<f64>| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    let worst = v.iter().copied().fold(f64::MIN, f64::max);
                    format!("{:.3} / {worst:.3}", median(&v))
                }
            };
            let _ = writeln!(
                m,
                "| {} ({:.0}) | {} ({}) | {} | {} | {} | {} | {} | {} | {} |",
                s.rate_pps,
                s.offered_pps,
                s.failovers,
                s.bond_failovers,
                stat(runs.iter().filter_map(|f| f.detection_ms).collect()),
                stat(runs.iter().filter_map(|f| f.resume_ms).collect()),
                stat(runs.iter().filter_map(|f| f.outage_ms).collect()),
                lost_stat(runs.iter().map(|f| f.lost as f64).collect(), s.rate_pps),
                s.background_lost,
                s.duplicates,
                s.reordered,
            );
        }
        let _ = writeln!(m);
    }
    if !r.failover.is_empty() {
        let _ = writeln!(
            m,
            "| failover run | detection ms | resume ms | gap ms | gap's frames sent apart, ms | lost | duplicates | reordered |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|---|");
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
        for f in &r.failover {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                f.name,
                opt(f.detection_ms),
                opt(f.resume_ms),
                opt(f.outage_ms),
                opt(f.gap_send_ms),
                f.lost,
                f.duplicates,
                f.reordered
            );
        }
        let _ = writeln!(m);
    }
    m
}

/// Both-ways runs: each direction's median and the sum, per peer.
fn directions_table(m: &mut String, r: &Report) {
    if r.peers
        .iter()
        .all(|p| p.runs.iter().all(|x| x.directions.is_empty()))
    {
        return;
    }
    let _ = writeln!(
        m,
        "| peer | direction | median Mpps | min | max | offered Mpps (median) |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|");
    for p in &r.peers {
        let mut names: Vec<&str> = Vec::new();
        for x in p.runs.iter().flat_map(|x| &x.directions) {
            if !names.contains(&x.direction.as_str()) {
                names.push(&x.direction);
            }
        }
        for name in names {
            let pick = |f: fn(&DirectionResult) -> f64| -> Vec<f64> {
                p.runs
                    .iter()
                    .flat_map(|x| &x.directions)
                    .filter(|x| x.direction == name)
                    .map(f)
                    .collect()
            };
            let a = pick(|x| x.arrived_pps);
            let _ = writeln!(
                m,
                "| {} | {name} | {} | {} | {} | {} |",
                p.peer,
                mpps(median(&a)),
                mpps(a.iter().copied().fold(f64::INFINITY, f64::min)),
                mpps(a.iter().copied().fold(0.0, f64::max)),
                mpps(median(&pick(|x| x.offered_pps))),
            );
        }
        let _ = writeln!(
            m,
            "| {} | sum | **{}** | {} | {} | {} |",
            p.peer,
            mpps(p.median_pps),
            mpps(p.min_pps),
            mpps(p.max_pps),
            mpps(p.median_offered_pps)
        );
    }
    let _ = writeln!(m);
}

// ---------------------------------------------------------------------------------------------
// SVG plots (hand-written: a few lines and bars need no plotting crate).

const W: f64 = 720.0;
const H: f64 = 420.0;
const L: f64 = 70.0;
const R: f64 = 170.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn frame(title: &str, xl: &str, yl: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>
<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>
"#,
        (L + W - R) / 2.0,
        esc(title),
        (L + W - R) / 2.0,
        H - 12.0,
        esc(xl),
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        esc(yl),
        H - B,
        W - R,
        H - B,
        H - B
    )
}

fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..=n)
        .map(|i| lo + (hi - lo) * i as f64 / n as f64)
        .collect()
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A line chart; `logx` plots x on a log10 scale.
pub(crate) fn svg_lines(
    title: &str,
    xl: &str,
    yl: &str,
    series: &[(String, Vec<(f64, f64)>)],
    logx: bool,
) -> String {
    let tx = |x: f64| if logx { x.max(1e-9).log10() } else { x };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|&(x, y)| (tx(x), y)))
        .collect();
    let (mut x0, mut x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.0), a.1.max(p.0))
    });
    let y1 = pts.iter().fold(0.0f64, |a, p| a.max(p.1)) * 1.1;
    let y1 = if y1 > 0.0 { y1 } else { 1.0 };
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let px = |x: f64| L + (tx(x) - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - y / y1 * (H - T - B);
    let mut s = frame(title, xl, yl);
    for v in ticks(0.0, y1, 5) {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(v),
            W - R,
            L - 4.0,
            py(v) + 4.0,
            fmt_tick(v)
        );
    }
    for v in ticks(x0, x1, 5) {
        let label = if logx {
            fmt_tick(10f64.powf(v))
        } else {
            fmt_tick(v)
        };
        let x = L + (v - x0) / (x1 - x0) * (W - L - R);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            H - B + 16.0
        );
    }
    for (i, (name, p)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in p.iter().take(200) {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{c}"/>"#,
                px(x),
                py(y)
            );
        }
        let ly = T + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="4" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            W - R + 12.0,
            ly - 4.0,
            W - R + 28.0,
            ly + 2.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A bar chart with one bar per `(label, value)`.
pub(crate) fn svg_bars(title: &str, yl: &str, bars: &[(String, f64)]) -> String {
    let y1 = bars.iter().fold(0.0f64, |a, b| a.max(b.1)) * 1.15;
    let y1 = if y1 > 0.0 { y1 } else { 1.0 };
    let py = |y: f64| H - B - y / y1 * (H - T - B);
    let mut s = frame(title, "", yl);
    for v in ticks(0.0, y1, 5) {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(v),
            W - R,
            L - 4.0,
            py(v) + 4.0,
            fmt_tick(v)
        );
    }
    let slot = (W - L - R) / bars.len().max(1) as f64;
    for (i, (name, v)) in bars.iter().enumerate() {
        let x = L + slot * i as f64 + slot * 0.15;
        let c = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}"/>"#,
            py(*v),
            slot * 0.7,
            H - B - py(*v)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + slot * 0.35,
            py(*v) - 4.0,
            fmt_tick(*v)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10">{}</text>"#,
            x + slot * 0.35,
            H - B + 14.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The plots a report has, as `(file name, svg)`.
pub(crate) fn plots(r: &Report) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !r.peers.is_empty() {
        let bars: Vec<(String, f64)> = r
            .peers
            .iter()
            .map(|p| (format!("{} {}", p.peer, p.frame_size), p.median_pps / 1e6))
            .collect();
        out.push((
            "peers.svg".into(),
            svg_bars("Median rate per peer (arrivals)", "Mpps", &bars),
        ));
    }
    if !r.rfc2544.is_empty() {
        let mut by_peer: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for s in &r.rfc2544 {
            if let (Ok(crate::wire::FrameSize::Fixed(n)), Some(t)) =
                (s.size.parse::<crate::wire::FrameSize>(), &s.throughput)
            {
                by_peer
                    .entry(&s.peer)
                    .or_default()
                    .push((n as f64, t.throughput_pps as f64 / 1e6));
            }
        }
        let series: Vec<(String, Vec<(f64, f64)>)> = by_peer
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        out.push((
            "throughput.svg".into(),
            svg_lines(
                "Zero-loss throughput vs frame size",
                "frame size (bytes)",
                "Mpps",
                &series,
                false,
            ),
        ));
        let cdf: Vec<(String, Vec<(f64, f64)>)> = r
            .rfc2544
            .iter()
            .filter_map(|s| {
                s.latency.as_ref().map(|l| {
                    (
                        format!("{} {}", s.peer, s.size),
                        l.histogram
                            .cdf()
                            .into_iter()
                            .map(|(x, y)| (x / 1e3, y))
                            .collect(),
                    )
                })
            })
            .collect();
        if !cdf.is_empty() {
            out.push((
                "latency-cdf.svg".into(),
                svg_lines("Latency CDF", "latency (µs, log)", "fraction", &cdf, true),
            ));
        }
        let loss: Vec<(String, Vec<(f64, f64)>)> = r
            .rfc2544
            .iter()
            .map(|s| {
                (
                    format!("{} {}", s.peer, s.size),
                    s.loss_curve
                        .iter()
                        .map(|t| (t.offered_pps / 1e6, 100.0 * t.loss()))
                        .collect(),
                )
            })
            .collect();
        out.push((
            "loss-vs-load.svg".into(),
            svg_lines(
                "Loss vs offered load",
                "offered (Mpps)",
                "loss %",
                &loss,
                false,
            ),
        ));
    }
    if !r.failover.is_empty() {
        let series = failover_series_plot(&r.failover);
        out.push((
            "failover.svg".into(),
            svg_lines("Failover timeline", "time (ms)", "Mpps", &series, false),
        ));
    }
    out
}

/// The failover timeline's lines: per rate, the median of the runs' rates in each ms and the
/// run with the longest gap (twenty overlaid runs would hide both).
fn failover_series_plot(runs: &[FailoverRun]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut rates: Vec<u64> = runs.iter().map(|f| f.rate_pps).collect();
    rates.dedup();
    let mut out = Vec::new();
    for rate in rates {
        let of: Vec<&FailoverRun> = runs.iter().filter(|f| f.rate_pps == rate).collect();
        let label = if rate > 0 {
            format!("{} kpps", rate as f64 / 1e3)
        } else {
            "runs".into()
        };
        let bins = of.iter().map(|f| f.timeline.len()).min().unwrap_or(0);
        let med = (0..bins)
            .map(|i| {
                let v: Vec<f64> = of.iter().map(|f| f.timeline[i].1).collect();
                (of[0].timeline[i].0, median(&v) / 1e6)
            })
            .collect();
        out.push((format!("{label}: median of {}", of.len()), med));
        if let Some(w) = of.iter().max_by(|a, b| {
            a.outage_ms
                .unwrap_or(0.0)
                .total_cmp(&b.outage_ms.unwrap_or(0.0))
        }) {
            out.push((
                format!(
                    "{label}: worst, {}",
                    w.name.split_once("pps ").map_or(w.name.as_str(), |x| x.1)
                ),
                w.timeline.iter().map(|&(t, p)| (t, p / 1e6)).collect(),
            ));
        }
    }
    out
}

/// Writes `report.json`, `summary.md` and the plots into `dir`.
pub(crate) fn write_all(r: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(dir.join("summary.md"), markdown(r))?;
    for (name, svg) in plots(r) {
        std::fs::write(dir.join(name), svg)?;
    }
    Ok(())
}

/// Converts the document `isopath-failover run` writes (`"kind": "failover"`) into a report
/// whose `failover` runs the summary and plots render: one run per failover, its trigger and
/// the bond's event on the time axis, datagrams per ms around it, the traffic gap and the loss.
pub(crate) fn from_failover(doc: &serde_json::Value) -> Result<Report> {
    let runs = doc["runs"]
        .as_array()
        .context("a failover document has runs")?;
    let failover = runs
        .iter()
        .map(|r| {
            let mut events = vec![FailoverEvent {
                t_ms: 0.0,
                what: "trigger (link down)".into(),
            }];
            if let Some(d) = r["detection_ms"].as_f64() {
                events.push(FailoverEvent {
                    t_ms: d,
                    what: "bond: active member changed".into(),
                });
            }
            let timeline = r["per_ms_from_minus_20"]
                .as_array()
                .map(|bins| {
                    bins.iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64 - 20.0, v.as_f64().unwrap_or(0.0) * 1000.0))
                        .collect()
                })
                .unwrap_or_default();
            FailoverRun {
                name: format!(
                    "run {} from {}",
                    r["run"],
                    r["from"].as_str().unwrap_or("?")
                ),
                events,
                timeline,
                outage_ms: r["resume_ms"].as_f64(),
                lost: r["lost"].as_u64().unwrap_or(0),
                rate_pps: doc["summary"]["rate_pps"].as_u64().unwrap_or(0),
                detection_ms: r["detection_ms"].as_f64(),
                resume_ms: r["resume_ms"].as_f64(),
                ..FailoverRun::default()
            }
        })
        .collect();
    Ok(Report {
        schema: SCHEMA.into(),
        kind: "failover".into(),
        machine: Machine::this(),
        config: doc["config"].clone(),
        failover,
        ..Report::default()
    })
}

pub(crate) fn load(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if doc["kind"] == "failover" && doc.get("schema").is_none() {
        return from_failover(&doc).with_context(|| format!("{}", path.display()));
    }
    let r: Report =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if r.schema != SCHEMA {
        anyhow::bail!(
            "{}: schema {:?}, expected {SCHEMA:?}",
            path.display(),
            r.schema
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../tests/fixtures/report.json");

    #[test]
    fn failover_documents_render_as_failover_runs() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../results/failover-100kpps.json")).unwrap();
        let r = from_failover(&doc).unwrap();
        assert_eq!(r.failover.len(), 20);
        assert!(
            r.failover
                .iter()
                .all(|f| f.lost == 0 && f.outage_ms.is_some_and(|o| o < 1.0))
        );
        assert_eq!(r.failover[0].timeline.len(), 50);
        let md = markdown(&r);
        assert!(md.contains("| failover run |"), "{md}");
        assert!(
            plots(&r)
                .iter()
                .any(|(name, svg)| name == "failover.svg" && svg.contains("<svg"))
        );
    }

    #[test]
    fn fixture_renders() {
        let r: Report = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(r.schema, SCHEMA);
        let md = markdown(&r);
        assert!(md.contains("| isopath | 64 |"), "{md}");
        assert!(md.contains("isopath/xsk-fwd"), "{md}");
        assert!(md.contains("| isopath | 64 | **"), "{md}");
        let plots = plots(&r);
        let names: Vec<&str> = plots.iter().map(|p| p.0.as_str()).collect();
        for want in [
            "peers.svg",
            "throughput.svg",
            "latency-cdf.svg",
            "loss-vs-load.svg",
            "failover.svg",
        ] {
            assert!(names.contains(&want), "{names:?}");
        }
        for (_, svg) in &plots {
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
        // Round trip through JSON keeps everything.
        let again: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(markdown(&again), md);
    }

    #[test]
    fn both_ways_runs_show_each_direction_and_the_sum() {
        let run = |round, f: f64, b: f64| RunResult {
            round,
            offered_pps: 2e6,
            arrived_pps: f + b,
            directions: vec![
                DirectionResult {
                    direction: "t0->far".into(),
                    offered_pps: 1e6,
                    arrived_pps: f,
                    ..DirectionResult::default()
                },
                DirectionResult {
                    direction: "far->t0".into(),
                    offered_pps: 1e6,
                    arrived_pps: b,
                    ..DirectionResult::default()
                },
            ],
            ..RunResult::default()
        };
        let mut p = PeerResult {
            peer: "isopath".into(),
            runs: vec![run(1, 0.9e6, 0.8e6), run(2, 0.7e6, 0.6e6)],
            ..PeerResult::default()
        };
        p.finish();
        let r = Report {
            peers: vec![p],
            ..Report::default()
        };
        let md = markdown(&r);
        assert!(
            md.contains("| isopath | t0->far | 0.800 | 0.700 | 0.900 | 1.000 |"),
            "{md}"
        );
        assert!(
            md.contains("| isopath | far->t0 | 0.700 | 0.600 | 0.800 | 1.000 |"),
            "{md}"
        );
        assert!(
            md.contains("| isopath | sum | **1.500** | 1.300 | 1.700 | 2.000 |"),
            "{md}"
        );
        let again: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(markdown(&again), md);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
