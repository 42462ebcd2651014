//! isopath's control path: configuration, the daemon's control loop, the CLI's client side.
//!
//! Nothing here is on the frame path. Control builds workers and ports with `isopath-datapath`,
//! then talks to them only through atomics (stop flag, link states, the bonds' state words,
//! counters) and bounded lock-free queues (commands, sockets, mailboxes, punts, capture taps).
//!
//! # Threading (today)
//! - The control loop (the daemon's main thread) owns the ports, workers, captures and the
//!   control socket. It never waits on a client: connections are non-blocking and read a little
//!   every turn ([`server`]); a request is handled once its line is complete.
//! - The link book (bonds, link states, link-state tracking) sits under one lock, taken by the
//!   control loop and by the rtnetlink thread, which applies carrier events the moment they
//!   arrive. Workers never take it.
//! - State machines ([`bond`], [`server`]'s framing) take `now` from their caller and do no I/O.
//! - Threads other than the loop see published counters and snapshots ([`status`]), never live
//!   state; clients see only the typed replies of [`request`].
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
pub mod metrics;
pub mod netlink;
pub mod parse_status;
pub mod privs;
pub mod registry;
pub mod request;
pub mod sd_notify;
pub mod server;
pub mod status;
/// The control protocol (its own crate, so its fuzz target builds without the datapath).
pub use isopath_proto as proto;
pub mod topology;
