//! The daemon: builds ports and workers from a [`Plan`](crate::config::Plan), runs the control
//! loop, stops cleanly.
//!
//! Start order: load every port's XDP program and look at what is on each interface (a
//! foreign program refuses start before anything changes); clear stale programs of ours; bind
//! every worker's sockets and register them in their port's XSKMAP; attach the programs; start
//! the workers. Only then is the control socket answered with `running`. Stop is the reverse:
//! workers drain TX and hand back their frame audit, programs are detached (their links closed),
//! sockets closed, the control socket file removed.
//!
//! Devices (ports and bonds) live in one [`Registry`]; start-up, `port add`, `port del` and
//! `bond add`/`release` change them only through it, and what follows (the rtnetlink thread's
//! index of ports, the bond's state and the workers' member tables, captures, cross-connect
//! refusals, link-state tracking) is done by its listeners (`listeners`), not by the commands.
//!
//! Its parts: start-up ([`start`](Daemon::start)), the link book (`link_book`: link states,
//! bonds, their monitors and announcements), the registry's listeners (`listeners`), run-time
//! ports (`ports`), bond commands (`bonds`), captures (`captures`) and the status snapshot
//! (`status`).

mod bonds;
mod captures;
mod error;
mod kernel;
mod link_book;
mod listeners;
mod nl;
mod nl_flows;
mod ports;
mod promisc;
mod reload;
mod requests;
mod start;
mod status;
mod watchdog;

use std::{
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use isopath_datapath::{
    params::{BindMode, XdpMode, ZeroCopy},
    stats::LinkState,
    worker::{WorkerExit, WorkerHandle},
    xsk::{XskStatsReader, xdp::XdpProgram},
};
use tracing::{error, info, warn};

pub use error::{StartError, error_chain};
use link_book::LinkBook;
pub use reload::LogFilter;

use crate::{
    capture::Capture,
    host::Host,
    netlink::WatcherStats,
    registry::{DeviceKind, OperState, Registry},
    server::Server,
    topology,
};

/// Takes the daemon's one lock. A poisoned lock (a panic while holding it) is taken anyway:
/// the state it guards is plain data that every writer leaves consistent at each step.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often the control loop wakes up (signals, timers, control socket).
const TICK: Duration = Duration::from_millis(5);
/// How often carrier is read from sysfs: the miimon safety net behind rtnetlink events.
const LINK_POLL: Duration = Duration::from_millis(10);
/// How often the ports' MTUs are read without an rtnetlink event saying something changed.
const MTU_POLL: Duration = Duration::from_secs(1);
/// How many kernel link events (a port's interface deleted) the status keeps.
const LINK_HISTORY: usize = 16;

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

/// What the daemon keeps per device of the registry.
#[derive(Default)]
enum DevData {
    /// A port's I/O.
    Port(PortIo),
    /// A bond: its index in the link book's bonds (and the workers' bond tables).
    Bond {
        /// The index.
        index: usize,
    },
    /// The loopback, which the registry creates with itself: no I/O.
    #[default]
    Loopback,
}

impl DevData {
    fn port(&self) -> Option<&PortIo> {
        match self {
            Self::Port(p) => Some(p),
            Self::Bond { .. } | Self::Loopback => None,
        }
    }

    fn bond(&self) -> Option<usize> {
        match self {
            Self::Port(_) | Self::Loopback => None,
            Self::Bond { index } => Some(*index),
        }
    }
}

/// A port's I/O while the daemon runs (its name, ifindex and tap are the registry's).
struct PortIo {
    prog: XdpProgram,
    link: Arc<LinkState>,
    /// Per-socket kernel statistics readers, by queue.
    xsk: Vec<(u32, XskStatsReader)>,
    modes: Vec<BindMode>,
}

/// The daemon's registry: its devices, and the listeners that act on [`Plane`].
type DevRegistry = Registry<DevData, Plane>;

/// The control loop's clock for one turn: read once at its start and passed down.
#[derive(Debug, Clone, Copy)]
struct Turn {
    /// Monotonic time, for timers.
    now: Instant,
    /// Wall-clock time, to stamp events with.
    wall: SystemTime,
}

impl Turn {
    /// Wall-clock time in ns since the Unix epoch (0 before it).
    fn wall_ns(&self) -> u64 {
        self.wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    fn read() -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// What the registry's listeners act on: everything of the daemon the devices' events reach.
struct Plane {
    /// The current turn's clock.
    turn: Turn,
    workers: Vec<RunningWorker>,
    book: Arc<Mutex<LinkBook>>,
    captures: Vec<Capture>,
    /// Per bond (by index): link-state tracking.
    tracking: Vec<listeners::Tracking>,
    /// Sockets of unregistered ports, closed, waiting for the kernel to let go of their
    /// buffers before their frames go back to their worker: (worker, socket id, when).
    closing: Vec<Closing>,
    /// What the quiesces of unregistrations took.
    quiesce: QuiesceStats,
    /// The kernel's promiscuity references, by port.
    promisc: promisc::Promisc,
    /// Names of the flow records' ingress port ids (id n is the start-up port n - 1).
    flow_ports: Vec<String>,
    /// Set while a device the kernel deleted is unregistered: nothing may veto it.
    forced: bool,
}

/// A closed socket of an unregistered port whose frames are still with the kernel.
#[derive(Debug)]
struct Closing {
    worker: usize,
    /// The socket's id, for [`isopath_datapath::worker::WorkerCmd::Reclaim`].
    id: u16,
    closed: Instant,
    port: String,
}

/// What the workers' quiesces took ([`ports`]' `Teardown` for [`Plane`]).
#[derive(Debug, Clone, Copy, Default)]
struct QuiesceStats {
    /// Quiesces waited for.
    count: u64,
    /// Quiesces that gave up waiting (a worker did not pass a grace point in time).
    timeouts: u64,
    /// The last one's wait, in microseconds.
    last_us: u64,
    /// The longest wait, in microseconds.
    max_us: u64,
    /// Sockets a worker still held after the first quiesce of their batch (0 unless a
    /// quiesce timed out): given back later, closed then.
    late_sockets: u64,
}

/// How the sockets and programs of ports added at run time are set up: as configured for the
/// ports of the configuration.
#[derive(Debug, Clone, Copy)]
struct BindSettings {
    zero_copy: ZeroCopy,
    busy_poll_budget: u32,
    xdp_mode: XdpMode,
}

struct RunningWorker {
    handle: WorkerHandle,
    thread: JoinHandle<WorkerExit>,
}

/// A started daemon.
pub struct Daemon {
    /// Ports and bonds; every change goes through it, and its listeners do the rest.
    registry: DevRegistry,
    plane: Plane,
    rtnl: Option<Arc<WatcherStats>>,
    bind: BindSettings,
    /// Requests whose reply waits for a state the loop revisits (`port add`).
    waiting: Vec<requests::Waiting>,
    /// Interfaces the kernel deleted (`RTM_DELLINK`, from the rtnetlink thread): their ports
    /// are unregistered on the next turn ([`Self::kernel_links`]).
    kernel_deleted: Arc<Mutex<Vec<u32>>>,
    /// What the kernel did to ports underneath the daemon, the last [`LINK_HISTORY`].
    link_history: std::collections::VecDeque<crate::status::KernelLinkEvent>,
    /// Ports unregistered because the kernel deleted their interface.
    kernel_deleted_total: u64,
    /// Ports whose interface the kernel renamed: the kernel's name now.
    renamed: std::collections::BTreeMap<crate::registry::DeviceId, String>,
    /// Set by the rtnetlink thread on every link event: the MTUs are read again.
    links_changed: Arc<AtomicBool>,
    /// When the MTUs were last read (the safety net reads them every [`MTU_POLL`]).
    mtu_read: Instant,
    /// The largest MTU a frame holds (frame size less the kernel's XDP headroom, an Ethernet
    /// header and one VLAN tag).
    max_mtu: u32,
    /// Ports held down because their MTU is larger than the frames hold: port → reason.
    mtu_down: std::collections::BTreeMap<String, String>,
    /// Per worker: sockets handed over at run time, in total.
    handed: Vec<u64>,
    socket_path: PathBuf,
    server: Server,
    /// The netlink-format control socket.
    nl: Option<crate::nlserver::NlServer>,
    /// Bumped by every device event (link dumps notice changes between their parts).
    links_gen: Arc<std::sync::atomic::AtomicU64>,
    /// The `links` group's events the registry's listener recorded, for the next turn.
    link_events: Arc<Mutex<Vec<(u64, isopath_proto::msg::Message)>>>,
    started: Instant,
    bad_requests: u64,
    /// Where workers and housekeeping run, and why.
    placement: topology::Plan,
    housekeeping: Option<topology::Housekeeping>,
    /// Flow dumps holding a cursor.
    flow_cursors: crate::flows::dump::Cursors,
    /// Flow events sent to the `flows` group.
    flow_events_sent: u64,
    /// Per worker: its flow clock against Unix time, taken once.
    flow_clocks: Vec<Option<crate::flows::dump::Clock>>,
    /// The IPFIX exporter (`[ipfix]`), fed from the flow events (`nl_flows`).
    ipfix: Option<crate::ipfix::Exporter>,
    /// The Prometheus endpoint and the slot it reads snapshots from.
    metrics: Option<Metrics>,
    /// Per worker: its loop counter as last read, and when it was seen to move.
    loop_seen: Vec<LoopSeen>,
    /// The service manager's watchdog, when `WATCHDOG_USEC` asks for one.
    watchdog: Option<watchdog::Watchdog>,
    /// Test-only (`ISOPATH_TEST_STALL_WORKER`): a worker to stall, once.
    stall_hook: Option<StallHook>,
    /// The configuration file in force, for reloads ([`Daemon::set_config`]).
    config: Option<reload::Running>,
    /// Applies `daemon.log_level` ([`Daemon::set_log_filter`]).
    log_filter: Option<reload::LogFilter>,
}

/// A worker's loop counter as the control loop last read it.
#[derive(Debug, Clone, Copy)]
struct LoopSeen {
    loops: u64,
    /// When it was seen to move (monotonic, and wall clock for the status).
    at: Instant,
    wall: SystemTime,
}

/// `ISOPATH_TEST_STALL_WORKER=W:AFTER_MS:FOR_MS`: worker W sleeps FOR_MS once, AFTER_MS after
/// start (a stuck worker, for the watchdog's tests).
#[derive(Debug, Clone, Copy)]
struct StallHook {
    worker: usize,
    at: Instant,
    stall: Duration,
}

impl StallHook {
    fn from_env(start: Instant) -> Option<Self> {
        let v = std::env::var("ISOPATH_TEST_STALL_WORKER").ok()?;
        let mut f = v.split(':').map(|x| x.trim().parse::<u64>().ok());
        let (Some(Some(w)), Some(Some(after)), Some(Some(ms)), None) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            warn!(value = %v, "ISOPATH_TEST_STALL_WORKER: expected WORKER:AFTER_MS:FOR_MS; ignored");
            return None;
        };
        Some(Self {
            worker: w as usize,
            at: start + Duration::from_millis(after),
            stall: Duration::from_millis(ms),
        })
    }
}

/// The running metrics endpoint.
struct Metrics {
    /// Dropped first at stop (its thread ends).
    server: crate::metrics::MetricsServer,
    published: Arc<crate::metrics::Published>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.socket_path)
            .finish()
    }
}

impl Daemon {
    /// The housekeeping CPU mask, for threads started outside the daemon (`None` when hwloc
    /// could not read the host).
    pub fn housekeeping(&self) -> Option<&topology::Housekeeping> {
        self.housekeeping.as_ref()
    }

    /// Which of this process's threads may run on a worker CPU ([`topology::threads::check`]).
    pub fn check_threads(&self) -> topology::ThreadCheck {
        topology::threads::check(&crate::doctor::Root::new("/"), &self.placement)
    }

    /// Runs the control loop until `stop` is set (by a signal), then stops everything; a
    /// set `reload` (`SIGHUP`) reads the configuration file again. Returns the process exit
    /// code.
    pub fn run(mut self, host: &dyn Host, stop: &AtomicBool, reload: &AtomicBool) -> u8 {
        info!(socket = %self.socket_path.display(), "ready");
        let mut last_link = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // The clock, read once per turn; everything this turn does is stamped with it.
            self.plane.turn = Turn::read();
            if self.plane.turn.now.duration_since(last_link) >= LINK_POLL {
                self.poll_links(host);
                last_link = self.plane.turn.now;
            }
            if reload.swap(false, Ordering::Relaxed) {
                self.reload_signal(host);
            }
            self.kernel_links(host);
            self.kernel_mtus();
            self.watch_loops();
            self.serve_control(host);
            self.serve_netlink(host);
            self.publish_metrics();
            self.advance_waiting();
            self.finish_unregister();
            self.settle_promisc();
            for c in &mut self.plane.captures {
                c.drain();
            }
            if self.plane.workers.iter().any(|w| w.thread.is_finished()) {
                error!("a worker thread ended on its own; stopping");
                break;
            }
            match self.nl.as_mut() {
                // Dumps stream while the loop waits: their parts go out as readers drain.
                Some(nl) => nl.wait(TICK),
                None => std::thread::sleep(TICK),
            }
        }
        self.shutdown()
    }

    /// Notes which workers' loop counters moved since the last turn (one load each).
    fn watch_loops(&mut self) {
        let Turn { now, wall } = self.plane.turn;
        let start = LoopSeen {
            loops: 0,
            at: now,
            wall,
        };
        self.loop_seen.resize(self.plane.workers.len(), start);
        for (w, seen) in self.plane.workers.iter().zip(&mut self.loop_seen) {
            let loops = w.handle.counters().loops.get();
            if loops != seen.loops {
                *seen = LoopSeen {
                    loops,
                    at: now,
                    wall,
                };
            }
        }
        if let Some(h) = self.stall_hook
            && now >= h.at
        {
            self.stall_hook = None;
            if let Some(w) = self.plane.workers.get(h.worker) {
                warn!(
                    worker = h.worker,
                    ms = h.stall.as_millis() as u64,
                    "test hook: stalling a worker"
                );
                w.handle
                    .command(isopath_datapath::worker::WorkerCmd::Stall(h.stall));
            }
        }
        self.feed_watchdog();
    }

    /// `WATCHDOG=1` when due and every worker's loop moved within the beat period.
    fn feed_watchdog(&mut self) {
        let Some(wd) = self.watchdog.as_mut() else {
            return;
        };
        let now = self.plane.turn.now;
        let moved: Vec<Instant> = self.loop_seen.iter().map(|s| s.at).collect();
        match wd.tick(now, &moved) {
            watchdog::Beat::Wait => {}
            watchdog::Beat::Send => {
                if let Err(e) = crate::sd_notify::notify("WATCHDOG=1") {
                    warn!("sd_notify WATCHDOG=1: {e}");
                }
            }
            watchdog::Beat::Withhold(stalled) => {
                for i in stalled {
                    let ms = now.saturating_duration_since(moved[i]).as_millis() as u64;
                    error!(
                        worker = i,
                        core = ?self.plane.workers[i].handle.core(),
                        stalled_ms = ms,
                        "worker stalled: its loop has not moved; WATCHDOG=1 withheld \
                         (the service manager restarts the service after WatchdogSec)"
                    );
                }
            }
        }
    }

    /// Publishes a snapshot when the metrics endpoint waits for one.
    fn publish_metrics(&mut self) {
        if !self.metrics.as_ref().is_some_and(|m| m.published.wanted()) {
            return;
        }
        let s = self.metrics_snapshot();
        if let Some(m) = &self.metrics {
            m.published.publish(s);
        }
    }

    /// The miimon safety net: carrier read from sysfs, applied like an rtnetlink event (a
    /// no-op when events already delivered it); then the bonds' timers.
    fn poll_links(&mut self, host: &dyn Host) {
        let Turn { now, wall } = self.plane.turn;
        let mut book = lock(&self.plane.book);
        for (_, p) in self.registry.devices().of_kind(DeviceKind::Port) {
            if let (Some(up), Some(ifindex)) = (host.carrier(&p.name), p.ifindex) {
                book.carrier(ifindex, up, now, wall);
            }
        }
        drop(book);
        self.poll_gone(host);
        let mut book = lock(&self.plane.book);
        for b in &mut book.bonds {
            b.tick(now, wall);
        }
        book.publish();
        book.control_frames(now, wall);
        book.announce(now);
        book.trace();
        drop(book);
        self.sync_links();
    }

    /// Carries the link book's state into the registry: each port's carrier, each bond's
    /// active member and carrier. The registry emits ACTIVE and CHANGE for what changed, and
    /// link-state tracking (a listener) follows the bonds' carrier.
    fn sync_links(&mut self) {
        let book = lock(&self.plane.book);
        let devs = self.registry.devices();
        let states: Vec<_> = devs
            .iter()
            .map(|(id, d)| match &d.data {
                DevData::Port(p) => (id, OperState::from_up(p.link.is_up()), None),
                DevData::Bond { index } => {
                    let b = &book.bonds[*index];
                    let active = b
                        .active()
                        .and_then(|m| devs.id_of(&b.members[m].name, DeviceKind::Port));
                    let up = OperState::from_up(b.active().is_some());
                    (id, up, Some(active))
                }
                DevData::Loopback => (id, d.operstate, None),
            })
            .collect();
        drop(book);
        // A listener's failure is logged by the chain; the state is recorded regardless.
        for (id, state, active) in states {
            if let Some(active) = active {
                let _ = self.registry.set_active(id, active, &mut self.plane);
            }
            let _ = self.registry.set_operstate(id, state, &mut self.plane);
        }
    }

    fn shutdown(mut self) -> u8 {
        info!("stopping");
        if let Some(m) = self.metrics.take() {
            info!(addr = %m.server.addr(), "metrics endpoint stopped");
        }
        self.plane.release_tracking();
        for c in std::mem::take(&mut self.plane.captures) {
            let v = c.stop();
            info!(capture = %v, "capture stopped");
        }
        for w in &self.plane.workers {
            w.handle.stop();
        }
        let mut code = exit::OK;
        for (i, w) in std::mem::take(&mut self.plane.workers)
            .into_iter()
            .enumerate()
        {
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
        // The devices go without events: everything their listeners act on has stopped.
        for d in self.registry.drain() {
            if let DevData::Port(mut p) = d.data {
                p.prog.detach();
                p.xsk.clear();
                info!(port = %d.name, "XDP program detached");
            }
        }
        let _ = std::fs::remove_file(&self.socket_path);
        if let Some(s) = &self.nl {
            s.remove();
        }
        info!(code, "stopped");
        code
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // On an error path (start failed half-way) stop workers that did start.
        for w in &self.plane.workers {
            w.handle.stop();
        }
        let _ = std::fs::remove_file(&self.socket_path);
        if let Some(s) = &self.nl {
            s.remove();
        }
    }
}

/// Binds the control socket; a file left by a dead instance is removed, a live one refuses.
fn bind_control_socket(path: &Path) -> Result<UnixListener, StartError> {
    let io = |what: String| move |source| StartError::Socket { what, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(StartError::SocketInUse {
                path: path.to_owned(),
            });
        }
        warn!(path = %path.display(), "removing a stale control socket");
        std::fs::remove_file(path).map_err(io(format!("removing {}", path.display())))?;
    }
    UnixListener::bind(path).map_err(io(format!("binding {}", path.display())))
}
