//! The polling worker: one thread pinned to one core, run to completion.
//!
//! Each loop visits every socket the worker owns: RX burst → process → TX burst on the output
//! socket; then refills the fill ring with as many frames as RX took, reaps completions and
//! kicks TX only when the ring asks for it. First processing: an L2 cross-connect, a wire
//! between two ports (every frame in on one goes out on the other, unchanged).
//!
//! Nothing in the loop allocates, locks, blocks or logs: bursts are preallocated at build time,
//! counters are single-writer atomics, link state and the stop flag are read with one relaxed
//! load per burst.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    bond::{BondShared, INJECT_MAX, Inject, MAX_MEMBERS, Mailbox, Punt, SeenMacs},
    params::{Burst, RingParams, ZeroCopy},
    stats::{DropReason, LinkState, Padded, QueueCounters, WorkerCounters},
    tap::{DIR_IN, DIR_OUT, Tap},
    xsk::{FrameAudit, FrameBurst, XskBinder, XskError, XskQueue, XskStatsReader, XskUmem},
};

/// Shortest frame we forward: an Ethernet header.
pub const ETH_HEADER_LEN: usize = 14;
/// How long a stopping worker waits for its TX rings to drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Where frames received on a slot go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// Nowhere: counted as `rx_drop_no_output`.
    None,
    /// Another slot of this worker.
    Slot(usize),
    /// A bond of this worker: its active member's slot, read once per burst.
    Bond(usize),
}

/// One socket of a worker with where its frames go.
struct Slot {
    q: XskQueue,
    out: Out,
    /// (bond, member index) when this slot's port is a bond member.
    member: Option<(usize, usize)>,
    counters: Arc<Padded<QueueCounters>>,
    /// Link of this slot's port: gates TX on it.
    link: Arc<LinkState>,
    /// The port's capture tap.
    tap: Arc<Tap>,
}

/// A bond as one worker sees it: the shared state and its members' slots on this worker.
struct WorkerBond {
    shared: Arc<BondShared>,
    members: [Option<usize>; MAX_MEMBERS],
    counters: Arc<Padded<QueueCounters>>,
    mailbox: Arc<Mailbox>,
    seen: Option<Arc<SeenMacs>>,
    tap: Arc<Tap>,
    punt: Arc<Punt>,
}

/// What control keeps of a worker's part of a bond.
#[derive(Debug, Clone)]
pub struct BondInfo {
    /// The bond's name.
    pub name: String,
    /// Frames sent through the bond by this worker, and its bond-level drops
    /// (`tx_drop_no_active_member`).
    pub counters: Arc<Padded<QueueCounters>>,
}

/// A change control asks a running worker to make (applied between two loops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCmd {
    /// The port named `ifname` becomes member `member` of bond `bond` (its frames are gated by
    /// the bond and go where the bond's other members' go), or stops being one (`on == false`:
    /// its frames are then dropped as `rx_drop_no_output`).
    SetMember {
        /// Bond index (configuration order).
        bond: usize,
        /// Member index in the bond.
        member: usize,
        /// Interface name, NUL-padded (IFNAMSIZ).
        ifname: [u8; 16],
        /// Add or remove.
        on: bool,
    },
    /// Every socket on the port named `ifname` leaves the loop and goes back to control
    /// ([`WorkerHandle::take_retired`]), which closes it; the frames it held stay counted as
    /// lent until [`WorkerCmd::Reclaim`].
    Detach {
        /// Interface name, NUL-padded (IFNAMSIZ).
        ifname: [u8; 16],
    },
    /// The socket with this id is closed and the kernel has let go of its buffers: its frames
    /// come back to the pool.
    Reclaim {
        /// The socket's id ([`RetiredQueue::id`]).
        id: u16,
    },
}

impl WorkerCmd {
    /// An interface name as the command carries it; `None` if longer than 15 bytes.
    pub fn ifname(name: &str) -> Option<[u8; 16]> {
        let b = name.as_bytes();
        (b.len() < 16).then(|| {
            let mut out = [0u8; 16];
            out[..b.len()].copy_from_slice(b);
            out
        })
    }
}

/// Commands control queues for a worker.
pub type CommandQueue = crossbeam_queue::ArrayQueue<WorkerCmd>;

/// A socket control bound to a running worker's UMEM (a port joining at run time), not yet
/// polled: register [`Self::fd`] in the port's XSKMAP, then hand it over with
/// [`WorkerHandle::attach`].
pub struct NewQueue {
    slot: Slot,
}

impl std::fmt::Debug for NewQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewQueue").field("q", &self.slot.q).finish()
    }
}

/// A socket a worker gave back (its port unregistered): dropping it closes the socket, on
/// control's thread (closing waits for an RCU grace period in the kernel).
pub struct RetiredQueue {
    slot: Slot,
}

impl std::fmt::Debug for RetiredQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetiredQueue")
            .field("q", &self.slot.q)
            .finish()
    }
}

impl RetiredQueue {
    /// The socket's id, for [`WorkerCmd::Reclaim`] once it is closed.
    pub fn id(&self) -> u16 {
        self.slot.q.id()
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        self.slot.q.ifname()
    }
}

impl NewQueue {
    /// The socket, for its XSKMAP entry, mode and statistics.
    pub fn queue(&self) -> &XskQueue {
        &self.slot.q
    }

    /// A reader of the socket's kernel statistics (`XDP_STATISTICS`).
    ///
    /// # Errors
    /// Duplicating the socket's descriptor failed.
    pub fn stats_reader(&self) -> std::io::Result<XskStatsReader> {
        self.slot.q.stats_reader()
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
#[derive(Debug)]
pub struct WorkerHandle {
    stop: Arc<AtomicBool>,
    cmds: Arc<CommandQueue>,
    /// Sockets handed over at run time, taken by the worker between two loops.
    attach: Arc<crossbeam_queue::ArrayQueue<Slot>>,
    /// Sockets the worker gave back.
    retired: Arc<crossbeam_queue::ArrayQueue<Slot>>,
    binder: XskBinder,
    /// Sockets the worker can still take (its slot table is sized at build time).
    spare: usize,
    counters: Arc<Padded<WorkerCounters>>,
    queues: Vec<QueueInfo>,
    bonds: Vec<BondInfo>,
    core: Option<usize>,
}

impl WorkerHandle {
    /// Queues a command for the worker; false if its queue is full.
    pub fn command(&self, cmd: WorkerCmd) -> bool {
        self.cmds.push(cmd).is_ok()
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
    ) -> Result<NewQueue, XskError> {
        if self.spare == 0 {
            return Err(XskError::Params(format!(
                "{ifname} queue {queue}: the worker has no spare socket slot (workers.spare_queues)"
            )));
        }
        let q = self.binder.bind(ifname, queue, zc, busy_poll_budget)?;
        Ok(NewQueue {
            slot: Slot {
                q,
                out: Out::None,
                member: None,
                counters: Arc::default(),
                link,
                tap,
            },
        })
    }

    /// Hands a socket over to the worker, which takes it at its next loop (stocks its fill
    /// ring, then polls it; its frames go nowhere, `rx_drop_no_output`, until a command gives
    /// it an output). [`WorkerCounters::queues_attached`] counts the sockets taken.
    ///
    /// # Errors
    /// Gives the socket back when the worker has no spare slot.
    #[expect(clippy::result_large_err, reason = "the socket itself is handed back")]
    pub fn attach(&mut self, q: NewQueue) -> Result<(), NewQueue> {
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
    pub fn take_retired(&self) -> Option<RetiredQueue> {
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

/// Builds a worker: its UMEM, its sockets, their cross-connections.
pub struct WorkerBuilder {
    umem: XskUmem,
    slots: Vec<Slot>,
    bonds: Vec<(String, WorkerBond)>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("umem", &self.umem)
            .finish()
    }
}

impl WorkerBuilder {
    /// A worker with a UMEM of `frames` frames sized by `params`.
    ///
    /// # Errors
    /// [`XskError::Umem`] if the UMEM cannot be created.
    pub fn new(params: RingParams, frames: u32) -> Result<Self, XskError> {
        let mut umem = XskUmem::new(params, frames)?;
        // Sockets can leave while the worker runs (a port unregistered): their frames are
        // found by holder and come back.
        umem.track_owners();
        Ok(Self {
            umem,
            slots: Vec::new(),
            bonds: Vec::new(),
        })
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
    ) -> Result<(usize, &XskQueue), XskError> {
        let q = self.umem.bind(ifname, queue, zc, busy_poll_budget)?;
        self.slots.push(Slot {
            q,
            out: Out::None,
            member: None,
            counters: Arc::default(),
            link,
            tap,
        });
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
    pub fn queue(&self, i: usize) -> &XskQueue {
        &self.slots[i].q
    }

    /// Finishes the worker: the loop to move onto its thread, and control's handle. Room for
    /// `spare` more sockets is reserved now, so taking one at run time does not allocate.
    pub fn build(
        mut self,
        core: Option<usize>,
        burst: Burst,
        spare: usize,
    ) -> (Worker, WorkerHandle) {
        self.slots.reserve_exact(spare);
        let stop = Arc::new(AtomicBool::new(false));
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
            binder: self.umem.binder(),
            spare,
            stop: stop.clone(),
            counters: counters.clone(),
            queues,
            bonds,
            core,
        };
        let worker = Worker {
            cmds,
            attach,
            retired,
            umem: self.umem,
            slots: self.slots,
            bonds: self.bonds.into_iter().map(|(_, b)| b).collect(),
            burst: FrameBurst::new(),
            scratch: FrameBurst::new(),
            burst_size: burst.get(),
            stop,
            counters,
            core,
        };
        worker.publish();
        (worker, handle)
    }
}

/// A worker ready to run on its thread.
pub struct Worker {
    cmds: Arc<CommandQueue>,
    attach: Arc<crossbeam_queue::ArrayQueue<Slot>>,
    retired: Arc<crossbeam_queue::ArrayQueue<Slot>>,
    umem: XskUmem,
    slots: Vec<Slot>,
    bonds: Vec<WorkerBond>,
    burst: FrameBurst,
    scratch: FrameBurst,
    burst_size: usize,
    stop: Arc<AtomicBool>,
    counters: Arc<Padded<WorkerCounters>>,
    core: Option<usize>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("core", &self.core)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// How a worker's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerExit {
    /// Where the frames were after the drain.
    pub audit: FrameAudit,
    /// Whether the thread got its core.
    pub pinned: bool,
    /// Whether every TX ring drained before [`DRAIN_TIMEOUT`].
    pub drained: bool,
}

/// Wall clock for capture timestamps, read once per burst and only while a capture runs.
#[inline]
fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Transmits the burst on `out`, or drops it with a reason. Returns the number sent.
#[inline]
fn forward(umem: &mut XskUmem, burst: &mut FrameBurst, out: &mut Slot) -> usize {
    if !out.link.is_up() {
        let down = umem.drop_from(burst, 0);
        out.counters.count_drop(DropReason::TxLinkDown, down as u64);
        return 0;
    }
    if out.tap.wants(DIR_OUT) {
        // Only what the TX ring will take: a capture shows what crossed the port.
        let room = umem.tx_room(&mut out.q);
        let (tap, ts) = (&out.tap, unix_ns());
        umem.inspect_first(burst, room, |f| tap.record(f, DIR_OUT, ts));
    }
    let before = burst.bytes();
    let sent = umem.tx_burst(&mut out.q, burst);
    out.counters.tx_packets.add(sent as u64);
    out.counters.tx_bytes.add(before - burst.bytes());
    let full = umem.drop_from(burst, 0);
    out.counters.count_drop(DropReason::TxRingFull, full as u64);
    sent
}

impl Worker {
    /// Pins the thread, stocks the fill rings, polls until stopped, drains TX. Returns the final
    /// frame audit.
    pub fn run(mut self) -> WorkerExit {
        let pinned = match self.core {
            Some(id) => core_affinity::set_for_current(core_affinity::CoreId { id }),
            None => true,
        };
        // Acquire pairs with WorkerHandle::stop's Release.
        while !self.stop.load(Ordering::Acquire) {
            self.poll_once();
        }
        let drained = self.drain();
        self.publish();
        WorkerExit {
            audit: self.umem.audit(),
            pinned,
            drained,
        }
    }

    /// One pass over every socket. Public for tests and benchmarks that drive a worker by hand.
    pub fn poll_once(&mut self) -> usize {
        let mut moved = 0;
        for i in 0..self.slots.len() {
            moved += self.rx_slot(i);
        }
        if !self.cmds.is_empty() || !self.attach.is_empty() {
            self.apply_commands();
        }
        for b in 0..self.bonds.len() {
            self.send_injected(b);
        }
        for slot in &mut self.slots {
            self.umem.kick_tx(&mut slot.q);
            self.umem.reap(&mut slot.q, &mut self.scratch);
            // Top every fill ring up from what completions returned. Refilling only after RX
            // would leave a fill ring that ran dry (all free frames in flight on TX) empty for
            // good: no RX, so no refill. A full ring costs one comparison here.
            self.umem.refill(&mut slot.q, usize::MAX);
        }
        self.counters.loops.add(1);
        if moved > 0 {
            self.counters.busy_loops.add(1);
        }
        self.publish();
        moved
    }

    #[inline]
    fn rx_slot(&mut self, i: usize) -> usize {
        let n = self
            .umem
            .rx_burst(&mut self.slots[i].q, &mut self.burst, self.burst_size);
        if n == 0 {
            return 0;
        }
        let rx = &self.slots[i].counters;
        rx.rx_packets.add(n as u64);
        rx.rx_bytes.add(self.burst.bytes());
        // A capture on the port sees everything that arrived, even what is dropped next.
        if self.slots[i].tap.wants(DIR_IN) {
            let (tap, ts) = (&self.slots[i].tap, unix_ns());
            self.umem
                .inspect(&self.burst, |f| tap.record(f, DIR_IN, ts));
        }
        let runts = self
            .umem
            .retain(&mut self.burst, |frame| frame.len() >= ETH_HEADER_LEN);
        rx.count_drop(DropReason::RxRunt, runts as u64);

        // Frames for the appliance itself: ARP (the ARP monitor's evidence; also forwarded,
        // ARP is the hosts' business too) and anything unicast to the bond's MAC (consumed).
        if let Some((b, m)) = self.slots[i].member {
            let punt = &self.bonds[b].punt;
            let (arp, own_mac) = punt.enabled();
            if arp || own_mac != 0 {
                let (mut to_control, mut full) = (0u64, 0u64);
                self.umem.retain(&mut self.burst, |f| {
                    let (copy, consume) = Punt::classify(f, arp, own_mac);
                    if copy {
                        match Inject::new(m, &f[..f.len().min(INJECT_MAX)]) {
                            Some(p) if punt.queue.push(p).is_ok() => to_control += 1,
                            _ => full += 1,
                        }
                    }
                    !consume
                });
                let c = &self.bonds[b].counters;
                c.rx_packets.add(to_control);
                c.count_drop(DropReason::RxControlFull, full);
            }
        }
        // A backup member's frames are dropped (counted), as Linux's bonding does, unless the
        // bond accepts every member or this one is draining after a planned switch.
        if let Some((b, m)) = self.slots[i].member
            && !self.bonds[b].shared.view().accepts_rx(m)
        {
            let n = self.umem.drop_from(&mut self.burst, 0);
            self.slots[i]
                .counters
                .count_drop(DropReason::RxBackup, n as u64);
        } else {
            if let Some((b, _)) = self.slots[i].member
                && self.bonds[b].tap.wants(DIR_IN)
            {
                let (tap, ts) = (&self.bonds[b].tap, unix_ns());
                self.umem
                    .inspect(&self.burst, |f| tap.record(f, DIR_IN, ts));
            }
            match self.slots[i].out {
                Out::None => {
                    let n = self.umem.drop_from(&mut self.burst, 0);
                    self.slots[i]
                        .counters
                        .count_drop(DropReason::RxNoOutput, n as u64);
                }
                Out::Slot(o) => {
                    forward(&mut self.umem, &mut self.burst, &mut self.slots[o]);
                }
                Out::Bond(b) => {
                    let bond = &self.bonds[b];
                    if bond.tap.wants(DIR_OUT) {
                        let ts = unix_ns();
                        self.umem
                            .inspect(&self.burst, |f| bond.tap.record(f, DIR_OUT, ts));
                    }
                    if let Some(seen) = &bond.seen {
                        let now_s = seen.now_s();
                        self.umem.inspect(&self.burst, |f| seen.learn(f, now_s));
                    }
                    // One atomic load per burst decides the member for the whole burst.
                    match bond.shared.view().active().and_then(|a| bond.members[a]) {
                        Some(o) => {
                            let sent = forward(&mut self.umem, &mut self.burst, &mut self.slots[o]);
                            bond.counters.tx_packets.add(sent as u64);
                        }
                        None => {
                            let n = self.umem.drop_from(&mut self.burst, 0);
                            bond.counters
                                .count_drop(DropReason::TxNoActiveMember, n as u64);
                        }
                    }
                }
            }
        }
        self.umem.refill(&mut self.slots[i].q, n);
        n
    }

    #[cold]
    fn apply_commands(&mut self) {
        // New sockets first: a command queued after a hand-over may name the new port.
        while self.slots.len() < self.slots.capacity()
            && let Some(mut slot) = self.attach.pop()
        {
            // Stock the fill ring before the first poll, so the port's first frames find room.
            self.umem.refill(&mut slot.q, usize::MAX);
            self.slots.push(slot);
            self.counters.queues_attached.add(1);
        }
        while let Some(cmd) = self.cmds.pop() {
            match cmd {
                WorkerCmd::SetMember {
                    bond,
                    member,
                    ifname,
                    on,
                } => self.set_member(bond, member, &ifname, on),
                WorkerCmd::Detach { ifname } => self.detach(&ifname),
                WorkerCmd::Reclaim { id } => {
                    let (fill, tx) = self.umem.reclaim(id);
                    self.counters.frames_reclaimed.add(fill + tx);
                }
            }
        }
    }

    #[cold]
    fn set_member(&mut self, bond: usize, member: usize, ifname: &[u8; 16], on: bool) {
        if bond >= self.bonds.len() || member >= MAX_MEMBERS {
            return;
        }
        let name = &ifname[..ifname.iter().position(|&c| c == 0).unwrap_or(16)];
        // Where the bond's members send what they receive (the cross-connect's other end).
        let peer_out = self
            .slots
            .iter()
            .find(|s| s.member.is_some_and(|(b, _)| b == bond) && s.out != Out::None)
            .map_or(Out::None, |s| s.out);
        let mut first = None;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.q.ifname().as_bytes() != name {
                continue;
            }
            if on {
                slot.member = Some((bond, member));
                slot.out = peer_out;
                first.get_or_insert(i);
            } else if slot.member == Some((bond, member)) {
                slot.member = None;
                slot.out = Out::None;
            }
        }
        self.bonds[bond].members[member] = if on { first } else { None };
    }

    /// Takes every socket of port `ifname` out of the loop and gives it to control. Slot
    /// indices above a removed one shift down: outputs and bond members are renumbered.
    #[cold]
    fn detach(&mut self, ifname: &[u8; 16]) {
        let name = &ifname[..ifname.iter().position(|&c| c == 0).unwrap_or(16)];
        while let Some(i) = self
            .slots
            .iter()
            .rposition(|s| s.q.ifname().as_bytes() == name)
        {
            let slot = self.slots.remove(i);
            let renumber = |j: usize| match j.cmp(&i) {
                std::cmp::Ordering::Less => Some(j),
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => Some(j - 1),
            };
            for s in &mut self.slots {
                if let Out::Slot(j) = s.out {
                    s.out = renumber(j).map_or(Out::None, Out::Slot);
                }
            }
            for b in &mut self.bonds {
                for m in &mut b.members {
                    *m = m.and_then(renumber);
                }
            }
            // The queue has room for every slot the worker can hold.
            if self.retired.push(slot).is_ok() {
                self.counters.queues_retired.add(1);
            }
        }
        // A bond member whose first slot went may have another on this worker.
        for (bi, b) in self.bonds.iter_mut().enumerate() {
            for (k, m) in b.members.iter_mut().enumerate() {
                if m.is_none() {
                    *m = self.slots.iter().position(|s| s.member == Some((bi, k)));
                }
            }
        }
    }

    /// Sends what control queued for bond `b` (a few per loop, so a large announcement burst
    /// never delays forwarding by much).
    #[inline]
    fn send_injected(&mut self, b: usize) {
        const PER_LOOP: usize = 16;
        let bond = &self.bonds[b];
        if bond.mailbox.is_empty() {
            return;
        }
        for _ in 0..PER_LOOP {
            let Some(frame) = bond.mailbox.pop() else {
                return;
            };
            let Some(slot) = bond.members[frame.member as usize] else {
                bond.counters.count_drop(DropReason::TxNoActiveMember, 1);
                continue;
            };
            let out = &mut self.slots[slot];
            let data = frame.frame();
            let sent = self.umem.tx_from_pool(&mut out.q, 1, |_, buf| {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                n
            });
            if sent == 1 {
                for tap in [&out.tap, &bond.tap] {
                    if tap.wants(DIR_OUT) {
                        tap.record(data, DIR_OUT, unix_ns());
                    }
                }
                out.counters.tx_packets.add(1);
                out.counters.tx_bytes.add(data.len() as u64);
            } else {
                out.counters.count_drop(DropReason::TxRingFull, 1);
            }
        }
    }

    /// Kicks and reaps until no frame is lent to a TX ring, or the timeout passes.
    fn drain(&mut self) -> bool {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let mut pending = 0;
            for slot in &mut self.slots {
                self.umem.kick_tx(&mut slot.q);
                self.umem.reap(&mut slot.q, &mut self.scratch);
                pending += slot.q.in_tx();
            }
            if pending == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn publish(&self) {
        let a = self.umem.audit();
        let c = &self.counters;
        c.frames_total.set(a.total);
        c.frames_free.set(a.free);
        c.frames_in_fill.set(a.in_fill);
        c.frames_in_tx.set(a.in_tx);
    }
}
