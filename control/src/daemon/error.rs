//! Why the daemon did not start, or a port could not be added.

use std::path::PathBuf;

use isopath_datapath::xsk::{XskError, xdp::XdpError};

/// Why the daemon did not start, or a port could not be added.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The control socket could not be set up.
    #[error("{what}: {source}")]
    Socket {
        /// What was being done (`binding /run/isopath/isopathd.sock`).
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The metrics endpoint's address could not be bound.
    #[error("metrics.listen: binding {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another daemon answers on the control socket.
    #[error(
        "control socket {} answers: another isopathd is running with this socket",
        path.display()
    )]
    SocketInUse {
        /// The socket.
        path: PathBuf,
    },
    /// A port's XDP program (load, look, register, attach).
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// A worker's UMEM could not be set up.
    #[error("worker {worker} (core {core})")]
    Worker {
        /// The worker.
        worker: usize,
        /// Its core.
        core: usize,
        /// Why.
        source: XskError,
    },
    /// A socket could not be bound.
    #[error(transparent)]
    Xsk(#[from] XskError),
    /// A socket's statistics reader could not be made.
    #[error("duplicating a socket fd")]
    StatsReader(#[source] std::io::Error),
    /// A worker thread could not be started.
    #[error("spawning a worker thread")]
    Spawn(#[source] std::io::Error),
    /// A device could not be registered.
    #[error("registering a device")]
    Registry(#[from] crate::registry::RegistryError),
    /// A worker's flow table could not be allocated.
    #[error("allocating the flow table")]
    FlowTable(#[source] std::io::Error),
}

impl StartError {
    /// A foreign XDP program whose name could not be read refused the start (a hint can say
    /// why: [`crate::privs::foreign_name_hint`]).
    pub fn is_unnamed_foreign(&self) -> bool {
        matches!(self, Self::Xdp(XdpError::Foreign { name, .. }) if name.is_empty())
    }
}

/// `e` and its sources, joined by `: ` (as `anyhow` prints a chain with `{:#}`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
