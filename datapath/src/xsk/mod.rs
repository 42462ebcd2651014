//! AF_XDP sockets, UMEM and rings: the only module of the crate with `unsafe` code.
//!
//! xsk-rs (through libxdp) does the set-up syscalls (UMEM registration, ring mmap, bind). Above
//! it this module keeps frame ownership: xsk-rs's [`FrameDesc`] is `Copy`, which is why its ring
//! methods are `unsafe` (a copy could be handed to two rings at once). Here descriptors never
//! leave the module as values: the worker moves frames between rings with [`FrameBurst`] and
//! [`XskSocket`] methods that take and give whole bursts, and every frame is counted in a
//! [`FrameLedger`], so the safe API cannot alias a frame and a lost one shows in a
//! [`FrameAudit`].
//!
//! Ring rules followed here are those of the kernel's AF_XDP documentation
//! (Documentation/networking/af_xdp.rst): the fill ring must be kept stocked or RX stops
//! (`rx_fill_ring_empty_descs`); with `XDP_USE_NEED_WAKEUP` the kernel is kicked only when a ring
//! carries the need-wakeup flag (copy-mode TX always does); completions must be reaped or TX stops.
#![allow(unsafe_code)]

pub mod r#gen;
pub mod mem;
mod pool;
mod ring;
mod setup;
mod sys;
pub mod xdp;

use std::io;

pub use pool::{FrameAudit, FrameLedger, FrameOwners, FramePool};
pub use ring::{Bind, FrameBurst, Rings, SocketInfo, XskSocket, XskUmem};
pub use setup::{XskBinder, XskStatsReader};
pub use sys::{PromiscGuard, XskStats, if_index, peer_groups};

use crate::params::BindMode;

/// Errors of socket and UMEM set-up. Each names the interface and queue it concerns.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// UMEM creation failed (memory, or `XDP_UMEM_REG`).
    #[error("creating a UMEM of {frames} frames: {reason}")]
    Umem {
        /// Frames asked for.
        frames: u32,
        /// What xsk-rs said.
        reason: String,
    },
    /// Socket creation or bind failed.
    #[error("binding an AF_XDP socket to {ifname} queue {queue} ({mode} mode): {source}")]
    Bind {
        /// Interface.
        ifname: String,
        /// Queue id.
        queue: u32,
        /// The mode tried last.
        mode: BindMode,
        /// The OS error.
        source: io::Error,
    },
    /// Zero-copy was required but the driver only offers copy mode.
    #[error(
        "{ifname} queue {queue}: zero-copy required but the driver refused it ({source}); set zero_copy = \"auto\" to accept copy mode"
    )]
    ZeroCopyRefused {
        /// Interface.
        ifname: String,
        /// Queue id.
        queue: u32,
        /// The OS error of the zero-copy bind.
        source: io::Error,
    },
    /// A ring parameter xsk-rs refused.
    #[error("ring parameters: {0}")]
    Params(String),
    /// The interface name cannot be a C string.
    #[error("interface name {0:?} contains a NUL byte")]
    BadName(String),
}
