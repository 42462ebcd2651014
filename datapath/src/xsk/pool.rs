//! Frame accounting, independent of real memory so that unit tests (and Miri) can drive it.
//!
//! Every frame of a UMEM is in exactly one place at any time: the worker's free pool, a fill
//! ring (lent to the kernel for RX), an RX burst the worker is processing, or a TX ring (lent to
//! the kernel until its completion comes back). [`FrameLedger`] counts the lent ones, the pool
//! counts itself, and [`FrameAudit`] adds them up: a frame dropped on the floor by a bug shows as
//! `unaccounted() != 0`.

/// A LIFO stack of free frame descriptors. LIFO keeps recently used (cache-warm) frames in use.
#[derive(Debug)]
pub struct FramePool<D> {
    free: Vec<D>,
}

impl<D: Copy> FramePool<D> {
    /// A pool holding `frames`; never grows beyond that many (no allocation after start).
    #[must_use]
    pub fn new(frames: Vec<D>) -> Self {
        Self { free: frames }
    }

    /// Number of free frames.
    #[inline]
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether no frame is free.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// The `n` frames on top of the stack, to be handed to a ring. Call [`Self::take`] with the
    /// number the ring accepted.
    #[inline]
    pub fn peek_top(&self, n: usize) -> &[D] {
        let n = n.min(self.free.len());
        &self.free[self.free.len() - n..]
    }

    /// Removes the `n` top frames after a ring accepted them.
    #[inline]
    pub fn take(&mut self, n: usize) {
        let keep = self.free.len().saturating_sub(n);
        self.free.truncate(keep);
    }

    /// Returns frames to the pool.
    #[inline]
    pub fn put(&mut self, frames: &[D]) {
        debug_assert!(self.free.len() + frames.len() <= self.free.capacity());
        self.free.extend_from_slice(frames);
    }

    /// Returns one frame to the pool.
    #[inline]
    pub fn put_one(&mut self, frame: D) {
        debug_assert!(self.free.len() < self.free.capacity());
        self.free.push(frame);
    }
}

/// Frames lent to the kernel, counted by the worker that lent them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameLedger {
    /// Produced to a fill ring and not yet seen back on the RX ring.
    pub in_fill: u64,
    /// Produced to a TX ring and not yet seen back on the completion ring.
    pub in_tx: u64,
}

impl FrameLedger {
    /// `n` frames went to a fill ring.
    #[inline]
    pub fn lend_fill(&mut self, n: usize) {
        self.in_fill += n as u64;
    }

    /// `n` frames came back on an RX ring.
    #[inline]
    pub fn return_rx(&mut self, n: usize) {
        debug_assert!(
            self.in_fill >= n as u64,
            "RX returned more frames than were lent"
        );
        self.in_fill -= n as u64;
    }

    /// `n` frames went to a TX ring.
    #[inline]
    pub fn lend_tx(&mut self, n: usize) {
        self.in_tx += n as u64;
    }

    /// `n` frames came back on a completion ring.
    #[inline]
    pub fn return_comp(&mut self, n: usize) {
        debug_assert!(
            self.in_tx >= n as u64,
            "completions returned more frames than were sent"
        );
        self.in_tx -= n as u64;
    }
}

/// Where a worker's frames are, at a point where it holds none in a burst.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameAudit {
    /// Frames in the UMEM.
    pub total: u64,
    /// In the worker's free pool.
    pub free: u64,
    /// Lent to fill rings.
    pub in_fill: u64,
    /// Lent to TX rings, completion not yet reaped.
    pub in_tx: u64,
}

impl FrameAudit {
    /// Frames that are nowhere: must be 0. A non-zero value is a leak (or a double return).
    pub fn unaccounted(&self) -> i64 {
        self.total as i64 - (self.free + self.in_fill + self.in_tx) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake kernel side: fill ring and TX ring as queues of descriptors.
    struct FakeKernel {
        fill: std::collections::VecDeque<u64>,
        tx: std::collections::VecDeque<u64>,
    }

    fn audit(pool: &FramePool<u64>, ledger: &FrameLedger, total: u64) -> FrameAudit {
        FrameAudit {
            total,
            free: pool.len() as u64,
            in_fill: ledger.in_fill,
            in_tx: ledger.in_tx,
        }
    }

    #[test]
    fn frames_cycle_through_rings_without_loss() {
        let total = 64u64;
        let mut pool = FramePool::new((0..total).map(|i| i * 2048).collect());
        let mut ledger = FrameLedger::default();
        let mut k = FakeKernel {
            fill: Default::default(),
            tx: Default::default(),
        };

        // Refill: lend 32 to the fill ring.
        let give = pool.peek_top(32).to_vec();
        k.fill.extend(&give);
        pool.take(give.len());
        ledger.lend_fill(give.len());
        assert_eq!(audit(&pool, &ledger, total).unaccounted(), 0);

        for round in 0..100u64 {
            // RX: the kernel hands back some frames that carried packets.
            let n = (round % 7 + 1) as usize;
            let rx: Vec<u64> = (0..n).filter_map(|_| k.fill.pop_front()).collect();
            ledger.return_rx(rx.len());
            // Half go to TX, the rest are dropped back to the pool.
            let (fwd, drop) = rx.split_at(rx.len() / 2);
            k.tx.extend(fwd);
            ledger.lend_tx(fwd.len());
            pool.put(drop);
            // Completions for everything sent.
            let done: Vec<u64> = k.tx.drain(..).collect();
            ledger.return_comp(done.len());
            pool.put(&done);
            // Refill what RX used.
            let give = pool.peek_top(rx.len()).to_vec();
            k.fill.extend(&give);
            pool.take(give.len());
            ledger.lend_fill(give.len());
            assert_eq!(
                audit(&pool, &ledger, total).unaccounted(),
                0,
                "round {round}"
            );
        }
        // Every address is still distinct: no frame was duplicated.
        let mut all: Vec<u64> = pool.peek_top(pool.len()).to_vec();
        all.extend(k.fill.iter());
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len() as u64, total);
    }

    #[test]
    fn a_lost_frame_shows_in_the_audit() {
        let mut pool = FramePool::new(vec![1u64, 2, 3, 4]);
        let ledger = FrameLedger::default();
        pool.take(1); // taken but never lent nor returned
        assert_eq!(audit(&pool, &ledger, 4).unaccounted(), 1);
    }

    #[test]
    fn peek_top_is_bounded_by_pool_len() {
        let pool = FramePool::new(vec![1u64, 2, 3]);
        assert_eq!(pool.peek_top(10), &[1, 2, 3]);
        assert_eq!(pool.peek_top(2), &[2, 3]);
    }
}
