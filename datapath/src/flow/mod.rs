//! Flow state on the frame path: one fixed-size table per worker.
//!
//! # Layers
//! - [`key`]: the bidirectional [`FlowKey`] built from a frame and its classify [`Verdict`]
//!   (normalised so both directions of a connection find one flow), and the keyed hash.
//! - [`tcp`]: the TCP state machine (conntrack's loose mode) and the idle timeout of each state.
//! - `record`: the slab's records, written under a per-slot seqlock that readers check.
//! - `index`: a fixed cuckoo index of 64-byte buckets (tags and slot numbers) over the slab.
//! - `wheel`: the timer wheel that ages flows out in bounded slices.
//! - [`FlowTable`]: all of it, owned by one worker; [`FlowReader`] reads its slab from another
//!   thread, [`EventReader`] drains its event ring.
//! - `mem`: the flow module's only `unsafe` code (2 MiB-aligned zeroed memory with
//!   `MADV_HUGEPAGE`, cache prefetch).
//!
//! # Threading
//! The table belongs to one worker (shared nothing): lookups and updates take no lock and do
//! no atomic read-modify-write. Readers on other threads (dumps, stats) read the slab directly
//! and retry a record whose sequence number changed under them; they never make the worker
//! wait. Events go to control through a bounded lossy ring; a full ring is counted.
//!
//! # Time
//! The table reads no clock: every call takes `now` in nanoseconds of the caller's monotonic
//! clock (the worker reads it once per burst), so every rule is testable with an injected
//! clock.
//!
//! [`Verdict`]: crate::worker::classify::Verdict

mod events;
mod index;
pub mod key;
mod mem;
mod record;
mod table;
pub mod tcp;
mod types;
mod wheel;

#[cfg(test)]
mod tests;

pub use events::{EndReason, EventKind, EventReader, FlowEvent};
pub use key::{Dir, FlowKey, Skip};
pub use record::{FlowReader, FlowSnapshot, ReadError};
pub use table::{FlowId, FlowTable, Lookup};
pub use tcp::{FlowState, TcpState};
pub use types::{FlowBurst, FlowCounters, FlowPacket, Flush, FlushProgress};

/// Default `[flows] capacity`: flows per worker.
pub const DEFAULT_CAPACITY: u32 = 1 << 20;
/// Smallest capacity accepted.
pub const MIN_CAPACITY: u32 = 64;
/// Largest capacity accepted (slot numbers are 24 bits in the wheel's links, and leave the
/// index at least 7 bits of tag).
pub const MAX_CAPACITY: u32 = 1 << 23;
/// Longest idle timeout accepted, seconds (one day). Record times are milliseconds modulo
/// 2^32 (49.7 days), so an idle time must stay well inside that.
pub const MAX_TIMEOUT_S: u32 = 86_400;
/// Default size of the event ring (events, per worker).
pub const DEFAULT_EVENT_RING: u32 = 4096;

/// Idle timeouts by protocol and state, seconds (`[flows]`; conntrack's defaults where the
/// issue gives none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP established (`tcp_established_s`, 300).
    pub tcp_established_s: u32,
    /// TCP in the handshake: syn-sent, syn-received (`tcp_syn_s`, 30).
    pub tcp_syn_s: u32,
    /// TCP after a FIN: fin-wait, and time-wait after both FINs (`tcp_fin_wait_s`, 120).
    pub tcp_fin_wait_s: u32,
    /// TCP after a RST (`tcp_closed_s`, 10).
    pub tcp_closed_s: u32,
    /// UDP (and other IP protocols) seen one way (`udp_s`, 30).
    pub udp_s: u32,
    /// UDP (and other IP protocols) seen both ways (`udp_stream_s`, 120).
    pub udp_stream_s: u32,
    /// ICMP and ICMPv6 (`icmp_s`, 30).
    pub icmp_s: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_established_s: 300,
            tcp_syn_s: 30,
            tcp_fin_wait_s: 120,
            tcp_closed_s: 10,
            udp_s: 30,
            udp_stream_s: 120,
            icmp_s: 30,
        }
    }
}

impl Timeouts {
    /// The timeouts with their config names, in config order.
    pub fn named(&self) -> [(&'static str, u32); 7] {
        [
            ("tcp_established_s", self.tcp_established_s),
            ("tcp_syn_s", self.tcp_syn_s),
            ("tcp_fin_wait_s", self.tcp_fin_wait_s),
            ("tcp_closed_s", self.tcp_closed_s),
            ("udp_s", self.udp_s),
            ("udp_stream_s", self.udp_stream_s),
            ("icmp_s", self.icmp_s),
        ]
    }
}

/// Why flow parameters were refused; [`FlowParamError::key`] names the `[flows]` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowParamError {
    /// Capacity out of range.
    #[error("{0}: must be between {MIN_CAPACITY} and {MAX_CAPACITY}")]
    Capacity(u64),
    /// A timeout out of range.
    #[error("{value}: must be between 1 and {MAX_TIMEOUT_S} seconds")]
    Timeout {
        /// The key.
        field: &'static str,
        /// The refused value.
        value: u64,
    },
    /// The active timeout out of range.
    #[error("{0}: must be 0 (off) or between 1 and {MAX_TIMEOUT_S} seconds")]
    ActiveTimeout(u64),
    /// The event ring size out of range.
    #[error("{0}: must be between 16 and 1048576")]
    EventRing(u64),
}

impl FlowParamError {
    /// The `[flows]` key refused.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Capacity(_) => "capacity",
            Self::Timeout { field, .. } => field,
            Self::ActiveTimeout(_) => "active_timeout",
            Self::EventRing(_) => "event_ring",
        }
    }
}

/// Validated flow-table parameters (what control builds from `[flows]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowParams {
    capacity: u32,
    timeouts: Timeouts,
    active_timeout_s: u32,
    event_ring: u32,
}

impl Default for FlowParams {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            timeouts: Timeouts::default(),
            active_timeout_s: 1800,
            event_ring: DEFAULT_EVENT_RING,
        }
    }
}

impl FlowParams {
    /// Checks every value.
    ///
    /// # Errors
    /// The first value out of range, naming its key.
    pub fn new(
        capacity: u64,
        timeouts: Timeouts,
        active_timeout_s: u64,
        event_ring: u64,
    ) -> Result<Self, FlowParamError> {
        if !(u64::from(MIN_CAPACITY)..=u64::from(MAX_CAPACITY)).contains(&capacity) {
            return Err(FlowParamError::Capacity(capacity));
        }
        for (field, value) in timeouts.named() {
            if !(1..=MAX_TIMEOUT_S).contains(&value) {
                return Err(FlowParamError::Timeout {
                    field,
                    value: value.into(),
                });
            }
        }
        if active_timeout_s > u64::from(MAX_TIMEOUT_S) {
            return Err(FlowParamError::ActiveTimeout(active_timeout_s));
        }
        if !(16..=1 << 20).contains(&event_ring) {
            return Err(FlowParamError::EventRing(event_ring));
        }
        Ok(Self {
            capacity: capacity as u32,
            timeouts,
            active_timeout_s: active_timeout_s as u32,
            event_ring: event_ring as u32,
        })
    }

    /// Flows the table holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Idle timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Seconds between active-flow updates on the event ring (0: none).
    pub fn active_timeout_s(&self) -> u32 {
        self.active_timeout_s
    }

    /// Events the ring holds.
    pub fn event_ring(&self) -> u32 {
        self.event_ring
    }
}
