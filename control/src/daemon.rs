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
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use std::net::IpAddr;

use isopath_datapath::{
    bond::{Inject, MAILBOX, Mailbox, Punt, SeenMacs, mac_u64},
    params::{BindMode, XdpMode, ZeroCopy},
    stats::{DropReason, LinkState},
    tap::Tap,
    worker::{WorkerBuilder, WorkerCmd, WorkerExit, WorkerHandle},
    xsk::{
        XskStats, XskStatsReader,
        xdp::{MAX_QUEUES, Previous, XdpProgram},
    },
};
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::{
    bond::{ArpSeen, Bond, Member, MemberLink},
    capture::{self, Capture},
    config::{Endpoint, Plan},
    frames,
    host::Host,
    netlink::{WatcherStats, spawn_link_watcher},
    topology,
};

/// Queues `frame` for a worker to send on bond member `member`; false if it does not fit or
/// the mailbox is full.
fn enqueue(mailbox: &Mailbox, member: usize, frame: &[u8]) -> bool {
    Inject::new(member, frame).is_some_and(|i| mailbox.push(i).is_ok())
}

/// Sets a port administratively up or down with CAP_NET_ADMIN raised for the call only (it is
/// permitted but not effective after start-up).
fn set_link_up(ifindex: u32, up: bool) -> std::io::Result<()> {
    let admin = crate::privs::need(caps::Capability::CAP_NET_ADMIN);
    crate::privs::with_effective(admin.as_slice(), || {
        crate::netlink::set_link_up(ifindex, up)
    })
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?
}

/// How long after closing a socket its frames stay with the kernel: a socket's buffer pool
/// is freed from a workqueue after the last reference goes (70-100 ms measured here after
/// SIGKILL), and a zero-copy driver returns its buffers then.
const UNREGISTER_GRACE: Duration = Duration::from_millis(250);

/// Takes the daemon's one lock. A poisoned lock (a panic while holding it) is taken anyway:
/// the state it guards is plain data that every writer leaves consistent at each step.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often the control loop wakes up (signals, timers, control socket).
const TICK: Duration = Duration::from_millis(5);
/// How often carrier is read from sysfs: the miimon safety net behind rtnetlink events.
const LINK_POLL: Duration = Duration::from_millis(10);

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
    ifindex: u32,
    tap: Arc<Tap>,
    prog: XdpProgram,
    link: Arc<LinkState>,
    /// Per-socket kernel statistics readers, by queue.
    xsk: Vec<(u32, XskStatsReader)>,
    modes: Vec<BindMode>,
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

/// Link states and bonds: what carrier events change. One lock (the daemon's RTNL): taken by
/// the rtnetlink thread, the miimon poll and control commands, never by a worker.
struct LinkBook {
    /// (name, ifindex, link state) of every port.
    ports: Vec<(String, u32, Arc<LinkState>)>,
    bonds: Vec<Bond>,
    /// Per bond: the mailbox workers send from, and the MACs they saw behind the bond.
    outboxes: Vec<(Arc<Mailbox>, Option<Arc<SeenMacs>>)>,
    /// Per bond: what workers hand to control (ARP, frames to the bond's own MAC).
    punts: Vec<Arc<Punt>>,
    /// Per bond: the ports that follow its carrier (link-state tracking), and whether they
    /// are held down now.
    tracking: Vec<(Vec<u32>, bool)>,
}

impl LinkBook {
    /// A carrier report for `ifindex` (rtnetlink or miimon).
    fn carrier(&mut self, ifindex: u32, up: bool) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        // The bond first: moving traffic off a dead member is what is urgent; the port's own
        // link flag (which makes the worker drop instead of send into it) comes next, and
        // logging only after both.
        for b in &mut self.bonds {
            if let Some(m) = b.member_by_ifindex(ifindex) {
                b.carrier(m, up, now, wall);
            }
        }
        let mut changed = None;
        for (name, idx, link) in &self.ports {
            if *idx == ifindex && link.is_up() != up {
                link.set(up);
                changed = Some(name.clone());
            }
        }
        self.announce(now);
        // Link-state tracking is not done here: this runs on the rtnetlink thread, which holds
        // no capability at all; the control thread applies it on its next link tick (10 ms).
        if let Some(name) = changed {
            info!(port = %name, up, "link state changed");
        }
        for b in &mut self.bonds {
            b.trace_events();
        }
    }

    /// Handles what the workers handed over (ARP monitor evidence, ARP requests and pings for
    /// the bond's own addresses), then runs the ARP monitors' periods.
    fn control_frames(&mut self, now: Instant, wall: SystemTime) {
        for (bi, punt) in self.punts.iter().enumerate() {
            let b = &mut self.bonds[bi];
            let mailbox = &self.outboxes[bi].0;
            // The appliance's addresses per VLAN (None: untagged, on the bond itself).
            let own: Vec<(
                Option<u16>,
                Vec<std::net::Ipv4Addr>,
                Vec<std::net::Ipv6Addr>,
            )> = std::iter::once((None, &b.opts.addresses))
                .chain(b.opts.vlans.iter().map(|(id, a)| (Some(*id), a)))
                .map(|(vid, addrs)| {
                    let v4 = addrs
                        .iter()
                        .filter_map(|a| match a {
                            IpAddr::V4(v) => Some(*v),
                            IpAddr::V6(_) => None,
                        })
                        .collect();
                    let v6 = addrs
                        .iter()
                        .filter_map(|a| match a {
                            IpAddr::V6(v) => Some(*v),
                            IpAddr::V4(_) => None,
                        })
                        .collect();
                    (vid, v4, v6)
                })
                .collect();
            let (own4, own6) = (&own[0].1, &own[0].2);
            let mac = b.own_mac();
            let mut answers = Vec::new();
            while let Some(p) = punt.queue.pop() {
                let m = usize::from(p.member);
                // A frame on a VLAN is read untagged, checked against that VLAN's addresses,
                // and answered on the same VLAN; a VLAN not configured has none.
                let (vid, f) = frames::untag(p.frame());
                let f = &f[..];
                let (own4, own6) = match own.iter().find(|o| o.0 == vid) {
                    Some((_, v4, v6)) => (&v4[..], &v6[..]),
                    None => (&[][..], &[][..]),
                };
                let before = answers.len();
                if let Some(arp) = frames::parse_arp(f) {
                    let seen = ArpSeen {
                        spa: arp.spa,
                        tpa: arp.tpa,
                        sha: arp.sha,
                        reply: arp.op == 2,
                    };
                    b.arp_rx(m, &seen, now);
                    // Requests for our own addresses, answered through the active member.
                    if arp.op == 1 && own4.contains(&arp.tpa) && arp.sha != mac {
                        answers.push(frames::arp_reply(mac, &arp));
                    }
                } else if let Some(nd) = frames::parse_nd(f) {
                    b.nd_rx(m, nd.src, nd.kind == 136, now);
                    // Solicitations for our own IPv6 addresses.
                    if nd.kind == 135 && own6.contains(&nd.target) && nd.src_mac != mac {
                        answers.push(frames::solicited_na(mac, nd.target, &nd));
                    }
                } else if let Some(r) = frames::icmp_echo_reply(f, mac, own4) {
                    answers.push(r);
                } else if let Some(r) = frames::icmpv6_echo_reply(f, mac, own6) {
                    answers.push(r);
                }
                if let Some(a) = answers.get_mut(before) {
                    *a = frames::tag(std::mem::take(a), vid);
                }
            }
            if let Some(active) = b.active() {
                for a in answers {
                    if !enqueue(mailbox, active, &a) {
                        b.sent.mailbox_full += 1;
                    }
                }
            }
            if let Some(probe) = b.arp_tick(now, wall) {
                let mut reqs = Vec::new();
                if let Some(&src) = own4.first() {
                    reqs.extend(
                        probe
                            .targets
                            .iter()
                            .map(|&t| frames::arp_request(mac, src, t)),
                    );
                }
                if let Some(&src) = own6.first() {
                    reqs.extend(
                        probe
                            .ns_targets
                            .iter()
                            .map(|&t| frames::neighbour_solicitation(mac, src, t)),
                    );
                }
                for req in reqs {
                    if !enqueue(mailbox, probe.member, &req) {
                        b.sent.mailbox_full += 1;
                    }
                }
            }
        }
    }

    /// Link-state tracking: a bond without an active member takes its peer ports down; they
    /// come back with the first member.
    fn track_carrier(&mut self) {
        for (b, (ports, held)) in self.bonds.iter().zip(self.tracking.iter_mut()) {
            let down = b.active().is_none();
            if ports.is_empty() || down == *held {
                continue;
            }
            for &ifindex in ports.iter() {
                match set_link_up(ifindex, !down) {
                    Ok(()) => info!(bond = %b.name, ifindex, up = !down, "link-state tracking"),
                    Err(e) => warn!(bond = %b.name, ifindex, "link-state tracking: {e}"),
                }
            }
            *held = down;
        }
    }

    /// Gives back every port held down by link-state tracking, and stops tracking (at stop:
    /// the port's own up event must not make the still-memberless bond take it down again).
    fn release_tracking(&mut self) {
        for (ports, held) in &mut self.tracking {
            let ports = std::mem::take(ports);
            if std::mem::take(held) {
                for ifindex in ports {
                    let _ = set_link_up(ifindex, true);
                }
            }
        }
    }

    /// Queues the peer notifications that are due: gratuitous ARP and unsolicited NA for the
    /// bond's own addresses, and one announcement per MAC seen behind the bond.
    fn announce(&mut self, now: Instant) {
        for (b, (mailbox, seen)) in self.bonds.iter_mut().zip(&self.outboxes) {
            while let Some(due) = b.due(now) {
                let mut frames: Vec<(Vec<u8>, u8)> = Vec::new();
                // The bond's own addresses untagged, then each VLAN's on its VLAN (as Linux
                // announces through the bond's VLAN devices).
                let on_vlans = b.opts.vlans.iter().map(|(id, a)| (Some(*id), a));
                for (vid, addrs) in std::iter::once((None, &b.opts.addresses)).chain(on_vlans) {
                    for a in addrs {
                        match a {
                            IpAddr::V4(ip) if due.grat_arp => frames
                                .push((frames::tag(frames::gratuitous_arp(due.mac, *ip), vid), 0)),
                            IpAddr::V6(ip) if due.unsol_na => frames
                                .push((frames::tag(frames::unsolicited_na(due.mac, *ip), vid), 1)),
                            _ => {}
                        }
                    }
                }
                if due.reannounce
                    && let Some(seen) = seen
                {
                    let max_age = b.opts.notify.reannounce_max_age_s;
                    for (mac, vid) in seen.recent(seen.now_s(), max_age) {
                        frames.push((frames::tag(frames::announce(mac), vid), 2));
                    }
                }
                for (f, kind) in frames {
                    let queued =
                        Inject::new(due.member, &f).is_some_and(|i| mailbox.push(i).is_ok());
                    let c = &mut b.sent;
                    match (queued, kind) {
                        (false, _) => c.mailbox_full += 1,
                        (true, 0) => c.grat_arp += 1,
                        (true, 1) => c.unsol_na += 1,
                        (true, _) => c.reannounced += 1,
                    }
                }
            }
        }
    }
}

/// A started daemon.
pub struct Daemon {
    book: Arc<Mutex<LinkBook>>,
    /// Ports that are a cross-connect's end (they cannot join a bond at run time).
    connected: Vec<String>,
    /// Capture targets: port or bond name → its tap and the interfaces it spans.
    taps: Vec<(String, Arc<Tap>, Vec<u32>)>,
    captures: Vec<Capture>,
    rtnl: Option<Arc<WatcherStats>>,
    ports: Vec<Port>,
    workers: Vec<RunningWorker>,
    bind: BindSettings,
    /// Sockets of unregistered ports, closed, waiting for the kernel to let go of their
    /// buffers before their frames go back to their worker: (worker, socket id, when).
    closing: Vec<(usize, u16, Instant)>,
    socket_path: PathBuf,
    listener: UnixListener,
    started: Instant,
    requests: u64,
    bad_requests: u64,
    /// Where workers and housekeeping run, and why.
    placement: topology::Plan,
    housekeeping: Option<topology::Housekeeping>,
    /// Names of the flow records' ingress port ids (id n is the start-up port n - 1).
    flow_ports: Vec<String>,
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
        // Control threads (this one and those it spawns, e.g. rtnetlink) stay off the worker
        // cores: a control thread scheduled there would preempt a polling worker.
        let housekeeping = topology::Housekeeping::new(&plan.placement)
            .inspect_err(|e| warn!("no housekeeping mask for the control threads: {e}"))
            .ok();
        if let Some(h) = &housekeeping
            && let Err(e) = h.pin_current()
        {
            warn!("control thread: {e}");
        }

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
                ifindex: p.ifindex,
                tap: Arc::default(),
                prog,
                link: Arc::new(LinkState::new(host.carrier(&p.name).unwrap_or(true))),
                xsk: Vec::new(),
                modes: Vec::new(),
            })
            .collect();

        // Bonds: their initial active member from the members' carrier now.
        let (now, wall) = (Instant::now(), SystemTime::now());
        let bonds: Vec<Bond> = plan
            .bonds
            .iter()
            .map(|bp| {
                let members = bp
                    .members
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| {
                        let port = &plan.ports[p];
                        let up = host.carrier(&port.name).unwrap_or(false);
                        Member {
                            name: port.name.clone(),
                            ifindex: port.ifindex,
                            link: if up { MemberLink::Up } else { MemberLink::Down },
                            link_failures: 0,
                            prio: bp.prio[i],
                            speed: bp.speed[i],
                            perm_mac: host.mac(&port.name).unwrap_or_default(),
                            released: false,
                        }
                    })
                    .collect();
                Bond::new(&bp.name, members, bp.opts.clone(), now, wall)
            })
            .collect();

        let tracking: Vec<(Vec<u32>, bool)> = plan
            .bonds
            .iter()
            .enumerate()
            .map(|(bi, bp)| {
                let peers = plan
                    .cross_connects
                    .iter()
                    .filter_map(|&(a, b)| match (a, b) {
                        (Endpoint::Port(p), Endpoint::Bond(j))
                        | (Endpoint::Bond(j), Endpoint::Port(p))
                            if j == bi && bp.link_state_tracking =>
                        {
                            Some(plan.ports[p].ifindex)
                        }
                        _ => None,
                    })
                    .collect();
                (peers, false)
            })
            .collect();
        let punts: Vec<Arc<Punt>> = bonds
            .iter()
            .map(|b| {
                let p = Punt::new();
                let owns = !b.opts.addresses.is_empty() || !b.opts.vlans.is_empty();
                let own = owns || b.opts.arp.is_some();
                // Neighbour discovery goes to control whenever the bond monitors by ARP/NS or
                // owns addresses (it answers ARP and NS for them).
                let arp = b.opts.arp.is_some() || owns;
                p.arp.store(arp, std::sync::atomic::Ordering::Relaxed);
                if own {
                    p.own_mac
                        .store(mac_u64(&b.own_mac()), std::sync::atomic::Ordering::Relaxed);
                }
                Arc::new(p)
            })
            .collect();
        let outboxes: Vec<(Arc<Mailbox>, Option<Arc<SeenMacs>>)> = bonds
            .iter()
            .map(|b| {
                let n = &b.opts.notify;
                let seen = n
                    .reannounce
                    .then(|| Arc::new(SeenMacs::new(n.reannounce_table)));
                (Arc::new(Mailbox::new(MAILBOX)), seen)
            })
            .collect();

        let bond_taps: Vec<Arc<Tap>> = bonds.iter().map(|_| Arc::default()).collect();

        // 2. Bind sockets per worker and register them.
        let mut builders = Vec::with_capacity(plan.workers.len());
        for (w, wp) in plan.workers.iter().enumerate() {
            let mut b = WorkerBuilder::new(plan.rings, wp.frames)
                .with_context(|| format!("worker {w} (core {})", wp.core))?
                .strict(plan.strict);
            if let Some(params) = &plan.flows {
                b = b.flows(params).context("allocating the flow table")?;
            }
            let mut slots = Vec::with_capacity(wp.queues.len());
            for &(pi, q) in &wp.queues {
                let port = &mut ports[pi];
                let (slot, xq) = b.add_queue(
                    &port.name,
                    q,
                    plan.zero_copy,
                    plan.busy_poll_budget,
                    port.link.clone(),
                    port.tap.clone(),
                )?;
                port.prog.register(q, xq.fd())?;
                port.xsk
                    .push((q, xq.stats_reader().context("duplicating a socket fd")?));
                port.modes.push(xq.mode());
                if let Some(why) = xq.zero_copy_refusal() {
                    info!(port = %port.name, queue = q, "zero-copy bind refused ({why}); copy mode");
                }
                slots.push((pi, q, slot));
                b.set_flow_port(slot, u8::try_from(pi + 1).unwrap_or(0));
            }
            let wbonds: Vec<usize> = bonds
                .iter()
                .zip(&outboxes)
                .zip(&bond_taps)
                .zip(&punts)
                .map(|(((bd, (mb, seen)), tap), punt)| {
                    b.add_bond(
                        &bd.name,
                        bd.shared(),
                        mb.clone(),
                        seen.clone(),
                        tap.clone(),
                        punt.clone(),
                    )
                })
                .collect();
            for (bi, bp) in plan.bonds.iter().enumerate() {
                for (mi, &port) in bp.members.iter().enumerate() {
                    for &(_, _, slot) in slots.iter().filter(|s| s.0 == port) {
                        b.add_member(wbonds[bi], mi, slot);
                    }
                }
            }
            // The slots of an endpoint on this worker: a port's, or every member's of a bond.
            let slots_of = |e: Endpoint| -> Vec<(u32, usize)> {
                slots
                    .iter()
                    .filter(|s| match e {
                        Endpoint::Port(p) => s.0 == p,
                        Endpoint::Bond(j) => plan.bonds[j].members.contains(&s.0),
                    })
                    .map(|s| (s.1, s.2))
                    .collect()
            };
            for &(ea, eb) in &plan.cross_connects {
                for (from, to) in [(ea, eb), (eb, ea)] {
                    let outs = slots_of(to);
                    for (q, slot) in slots_of(from) {
                        match to {
                            Endpoint::Bond(j) => b.connect_bond(slot, wbonds[j]),
                            Endpoint::Port(_) => {
                                // Same queue id on the other port when this worker owns it, else
                                // the first queue of it this worker owns (the planner ensures one).
                                let out = outs.iter().find(|o| o.0 == q).or(outs.first());
                                if let Some(&(_, out)) = out {
                                    b.connect(slot, out);
                                }
                            }
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
            let (worker, handle) = b.build(Some(wp.core), plan.burst, wp.spare as usize);
            let cgroup = wp.cgroup.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{}{}", topology::threads::WORKER_THREAD, wp.core))
                .spawn(move || {
                    // An isolated cpuset partition is joined before the worker pins itself.
                    if let Some(dir) = cgroup
                        && let Err(e) = topology::threads::join_cgroup(Path::new(&dir))
                    {
                        warn!("worker thread: joining cgroup {dir}: {e}");
                    }
                    // Workers make no privileged call: give up what start-up left this thread
                    // (capabilities are per thread; privs::settle lowers only the main one's).
                    if let Err(e) = crate::privs::drop_all_for_thread() {
                        warn!("worker thread: {e}");
                    }
                    worker.run()
                })
                .context("spawning a worker thread")?;
            info!(
                core = wp.core,
                queues = wp.queues.len(),
                frames = wp.frames,
                "worker polling"
            );
            workers.push(RunningWorker { handle, thread });
        }

        let book = Arc::new(Mutex::new(LinkBook {
            ports: ports
                .iter()
                .map(|p| (p.name.clone(), p.ifindex, p.link.clone()))
                .collect(),
            bonds,
            outboxes,
            punts,
            tracking,
        }));
        lock(&book).track_carrier();
        // Carrier events from the kernel, applied the moment they arrive.
        let rtnl = {
            let book = book.clone();
            let house = housekeeping.clone();
            let on_start = move || {
                if let Some(h) = house
                    && let Err(e) = h.pin_current()
                {
                    warn!("rtnetlink thread: {e}");
                }
            };
            match spawn_link_watcher(on_start, move |e| lock(&book).carrier(e.ifindex, e.up)) {
                Ok((_thread, stats)) => Some(stats),
                Err(e) => {
                    warn!("rtnetlink link events unavailable ({e}); relying on the miimon poll");
                    None
                }
            }
        };

        let mut taps: Vec<(String, Arc<Tap>, Vec<u32>)> = ports
            .iter()
            .map(|p| (p.name.clone(), p.tap.clone(), vec![p.ifindex]))
            .collect();
        for (bp, tap) in plan.bonds.iter().zip(bond_taps) {
            let members = bp.members.iter().map(|&m| plan.ports[m].ifindex).collect();
            taps.push((bp.name.clone(), tap, members));
        }

        let connected = plan
            .cross_connects
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .filter_map(|e| match e {
                Endpoint::Port(p) => Some(plan.ports[p].name.clone()),
                Endpoint::Bond(_) => None,
            })
            .collect();

        Ok(Self {
            connected,
            taps,
            captures: Vec::new(),
            book,
            rtnl,
            ports,
            workers,
            closing: Vec::new(),
            bind: BindSettings {
                zero_copy: plan.zero_copy,
                busy_poll_budget: plan.busy_poll_budget,
                xdp_mode: plan.xdp_mode,
            },
            socket_path: PathBuf::from(&plan.control_socket),
            listener,
            started: Instant::now(),
            requests: 0,
            bad_requests: 0,
            placement: plan.placement.clone(),
            housekeeping,
            flow_ports: plan.ports.iter().map(|p| p.name.clone()).collect(),
        })
    }

    /// The housekeeping CPU mask, for threads started outside the daemon (`None` when hwloc
    /// could not read the host).
    pub fn housekeeping(&self) -> Option<&topology::Housekeeping> {
        self.housekeeping.as_ref()
    }

    /// Which of this process's threads may run on a worker CPU ([`topology::threads::check`]).
    pub fn check_threads(&self) -> topology::ThreadCheck {
        topology::threads::check(&crate::doctor::Root::new("/"), &self.placement)
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
            self.serve_control(host);
            self.finish_unregister();
            for c in &mut self.captures {
                c.drain();
            }
            if self.workers.iter().any(|w| w.thread.is_finished()) {
                error!("a worker thread ended on its own; stopping");
                break;
            }
            std::thread::sleep(TICK);
        }
        self.shutdown()
    }

    /// The miimon safety net: carrier read from sysfs, applied like an rtnetlink event (a
    /// no-op when events already delivered it); then the bonds' timers.
    fn poll_links(&self, host: &dyn Host) {
        let mut book = lock(&self.book);
        for p in &self.ports {
            if let Some(up) = host.carrier(&p.name) {
                book.carrier(p.ifindex, up);
            }
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        for b in &mut book.bonds {
            b.tick(now, wall);
        }
        book.control_frames(now, wall);
        book.announce(now);
        book.track_carrier();
        for b in &mut book.bonds {
            b.trace_events();
        }
    }

    fn serve_control(&mut self, host: &dyn Host) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.requests += 1;
                    match self.answer(stream, host) {
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
    fn answer(&mut self, stream: UnixStream, host: &dyn Host) -> anyhow::Result<bool> {
        stream.set_nonblocking(false)?;
        // A client that connects and says nothing cannot hold the control loop for long.
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        stream.set_write_timeout(Some(Duration::from_millis(500)))?;
        let mut line = String::new();
        let read = BufReader::new(&stream).take_line(&mut line);
        let words: Vec<&str> = line.split_whitespace().collect();
        let (reply, ok) = match (read, line.trim()) {
            (Err(e), _) => (
                json!({ "error": format!("reading the request: {e}") }),
                false,
            ),
            (Ok(()), "status") => (self.status(), true),
            (Ok(()), _) if words.first() == Some(&"flow") => {
                let readers: Vec<_> = self
                    .workers
                    .iter()
                    .map(|w| w.handle.flow_reader())
                    .collect();
                crate::flows::answer(&words[1..], &readers, &self.flow_ports)
            }
            (Ok(()), _) if words.len() == 4 && words[..2] == ["bond", "switch"] => {
                self.bond_switch(words[2], words[3])
            }
            (Ok(()), _) if words.len() == 4 && words[..2] == ["bond", "release"] => {
                self.bond_member(words[2], words[3], false, host)
            }
            (Ok(()), _) if words.len() == 4 && words[..2] == ["bond", "add"] => {
                self.bond_member(words[2], words[3], true, host)
            }
            (Ok(()), _) if words.len() >= 3 && words[..2] == ["port", "del"] => {
                match self.port_del(&words[2..], host) {
                    Ok(v) => (v, true),
                    Err(e) => (json!({ "error": e }), false),
                }
            }
            (Ok(()), _) if words.len() == 3 && words[..2] == ["port", "add"] => {
                match self.port_add(words[2], host) {
                    Ok(v) => (v, true),
                    Err(e) => (json!({ "error": e }), false),
                }
            }
            (Ok(()), _) if words.len() == 5 && words[..2] == ["bond", "set"] => {
                self.bond_set(words[2], words[3], words[4])
            }
            (Ok(()), _) if words.len() == 5 && words[..2] == ["capture", "start"] => {
                self.capture_start(words[2], words[3], words[4])
            }
            (Ok(()), _) if words.len() == 3 && words[..2] == ["capture", "stop"] => {
                self.capture_stop(words[2])
            }
            (Ok(()), other) => {
                let shown: String = other.chars().take(64).collect();
                (
                    json!({ "error": format!("unknown request {shown:?}; known: status, port add IFNAME, port del IFNAME.., bond switch BOND MEMBER, bond set BOND OPTION VALUE, bond add|release BOND PORT, capture start TARGET FILE in|out|both, capture stop TARGET, flow count, flow show [limit N]") }),
                    false,
                )
            }
        };
        let mut w = &stream;
        serde_json::to_writer(&mut w, &reply)?;
        w.write_all(b"\n")?;
        Ok(ok)
    }

    fn capture_start(&mut self, target: &str, file: &str, dirs: &str) -> (Value, bool) {
        let err = |m: String| (json!({ "error": m }), false);
        let Some(dirs) = capture::parse_dirs(dirs) else {
            return err(format!("direction {dirs:?}: expected in, out or both"));
        };
        let Some((_, tap, ifindexes)) = self.taps.iter().find(|t| t.0 == target) else {
            return err(format!("no port or bond named {target:?}"));
        };
        if self.captures.iter().any(|c| c.target == target) {
            return err(format!("a capture already runs on {target}"));
        }
        let path = Path::new(file);
        if !path.is_absolute() {
            return err(format!(
                "{file:?}: the capture file must be an absolute path"
            ));
        }
        // The packet sockets that hold promiscuity need CAP_NET_RAW, permitted but not
        // effective after start-up: raised for this call only.
        let net_raw = crate::privs::need(caps::Capability::CAP_NET_RAW);
        let started = crate::privs::with_effective(net_raw.as_slice(), || {
            Capture::start(target, path, dirs, tap.clone(), ifindexes)
        })
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match started {
            Ok(c) => {
                info!(target, file, "capture started");
                let v = c.status();
                self.captures.push(c);
                (json!({ "ok": true, "capture": v }), true)
            }
            Err(e) => err(e),
        }
    }

    fn capture_stop(&mut self, target: &str) -> (Value, bool) {
        match self.captures.iter().position(|c| c.target == target) {
            Some(i) => {
                let v = self.captures.remove(i).stop();
                info!(target, "capture stopped");
                (json!({ "ok": true, "capture": v }), true)
            }
            None => (
                json!({ "error": format!("no capture runs on {target:?}") }),
                false,
            ),
        }
    }

    /// Registers interface `name` as a port while the daemon runs (`port add`), the way start-up
    /// does for a configured one: its XDP program loaded (refused if a foreign one is attached),
    /// a socket per RX queue bound to the workers' UMEMs from this thread (queue q on worker q
    /// mod workers, as the planner does), the program attached with an empty XSKMAP (what
    /// arrives meanwhile is counted as `rx_drop_no_socket`), the sockets handed to the workers,
    /// which stock their fill rings at their next loop, and only then the XSKMAP filled: no
    /// frame ever meets an empty fill ring. Until the port joins a bond its frames go nowhere
    /// (`rx_drop_no_output`). A failure before the hand-over leaves nothing behind (the program
    /// and the sockets close).
    fn port_add(&mut self, name: &str, host: &dyn Host) -> Result<Value, String> {
        if self.ports.iter().any(|p| p.name == name) {
            return Err(format!("{name} is already a port"));
        }
        if WorkerCmd::ifname(name).is_none() {
            return Err(format!("{name:?}: interface name too long"));
        }
        let ifindex = host
            .ifindex(name)
            .ok_or_else(|| format!("no interface named {name:?}"))?;
        let queues = host.rx_queues(name).unwrap_or(1).clamp(1, MAX_QUEUES);
        let nw = self.workers.len() as u32;
        if queues < nw {
            return Err(format!(
                "{name} has {queues} RX queues but there are {nw} workers: every worker needs a queue on every port"
            ));
        }
        for (w, rw) in self.workers.iter().enumerate() {
            let needed = (0..queues).filter(|q| q % nw == w as u32).count();
            if rw.handle.spare() < needed {
                return Err(format!(
                    "{name} needs {needed} sockets on the worker of core {}, which has {} spare (raise workers.spare_queues)",
                    rw.handle.core().unwrap_or_default(),
                    rw.handle.spare()
                ));
            }
        }
        let link = Arc::new(LinkState::new(host.carrier(name).unwrap_or(true)));
        let tap: Arc<Tap> = Arc::default();
        let s = self.bind;
        let needs: Vec<crate::privs::Need> = [
            caps::Capability::CAP_BPF,
            caps::Capability::CAP_NET_ADMIN,
            caps::Capability::CAP_NET_RAW,
        ]
        .into_iter()
        .filter_map(crate::privs::need)
        .collect();
        let workers = &self.workers;
        let set_up = || -> anyhow::Result<_> {
            let mut prog = XdpProgram::load(name, ifindex, false)?;
            let mut bound = Vec::with_capacity(queues as usize);
            for q in 0..queues {
                let w = (q % nw) as usize;
                let nq = workers[w].handle.bind_queue(
                    name,
                    q,
                    s.zero_copy,
                    s.busy_poll_budget,
                    link.clone(),
                    tap.clone(),
                )?;
                let stats = nq.stats_reader().context("duplicating a socket fd")?;
                bound.push((w, q, stats, nq));
            }
            let mode = prog.attach(s.xdp_mode)?;
            Ok((prog, mode, bound))
        };
        let (prog, xdp_mode, bound) = crate::privs::with_effective(&needs, set_up)
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("adding port {name}: {e:#}"))?;
        let mut port = Port {
            name: name.to_owned(),
            ifindex,
            tap: tap.clone(),
            prog,
            link: link.clone(),
            xsk: Vec::with_capacity(bound.len()),
            modes: Vec::with_capacity(bound.len()),
        };
        let taken_before: Vec<u64> = self
            .workers
            .iter()
            .map(|w| w.handle.counters().queues_attached.get())
            .collect();
        let mut handed = vec![0u64; self.workers.len()];
        let mut fds = Vec::with_capacity(bound.len());
        for (w, q, stats, nq) in bound {
            port.modes.push(nq.queue().mode());
            port.xsk.push((q, stats));
            fds.push((q, nq.queue().fd()));
            // Cannot fail: the spare slots were counted above, under the same &mut self.
            if self.workers[w].handle.attach(nq).is_err() {
                return Err(format!("{name} queue {q}: the worker refused the socket"));
            }
            handed[w] += 1;
        }
        // The workers stock the new fill rings at their next loop (microseconds); then the
        // XSKMAP entries open the way.
        let deadline = Instant::now() + Duration::from_secs(1);
        while self
            .workers
            .iter()
            .enumerate()
            .any(|(w, rw)| rw.handle.counters().queues_attached.get() < taken_before[w] + handed[w])
        {
            if Instant::now() > deadline {
                warn!(
                    port = name,
                    "a worker has not taken the new sockets within 1 s"
                );
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let registered = fds
            .iter()
            .try_for_each(|&(q, fd)| port.prog.register(q, fd));
        let bind = port.modes.first().copied().unwrap_or(BindMode::Copy);
        info!(port = name, queues, %bind, xdp = %xdp_mode, "port added at run time");
        lock(&self.book)
            .ports
            .push((name.to_owned(), ifindex, link));
        self.taps.push((name.to_owned(), tap, vec![ifindex]));
        self.ports.push(port);
        if let Err(e) = registered {
            error!(port = name, "XSKMAP registration failed: {e}");
            return Err(format!(
                "{name} was added but its sockets could not be registered ({e}): it receives nothing"
            ));
        }
        Ok(json!({
            "ok": true,
            "port": name,
            "ifindex": ifindex,
            "queues": queues,
            "bind": bind.to_string(),
            "xdp_mode": xdp_mode.to_string(),
        }))
    }

    /// Unregisters ports while the daemon runs (`port del`), all or none, the way
    /// `unregister_netdevice_many` takes a batch: each leaves its bond (released, as `bond
    /// release` does) and its captures stop; its XDP program is detached (no more frames reach
    /// its sockets); the workers give its sockets back, and control closes them; once the kernel
    /// has let go of their buffers (one grace period for the whole batch, [`UNREGISTER_GRACE`])
    /// the frames they held return to their worker's pool ([`Self::finish_unregister`]). A
    /// cross-connected port cannot go: the cross-connect would point at nothing.
    fn port_del(&mut self, names: &[&str], host: &dyn Host) -> Result<Value, String> {
        for (i, name) in names.iter().enumerate() {
            if !self.ports.iter().any(|p| p.name == *name) {
                return Err(format!("no port named {name:?}"));
            }
            if self.connected.iter().any(|c| c == name) {
                return Err(format!(
                    "{name} is cross-connected: it cannot be unregistered while the daemon runs"
                ));
            }
            if names[..i].contains(name) {
                return Err(format!("{name} is listed twice"));
            }
        }
        for &name in names {
            let memberships: Vec<String> = lock(&self.book)
                .bonds
                .iter()
                .filter(|b| b.members.iter().any(|m| m.name == name && !m.released))
                .map(|b| b.name.clone())
                .collect();
            for bond in memberships {
                let (v, ok) = self.bond_member(&bond, name, false, host);
                if !ok {
                    return Err(format!("releasing {name} from {bond}: {}", v["error"]));
                }
            }
            if let Some(i) = self.captures.iter().position(|c| c.target == name) {
                let v = self.captures.remove(i).stop();
                info!(target = name, capture = %v, "capture stopped: port unregistered");
            }
        }
        let mut sockets = 0;
        for &name in names {
            let Some(i) = self.ports.iter().position(|p| p.name == name) else {
                continue;
            };
            let mut port = self.ports.remove(i);
            port.prog.detach();
            let ifname = WorkerCmd::ifname(name).unwrap_or_default();
            for w in &mut self.workers {
                // A full command queue is retried: the port is gone from control already.
                let deadline = Instant::now() + Duration::from_millis(100);
                while !w.handle.command(WorkerCmd::Detach { ifname }) {
                    if Instant::now() > deadline {
                        warn!(port = name, "a worker's command queue stayed full");
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                sockets += w.handle.forget_queues(name);
            }
            let ifindex = port.ifindex;
            lock(&self.book).ports.retain(|p| p.1 != ifindex);
            self.taps.retain(|t| t.0 != name);
            for t in &mut self.taps {
                t.2.retain(|&i| i != ifindex);
            }
            info!(
                port = name,
                "port unregistered; its sockets close once the workers give them back"
            );
        }
        Ok(json!({ "ok": true, "removed": names, "sockets": sockets }))
    }

    /// The end of `port del`, from the control loop: closes the sockets workers gave back,
    /// and once [`UNREGISTER_GRACE`] has passed since, has each worker take back the frames
    /// they held.
    fn finish_unregister(&mut self) {
        let now = Instant::now();
        for (w, rw) in self.workers.iter().enumerate() {
            while let Some(q) = rw.handle.take_retired() {
                let (id, name) = (q.id(), q.ifname().to_owned());
                drop(q);
                info!(port = %name, socket = id, "socket closed");
                self.closing.push((w, id, now));
            }
        }
        let workers = &self.workers;
        self.closing.retain(|&(w, id, closed)| {
            now.duration_since(closed) < UNREGISTER_GRACE
                || !workers[w].handle.command(WorkerCmd::Reclaim { id })
        });
    }

    /// Adds port `name` to bond `bond`, or releases it, at run time: the bond's state first,
    /// then every worker retags the port's sockets. An interface that is not a port yet is
    /// added as one first (as `ip link set IF master BOND` takes any interface).
    fn bond_member(&mut self, bond: &str, name: &str, on: bool, host: &dyn Host) -> (Value, bool) {
        let err = |m: String| (json!({ "error": m }), false);
        let known_bond = lock(&self.book).bonds.iter().any(|b| b.name == bond);
        if on
            && known_bond
            && !self.ports.iter().any(|p| p.name == name)
            && let Err(e) = self.port_add(name, host)
        {
            return err(e);
        }
        let Some(port) = self.ports.iter().find(|p| p.name == name) else {
            return err(format!("no port named {name:?}"));
        };
        let Some(ifname) = WorkerCmd::ifname(name) else {
            return err(format!("{name:?}: interface name too long"));
        };
        let mut book = lock(&self.book);
        let Some(bi) = book.bonds.iter().position(|b| b.name == bond) else {
            return err(format!("no bond named {bond:?}"));
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let result = if on {
            if self.connected.iter().any(|c| c == name) {
                return err(format!("{name} is cross-connected: it cannot join a bond"));
            }
            let other =
                book.bonds.iter().enumerate().any(|(j, b)| {
                    j != bi && b.members.iter().any(|m| m.name == name && !m.released)
                });
            if other {
                return err(format!("{name} is a member of another bond"));
            }
            let up = port.link.is_up();
            let member = Member {
                name: name.to_owned(),
                ifindex: port.ifindex,
                link: if up { MemberLink::Up } else { MemberLink::Down },
                link_failures: 0,
                prio: 0,
                speed: 10_000,
                perm_mac: std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
                released: false,
            };
            book.bonds[bi].enslave(member, now, wall)
        } else {
            book.bonds[bi].release(name, now, wall)
        };
        book.bonds[bi].trace_events();
        let m = match result {
            Ok(m) => m,
            Err(e) => return err(e),
        };
        let cmd = WorkerCmd::SetMember {
            bond: bi,
            member: m,
            ifname,
            on,
        };
        if !self.workers.iter().all(|w| w.handle.command(cmd)) {
            return err("a worker's command queue is full; try again".into());
        }
        book.announce(now);
        drop(book);
        // The bond's capture target spans its members: future captures see the change, and a
        // capture running on the bond holds a new member promiscuous too.
        let ifindex = port.ifindex;
        if let Some((_, _, members)) = self.taps.iter_mut().find(|t| t.0 == bond) {
            members.retain(|&i| i != ifindex);
            if on {
                members.push(ifindex);
            }
        }
        if !on && let Some(c) = self.captures.iter_mut().find(|c| c.target == bond) {
            c.release(ifindex);
        }
        if on && let Some(c) = self.captures.iter_mut().find(|c| c.target == bond) {
            let net_raw = crate::privs::need(caps::Capability::CAP_NET_RAW);
            let held = crate::privs::with_effective(net_raw.as_slice(), || c.hold(ifindex));
            if !matches!(held, Ok(Ok(()))) {
                warn!(
                    bond,
                    port = name,
                    "the running capture could not hold the new member promiscuous"
                );
            }
        }
        (
            json!({ "ok": true, "bond": bond, "member": name, "index": m, "added": on }),
            true,
        )
    }

    fn bond_set(&self, bond: &str, key: &str, value: &str) -> (Value, bool) {
        let mut book = lock(&self.book);
        let Some(b) = book.bonds.iter_mut().find(|b| b.name == bond) else {
            return (json!({ "error": format!("no bond named {bond:?}") }), false);
        };
        let result = b.set_option(key, value, Instant::now(), SystemTime::now());
        b.trace_events();
        book.announce(Instant::now());
        match result {
            Ok(()) => (json!({ "ok": true, "option": key, "value": value }), true),
            Err(e) => (json!({ "error": format!("{bond}: {e}") }), false),
        }
    }

    fn bond_switch(&self, bond: &str, member: &str) -> (Value, bool) {
        let mut book = lock(&self.book);
        let Some(b) = book.bonds.iter_mut().find(|b| b.name == bond) else {
            return (json!({ "error": format!("no bond named {bond:?}") }), false);
        };
        let result = b.switch_to(member, Instant::now(), SystemTime::now());
        b.trace_events();
        book.announce(Instant::now());
        match result {
            Ok(changed) => (
                json!({ "ok": true, "changed": changed, "active": member }),
                true,
            ),
            Err(e) => (json!({ "error": e.to_string() }), false),
        }
    }

    /// The status document: ports with their counters, workers with their frame audit.
    pub fn status(&self) -> Value {
        let ports: Vec<Value> = self.ports.iter().map(|p| self.port_status(p)).collect();
        let workers: Vec<Value> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let c = w.handle.counters();
                json!({
                    "core": w.handle.core(),
                    "flows": crate::flows::worker_status(i, w.handle.flow_reader()),
                    "loops": c.loops.get(),
                    "busy_loops": c.busy_loops.get(),
                    "queues": w.handle.queues().len(),
                    "queues_attached_at_run_time": c.queues_attached.get(),
                    "queues_retired_at_run_time": c.queues_retired.get(),
                    "frames_reclaimed": c.frames_reclaimed.get(),
                    "spare_queues": w.handle.spare(),
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
            "bonds": self.bonds_status(),
            "captures": self.captures.iter().map(Capture::status).collect::<Vec<_>>(),
            "control": { "requests": self.requests, "bad_requests": self.bad_requests },
            "placement": self.placement,
            "threads": self.check_threads(),
            "rtnetlink": self.rtnl.as_ref().map(|r| json!({
                "events": r.events.load(std::sync::atomic::Ordering::Relaxed),
                "malformed": r.malformed.load(std::sync::atomic::Ordering::Relaxed),
                "errors": r.errors.load(std::sync::atomic::Ordering::Relaxed),
            })),
        })
    }

    fn bonds_status(&self) -> Vec<Value> {
        let book = lock(&self.book);
        book.bonds
            .iter()
            .map(|b| {
                let mut v = b.status();
                let (mut tx, mut no_active) = (0, 0);
                for bi in self
                    .workers
                    .iter()
                    .flat_map(|w| w.handle.bonds())
                    .filter(|i| i.name == b.name)
                {
                    tx += bi.counters.tx_packets.get();
                    no_active += bi.counters.drops(DropReason::TxNoActiveMember);
                }
                let (mut to_control, mut control_full) = (0, 0);
                for bi in self
                    .workers
                    .iter()
                    .flat_map(|w| w.handle.bonds())
                    .filter(|i| i.name == b.name)
                {
                    to_control += bi.counters.rx_packets.get();
                    control_full += bi.counters.drops(DropReason::RxControlFull);
                }
                v["tx_packets"] = json!(tx);
                v["to_control"] = json!(to_control);
                v["drops"] = json!({
                    "tx_drop_no_active_member": no_active,
                    "rx_drop_control_full": control_full,
                });
                v
            })
            .collect()
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
        let parse = crate::parse_status::ParseCounters::sum(
            self.workers
                .iter()
                .flat_map(|w| w.handle.queues())
                .filter(|q| q.ifname == p.name)
                .map(|q| &**q.counters),
        );
        for (k, v) in &parse.parse_drops {
            drop_map.insert((*k).into(), json!(v));
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
            "parse_errors": parse.parse_errors,
            "classes": parse.classes,
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
        lock(&self.book).release_tracking();
        for c in std::mem::take(&mut self.captures) {
            let v = c.stop();
            info!(capture = %v, "capture stopped");
        }
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
