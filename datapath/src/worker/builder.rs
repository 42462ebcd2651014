//! Building a worker: its UMEM, its sockets, their cross-connections (cold code, control's
//! thread).

use std::sync::{Arc, atomic::AtomicBool};

use super::{
    BondInfo, CommandQueue, Grace, Out, QueueInfo, Slot, Worker, WorkerBond, WorkerHandle,
    classify, track::Track,
};
use crate::{
    bond::{BondShared, MAX_MEMBERS, Mailbox, Punt, SeenMacs},
    flow::FlowParams,
    params::{Burst, RingParams, ZeroCopy},
    stats::{LinkState, Padded, WorkerCounters},
    tap::Tap,
    xsk::{Bind, FrameBurst, Rings, SocketInfo, XskError, XskUmem},
};

/// Builds a worker: its UMEM, its sockets, their cross-connections.
pub struct WorkerBuilder<R: Rings = XskUmem> {
    rings: R,
    slots: Vec<Slot<R::Socket>>,
    bonds: Vec<(String, WorkerBond)>,
    strict: bool,
    flows: Option<Track>,
}

impl<R: Rings> std::fmt::Debug for WorkerBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("slots", &self.slots.len())
            .field("bonds", &self.bonds.len())
            .finish()
    }
}

impl WorkerBuilder<XskUmem> {
    /// A worker with a UMEM of `frames` frames sized by `params`.
    ///
    /// # Errors
    /// [`XskError::Umem`] if the UMEM cannot be created.
    pub fn new(params: RingParams, frames: u32) -> Result<Self, XskError> {
        let mut umem = XskUmem::new(params, frames)?;
        // Sockets can leave while the worker runs (a port unregistered): their frames are
        // found by holder and come back.
        umem.track_owners();
        Ok(Self::with_rings(umem))
    }
}

impl<R: Rings> WorkerBuilder<R> {
    /// A worker over `rings` (a real UMEM through [`WorkerBuilder::new`], or in-memory rings).
    pub fn with_rings(rings: R) -> Self {
        Self {
            rings,
            slots: Vec::new(),
            bonds: Vec::new(),
            strict: false,
            flows: None,
        }
    }

    /// Tracks flows in a table of `params.capacity()` flows, all of its memory allocated now
    /// (without this the frame path is a plain wire: `[flows] enabled = false`).
    ///
    /// # Errors
    /// The table's memory could not be mapped.
    pub fn flows(mut self, params: &FlowParams) -> std::io::Result<Self> {
        self.flows = Some(Track::new(params)?);
        Ok(self)
    }

    /// Slot `slot`'s port is `id` in flow records (their `ingress`; 1..=255, 0 means none).
    ///
    /// # Panics
    /// If `slot` is not a slot of this builder.
    pub fn set_flow_port(&mut self, slot: usize, id: u8) {
        self.slots[slot].flow_port = id;
    }

    /// Frames that do not parse are dropped (`rx_drop_parse_*`) instead of forwarded
    /// (`[flows] strict`).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Binds a socket on `ifname` queue `queue` (with preferred busy polling when
    /// `busy_poll_budget` > 0); `link` is the port's link state. Returns the
    /// slot index (for [`Self::connect`]) and the socket, to register in the port's XSKMAP.
    ///
    /// # Errors
    /// The bind error.
    pub fn add_queue(
        &mut self,
        ifname: &str,
        queue: u32,
        zc: ZeroCopy,
        busy_poll_budget: u32,
        link: Arc<LinkState>,
        tap: Arc<Tap>,
    ) -> Result<(usize, &R::Socket), XskError> {
        let q = self
            .rings
            .binder()
            .bind(ifname, queue, zc, busy_poll_budget)?;
        self.slots.push(Slot::new(q, link, tap));
        let i = self.slots.len() - 1;
        Ok((i, &self.slots[i].q))
    }

    /// Frames received on slot `from` are transmitted on slot `to`.
    ///
    /// # Panics
    /// If either index is not a slot of this builder, or `from == to`.
    pub fn connect(&mut self, from: usize, to: usize) {
        assert!(
            from != to && to < self.slots.len(),
            "cross-connect {from} -> {to}"
        );
        self.slots[from].out = Out::Slot(to);
    }

    /// Adds a bond whose state is `shared`; frames control puts in `mailbox` are sent on its
    /// members; source MACs of frames headed into the bond are recorded in `seen` (if any).
    /// Returns its index for [`Self::add_member`] and [`Self::connect_bond`].
    pub fn add_bond(
        &mut self,
        name: &str,
        shared: Arc<BondShared>,
        mailbox: Arc<Mailbox>,
        seen: Option<Arc<SeenMacs>>,
        tap: Arc<Tap>,
        punt: Arc<Punt>,
    ) -> usize {
        let bond = WorkerBond {
            shared,
            members: [None; MAX_MEMBERS],
            counters: Arc::default(),
            mailbox,
            seen,
            tap,
            punt,
        };
        self.bonds.push((name.to_owned(), bond));
        self.bonds.len() - 1
    }

    /// Slot `slot` belongs to member `member` of bond `bond`: its RX is gated by the bond's
    /// state, and the first such slot is where the bond transmits when `member` is active.
    ///
    /// # Panics
    /// If `bond` or `slot` is unknown, or `member >= MAX_MEMBERS`.
    pub fn add_member(&mut self, bond: usize, member: usize, slot: usize) {
        assert!(
            member < MAX_MEMBERS && slot < self.slots.len(),
            "member {member} slot {slot}"
        );
        let m = &mut self.bonds[bond].1.members[member];
        if m.is_none() {
            *m = Some(slot);
        }
        self.slots[slot].member = Some((bond, member));
    }

    /// Frames received on slot `from` are transmitted through bond `bond`.
    ///
    /// # Panics
    /// If `from` or `bond` is unknown.
    pub fn connect_bond(&mut self, from: usize, bond: usize) {
        assert!(
            from < self.slots.len() && bond < self.bonds.len(),
            "connect {from} -> bond {bond}"
        );
        self.slots[from].out = Out::Bond(bond);
    }

    /// The socket at slot `i`.
    pub fn queue(&self, i: usize) -> &R::Socket {
        &self.slots[i].q
    }

    /// Finishes the worker: the loop to move onto its thread, and control's handle. Room for
    /// `spare` more sockets is reserved now, so taking one at run time does not allocate.
    pub fn build(
        mut self,
        core: Option<usize>,
        burst: Burst,
        spare: usize,
    ) -> (Worker<R>, WorkerHandle<R>) {
        self.slots.reserve_exact(spare);
        let stop = Arc::new(AtomicBool::new(false));
        let grace = Arc::new(Grace::new());
        let counters: Arc<Padded<WorkerCounters>> = Arc::default();
        let queues = self
            .slots
            .iter()
            .map(|s| QueueInfo {
                ifname: s.q.ifname().to_owned(),
                queue: s.q.queue(),
                counters: s.counters.clone(),
            })
            .collect();
        let bonds = self
            .bonds
            .iter()
            .map(|(name, b)| BondInfo {
                name: name.clone(),
                counters: b.counters.clone(),
            })
            .collect();
        let cmds = Arc::new(CommandQueue::new(64));
        let attach = Arc::new(crossbeam_queue::ArrayQueue::new(spare.max(1)));
        // Every socket the worker can hold may be given back at once.
        let retired = Arc::new(crossbeam_queue::ArrayQueue::new(
            (self.slots.len() + spare).max(1),
        ));
        let handle = WorkerHandle {
            cmds: cmds.clone(),
            attach: attach.clone(),
            retired: retired.clone(),
            binder: self.rings.binder(),
            spare,
            stop: stop.clone(),
            grace: grace.clone(),
            counters: counters.clone(),
            queues,
            bonds,
            core,
            flows: self.flows.as_ref().map(Track::reader),
            flow_events: self.flows.as_ref().map(Track::events),
        };
        let worker = Worker {
            cmds,
            attach,
            retired,
            rings: self.rings,
            slots: self.slots,
            bonds: self.bonds.into_iter().map(|(_, b)| b).collect(),
            burst: FrameBurst::new(),
            scratch: FrameBurst::new(),
            verdicts: classify::Verdicts::new(),
            burst_size: burst.get(),
            strict: self.strict,
            stop,
            grace,
            counters,
            core,
            flows: self.flows,
        };
        worker.publish();
        (worker, handle)
    }
}
