//! The per-burst ring code: what the worker calls every loop. Set-up (bind, UMEM registration)
//! is in `setup.rs`.
//!
//! [`Rings`] is the burst API the worker's loop is written against: [`XskUmem`] implements it
//! on real AF_XDP rings, [`super::mem::MemUmem`] on in-memory rings for tests without a lab
//! (smoltcp's `phy/loopback.rs`, firecracker's `net/test_utils.rs`). The worker is generic over
//! it, so the loop the tests drive is the loop that runs.

use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use super::{
    XskError,
    pool::{FrameAudit, FrameLedger, FrameOwners, FramePool, OWNER_TX},
    sys,
};
use crate::params::{BindMode, MAX_BURST, RingParams, ZeroCopy};

/// What the worker needs of a socket besides its rings.
pub trait SocketInfo: std::fmt::Debug {
    /// The interface.
    fn ifname(&self) -> &str;
    /// The queue id.
    fn queue(&self) -> u32;
    /// The socket's id as a frame holder (for [`Rings::reclaim`]).
    fn id(&self) -> u16;
    /// Frames this socket holds lent to the kernel on TX.
    fn in_tx(&self) -> u64;
}

/// Binds sockets to a UMEM from another thread than the worker's (control's).
pub trait Bind: Clone + std::fmt::Debug + Send {
    /// The socket type.
    type Socket;
    /// Creates and binds a socket on `ifname` queue `queue`.
    ///
    /// # Errors
    /// The bind error.
    fn bind(
        &self,
        ifname: &str,
        queue: u32,
        zc: ZeroCopy,
        busy_poll_budget: u32,
    ) -> Result<Self::Socket, XskError>;
}

/// A UMEM and the rings of its sockets, as the worker's loop drives them: frames move between
/// rings in whole [`FrameBurst`]s and every one is counted ([`FrameAudit`]).
pub trait Rings {
    /// A socket bound to this UMEM.
    type Socket: SocketInfo + Send;
    /// A frame descriptor (private to the burst that holds it).
    type Desc: Copy + Default + Send;
    /// What binds more sockets from control's thread.
    type Binder: Bind<Socket = Self::Socket>;

    /// A binder for this UMEM.
    fn binder(&self) -> Self::Binder;

    /// Where the frames are right now.
    fn audit(&self) -> FrameAudit;

    /// Takes back every frame socket `id` held, once it is closed and its buffers released.
    /// Returns (from its fill/RX ring, from its TX ring).
    fn reclaim(&mut self, id: u16) -> (u64, u64);

    /// Tops up `q`'s fill ring from the free pool, at most `max` frames. Returns how many went.
    fn refill(&mut self, q: &mut Self::Socket, max: usize) -> usize;

    /// Takes up to `max` received frames from `q`'s RX ring into the empty `burst`.
    fn rx_burst(
        &mut self,
        q: &mut Self::Socket,
        burst: &mut FrameBurst<Self::Desc>,
        max: usize,
    ) -> usize;

    /// Sends the frames of `burst` on `q`, in order; what the TX ring cannot take stays in the
    /// burst. Returns the number queued (a prefix of the burst).
    fn tx_burst(&mut self, q: &mut Self::Socket, burst: &mut FrameBurst<Self::Desc>) -> usize;

    /// Kicks the kernel to transmit what `q`'s TX ring holds, if it asks to be kicked.
    fn kick_tx(&mut self, q: &mut Self::Socket);

    /// Moves completed TX frames back to the free pool. Returns how many.
    fn reap(&mut self, q: &mut Self::Socket, scratch: &mut FrameBurst<Self::Desc>) -> usize;

    /// Free slots in `q`'s TX ring.
    fn tx_room(&mut self, q: &mut Self::Socket) -> usize;

    /// Takes up to `n` frames from the free pool, lets `write(i, buf)` fill frame `i` (returning
    /// its length) and queues them on `q`'s TX ring. Returns how many were queued (never a
    /// partial write).
    fn tx_from_pool(
        &mut self,
        q: &mut Self::Socket,
        n: usize,
        write: impl FnMut(usize, &mut [u8]) -> usize,
    ) -> usize;

    /// The bytes of frame `i` of `burst` (empty past its end). The burst owns the frame, so
    /// nothing writes it while the view lives.
    fn frame<'a>(&'a self, burst: &FrameBurst<Self::Desc>, i: usize) -> &'a [u8];

    /// The bytes of every frame of `burst`, in order (what the classify pass reads).
    #[inline]
    fn frames<'a>(
        &'a self,
        burst: &'a FrameBurst<Self::Desc>,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        (0..burst.len()).map(move |i| self.frame(burst, i))
    }

    /// Drops every frame of `burst` from index `from` on back into the free pool.
    fn drop_from(&mut self, burst: &mut FrameBurst<Self::Desc>, from: usize) -> usize;

    /// Keeps the frames of `burst` for which `keep(i)` is true (called once per frame, in
    /// order), returning the others to the pool; order is preserved. Returns the number dropped.
    fn keep(
        &mut self,
        burst: &mut FrameBurst<Self::Desc>,
        keep: impl FnMut(usize) -> bool,
    ) -> usize;

    /// Lets `f` read the first `n` frames of `burst`, in order.
    #[inline]
    fn inspect_first(&self, burst: &FrameBurst<Self::Desc>, n: usize, mut f: impl FnMut(&[u8])) {
        for i in 0..n.min(burst.len()) {
            f(self.frame(burst, i));
        }
    }

    /// Lets `f` read every frame of `burst`, in order.
    #[inline]
    fn inspect(&self, burst: &FrameBurst<Self::Desc>, f: impl FnMut(&[u8])) {
        self.inspect_first(burst, burst.len(), f);
    }
}

/// Frames a worker holds for the length of one burst. Preallocated once, reused every burst.
/// The descriptors never leave it as values: rings take and give whole bursts.
pub struct FrameBurst<D = FrameDesc> {
    pub(super) descs: Box<[D]>,
    pub(super) len: usize,
}

impl<D: Copy + Default> FrameBurst<D> {
    /// An empty burst of [`MAX_BURST`] slots (the worker's only allocation for frames).
    pub fn new() -> Self {
        Self {
            descs: vec![D::default(); MAX_BURST as usize].into_boxed_slice(),
            len: 0,
        }
    }

    /// Frames held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the burst holds no frame.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives the frames from `from` on back to `pool`.
    #[inline]
    pub(super) fn drop_into(&mut self, pool: &mut FramePool<D>, from: usize) -> usize {
        let n = self.len.saturating_sub(from);
        pool.put(&self.descs[from.min(self.len)..self.len]);
        self.len = from.min(self.len);
        n
    }

    /// Keeps the frames `keep(i)` says, gives the others back to `pool`.
    #[inline]
    pub(super) fn keep_into(
        &mut self,
        pool: &mut FramePool<D>,
        mut keep: impl FnMut(usize) -> bool,
    ) -> usize {
        let mut kept = 0;
        for i in 0..self.len {
            let d = self.descs[i];
            if keep(i) {
                self.descs[kept] = d;
                kept += 1;
            } else {
                pool.put_one(d);
            }
        }
        let dropped = self.len - kept;
        self.len = kept;
        dropped
    }

    /// Removes the first `n` frames (a ring took them).
    #[inline]
    pub(super) fn consume_front(&mut self, n: usize) {
        self.descs.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl FrameBurst<FrameDesc> {
    /// Total bytes of the frames held.
    #[inline]
    pub fn bytes(&self) -> u64 {
        self.descs[..self.len]
            .iter()
            .map(|d| d.lengths().data() as u64)
            .sum()
    }
}

impl<D: Copy + Default> Default for FrameBurst<D> {
    fn default() -> Self {
        Self::new()
    }
}

/// A UMEM and the pool of its free frames, owned by one worker.
pub struct XskUmem {
    pub(super) umem: Umem,
    pub(super) pool: FramePool<FrameDesc>,
    pub(super) total: u64,
    pub(super) ledger: FrameLedger,
    pub(super) params: RingParams,
    pub(super) ids: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// Which socket holds each lent frame, when tracked ([`Self::track_owners`]).
    pub(super) owners: Option<FrameOwners<FrameDesc>>,
}

impl std::fmt::Debug for XskUmem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskUmem")
            .field("total", &self.total)
            .field("free", &self.pool.len())
            .finish()
    }
}

/// One AF_XDP socket: a (port, queue) pair with its four rings, owned by one worker.
pub struct XskSocket {
    /// Names this socket as a frame holder in the UMEM's [`FrameOwners`].
    pub(super) id: u16,
    pub(super) busy_poll: bool,
    pub(super) ifname: String,
    pub(super) queue: u32,
    pub(super) mode: BindMode,
    pub(super) zero_copy_refusal: Option<String>,
    pub(super) tx_budget: Option<u32>,
    pub(super) fd: i32,
    pub(super) tx: TxQueue,
    pub(super) rx: RxQueue,
    pub(super) fill: FillQueue,
    pub(super) comp: CompQueue,
    pub(super) fill_target: u64,
    pub(super) in_fill: u64,
    pub(super) in_tx: u64,
    pub(super) tx_size: u32,
    pub(super) tx_pending: bool,
}

impl SocketInfo for XskSocket {
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

impl Rings for XskUmem {
    type Socket = XskSocket;
    type Desc = FrameDesc;
    type Binder = super::XskBinder;

    fn binder(&self) -> super::XskBinder {
        super::XskBinder {
            umem: self.umem.clone(),
            params: self.params,
            ids: self.ids.clone(),
        }
    }

    fn audit(&self) -> FrameAudit {
        FrameAudit {
            total: self.total,
            free: self.pool.len() as u64,
            in_fill: self.ledger.in_fill,
            in_tx: self.ledger.in_tx,
        }
    }

    /// The caller's word that the socket is closed and the kernel has released its buffers:
    /// a frame still in use by the kernel would be handed out twice. (0, 0) when owners are
    /// not tracked.
    fn reclaim(&mut self, id: u16) -> (u64, u64) {
        match &mut self.owners {
            Some(o) => o.reclaim(id, &mut self.pool, &mut self.ledger),
            None => (0, 0),
        }
    }

    #[inline]
    fn refill(&mut self, q: &mut XskSocket, max: usize) -> usize {
        let want = (q.fill_target - q.in_fill) as usize;
        let n = want.min(max).min(self.pool.len());
        // A full ring (every idle socket, every loop) costs these comparisons, not a call.
        if n == 0 {
            return 0;
        }
        self.refill_n(q, n)
    }

    #[inline]
    fn rx_burst(&mut self, q: &mut XskSocket, burst: &mut FrameBurst, max: usize) -> usize {
        debug_assert!(
            burst.len == 0,
            "a burst must be emptied before it is reused"
        );
        let max = max.min(MAX_BURST as usize);
        if q.busy_poll {
            sys::busy_poll_rx(q.fd);
        }
        // SAFETY: RX hands back descriptors of frames this UMEM lent to the fill ring; the burst
        // becomes their only owner.
        // The owners keep naming this socket for these frames: a frame back from a ring is
        // not recorded (FrameOwners: it is back once it is in the pool or lent anew).
        let n = unsafe { q.rx.consume(&mut burst.descs[..max]) };
        burst.len = n;
        self.ledger.return_rx(n);
        q.in_fill -= n as u64;
        if n == 0 && q.fill.needs_wakeup() {
            let _ = q.fill.wakeup(q.rx.fd_mut(), 0);
        }
        n
    }

    #[inline]
    fn tx_burst(&mut self, q: &mut XskSocket, burst: &mut FrameBurst) -> usize {
        if burst.len == 0 {
            return 0;
        }
        // SAFETY: the burst owns these descriptors (from RX of this UMEM); after `produce` the
        // accepted ones are removed from the burst, so the TX ring is their only owner.
        let n = unsafe { q.tx.produce(&burst.descs[..burst.len]) };
        if let Some(o) = &mut self.owners {
            o.set(&burst.descs[..n], q.id | OWNER_TX);
        }
        burst.consume_front(n);
        self.ledger.lend_tx(n);
        q.in_tx += n as u64;
        if n > 0 {
            q.tx_pending = true;
        }
        n
    }

    #[inline]
    fn kick_tx(&mut self, q: &mut XskSocket) {
        // Nothing was produced since the ring was last seen empty: it still is.
        if !q.tx_pending {
            return;
        }
        if q.tx.needs_wakeup() {
            // xsk-rs swallows EAGAIN/EBUSY/ENOBUFS/ENETDOWN: the ring keeps its frames and the
            // next kick retries; frames sent to a dead link come back as completions.
            let _ = q.tx.wakeup();
        }
        // The kernel clears the flag on its own when it consumes the ring in zero-copy mode.
        q.tx_pending = q.tx.nb_free(q.tx_size) < q.tx_size;
    }

    #[inline]
    fn reap(&mut self, q: &mut XskSocket, scratch: &mut FrameBurst) -> usize {
        if q.in_tx == 0 {
            return 0;
        }
        let mut total = 0;
        loop {
            // SAFETY: completions are descriptors this UMEM lent to a TX ring; once consumed the
            // kernel no longer touches them and the pool becomes their owner.
            let n = unsafe { q.comp.consume(&mut scratch.descs[..]) };
            self.pool.put(&scratch.descs[..n]);
            self.ledger.return_comp(n);
            q.in_tx -= n as u64;
            total += n;
            if n < scratch.descs.len() {
                return total;
            }
        }
    }

    #[inline]
    fn tx_room(&mut self, q: &mut XskSocket) -> usize {
        q.tx.nb_free(q.tx_size) as usize
    }

    fn tx_from_pool(
        &mut self,
        q: &mut XskSocket,
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
            o.set(&descs[..done], q.id | OWNER_TX);
        }
        self.pool.take(done);
        self.ledger.lend_tx(done);
        q.in_tx += done as u64;
        if done > 0 {
            q.tx_pending = true;
        }
        done
    }

    #[inline]
    fn frame<'a>(&'a self, burst: &FrameBurst, i: usize) -> &'a [u8] {
        match burst.descs[..burst.len].get(i) {
            // SAFETY: the burst owns this frame (taken from this UMEM's RX ring and not yet
            // handed to any ring), so neither the kernel nor other code writes it while the
            // shared view lives; the view borrows `self`, so no ring call can hand the frame
            // on meanwhile.
            Some(desc) => unsafe { self.umem.data(desc) }.contents(),
            None => &[],
        }
    }

    #[inline]
    fn frames<'a>(&'a self, burst: &'a FrameBurst) -> impl Iterator<Item = &'a [u8]> + 'a {
        burst.descs[..burst.len].iter().map(|desc| {
            // SAFETY: as in `frame`: the burst owns each of these frames, and the views borrow
            // `self` and the burst, so no ring call can hand a frame on while one lives.
            unsafe { self.umem.data(desc) }.contents()
        })
    }

    #[inline]
    fn drop_from(&mut self, burst: &mut FrameBurst, from: usize) -> usize {
        burst.drop_into(&mut self.pool, from)
    }

    #[inline]
    fn keep(&mut self, burst: &mut FrameBurst, keep: impl FnMut(usize) -> bool) -> usize {
        burst.keep_into(&mut self.pool, keep)
    }
}

impl XskUmem {
    /// Lends `n` frames (at most the pool's) to `q`'s fill ring: [`Rings::refill`]'s work.
    #[inline(never)]
    fn refill_n(&mut self, q: &mut XskSocket, n: usize) -> usize {
        let frames = self.pool.peek_top(n);
        // SAFETY: every descriptor in the pool belongs to this UMEM (it came from Umem::new or
        // back from one of this UMEM's rings) and is owned by nobody else: the pool is the only
        // holder, and `take` below removes exactly the ones the ring accepted.
        let done = unsafe { q.fill.produce(frames) };
        if let Some(o) = &mut self.owners {
            o.set(&frames[..done], q.id);
        }
        self.pool.take(done);
        self.ledger.lend_fill(done);
        q.in_fill += done as u64;
        if done > 0 && q.fill.needs_wakeup() {
            // Copy mode needs a poke to resume RX once the fill ring ran dry.
            let _ = q.fill.wakeup(q.rx.fd_mut(), 0);
        }
        done
    }

    /// Keeps the frames of `burst` for which `keep` returns `true` (given each frame's bytes),
    /// returning the others to the free pool. Order is preserved. Returns the number dropped.
    #[inline]
    pub fn retain(&mut self, burst: &mut FrameBurst, mut keep: impl FnMut(&[u8]) -> bool) -> usize {
        let mut kept = 0;
        for i in 0..burst.len {
            let desc = burst.descs[i];
            // SAFETY: the burst owns this frame (taken from this UMEM's RX ring and not yet
            // handed to any ring), so neither the kernel nor other code writes it meanwhile.
            let data = unsafe { self.umem.data(&desc) };
            if keep(data.contents()) {
                burst.descs[kept] = desc;
                kept += 1;
            } else {
                self.pool.put_one(desc);
            }
        }
        let dropped = burst.len - kept;
        burst.len = kept;
        dropped
    }

    /// Frames in the free pool (neither lent to a ring nor held in a burst).
    pub fn free_frames(&self) -> usize {
        self.pool.len()
    }
}
