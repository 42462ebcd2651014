//! Ports at run time: `port add`, `port del` and the end of an unregistration.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use isopath_datapath::{
    flow::Flush,
    params::BindMode,
    stats::LinkState,
    tap::Tap,
    worker::WorkerCmd,
    xsk::xdp::{MAX_QUEUES, XdpProgram},
};
use tracing::{error, info, warn};

use super::{Closing, Daemon, DevData, Plane, PortIo, StartError, error_chain, start::sysfs_mtu};
use crate::{
    host::Host,
    registry::{Device, DeviceId, DeviceKind, Flags, Hold, OperState, RegistryError, Teardown},
    request::{PortAdded, PortsRemoved},
};

/// How long after closing a socket its frames stay with the kernel: a socket's buffer pool
/// is freed from a workqueue after the last reference goes (70-100 ms measured here after
/// SIGKILL), and a zero-copy driver returns its buffers then.
const UNREGISTER_GRACE: Duration = Duration::from_millis(250);

/// How long `port add` waits for the workers to take a new port's sockets before it fills the
/// XSKMAP anyway (they take them at their next loop: microseconds).
pub(super) const TAKE_WAIT: Duration = Duration::from_secs(1);

/// A port whose sockets are with the workers, not all taken yet: not registered, not in the
/// XSKMAP. The control loop revisits it every turn ([`Daemon::port_finish`]).
pub(super) struct PendingPort {
    /// The interface.
    pub(super) name: String,
    dev: Device<DevData>,
    /// (queue, socket fd) for the XSKMAP.
    fds: Vec<(u32, i32)>,
    /// Per worker: how many sockets it must have taken at run time, ours included (sockets
    /// are taken in the order handed over).
    want: Vec<u64>,
    /// When to stop waiting.
    pub(super) deadline: Instant,
    reply: PortAdded,
}

impl PendingPort {
    /// Whether every worker has taken its sockets, given what each has `taken` so far.
    pub(super) fn taken(&self, taken: &[u64]) -> bool {
        all_taken(&self.want, taken)
    }

    /// Whether the loop finishes it at `now`: its sockets taken, or the deadline passed.
    pub(super) fn due(&self, taken: &[u64], now: Instant) -> bool {
        due(&self.want, taken, self.deadline, now)
    }
}

/// Whether each worker has taken at least the sockets `want` says.
fn all_taken(want: &[u64], taken: &[u64]) -> bool {
    want.len() == taken.len() && want.iter().zip(taken).all(|(w, t)| t >= w)
}

/// Whether a pending port is finished at `now`.
fn due(want: &[u64], taken: &[u64], deadline: Instant, now: Instant) -> bool {
    all_taken(want, taken) || now > deadline
}

impl Daemon {
    /// Registers interface `name` as a port while the daemon runs (`port add`), the way start-up
    /// does for a configured one: its XDP program loaded (refused if a foreign one is attached),
    /// a socket per RX queue bound to the workers' UMEMs from this thread (queue q on worker q
    /// mod workers, as the planner does), the program attached with an empty XSKMAP (what
    /// arrives meanwhile is counted as `rx_drop_no_socket`), the sockets handed to the workers,
    /// which stock their fill rings at their next loop, and only then the XSKMAP filled: no
    /// frame ever meets an empty fill ring. Until the port joins a bond its frames go nowhere
    /// (`rx_drop_no_output`). A failure before the hand-over leaves nothing behind (the program
    /// and the sockets close).
    ///
    /// This is the first half, up to the hand-over: the workers take the sockets at their next
    /// loop, and the control loop finishes the port ([`Self::port_finish`]) on a later turn,
    /// once they have (or [`TAKE_WAIT`] has passed), instead of waiting here.
    pub(super) fn port_begin(
        &mut self,
        name: &str,
        host: &dyn Host,
    ) -> Result<PendingPort, String> {
        match self.registry.devices().find(name) {
            Some((_, d)) if d.kind != DeviceKind::Port => {
                // Refused here, before anything is bound: the registry would refuse the name
                // only once the sockets were with the workers.
                return Err(format!("{name} is the name of a {:?} here", d.kind));
            }
            Some(_) => return Err(format!("{name} is already a port")),
            None if self.waiting.iter().any(|w| w.port.name == name) => {
                return Err(format!("{name} is already a port"));
            }
            None => {}
        }
        if WorkerCmd::ifname(name).is_none() {
            return Err(format!("{name:?}: interface name too long"));
        }
        let ifindex = host
            .ifindex(name)
            .ok_or_else(|| format!("no interface named {name:?}"))?;
        let queues = host.rx_queues(name).unwrap_or(1).clamp(1, MAX_QUEUES);
        let nw = self.plane.workers.len() as u32;
        if queues < nw {
            return Err(format!(
                "{name} has {queues} RX queues but there are {nw} workers: every worker needs a queue on every port"
            ));
        }
        for (w, rw) in self.plane.workers.iter().enumerate() {
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
        let workers = &self.plane.workers;
        let set_up = || -> Result<_, StartError> {
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
                let stats = nq.stats_reader().map_err(StartError::StatsReader)?;
                bound.push((w, q, stats, nq));
            }
            let mode = prog.attach(s.xdp_mode)?;
            Ok((prog, mode, bound))
        };
        let (prog, xdp_mode, bound) = crate::privs::with_effective(&needs, set_up)
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("adding port {name}: {}", error_chain(&e)))?;
        let mut port = PortIo {
            prog,
            link: link.clone(),
            xsk: Vec::with_capacity(bound.len()),
            modes: Vec::with_capacity(bound.len()),
        };
        let mut holds = Vec::with_capacity(bound.len());
        let mut fds = Vec::with_capacity(bound.len());
        for (w, q, stats, nq) in bound {
            port.modes.push(nq.queue().mode());
            port.xsk.push((q, stats));
            holds.push(Hold {
                worker: w,
                queue: q,
                slot: None,
            });
            fds.push((q, nq.queue().fd()));
            // Cannot fail: the spare slots were counted above, under the same &mut self.
            if self.plane.workers[w].handle.attach(nq).is_err() {
                return Err(format!("{name} queue {q}: the worker refused the socket"));
            }
            self.handed[w] += 1;
        }
        let bind = port.modes.first().copied().unwrap_or(BindMode::Copy);
        let dev = Device {
            ifindex: Some(ifindex),
            flags: Flags {
                up: true,
                cross_connected: false,
            },
            operstate: OperState::from_up(link.is_up()),
            mac: host.mac(name).and_then(|m| crate::frames::parse_mac(&m)),
            mtu: sysfs_mtu(name),
            holds,
            tap,
            ..Device::new(name, DeviceKind::Port, DevData::Port(port))
        };
        Ok(PendingPort {
            name: name.to_owned(),
            dev,
            fds,
            want: self.handed.clone(),
            deadline: self.plane.turn.now + TAKE_WAIT,
            reply: PortAdded {
                ok: true,
                port: name.to_owned(),
                ifindex,
                queues,
                bind: bind.to_string(),
                xdp_mode: xdp_mode.to_string(),
            },
        })
    }

    /// The second half of `port add`, from the control loop: the XSKMAP filled (the workers
    /// have stocked the sockets' fill rings), the port registered.
    pub(super) fn port_finish(&mut self, p: PendingPort) -> Result<PortAdded, String> {
        let name = p.name.as_str();
        if !p.taken(&self.taken()) {
            warn!(
                port = name,
                "a worker has not taken the new sockets within 1 s"
            );
        }
        let registered = match &p.dev.data {
            DevData::Port(io) => p
                .fds
                .iter()
                .try_for_each(|&(q, fd)| io.prog.register(q, fd)),
            DevData::Bond { .. } | DevData::Loopback => Ok(()),
        };
        let r = p.reply;
        info!(port = name, queues = r.queues, bind = %r.bind, xdp = %r.xdp_mode, "port added at run time");
        // The listeners add it to the link book's index (carrier events reach it from now).
        if let Err(e) = self.registry.register(p.dev, &mut self.plane) {
            return Err(format!("adding port {}: {e}", r.port));
        }
        if let Err(e) = registered {
            error!(port = %r.port, "XSKMAP registration failed: {e}");
            return Err(format!(
                "{} was added but its sockets could not be registered ({e}): it receives nothing",
                r.port
            ));
        }
        Ok(r)
    }

    /// Per worker: the sockets it has taken at run time so far.
    pub(super) fn taken(&self) -> Vec<u64> {
        self.plane
            .workers
            .iter()
            .map(|w| w.handle.counters().queues_attached.get())
            .collect()
    }

    /// Unregisters ports while the daemon runs (`port del`), all or none, the way
    /// `unregister_netdevice_many` takes a batch ([`crate::registry::Registry::unregister_many`]):
    /// each leaves its bond (released, as `bond release` does) and its captures stop; its XDP
    /// program is detached (no more frames reach its sockets) and the workers are told to give
    /// its sockets back ([`Plane`]'s [`Teardown::close`]); the first quiesce waits until they
    /// have; its flows are flushed and control closes the sockets ([`Teardown::detach`]); a
    /// second quiesce for the batch. Once the kernel has let go of their buffers (one grace
    /// period for the whole batch, [`UNREGISTER_GRACE`]) the frames they held return to their
    /// worker's pool ([`Self::finish_unregister`]). A cross-connected port cannot go: the
    /// cross-connect would point at nothing.
    pub(super) fn port_del(&mut self, names: &[&str]) -> Result<PortsRemoved, String> {
        // All or none: every name is checked (and the listeners asked) before anything goes.
        let mut ids = Vec::with_capacity(names.len());
        let mut sockets = 0;
        for (i, name) in names.iter().enumerate() {
            let Some(id) = self.registry.devices().id_of(name, DeviceKind::Port) else {
                return Err(format!("no port named {name:?}"));
            };
            if let Err(e) = self.registry.pre_unregister(id, &mut self.plane) {
                return Err(e.to_string());
            }
            if names[..i].contains(name) {
                return Err(format!("{name} is listed twice"));
            }
            sockets += self.registry.devices().get(id).map_or(0, |d| d.holds.len());
            ids.push(id);
        }
        let now = self.plane.turn.now;
        // Each leaves its bond and its captures stop (listeners), its program and sockets are
        // detached, then it leaves the table; nothing holds a port yet, so it is freed at once
        // (its PortIo dropped here).
        match self.registry.unregister_many(&ids, now, &mut self.plane) {
            Ok(_freed) => {}
            Err(RegistryError::Unlink { port, bond, veto }) => {
                return Err(format!("releasing {port} from {bond}: {:?}", veto.reason));
            }
            Err(e) => return Err(e.to_string()),
        }
        Ok(PortsRemoved {
            ok: true,
            removed: names.iter().map(|&n| n.to_owned()).collect(),
            sockets,
        })
    }

    /// The end of `port del`, from the control loop: frees what the todo list lets go, closes
    /// sockets workers gave back late (a quiesce that timed out), and once [`UNREGISTER_GRACE`]
    /// has passed since a socket closed, has its worker take back the frames it held.
    pub(super) fn finish_unregister(&mut self) {
        let now = self.plane.turn.now;
        // Devices still referenced when unregistered: freed once the last reference goes
        // (the registry logs those still waiting every 10 s).
        drop(self.registry.poll_todo(now).freed);
        self.plane.close_retired();
        let workers = &self.plane.workers;
        self.plane.closing.retain(|c| {
            now.duration_since(c.closed) < UNREGISTER_GRACE
                || !workers[c.worker]
                    .handle
                    .command(WorkerCmd::Reclaim { id: c.id })
        });
    }
}

/// How long a quiesce waits for every worker to pass a grace point before it gives up (and
/// says so): a looping worker passes one every few microseconds.
pub(super) const QUIESCE_TIMEOUT: Duration = Duration::from_millis(200);

/// Spins before the quiesce starts sleeping between looks (a worker's loop is microseconds).
const QUIESCE_SPINS: u32 = 2_000;

impl Plane {
    /// Closes every socket the workers have given back; its frames come back after
    /// [`UNREGISTER_GRACE`] ([`Daemon::finish_unregister`]). Returns how many.
    fn close_retired(&mut self) -> usize {
        let now = self.turn.now;
        let mut n = 0;
        for (w, rw) in self.workers.iter().enumerate() {
            while let Some(q) = rw.handle.take_retired() {
                let (id, name) = (q.id(), q.ifname().to_owned());
                // Closing waits for the kernel's grace period (synchronize_net) per socket.
                drop(q);
                info!(port = %name, socket = id, "socket closed");
                self.closing.push(Closing {
                    worker: w,
                    id,
                    closed: now,
                    port: name,
                });
                n += 1;
            }
        }
        n
    }

    /// Waits until every running worker has passed a grace point since now (or is idle), for at
    /// most [`QUIESCE_TIMEOUT`]: spins first, then sleeps 20 µs between looks. Returns whether
    /// every worker did.
    pub(super) fn wait_workers(&mut self) -> bool {
        let start = Instant::now();
        // Taken after the commands of the batch were queued (see `grace.rs` for the order).
        let tickets: Vec<_> = self
            .workers
            .iter()
            .map(|w| w.handle.grace().ticket())
            .collect();
        let mut spins = 0u32;
        let ok = loop {
            let pending = self
                .workers
                .iter()
                .zip(&tickets)
                .filter(|(w, t)| !w.handle.grace().passed(**t) && !w.thread.is_finished())
                .count();
            if pending == 0 {
                break true;
            }
            if start.elapsed() > QUIESCE_TIMEOUT {
                error!(
                    pending,
                    "quiesce: a worker passed no grace point within {QUIESCE_TIMEOUT:?}"
                );
                break false;
            }
            if spins < QUIESCE_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        };
        let us = start.elapsed().as_micros() as u64;
        let q = &mut self.quiesce;
        q.count += 1;
        q.timeouts += u64::from(!ok);
        q.last_us = us;
        q.max_us = q.max_us.max(us);
        ok
    }
}

/// What an unregistration asks of the daemon.
impl Teardown<DevData> for Plane {
    /// The port's XDP program detached (no new frame reaches its sockets), then each worker
    /// told to give its sockets back: the first quiesce waits for that.
    fn close(&mut self, _: DeviceId, dev: &mut Device<DevData>) {
        let name = dev.name.as_str();
        let DevData::Port(port) = &mut dev.data else {
            return;
        };
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
            w.handle.forget_queues(name);
        }
    }

    /// Every worker runs a whole loop (two grace points, `grace.rs`): after the first quiesce
    /// of a batch no worker holds a slot of the batch's ports (that loop applied the Detach
    /// queued before it), after the second none still
    /// acts on what the UNREGISTER listeners changed (flows flushed, bond members released).
    fn quiesce(&mut self, _: &[DeviceId]) {
        self.wait_workers();
    }

    /// The port's flows are flushed (both directions: `Flush::Port` selects a flow by either
    /// end's ingress), the sockets the workers gave back are closed (their frames come back
    /// after [`UNREGISTER_GRACE`]); any of this port's a worker still holds is counted as late.
    fn detach(&mut self, _: DeviceId, dev: &mut Device<DevData>) {
        let DevData::Port(_) = &dev.data else {
            return;
        };
        let name = dev.name.as_str();
        // Ports added at run time have no flow id (0): their flows carry none to select by.
        if let Some(flow_id) = self
            .flow_ports
            .iter()
            .position(|n| n == name)
            .and_then(|i| u8::try_from(i + 1).ok())
        {
            let asked = self
                .workers
                .iter()
                .filter(|w| w.handle.flush_flows(Flush::Port(flow_id)))
                .count();
            info!(
                port = name,
                flow_id,
                workers = asked,
                "flows of the port flushed"
            );
        }
        self.close_retired();
        let expected = dev.holds.len();
        let closed = self.closing.iter().filter(|c| c.port == name).count();
        if closed < expected {
            self.quiesce.late_sockets += (expected - closed) as u64;
            warn!(
                port = name,
                sockets = expected - closed,
                "a worker still holds the port's sockets after the quiesce; closed when given back"
            );
        }
        info!(port = name, "port unregistered; its sockets are closed");
    }
}
#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{TAKE_WAIT, due};

    #[test]
    fn a_pending_port_waits_for_every_worker_then_for_its_deadline_only() {
        let t = Instant::now();
        let deadline = t + TAKE_WAIT;
        // Two workers; worker 1 still has to take one of ours.
        let want = [3, 2];
        assert!(!due(&want, &[3, 1], deadline, t));
        assert!(
            !due(&want, &[5, 1], deadline, t),
            "another worker's lead does not count"
        );
        assert!(due(&want, &[3, 2], deadline, t));
        assert!(
            due(&want, &[4, 7], deadline, t),
            "sockets handed later were taken too"
        );
        // Not taken: due once the deadline has passed, not at it.
        assert!(!due(&want, &[3, 1], deadline, deadline));
        assert!(due(
            &want,
            &[3, 1],
            deadline,
            deadline + Duration::from_nanos(1)
        ));
        // A worker count that does not match is never "taken".
        assert!(!due(&want, &[3], deadline, t));
    }
}
