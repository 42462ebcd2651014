//! AF_XDP traffic loops built on the datapath's own UMEM and socket layer: a verifying
//! receiver, a source, and the two "bare" reference loops (a forwarder with no processing and
//! an rx-drop loop) that give the lab's AF_XDP ceilings.
//!
//! Every loop binds a socket on each RX queue of its interface(s) (the veth RX queue is picked
//! by the sender's CPU), feeds them through isopath's own XDP program (XSKMAP redirect) and
//! runs pinned on one core until its deadline. Progress goes to stderr as
//! `progress {json}` lines once per second; the result is one JSON object on stdout.

use std::{
    io::Write,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use isopath_datapath::{
    params::{RingParams, RingSize, XdpMode, ZeroCopy},
    xsk::{
        FrameBurst, Rings, SocketInfo, XskSocket, XskStats, XskUmem, r#gen::monotonic_ns, if_index,
        xdp::XdpProgram,
    },
};
use serde::Serialize;
use serde_json::json;

use crate::{
    hist::{Histogram, HistogramDump},
    track::{FlowStats, FlowTable},
    wire::{self, FrameSize, FrameSpec, Probe},
};

/// Flows listed one by one in a receiver's report; the totals cover all of them.
const MAX_LISTED_FLOWS: usize = 256;
const RING: u32 = 2048;

/// RX queues of `ifname` (from sysfs, which `ip netns exec` mounts for the namespace).
pub(crate) fn rx_queues(ifname: &str) -> Result<u32> {
    let dir = format!("/sys/class/net/{ifname}/queues");
    let n = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {dir}"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    Ok(n.max(1))
}

fn ring_params() -> RingParams {
    let r = RingSize::new("ring", RING).expect("2048 is a valid ring size");
    RingParams {
        rx: r,
        tx: r,
        fill: r,
        comp: r,
        ..RingParams::default()
    }
}

/// One interface's sockets (one per RX queue) and its XDP program.
struct Port {
    name: String,
    queues: Vec<XskSocket>,
    /// The program (`None` for TX-only sockets: nothing is loaded on the interface, nor is
    /// what is attached there looked at, so a peer's own program there is no obstacle).
    prog: Option<XdpProgram>,
}

impl Port {
    /// Binds a socket on every RX queue of `ifname` from `umem` and attaches isopath's XDP
    /// program (native mode) to redirect into them. With `rx = false` the sockets are for TX
    /// only and no program is attached.
    fn open(umem: &mut XskUmem, ifname: &str, rx: bool) -> Result<Self> {
        let ifindex = if_index(ifname)?;
        let prog = if rx {
            Some(XdpProgram::load(ifname, ifindex, false)?)
        } else {
            None
        };
        let mut queues = Vec::new();
        for q in 0..rx_queues(ifname)? {
            let s = umem.bind(ifname, q, ZeroCopy::Auto, 0)?;
            if let Some(p) = &prog {
                p.register(q, s.fd())?;
            }
            queues.push(s);
        }
        let mut port = Self {
            name: ifname.to_owned(),
            queues,
            prog,
        };
        if let Some(p) = &mut port.prog {
            p.attach(XdpMode::Native)?;
        }
        Ok(port)
    }

    fn xsk_stats(&self) -> XskStats {
        let mut t = XskStats::default();
        for q in &self.queues {
            if let Ok(s) = q.stats_reader().and_then(|r| r.read()) {
                t.rx_dropped += s.rx_dropped;
                t.rx_invalid_descs += s.rx_invalid_descs;
                t.tx_invalid_descs += s.tx_invalid_descs;
                t.rx_ring_full += s.rx_ring_full;
                t.rx_fill_ring_empty_descs += s.rx_fill_ring_empty_descs;
                t.tx_ring_empty_descs += s.tx_ring_empty_descs;
            }
        }
        t
    }

    fn report(&self) -> serde_json::Value {
        let k = self.xsk_stats();
        let x = self
            .prog
            .as_ref()
            .and_then(|p| p.stats().ok())
            .unwrap_or_default();
        json!({
            "iface": self.name,
            "queues": self.queues.len(),
            "bind": self.queues.first().map(|q| q.mode().to_string()),
            "xdp_rx_redirect": x.rx_redirect,
            "xdp_rx_drop_no_socket": x.rx_drop_no_socket,
            "xsk": {
                "rx_dropped": k.rx_dropped,
                "rx_ring_full": k.rx_ring_full,
                "rx_fill_ring_empty_descs": k.rx_fill_ring_empty_descs,
                "rx_invalid_descs": k.rx_invalid_descs,
                "tx_invalid_descs": k.tx_invalid_descs,
                "tx_ring_empty_descs": k.tx_ring_empty_descs,
            },
        })
    }
}

/// Prints a progress line at most once per second.
struct Ticker {
    start: Instant,
    next: Instant,
    loops: u32,
}

impl Ticker {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            next: now + Duration::from_secs(1),
            loops: 0,
        }
    }

    /// Whether a second has passed (the clock is read every 64 calls).
    #[inline]
    fn due(&mut self) -> Option<Instant> {
        self.loops = self.loops.wrapping_add(1);
        if !self.loops.is_multiple_of(64) {
            return None;
        }
        let now = Instant::now();
        if now >= self.next {
            self.next += Duration::from_secs(1);
            Some(now)
        } else {
            None
        }
    }

    fn secs(&self, now: Instant) -> f64 {
        (now - self.start).as_secs_f64()
    }
}

/// Writes one `progress {json}` line on stderr.
pub(crate) fn progress(v: &serde_json::Value) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "progress {v}");
}

/// What the receiver reports.
#[derive(Debug, Serialize)]
pub(crate) struct RecvReport {
    pub(crate) secs: f64,
    /// Frames taken from the RX rings (probes and others).
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    pub(crate) probes: u64,
    /// Frames that were not probes (ARP, foreign traffic).
    pub(crate) other: u64,
    pub(crate) rate_pps: f64,
    pub(crate) totals: FlowStats,
    pub(crate) flows: Vec<FlowStats>,
    pub(crate) latency: HistogramDump,
    pub(crate) port: serde_json::Value,
}

/// What a receive loop does with what arrives: one call per frame, one per second.
pub(crate) trait RxSink {
    /// A frame taken off an RX ring of port `port` (index into the interfaces given to
    /// [`Rx::open`]); `now` is the loop's clock, read once per burst.
    fn frame(&mut self, port: usize, now: u64, data: &[u8]);
    /// Once per second: seconds since the loop started and frames so far.
    fn second(&mut self, _t: f64, _frames: u64) {}
}

/// Sockets on every RX queue of one or more interfaces, sharing one UMEM, isopath's XDP program
/// redirecting into them, fill rings full.
pub(crate) struct Rx {
    // Sockets drop before the UMEM they share (fields drop in declaration order).
    ports: Vec<Port>,
    umem: XskUmem,
}

/// Totals of a receive loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxTotals {
    pub(crate) secs: f64,
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
}

impl Rx {
    /// Opens `ifaces` for receiving (every RX queue of each gets a socket).
    pub(crate) fn open(ifaces: &[&str]) -> Result<Self> {
        let mut nq = 0;
        for i in ifaces {
            nq += rx_queues(i)?;
        }
        let mut umem = XskUmem::new(ring_params(), nq * (RING + RING))?;
        let mut ports = Vec::new();
        for i in ifaces {
            ports.push(Port::open(&mut umem, i, true)?);
        }
        for p in &mut ports {
            for q in &mut p.queues {
                umem.refill(q, usize::MAX);
            }
        }
        Ok(Self { ports, umem })
    }

    /// Receives until `secs` pass or `stop` is raised (both checked once per second), handing
    /// every frame to `sink`; `clock` is read once per burst.
    pub(crate) fn run(
        &mut self,
        secs: Duration,
        stop: &AtomicBool,
        clock: impl Fn() -> u64,
        sink: &mut impl RxSink,
    ) -> RxTotals {
        let mut burst = FrameBurst::new();
        let (mut frames, mut bytes) = (0u64, 0u64);
        let mut tick = Ticker::new();
        let deadline = tick.start + secs;
        let mut idle = 0u32;
        let umem = &mut self.umem;
        loop {
            let mut got = 0;
            for (pi, p) in self.ports.iter_mut().enumerate() {
                for q in &mut p.queues {
                    let n = umem.rx_burst(q, &mut burst, 256);
                    if n == 0 {
                        umem.refill(q, usize::MAX);
                        continue;
                    }
                    got += n;
                    frames += n as u64;
                    bytes += burst.bytes();
                    let now = clock();
                    umem.retain(&mut burst, |f| {
                        sink.frame(pi, now, f);
                        false
                    });
                    umem.refill(q, n);
                }
            }
            if got == 0 {
                // Leave the core to a source that may share it; copy-mode RX needs no kick.
                idle += 1;
                if idle > 64 {
                    std::thread::sleep(Duration::from_micros(50));
                } else {
                    std::thread::yield_now();
                }
            } else {
                idle = 0;
            }
            if let Some(now) = tick.due() {
                sink.second(tick.secs(now), frames);
                if now >= deadline || stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
        RxTotals {
            secs: tick.start.elapsed().as_secs_f64(),
            frames,
            bytes,
        }
    }

    /// Per interface: sockets, bind mode, XDP and kernel socket counters.
    pub(crate) fn report(&self) -> Vec<serde_json::Value> {
        self.ports.iter().map(Port::report).collect()
    }
}

/// The verifying receiver's state: per-flow accounting and latency histograms.
#[derive(Default)]
struct Verify {
    flows: FlowTable,
    hist: Histogram,
    interval: Histogram,
    probes: u64,
    other: u64,
    last_frames: u64,
}

impl RxSink for Verify {
    #[inline]
    fn frame(&mut self, _port: usize, now: u64, data: &[u8]) {
        match wire::parse(data) {
            Some(p) => {
                self.probes += 1;
                self.flows.record(p.flow, p.seq);
                let lat = u64::from((now as u32).wrapping_sub(p.ts));
                self.hist.record(lat);
                self.interval.record(lat);
            }
            None => self.other += 1,
        }
    }

    fn second(&mut self, t: f64, frames: u64) {
        let tot = self.flows.totals();
        progress(&json!({
            "t": t,
            "packets": frames,
            "pps": frames - self.last_frames,
            "lost": tot.lost,
            "reordered": tot.reordered,
            "duplicates": tot.duplicates,
            "p50_ns": self.interval.quantile(0.5),
            "p99_ns": self.interval.quantile(0.99),
        }));
        self.last_frames = frames;
        self.interval = Histogram::default();
    }
}

/// The verifying receiver: counts per flow (loss, duplicates, reordering) and records latency.
pub(crate) fn recv(
    ifname: &str,
    secs: Duration,
    core: Option<usize>,
    stop: &AtomicBool,
) -> Result<RecvReport> {
    crate::bpf::pin(core)?;
    let mut rx = Rx::open(&[ifname])?;
    eprintln!("ready");
    let mut v = Verify::default();
    let t = rx.run(secs, stop, monotonic_ns, &mut v);
    let mut all = v.flows.stats();
    all.truncate(MAX_LISTED_FLOWS);
    Ok(RecvReport {
        secs: t.secs,
        frames: t.frames,
        bytes: t.bytes,
        probes: v.probes,
        other: v.other,
        rate_pps: t.frames as f64 / t.secs,
        totals: v.flows.totals(),
        flows: all,
        latency: v.hist.dump(),
        port: rx.report().pop().unwrap_or_default(),
    })
}

/// Parameters of the AF_XDP source.
#[derive(Debug, Clone)]
pub(crate) struct XskGen {
    pub(crate) spec: FrameSpec,
    pub(crate) size: FrameSize,
    pub(crate) flows: u16,
    /// Frames per second; 0 = as fast as the socket takes them.
    pub(crate) rate_pps: u64,
    /// Frames to replay instead of generated probes (from a pcap file).
    pub(crate) replay: Vec<Vec<u8>>,
    /// Send exactly this many frames and stop (unpaced: a back-to-back burst).
    pub(crate) count: Option<u64>,
}

/// The AF_XDP source: frames written into UMEM frames and queued on TX, paced by a token bucket
/// (depth: one burst of 8 frames; 64 unpaced).
pub(crate) fn send(
    ifname: &str,
    g: &XskGen,
    secs: Duration,
    core: Option<usize>,
    stop: &AtomicBool,
) -> Result<serde_json::Value> {
    crate::bpf::pin(core)?;
    let params = ring_params();
    let nq = 1;
    let mut umem = XskUmem::new(params, nq * (RING + RING))?;
    let mut port = Port::open(&mut umem, ifname, false)?;
    port.queues.truncate(1);
    eprintln!("ready");
    // Templates (flow 0, seq 0, ts 0) per frame size, stamped per frame.
    let sizes: Vec<usize> = match g.size {
        FrameSize::Fixed(s) => vec![s],
        FrameSize::Imix => wire::IMIX.iter().map(|x| x.0).collect(),
    };
    if g.replay.is_empty() {
        for &s in &sizes {
            if s < g.spec.min_size() {
                bail!(
                    "frame size {s} is below {} for this header stack",
                    g.spec.min_size()
                );
            }
        }
    }
    let templates: Vec<(usize, Vec<u8>)> = sizes
        .iter()
        .map(|&s| {
            (
                s,
                g.spec.build(
                    s.max(g.spec.min_size()),
                    Probe {
                        flow: 0,
                        seq: 0,
                        ts: 0,
                    },
                ),
            )
        })
        .collect();
    let flows = u64::from(g.flows.max(1));
    let mut scratch = FrameBurst::new();
    let mut sent = 0u64;
    let mut bytes = 0u64;
    let mut last = 0u64;
    let mut tick = Ticker::new();
    let deadline = tick.start + secs;
    // Paced, at most 8 frames per kick: a source that fell behind (descheduled) and then sent
    // 64 at once overflowed a threaded-NAPI veth's 256-frame ring on this lab (7,014 of 80,008
    // refused at 20 kpps); unpaced, 64 (fewer syscalls).
    let burst = if g.rate_pps > 0 { 8u64 } else { 64 };
    // A paced source that fell further behind than this skips the rest of its debt (counted
    // in `late_skipped`) instead of catching up: back-to-back kicks of 8 are still one burst at
    // the syscall rate, and a burst of more than the receiver's ring (256 on veth) is refused
    // there however fast its consumer is. The frames skipped were never offered, so the
    // report's rate is what the source really sent.
    const MAX_DEBT: u64 = 32;
    let mut late_skipped = 0u64;
    let q = &mut port.queues[0];
    loop {
        let want = if g.rate_pps == 0 {
            burst
        } else {
            // Frames due by now, never more than by the deadline (a source descheduled
            // across the deadline must not catch up past it).
            let t_ns = tick.start.elapsed().min(secs).as_nanos() as u64;
            let allowed = t_ns.saturating_mul(g.rate_pps) / 1_000_000_000;
            let debt = allowed.saturating_sub(sent + late_skipped);
            late_skipped += debt.saturating_sub(MAX_DEBT);
            debt.min(burst)
        };
        let want = g.count.map_or(want, |c| want.min(c - sent));
        if want > 0 {
            let now = monotonic_ns() as u32;
            let base = sent;
            let n = umem.tx_from_pool(q, want as usize, |i, buf| {
                let k = base + i as u64;
                if !g.replay.is_empty() {
                    let f = &g.replay[(k % g.replay.len() as u64) as usize];
                    let len = f.len().min(buf.len());
                    buf[..len].copy_from_slice(&f[..len]);
                    return len;
                }
                let size = wire::size_of_frame(g.size, k);
                let t = &templates
                    .iter()
                    .find(|t| t.0 == size)
                    .expect("a template per size")
                    .1;
                let f = &mut buf[..t.len()];
                f.copy_from_slice(t);
                let flow = (k % flows) as u16;
                g.spec.stamp(
                    f,
                    Probe {
                        flow,
                        seq: (k / flows) as u32,
                        ts: now,
                    },
                );
                t.len()
            });
            sent += n as u64;
            bytes += (0..n as u64)
                .map(|i| {
                    if g.replay.is_empty() {
                        wire::size_of_frame(g.size, base + i) as u64 - wire::FCS_LEN as u64
                    } else {
                        g.replay[((base + i) % g.replay.len() as u64) as usize].len() as u64
                    }
                })
                .sum::<u64>();
        }
        umem.kick_tx(q);
        umem.reap(q, &mut scratch);
        if g.count.is_some_and(|c| sent >= c) {
            break;
        }
        if want == 0 && g.rate_pps > 0 {
            // Paced and nothing due: sleep until the next frame is (at most 1 ms). Spinning
            // here starves what shares the core: on veth the receiving side's NAPI runs on
            // the sender's core, and a spinning source left it too little time (frames
            // dropped at the peer's ring when two sources shared core 0).
            let due_ns = (sent + late_skipped + 1).saturating_mul(1_000_000_000) / g.rate_pps;
            let now_ns = tick.start.elapsed().as_nanos() as u64;
            let wait = Duration::from_nanos(due_ns.saturating_sub(now_ns).min(1_000_000));
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        if let Some(now) = tick.due() {
            progress(&json!({"t": tick.secs(now), "sent": sent, "pps": sent - last}));
            last = sent;
            if now >= deadline || stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    // Let the ring drain so that every frame counted as sent left.
    let until = Instant::now() + Duration::from_millis(500);
    while q.in_tx() > 0 && Instant::now() < until {
        umem.kick_tx(q);
        umem.reap(q, &mut scratch);
    }
    let secs = tick.start.elapsed().as_secs_f64();
    Ok(json!({
        "source": "xsk",
        "sent": sent,
        "bytes": bytes,
        "secs": secs,
        "rate_pps": sent as f64 / secs,
        "unsent_at_exit": q.in_tx(),
        "late_skipped": late_skipped,
        "port": port.report(),
    }))
}

/// The bare AF_XDP forwarder: every frame in on one interface leaves on the other, nothing else
/// (no counters but its own total, no checks), `batch` frames per RX burst, TX budget = ring
/// size. With `b = None`
/// it is the bare rx-drop loop: frames are taken from the RX ring and returned to the pool.
pub(crate) fn bare(
    a: &str,
    b: Option<&str>,
    batch: usize,
    secs: Duration,
    core: Option<usize>,
    stop: &AtomicBool,
) -> Result<serde_json::Value> {
    crate::bpf::pin(core)?;
    let ifaces: Vec<&str> = std::iter::once(a).chain(b).collect();
    // The UMEM is bound first so that it drops after the sockets.
    let Rx {
        mut umem,
        mut ports,
    } = Rx::open(&ifaces)?;
    eprintln!("ready");
    let mut burst = FrameBurst::new();
    let mut scratch = FrameBurst::new();
    let (mut rx, mut tx, mut dropped) = (0u64, 0u64, 0u64);
    // Queue polls that found frames (bench/scripts/callgrind.sh tells them from idle polls).
    let mut busy_polls = 0u64;
    let mut last = 0;
    let mut tick = Ticker::new();
    let deadline = tick.start + secs;
    let forward = ports.len() == 2;
    loop {
        for pi in 0..ports.len() {
            for qi in 0..ports[pi].queues.len() {
                let n = rx_poll(&mut umem, &mut ports[pi].queues[qi], &mut burst, batch);
                // Top the fill ring up every loop, not only by what RX took: when the pool ran
                // short (frames on TX), a refill of `n` falls behind for good and RX starves.
                umem.refill(&mut ports[pi].queues[qi], usize::MAX);
                if n == 0 {
                    continue;
                }
                busy_polls += 1;
                rx += n as u64;
                if forward {
                    let out = &mut ports[1 - pi];
                    let oq = qi.min(out.queues.len() - 1);
                    tx += umem.tx_burst(&mut out.queues[oq], &mut burst) as u64;
                }
                dropped += umem.drop_from(&mut burst, 0) as u64;
                umem.refill(&mut ports[pi].queues[qi], n);
            }
        }
        if forward {
            for p in &mut ports {
                for q in &mut p.queues {
                    umem.kick_tx(q);
                    umem.reap(q, &mut scratch);
                }
            }
        }
        if let Some(now) = tick.due() {
            progress(&json!({"t": tick.secs(now), "packets": rx, "pps": rx - last, "tx": tx}));
            last = rx;
            if now >= deadline || stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    let secs = tick.start.elapsed().as_secs_f64();
    let audit = umem.audit();
    Ok(json!({
        "mode": if forward { "forward" } else { "rx-drop" },
        "rx": rx,
        "tx": tx,
        "dropped": dropped,
        "busy_polls": busy_polls,
        "secs": secs,
        "rate_pps": rx as f64 / secs,
        "batch": batch,
        "frames_unaccounted": audit.unaccounted(),
        "ports": ports.iter().map(Port::report).collect::<Vec<_>>(),
    }))
}

/// One queue poll of the bare forwarder, out of line: `bench/scripts/callgrind.sh` counts its
/// calls to tell a window's loops (the datapath's `rx_burst` is inlined into the loop).
#[inline(never)]
fn rx_poll(umem: &mut XskUmem, q: &mut XskSocket, burst: &mut FrameBurst, batch: usize) -> usize {
    umem.rx_burst(q, burst, batch)
}

/// RX queues of `ifname` in the lab namespace `role` (from the namespace's sysfs).
pub(crate) fn rx_queues_in(lab: &crate::lab::Lab, ifname: &str) -> u32 {
    lab.sh(
        "app",
        &[
            "sh",
            "-c",
            &format!("ls -d /sys/class/net/{ifname}/queues/rx-* | wc -l"),
        ],
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(1)
}
