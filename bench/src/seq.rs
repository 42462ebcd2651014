//! Sequence-number accounting for a datagram stream: loss, duplicates and reordering.
//!
//! The sender numbers its datagrams `0..expect`. Each valid arrival is recorded here:
//! - a sequence number seen before is a **duplicate**;
//! - a first arrival whose number is lower than the highest number already seen is
//!   **out of order** (it is still counted as received, not as missing);
//! - a number `>= expect` is **out of range** (not part of the stream under test);
//! - numbers in `0..expect` never seen are **missing**.

use serde::Serialize;

/// Largest `expect` accepted: the tracker keeps one bit per sequence number (512 MiB here).
pub(crate) const MAX_EXPECT: u64 = 1 << 32;

/// What one arrival turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// First arrival, in order (higher than every number seen before).
    InOrder,
    /// First arrival, but a higher number had already arrived.
    OutOfOrder,
    /// Seen before.
    Duplicate,
    /// Not in `0..expect`.
    OutOfRange,
}

/// Totals over a stream, as reported by `udp-recv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct SeqSummary {
    /// Distinct sequence numbers of `0..expect` received.
    pub(crate) distinct: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    pub(crate) out_of_range: u64,
    pub(crate) missing: u64,
}

/// Tracks which sequence numbers of `0..expect` have arrived (one bit each).
#[derive(Debug, Clone)]
pub(crate) struct SeqTracker {
    expect: u64,
    seen: Vec<u64>,
    distinct: u64,
    highest: Option<u64>,
    duplicates: u64,
    out_of_order: u64,
    out_of_range: u64,
}

impl SeqTracker {
    /// A tracker for the sequence numbers `0..expect`.
    ///
    /// # Panics
    /// If `expect > MAX_EXPECT` (the command line refuses such values first).
    pub(crate) fn new(expect: u64) -> Self {
        assert!(expect <= MAX_EXPECT, "expect {expect} exceeds {MAX_EXPECT}");
        let words = usize::try_from(expect.div_ceil(64)).expect("bitset size fits in usize");
        Self {
            expect,
            seen: vec![0; words],
            distinct: 0,
            highest: None,
            duplicates: 0,
            out_of_order: 0,
            out_of_range: 0,
        }
    }

    /// Records one arrival of `seq` and says what it was.
    pub(crate) fn record(&mut self, seq: u64) -> Arrival {
        if seq >= self.expect {
            self.out_of_range += 1;
            return Arrival::OutOfRange;
        }
        // seq < expect <= MAX_EXPECT, so the index fits in usize (checked in `new`).
        let word = &mut self.seen[(seq / 64) as usize];
        let bit = 1u64 << (seq % 64);
        if *word & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        *word |= bit;
        self.distinct += 1;
        match self.highest {
            Some(h) if seq < h => {
                self.out_of_order += 1;
                Arrival::OutOfOrder
            }
            _ => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }

    /// True once every number of `0..expect` has arrived (never for `expect == 0`).
    pub(crate) fn complete(&self) -> bool {
        self.expect > 0 && self.distinct == self.expect
    }

    pub(crate) fn summary(&self) -> SeqSummary {
        SeqSummary {
            distinct: self.distinct,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            out_of_range: self.out_of_range,
            missing: self.expect - self.distinct,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expect: u64, seqs: &[u64]) -> (Vec<Arrival>, SeqSummary) {
        let mut t = SeqTracker::new(expect);
        let arrivals = seqs.iter().map(|&s| t.record(s)).collect();
        (arrivals, t.summary())
    }

    #[test]
    fn in_order_complete_stream() {
        let seqs: Vec<u64> = (0..200).collect();
        let (arrivals, s) = run(200, &seqs);
        assert!(arrivals.iter().all(|&a| a == Arrival::InOrder));
        assert_eq!(
            s,
            SeqSummary {
                distinct: 200,
                duplicates: 0,
                out_of_order: 0,
                out_of_range: 0,
                missing: 0
            }
        );
    }

    #[test]
    fn loss_is_missing() {
        let (_, s) = run(10, &[0, 1, 2, 5, 9]);
        assert_eq!(s.distinct, 5);
        assert_eq!(s.missing, 5);
        assert_eq!(s.out_of_order, 0);
        assert_eq!(s.duplicates, 0);
    }

    #[test]
    fn duplicates_counted_once_each_extra_copy() {
        let (arrivals, s) = run(4, &[0, 0, 1, 1, 1, 3]);
        assert_eq!(
            arrivals,
            [
                Arrival::InOrder,
                Arrival::Duplicate,
                Arrival::InOrder,
                Arrival::Duplicate,
                Arrival::Duplicate,
                Arrival::InOrder
            ]
        );
        assert_eq!(s.duplicates, 3);
        assert_eq!(s.distinct, 3);
        assert_eq!(s.missing, 1);
    }

    #[test]
    fn reordering() {
        // 2 arrives after 3: out of order once; a late duplicate is a duplicate, not reordering.
        let (arrivals, s) = run(5, &[0, 1, 3, 2, 4, 2]);
        assert_eq!(arrivals[3], Arrival::OutOfOrder);
        assert_eq!(arrivals[5], Arrival::Duplicate);
        assert_eq!(s.out_of_order, 1);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.missing, 0);
        let (_, s) = run(4, &[3, 2, 1, 0]);
        assert_eq!(s.out_of_order, 3);
        assert_eq!(s.missing, 0);
    }

    #[test]
    fn out_of_range_does_not_disturb_the_stream() {
        let (arrivals, s) = run(3, &[0, 7, 1, 3, 2, u64::MAX]);
        assert_eq!(arrivals[1], Arrival::OutOfRange);
        assert_eq!(arrivals[3], Arrival::OutOfRange);
        assert_eq!(arrivals[5], Arrival::OutOfRange);
        assert_eq!(s.out_of_range, 3);
        assert_eq!(s.out_of_order, 0);
        assert_eq!(s.missing, 0);
    }

    #[test]
    fn complete_and_word_boundaries() {
        let mut t = SeqTracker::new(130);
        for seq in (0..130).rev() {
            assert!(!t.complete());
            t.record(seq);
        }
        assert!(t.complete());
        assert_eq!(t.summary().out_of_order, 129);
        assert_eq!(t.record(63), Arrival::Duplicate);
        assert_eq!(t.record(64), Arrival::Duplicate);
        assert_eq!(t.record(129), Arrival::Duplicate);
    }

    #[test]
    fn expect_zero_never_complete() {
        let mut t = SeqTracker::new(0);
        assert!(!t.complete());
        assert_eq!(t.record(0), Arrival::OutOfRange);
        assert_eq!(t.summary().missing, 0);
    }
}
