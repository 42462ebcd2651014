//! The track stage (hot code): after the classify pass and the gating, every frame a burst
//! forwards is counted into its flow in the worker's own [`FlowTable`]; once per loop a
//! bounded slice of expiry (and of a flush control asked for) runs.
//!
//! # Design
//! The table belongs to this worker alone: no lock, no atomic read-modify-write. Its clock is
//! the monotonic clock read once per loop ([`Track::now_ns`]) and handed to every call of the
//! loop, so a burst's frames share one `now`. The stage reads the verdicts the classify pass
//! wrote (offsets, L3 length, TCP flags) and the addresses at their offsets in the frame; it
//! never parses again. A frame that cannot be tracked (not IP, a later fragment, a malformed
//! header, a TCP segment that opens nothing) or finds the table full is forwarded all the
//! same and counted (`flow_skip_*`, `flow_table_full`).
//!
//! # Limitations
//! A flush, and the re-arm sweep after a reload shortened a timeout, run over the whole
//! slab in slices of [`FLUSH_PER_LOOP`] slots. One more flush
//! asked for while one runs waits for it; asking for a third, different one meanwhile turns
//! the waiting one into a flush of everything (a superset of both: nothing asked for is
//! left behind, nothing is queued without bound).

use std::time::Instant;

use super::classify::Verdicts;
use crate::{
    flow::{FlowBurst, FlowParams, FlowReader, FlowTable, Flush, Timeouts},
    xsk::{FrameBurst, Rings},
};

/// Wheel entries the expiry slice looks at per loop: bounds a mass expiry's cost per loop
/// (each is a few cache lines) while keeping up with any churn the lab can offer (a loop
/// forwards at most a few bursts).
pub const EXPIRE_PER_LOOP: u32 = 64;
/// Slab slots one flush slice examines per loop.
pub const FLUSH_PER_LOOP: u32 = 4096;

/// A worker's flow table with what the stage needs around it.
#[derive(Debug)]
pub(super) struct Track {
    table: FlowTable,
    burst: FlowBurst,
    epoch: Instant,
    /// The flush under way and the slot it resumes at.
    flush: Option<(Flush, u32)>,
    /// The flush asked for while one ran.
    pending: Option<Flush>,
    /// The re-arm sweep after shorter timeouts ([`FlowTable::retime`]): where it resumes.
    retime: Option<u32>,
}

impl Track {
    /// Allocates the table (all of its memory, now: on control's thread at build time).
    pub(super) fn new(params: &FlowParams) -> std::io::Result<Self> {
        Ok(Self {
            table: FlowTable::new(params, 0)?,
            burst: FlowBurst::new(),
            epoch: Instant::now(),
            flush: None,
            pending: None,
            retime: None,
        })
    }

    /// A reader of the table for control.
    pub(super) fn reader(&self) -> FlowReader {
        self.table.reader()
    }

    /// Control's end of the table's event ring.
    pub(super) fn events(&self) -> crate::flow::EventReader {
        self.table.events()
    }

    /// The flow clock: nanoseconds since the table was made.
    #[inline]
    pub(super) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Counts the burst's frames (all forwarded ones, in `verdicts` order) into their flows;
    /// `port` is the ingress port's flow id.
    #[inline]
    pub(super) fn burst<R: Rings>(
        &mut self,
        rings: &R,
        burst: &FrameBurst<R::Desc>,
        verdicts: &Verdicts,
        port: u8,
        now: u64,
    ) {
        self.burst.clear();
        for (k, v) in verdicts.as_slice().iter().enumerate() {
            self.burst.push(rings.frame(burst, k), v, port, 0);
        }
        self.table.track_burst(&self.burst, now);
    }

    /// Once per loop: a slice of expiry, and of the flush under way.
    #[inline]
    pub(super) fn tick(&mut self, now: u64) {
        self.table.expire(now, EXPIRE_PER_LOOP);
        if let Some((f, from)) = self.flush {
            let p = self.table.flush(&f, from, FLUSH_PER_LOOP, now);
            self.flush = match p.next {
                Some(n) => Some((f, n)),
                None => self.pending.take().map(|f| (f, 0)),
            };
        }
        if let Some(from) = self.retime {
            self.retime = self.table.retime(from, FLUSH_PER_LOOP, now);
        }
    }

    /// New timeouts (a reload); a sweep re-arms the flows in the table when one got shorter
    /// (a sweep under way starts over: the slots it passed were armed for the old values).
    #[cold]
    pub(super) fn set_timeouts(&mut self, timeouts: Timeouts, active_timeout_s: u32) {
        if self.table.set_timeouts(timeouts, active_timeout_s) {
            self.retime = Some(0);
        }
    }

    /// Starts a flush, or queues it behind the one under way.
    #[cold]
    pub(super) fn start_flush(&mut self, f: Flush) {
        self.pending = match (self.flush, self.pending) {
            (None, _) => {
                self.flush = Some((f, 0));
                None
            }
            (Some(_), None) => Some(f),
            (Some(_), Some(p)) if p == f => Some(p),
            (Some(_), Some(_)) => Some(Flush::All),
        };
    }
}
