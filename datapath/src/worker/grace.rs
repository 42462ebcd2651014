//! The worker's grace point: what lets control wait until no worker still uses something it
//! has taken away (`synchronize_net` for a datapath without RCU).
//!
//! A worker passes a grace point at the start of every loop, before it applies control's
//! commands: one store of its loop sequence. Between two loops it holds nothing it looked up
//! (no slot index, no burst). Control reads the sequence `S` after queueing its commands and
//! waits for **two** more: the loop that stored `S + 1` started after the read, so it applied
//! every command queued before it, and `S + 2` says that loop is over. One is not enough: the
//! worker may store `S + 1` just as control reads `S`, and apply the commands a moment after
//! control has seen `S + 1` (the unit test with a running worker caught exactly that). A
//! worker that is not looping (not started yet, stopped, or asleep) is quiescent without being
//! woken: it has applied nothing stale and applies the commands first when it loops again.
//!
//! # Memory order
//! The sequence is stored and read `SeqCst`, like the command queue's push and `is_empty`:
//! control's push, then its read of `S`, then the worker's store of `S + 1`, then its check
//! of the queue are in one total order, so the worker's check sees the push (a `Release`
//! store alone would let the worker's check see the queue empty, the store-buffering case).
//! One store per loop, not per frame.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A worker's grace point, shared between the worker (the writer) and control.
#[derive(Debug, Default)]
pub struct Grace {
    /// Loops started (each start is a grace point).
    seq: AtomicU64,
    /// Not looping: not started, stopped, or asleep.
    idle: AtomicBool,
}

/// What control read of a worker's grace point when it asked for a quiesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraceTicket {
    seq: u64,
}

impl Grace {
    /// A worker's, before it runs (idle).
    pub fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            idle: AtomicBool::new(true),
        }
    }

    /// The worker passes a grace point (the start of a loop).
    #[inline]
    pub fn pass(&self) {
        // Single writer: a load and a store, no read-modify-write.
        let n = self.seq.load(Ordering::Relaxed);
        self.seq.store(n.wrapping_add(1), Ordering::SeqCst);
    }

    /// The worker stops looping (`true`: stopped or asleep) or starts again (`false`; it then
    /// passes a grace point before it touches anything).
    pub fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::SeqCst);
    }

    /// Control's side: the grace points passed so far, read when the quiesce starts.
    pub fn ticket(&self) -> GraceTicket {
        GraceTicket {
            seq: self.seq.load(Ordering::SeqCst),
        }
    }

    /// Whether the worker has run a whole loop since `t` was read (passed two grace points),
    /// or is not looping.
    pub fn passed(&self, t: GraceTicket) -> bool {
        self.idle.load(Ordering::SeqCst) || self.seq.load(Ordering::SeqCst).wrapping_sub(t.seq) >= 2
    }

    /// Grace points passed (loops started).
    pub fn count(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Grace;

    #[test]
    fn a_ticket_is_passed_by_the_next_grace_point_or_by_idleness() {
        let g = Grace::new();
        g.set_idle(false);
        let t = g.ticket();
        assert!(!g.passed(t), "nothing has happened since the ticket");
        g.pass();
        assert!(
            !g.passed(t),
            "one grace point may be the start of a loop that checked the commands too early"
        );
        g.pass();
        assert!(g.passed(t));
        let t = g.ticket();
        assert!(!g.passed(t));
        g.set_idle(true);
        assert!(g.passed(t), "an idle worker is quiescent without passing");
        g.set_idle(false);
        assert!(!g.passed(t), "looping again: it has to pass one");
        assert_eq!(g.count(), 2);
    }
}
