//! `isopath-failover`: failover runs on a bonded veth lab.
//!
//! Steady UDP traffic (sequence numbers in the payload) flows from the traffic namespace through
//! isopath's bond to the far namespace; the active member's far end is pulled with
//! `ip link set ... down` at a known time, N times back and forth. Every datagram's arrival is
//! timestamped at the receiver. For each failover:
//!
//! - **trigger**: the moment the call that takes the link down returns (wall clock, ns);
//! - **detection**: the bond's `active_changed` event timestamp minus the trigger (the event is
//!   stamped by isopathd when it applies the rtnetlink carrier event; it can precede the trigger
//!   because the kernel reports the carrier loss before `ip` returns);
//! - **resume**: arrival of the first datagram sent after the last one that arrived before the
//!   trigger, minus the trigger: the traffic gap as the far host sees it;
//! - **lost**: datagrams sent but never received around the failover; duplicates and reordered
//!   datagrams are counted too.
//!
//! Results as JSON (per failover and median/worst) and an SVG timeline (datagrams per ms around
//! each failover). Subcommand `recv` is the timestamping receiver, run by the harness itself in
//! the far namespace.
#![forbid(unsafe_code)]

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Failover runs on the bonded veth lab.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a lab, run isopathd with a bond, pull the active member N times, report.
    Run {
        /// Offered rate, datagrams per second.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Failovers (alternating m0 → m1, m1 → m0).
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Time between a pull and the next one, ms (the pulled link comes back halfway).
        #[arg(long, default_value_t = 1000)]
        period_ms: u64,
        /// Directory with the isopathd and isopath-failover binaries (default: this one's).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Write the JSON report here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the SVG timeline here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Lab prefix ([a-z0-9], at most 10).
        #[arg(long, default_value = "fo")]
        prefix: String,
    },
    /// Timestamping receiver (run by `run` in the far namespace): prints "ready" on stderr,
    /// then writes one `seq arrival_unix_ns` line per datagram to stdout until `--secs` pass.
    Recv {
        /// Address to bind.
        #[arg(long)]
        bind: String,
        /// How long to receive.
        #[arg(long)]
        secs: u64,
    },
    /// Paced sender (run by `run` in the traffic namespace): `count` datagrams at `rate`,
    /// payload = big-endian u64 sequence number then padding to `size` bytes.
    Send {
        /// Destination.
        #[arg(long)]
        dst: String,
        /// Datagrams per second.
        #[arg(long)]
        rate: u64,
        /// Datagrams to send.
        #[arg(long)]
        count: u64,
        /// Payload bytes (at least 8).
        #[arg(long, default_value_t = 18)]
        size: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Recv { bind, secs } => recv(&bind, secs),
        Cmd::Send {
            dst,
            rate,
            count,
            size,
        } => send(&dst, rate, count, size),
        Cmd::Run {
            rate,
            runs,
            period_ms,
            bin_dir,
            out,
            svg,
            prefix,
        } => {
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?
                    .parent()
                    .context("exe dir")?
                    .to_path_buf(),
            };
            let report = run(&RunCfg {
                rate,
                runs,
                period: Duration::from_millis(period_ms),
                bin_dir,
                prefix,
            })?;
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(p) = out {
                std::fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?;
            }
            if let Some(p) = svg {
                std::fs::write(&p, timeline_svg(&report))
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            println!("{}", serde_json::to_string_pretty(&report["summary"])?);
            Ok(())
        }
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn recv(bind: &str, secs: u64) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    eprintln!("ready");
    let end = Instant::now() + Duration::from_secs(secs);
    // Arrivals are kept in memory (preallocated for the run) and written at the end, so the
    // receive loop does no I/O besides recv.
    let mut arrivals: Vec<(u64, u64)> = Vec::with_capacity(4 << 20);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        match sock.recv(&mut buf) {
            Ok(n) if n >= 8 => {
                let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                arrivals.push((seq, unix_ns()));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (s, t) in arrivals {
        writeln!(out, "{s} {t}")?;
    }
    Ok(())
}

fn send(dst: &str, rate: u64, count: u64, size: usize) -> anyhow::Result<()> {
    if size < 8 {
        bail!("--size must be at least 8");
    }
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(dst)?;
    let mut buf = vec![0u8; size];
    let start = Instant::now();
    for seq in 0..count {
        let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate.max(1));
        let now = Instant::now();
        if due > now + Duration::from_micros(50) {
            std::thread::sleep(due - now);
        }
        buf[..8].copy_from_slice(&seq.to_be_bytes());
        // A full socket buffer is a loss the receiver will see; never block the schedule.
        let _ = sock.send(&buf);
    }
    Ok(())
}

struct RunCfg {
    rate: u64,
    runs: u32,
    period: Duration,
    bin_dir: PathBuf,
    prefix: String,
}

/// Kills and reaps a child we started, on every exit path.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct Lab(String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(lab_script()).args(["down", &self.0]).status();
    }
}

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab.sh")
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .with_context(|| args.join(" "))?;
    if !st.success() {
        bail!("{} failed: {st}", args.join(" "));
    }
    Ok(())
}

fn status(sock: &Path) -> anyhow::Result<Value> {
    let mut s = std::os::unix::net::UnixStream::connect(sock)?;
    s.write_all(b"status\n")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

fn run(cfg: &RunCfg) -> anyhow::Result<Value> {
    let p = &cfg.prefix;
    sh(&[lab_script().to_str().context("path")?, "up", p])?;
    let lab = Lab(p.clone());
    let (ns_t, ns_a, ns_f) = (
        format!("{p}-traffic"),
        format!("{p}-app"),
        format!("{p}-far"),
    );
    let sock = PathBuf::from(format!("/run/isopath/failover-{p}.sock"));
    let conf = std::env::temp_dir().join(format!("isopath-failover-{p}.toml"));
    std::fs::write(
        &conf,
        format!(
            "[daemon]\ncontrol_socket = \"{}\"\n[workers]\ncores = [1]\n\
             [[port]]\nname = \"up0\"\n[[port]]\nname = \"m0\"\n[[port]]\nname = \"m1\"\n\
             [[bond]]\nname = \"bond0\"\nmembers = [\"m0\", \"m1\"]\n\
             [[cross_connect]]\na = \"up0\"\nb = \"bond0\"\n",
            sock.display()
        ),
    )?;
    let mut daemon = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &ns_a])
            .arg(cfg.bin_dir.join("isopathd"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting isopathd")?,
    );
    let err = daemon.0.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(err).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(" ready ") => break,
            Some(Ok(_)) => {}
            _ => bail!("isopathd did not become ready"),
        }
    }
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns_t,
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        "198.18.0.2",
    ])?;

    let total = cfg.period * (cfg.runs + 2);
    let count = cfg.rate * total.as_secs().max(1);
    let me = cfg.bin_dir.join("isopath-failover");
    let mut rx = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &ns_f])
            .arg(&me)
            .args([
                "recv",
                "--bind",
                "198.18.0.2:9100",
                "--secs",
                &(total.as_secs() + 3).to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let mut rx_err = BufReader::new(rx.0.stderr.take().context("stderr")?);
    let mut l = String::new();
    rx_err.read_line(&mut l)?;
    if l.trim() != "ready" {
        bail!("receiver: {l}");
    }
    let _tx = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &ns_t, "taskset", "-c", "0"])
            .arg(&me)
            .args([
                "send",
                "--dst",
                "198.18.0.2:9100",
                "--rate",
                &cfg.rate.to_string(),
                "--count",
                &count.to_string(),
            ])
            .spawn()?,
    );
    let t_start = unix_ns();
    std::thread::sleep(cfg.period);
    let mut triggers = Vec::new();
    for i in 0..cfg.runs {
        let active = status(&sock)?["bonds"][0]["active"]
            .as_str()
            .unwrap_or("m0")
            .to_owned();
        let far = if active == "m0" { "s0" } else { "s1" };
        sh(&["ip", "-n", &ns_f, "link", "set", far, "down"])?;
        let trig = unix_ns();
        triggers.push((i, active, trig));
        std::thread::sleep(cfg.period / 2);
        sh(&["ip", "-n", &ns_f, "link", "set", far, "up"])?;
        std::thread::sleep(cfg.period / 2);
    }
    let st = status(&sock)?;
    let out = rx.0.wait_with_output_reaped()?;
    drop(daemon);
    drop(lab);
    analyse(cfg, t_start, &triggers, &st, &out)
}

trait WaitReaped {
    fn wait_with_output_reaped(&mut self) -> anyhow::Result<String>;
}

impl WaitReaped for Child {
    fn wait_with_output_reaped(&mut self) -> anyhow::Result<String> {
        let mut s = String::new();
        std::io::Read::read_to_string(self.stdout.as_mut().context("stdout")?, &mut s)?;
        self.wait()?;
        Ok(s)
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn analyse(
    cfg: &RunCfg,
    t_start: u64,
    triggers: &[(u32, String, u64)],
    st: &Value,
    arrivals: &str,
) -> anyhow::Result<Value> {
    let arr: Vec<(u64, u64)> = arrivals
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    let events: Vec<(u64, String)> = st["bonds"][0]["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["kind"] == "active_changed")
                .filter_map(|e| Some((e["unix_ns"].as_u64()?, e["detail"].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let mut seen = std::collections::HashSet::with_capacity(arr.len());
    let dups = arr.iter().filter(|(s, _)| !seen.insert(*s)).count();
    let mut max_seq = 0;
    let mut reordered = 0;
    for &(s, _) in &arr {
        if s < max_seq {
            reordered += 1;
        }
        max_seq = max_seq.max(s);
    }
    let mut rows = Vec::new();
    let (mut det, mut gap, mut lost_all) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (run, from, trig)) in triggers.iter().enumerate() {
        let next_trig = triggers.get(i + 1).map_or(u64::MAX, |t| t.2);
        let detection = events
            .iter()
            .find(|(t, d)| {
                *t + 50_000_000 > *trig && *t < next_trig && d.contains(&format!("{from} ->"))
            })
            .map(|(t, _)| (*t as i64 - *trig as i64) as f64 / 1e6);
        // Last datagram that arrived before the trigger, then the first one sent after it.
        let before = arr
            .iter()
            .filter(|(_, t)| *t < *trig)
            .map(|(s, _)| *s)
            .max();
        let resume = before.and_then(|b| {
            arr.iter()
                .filter(|(s, t)| *s > b && *t >= *trig)
                .min_by_key(|(_, t)| *t)
        });
        let gap_ms = resume.map(|(_, t)| (*t - *trig) as f64 / 1e6);
        // Lost: the sequence numbers between the last datagram before the trigger and the
        // first one after the resume that never arrived (the failover's own gap; losses
        // elsewhere in the run are reported as background loss).
        let lost = match (before, resume) {
            (Some(lo), Some(&(hi, _))) => {
                let got = arr.iter().filter(|(s, _)| *s > lo && *s < hi).count() as u64;
                (hi - lo - 1).saturating_sub(got)
            }
            _ => 0,
        };
        if let Some(d) = detection {
            det.push(d);
        }
        if let Some(g) = gap_ms {
            gap.push(g);
        }
        lost_all.push(lost as f64);
        // Datagrams per ms from -20 ms to +30 ms around the trigger.
        let mut hist = vec![0u32; 50];
        for &(_, t) in &arr {
            let off = (t as i64 - *trig as i64) / 1_000_000 + 20;
            if (0..50).contains(&off) {
                hist[off as usize] += 1;
            }
        }
        rows.push(json!({
            "run": run, "from": from, "trigger_unix_ns": trig,
            "detection_ms": detection, "resume_ms": gap_ms, "lost": lost,
            "per_ms_from_minus_20": hist,
        }));
    }
    let worst = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let summary = json!({
        "rate_pps": cfg.rate,
        "failovers": triggers.len(),
        "detection_ms_median": median(&mut det.clone()),
        "detection_ms_worst": worst(&det),
        "resume_ms_median": median(&mut gap.clone()),
        "resume_ms_worst": worst(&gap),
        "lost_median": median(&mut lost_all.clone()),
        "lost_worst": worst(&lost_all),
        "background_loss": (arr.last().map_or(0, |_| max_seq + 1) as f64 - (arr.len() - dups) as f64)
            / (max_seq + 1) as f64,
        "duplicates": dups,
        "reordered": reordered,
        "received": arr.len(),
        "bond_failovers": st["bonds"][0]["failovers"],
        // What the datapath itself dropped over the whole run, by reason: losses beyond these
        // happened in the kernel (frames in flight into the dead link) or at the receiver.
        "datapath_drops": datapath_drops(st),
    });
    Ok(json!({
        "kind": "failover",
        "machine": { "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                     "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()) },
        "config": { "rate_pps": cfg.rate, "runs": cfg.runs, "period_ms": cfg.period.as_millis() as u64,
                    "trigger": "ip link set <active member's far end> down returns",
                    "detection": "bond active_changed event timestamp - trigger",
                    "resume": "arrival of the first datagram after the last one before the trigger - trigger" },
        "start_unix_ns": t_start,
        "summary": summary,
        "runs": rows,
    }))
}

fn datapath_drops(st: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for p in st["ports"].as_array().into_iter().flatten() {
        for (k, v) in p["drops"].as_object().into_iter().flatten() {
            let n = v.as_u64().unwrap_or(0);
            if n > 0 {
                m.insert(
                    format!("{}.{k}", p["name"].as_str().unwrap_or("?")),
                    json!(n),
                );
            }
        }
    }
    let n = st["bonds"][0]["drops"]["tx_drop_no_active_member"]
        .as_u64()
        .unwrap_or(0);
    m.insert("bond0.tx_drop_no_active_member".into(), json!(n));
    Value::Object(m)
}

/// Datagrams per ms around each failover, every run as one translucent line.
fn timeline_svg(report: &Value) -> String {
    let (w, h, l, b) = (720.0, 360.0, 60.0, 40.0);
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    let max = runs
        .iter()
        .flat_map(|r| {
            r["per_ms_from_minus_20"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v.as_u64())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |ms: f64| l + (ms + 20.0) / 50.0 * (w - l - 20.0);
    let y = |v: f64| h - b - v / max * (h - b - 30.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="18" text-anchor="middle">datagrams per ms around each failover ({} runs, {} pps)</text>"##,
        w / 2.0,
        runs.len(),
        report["summary"]["rate_pps"]
    );
    let _ = write!(
        s,
        r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="black"/><line x1="{0}" y1="{1}" x2="{0}" y2="30" stroke="black"/>"##,
        l,
        h - b,
        w - 20.0
    );
    for ms in (-20..=30).step_by(10) {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle">{ms} ms</text>"##,
            x(f64::from(ms)),
            h - b + 18.0
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{0}" y1="{1}" x2="{0}" y2="30" stroke="red" stroke-dasharray="4"/><text x="{0}" y="44" fill="red"> trigger</text>"##,
        x(0.0),
        h - b
    );
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="end">{max}</text>"##,
        l - 4.0,
        y(max) + 4.0
    );
    for r in &runs {
        let pts: Vec<String> = r["per_ms_from_minus_20"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    x(i as f64 - 20.0 + 0.5),
                    y(v.as_f64().unwrap_or(0.0))
                )
            })
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="steelblue" stroke-opacity="0.35" points="{}"/>"##,
            pts.join(" ")
        );
    }
    s.push_str("</svg>\n");
    s
}
