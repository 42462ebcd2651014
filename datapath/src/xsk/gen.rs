//! Traffic generation on an AF_XDP socket (writing new frames into free UMEM frames and queueing
//! them on TX) and the clock of its TX timestamps. Used by `isopath-bench`'s AF_XDP source; the datapath itself never creates frames.
//!
//! The frames come from the UMEM's free pool and go to the TX ring like forwarded ones do, so
//! [`XskUmem::reap`] returns them to the pool and the [`FrameLedger`](super::FrameLedger)
//! counts them as lent to TX meanwhile: the audit stays exact.

use xsk_rs::FrameDesc;

use super::{XskQueue, XskUmem};
use crate::params::MAX_BURST;

impl XskUmem {
    /// Takes up to `n` frames (at most [`MAX_BURST`]) from the free pool, lets `write(i, buf)`
    /// fill frame `i` (`buf` is the whole frame buffer; `write` returns the frame's length,
    /// clamped to the buffer) and queues them on `q`'s TX ring. Returns how many were queued:
    /// fewer than `n` when the pool or the TX ring has less room (never a partial write: frames
    /// are written only once it is known that the ring takes them all). Kick with
    /// [`XskUmem::kick_tx`] and reap with [`XskUmem::reap`] as for forwarded frames.
    pub fn tx_from_pool(
        &mut self,
        q: &mut XskQueue,
        n: usize,
        mut write: impl FnMut(usize, &mut [u8]) -> usize,
    ) -> usize {
        let n = n
            .min(MAX_BURST as usize)
            .min(self.pool.len())
            .min(q.tx.nb_free(q.tx_size) as usize);
        if n == 0 {
            return 0;
        }
        let mut descs = [FrameDesc::default(); MAX_BURST as usize];
        descs[..n].copy_from_slice(self.pool.peek_top(n));
        for (i, desc) in descs[..n].iter_mut().enumerate() {
            // SAFETY: `desc` is a copy of a descriptor of this UMEM's free pool: no ring holds it
            // and nothing else reads or writes its memory until it is produced below (the pool
            // entry is removed by `take` at the same time). The mutable view ends with this
            // block.
            let mut data = unsafe { self.umem.data_mut(desc) };
            let mut cursor = data.cursor();
            let cap = cursor.buf_len();
            // Expose the whole buffer, let the caller fill it, then set the frame's length.
            cursor.set_pos(cap);
            let len = write(i, data.contents_mut()).min(cap);
            data.cursor().set_pos(len);
        }
        // SAFETY: the descriptors belong to this UMEM and are owned by nobody else (see above);
        // `produce` is all-or-nothing (libxdp reserves the whole batch or none), and the room
        // was checked, so either all `n` go to the ring and leave the pool, or none does.
        let done = unsafe { q.tx.produce(&descs[..n]) };
        if let Some(o) = &mut self.owners {
            o.set(&descs[..done], q.id | super::pool::OWNER_TX);
        }
        self.pool.take(done);
        self.ledger.lend_tx(done);
        q.in_tx += done as u64;
        if done > 0 {
            q.tx_pending = true;
        }
        done
    }

    /// Frames in the free pool (neither lent to a ring nor held in a burst).
    pub fn free_frames(&self) -> usize {
        self.pool.len()
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`, so that a receiver can
/// subtract a TX timestamp written by an XDP program (std's `Instant` reads the same clock but
/// does not expose its value).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; CLOCK_MONOTONIC is always available on Linux,
    // so the call only writes `ts` and cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
