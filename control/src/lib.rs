//! isopath's control path: configuration, the daemon's control loop, the CLI's client side.
//!
//! Nothing here is on the frame path. Control builds workers and ports with `isopath-datapath`,
//! then talks to them only through atomics (stop flag, link states, the bonds' state words,
//! counters) and bounded lock-free queues (commands, sockets, mailboxes, punts, capture taps).
//!
//! # Threading model
//! This is the model the control plane follows; new work fits into it rather than around it.
//! - **One control loop** (the daemon's main thread) owns the device [`registry`] (ports,
//!   bonds) and its listeners, the workers' handles, captures and the control connections.
//!   It reads the clock once per turn and passes `now` down; nothing in a turn reads it again.
//!   It never waits on a client: connections are non-blocking and read a little every turn
//!   ([`server`]); a request is handled once its line is complete. A request that must wait
//!   for something (a worker taking a new port's sockets) becomes a state the loop revisits
//!   each turn, never a sleep in the handler.
//! - **The registry is the only way devices change**: registration, joining and leaving a
//!   bond, removal. What follows (bond membership, captures, cross-connect refusals,
//!   link-state tracking, the rtnetlink thread's index of ports) are listeners on its
//!   notifier chain; they get the event and the table read-only, so they cannot re-enter it.
//! - **The link book** (bonds, link states) sits under one lock, taken by the control loop
//!   and by the rtnetlink thread, which applies carrier events the moment they arrive (a
//!   failover must not wait for a loop turn). Workers never take it.
//! - **State machines** ([`bond`], [`server`]'s framing, the link book's responder, monitor
//!   and announcements) take `now` from their caller and do no I/O; they have lab-free tests.
//! - **Work that may block** (pcap file writes, ethtool calls, large encodes) belongs off the
//!   loop, on immutable snapshots. Today the loop still drains captures into their files and
//!   writes replies blocking (bounded by a 500 ms timeout); moving those out is future work.
//! - **Threads other than the loop** (workers, the rtnetlink thread, a metrics server) see
//!   published counters and snapshots ([`status`]), never the loop's live state; clients see
//!   only the typed replies of [`request`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bond;
pub mod capture;
pub mod client;
pub mod config;
pub mod cpulist;
pub mod daemon;
pub mod doctor;
pub mod flows;
pub mod flows_config;
pub mod frames;
pub mod host;
pub mod ipfix;
pub mod metrics;
pub mod netlink;
pub mod nlserver;
pub mod parse_status;
pub mod privs;
pub mod registry;
pub mod reload;
pub mod request;
pub mod sd_notify;
pub mod server;
pub mod status;
/// The control protocol (its own crate, so its fuzz target builds without the datapath).
pub use isopath_proto as proto;
pub mod topology;
