//! Per-flow accounting of probe streams whose length is not known in advance: loss,
//! duplicates and reordering from the per-flow sequence numbers the generator writes.
//!
//! Each flow's numbers start at 0 and rise by 1. A receiver remembers, per flow, the highest
//! number seen and a window of the [`WINDOW`] numbers below it:
//! - a number above the highest is new (the gap between is not yet lost: it may come late);
//! - a number inside the window seen before is a **duplicate**; not seen before, it is
//!   **reordered** (it arrived after a higher one) and counts as received;
//! - a number below the window is **late**: too old to tell a duplicate from a reordered one;
//!   it is not counted as received.
//!
//! At the end, **lost** = highest + 1 - received (frames never seen, or seen only as late).

use serde::{Deserialize, Serialize};

/// Sequence numbers remembered below the highest, per flow.
pub(crate) const WINDOW: u32 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone)]
struct FlowState {
    highest: Option<u32>,
    bits: [u64; WORDS],
    received: u64,
    duplicates: u64,
    reordered: u64,
    late: u64,
}

impl Default for FlowState {
    fn default() -> Self {
        Self {
            highest: None,
            bits: [0; WORDS],
            received: 0,
            duplicates: 0,
            reordered: 0,
            late: 0,
        }
    }
}

impl FlowState {
    #[inline]
    fn bit(seq: u32) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    #[inline]
    fn record(&mut self, seq: u32) {
        let Some(h) = self.highest else {
            self.highest = Some(seq);
            let (w, b) = Self::bit(seq);
            self.bits[w] |= b;
            self.received += 1;
            return;
        };
        if seq > h {
            if seq - h >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for s in h + 1..seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            let (w, b) = Self::bit(seq);
            self.bits[w] |= b;
            self.highest = Some(seq);
            self.received += 1;
        } else if h - seq < WINDOW {
            let (w, b) = Self::bit(seq);
            if self.bits[w] & b != 0 {
                self.duplicates += 1;
            } else {
                self.bits[w] |= b;
                self.reordered += 1;
                self.received += 1;
            }
        } else {
            self.late += 1;
        }
    }

    fn stats(&self, flow: u32) -> FlowStats {
        let expected = self.highest.map_or(0, |h| u64::from(h) + 1);
        FlowStats {
            flow,
            received: self.received,
            expected,
            lost: expected.saturating_sub(self.received),
            duplicates: self.duplicates,
            reordered: self.reordered,
            late: self.late,
        }
    }
}

/// One flow's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FlowStats {
    pub(crate) flow: u32,
    /// Distinct sequence numbers received (in order or reordered within the window).
    pub(crate) received: u64,
    /// Highest sequence number seen + 1.
    pub(crate) expected: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
    pub(crate) late: u64,
}

/// All flows of a receiver.
#[derive(Debug, Default, Clone)]
pub(crate) struct FlowTable {
    flows: Vec<FlowState>,
}

impl FlowTable {
    #[inline]
    pub(crate) fn record(&mut self, flow: u16, seq: u32) {
        let f = usize::from(flow);
        if f >= self.flows.len() {
            self.flows.resize_with(f + 1, FlowState::default);
        }
        self.flows[f].record(seq);
    }

    /// Flows seen, in flow order.
    pub(crate) fn stats(&self) -> Vec<FlowStats> {
        self.flows
            .iter()
            .enumerate()
            .filter(|(_, s)| s.highest.is_some())
            .map(|(i, s)| s.stats(i as u32))
            .collect()
    }

    /// Totals over every flow (`flow` is the number of flows seen).
    pub(crate) fn totals(&self) -> FlowStats {
        let all = self.stats();
        let mut t = FlowStats {
            flow: all.len() as u32,
            ..FlowStats::default()
        };
        for s in &all {
            t.received += s.received;
            t.expected += s.expected;
            t.lost += s.lost;
            t.duplicates += s.duplicates;
            t.reordered += s.reordered;
            t.late += s.late;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u32]) -> FlowStats {
        let mut t = FlowTable::default();
        for &s in seqs {
            t.record(0, s);
        }
        t.totals()
    }

    #[test]
    fn in_order_stream() {
        let s = run(&(0..5000).collect::<Vec<_>>());
        assert_eq!(
            (s.received, s.expected, s.lost, s.duplicates, s.reordered),
            (5000, 5000, 0, 0, 0)
        );
    }

    #[test]
    fn loss_duplicates_and_reordering() {
        // 0 1 3 2 2 5 9 ; lost: 4 6 7 8 ; reordered: 2 ; duplicate: 2
        let s = run(&[0, 1, 3, 2, 2, 5, 9]);
        assert_eq!(s.received, 6);
        assert_eq!(s.expected, 10);
        assert_eq!(s.lost, 4);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 1);
    }

    #[test]
    fn window_forgets_old_numbers() {
        let mut seqs = vec![0, 1, WINDOW + 10];
        seqs.push(1); // below the window now: late, neither duplicate nor received
        seqs.push(WINDOW + 5); // inside the window: reordered
        let s = run(&seqs);
        assert_eq!(s.late, 1);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.received, 4);
        assert_eq!(s.lost, u64::from(WINDOW) + 11 - 4);
    }

    #[test]
    fn a_jump_clears_reused_bits() {
        // 5 and 5 + WINDOW share a bit: after the jump, 5 + WINDOW is new, not a duplicate.
        let s = run(&[0, 5, 5 + WINDOW, 6 + WINDOW]);
        assert_eq!(s.duplicates, 0);
        assert_eq!(s.received, 4);
    }

    #[test]
    fn flows_are_independent() {
        let mut t = FlowTable::default();
        for i in 0..100u32 {
            t.record((i % 4) as u16, i / 4);
        }
        t.record(2, 10);
        let all = t.stats();
        assert_eq!(all.len(), 4);
        assert_eq!(all[2].duplicates, 1);
        let tot = t.totals();
        assert_eq!((tot.flow, tot.received, tot.lost), (4, 100, 0));
    }
}
