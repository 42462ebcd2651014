//! isopath's control path: configuration, the daemon's control loop, the CLI's client side.
//!
//! Nothing here is on the frame path. Control builds workers and ports with `isopath-datapath`,
//! then talks to them only through atomics (stop flag, link state, counters).
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
pub mod sd_notify;
/// The control protocol (its own crate, so its fuzz target builds without the datapath).
pub use isopath_proto as proto;
pub mod topology;
