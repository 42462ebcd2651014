//! Prometheus metrics: the text encoders and the `/metrics` endpoint.
//!
//! The endpoint runs on a housekeeping thread of its own (`[metrics] listen`), never on a worker,
//! and builds each page from counters and published snapshots.

pub mod http;
pub mod text;

pub use http::{HttpStats, MetricsServer, Source};
pub use text::{Family, Format, Kind, Sample, Value};
