//! Counters the frame path keeps and control reads.
//!
//! Every counter has exactly one writer (the worker that owns the socket), so updates are a
//! relaxed load and store, not a locked read-modify-write; readers on the control thread see a
//! value at most one burst old. Each block sits in its own cache lines ([`CachePadded`]) so that
//! control's reads never share a line with another worker's writes. Counters only grow; they
//! reset when the port is created (firecracker's metrics and DPDK's xstats behave the same).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

use crate::{
    wire::{FrameClass, ParseError},
    worker::classify::Tally,
};

/// Why the worker dropped a frame. Every drop has one of these, and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    RxRunt,
    /// The port has no output (not cross-connected, nothing to forward to).
    RxNoOutput,
    /// The output port's link is down.
    TxLinkDown,
    /// The output TX ring had no room.
    TxRingFull,
    /// Received on a bond's backup member.
    RxBackup,
    /// Sent to a bond that has no active member (carrier down).
    TxNoActiveMember,
    /// For the appliance itself (ARP, own MAC) but control's queue was full.
    RxControlFull,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 7] = [
        Self::RxRunt,
        Self::RxNoOutput,
        Self::TxLinkDown,
        Self::TxRingFull,
        Self::RxBackup,
        Self::TxNoActiveMember,
        Self::RxControlFull,
    ];

    /// The counter's name, as shown by status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::RxRunt => "rx_drop_runt",
            Self::RxNoOutput => "rx_drop_no_output",
            Self::TxLinkDown => "tx_drop_link_down",
            Self::TxRingFull => "tx_drop_ring_full",
            Self::RxBackup => "rx_drop_backup",
            Self::TxNoActiveMember => "tx_drop_no_active_member",
            Self::RxControlFull => "rx_drop_control_full",
        }
    }
}

// Every reason is in ALL, at its own index: counters are indexed by `reason as usize`.
const _: () = {
    let mut i = 0;
    while i < DropReason::ALL.len() {
        assert!(
            DropReason::ALL[i] as usize == i,
            "DropReason::ALL out of order"
        );
        i += 1;
    }
    assert!(DropReason::ALL.len() == DropReason::RxControlFull as usize + 1);
};

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer: a plain load and store, no lock prefix. Relaxed is enough: readers
        // want a recent value, not an ordering with other memory.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Sets the value (publication of a gauge by its single writer).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

/// Counters of one (port, queue) socket.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Frames taken from the RX ring.
    pub rx_packets: Counter,
    /// Bytes of those frames.
    pub rx_bytes: Counter,
    /// Frames queued on the TX ring.
    pub tx_packets: Counter,
    /// Bytes of those frames.
    pub tx_bytes: Counter,
    drops: [Counter; DropReason::ALL.len()],
    /// Frames that did not parse, by reason (forwarded unless strict).
    parse_errors: [Counter; ParseError::COUNT],
    /// Frames dropped because they did not parse (strict), by reason.
    parse_drops: [Counter; ParseError::COUNT],
    /// Frames received by class.
    classes: [Counter; FrameClass::COUNT],
}

impl QueueCounters {
    /// Counts `n` drops for `reason`.
    #[inline]
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        if n != 0 {
            self.drops[reason as usize].add(n);
        }
    }

    /// Drops counted for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }

    /// Counts what a burst's classify pass found: classes, parse errors, runts and (strict)
    /// parse drops. Once per burst; a zero adds nothing.
    #[inline]
    pub fn count_burst(&self, t: &Tally) {
        for (c, &n) in self.classes.iter().zip(&t.classes) {
            if n != 0 {
                c.add(u64::from(n));
            }
        }
        self.count_drop(DropReason::RxRunt, u64::from(t.runts));
        if t.any_error {
            #[cold]
            fn errors(q: &QueueCounters, t: &Tally) {
                for (c, &n) in q.parse_errors.iter().zip(&t.errors) {
                    c.add(u64::from(n));
                }
                for (c, &n) in q.parse_drops.iter().zip(&t.parse_drops_by) {
                    c.add(u64::from(n));
                }
            }
            errors(self, t);
        }
    }

    /// Frames that did not parse for `reason`.
    pub fn parse_errors(&self, reason: ParseError) -> u64 {
        self.parse_errors[reason as usize].get()
    }

    /// Frames dropped because they did not parse for `reason` (strict).
    pub fn parse_drops(&self, reason: ParseError) -> u64 {
        self.parse_drops[reason as usize].get()
    }

    /// Frames received of class `class`.
    pub fn class(&self, class: FrameClass) -> u64 {
        self.classes[class as usize].get()
    }
}

/// Shared state of a port that workers read: the link, as control last saw it.
#[derive(Debug)]
pub struct LinkState(CachePadded<AtomicBool>);

impl LinkState {
    /// A link in the given state.
    pub fn new(up: bool) -> Self {
        Self(CachePadded::new(AtomicBool::new(up)))
    }

    /// Whether the link is up. Workers read this once per burst.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.0.load(Relaxed)
    }

    /// Control sets the state from its link monitor.
    pub fn set(&self, up: bool) {
        self.0.store(up, Relaxed);
    }
}

/// What a worker publishes about itself.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Loop iterations.
    pub loops: Counter,
    /// Loop iterations that moved at least one frame.
    pub busy_loops: Counter,
    /// Frames in the UMEM.
    pub frames_total: Counter,
    /// Frames in the free pool.
    pub frames_free: Counter,
    /// Frames lent to fill rings.
    pub frames_in_fill: Counter,
    /// Frames lent to TX rings.
    pub frames_in_tx: Counter,
    /// Sockets control handed over at run time that the worker took into its loop.
    pub queues_attached: Counter,
    /// Sockets the worker gave back to control (their port unregistered).
    pub queues_retired: Counter,
    /// Frames taken back from closed sockets.
    pub frames_reclaimed: Counter,
}

/// Makes `T` start on its own cache line(s).
pub type Padded<T> = CachePadded<T>;
