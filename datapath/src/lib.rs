//! isopath's frame path: AF_XDP ports, the XDP program that feeds them, and the polling workers.
//!
//! # Layers
//! - [`params`]: validated sizes (ring, frame, burst) that control builds from its config.
//! - [`xsk`]: UMEM, sockets, rings and the XDP program. The only module with `unsafe` code.
//! - [`wire`]: zero-copy packet views and [`wire::parse`], the one walk of a frame.
//! - [`worker`]: the per-core run-to-completion loop: RX burst → classify (one parse per frame)
//!   → punt, gate, learn → TX burst, refill, reap completions, kick the kernel only when a ring
//!   asks.
//! - [`bond`]: active-backup bonding, datapath side: the active member as one atomic word.
//! - [`tap`]: capture taps: bounded copies of frames for pcap writers in control.
//! - [`stats`]: single-writer counters the workers keep and control reads.
//!
//! # Threading
//! A worker owns its UMEM, its sockets and their rings outright (shared nothing); control
//! builds it, then moves it onto its pinned thread. Control and workers share no lock: atomics
//! (the stop flag, link states, the bonds' state words, single-writer counters) and bounded
//! lock-free queues (worker commands, sockets handed over and given back, the bonds' mailboxes
//! and punts, capture taps), each with one producer side and one consumer side. Workers never
//! block, allocate, lock or log per packet.
//!
//! # Features
//! `xdp` (default): the AF_XDP and XDP modules ([`xsk`]) and the worker loop over them. Without
//! it: the views, the classify pass, counters and bond state, for the fuzz targets' build.
//!
//! # Frame ownership
//! A frame is in exactly one place: a worker's free pool, a fill ring, a burst in a worker's
//! hands, or a TX ring until its completion. [`xsk::FrameAudit`] checks that they add up.
#![deny(unsafe_code)]
#![warn(missing_docs)]
// Anything a peer can trigger is handled; an `expect` only where a local invariant is obvious
// and written down (tests unwrap freely).
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bond;
pub mod flow;
pub mod params;
pub mod stats;
pub mod tap;
pub mod wire;
pub mod worker;
#[cfg(feature = "xdp")]
pub mod xsk;
