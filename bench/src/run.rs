//! The runs: `compare` (every peer and ceiling on the same lab path, alternating A B A B) and
//! `rfc2544` (throughput search, loss curve, latency, back-to-back per frame size), each
//! building its own lab and writing a report.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::{
    lab::{CpuSample, Lab, Proc, sibling_bin},
    peers::{self, Peer},
    report::{
        self, BackToBack, LatencyResult, Machine, PeerResult, Ratio, Report, RunResult, SizeResult,
    },
    search::{self, SearchParams, Trial},
    wire::FrameSize,
};

/// Options every run shares.
#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// Lab prefix ([a-z0-9]{1,10}); default `bn` + this process's id.
    #[arg(long)]
    prefix: Option<String>,
    /// Directory for report.json, summary.md and the SVG plots.
    #[arg(long, default_value = "bench-report")]
    out: PathBuf,
    /// No live display.
    #[arg(long, short)]
    quiet: bool,
    /// Print the report JSON on stdout (implies --quiet).
    #[arg(long)]
    json: bool,
    /// Flows (UDP source ports).
    #[arg(long, default_value_t = 1)]
    flows: u16,
    /// Seconds of traffic before counting starts.
    #[arg(long, default_value = "2", value_parser = crate::parse_secs)]
    warmup: Duration,
}

/// Arguments of `compare`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CompareArgs {
    /// Peers, in the order they alternate within a round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "isopath,testpmd,xsk-fwd,kernel-router,kernel-bridge,xdp-drop,isopath-rxdrop,xsk-drop"
    )]
    peers: Vec<Peer>,
    /// Rounds (each runs every peer once).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds counted per run.
    #[arg(long, default_value = "10", value_parser = crate::parse_secs)]
    secs: Duration,
    /// Frame size (with FCS).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Source rate (k/M suffixes); 0 = the live source's full speed.
    #[arg(long, default_value = "0", value_parser = crate::source::parse_rate)]
    rate: u64,
    #[command(flatten)]
    common: Common,
}

/// Arguments of `rfc2544`.
#[derive(Debug, Clone, Args)]
pub(crate) struct Rfc2544Args {
    /// Forwarding peers, alternating per frame size.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "isopath")]
    peers: Vec<Peer>,
    /// Frame sizes with FCS.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64,128,256,512,1024,1280,1518"
    )]
    sizes: Vec<usize>,
    /// Length of one trial.
    #[arg(long, default_value = "2", value_parser = crate::parse_secs)]
    trial_secs: Duration,
    /// Loss fraction still counted as a pass (0 = zero loss).
    #[arg(long, default_value_t = 0.0)]
    loss_tolerance: f64,
    /// Highest rate tried (k/M suffixes).
    #[arg(long, default_value = "2M", value_parser = crate::source::parse_rate)]
    max_rate: u64,
    /// Search resolution (pps).
    #[arg(long, default_value = "10k", value_parser = crate::source::parse_rate)]
    resolution: u64,
    /// Most trials per search.
    #[arg(long, default_value_t = 10)]
    max_trials: u32,
    /// Latency is measured at this fraction of the throughput (0 = skip).
    #[arg(long, default_value_t = 0.5)]
    latency_fraction: f64,
    /// Length of the latency run.
    #[arg(long, default_value = "5", value_parser = crate::parse_secs)]
    latency_secs: Duration,
    /// Longest back-to-back burst tried (0 = skip the back-to-back test).
    #[arg(long, default_value_t = 0)]
    b2b_max: u64,
    /// IPv6 frames.
    #[arg(long)]
    ipv6: bool,
    /// 802.1Q VLAN id.
    #[arg(long)]
    vlan: Option<u16>,
    #[command(flatten)]
    common: Common,
}

/// The live display on stderr: one rewritten line on a terminal, plain lines otherwise.
struct Display {
    quiet: bool,
    tty: bool,
    steps: usize,
    step: usize,
}

impl Display {
    fn new(quiet: bool, steps: usize) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            steps,
            step: 0,
        }
    }

    fn bar(&self) -> String {
        let w = 20;
        let done = (self.step * w) / self.steps.max(1);
        format!(
            "[{}{}] {}/{}",
            "#".repeat(done),
            ".".repeat(w - done),
            self.step,
            self.steps
        )
    }

    fn status(&self, text: &str) {
        if self.quiet {
            return;
        }
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{} {text}", self.bar());
        } else {
            let _ = writeln!(e, "{} {text}", self.bar());
        }
        let _ = e.flush();
    }

    fn done_step(&mut self, text: &str) {
        self.step += 1;
        if self.quiet {
            return;
        }
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = writeln!(e, "\r\x1b[2K{} {text}", self.bar());
        } else {
            let _ = writeln!(e, "{} {text}", self.bar());
        }
    }
}

fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("isopath-bench".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(t) = peers::testpmd_version() {
        v.insert("dpdk-testpmd".into(), t);
    }
    if let Ok(o) = std::process::Command::new("nft").arg("--version").output() {
        v.insert(
            "nft".into(),
            String::from_utf8_lossy(&o.stdout).trim().into(),
        );
    }
    v
}

fn new_report(kind: &str, config: Value) -> Report {
    Report {
        schema: report::SCHEMA.into(),
        kind: kind.into(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: Machine::this(),
        versions: versions(),
        config,
        ..Report::default()
    }
}

fn finish(r: &Report, c: &Common) -> Result<()> {
    report::write_all(r, &c.out)?;
    if c.json {
        crate::print_json(r)?;
    } else {
        print!("{}", report::markdown(r));
        eprintln!("report: {}", c.out.join("report.json").display());
    }
    Ok(())
}

fn lab_for(c: &Common) -> Result<Lab> {
    let prefix = c
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bn{}", std::process::id() % 100_000_000));
    Lab::up(&prefix)
}

/// Starts the source in the traffic namespace on core 0.
fn start_gen(
    lab: &Lab,
    size: &str,
    rate: u64,
    secs: f64,
    flows: u16,
    dst_mac: &str,
    extra: &[String],
) -> Result<Proc> {
    let bench = sibling_bin("isopath-bench")?.display().to_string();
    let mut args: Vec<String> = vec![
        bench,
        "gen".into(),
        "--iface".into(),
        "t0".into(),
        "--core".into(),
        "0".into(),
        "--size".into(),
        size.into(),
        "--rate".into(),
        rate.to_string(),
        "--flows".into(),
        flows.to_string(),
        "--dst-mac".into(),
        dst_mac.into(),
        "--secs".into(),
        format!("{secs:.3}"),
    ];
    args.extend_from_slice(extra);
    let mut p = lab.spawn("traffic", "gen", &args)?;
    p.wait_ready(Duration::from_secs(10), None)?;
    Ok(p)
}

fn s0_rx(lab: &Lab) -> Result<u64> {
    Ok(lab.link_packets("far", "s0")?.0)
}

/// A count and the time it was taken (seconds on some clock of its own).
fn count(lab: &Lab, peer: Peer, run: &peers::Running<'_>) -> Result<(u64, f64)> {
    if peer.forwards() {
        Ok((s0_rx(lab)?, crate::now_secs()))
    } else {
        Ok(run.own_count()?.unwrap_or((0, 0.0)))
    }
}

fn sleep(d: Duration, stop: &AtomicBool) -> Result<()> {
    crate::bpf::sleep_until(Instant::now() + d, stop);
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

pub(crate) fn compare(a: &CompareArgs) -> Result<()> {
    let stop = crate::bpf::stop_flag()?;
    peers::check_tools(&a.peers)?;
    let c = &a.common;
    let size = format!("{}", a.size);
    let work = std::env::temp_dir().join(format!("isopath-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let lab = lab_for(c)?;
    lab.sink_on_s0()?;
    let mut report = new_report(
        "compare",
        json!({"peers": a.peers.iter().map(|p| p.name()).collect::<Vec<_>>(), "rounds": a.rounds, "secs": a.secs.as_secs_f64(),
               "warmup_secs": c.warmup.as_secs_f64(), "size": a.size, "flows": c.flows, "rate_pps": a.rate, "source": "live",
               "source_core": 0, "forwarder_core": 1, "lab": lab.prefix}),
    );
    let mut results: Vec<PeerResult> = a
        .peers
        .iter()
        .map(|&p| PeerResult {
            peer: p.name().into(),
            description: p.describe().into(),
            ceiling: p.is_ceiling(),
            counted_at: match p {
                Peer::XdpDrop => "XDP_DROP program counter".into(),
                Peer::IsopathRxdrop => "worker rx_drop_no_output".into(),
                Peer::XskDrop => "rx-drop loop's own count".into(),
                _ => "s0 rx_packets (nft ingress drop)".into(),
            },
            frame_size: size.clone(),
            ..PeerResult::default()
        })
        .collect();
    let mut d = Display::new(c.quiet || c.json, a.peers.len() * a.rounds as usize);
    for round in 1..=a.rounds {
        for (i, &peer) in a.peers.iter().enumerate() {
            let run = peers::start(&lab, peer, &work)
                .with_context(|| format!("starting {}", peer.name()))?;
            let total = c.warmup.as_secs_f64() + a.secs.as_secs_f64() + 1.5;
            let source = start_gen(&lab, &size, a.rate, total, c.flows, peer.dst_mac(), &[])?;
            sleep(c.warmup, &stop)?;
            // Counters that move once per second (progress lines) need a fresh line first.
            let settle = if run.counts_per_second() {
                Duration::from_millis(1100)
            } else {
                Duration::ZERO
            };
            let c0 = count(&lab, peer, &run)?;
            let cpu0 = CpuSample::now();
            let t0 = Instant::now();
            let mut last = c0;
            while t0.elapsed() < a.secs {
                sleep(
                    Duration::from_secs(1).min(a.secs.saturating_sub(t0.elapsed())),
                    &stop,
                )?;
                let now = count(&lab, peer, &run)?;
                if now.1 > last.1 {
                    let pps = (now.0 - last.0) as f64 / (now.1 - last.1);
                    d.status(&format!(
                        "{} round {round}: {:.3} Mpps",
                        peer.name(),
                        pps / 1e6
                    ));
                    last = now;
                }
            }
            let _ = settle;
            let cpu1 = CpuSample::now();
            let c1 = count(&lab, peer, &run)?;
            let extra = run
                .isopath_status()
                .map(|s| json!({"isopath_status": s}))
                .unwrap_or(Value::Null);
            let g = source.stop_json()?;
            let out = run.stop()?;
            // Let the kernel release the peer's sockets and programs before the next one.
            std::thread::sleep(Duration::from_millis(500));
            let dt = c1.1 - c0.1;
            let arrived = if dt > 0.0 {
                (c1.0 - c0.0) as f64 / dt
            } else {
                0.0
            };
            let offered = g["rate_pps"].as_f64().unwrap_or(0.0);
            results[i].runs.push(RunResult {
                round,
                offered_pps: offered,
                arrived_pps: arrived,
                secs: dt,
                cpu_busy_pct: cpu0.busy_since(&cpu1),
                extra: json!({"source": g, "peer": out, "status": extra}),
            });
            d.done_step(&format!(
                "{} round {round}: {:.3} Mpps (offered {:.3})",
                peer.name(),
                arrived / 1e6,
                offered / 1e6
            ));
        }
    }
    for r in &mut results {
        r.finish();
    }
    let med = |n: &str| results.iter().find(|r| r.peer == n).map(|r| r.median_pps);
    let mut ratios = Vec::new();
    for (num, den, target) in [
        ("isopath", "testpmd", Some(1.0)),
        ("isopath", "xsk-fwd", Some(0.95)),
        ("isopath-rxdrop", "xsk-drop", Some(0.95)),
        ("testpmd", "xsk-fwd", None),
        ("kernel-router", "isopath", None),
        ("kernel-bridge", "isopath", None),
        ("xsk-drop", "xdp-drop", None),
    ] {
        if let (Some(n), Some(dd)) = (med(num), med(den))
            && dd > 0.0
        {
            ratios.push(Ratio {
                name: format!("{num}/{den}"),
                value: n / dd,
                target,
            });
        }
    }
    report.peers = results;
    report.ratios = ratios;
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
    finish(&report, c)
}

/// One throughput trial at `rate`: frames sent by the source vs frames arrived on s0.
fn trial(
    lab: &Lab,
    size: &str,
    rate: u64,
    secs: Duration,
    c: &Common,
    peer: Peer,
    extra: &[String],
) -> Result<Trial> {
    let r0 = s0_rx(lab)?;
    let g = start_gen(
        lab,
        size,
        rate,
        secs.as_secs_f64(),
        c.flows,
        peer.dst_mac(),
        extra,
    )?
    .wait_json(secs + Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(300)); // frames in flight
    let r1 = s0_rx(lab)?;
    let sent = g["sent"].as_u64().unwrap_or(0);
    let gsecs = g["secs"].as_f64().unwrap_or(secs.as_secs_f64());
    Ok(Trial {
        target_pps: rate,
        sent,
        received: r1 - r0,
        offered_pps: sent as f64 / gsecs,
        received_pps: (r1 - r0) as f64 / gsecs,
    })
}

pub(crate) fn rfc2544(a: &Rfc2544Args) -> Result<()> {
    let stop = crate::bpf::stop_flag()?;
    if a.peers.iter().any(|p| !p.forwards()) {
        bail!(
            "rfc2544 runs forwarding peers only (isopath, testpmd, kernel-router, kernel-bridge, xsk-fwd)"
        );
    }
    peers::check_tools(&a.peers)?;
    let c = &a.common;
    let work = std::env::temp_dir().join(format!("isopath-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let lab = lab_for(c)?;
    lab.sink_on_s0()?;
    let mut extra: Vec<String> = Vec::new();
    if a.ipv6 {
        extra.push("--ipv6".into());
    }
    if let Some(v) = a.vlan {
        extra.extend(["--vlan".into(), v.to_string()]);
    }
    let mut report = new_report(
        "rfc2544",
        json!({"peers": a.peers.iter().map(|p| p.name()).collect::<Vec<_>>(), "sizes": a.sizes, "trial_secs": a.trial_secs.as_secs_f64(),
               "loss_tolerance": a.loss_tolerance, "max_rate_pps": a.max_rate, "resolution_pps": a.resolution, "max_trials": a.max_trials,
               "latency_fraction": a.latency_fraction, "latency_secs": a.latency_secs.as_secs_f64(), "b2b_max": a.b2b_max,
               "flows": c.flows, "ipv6": a.ipv6, "vlan": a.vlan, "source": "live", "counted_at": "s0 rx_packets (throughput), AF_XDP receiver on s0 (latency)", "lab": lab.prefix}),
    );
    let steps = a.sizes.len() * a.peers.len();
    let mut d = Display::new(c.quiet || c.json, steps);
    let bench = sibling_bin("isopath-bench")?.display().to_string();
    for &size in &a.sizes {
        let fs: FrameSize = size.to_string().parse().map_err(anyhow::Error::msg)?;
        let size_s = fs.to_string();
        for &peer in &a.peers {
            let run = peers::start(&lab, peer, &work)?;
            // Learning frames (RFC 2544 §23): a short slow stream before the trials.
            trial(
                &lab,
                &size_s,
                10_000,
                Duration::from_millis(500),
                c,
                peer,
                &extra,
            )?;
            let cpu0 = CpuSample::now();
            let p = SearchParams {
                max_pps: a.max_rate,
                resolution_pps: a.resolution,
                loss_tolerance: a.loss_tolerance,
                max_trials: a.max_trials,
            };
            let mut err = None;
            let res = search::search(p, |rate| {
                d.status(&format!(
                    "{} {size_s}: trial at {:.3} Mpps",
                    peer.name(),
                    rate as f64 / 1e6
                ));
                if stop.load(Ordering::Relaxed) || err.is_some() {
                    return Trial {
                        target_pps: rate,
                        sent: 1,
                        received: 0,
                        offered_pps: 0.0,
                        received_pps: 0.0,
                    };
                }
                match trial(&lab, &size_s, rate, a.trial_secs, c, peer, &extra) {
                    Ok(t) => t,
                    Err(e) => {
                        err = Some(e);
                        Trial {
                            target_pps: rate,
                            sent: 1,
                            received: 0,
                            offered_pps: 0.0,
                            received_pps: 0.0,
                        }
                    }
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let cpu = cpu0.busy_since(&CpuSample::now());
            let mut curve = res.trials.clone();
            curve.sort_by(|x, y| x.offered_pps.total_cmp(&y.offered_pps));
            let latency = if a.latency_fraction > 0.0 && res.throughput_pps > 0 {
                let rate = ((res.throughput_pps as f64) * a.latency_fraction) as u64;
                d.status(&format!(
                    "{} {size_s}: latency at {:.3} Mpps",
                    peer.name(),
                    rate as f64 / 1e6
                ));
                let secs = a.latency_secs.as_secs_f64();
                let mut rx = lab.spawn(
                    "far",
                    "recv",
                    // SCHED_FIFO: the receiver shares core 0 with the source, which would
                    // otherwise hold the core for whole scheduler slices (ms of latency).
                    &[
                        "chrt".into(),
                        "-f".into(),
                        "10".into(),
                        bench.clone(),
                        "recv".into(),
                        "--iface".into(),
                        "s0".into(),
                        "--core".into(),
                        "0".into(),
                        "--secs".into(),
                        format!("{:.1}", secs + 2.5),
                    ],
                )?;
                rx.wait_ready(Duration::from_secs(10), None)?;
                let g = start_gen(&lab, &size_s, rate, secs, c.flows, peer.dst_mac(), &extra)?
                    .wait_json(a.latency_secs + Duration::from_secs(10))?;
                let r = rx.wait_json(Duration::from_secs(10))?;
                let _ = g;
                Some(LatencyResult {
                    rate_pps: rate,
                    fraction_of_throughput: a.latency_fraction,
                    received: r["probes"].as_u64().unwrap_or(0),
                    flows: serde_json::from_value(r["totals"].clone()).unwrap_or_default(),
                    histogram: serde_json::from_value(r["latency"].clone()).unwrap_or_default(),
                })
            } else {
                None
            };
            let back_to_back = if a.b2b_max > 0 {
                d.status(&format!("{} {size_s}: back-to-back", peer.name()));
                let p = SearchParams {
                    max_pps: a.b2b_max,
                    resolution_pps: (a.b2b_max / 64).max(1),
                    loss_tolerance: 0.0,
                    max_trials: 8,
                };
                let mut trials = Vec::new();
                let r = search::search(p, |burst| {
                    let mut x = extra.clone();
                    x.extend(["--count".into(), burst.to_string()]);
                    let t = trial(&lab, &size_s, 0, Duration::from_secs(5), c, peer, &x).unwrap_or(
                        Trial {
                            target_pps: burst,
                            sent: 1,
                            received: 0,
                            offered_pps: 0.0,
                            received_pps: 0.0,
                        },
                    );
                    trials.push((burst, t.sent, t.received));
                    Trial {
                        target_pps: burst,
                        ..t
                    }
                });
                Some(BackToBack {
                    max_burst: r.throughput_pps,
                    trials,
                })
            } else {
                None
            };
            run.stop()?;
            d.done_step(&format!(
                "{} {size_s}: {:.3} Mpps zero-loss ({} trials)",
                peer.name(),
                res.throughput_pps as f64 / 1e6,
                res.trials.len()
            ));
            report.rfc2544.push(SizeResult {
                peer: peer.name().into(),
                size: size_s.clone(),
                throughput: Some(res),
                loss_curve: curve,
                latency,
                back_to_back,
                cpu_busy_pct: cpu,
            });
        }
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
    finish(&report, c)
}

/// Arguments of `report`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReportArgs {
    /// A stored report.json.
    file: PathBuf,
    /// Also write summary.md and the plots into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn render(a: &ReportArgs) -> Result<()> {
    let r = report::load(&a.file)?;
    if let Some(dir) = &a.out {
        report::write_all(&r, dir)?;
    }
    print!("{}", report::markdown(&r));
    Ok(())
}
