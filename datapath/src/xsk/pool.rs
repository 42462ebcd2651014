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

/// The UMEM offset a frame descriptor points into (its frame is `offset / frame_size`).
pub trait FrameAddr: Copy {
    /// Offset in the UMEM.
    fn frame_addr(&self) -> usize;
}

impl FrameAddr for u64 {
    fn frame_addr(&self) -> usize {
        *self as usize
    }
}

/// Marks a frame lent to a TX ring (rather than a fill ring) in [`FrameOwners`].
pub(super) const OWNER_TX: u16 = 0x8000;
/// Socket ids are 1..=`MAX_OWNER` (0: not lent).
pub(super) const MAX_OWNER: u16 = OWNER_TX - 1;

/// Which socket holds each lent frame: what lets a socket be closed while the worker runs on.
///
/// The [`FrameLedger`] counts lent frames but not which; a socket that goes away (its port
/// unregistered) leaves frames in its fill ring, in its RX ring and (briefly) in its TX ring,
/// in an order the kernel chooses (a zero-copy driver recycles dropped frames out of ring
/// order). With one word per frame naming the socket it was last lent to, the frames of a
/// closed socket are found by a scan and come back to the pool, and the ledger stays exact.
///
/// Only lending is recorded (one store per frame put on a fill or TX ring): a frame that comes
/// back (RX, completion) keeps its entry, and is known to be back by being in the free pool.
/// Frames sit in a burst only within one pass over the sockets, never when [`Self::reclaim`]
/// or [`Self::held_by`] runs, so a socket holds exactly the frames whose entry names it and
/// that are not in the pool.
#[derive(Debug)]
pub struct FrameOwners<D> {
    /// By frame index: 0 (never lent), or the socket id it was last lent to (| [`OWNER_TX`]
    /// when to a TX ring).
    owner: Box<[u16]>,
    /// The descriptor of each frame as the UMEM first gave it, by frame index.
    frames: Box<[D]>,
    /// By frame index, scratch for [`Self::reclaim`]: whether the frame is in the pool
    /// (allocated once, so that the worker never allocates).
    free: Box<[bool]>,
    /// log2 of the frame size (a power of two, checked by `FrameSize`): a shift, not a
    /// division, on the hot path.
    shift: u32,
}

impl<D: FrameAddr> FrameOwners<D> {
    /// A map over `frames` (every frame of the UMEM, as created) of `frame_size` bytes each.
    ///
    /// # Panics
    /// If `frame_size` is not a power of two, two descriptors point into the same frame, or
    /// one points past `frames.len()` frames.
    pub fn new(frames: &[D], frame_size: usize) -> Self {
        assert!(frame_size.is_power_of_two(), "frame size {frame_size}");
        let mut table: Vec<Option<D>> = vec![None; frames.len()];
        for &f in frames {
            let i = f.frame_addr() / frame_size;
            assert!(
                i < table.len() && table[i].is_none(),
                "frame descriptor {i} outside the UMEM or repeated"
            );
            table[i] = Some(f);
        }
        Self {
            owner: vec![0; frames.len()].into_boxed_slice(),
            frames: table.into_iter().flatten().collect(),
            free: vec![false; frames.len()].into_boxed_slice(),
            shift: frame_size.trailing_zeros(),
        }
    }

    /// Records `frames` as lent to socket `owner`'s fill ring (| [`OWNER_TX`]: its TX ring).
    #[inline]
    pub fn set(&mut self, frames: &[D], owner: u16) {
        for f in frames {
            if let Some(o) = self.owner.get_mut(f.frame_addr() >> self.shift) {
                *o = owner;
            }
        }
    }

    /// Marks in `self.free` the frames of `pool`.
    fn mark_free(&mut self, pool: &FramePool<D>) {
        self.free.fill(false);
        for f in pool.peek_top(pool.len()) {
            if let Some(m) = self.free.get_mut(f.frame_addr() >> self.shift) {
                *m = true;
            }
        }
    }

    /// Frames socket `id` holds, `pool` being the free pool: (in its fill or RX ring, in its
    /// TX ring). Call between bursts.
    pub fn held_by(&mut self, id: u16, pool: &FramePool<D>) -> (u64, u64) {
        self.mark_free(pool);
        self.owner
            .iter()
            .zip(self.free.iter())
            .fold((0, 0), |(fill, tx), (&o, &free)| {
                if free {
                    (fill, tx)
                } else if o == id {
                    (fill + 1, tx)
                } else if o == id | OWNER_TX {
                    (fill, tx + 1)
                } else {
                    (fill, tx)
                }
            })
    }

    /// Gives every frame socket `id` held back to `pool` and settles `ledger`. Call only once
    /// the socket is closed and the kernel has let go of its buffers, between bursts. Returns
    /// (from fill/RX, from TX).
    pub fn reclaim(
        &mut self,
        id: u16,
        pool: &mut FramePool<D>,
        ledger: &mut FrameLedger,
    ) -> (u64, u64) {
        self.mark_free(pool);
        let (mut fill, mut tx) = (0, 0);
        for ((o, f), &free) in self
            .owner
            .iter_mut()
            .zip(self.frames.iter())
            .zip(self.free.iter())
        {
            if !free && *o != 0 && *o & !OWNER_TX == id {
                if *o & OWNER_TX != 0 {
                    tx += 1;
                } else {
                    fill += 1;
                }
                *o = 0;
                pool.put_one(*f);
            }
        }
        ledger.return_rx(fill as usize);
        ledger.return_comp(tx as usize);
        (fill, tx)
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
mod owner_tests {
    use super::*;

    #[test]
    fn a_closed_sockets_frames_come_back_whatever_the_order() {
        const SIZE: usize = 4096;
        let all: Vec<u64> = (0..16u64).map(|i| i * SIZE as u64 + 256).collect();
        let mut owners = FrameOwners::new(&all, SIZE);
        let mut pool = FramePool::new(Vec::with_capacity(16));
        let mut ledger = FrameLedger::default();
        // Socket 1 gets frames 0..6 in its fill ring, socket 2 frames 6..10; RX on socket 1
        // hands back 4 and 2 (not in ring order), which go out on socket 2's TX ring.
        owners.set(&all[0..6], 1);
        owners.set(&all[6..10], 2);
        ledger.lend_fill(10);
        let rx = [all[4], all[2]];
        ledger.return_rx(2);
        owners.set(&rx, 2 | OWNER_TX);
        ledger.lend_tx(2);
        pool.put(&all[10..16]);
        assert_eq!(owners.held_by(1, &pool), (4, 0));
        assert_eq!(owners.held_by(2, &pool), (4, 2));
        // Socket 1's RX hands back frame 5, which is dropped into the pool: no longer held,
        // though its entry still names socket 1.
        ledger.return_rx(1);
        pool.put(&all[5..6]);
        assert_eq!(owners.held_by(1, &pool), (3, 0));
        ledger.lend_fill(1);
        owners.set(&all[5..6], 1);
        pool.take(1);
        assert_eq!(owners.held_by(1, &pool), (4, 0));
        // Socket 2 closes: its 4 fill frames and 2 TX frames return; socket 1 keeps its own.
        assert_eq!(owners.reclaim(2, &mut pool, &mut ledger), (4, 2));
        assert_eq!(owners.held_by(2, &pool), (0, 0));
        assert_eq!(owners.held_by(1, &pool), (4, 0));
        assert_eq!((pool.len(), ledger.in_fill, ledger.in_tx), (12, 4, 0));
        let mut back: Vec<u64> = pool.peek_top(12).to_vec();
        back.sort_unstable();
        let mut want: Vec<u64> = [&all[2..3], &all[4..5], &all[6..16]].concat();
        want.sort_unstable();
        assert_eq!(
            back, want,
            "exactly the frames socket 2 held, plus the free ones"
        );
        // Nothing left for a second reclaim.
        assert_eq!(owners.reclaim(2, &mut pool, &mut ledger), (0, 0));
        // Socket 1 sends a free frame and its completion comes back to the pool: socket 1
        // closing then reclaims its 4 fill frames and not that one.
        let sent = [pool.peek_top(1)[0]];
        owners.set(&sent, 1 | OWNER_TX);
        pool.take(1);
        ledger.lend_tx(1);
        assert_eq!(owners.held_by(1, &pool), (4, 1));
        ledger.return_comp(1);
        pool.put(&sent);
        assert_eq!(owners.held_by(1, &pool), (4, 0));
        assert_eq!(owners.reclaim(1, &mut pool, &mut ledger), (4, 0));
        assert_eq!((pool.len(), ledger.in_fill, ledger.in_tx), (16, 0, 0));
    }

    #[test]
    #[should_panic(expected = "outside the UMEM or repeated")]
    fn repeated_descriptors_are_refused() {
        let _ = FrameOwners::new(&[0u64, 100], 4096);
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
