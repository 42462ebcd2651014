//! Prometheus metrics: the text encoders, the `/metrics` endpoint and the page it serves.
//!
//! The endpoint runs on a housekeeping thread of its own (`[metrics] listen`), never on a worker,
//! and builds each page from a snapshot the control loop publishes on request
//! ([`snapshot::Published`]), the process's `/proc/self` and its own counters.

pub mod http;
pub mod process;
pub mod snapshot;
pub mod text;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

pub use http::{HttpStats, MetricsServer, Source};
pub use snapshot::{Published, QueueSample, Snapshot};
pub use text::{Family, Format, Kind, Sample, Value};

/// How long a scrape waits for the control loop's fresh snapshot (the loop turns every 5 ms;
/// past this a handler is blocking it and the page is one snapshot old).
pub const FRESH_WAIT: Duration = Duration::from_millis(250);

/// The page: the published snapshot's families, then build, process and endpoint figures.
pub fn page(published: Arc<Published>) -> Arc<Source> {
    Arc::new(move |out: &mut Vec<Family>, stats: &HttpStats| {
        let (snap, fresh) = published.fetch(FRESH_WAIT);
        if !fresh {
            stats.stale.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = snap {
            s.families(out);
        }
        snapshot::build_info(out);
        process::families(out);
        snapshot::http_families(stats, out);
    })
}
