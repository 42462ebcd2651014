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
    params::{Burst, RingParams, ZeroCopy},
    stats::{DropReason, LinkState, Padded, QueueCounters, WorkerCounters},
    xsk::{FrameAudit, FrameBurst, XskError, XskQueue, XskUmem},
};

/// Shortest frame we forward: an Ethernet header.
pub const ETH_HEADER_LEN: usize = 14;
/// How long a stopping worker waits for its TX rings to drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// One socket of a worker with where its frames go.
struct Slot {
    q: XskQueue,
    /// Output slot for frames received here.
    out: Option<usize>,
    counters: Arc<Padded<QueueCounters>>,
    /// Link of this slot's port: gates TX on it.
    link: Arc<LinkState>,
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
    counters: Arc<Padded<WorkerCounters>>,
    queues: Vec<QueueInfo>,
    core: Option<usize>,
}

impl WorkerHandle {
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
        Ok(Self {
            umem: XskUmem::new(params, frames)?,
            slots: Vec::new(),
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
    ) -> Result<(usize, &XskQueue), XskError> {
        let q = self.umem.bind(ifname, queue, zc, busy_poll_budget)?;
        self.slots.push(Slot {
            q,
            out: None,
            counters: Arc::default(),
            link,
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
        self.slots[from].out = Some(to);
    }

    /// The socket at slot `i`.
    pub fn queue(&self, i: usize) -> &XskQueue {
        &self.slots[i].q
    }

    /// Finishes the worker: the loop to move onto its thread, and control's handle.
    pub fn build(self, core: Option<usize>, burst: Burst) -> (Worker, WorkerHandle) {
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
        let handle = WorkerHandle {
            stop: stop.clone(),
            counters: counters.clone(),
            queues,
            core,
        };
        let worker = Worker {
            umem: self.umem,
            slots: self.slots,
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
    umem: XskUmem,
    slots: Vec<Slot>,
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
        let runts = self
            .umem
            .retain(&mut self.burst, |frame| frame.len() >= ETH_HEADER_LEN);
        rx.count_drop(DropReason::RxRunt, runts as u64);

        match self.slots[i].out {
            None => {
                let n = self.umem.drop_from(&mut self.burst, 0);
                self.slots[i]
                    .counters
                    .count_drop(DropReason::RxNoOutput, n as u64);
            }
            Some(o) => {
                let Ok([rx_slot, tx_slot]) = self.slots.get_disjoint_mut([i, o]) else {
                    unreachable!("connect() refuses a slot connected to itself")
                };
                if tx_slot.link.is_up() {
                    let before = self.burst.bytes();
                    let sent = self.umem.tx_burst(&mut tx_slot.q, &mut self.burst);
                    tx_slot.counters.tx_packets.add(sent as u64);
                    tx_slot.counters.tx_bytes.add(before - self.burst.bytes());
                    let full = self.umem.drop_from(&mut self.burst, 0);
                    tx_slot
                        .counters
                        .count_drop(DropReason::TxRingFull, full as u64);
                } else {
                    let down = self.umem.drop_from(&mut self.burst, 0);
                    tx_slot
                        .counters
                        .count_drop(DropReason::TxLinkDown, down as u64);
                }
                self.umem.refill(&mut rx_slot.q, n);
                return n;
            }
        }
        self.umem.refill(&mut self.slots[i].q, n);
        n
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
