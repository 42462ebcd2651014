//! Ports at run time: `port add`, `port del` and the end of an unregistration.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use isopath_datapath::{
    params::BindMode,
    stats::LinkState,
    tap::Tap,
    worker::WorkerCmd,
    xsk::xdp::{MAX_QUEUES, XdpProgram},
};
use tracing::{error, info, warn};

use super::{Daemon, Port, StartError, error_chain, lock};
use crate::{
    host::Host,
    request::{PortAdded, PortsRemoved},
};

/// How long after closing a socket its frames stay with the kernel: a socket's buffer pool
/// is freed from a workqueue after the last reference goes (70-100 ms measured here after
/// SIGKILL), and a zero-copy driver returns its buffers then.
const UNREGISTER_GRACE: Duration = Duration::from_millis(250);

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
    pub(super) fn port_add(&mut self, name: &str, host: &dyn Host) -> Result<PortAdded, String> {
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
        Ok(PortAdded {
            ok: true,
            port: name.to_owned(),
            ifindex,
            queues,
            bind: bind.to_string(),
            xdp_mode: xdp_mode.to_string(),
        })
    }

    /// Unregisters ports while the daemon runs (`port del`), all or none, the way
    /// `unregister_netdevice_many` takes a batch: each leaves its bond (released, as `bond
    /// release` does) and its captures stop; its XDP program is detached (no more frames reach
    /// its sockets); the workers give its sockets back, and control closes them; once the kernel
    /// has let go of their buffers (one grace period for the whole batch, [`UNREGISTER_GRACE`])
    /// the frames they held return to their worker's pool ([`Self::finish_unregister`]). A
    /// cross-connected port cannot go: the cross-connect would point at nothing.
    pub(super) fn port_del(
        &mut self,
        names: &[&str],
        host: &dyn Host,
    ) -> Result<PortsRemoved, String> {
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
                if let Err(e) = self.bond_member(&bond, name, false, host) {
                    return Err(format!("releasing {name} from {bond}: {e:?}"));
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
        Ok(PortsRemoved {
            ok: true,
            removed: names.iter().map(|&n| n.to_owned()).collect(),
            sockets,
        })
    }

    /// The end of `port del`, from the control loop: closes the sockets workers gave back,
    /// and once [`UNREGISTER_GRACE`] has passed since, has each worker take back the frames
    /// they held.
    pub(super) fn finish_unregister(&mut self) {
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
}
