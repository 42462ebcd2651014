//! The event ring: flow new, destroy and active-update records from a worker to control (the
//! monitor and IPFIX export read it). Bounded and lossy: when control falls behind, the
//! worker drops the event and counts it (`events_dropped`); it never waits. The ring is
//! allocated at start; pushing allocates nothing.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::record::FlowSnapshot;

/// What happened to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Its first packet.
    New,
    /// It left the table ([`FlowEvent::reason`] says why).
    Destroy,
    /// It is still active: its counters every `active_timeout`.
    Update,
}

/// Why a flow ended (IPFIX `flowEndReason` where one exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Not ended (new and update events).
    None,
    /// Idle past its timeout (IPFIX 1, idle timeout).
    Idle,
    /// Removed by a flush (IPFIX 4, forced end).
    Flush,
    /// Evicted to make room (IPFIX 5, lack of resources).
    Evict,
    /// A new connection reused its 5-tuple (IPFIX 3, end of flow detected).
    Reopen,
}

/// One event: the flow as it was when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEvent {
    /// What happened.
    pub kind: EventKind,
    /// Why it ended (destroy events).
    pub reason: EndReason,
    /// The flow: key, both directions' counters, flags, state, ports, first and last seen.
    pub flow: FlowSnapshot,
}

/// Control's end of a worker's event ring.
#[derive(Debug, Clone)]
pub struct EventReader {
    pub(crate) q: Arc<ArrayQueue<FlowEvent>>,
}

impl EventReader {
    /// The oldest event, if any.
    pub fn pop(&self) -> Option<FlowEvent> {
        self.q.pop()
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Events the ring holds.
    pub fn capacity(&self) -> usize {
        self.q.capacity()
    }
}

/// The worker's end.
#[derive(Debug)]
pub(crate) struct EventRing {
    pub(crate) q: Arc<ArrayQueue<FlowEvent>>,
}

impl EventRing {
    pub(crate) fn new(n: u32) -> Self {
        Self {
            q: Arc::new(ArrayQueue::new(n as usize)),
        }
    }

    /// Bytes the ring allocated (slots and their stamps).
    pub(crate) fn bytes(&self) -> usize {
        self.q.capacity() * (std::mem::size_of::<FlowEvent>() + std::mem::size_of::<usize>())
    }

    /// Pushes an event; `false` when the ring was full (the event is lost).
    #[inline]
    pub(crate) fn push(&self, e: FlowEvent) -> bool {
        self.q.push(e).is_ok()
    }
}
