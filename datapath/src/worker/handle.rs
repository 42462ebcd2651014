//! Control's side of a running worker: commands, sockets handed over and given back, counters
//! (cold code; nothing here runs on the worker's thread).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use super::{CommandQueue, Grace, Slot, WorkerCmd};
use crate::{
    flow::{EventReader, FlowReader, Flush},
    params::ZeroCopy,
    stats::{LinkState, Padded, QueueCounters, WorkerCounters},
    tap::Tap,
    xsk::{Bind, Rings, SocketInfo, XskError, XskSocket, XskStatsReader, XskUmem},
};

/// What control keeps of a worker's part of a bond.
#[derive(Debug, Clone)]
pub struct BondInfo {
    /// The bond's name.
    pub name: String,
    /// Frames sent through the bond by this worker, and its bond-level drops
    /// (`tx_drop_no_active_member`).
    pub counters: Arc<Padded<QueueCounters>>,
}

/// A socket control bound to a running worker's UMEM (a port joining at run time), not yet
/// polled: register [`Self::queue`]'s fd in the port's XSKMAP, then hand it over with
/// [`WorkerHandle::attach`].
pub struct NewQueue<S = XskSocket> {
    pub(super) slot: Slot<S>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for NewQueue<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewQueue").field("q", &self.slot.q).finish()
    }
}

impl<S> NewQueue<S> {
    /// The socket, for its XSKMAP entry, mode and statistics.
    pub fn queue(&self) -> &S {
        &self.slot.q
    }

    /// Its port is `id` in flow records (see
    /// [`WorkerBuilder::set_flow_port`](super::WorkerBuilder::set_flow_port)).
    pub fn set_flow_port(&mut self, id: u8) {
        self.slot.flow_port = id;
    }
}

impl NewQueue<XskSocket> {
    /// A reader of the socket's kernel statistics (`XDP_STATISTICS`).
    ///
    /// # Errors
    /// Duplicating the socket's descriptor failed.
    pub fn stats_reader(&self) -> std::io::Result<XskStatsReader> {
        self.slot.q.stats_reader()
    }
}

/// A socket a worker gave back (its port unregistered): dropping it closes the socket, on
/// control's thread (closing waits for an RCU grace period in the kernel).
pub struct RetiredQueue<S = XskSocket> {
    pub(super) slot: Slot<S>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RetiredQueue<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetiredQueue")
            .field("q", &self.slot.q)
            .finish()
    }
}

impl<S: SocketInfo> RetiredQueue<S> {
    /// The socket's id, for [`WorkerCmd::Reclaim`] once it is closed.
    pub fn id(&self) -> u16 {
        self.slot.q.id()
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        self.slot.q.ifname()
    }
}

/// What control keeps of a worker's socket: names and counters.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    /// Interface.
    pub ifname: String,
    /// Queue id.
    pub queue: u32,
    /// The socket's counters.
    pub counters: Arc<Padded<QueueCounters>>,
}

/// Control's side of a running worker.
pub struct WorkerHandle<R: Rings = XskUmem> {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) grace: Arc<Grace>,
    pub(super) cmds: Arc<CommandQueue>,
    /// Sockets handed over at run time, taken by the worker between two loops.
    pub(super) attach: Arc<crossbeam_queue::ArrayQueue<Slot<R::Socket>>>,
    /// Sockets the worker gave back.
    pub(super) retired: Arc<crossbeam_queue::ArrayQueue<Slot<R::Socket>>>,
    pub(super) binder: R::Binder,
    /// Sockets the worker can still take (its slot table is sized at build time).
    pub(super) spare: usize,
    pub(super) counters: Arc<Padded<WorkerCounters>>,
    pub(super) queues: Vec<QueueInfo>,
    pub(super) bonds: Vec<BondInfo>,
    pub(super) core: Option<usize>,
    /// The worker's flow table, for reading (`None`: tracking off).
    pub(super) flows: Option<FlowReader>,
    /// Control's end of the worker's flow event ring (`None`: tracking off).
    pub(super) flow_events: Option<EventReader>,
}

impl<R: Rings> std::fmt::Debug for WorkerHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("core", &self.core)
            .field("queues", &self.queues)
            .field("spare", &self.spare)
            .finish()
    }
}

impl<R: Rings> WorkerHandle<R> {
    /// Queues a command for the worker; false if its queue is full.
    pub fn command(&self, cmd: WorkerCmd) -> bool {
        self.cmds.push(cmd).is_ok()
    }

    /// A reader of the worker's flow table (`None`: tracking is off). Reading never makes
    /// the worker wait.
    pub fn flow_reader(&self) -> Option<&FlowReader> {
        self.flows.as_ref()
    }

    /// Control's end of the worker's flow event ring: new, destroy and active-update events,
    /// popped by one consumer (the control loop). `None`: tracking is off.
    pub fn flow_events(&self) -> Option<&EventReader> {
        self.flow_events.as_ref()
    }

    /// Asks the worker to flush flows (bounded slices per loop; counted as `flushed`); false
    /// if tracking is off or the command queue is full.
    pub fn flush_flows(&self, f: Flush) -> bool {
        self.flows.is_some() && self.command(WorkerCmd::FlushFlows(f))
    }

    /// A reload's flow policy ([`WorkerCmd::SetFlowPolicy`]); false if the command queue is
    /// full (the caller tries again).
    pub fn set_flow_policy(
        &self,
        timeouts: crate::flow::Timeouts,
        active_timeout_s: u32,
        strict: bool,
    ) -> bool {
        self.command(WorkerCmd::SetFlowPolicy {
            timeouts,
            active_timeout_s,
            strict,
        })
    }

    /// Binds a socket on `ifname` queue `queue` to this worker's UMEM, from the calling
    /// (control) thread; the worker keeps polling meanwhile.
    ///
    /// # Errors
    /// The bind error, or [`XskError::Params`] when the worker has no spare slot left.
    pub fn bind_queue(
        &self,
        ifname: &str,
        queue: u32,
        zc: ZeroCopy,
        busy_poll_budget: u32,
        link: Arc<LinkState>,
        tap: Arc<Tap>,
    ) -> Result<NewQueue<R::Socket>, XskError> {
        if self.spare == 0 {
            return Err(XskError::Params(format!(
                "{ifname} queue {queue}: the worker has no spare socket slot (workers.spare_queues)"
            )));
        }
        let q = self.binder.bind(ifname, queue, zc, busy_poll_budget)?;
        Ok(NewQueue {
            slot: Slot::new(q, link, tap),
        })
    }

    /// Hands a socket over to the worker, which takes it at its next loop (stocks its fill
    /// ring, then polls it; its frames go nowhere, `rx_drop_no_output`, until a command gives
    /// it an output). [`WorkerCounters::queues_attached`] counts the sockets taken.
    ///
    /// # Errors
    /// Gives the socket back when the worker has no spare slot.
    pub fn attach(&mut self, q: NewQueue<R::Socket>) -> Result<(), NewQueue<R::Socket>> {
        if self.spare == 0 {
            return Err(q);
        }
        let info = QueueInfo {
            ifname: q.slot.q.ifname().to_owned(),
            queue: q.slot.q.queue(),
            counters: q.slot.counters.clone(),
        };
        self.attach.push(q.slot).map_err(|slot| NewQueue { slot })?;
        self.spare -= 1;
        self.queues.push(info);
        Ok(())
    }

    /// Sockets the worker can still take at run time.
    pub fn spare(&self) -> usize {
        self.spare
    }

    /// Forgets the sockets of port `ifname` after a [`WorkerCmd::Detach`] for it was queued:
    /// their slots count as spare again. Returns how many.
    pub fn forget_queues(&mut self, ifname: &str) -> usize {
        let before = self.queues.len();
        self.queues.retain(|q| q.ifname != ifname);
        let n = before - self.queues.len();
        self.spare += n;
        n
    }

    /// A socket the worker gave back, if any.
    pub fn take_retired(&self) -> Option<RetiredQueue<R::Socket>> {
        self.retired.pop().map(|slot| RetiredQueue { slot })
    }

    /// The bonds this worker transmits through.
    pub fn bonds(&self) -> &[BondInfo] {
        &self.bonds
    }

    /// Asks the worker to stop after its current loop (it then drains TX and returns).
    pub fn stop(&self) {
        // Release pairs with the worker's Acquire load: what control wrote before asking to
        // stop is visible to the worker's drain.
        self.stop.store(true, Ordering::Release);
    }

    /// The worker's grace point, for a quiesce: take a [`Grace::ticket`] after queueing the
    /// commands, then wait until [`Grace::passed`] says the worker has applied them.
    pub fn grace(&self) -> &Grace {
        &self.grace
    }

    /// The worker's own counters (frames, loops).
    pub fn counters(&self) -> &WorkerCounters {
        &self.counters
    }

    /// The sockets the worker owns.
    pub fn queues(&self) -> &[QueueInfo] {
        &self.queues
    }

    /// The core the worker is pinned to.
    pub fn core(&self) -> Option<usize> {
        self.core
    }
}
