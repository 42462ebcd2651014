//! The forwarders and reference loops a run compares, all on the same lab path
//! (t0 → up0 → forwarder → m0 → s0) with the forwarder on core 1 and the source on core 0.
//!
//! | peer | what | arrivals counted |
//! |---|---|---|
//! | `isopath` | isopathd, L2 cross-connect up0 ↔ m0, flow tracking on (`[flows]` defaults) | s0 rx_packets |
//! | `isopath-notrack` | the same with `[flows] enabled = false` (a plain wire) | s0 rx_packets |
//! | `isopath-bond` | isopathd, up0 ↔ bond0 (active-backup over m0, m1; primary m0) | s0 + s1 rx_packets |
//! | `testpmd` | dpdk-testpmd io forward over two net_af_xdp vdevs | s0 rx_packets |
//! | `kernel-router` | Linux IPv4 forwarding in the appliance namespace (RPS to core 1) | s0 rx_packets |
//! | `kernel-conntrack` | the same router with conntrack on: nft `ct state` rules with counters in the forward hook, `nf_conntrack_acct` | s0 rx_packets |
//! | `kernel-bridge` | a Linux bridge over up0 and m0 (RPS to core 1) | s0 rx_packets |
//! | `xsk-fwd` | the bare AF_XDP forwarder (ceiling) | s0 rx_packets |
//! | `xdp-drop` | XDP_DROP on up0 (receive ceiling) | the program's counter |
//! | `isopath-rxdrop` | isopathd with up0 only, no cross-connect | worker `rx_drop_no_output` |
//! | `xsk-drop` | the bare AF_XDP rx-drop loop | its own count |
//! | `xdp-redirect` | XDP_REDIRECT up0 → m0 in the kernel (`redirect.rs`, `--redirect-*`) | s0 + s1 rx_packets |
//!
//! Forwarders also run both ways (`--both-ways`): a second source on the far side's s0
//! transmits into m0, and the frames forwarded back are counted on t0 (rx_packets, nftables
//! ingress drop). The drop peers and the receive ceiling have no way back.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::lab::{Lab, MAC_BR0, MAC_M0, MAC_T0, MAC_UP0, Proc, isopath_status, sibling_bin};

/// A peer under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Peer {
    Isopath,
    IsopathNotrack,
    IsopathBond,
    Testpmd,
    KernelRouter,
    KernelConntrack,
    KernelBridge,
    XskFwd,
    XdpDrop,
    IsopathRxdrop,
    XskDrop,
    XdpRedirect,
}

impl Peer {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::Isopath => "isopath",
            Peer::IsopathNotrack => "isopath-notrack",
            Peer::IsopathBond => "isopath-bond",
            Peer::Testpmd => "testpmd",
            Peer::KernelRouter => "kernel-router",
            Peer::KernelConntrack => "kernel-conntrack",
            Peer::KernelBridge => "kernel-bridge",
            Peer::XskFwd => "xsk-fwd",
            Peer::XdpDrop => "xdp-drop",
            Peer::IsopathRxdrop => "isopath-rxdrop",
            Peer::XskDrop => "xsk-drop",
            Peer::XdpRedirect => "xdp-redirect",
        }
    }

    /// A reference loop rather than a forwarder under test.
    pub(crate) fn is_ceiling(self) -> bool {
        matches!(self, Peer::XskFwd | Peer::XdpDrop | Peer::XskDrop)
    }

    /// Whether the peer forwards to s0 (as opposed to dropping on up0).
    pub(crate) fn forwards(self) -> bool {
        !matches!(self, Peer::XdpDrop | Peer::IsopathRxdrop | Peer::XskDrop)
    }

    /// Destination MAC the source must use.
    pub(crate) fn dst_mac(self) -> &'static str {
        match self {
            Peer::KernelRouter | Peer::KernelConntrack => MAC_UP0,
            _ => MAC_BR0,
        }
    }

    /// Destination MAC of the reverse source (s0 → m0 → t0) in a both-ways run.
    pub(crate) fn reverse_dst_mac(self) -> &'static str {
        match self {
            Peer::KernelRouter | Peer::KernelConntrack => MAC_M0,
            _ => MAC_T0,
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Peer::Isopath => {
                "isopathd, L2 cross-connect up0<->m0, flow tracking on, worker on core 1"
            }
            Peer::IsopathNotrack => {
                "isopathd, L2 cross-connect up0<->m0, [flows] enabled = false, worker on core 1"
            }
            Peer::IsopathBond => {
                "isopathd, up0<->bond0 (active-backup over m0, m1, primary m0), worker on core 1"
            }
            Peer::Testpmd => {
                "dpdk-testpmd --forward-mode=io over net_af_xdp up0/m0, forwarding lcore 1"
            }
            Peer::KernelRouter => "Linux IPv4 forwarding up0->m0, RPS to core 1",
            Peer::KernelConntrack => {
                "Linux IPv4 forwarding up0->m0 with conntrack (nft ct state rules, accounting), RPS to core 1"
            }
            Peer::KernelBridge => "Linux bridge over up0 and m0, RPS to core 1",
            Peer::XskFwd => "bare AF_XDP forwarder (isopath-bench xsk-fwd), core 1",
            Peer::XdpDrop => "XDP_DROP on up0 (isopath-bench xdp-drop)",
            Peer::IsopathRxdrop => "isopathd with up0 only, no cross-connect: rx_drop_no_output",
            Peer::XskDrop => "bare AF_XDP rx-drop loop (isopath-bench xsk-drop), core 1",
            Peer::XdpRedirect => "XDP_REDIRECT up0->m0 in the kernel (see --redirect-* options)",
        }
    }
}

/// A started peer: its processes and how to undo its set-up.
pub(crate) struct Running<'l> {
    peer: Peer,
    lab: &'l Lab,
    both_ways: bool,
    proc: Option<Proc>,
    socket: Option<PathBuf>,
    work: PathBuf,
    redirect: Option<crate::redirect::RedirectRun<'l>>,
}

impl std::fmt::Debug for Running<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("peer", &self.peer).finish()
    }
}

/// Longest a peer may run: every run stops it long before.
const PEER_MAX_SECS: &str = "3600";

/// Starts `peer` on the lab; `both_ways` also sets up the way back (m0 → up0) where the
/// peer needs it (the kernel peers).
pub(crate) fn start<'l>(
    lab: &'l Lab,
    peer: Peer,
    work: &std::path::Path,
    both_ways: bool,
) -> Result<Running<'l>> {
    start_with(
        lab,
        peer,
        work,
        both_ways,
        &crate::redirect::RedirectOpts::default(),
    )
}

/// [`start`] with the xdp-redirect peer's options.
pub(crate) fn start_with<'l>(
    lab: &'l Lab,
    peer: Peer,
    work: &std::path::Path,
    both_ways: bool,
    redirect: &crate::redirect::RedirectOpts,
) -> Result<Running<'l>> {
    let mut r = Running {
        peer,
        lab,
        both_ways,
        proc: None,
        socket: None,
        work: work.to_path_buf(),
        redirect: None,
    };
    let bench = sibling_bin("isopath-bench")?.display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match peer {
        Peer::Isopath | Peer::IsopathNotrack | Peer::IsopathRxdrop | Peer::IsopathBond => {
            let sock = PathBuf::from(format!("/run/isopath/bench-{}.sock", lab.prefix));
            let rest = match peer {
                Peer::Isopath => {
                    "[[port]]\nname = \"m0\"\n[[cross_connect]]\na = \"up0\"\nb = \"m0\"\n"
                }
                Peer::IsopathNotrack => concat!(
                    "[[port]]\nname = \"m0\"\n[[cross_connect]]\na = \"up0\"\nb = \"m0\"\n",
                    "[flows]\nenabled = false\n"
                ),
                // The shape of README's bonding section and tests/src/isopathd.rs bond_config;
                // primary m0, so a both-ways run's reverse source (on s0) feeds the active member.
                Peer::IsopathBond => concat!(
                    "[[port]]\nname = \"m0\"\n[[port]]\nname = \"m1\"\n",
                    "[[bond]]\nname = \"bond0\"\nmembers = [\"m0\", \"m1\"]\nprimary = \"m0\"\n",
                    "[[cross_connect]]\na = \"up0\"\nb = \"bond0\"\n"
                ),
                _ => "",
            };
            let p = spawn_isopathd(lab, &sock, work, peer.name(), rest)?;
            if peer == Peer::IsopathBond {
                wait_active(&sock, "m0")?;
            }
            r.proc = Some(p);
            r.socket = Some(sock);
        }
        Peer::Testpmd => {
            let args = s(&[
                "dpdk-testpmd",
                "-l",
                "0,1",
                "--main-lcore",
                "0",
                "--no-pci",
                "--no-huge",
                "-m",
                "256",
                "--file-prefix",
                &format!("{}f", lab.prefix),
                "--log-level=pmd.net.af_xdp:error",
                "--vdev",
                "net_af_xdp0,iface=up0",
                "--vdev",
                "net_af_xdp1,iface=m0",
                "--",
                "--forward-mode=io",
                "--nb-cores=1",
                "--total-num-mbufs=16384",
                "--auto-start",
                "--stats-period",
                "60",
            ]);
            let mut p = lab.spawn("app", "testpmd", &args)?;
            // testpmd prints no ready line of its own on stderr; give it its start-up time.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if !p.running() {
                    bail!("dpdk-testpmd exited at start: {}", p.stderr_text());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            r.proc = Some(p);
        }
        Peer::KernelRouter | Peer::KernelConntrack => {
            kernel_common(lab, both_ways)?;
            lab.sh("app", &["ip", "link", "set", "dev", "m0", "arp", "on"])?;
            lab.sh(
                "app",
                &["ip", "addr", "add", "198.19.0.254/24", "dev", "up0"],
            )?;
            lab.sh(
                "app",
                &["ip", "addr", "add", "198.19.1.254/24", "dev", "m0"],
            )?;
            lab.sh("app", &["ip", "route", "add", "198.18.0.2/32", "dev", "m0"])?;
            lab.sh(
                "app",
                &[
                    "ip",
                    "neigh",
                    "replace",
                    "198.18.0.2",
                    "lladdr",
                    MAC_BR0,
                    "dev",
                    "m0",
                    "nud",
                    "permanent",
                ],
            )?;
            if both_ways {
                lab.sh("app", &["ip", "link", "set", "dev", "up0", "arp", "on"])?;
                lab.sh(
                    "app",
                    &["ip", "route", "add", "198.18.0.1/32", "dev", "up0"],
                )?;
                lab.sh(
                    "app",
                    &[
                        "ip",
                        "neigh",
                        "replace",
                        "198.18.0.1",
                        "lladdr",
                        MAC_T0,
                        "dev",
                        "up0",
                        "nud",
                        "permanent",
                    ],
                )?;
            }
            lab.sh(
                "app",
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.up0.rp_filter=0",
                ],
            )?;
            if peer == Peer::KernelConntrack {
                conntrack_on(lab)?;
            }
        }
        Peer::KernelBridge => {
            kernel_common(lab, both_ways)?;
            lab.sh(
                "app",
                &[
                    "ip",
                    "link",
                    "add",
                    "benchbr",
                    "type",
                    "bridge",
                    "stp_state",
                    "0",
                ],
            )?;
            lab.sh("app", &["ip", "link", "set", "up0", "master", "benchbr"])?;
            lab.sh("app", &["ip", "link", "set", "m0", "master", "benchbr"])?;
            lab.sh("app", &["ip", "link", "set", "benchbr", "up"])?;
            lab.sh(
                "app",
                &[
                    "bridge", "fdb", "add", MAC_BR0, "dev", "m0", "master", "static",
                ],
            )?;
            if both_ways {
                lab.sh(
                    "app",
                    &[
                        "bridge", "fdb", "add", MAC_T0, "dev", "up0", "master", "static",
                    ],
                )?;
            }
        }
        Peer::XskFwd | Peer::XskDrop | Peer::XdpDrop => {
            let batch = std::env::var("ISOPATH_BENCH_BARE_BATCH").unwrap_or_else(|_| "64".into());
            let mut args = vec![bench];
            match peer {
                Peer::XskFwd => args.extend(s(&[
                    "xsk-fwd", "--iface", "up0", "--to", "m0", "--core", "1",
                ])),
                Peer::XskDrop => args.extend(s(&["xsk-drop", "--iface", "up0", "--core", "1"])),
                _ => args.extend(s(&["xdp-drop", "--iface", "up0"])),
            }
            args.extend(s(&["--secs", PEER_MAX_SECS]));
            if peer != Peer::XdpDrop {
                args.extend(s(&["--batch", &batch]));
            }
            // A socket of the previous peer may still be releasing its queue (EBUSY): retry.
            let mut tries = 0;
            let p = loop {
                let mut p = lab.spawn("app", peer.name(), &args)?;
                match p.wait_ready(Duration::from_secs(10), None) {
                    Ok(()) => break p,
                    Err(e) if tries < 5 && e.to_string().contains("busy") => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(e) => return Err(e),
                }
            };
            r.proc = Some(p);
        }
        Peer::XdpRedirect => {
            r.redirect = Some(crate::redirect::RedirectRun::start(
                lab, both_ways, redirect,
            )?);
        }
    }
    Ok(r)
}

/// Starts isopathd in the appliance namespace, worker on core 1, with `rest` after its
/// `[daemon]`, `[workers]` and up0 `[[port]]` sections; waits for its ready line.
fn spawn_isopathd(
    lab: &Lab,
    sock: &std::path::Path,
    work: &std::path::Path,
    name: &str,
    rest: &str,
) -> Result<Proc> {
    let cfg = format!(
        "[daemon]\ncontrol_socket = \"{}\"\n[workers]\ncores = [1]\n[[port]]\nname = \"up0\"\n{rest}",
        sock.display()
    );
    let path = work.join(format!("isopath-{name}.toml"));
    std::fs::write(&path, cfg)?;
    let d = sibling_bin("isopathd")?.display().to_string();
    let mut p = lab.spawn(
        "app",
        "isopathd",
        &[d, "-c".into(), path.display().to_string(), "--force".into()],
    )?;
    p.wait_ready(Duration::from_secs(30), Some(" ready "))?;
    Ok(p)
}

/// The `isopath` peer (L2 cross-connect up0 <-> m0, flow tracking on) with these `[flows]`
/// settings (TOML lines), for the dump benchmark.
pub(crate) fn start_isopath_flows<'l>(
    lab: &'l Lab,
    work: &std::path::Path,
    flows_toml: &str,
) -> Result<Running<'l>> {
    let sock = PathBuf::from(format!("/run/isopath/bench-{}.sock", lab.prefix));
    let rest = format!(
        "[[port]]\nname = \"m0\"\n[[cross_connect]]\na = \"up0\"\nb = \"m0\"\n[flows]\n{flows_toml}"
    );
    let p = spawn_isopathd(lab, &sock, work, "isopath-dump", &rest)?;
    Ok(Running {
        peer: Peer::Isopath,
        lab,
        both_ways: false,
        proc: Some(p),
        socket: Some(sock),
        work: work.to_path_buf(),
        redirect: None,
    })
}

/// Kernel peers: frames XDP_TX'd into t0 reach up0 only if up0 runs NAPI (GRO on, pitfall 6),
/// and veth runs the receive work on the sender's core: RPS moves it to core 1. Both ways, m0
/// receives the reverse source's frames and needs the same.
fn kernel_common(lab: &Lab, both_ways: bool) -> Result<()> {
    for dev in kernel_rx_devs(both_ways) {
        lab.sh("app", &["ethtool", "-K", dev, "gro", "on"])?;
        for q in 0..crate::xsk::rx_queues_in(lab, dev) {
            lab.sh(
                "app",
                &[
                    "sh",
                    "-c",
                    &format!("echo 2 > /sys/class/net/{dev}/queues/rx-{q}/rps_cpus"),
                ],
            )?;
        }
    }
    Ok(())
}

/// The nftables table of `kernel-conntrack` in the appliance namespace.
const CT_TABLE: &str = "benchct";
/// Its rules, in the forward hook, each with a counter: every forwarded frame goes through a
/// conntrack lookup (and an insert for a new flow) and one `ct state` match.
const CT_RULES: [&str; 3] = [
    "ct state established,related counter accept",
    "ct state new counter accept",
    "ct state invalid counter drop",
];

/// Conntrack on in the router: the `ct` expressions register conntrack's hooks in the
/// namespace (nf_ct_netns_get), and accounting keeps packets and bytes per entry as isopath's
/// table does.
fn conntrack_on(lab: &Lab) -> Result<()> {
    lab.sh(
        "app",
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"],
    )?;
    lab.sh("app", &["nft", "add", "table", "inet", CT_TABLE])?;
    lab.sh(
        "app",
        &[
            "nft",
            "add",
            "chain",
            "inet",
            CT_TABLE,
            "ctfwd",
            "{ type filter hook forward priority 0; }",
        ],
    )?;
    for rule in CT_RULES {
        let mut args = vec!["nft", "add", "rule", "inet", CT_TABLE, "ctfwd"];
        args.extend(rule.split(' '));
        lab.sh("app", &args)?;
    }
    Ok(())
}

/// `kernel-conntrack`'s state at the end of a run: entries in the table and each rule's
/// counter (`{"entries", "established", "new", "invalid"}`, packets).
fn conntrack_state(lab: &Lab) -> Result<serde_json::Value> {
    let entries: u64 = lab
        .sh(
            "app",
            &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"],
        )?
        .trim()
        .parse()
        .context("nf_conntrack_count")?;
    let out = lab.sh("app", &["nft", "-j", "list", "table", "inet", CT_TABLE])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("nft -j list table")?;
    let mut state = serde_json::json!({ "entries": entries });
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(expr) = item["rule"]["expr"].as_array() else {
            continue;
        };
        let packets = expr.iter().find_map(|e| e["counter"]["packets"].as_u64());
        let states = expr.iter().find_map(|e| {
            let m = &e["match"];
            (m["left"]["ct"]["key"] == "state").then(|| m["right"].clone())
        });
        if let (Some(p), Some(st)) = (packets, states) {
            let name = match &st {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => {
                    a.first().and_then(|x| x.as_str()).unwrap_or("").to_owned()
                }
                _ => continue,
            };
            state[name] = p.into();
        }
    }
    Ok(state)
}

fn kernel_rx_devs(both_ways: bool) -> &'static [&'static str] {
    if both_ways { &["up0", "m0"] } else { &["up0"] }
}

/// Waits until the bond behind `socket` has `member` active (the bond selects its member on
/// the first link tick after start).
fn wait_active(socket: &std::path::Path, member: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        let st = isopath_status(socket)?;
        let active = st["bonds"][0]["active"].as_str().map(str::to_owned);
        if active.as_deref() == Some(member) {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!("bond0 has active member {active:?} after 10 s, expected {member}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Running<'_> {
    /// The peer's main process id (isopathd's for the isopath peers).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The isopath peers' control socket.
    pub(crate) fn socket(&self) -> Option<&std::path::Path> {
        self.socket.as_deref()
    }

    /// The peer's own count of frames, with the time it was read (for the drop peers whose
    /// arrivals are not seen on s0): `(frames, seconds)`.
    pub(crate) fn own_count(&self) -> Result<Option<(u64, f64)>> {
        match self.peer {
            Peer::IsopathRxdrop => {
                let st = isopath_status(self.socket.as_ref().expect("isopath has a socket"))?;
                let n: u64 = st["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["drops"]["rx_drop_no_output"].as_u64().unwrap_or(0))
                    .sum();
                Ok(Some((n, crate::now_secs())))
            }
            Peer::XskDrop | Peer::XdpDrop => {
                let p = self.proc.as_ref().expect("a process").progress();
                Ok(Some((
                    p.value["packets"].as_u64().unwrap_or(0),
                    p.value["t"].as_f64().unwrap_or(0.0),
                )))
            }
            _ => Ok(None),
        }
    }

    /// What a kernel peer's own tables say at the end of a run (`kernel-conntrack`: entries
    /// and rule counters), for the report.
    pub(crate) fn kernel_state(&self) -> Option<serde_json::Value> {
        (self.peer == Peer::KernelConntrack).then(|| {
            conntrack_state(self.lab)
                .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
        })
    }

    /// The isopathd status document, for isopath peers.
    pub(crate) fn isopath_status(&self) -> Option<serde_json::Value> {
        self.socket.as_ref().and_then(|s| isopath_status(s).ok())
    }

    /// Stops the peer and undoes its set-up; returns its final JSON when it prints one.
    pub(crate) fn stop(mut self) -> Result<Option<serde_json::Value>> {
        let lab = self.lab;
        if let Some(x) = self.redirect.take() {
            return x.stop().map(Some);
        }
        let out = match self.proc.take() {
            Some(p) if matches!(self.peer, Peer::XskFwd | Peer::XskDrop | Peer::XdpDrop) => {
                Some(p.stop_json()?)
            }
            Some(mut p) => {
                p.stop();
                None
            }
            None => None,
        };
        self.undo(lab);
        let _ = &self.work;
        Ok(out)
    }

    fn undo(&mut self, lab: &Lab) {
        match self.peer {
            Peer::KernelRouter | Peer::KernelConntrack => {
                if self.peer == Peer::KernelConntrack {
                    lab.sh_quiet("app", &["nft", "delete", "table", "inet", CT_TABLE]);
                    lab.sh_quiet(
                        "app",
                        &["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=0"],
                    );
                }
                lab.sh_quiet("app", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
                lab.sh_quiet("app", &["ip", "neigh", "flush", "dev", "m0"]);
                lab.sh_quiet("app", &["ip", "route", "flush", "dev", "m0"]);
                lab.sh_quiet("app", &["ip", "addr", "flush", "dev", "up0"]);
                lab.sh_quiet("app", &["ip", "addr", "flush", "dev", "m0"]);
                lab.sh_quiet("app", &["ip", "neigh", "flush", "dev", "up0"]);
                lab.sh_quiet("app", &["ip", "route", "flush", "dev", "up0"]);
                lab.sh_quiet("app", &["ip", "link", "set", "dev", "m0", "arp", "off"]);
                lab.sh_quiet("app", &["ip", "link", "set", "dev", "up0", "arp", "off"]);
                kernel_undo(lab, self.both_ways);
            }
            Peer::KernelBridge => {
                lab.sh_quiet("app", &["ip", "link", "del", "benchbr"]);
                kernel_undo(lab, self.both_ways);
            }
            _ => {}
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
        let lab = self.lab;
        self.undo(lab);
    }
}

fn kernel_undo(lab: &Lab, both_ways: bool) {
    for dev in kernel_rx_devs(both_ways) {
        lab.sh_quiet("app", &["ethtool", "-K", dev, "gro", "off"]);
        for q in 0..crate::xsk::rx_queues_in(lab, dev) {
            lab.sh_quiet(
                "app",
                &[
                    "sh",
                    "-c",
                    &format!("echo 0 > /sys/class/net/{dev}/queues/rx-{q}/rps_cpus"),
                ],
            );
        }
    }
}

/// The testpmd version line, for the report.
pub(crate) fn testpmd_version() -> Option<String> {
    let out = std::process::Command::new("dpdk-testpmd")
        .arg("--version")
        .output()
        .ok()?;
    let t =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    t.lines()
        .find(|l| l.contains("DPDK"))
        .map(|l| l.trim().to_owned())
}

/// Fails early when a peer's tool is missing.
pub(crate) fn check_tools(peers: &[Peer]) -> Result<()> {
    let need = |tool: &str| -> Result<()> {
        let ok = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            bail!("{tool} is not installed (scripts/deps.sh installs it)")
        }
    };
    need("nft")?;
    need("ethtool")?;
    if peers.contains(&Peer::Testpmd) {
        need("dpdk-testpmd").context("peer testpmd")?;
    }
    if peers.iter().any(|p| {
        matches!(
            p,
            Peer::Isopath | Peer::IsopathNotrack | Peer::IsopathRxdrop | Peer::IsopathBond
        )
    }) {
        sibling_bin("isopathd")?;
    }
    Ok(())
}
