//! Start-up: programs, sockets, workers, the link book and the rtnetlink watcher.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use isopath_datapath::{
    bond::{BondShared, MAILBOX, Mailbox, Punt, SeenMacs, mac_u64},
    params::BindMode,
    stats::LinkState,
    tap::Tap,
    worker::WorkerBuilder,
    xsk::xdp::{Previous, XdpProgram},
};
use tracing::{info, warn};

use super::{
    BindSettings, Daemon, DevData, DevRegistry, LinkBook, Plane, PortIo, RunningWorker, StartError,
    Turn, bind_control_socket, listeners, listeners::Tracking, lock,
};
use crate::{
    bond::{Bond, Member, MemberLink},
    config::{Endpoint, Plan},
    frames,
    host::Host,
    netlink::spawn_link_watcher,
    registry::{Device, DeviceKind, Flags, Hold, OperState},
    server::Server,
    topology,
};

/// A configured port while start-up builds it, before it is registered.
struct Staged {
    name: String,
    ifindex: u32,
    tap: Arc<Tap>,
    holds: Vec<Hold>,
    io: PortIo,
}

/// A port's MTU from sysfs, if readable.
pub(super) fn sysfs_mtu(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

impl Daemon {
    /// Brings everything up as described in the module docs.
    ///
    /// # Errors
    /// Any failure; what was set up so far is torn down by drop (links close, sockets close).
    pub fn start(plan: &Plan, host: &dyn Host, force: bool) -> Result<Self, StartError> {
        let listener = bind_control_socket(Path::new(&plan.control_socket))?;
        let nl = bind_netlink(&plan.netlink)?;
        // Bound before anything changes: a bad address refuses the start.
        let metrics_listener = plan
            .metrics
            .map(|addr| {
                std::net::TcpListener::bind(addr)
                    .map_err(|source| StartError::Metrics { addr, source })
            })
            .transpose()?;
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
        let mut ports: Vec<Staged> = plan
            .ports
            .iter()
            .zip(progs)
            .map(|(p, prog)| Staged {
                name: p.name.clone(),
                ifindex: p.ifindex,
                tap: Arc::default(),
                holds: Vec::new(),
                io: PortIo {
                    prog,
                    link: Arc::new(LinkState::new(host.carrier(&p.name).unwrap_or(true))),
                    xsk: Vec::new(),
                    modes: Vec::new(),
                },
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

        // The views the workers act on, published by control after every change of a bond.
        let shared: Vec<Arc<BondShared>> = bonds
            .iter()
            .map(|b| {
                let s = Arc::new(BondShared::new());
                s.set(b.view());
                s
            })
            .collect();

        let tracking: Vec<Tracking> = plan
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
                Tracking { peers, held: false }
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
                .map_err(|source| StartError::Worker {
                    worker: w,
                    core: wp.core,
                    source,
                })?
                .strict(plan.strict);
            if let Some(params) = &plan.flows {
                b = b.flows(params).map_err(StartError::FlowTable)?;
            }
            let mut slots = Vec::with_capacity(wp.queues.len());
            for &(pi, q) in &wp.queues {
                let port = &mut ports[pi];
                let (slot, xq) = b.add_queue(
                    &port.name,
                    q,
                    plan.zero_copy,
                    plan.busy_poll_budget,
                    port.io.link.clone(),
                    port.tap.clone(),
                )?;
                port.io.prog.register(q, xq.fd())?;
                port.io
                    .xsk
                    .push((q, xq.stats_reader().map_err(StartError::StatsReader)?));
                port.io.modes.push(xq.mode());
                port.holds.push(Hold {
                    worker: w,
                    queue: q,
                    slot: Some(slot),
                });
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
                .zip(&shared)
                .map(|((((bd, (mb, seen)), tap), punt), view)| {
                    b.add_bond(
                        &bd.name,
                        view.clone(),
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
            let mode = port.io.modes.first().copied().unwrap_or(BindMode::Copy);
            info!(port = %port.name, queues = port.io.modes.len(), bind = %mode, "sockets bound");
            if mode == BindMode::Copy {
                info!(port = %port.name, "AF_XDP copy mode: the kernel copies every frame (veth has no zero-copy)");
            }
        }

        // 3. Attach: from now on frames flow into the sockets.
        for port in &mut ports {
            let mode = port.io.prog.attach(plan.xdp_mode)?;
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
                .map_err(StartError::Spawn)?;
            info!(
                core = wp.core,
                queues = wp.queues.len(),
                frames = wp.frames,
                "worker polling"
            );
            workers.push(RunningWorker { handle, thread });
        }

        // The devices, through the registry: its listeners fill the link book's index of
        // ports and take a memberless bond's peers down (link-state tracking).
        let actives: Vec<Option<String>> = bonds
            .iter()
            .map(|b| b.active().map(|m| b.members[m].name.clone()))
            .collect();
        let mut plane = Plane {
            turn: Turn { now, wall },
            workers,
            book: Arc::new(Mutex::new(LinkBook {
                links: Vec::new(),
                bonds,
                shared,
                outboxes,
                punts,
                events_out: Vec::new(),
                events_out_lost: 0,
                held_down: Vec::new(),
            })),
            captures: Vec::new(),
            tracking,
            closing: Vec::new(),
            quiesce: super::QuiesceStats::default(),
            promisc: super::promisc::Promisc::default(),
            flow_ports: plan.ports.iter().map(|p| p.name.clone()).collect(),
            forced: false,
        };
        let mut registry = DevRegistry::new();
        listeners::install(&mut registry);
        let links_gen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let link_events = Arc::new(Mutex::new(Vec::new()));
        registry.listen(
            Box::new(super::nl::LinkEvents {
                generation: links_gen.clone(),
                out: link_events.clone(),
            }),
            -100,
        );
        let mut bond_ids = Vec::with_capacity(plan.bonds.len());
        for (bi, (bp, tap)) in plan.bonds.iter().zip(bond_taps).enumerate() {
            let dev = Device {
                operstate: OperState::from_up(actives[bi].is_some()),
                tap,
                ..Device::new(&bp.name, DeviceKind::Bond, DevData::Bond { index: bi })
            };
            bond_ids.push(registry.register(dev, &mut plane)?);
        }
        let connected: Vec<usize> = plan
            .cross_connects
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .filter_map(|e| match e {
                Endpoint::Port(p) => Some(p),
                Endpoint::Bond(_) => None,
            })
            .collect();
        for (pi, p) in ports.into_iter().enumerate() {
            let master = plan.bonds.iter().position(|bp| bp.members.contains(&pi));
            let dev = Device {
                ifindex: Some(p.ifindex),
                flags: Flags {
                    up: true,
                    cross_connected: connected.contains(&pi),
                },
                operstate: OperState::from_up(p.io.link.is_up()),
                mac: host.mac(&p.name).and_then(|m| frames::parse_mac(&m)),
                mtu: sysfs_mtu(&p.name),
                holds: p.holds,
                master: master.map(|bi| bond_ids[bi]),
                tap: p.tap,
                ..Device::new(&p.name, DeviceKind::Port, DevData::Port(p.io))
            };
            registry.register(dev, &mut plane)?;
        }
        for (bi, active) in actives.iter().enumerate() {
            let member = active
                .as_deref()
                .and_then(|n| registry.devices().id_of(n, DeviceKind::Port));
            registry.set_active(bond_ids[bi], member, &mut plane)?;
        }
        let book = plane.book.clone();
        lock(&book).trace();
        // Carrier events from the kernel, applied the moment they arrive; deletions queued.
        let kernel_deleted: Arc<Mutex<Vec<u32>>> = Arc::default();
        let links_changed: Arc<std::sync::atomic::AtomicBool> = Arc::default();
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
            let deleted = kernel_deleted.clone();
            let changed = links_changed.clone();
            match spawn_link_watcher(on_start, move |e| {
                // The clock is read where the event arrives, once, and passed down.
                let (now, wall) = (Instant::now(), SystemTime::now());
                // A deleted link is down first (the bond moves off it at once); the control
                // loop unregisters its port on its next turn.
                lock(&book).carrier(e.ifindex, e.up, now, wall);
                if e.deleted {
                    lock(&deleted).push(e.ifindex);
                }
                changed.store(true, std::sync::atomic::Ordering::Relaxed);
            }) {
                Ok((_thread, stats)) => Some(stats),
                Err(e) => {
                    warn!("rtnetlink link events unavailable ({e}); relying on the miimon poll");
                    None
                }
            }
        };

        let ipfix = plan
            .ipfix
            .as_ref()
            .map(|p| super::nl_flows::start_ipfix(p, housekeeping.clone()))
            .transpose()?;
        let metrics = match metrics_listener {
            Some(l) => Some(spawn_metrics(l, housekeeping.clone())?),
            None => None,
        };

        Ok(Self {
            registry,
            plane,
            rtnl,
            waiting: Vec::new(),
            kernel_deleted,
            link_history: std::collections::VecDeque::new(),
            kernel_deleted_total: 0,
            renamed: std::collections::BTreeMap::new(),
            links_changed,
            mtu_read: now,
            // XDP_PACKET_HEADROOM (256) before the frame; Ethernet header and one 802.1Q tag.
            max_mtu: plan.rings.frame_size.get().saturating_sub(256 + 14 + 4),
            mtu_down: std::collections::BTreeMap::new(),
            handed: vec![0; plan.workers.len()],
            bind: BindSettings {
                zero_copy: plan.zero_copy,
                busy_poll_budget: plan.busy_poll_budget,
                xdp_mode: plan.xdp_mode,
            },
            socket_path: PathBuf::from(&plan.control_socket),
            server: Server::new(listener).map_err(|source| StartError::Socket {
                what: format!("making {} non-blocking", plan.control_socket),
                source,
            })?,
            nl: Some(nl),
            links_gen,
            link_events,
            started: Instant::now(),
            bad_requests: 0,
            placement: plan.placement.clone(),
            housekeeping,
            flow_cursors: crate::flows::dump::Cursors::default(),
            flow_events_sent: 0,
            flow_clocks: Vec::new(),
            ipfix,
            metrics,
            loop_seen: Vec::new(),
            watchdog: watchdog_from_env(),
            stall_hook: super::StallHook::from_env(Instant::now()),
            config: None,
            log_filter: None,
        })
    }
}

/// The watchdog systemd asks for (`WATCHDOG_USEC`), logged.
fn watchdog_from_env() -> Option<super::watchdog::Watchdog> {
    let w = super::watchdog::Watchdog::from_env(Instant::now())?;
    info!(
        timeout_ms = w.timeout().as_millis() as u64,
        "watchdog: WATCHDOG=1 every half of it while every worker's loop moves"
    );
    Some(w)
}

/// Starts the metrics endpoint's thread on `listener`, on the housekeeping CPUs.
pub(super) fn spawn_metrics(
    listener: std::net::TcpListener,
    housekeeping: Option<topology::Housekeeping>,
) -> Result<super::Metrics, StartError> {
    let published = Arc::new(crate::metrics::Published::default());
    let addr = listener.local_addr().map_err(|source| StartError::Socket {
        what: "reading the metrics listener's address".into(),
        source,
    })?;
    let server = crate::metrics::MetricsServer::spawn(
        listener,
        crate::metrics::page(published.clone()),
        move || {
            if let Some(h) = housekeeping
                && let Err(e) = h.pin_current()
            {
                warn!("metrics thread: {e}");
            }
        },
    )
    .map_err(|source| StartError::Metrics { addr, source })?;
    info!(%addr, "metrics endpoint listening: http://{addr}/metrics");
    Ok(super::Metrics { server, published })
}

/// Binds the netlink-format control socket: its mode, its group, the admin group (a group
/// that does not exist is logged and left out: the file keeps root's group, only root may
/// change things).
fn bind_netlink(p: &crate::config::NetlinkPlan) -> Result<crate::nlserver::NlServer, StartError> {
    use crate::nlserver::{NlConfig, NlServer, group_gid};
    let group = |name: &str, what: &str| {
        let g = group_gid(name).map(|gid| (name.to_owned(), gid));
        if g.is_none() {
            warn!(group = name, "no such group: {what}");
        }
        g
    };
    NlServer::bind(NlConfig {
        path: PathBuf::from(&p.path),
        mode: p.mode,
        group: group(&p.group, "the netlink socket keeps root's group"),
        admin_group: group(&p.admin_group, "only root may change things"),
        max_clients: p.max_clients,
    })
    .map_err(|source| StartError::Socket {
        what: format!("binding {}", p.path),
        source,
    })
}
