//! The daemon: builds ports and workers from a [`Plan`], runs the control loop, stops cleanly.
//!
//! Start order: load every port's XDP program and look at what is on each interface (a
//! foreign program refuses start before anything changes); clear stale programs of ours; bind
//! every worker's sockets and register them in their port's XSKMAP; attach the programs; start
//! the workers. Only then is the control socket answered with `running`. Stop is the reverse:
//! workers drain TX and hand back their frame audit, programs are detached (their links closed),
//! sockets closed, the control socket file removed.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use isopath_datapath::{
    params::BindMode,
    stats::{DropReason, LinkState},
    worker::{WorkerBuilder, WorkerExit, WorkerHandle},
    xsk::{
        XskStats, XskStatsReader,
        xdp::{Previous, XdpProgram},
    },
};
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::{config::Plan, host::Host};

/// How often the control loop wakes up (signals, link state, control socket).
const TICK: Duration = Duration::from_millis(20);
/// How often carrier is read (a safety net until rtnetlink events drive it).
const LINK_POLL: Duration = Duration::from_millis(50);

/// Process exit codes of `isopathd`.
pub mod exit {
    /// Stopped cleanly.
    pub const OK: u8 = 0;
    /// Start-up or run-time failure.
    pub const FAILURE: u8 = 1;
    /// Bad configuration or command line.
    pub const CONFIG: u8 = 2;
    /// A worker's frames did not add up at shutdown.
    pub const FRAME_LEAK: u8 = 3;
}

/// A port while the daemon runs.
struct Port {
    name: String,
    prog: XdpProgram,
    link: Arc<LinkState>,
    /// Per-socket kernel statistics readers, by queue.
    xsk: Vec<(u32, XskStatsReader)>,
    modes: Vec<BindMode>,
}

struct RunningWorker {
    handle: WorkerHandle,
    thread: JoinHandle<WorkerExit>,
}

/// A started daemon.
pub struct Daemon {
    ports: Vec<Port>,
    workers: Vec<RunningWorker>,
    socket_path: PathBuf,
    listener: UnixListener,
    started: Instant,
    requests: u64,
    bad_requests: u64,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.socket_path)
            .finish()
    }
}

impl Daemon {
    /// Brings everything up as described in the module docs.
    ///
    /// # Errors
    /// Any failure; what was set up so far is torn down by drop (links close, sockets close).
    pub fn start(plan: &Plan, host: &dyn Host, force: bool) -> anyhow::Result<Self> {
        let listener = bind_control_socket(Path::new(&plan.control_socket))?;

        // 1. Load the programs and look at every interface before changing any.
        let mut progs = Vec::with_capacity(plan.ports.len());
        for p in &plan.ports {
            progs.push(XdpProgram::load(&p.name, p.ifindex, force)?);
        }
        for (p, prog) in plan.ports.iter().zip(&progs) {
            match prog.previous() {
                Previous::None => {}
                Previous::Stale { id } => {
                    warn!(port = %p.name, id, "replaced a stale XDP program of ours")
                }
                Previous::ForcedForeign { id, name } => {
                    warn!(port = %p.name, id, %name, "replaced a foreign XDP program (--force)")
                }
            }
        }
        let mut ports: Vec<Port> = plan
            .ports
            .iter()
            .zip(progs)
            .map(|(p, prog)| Port {
                name: p.name.clone(),
                prog,
                link: Arc::new(LinkState::new(host.carrier(&p.name).unwrap_or(true))),
                xsk: Vec::new(),
                modes: Vec::new(),
            })
            .collect();

        // 2. Bind sockets per worker and register them.
        let mut builders = Vec::with_capacity(plan.workers.len());
        for (w, wp) in plan.workers.iter().enumerate() {
            let mut b = WorkerBuilder::new(plan.rings, wp.frames)
                .with_context(|| format!("worker {w} (core {})", wp.core))?;
            let mut slots = Vec::with_capacity(wp.queues.len());
            for &(pi, q) in &wp.queues {
                let port = &mut ports[pi];
                let (slot, xq) = b.add_queue(
                    &port.name,
                    q,
                    plan.zero_copy,
                    plan.busy_poll_budget,
                    port.link.clone(),
                )?;
                port.prog.register(q, xq.fd())?;
                port.xsk
                    .push((q, xq.stats_reader().context("duplicating a socket fd")?));
                port.modes.push(xq.mode());
                if let Some(why) = xq.zero_copy_refusal() {
                    info!(port = %port.name, queue = q, "zero-copy bind refused ({why}); copy mode");
                }
                slots.push((pi, q, slot));
            }
            for &(a, bb) in &plan.cross_connects {
                for (from, to) in [(a, bb), (bb, a)] {
                    let outs: Vec<(u32, usize)> = slots
                        .iter()
                        .filter(|s| s.0 == to)
                        .map(|s| (s.1, s.2))
                        .collect();
                    for &(_, q, slot) in slots.iter().filter(|s| s.0 == from) {
                        // Same queue id on the other port when this worker owns it, else the
                        // first queue of the other port it owns (the planner guarantees one).
                        let out = outs.iter().find(|o| o.0 == q).or(outs.first());
                        if let Some(&(_, out)) = out {
                            b.connect(slot, out);
                        }
                    }
                }
            }
            builders.push(b);
        }
        for port in &ports {
            let mode = port.modes.first().copied().unwrap_or(BindMode::Copy);
            info!(port = %port.name, queues = port.modes.len(), bind = %mode, "sockets bound");
            if mode == BindMode::Copy {
                info!(port = %port.name, "AF_XDP copy mode: the kernel copies every frame (veth has no zero-copy)");
            }
        }

        // 3. Attach: from now on frames flow into the sockets.
        for port in &mut ports {
            let mode = port.prog.attach(plan.xdp_mode)?;
            info!(port = %port.name, xdp = %mode, program = isopath_datapath::xsk::xdp::PROG_NAME, "XDP program attached (BPF link)");
        }

        // 4. Start the workers.
        let mut workers = Vec::with_capacity(builders.len());
        for (b, wp) in builders.into_iter().zip(&plan.workers) {
            let (worker, handle) = b.build(Some(wp.core), plan.burst);
            let thread = std::thread::Builder::new()
                .name(format!("isopath-w{}", wp.core))
                .spawn(move || worker.run())
                .context("spawning a worker thread")?;
            info!(
                core = wp.core,
                queues = wp.queues.len(),
                frames = wp.frames,
                "worker polling"
            );
            workers.push(RunningWorker { handle, thread });
        }

        Ok(Self {
            ports,
            workers,
            socket_path: PathBuf::from(&plan.control_socket),
            listener,
            started: Instant::now(),
            requests: 0,
            bad_requests: 0,
        })
    }

    /// Runs the control loop until `stop` is set (by a signal), then stops everything.
    /// Returns the process exit code.
    pub fn run(mut self, host: &dyn Host, stop: &AtomicBool) -> u8 {
        info!(socket = %self.socket_path.display(), "ready");
        let mut last_link = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if last_link.elapsed() >= LINK_POLL {
                self.poll_links(host);
                last_link = Instant::now();
            }
            self.serve_control();
            if self.workers.iter().any(|w| w.thread.is_finished()) {
                error!("a worker thread ended on its own; stopping");
                break;
            }
            std::thread::sleep(TICK);
        }
        self.shutdown()
    }

    fn poll_links(&self, host: &dyn Host) {
        for p in &self.ports {
            if let Some(up) = host.carrier(&p.name)
                && up != p.link.is_up()
            {
                p.link.set(up);
                info!(port = %p.name, up, "link state changed");
            }
        }
    }

    fn serve_control(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.requests += 1;
                    match self.answer(stream) {
                        Ok(true) => {}
                        Ok(false) => self.bad_requests += 1,
                        Err(e) => {
                            self.bad_requests += 1;
                            warn!("control request: {e:#}");
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("control socket accept: {e}");
                    return;
                }
            }
        }
    }

    /// Answers one request. `Ok(false)`: the request was refused (and told so).
    fn answer(&self, stream: UnixStream) -> anyhow::Result<bool> {
        stream.set_nonblocking(false)?;
        // A client that connects and says nothing cannot hold the control loop for long.
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        stream.set_write_timeout(Some(Duration::from_millis(500)))?;
        let mut line = String::new();
        let read = BufReader::new(&stream).take_line(&mut line);
        let (reply, ok) = match (read, line.trim()) {
            (Err(e), _) => (
                json!({ "error": format!("reading the request: {e}") }),
                false,
            ),
            (Ok(()), "status") => (self.status(), true),
            (Ok(()), other) => {
                let shown: String = other.chars().take(64).collect();
                (
                    json!({ "error": format!("unknown request {shown:?}; known: status") }),
                    false,
                )
            }
        };
        let mut w = &stream;
        serde_json::to_writer(&mut w, &reply)?;
        w.write_all(b"\n")?;
        Ok(ok)
    }

    /// The status document: ports with their counters, workers with their frame audit.
    pub fn status(&self) -> Value {
        let ports: Vec<Value> = self.ports.iter().map(|p| self.port_status(p)).collect();
        let workers: Vec<Value> = self
            .workers
            .iter()
            .map(|w| {
                let c = w.handle.counters();
                json!({
                    "core": w.handle.core(),
                    "loops": c.loops.get(),
                    "busy_loops": c.busy_loops.get(),
                    "frames": {
                        "total": c.frames_total.get(),
                        "free": c.frames_free.get(),
                        "in_fill": c.frames_in_fill.get(),
                        "in_tx": c.frames_in_tx.get(),
                    },
                })
            })
            .collect();
        json!({
            "state": "running",
            "pid": std::process::id(),
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "ports": ports,
            "workers": workers,
            "control": { "requests": self.requests, "bad_requests": self.bad_requests },
        })
    }

    fn port_status(&self, p: &Port) -> Value {
        let (mut rx_p, mut rx_b, mut tx_p, mut tx_b) = (0, 0, 0, 0);
        let mut drops = [0u64; DropReason::ALL.len()];
        for q in self
            .workers
            .iter()
            .flat_map(|w| w.handle.queues())
            .filter(|q| q.ifname == p.name)
        {
            let c = &q.counters;
            rx_p += c.rx_packets.get();
            rx_b += c.rx_bytes.get();
            tx_p += c.tx_packets.get();
            tx_b += c.tx_bytes.get();
            for (d, r) in drops.iter_mut().zip(DropReason::ALL) {
                *d += c.drops(r);
            }
        }
        let mut drop_map = serde_json::Map::new();
        for (d, r) in drops.iter().zip(DropReason::ALL) {
            drop_map.insert(r.name().into(), json!(d));
        }
        let xdp = p.prog.stats().ok().unwrap_or_default();
        drop_map.insert("rx_drop_no_socket".into(), json!(xdp.rx_drop_no_socket));
        let mut k = XskStats::default();
        for (_, r) in &p.xsk {
            if let Ok(s) = r.read() {
                k.rx_dropped += s.rx_dropped;
                k.rx_invalid_descs += s.rx_invalid_descs;
                k.tx_invalid_descs += s.tx_invalid_descs;
                k.rx_ring_full += s.rx_ring_full;
                k.rx_fill_ring_empty_descs += s.rx_fill_ring_empty_descs;
                k.tx_ring_empty_descs += s.tx_ring_empty_descs;
            }
        }
        json!({
            "name": p.name,
            "link": if p.link.is_up() { "up" } else { "down" },
            "queues": p.xsk.len(),
            "bind": p.modes.first().map(|m| m.to_string()),
            "xdp_mode": p.prog.mode().map(|m| m.to_string()),
            "rx_packets": rx_p,
            "rx_bytes": rx_b,
            "tx_packets": tx_p,
            "tx_bytes": tx_b,
            "drops": drop_map,
            "xdp": { "rx_redirect": xdp.rx_redirect, "rx_drop_no_socket": xdp.rx_drop_no_socket },
            "xsk": {
                "rx_dropped": k.rx_dropped,
                "rx_invalid_descs": k.rx_invalid_descs,
                "rx_ring_full": k.rx_ring_full,
                "rx_fill_ring_empty_descs": k.rx_fill_ring_empty_descs,
                "tx_invalid_descs": k.tx_invalid_descs,
                "tx_ring_empty_descs": k.tx_ring_empty_descs,
            },
        })
    }

    fn shutdown(mut self) -> u8 {
        info!("stopping");
        for w in &self.workers {
            w.handle.stop();
        }
        let mut code = exit::OK;
        for (i, w) in std::mem::take(&mut self.workers).into_iter().enumerate() {
            match w.thread.join() {
                Ok(x) => {
                    let a = x.audit;
                    let leaked = a.unaccounted();
                    info!(
                        worker = i,
                        total = a.total,
                        free = a.free,
                        in_fill = a.in_fill,
                        in_tx = a.in_tx,
                        unaccounted = leaked,
                        drained = x.drained,
                        "worker stopped; frame audit"
                    );
                    if !x.pinned {
                        warn!(worker = i, "worker could not be pinned to its core");
                    }
                    if leaked != 0 {
                        error!(worker = i, unaccounted = leaked, "frames leaked");
                        code = exit::FRAME_LEAK;
                    }
                }
                Err(_) => {
                    error!(worker = i, "worker thread panicked");
                    code = exit::FAILURE;
                }
            }
        }
        for p in &mut self.ports {
            p.prog.detach();
            p.xsk.clear();
            info!(port = %p.name, "XDP program detached");
        }
        self.ports.clear();
        let _ = std::fs::remove_file(&self.socket_path);
        info!(code, "stopped");
        code
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // On an error path (start failed half-way) stop workers that did start.
        for w in &self.workers {
            w.handle.stop();
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Binds the control socket; a file left by a dead instance is removed, a live one refuses.
fn bind_control_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "control socket {} answers: another isopathd is running with this socket",
                path.display()
            );
        }
        warn!(path = %path.display(), "removing a stale control socket");
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Reads one line of at most 4 KiB: a request larger than that is refused, not buffered.
trait TakeLine {
    fn take_line(&mut self, out: &mut String) -> std::io::Result<()>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(&mut self, out: &mut String) -> std::io::Result<()> {
        use std::io::Read;
        let mut buf = Vec::new();
        self.by_ref().take(4096).read_until(b'\n', &mut buf)?;
        if !buf.ends_with(b"\n") && buf.len() >= 4096 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request over 4 KiB",
            ));
        }
        *out = String::from_utf8(buf).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "request is not UTF-8")
        })?;
        Ok(())
    }
}
