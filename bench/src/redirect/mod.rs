//! The `xdp-redirect` peer: an in-kernel L2 cross-connect, an XDP program on up0 that sends
//! every frame out of m0 with `XDP_REDIRECT` (and one on m0 back to up0 both ways), measured
//! beside the AF_XDP forwarders to see whether an XDP fast path could beat them on this lab.
//!
//! Three layers, all cold:
//! - the programs' loader (`prog.rs`) and the primitives that hold them
//!   (`isopath-bench xdp-redirect`, `isopath-bench xdp-pass`), each a process in one lab
//!   namespace, so an attachment ends with its process;
//! - the lab options that decide where the redirect work runs ([`RedirectOpts`]): on veth the
//!   XDP program of up0 runs in up0's NAPI poll, which is the softirq of the core that
//!   transmitted into t0 (the source's core 0) unless up0's NAPI is threaded and its thread
//!   pinned (`/sys/class/net/up0/threaded`);
//! - the peer's set-up and undo in the lab ([`RedirectRun`]), and the veth counters that show
//!   where frames went (`ethtool -S`: what each veth's XDP redirected, what the next veth's
//!   ring accepted or refused).
//!
//! A frame redirected into a veth is put on its peer's XDP ring, which exists only while the
//! peer runs NAPI: GRO on or an XDP program (shared/peers/README.md pitfall 6). So the far
//! veths s0 and s1 (and t0 both ways) get one of the two for the run, and lose it after.

mod prog;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub(crate) use prog::{XdpPassArgs, XdpRedirectArgs, run_pass, run_redirect};

use crate::lab::{Lab, Proc, sibling_bin};

/// How the program names the output port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Via {
    /// `bpf_redirect_map` into a one-entry devmap (frames bulked per NAPI poll).
    #[default]
    Map,
    /// `bpf_redirect(ifindex)`.
    Direct,
}

/// XDP attach mode (`XDP_FLAGS_DRV_MODE` or `XDP_FLAGS_SKB_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// Native (driver) XDP through a BPF link.
    #[default]
    Native,
    /// Generic (skb) XDP, netlink attach with XDP_FLAGS_SKB_MODE (GRO on the input veth).
    Generic,
}

/// Where up0's (and m0's) NAPI poll, and so the XDP program, runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Napi {
    /// Threaded NAPI (`/sys/class/net/DEV/threaded`), its threads pinned to the NAPI core.
    #[default]
    Threaded,
    /// Softirq on the core that transmitted into the veth (the source's).
    Softirq,
}

/// What lets the far veths accept redirected frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FarRx {
    /// GRO on (veth then runs NAPI and builds skbs from the redirected frames).
    #[default]
    Gro,
    /// An XDP_PASS program (native).
    Xdp,
}

/// Options of the `xdp-redirect` peer (compare).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub(crate) struct RedirectOpts {
    /// xdp-redirect peer: devmap (`bpf_redirect_map`) or `bpf_redirect`.
    #[arg(long = "redirect-via", value_enum, default_value_t = Via::Map)]
    pub(crate) via: Via,
    /// xdp-redirect peer: XDP attach mode.
    #[arg(long = "redirect-mode", value_enum, default_value_t = Mode::Native)]
    pub(crate) mode: Mode,
    /// xdp-redirect peer: up0's (and m0's) NAPI threaded and pinned, or softirq.
    #[arg(long = "redirect-napi", value_enum, default_value_t = Napi::Threaded)]
    pub(crate) napi: Napi,
    /// xdp-redirect peer: the core the threaded NAPI threads are pinned to.
    #[arg(long = "redirect-napi-core", default_value_t = 1)]
    pub(crate) napi_core: usize,
    /// xdp-redirect peer: run the threaded NAPI threads SCHED_FIFO at this priority (1..=99;
    /// 0: SCHED_OTHER, as the kernel starts them).
    #[arg(long = "redirect-napi-fifo", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=99))]
    pub(crate) napi_fifo: u8,
    /// xdp-redirect peer: what makes the far veths (s0, s1; t0 both ways) accept redirected
    /// frames.
    #[arg(long = "redirect-far", value_enum, default_value_t = FarRx::Gro)]
    pub(crate) far: FarRx,
}

impl Default for RedirectOpts {
    /// The command line's defaults.
    fn default() -> Self {
        Self {
            via: Via::Map,
            mode: Mode::Native,
            napi: Napi::Threaded,
            napi_core: 1,
            napi_fifo: 0,
            far: FarRx::Gro,
        }
    }
}

impl RedirectOpts {
    /// One line for the report.
    pub(crate) fn describe(&self) -> String {
        let napi = match self.napi {
            Napi::Threaded if self.napi_fifo > 0 => format!(
                "NAPI threaded on core {}, SCHED_FIFO {}",
                self.napi_core, self.napi_fifo
            ),
            Napi::Threaded => format!("NAPI threaded on core {}", self.napi_core),
            Napi::Softirq => "NAPI in softirq (source's core)".into(),
        };
        format!(
            "XDP_REDIRECT up0->m0 ({}, {} XDP, {napi}, far veths: {})",
            match self.via {
                Via::Map => "devmap",
                Via::Direct => "bpf_redirect",
            },
            match self.mode {
                Mode::Native => "native",
                Mode::Generic => "generic",
            },
            match self.far {
                FarRx::Gro => "GRO",
                FarRx::Xdp => "XDP_PASS",
            }
        )
    }
}

/// veth XDP counters of the lab's links, summed over queues: `dev.rx_xdp_redirect`,
/// `dev.tx_xdp_xmit` (frames this veth's ndo_xdp_xmit put on its peer's ring), and so on, plus
/// `dev.rx_packets` from the link statistics.
pub(crate) fn counters(lab: &Lab) -> Result<BTreeMap<String, u64>> {
    let mut m = BTreeMap::new();
    for (role, devs) in [
        ("traffic", &["t0"][..]),
        ("app", &["up0", "m0"][..]),
        ("far", &["s0", "s1"][..]),
    ] {
        for dev in devs {
            let out = lab.sh(role, &["ethtool", "-S", dev])?;
            for (k, v) in parse_ethtool(&out) {
                *m.entry(format!("{dev}.{k}")).or_insert(0) += v;
            }
        }
        for (dev, (rx, _)) in lab.links_packets(role)? {
            if devs.contains(&dev.as_str()) {
                m.insert(format!("{dev}.rx_packets"), rx);
            }
        }
    }
    Ok(m)
}

/// [`counters`] read until two reads in a row agree (at most eight reads). The devices are read
/// one after another, so a frame the lab's hosts send on their own (an IPv6 MLD report from
/// t0) can pass up0 after up0 was read and m0 before m0 was: that one read then holds the frame
/// at m0 but not at up0 (it failed the chain's exact accounting once in CI). Two equal reads
/// exclude that: such a frame would have moved up0's counters between them. Called before the
/// sources start and after they stopped, when only such stray frames move.
pub(crate) fn settled_counters(lab: &Lab) -> Result<BTreeMap<String, u64>> {
    let mut last = counters(lab)?;
    for _ in 0..7 {
        let now = counters(lab)?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// `ethtool -S` of a veth: `rx_queue_N_X` and `tx_queue_N_X` become `rx_X` and `tx_X`.
fn parse_ethtool(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            let v: u64 = v.trim().parse().ok()?;
            let k = k.trim();
            for dir in ["rx", "tx"] {
                if let Some(rest) = k.strip_prefix(&format!("{dir}_queue_")) {
                    let (_, stat) = rest.split_once('_')?;
                    return Some((format!("{dir}_{stat}"), v));
                }
            }
            None
        })
        .collect()
}

/// Runs a util-linux tool on a NAPI thread; fails with its message.
fn run_tool(tool: &str, args: &[&str], thread: &str) -> Result<()> {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} {} ({thread}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// This process's nice value (field 19 of /proc/self/stat; 0 if unreadable).
fn own_nice() -> i32 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The command name (field 2) may hold spaces: count from the closing parenthesis.
            let rest = s.rsplit_once(')')?.1.to_owned();
            rest.split_whitespace().nth(16)?.parse().ok()
        })
        .unwrap_or(0)
}

/// NAPI kernel threads whose name starts with `napi/DEV-`: `(pid, name)`.
fn napi_threads(dev: &str) -> BTreeSet<(u32, String)> {
    let want = format!("napi/{dev}-");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim();
            comm.starts_with(&want).then(|| (pid, comm.to_owned()))
        })
        .collect()
}

/// The peer set up on a lab: its processes and what to undo.
pub(crate) struct RedirectRun<'l> {
    lab: &'l Lab,
    opts: RedirectOpts,
    procs: Vec<Proc>,
    /// `(role, dev)` with GRO turned on for the run.
    gro: Vec<(&'static str, &'static str)>,
    /// t0 given a queue (undone at stop).
    qdisc: bool,
    /// App devices made threaded.
    threaded: Vec<&'static str>,
    /// NAPI threads pinned: `(pid, name)`.
    pinned: Vec<(u32, String)>,
    before: BTreeMap<String, u64>,
}

/// Longest the peer's processes may run: every run stops them long before.
const MAX_SECS: &str = "3600";

impl<'l> RedirectRun<'l> {
    pub(crate) fn start(lab: &'l Lab, both_ways: bool, opts: &RedirectOpts) -> Result<Self> {
        let mut r = Self {
            lab,
            opts: opts.clone(),
            procs: Vec::new(),
            gro: Vec::new(),
            qdisc: false,
            threaded: Vec::new(),
            pinned: Vec::new(),
            before: BTreeMap::new(),
        };
        let bench = sibling_bin("isopath-bench")?.display().to_string();
        // NAPI threads from before this peer touched the inputs: a thread not among them is
        // ours, whether the threaded write creates it or the XDP attach does (after an AF_XDP
        // peer ran on the lab, attaching starts up0's NAPI already threaded).
        let known: BTreeMap<&str, BTreeSet<(u32, String)>> = ["up0", "m0"]
            .into_iter()
            .map(|d| (d, napi_threads(d)))
            .collect();
        let mut far: Vec<(&'static str, &'static str)> = vec![("far", "s0"), ("far", "s1")];
        let mut inputs = vec!["up0"];
        if both_ways {
            far.push(("traffic", "t0"));
            inputs.push("m0");
        }
        match opts.far {
            FarRx::Gro => {
                for &(role, dev) in &far {
                    r.gro_on(role, dev)?;
                }
            }
            FarRx::Xdp => {
                for role in ["far", "traffic"] {
                    let devs: Vec<&str> = far.iter().filter(|x| x.0 == role).map(|x| x.1).collect();
                    if devs.is_empty() {
                        continue;
                    }
                    let args = vec![
                        bench.clone(),
                        "xdp-pass".into(),
                        "--iface".into(),
                        devs.join(","),
                        "--secs".into(),
                        MAX_SECS.into(),
                    ];
                    let mut p = lab.spawn(role, "xdp-pass", &args)?;
                    p.wait_ready(Duration::from_secs(10), None)?;
                    r.procs.push(p);
                }
            }
        }
        if opts.mode == Mode::Generic {
            // Live frames XDP_TX'd into t0 (and s0) reach the input veth only through its NAPI.
            for dev in &inputs {
                r.gro_on("app", dev)?;
            }
        }
        let mut args = vec![
            bench,
            "xdp-redirect".into(),
            "--iface".into(),
            "up0".into(),
            "--to".into(),
            "m0".into(),
            "--via".into(),
            format!("{:?}", opts.via).to_lowercase(),
            "--mode".into(),
            format!("{:?}", opts.mode).to_lowercase(),
            "--secs".into(),
            MAX_SECS.into(),
        ];
        if both_ways {
            args.push("--back".into());
        }
        let mut p = lab.spawn("app", "xdp-redirect", &args)?;
        p.wait_ready(Duration::from_secs(10), None)?;
        r.procs.push(p);
        if opts.napi == Napi::Threaded {
            for dev in inputs {
                let before = &known[dev];
                lab.sh(
                    "app",
                    &[
                        "sh",
                        "-c",
                        &format!("echo 1 > /sys/class/net/{dev}/threaded"),
                    ],
                )?;
                r.threaded.push(dev);
                // The threads are created by the write; look for a second in case they show
                // up late in /proc.
                let t = Instant::now();
                let new: Vec<_> = loop {
                    let new: Vec<_> = napi_threads(dev).difference(before).cloned().collect();
                    if !new.is_empty() || t.elapsed() > Duration::from_secs(1) {
                        break new;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                if new.is_empty() {
                    let now = lab
                        .sh("app", &["cat", &format!("/sys/class/net/{dev}/threaded")])
                        .unwrap_or_default();
                    bail!(
                        "{dev}: threaded NAPI on ({}), but no new napi/{dev}-* thread appeared \
                         (before: {before:?}, now: {:?})",
                        now.trim(),
                        napi_threads(dev)
                    );
                }
                for (pid, name) in new {
                    let pid_s = pid.to_string();
                    let core = opts.napi_core.to_string();
                    let prio = opts.napi_fifo.to_string();
                    run_tool("taskset", &["-pc", &core, &pid_s], &name)?;
                    if opts.napi_fifo > 0 {
                        run_tool("chrt", &["-f", "-p", &prio, &pid_s], &name)?;
                    } else {
                        // The priority the other peers' processes inherit from this one (a run
                        // under `nice -n -15` shields every peer from a busy machine alike).
                        let nice = own_nice().to_string();
                        run_tool("renice", &["-n", &nice, "-p", &pid_s], &name)?;
                    }
                    r.pinned.push((pid, name));
                }
            }
        }
        // The source's veth gets a queue: veth then answers a full peer ring with back-pressure
        // (it stops the queue and the AF_XDP source's next kick retries, as a NIC's full TX ring
        // does) instead of dropping; with veth's default `noqueue` a burst the input's NAPI
        // thread has not drained yet (a vCPU held off by the host) is dropped.
        lab.sh(
            "traffic",
            &[
                "tc", "qdisc", "replace", "dev", "t0", "root", "pfifo", "limit", "1000",
            ],
        )?;
        r.qdisc = true;
        r.before = settled_counters(lab)?;
        Ok(r)
    }

    fn gro_on(&mut self, role: &'static str, dev: &'static str) -> Result<()> {
        self.lab.sh(role, &["ethtool", "-K", dev, "gro", "on"])?;
        self.gro.push((role, dev));
        Ok(())
    }

    /// Stops the peer, undoes the set-up and returns its record: options, pinned threads and
    /// the counters' change over the run.
    pub(crate) fn stop(mut self) -> Result<Value> {
        let after = settled_counters(self.lab)?;
        let delta: BTreeMap<&String, u64> = after
            .iter()
            .map(|(k, v)| (k, v.saturating_sub(*self.before.get(k).unwrap_or(&0))))
            .filter(|(_, v)| *v > 0)
            .collect();
        self.threaded_off();
        let procs: Vec<Value> = std::mem::take(&mut self.procs)
            .into_iter()
            .map(Proc::stop_json)
            .collect::<Result<_>>()?;
        let out = json!({
            "options": self.opts,
            "napi_threads": self.pinned.iter().map(|(p, n)| json!({"pid": p, "name": n})).collect::<Vec<_>>(),
            "counters": delta,
            "processes": procs,
        });
        self.undo();
        Ok(out)
    }

    fn undo(&mut self) {
        self.threaded_off();
        for p in &mut self.procs {
            p.stop();
        }
        self.procs.clear();
        for (role, dev) in std::mem::take(&mut self.gro) {
            self.lab
                .sh_quiet(role, &["ethtool", "-K", dev, "gro", "off"]);
        }
        if std::mem::take(&mut self.qdisc) {
            self.lab
                .sh_quiet("traffic", &["tc", "qdisc", "del", "dev", "t0", "root"]);
        }
    }

    /// Threaded NAPI off, while the redirect program still holds the inputs' NAPI: switched off
    /// after the program (and with it the NAPI) was gone, the next peer's XDP program on up0
    /// got a NAPI that hardly polled (isopath at 0.015 Mpps after a threaded round).
    fn threaded_off(&mut self) {
        for dev in std::mem::take(&mut self.threaded) {
            self.lab.sh_quiet(
                "app",
                &[
                    "sh",
                    "-c",
                    &format!("echo 0 > /sys/class/net/{dev}/threaded"),
                ],
            );
        }
    }
}

impl Drop for RedirectRun<'_> {
    fn drop(&mut self) {
        self.undo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethtool_queues_are_summed_by_stat() {
        let text = "NIC statistics:\n     peer_ifindex: 7\n     rx_queue_0_xdp_packets: 10\n     \
                    rx_queue_1_xdp_packets: 5\n     rx_queue_0_xdp_redirect: 9\n     \
                    tx_queue_0_xdp_xmit: 3\n     tx_queue_1_xdp_xmit_errors: 2\n";
        let mut m = BTreeMap::new();
        for (k, v) in parse_ethtool(text) {
            *m.entry(k).or_insert(0) += v;
        }
        assert_eq!(m.get("rx_xdp_packets"), Some(&15));
        assert_eq!(m.get("rx_xdp_redirect"), Some(&9));
        assert_eq!(m.get("tx_xdp_xmit"), Some(&3));
        assert_eq!(m.get("tx_xdp_xmit_errors"), Some(&2));
        assert!(!m.contains_key("peer_ifindex"));
    }

    #[test]
    fn options_describe_themselves() {
        let o = RedirectOpts::default();
        assert_eq!(
            o.describe(),
            "XDP_REDIRECT up0->m0 (devmap, native XDP, NAPI threaded on core 1, far veths: GRO)"
        );
    }
}
