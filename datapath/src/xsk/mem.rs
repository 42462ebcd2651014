//! In-memory rings under the burst API: a fake kernel side for unit tests of the worker's
//! loop, without a lab, privileges or `unsafe` (smoltcp's `phy/loopback.rs`, firecracker's
//! `net/test_utils.rs`).
//!
//! [`MemUmem`] owns the frame memory and, per socket, the four rings as queues of descriptors.
//! The test plays the NIC: [`MemUmem::deliver`] takes a frame from a socket's fill ring, writes
//! a packet into it and puts it on the RX ring, as the kernel does; [`MemUmem::sent`] takes
//! what the worker queued on a TX ring and completes it. Frames are counted as the real UMEM
//! counts them ([`FrameLedger`], [`FrameAudit`]), so a test can check that none leaks.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
};

use super::{
    XskError,
    pool::{FrameAudit, FrameLedger, FramePool, MAX_OWNER},
    ring::{Bind, FrameBurst, Rings, SocketInfo},
};
use crate::params::{MAX_BURST, ZeroCopy};

/// A frame of a [`MemUmem`]: its offset and the length of the packet in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemDesc {
    addr: u32,
    len: u32,
}

/// A socket of a [`MemUmem`]: names and the frames it holds lent.
#[derive(Debug)]
pub struct MemSocket {
    id: u16,
    ifname: String,
    queue: u32,
    in_fill: u64,
    in_tx: u64,
}

impl SocketInfo for MemSocket {
    fn ifname(&self) -> &str {
        &self.ifname
    }

    fn queue(&self) -> u32 {
        self.queue
    }

    fn id(&self) -> u16 {
        self.id
    }

    fn in_tx(&self) -> u64 {
        self.in_tx
    }
}

/// Makes [`MemSocket`]s (ids as the real binder gives them).
#[derive(Debug, Clone, Default)]
pub struct MemBinder {
    ids: Arc<AtomicU16>,
}

impl Bind for MemBinder {
    type Socket = MemSocket;

    fn bind(&self, ifname: &str, queue: u32, _: ZeroCopy, _: u32) -> Result<MemSocket, XskError> {
        let id = self
            .ids
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                Some(if i >= MAX_OWNER { 1 } else { i + 1 })
            })
            .map_or(1, |i| if i >= MAX_OWNER { 1 } else { i + 1 });
        Ok(MemSocket {
            id,
            ifname: ifname.to_owned(),
            queue,
            in_fill: 0,
            in_tx: 0,
        })
    }
}

/// One socket's rings, kernel side.
#[derive(Debug)]
struct MemRings {
    id: u16,
    ifname: String,
    queue: u32,
    fill: VecDeque<MemDesc>,
    rx: VecDeque<MemDesc>,
    tx: VecDeque<MemDesc>,
    comp: VecDeque<MemDesc>,
    tx_size: usize,
}

/// A UMEM in ordinary memory with in-memory rings.
#[derive(Debug)]
pub struct MemUmem {
    mem: Vec<u8>,
    frame_size: usize,
    ring_size: usize,
    pool: FramePool<MemDesc>,
    total: u64,
    ledger: FrameLedger,
    binder: MemBinder,
    rings: Vec<MemRings>,
}

impl MemUmem {
    /// `frames` frames of `frame_size` bytes; every ring holds `ring_size` descriptors.
    pub fn new(frames: usize, frame_size: usize, ring_size: usize) -> Self {
        let descs = (0..frames)
            .map(|i| MemDesc {
                addr: (i * frame_size) as u32,
                len: 0,
            })
            .collect();
        Self {
            mem: vec![0; frames * frame_size],
            frame_size,
            ring_size,
            pool: FramePool::new(descs),
            total: frames as u64,
            ledger: FrameLedger::default(),
            binder: MemBinder::default(),
            rings: Vec::new(),
        }
    }

    /// The index of `q`'s rings (made at its first use).
    fn ring_of(&mut self, q: &MemSocket) -> usize {
        match self.rings.iter().position(|r| r.id == q.id) {
            Some(i) => i,
            None => {
                self.rings.push(MemRings {
                    id: q.id,
                    ifname: q.ifname.clone(),
                    queue: q.queue,
                    fill: VecDeque::new(),
                    rx: VecDeque::new(),
                    tx: VecDeque::new(),
                    comp: VecDeque::new(),
                    tx_size: self.ring_size,
                });
                self.rings.len() - 1
            }
        }
    }

    fn rings_of(&mut self, q: &MemSocket) -> &mut MemRings {
        let i = self.ring_of(q);
        &mut self.rings[i]
    }

    fn find(&mut self, ifname: &str, queue: u32) -> Option<&mut MemRings> {
        self.rings
            .iter_mut()
            .find(|r| r.ifname == ifname && r.queue == queue)
    }

    /// The NIC receives `frame` on `ifname` queue `queue`: it goes into a frame from the
    /// socket's fill ring and onto its RX ring. False when the fill ring is empty or the RX ring
    /// full (the kernel would drop it), or no socket is there.
    pub fn deliver(&mut self, ifname: &str, queue: u32, frame: &[u8]) -> bool {
        let (size, ring) = (self.frame_size, self.ring_size);
        let Some(r) = self.find(ifname, queue) else {
            return false;
        };
        if r.rx.len() >= ring {
            return false;
        }
        let Some(mut d) = r.fill.pop_front() else {
            return false;
        };
        let len = frame.len().min(size);
        d.len = len as u32;
        r.rx.push_back(d);
        let at = d.addr as usize;
        self.mem[at..at + len].copy_from_slice(&frame[..len]);
        true
    }

    /// The NIC transmits what the worker queued on `ifname` queue `queue`: the frames, in order;
    /// their descriptors go to the completion ring.
    pub fn sent(&mut self, ifname: &str, queue: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let Some(r) = self
            .rings
            .iter_mut()
            .find(|r| r.ifname == ifname && r.queue == queue)
        else {
            return out;
        };
        while let Some(d) = r.tx.pop_front() {
            let at = d.addr as usize;
            out.push(self.mem[at..at + d.len as usize].to_vec());
            r.comp.push_back(d);
        }
        out
    }

    /// Like [`Self::sent`] without copying the frames out: how many went (tests that push
    /// millions of frames through a worker).
    pub fn complete(&mut self, ifname: &str, queue: u32) -> usize {
        let Some(r) = self.find(ifname, queue) else {
            return 0;
        };
        let n = r.tx.len();
        r.comp.extend(r.tx.drain(..));
        n
    }

    /// Limits the TX ring of `ifname` queue `queue` to `size` descriptors (to fill it up).
    pub fn set_tx_size(&mut self, ifname: &str, queue: u32, size: usize) {
        if let Some(r) = self.find(ifname, queue) {
            r.tx_size = size;
        }
    }

    /// Frames in `ifname` queue `queue`'s fill ring (what the NIC can still receive into).
    pub fn fill_level(&self, ifname: &str, queue: u32) -> usize {
        self.rings
            .iter()
            .find(|r| r.ifname == ifname && r.queue == queue)
            .map_or(0, |r| r.fill.len())
    }
}

impl Rings for MemUmem {
    type Socket = MemSocket;
    type Desc = MemDesc;
    type Binder = MemBinder;

    fn binder(&self) -> MemBinder {
        self.binder.clone()
    }

    fn audit(&self) -> FrameAudit {
        FrameAudit {
            total: self.total,
            free: self.pool.len() as u64,
            in_fill: self.ledger.in_fill,
            in_tx: self.ledger.in_tx,
        }
    }

    /// Like a closed socket's frames coming back: whatever its four rings held.
    fn reclaim(&mut self, id: u16) -> (u64, u64) {
        let Some(i) = self.rings.iter().position(|r| r.id == id) else {
            return (0, 0);
        };
        let r = self.rings.swap_remove(i);
        let (fill, tx) = (r.fill.len() + r.rx.len(), r.tx.len() + r.comp.len());
        for d in r.fill.iter().chain(&r.rx).chain(&r.tx).chain(&r.comp) {
            self.pool.put_one(*d);
        }
        self.ledger.return_rx(fill);
        self.ledger.return_comp(tx);
        (fill as u64, tx as u64)
    }

    fn refill(&mut self, q: &mut MemSocket, max: usize) -> usize {
        let want = (self.ring_size as u64 - q.in_fill) as usize;
        let n = want.min(max).min(self.pool.len());
        let i = self.ring_of(q);
        self.rings[i].fill.extend(self.pool.peek_top(n));
        self.pool.take(n);
        self.ledger.lend_fill(n);
        q.in_fill += n as u64;
        n
    }

    fn rx_burst(
        &mut self,
        q: &mut MemSocket,
        burst: &mut FrameBurst<MemDesc>,
        max: usize,
    ) -> usize {
        let max = max.min(MAX_BURST as usize);
        let r = self.rings_of(q);
        let mut n = 0;
        while n < max {
            let Some(d) = r.rx.pop_front() else { break };
            burst.descs[n] = d;
            n += 1;
        }
        burst.len = n;
        self.ledger.return_rx(n);
        q.in_fill -= n as u64;
        n
    }

    fn tx_burst(&mut self, q: &mut MemSocket, burst: &mut FrameBurst<MemDesc>) -> usize {
        let r = self.rings_of(q);
        let n = burst.len.min(r.tx_size.saturating_sub(r.tx.len()));
        r.tx.extend(&burst.descs[..n]);
        burst.consume_front(n);
        self.ledger.lend_tx(n);
        q.in_tx += n as u64;
        n
    }

    fn kick_tx(&mut self, _: &mut MemSocket) {}

    fn reap(&mut self, q: &mut MemSocket, _: &mut FrameBurst<MemDesc>) -> usize {
        let i = self.ring_of(q);
        let n = self.rings[i].comp.len();
        for d in self.rings[i].comp.drain(..) {
            self.pool.put_one(d);
        }
        self.ledger.return_comp(n);
        q.in_tx -= n as u64;
        n
    }

    fn tx_room(&mut self, q: &mut MemSocket) -> usize {
        let r = self.rings_of(q);
        r.tx_size.saturating_sub(r.tx.len())
    }

    fn tx_from_pool(
        &mut self,
        q: &mut MemSocket,
        n: usize,
        mut write: impl FnMut(usize, &mut [u8]) -> usize,
    ) -> usize {
        let n = n
            .min(MAX_BURST as usize)
            .min(self.pool.len())
            .min(self.tx_room(q));
        let r = self.ring_of(q);
        for i in 0..n {
            let mut d = self.pool.peek_top(1)[0];
            self.pool.take(1);
            let at = d.addr as usize;
            let buf = &mut self.mem[at..at + self.frame_size];
            d.len = write(i, buf).min(self.frame_size) as u32;
            self.rings[r].tx.push_back(d);
        }
        self.ledger.lend_tx(n);
        q.in_tx += n as u64;
        n
    }

    fn frame<'a>(&'a self, burst: &FrameBurst<MemDesc>, i: usize) -> &'a [u8] {
        match burst.descs[..burst.len].get(i) {
            Some(d) => &self.mem[d.addr as usize..(d.addr + d.len) as usize],
            None => &[],
        }
    }

    fn drop_from(&mut self, burst: &mut FrameBurst<MemDesc>, from: usize) -> usize {
        burst.drop_into(&mut self.pool, from)
    }

    fn keep(&mut self, burst: &mut FrameBurst<MemDesc>, keep: impl FnMut(usize) -> bool) -> usize {
        burst.keep_into(&mut self.pool, keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_go_round_and_are_accounted() {
        let mut u = MemUmem::new(64, 2048, 16);
        let b = u.binder();
        let mut a = b.bind("a", 0, ZeroCopy::Auto, 0).unwrap();
        let mut z = b.bind("z", 0, ZeroCopy::Auto, 0).unwrap();
        assert_ne!(a.id(), z.id());
        assert_eq!(
            (u.refill(&mut a, usize::MAX), u.refill(&mut z, usize::MAX)),
            (16, 16)
        );
        assert!(u.deliver("a", 0, &[1; 60]) && u.deliver("a", 0, &[2; 70]));
        let mut burst = FrameBurst::new();
        assert_eq!(u.rx_burst(&mut a, &mut burst, 64), 2);
        assert_eq!(u.frame(&burst, 1), &[2; 70][..]);
        assert_eq!(u.frame(&burst, 2), &[] as &[u8]);
        u.set_tx_size("z", 0, 1);
        assert_eq!(u.tx_burst(&mut z, &mut burst), 1, "one slot of TX room");
        assert_eq!(u.drop_from(&mut burst, 0), 1);
        assert_eq!(u.sent("z", 0), vec![vec![1; 60]]);
        let mut scratch = FrameBurst::new();
        assert_eq!(u.reap(&mut z, &mut scratch), 1);
        assert_eq!(u.audit().unaccounted(), 0);
        assert_eq!(u.reclaim(z.id()), (16, 0));
        assert_eq!(u.audit().unaccounted(), 0);
    }
}
