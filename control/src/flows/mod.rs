//! Flow state as control shows it: the replies of the control socket's `flow count` and
//! `flow show` built from the workers' flow tables as typed structs (`reply.rs`), and the
//! CLI's `isopath flow` (`cli.rs`), which renders them (`[flows]` itself is read in
//! `crate::flows_config`). The daemon only dispatches to [`answer`]; serialisation happens at the socket.
//!
//! Readers never make a worker wait: every record is copied through the table's reader-safe
//! API ([`FlowReader::read`], a per-slot sequence check with a bounded retry), so a dump sees
//! no torn or reused record while the worker keeps inserting and expiring.
//!
//! [`FlowReader::read`]: isopath_datapath::flow::FlowReader::read

mod cli;
pub mod dump;
mod reply;

pub use cli::{FlowCmd, run_cli};
pub use reply::{
    DEFAULT_LIMIT, FlowCount, FlowReply, FlowRow, FlowShow, MAX_LIMIT, Readers, WorkerFlowStatus,
    WorkerFlows, answer, count, show, worker_flows, worker_status,
};
