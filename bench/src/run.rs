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
    lab::{CpuSample, Lab, MAC_BR0, Proc, sibling_bin},
    peers::{self, Peer},
    report::{
        self, BackToBack, DirectionResult, LatencyResult, Machine, PeerResult, Ratio, Report,
        RunResult, SizeResult,
    },
    search::{self, DirCount, SearchParams, Trial},
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
    /// Flows: distinct UDP 5-tuples (source port 10000 + f % 4096, destination port
    /// 9 + f / 4096); both ways, the reverse source sends the same flows' replies.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    flows: u16,
    /// Seconds of traffic before counting starts.
    #[arg(long, default_value = "2", value_parser = crate::parse_secs)]
    warmup: Duration,
    /// Both ways: a second source on the far side's s0 sends towards t0 (into m0) at the same
    /// rate while the first sends from t0; arrivals are counted per direction (t0 → far at
    /// s0 + s1, far → t0 at t0). Forwarding peers only. Both sources share core 0.
    #[arg(long)]
    both_ways: bool,
}

/// Arguments of `compare`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CompareArgs {
    /// Peers, in the order they alternate within a round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "isopath,testpmd,xsk-fwd,kernel-router,kernel-conntrack,kernel-bridge,xdp-drop,isopath-rxdrop,xsk-drop"
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
    #[command(flatten)]
    redirect: crate::redirect::RedirectOpts,
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
    let lab = Lab::up(&prefix)?;
    // Arrivals are counted by the kernel counters of the veths they reach, and dropped there.
    lab.sink_on("far", "s0")?;
    lab.sink_on("far", "s1")?;
    lab.sink_on("traffic", "t0")?;
    Ok(lab)
}

/// A direction through the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// t0 → up0 → peer → m0 (or the bond's active member) → s0 (or s1).
    Forward,
    /// s0 → m0 → peer → up0 → t0 (`--both-ways`).
    Reverse,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Forward => "t0->far",
            Dir::Reverse => "far->t0",
        }
    }

    /// The directions a run sends.
    fn of(both_ways: bool) -> &'static [Dir] {
        if both_ways {
            &[Dir::Forward, Dir::Reverse]
        } else {
            &[Dir::Forward]
        }
    }
}

/// Starts a source on core 0: from t0 in the traffic namespace (forward) or from s0 in the
/// far namespace towards t0 (reverse, addresses and MACs swapped).
#[expect(
    clippy::too_many_arguments,
    reason = "one source of a run: each argument is a distinct knob"
)]
pub(crate) fn start_gen(
    lab: &Lab,
    dir: Dir,
    peer: Peer,
    size: &str,
    rate: u64,
    secs: f64,
    flows: u32,
    extra: &[String],
) -> Result<Proc> {
    let bench = sibling_bin("isopath-bench")?.display().to_string();
    let (role, iface, dst_mac) = match dir {
        Dir::Forward => ("traffic", "t0", peer.dst_mac()),
        Dir::Reverse => ("far", "s0", peer.reverse_dst_mac()),
    };
    let mut args: Vec<String> = vec![
        bench,
        "gen".into(),
        "--iface".into(),
        iface.into(),
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
    if dir == Dir::Reverse {
        for (k, v) in [
            ("--src-mac", MAC_BR0),
            ("--src-ip", "198.18.0.2"),
            ("--dst-ip", "198.18.0.1"),
            ("--src-ip6", "2001:2::2"),
            ("--dst-ip6", "2001:2::1"),
        ] {
            args.extend([k.into(), v.into()]);
        }
        args.push("--mirror".into());
    }
    args.extend_from_slice(extra);
    let mut p = lab.spawn(role, &format!("gen {}", dir.name()), &args)?;
    p.wait_ready(Duration::from_secs(10), None)?;
    Ok(p)
}

/// The sources of one run or trial, one per direction.
fn start_gens(
    lab: &Lab,
    c: &Common,
    peer: Peer,
    size: &str,
    rate: u64,
    secs: f64,
    extra: &[String],
) -> Result<Vec<Proc>> {
    Dir::of(c.both_ways)
        .iter()
        .map(|&dir| start_gen(lab, dir, peer, size, rate, secs, c.flows.into(), extra))
        .collect()
}

/// Frames arrived so far, read from the kernel counters of the veths they reach.
#[derive(Debug, Clone, Copy, Default)]
struct Arrivals {
    /// At the far side, s0 + s1 (a bond's active member may be either).
    fwd: u64,
    s0: u64,
    s1: u64,
    /// Back at t0.
    rev: u64,
    /// When (seconds, [`crate::now_secs`]).
    t: f64,
}

impl Arrivals {
    fn read(lab: &Lab, both_ways: bool) -> Result<Self> {
        let far = lab.links_packets("far")?;
        let rx = |m: &BTreeMap<String, (u64, u64)>, d: &str| {
            m.get(d)
                .map(|x| x.0)
                .with_context(|| format!("no rx counter for {d}"))
        };
        let (s0, s1) = (rx(&far, "s0")?, rx(&far, "s1")?);
        let rev = if both_ways {
            rx(&lab.links_packets("traffic")?, "t0")?
        } else {
            0
        };
        Ok(Self {
            fwd: s0 + s1,
            s0,
            s1,
            rev,
            t: crate::now_secs(),
        })
    }

    fn dir(&self, d: Dir) -> u64 {
        match d {
            Dir::Forward => self.fwd,
            Dir::Reverse => self.rev,
        }
    }
}

/// A count and the time it was taken: the far side's and t0's counters for forwarders, the
/// peer's own count (in `fwd`) for the drop peers.
fn count(lab: &Lab, c: &Common, peer: Peer, run: &peers::Running<'_>) -> Result<Arrivals> {
    if peer.forwards() {
        Arrivals::read(lab, c.both_ways)
    } else {
        let (n, t) = run.own_count()?.unwrap_or((0, 0.0));
        Ok(Arrivals {
            fwd: n,
            t,
            ..Arrivals::default()
        })
    }
}

/// `--both-ways` needs a way back: refused for the peers that only receive on up0.
fn check_both_ways(c: &Common, peers: &[Peer]) -> Result<()> {
    if c.both_ways
        && let Some(p) = peers.iter().find(|p| !p.forwards())
    {
        bail!(
            "--both-ways needs forwarding peers: {} receives on up0 only and has no way back \
             (run it without --both-ways)",
            p.name()
        );
    }
    Ok(())
}

/// What a bond run adds to its record: where the frames left (the active member's far end)
/// and what the backup transmitted (must be 0), from the far side's counters and isopathd's.
fn bond_extra(a0: &Arrivals, a1: &Arrivals, status: Option<&Value>) -> Value {
    let bond = status.map(|s| s["bonds"][0].clone()).unwrap_or(Value::Null);
    let active = bond["active"].as_str().unwrap_or("").to_owned();
    let port_tx = |name: &str| {
        status
            .and_then(|s| s["ports"].as_array())
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["tx_packets"].as_u64())
    };
    let backup = match active.as_str() {
        "m0" => "m1",
        "m1" => "m0",
        _ => "",
    };
    json!({
        "active": active,
        "backup": backup,
        "s0_rx": a1.s0 - a0.s0,
        "s1_rx": a1.s1 - a0.s1,
        "m0_tx_packets": port_tx("m0"),
        "m1_tx_packets": port_tx("m1"),
        "backup_tx_packets": port_tx(backup),
        "failovers": bond["failovers"],
    })
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
    let c = &a.common;
    check_both_ways(c, &a.peers)?;
    peers::check_tools(&a.peers)?;
    let size = format!("{}", a.size);
    let work = std::env::temp_dir().join(format!("isopath-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let lab = lab_for(c)?;
    let dirs = Dir::of(c.both_ways);
    let mut report = new_report(
        "compare",
        json!({"peers": a.peers.iter().map(|p| p.name()).collect::<Vec<_>>(), "rounds": a.rounds, "secs": a.secs.as_secs_f64(),
               "warmup_secs": c.warmup.as_secs_f64(), "size": a.size, "flows": c.flows, "rate_pps": a.rate, "source": "auto",
               "both_ways": c.both_ways, "directions": dirs.iter().map(|d| d.name()).collect::<Vec<_>>(),
               "source_core": 0, "forwarder_core": 1, "lab": lab.prefix}),
    );
    if a.peers.contains(&Peer::XdpRedirect) {
        report.config["xdp_redirect"] = json!(a.redirect);
    }
    let mut results: Vec<PeerResult> = a
        .peers
        .iter()
        .map(|&p| PeerResult {
            peer: p.name().into(),
            description: match p {
                Peer::XdpRedirect => a.redirect.describe(),
                _ => p.describe().into(),
            },
            ceiling: p.is_ceiling(),
            counted_at: match p {
                Peer::XdpDrop => "XDP_DROP program counter".into(),
                Peer::IsopathRxdrop => "worker rx_drop_no_output".into(),
                Peer::XskDrop => "rx-drop loop's own count".into(),
                _ if c.both_ways => "s0+s1 rx_packets + t0 rx_packets (nft ingress drops)".into(),
                _ => "s0+s1 rx_packets (nft ingress drop)".into(),
            },
            frame_size: size.clone(),
            ..PeerResult::default()
        })
        .collect();
    let mut d = Display::new(c.quiet || c.json, a.peers.len() * a.rounds as usize);
    for round in 1..=a.rounds {
        for (i, &peer) in a.peers.iter().enumerate() {
            let run = peers::start_with(&lab, peer, &work, c.both_ways, &a.redirect)
                .with_context(|| format!("starting {}", peer.name()))?;
            let total = c.warmup.as_secs_f64() + a.secs.as_secs_f64() + 1.5;
            // Both ways, every frame of each source is accounted for: arrivals from before
            // the sources start until after they stop.
            let start = count(&lab, c, peer, &run)?;
            let sources = start_gens(&lab, c, peer, &size, a.rate, total, &[])?;
            sleep(c.warmup, &stop)?;
            let c0 = count(&lab, c, peer, &run)?;
            let cpu0 = CpuSample::now();
            let t0 = Instant::now();
            let mut last = c0;
            while t0.elapsed() < a.secs {
                sleep(
                    Duration::from_secs(1).min(a.secs.saturating_sub(t0.elapsed())),
                    &stop,
                )?;
                let now = count(&lab, c, peer, &run)?;
                if now.t > last.t {
                    let pps = (now.fwd + now.rev - last.fwd - last.rev) as f64 / (now.t - last.t);
                    d.status(&format!(
                        "{} round {round}: {:.3} Mpps",
                        peer.name(),
                        pps / 1e6
                    ));
                    last = now;
                }
            }
            let cpu1 = CpuSample::now();
            let c1 = count(&lab, c, peer, &run)?;
            let status = run.isopath_status();
            let mut extra = json!({});
            if let Some(s) = &status {
                extra["status"] = s.clone();
            }
            if peer == Peer::IsopathBond {
                extra["bond"] = bond_extra(&c0, &c1, status.as_ref());
            }
            if let Some(k) = run.kernel_state() {
                extra["conntrack"] = k;
            }
            let gens = sources
                .into_iter()
                .map(Proc::stop_json)
                .collect::<Result<Vec<_>>>()?;
            // Frames in flight land before the peer stops.
            std::thread::sleep(Duration::from_millis(300));
            if let Some(out) = run.stop()? {
                extra["peer"] = out;
            }
            extra["sources"] = json!(gens);
            // Let the kernel release the peer's sockets and programs before the next one.
            std::thread::sleep(Duration::from_millis(500));
            let end = if c.both_ways {
                Arrivals::read(&lab, true)?
            } else {
                c1
            };
            let dt = c1.t - c0.t;
            let rate = |n: u64| if dt > 0.0 { n as f64 / dt } else { 0.0 };
            let directions: Vec<DirectionResult> = dirs
                .iter()
                .zip(&gens)
                .map(|(&dir, g)| DirectionResult {
                    direction: dir.name().into(),
                    offered_pps: g["rate_pps"].as_f64().unwrap_or(0.0),
                    arrived_pps: rate(c1.dir(dir) - c0.dir(dir)),
                    sent: g["sent"].as_u64().unwrap_or(0),
                    arrived: end.dir(dir) - start.dir(dir),
                })
                .collect();
            let arrived: f64 = directions.iter().map(|x| x.arrived_pps).sum();
            let offered: f64 = directions.iter().map(|x| x.offered_pps).sum();
            results[i].runs.push(RunResult {
                round,
                offered_pps: offered,
                arrived_pps: arrived,
                secs: dt,
                cpu_busy_pct: cpu0.busy_since(&cpu1),
                directions: if c.both_ways { directions } else { Vec::new() },
                extra,
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
        ("isopath-bond", "isopath", None),
        ("isopath-bond", "testpmd", None),
        ("testpmd", "xsk-fwd", None),
        ("kernel-router", "isopath", None),
        ("isopath", "isopath-notrack", Some(0.97)),
        ("isopath", "kernel-conntrack", None),
        ("kernel-conntrack", "kernel-router", None),
        ("kernel-bridge", "isopath", None),
        ("xsk-drop", "xdp-drop", None),
        ("xdp-redirect", "isopath", None),
        ("xdp-redirect", "xsk-fwd", None),
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

/// One throughput trial at `rate` (per direction): frames sent by the sources vs frames
/// arrived, summed over the directions.
fn trial(
    lab: &Lab,
    size: &str,
    rate: u64,
    secs: Duration,
    c: &Common,
    peer: Peer,
    extra: &[String],
) -> Result<Trial> {
    let a0 = Arrivals::read(lab, c.both_ways)?;
    let gens = start_gens(lab, c, peer, size, rate, secs.as_secs_f64(), extra)?
        .into_iter()
        .map(|g| g.wait_json(secs + Duration::from_secs(10)))
        .collect::<Result<Vec<_>>>()?;
    std::thread::sleep(Duration::from_millis(300)); // frames in flight
    let a1 = Arrivals::read(lab, c.both_ways)?;
    // The sources run in `Dir::of` order: each direction is accounted on its own, then summed.
    let dirs: Vec<DirCount> = Dir::of(c.both_ways)
        .iter()
        .zip(&gens)
        .map(|(&d, g)| DirCount {
            sent: g["sent"].as_u64().unwrap_or(0),
            received: a1.dir(d) - a0.dir(d),
        })
        .collect();
    let sent: u64 = dirs.iter().map(|d| d.sent).sum();
    let received: u64 = dirs.iter().map(|d| d.received).sum();
    let gsecs = gens
        .iter()
        .filter_map(|g| g["secs"].as_f64())
        .fold(0.0, f64::max)
        .max(1e-6);
    Ok(Trial {
        target_pps: rate,
        sent,
        received,
        offered_pps: sent as f64 / gsecs,
        received_pps: received as f64 / gsecs,
        forward: dirs[0],
        reverse: dirs.get(1).copied(),
    })
}

pub(crate) fn rfc2544(a: &Rfc2544Args) -> Result<()> {
    let stop = crate::bpf::stop_flag()?;
    if a.peers.iter().any(|p| !p.forwards()) {
        bail!(
            "rfc2544 runs forwarding peers only (isopath, isopath-bond, testpmd, kernel-router, kernel-conntrack, kernel-bridge, xsk-fwd)"
        );
    }
    peers::check_tools(&a.peers)?;
    let c = &a.common;
    let work = std::env::temp_dir().join(format!("isopath-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    // Frame sizes the header stack cannot hold are refused before any lab is built.
    let spec = crate::wire::FrameSpec {
        src_mac: [0; 6],
        dst_mac: [0; 6],
        vlan: a.vlan,
        ipv6: a.ipv6,
        src4: std::net::Ipv4Addr::UNSPECIFIED,
        dst4: std::net::Ipv4Addr::UNSPECIFIED,
        src6: std::net::Ipv6Addr::UNSPECIFIED,
        dst6: std::net::Ipv6Addr::UNSPECIFIED,
        sport_base: 0,
        dport_base: 0,
        mirror: false,
    };
    if let Some(&small) = a.sizes.iter().find(|&&s| s < spec.min_size()) {
        bail!(
            "frame size {small} is below {} for this header stack{}{} (use --sizes {},...)",
            spec.min_size(),
            if a.ipv6 { ", IPv6" } else { ", IPv4" },
            if a.vlan.is_some() { ", VLAN tag" } else { "" },
            spec.min_size()
        );
    }
    let lab = lab_for(c)?;
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
               "flows": c.flows, "ipv6": a.ipv6, "vlan": a.vlan, "source": "auto", "both_ways": c.both_ways,
               "rates": if c.both_ways { "per direction; trials sum both directions' frames" } else { "one way" },
               "counted_at": if c.both_ways { "s0+s1 and t0 rx_packets (throughput), AF_XDP receiver on s0 (latency, t0->far)" }
                             else { "s0+s1 rx_packets (throughput), AF_XDP receiver on s0 (latency)" }, "lab": lab.prefix}),
    );
    let steps = a.sizes.len() * a.peers.len();
    let mut d = Display::new(c.quiet || c.json, steps);
    let bench = sibling_bin("isopath-bench")?.display().to_string();
    for &size in &a.sizes {
        let fs: FrameSize = size.to_string().parse().map_err(anyhow::Error::msg)?;
        let size_s = fs.to_string();
        for &peer in &a.peers {
            let run = peers::start(&lab, peer, &work, c.both_ways)?;
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
                    return Trial::failed(rate);
                }
                match trial(&lab, &size_s, rate, a.trial_secs, c, peer, &extra) {
                    Ok(t) => t,
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
                // Both ways, the reverse source loads the peer meanwhile; latency is the
                // forward direction's (the receiver is on s0).
                for g in start_gens(&lab, c, peer, &size_s, rate, secs, &extra)? {
                    g.wait_json(a.latency_secs + Duration::from_secs(10))?;
                }
                let r = rx.wait_json(Duration::from_secs(10))?;
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
                    let t = trial(&lab, &size_s, 0, Duration::from_secs(5), c, peer, &x)
                        .unwrap_or(Trial::failed(burst));
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
