//! The polling worker: one thread pinned to one core, run to completion.
//!
//! Each loop visits every socket the worker owns: RX burst → classify (one parse per frame,
//! [`classify`]) → punt, gate, learn from the verdicts → track (each forwarded frame counted
//! into its flow, unless `[flows] enabled = false`) → TX burst on the output socket; then
//! refills the fill ring with as many frames as RX took, reaps completions and kicks TX only
//! when the ring asks for it. The processing is an L2 cross-connect, a wire between two ports
//! (every frame in on one goes out on the other, unchanged), or between a port and a bond.
//!
//! Nothing in the loop allocates, locks, blocks or logs: bursts and verdicts are preallocated
//! at build time, counters are single-writer atomics, link state and the stop flag are read
//! with one relaxed load per burst.
//!
//! # Files
//! Hot: `poll.rs` (the loop, which passes a grace point, `grace.rs`, at the start of each), `classify.rs` (the pass over a burst) and `track.rs` (the flow
//! update per burst, expiry and flush slices per loop). Cold: `builder.rs`
//! (set-up), `handle.rs` (control's side), `commands.rs` (changes applied between two loops).
//! The loop is generic over [`Rings`](crate::xsk::Rings): AF_XDP in production,
//! [`MemUmem`](crate::xsk::mem::MemUmem) in the unit tests (`tests.rs`).

#[cfg(feature = "xdp")]
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "xdp")]
use crate::{
    bond::{BondShared, MAX_MEMBERS, Mailbox, Punt, SeenMacs},
    stats::{LinkState, Padded, QueueCounters},
    tap::Tap,
};

#[cfg(feature = "xdp")]
mod builder;
pub mod classify;
#[cfg(feature = "xdp")]
mod commands;
#[cfg(feature = "xdp")]
mod grace;
#[cfg(feature = "xdp")]
mod handle;
#[cfg(feature = "xdp")]
mod poll;
#[cfg(all(test, feature = "xdp"))]
mod tests;
#[cfg(feature = "xdp")]
mod track;

#[cfg(feature = "xdp")]
pub use builder::WorkerBuilder;
#[cfg(feature = "xdp")]
pub use commands::{CommandQueue, WorkerCmd};
#[cfg(feature = "xdp")]
pub use grace::{Grace, GraceTicket};
#[cfg(feature = "xdp")]
pub use handle::{BondInfo, NewQueue, QueueInfo, RetiredQueue, WorkerHandle};
#[cfg(feature = "xdp")]
pub use poll::{Worker, WorkerExit};
#[cfg(feature = "xdp")]
pub use track::{EXPIRE_PER_LOOP, FLUSH_PER_LOOP};

/// Shortest frame we forward: an Ethernet header.
pub const ETH_HEADER_LEN: usize = crate::wire::ethernet::HEADER_LEN;
/// How long a stopping worker waits for its TX rings to drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Where frames received on a slot go.
#[cfg(feature = "xdp")]
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
#[cfg(feature = "xdp")]
struct Slot<S> {
    q: S,
    out: Out,
    /// (bond, member index) when this slot's port is a bond member.
    member: Option<(usize, usize)>,
    counters: Arc<Padded<QueueCounters>>,
    /// Link of this slot's port: gates TX on it.
    link: Arc<LinkState>,
    /// The port's capture tap.
    tap: Arc<Tap>,
    /// The port's id in flow records (`ingress`; 0: none given).
    flow_port: u8,
}

#[cfg(feature = "xdp")]
impl<S> Slot<S> {
    fn new(q: S, link: Arc<LinkState>, tap: Arc<Tap>) -> Self {
        Self {
            q,
            out: Out::None,
            member: None,
            counters: Arc::default(),
            link,
            tap,
            flow_port: 0,
        }
    }
}

/// A bond as one worker sees it: the shared state and its members' slots on this worker.
#[cfg(feature = "xdp")]
struct WorkerBond {
    shared: Arc<BondShared>,
    members: [Option<usize>; MAX_MEMBERS],
    counters: Arc<Padded<QueueCounters>>,
    mailbox: Arc<Mailbox>,
    seen: Option<Arc<SeenMacs>>,
    tap: Arc<Tap>,
    punt: Arc<Punt>,
}
