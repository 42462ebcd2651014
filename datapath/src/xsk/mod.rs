//! AF_XDP sockets, UMEM and rings: the only module of the crate with `unsafe` code.
//!
//! xsk-rs (through libxdp) does the set-up syscalls (UMEM registration, ring mmap, bind). Above
//! it this module keeps frame ownership: xsk-rs's [`FrameDesc`] is `Copy`, which is why its ring
//! methods are `unsafe` (a copy could be handed to two rings at once). Here descriptors never
//! leave the module as values: the worker moves frames between rings with [`FrameBurst`] and
//! [`XskQueue`] methods that take and give whole bursts, and every frame is counted in a
//! [`FrameLedger`], so the safe API cannot alias a frame and a lost one shows in a
//! [`FrameAudit`].
//!
//! Ring rules followed here are those of the kernel's AF_XDP documentation
//! (Documentation/networking/af_xdp.rst): the fill ring must be kept stocked or RX stops
//! (`rx_fill_ring_empty_descs`); with `XDP_USE_NEED_WAKEUP` the kernel is kicked only when a ring
//! carries the need-wakeup flag (copy-mode TX always does); completions must be reaped or TX stops.
#![allow(unsafe_code)]

pub mod r#gen;
mod pool;
mod sys;
pub mod xdp;

use std::{ffi::CString, io, num::NonZeroU32, os::fd::AsRawFd};

use xsk_rs::{
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
    config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
};

pub use pool::FramePool;
use pool::{FrameAddr, MAX_OWNER, OWNER_TX};
pub use pool::{FrameAudit, FrameLedger, FrameOwners};
pub use sys::{PromiscGuard, XskStats, if_index};

use crate::params::{BindMode, MAX_BURST, RingParams, ZeroCopy};

/// Errors of socket and UMEM set-up. Each names the interface and queue it concerns.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// UMEM creation failed (memory, or `XDP_UMEM_REG`).
    #[error("creating a UMEM of {frames} frames: {reason}")]
    Umem {
        /// Frames asked for.
        frames: u32,
        /// What xsk-rs said.
        reason: String,
    },
    /// Socket creation or bind failed.
    #[error("binding an AF_XDP socket to {ifname} queue {queue} ({mode} mode): {source}")]
    Bind {
        /// Interface.
        ifname: String,
        /// Queue id.
        queue: u32,
        /// The mode tried last.
        mode: BindMode,
        /// The OS error.
        source: io::Error,
    },
    /// Zero-copy was required but the driver only offers copy mode.
    #[error(
        "{ifname} queue {queue}: zero-copy required but the driver refused it ({source}); set zero_copy = \"auto\" to accept copy mode"
    )]
    ZeroCopyRefused {
        /// Interface.
        ifname: String,
        /// Queue id.
        queue: u32,
        /// The OS error of the zero-copy bind.
        source: io::Error,
    },
    /// A ring parameter xsk-rs refused.
    #[error("ring parameters: {0}")]
    Params(String),
    /// The interface name cannot be a C string.
    #[error("interface name {0:?} contains a NUL byte")]
    BadName(String),
}

/// Binds sockets to a worker's UMEM from control's thread. The socket comes back unstocked:
/// the worker fills its fill ring from its own pool once it takes the socket over.
#[derive(Clone)]
pub struct XskBinder {
    umem: Umem,
    params: RingParams,
    /// The last socket id given out (ids name a frame's holder in [`FrameOwners`]).
    ids: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl std::fmt::Debug for XskBinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskBinder")
            .field("params", &self.params)
            .finish()
    }
}

impl XskBinder {
    /// Creates and binds a socket on `ifname` queue `queue` sharing this UMEM.
    ///
    /// Zero-copy is tried first unless `zc` is [`ZeroCopy::Off`]; with [`ZeroCopy::Auto`] a
    /// refusal falls back to copy mode (veth always refuses zero-copy). The socket never loads
    /// an XDP program of its own: the port's program redirects into it through its XSKMAP.
    ///
    /// # Errors
    /// [`XskError::Bind`] or [`XskError::ZeroCopyRefused`].
    pub fn bind(
        &self,
        ifname: &str,
        queue: u32,
        zc: ZeroCopy,
        busy_poll_budget: u32,
    ) -> Result<XskQueue, XskError> {
        let name = CString::new(ifname).map_err(|_| XskError::BadName(ifname.to_owned()))?;
        let iface = Interface::new(name);
        let first = match zc {
            ZeroCopy::Off => BindMode::Copy,
            ZeroCopy::Auto | ZeroCopy::Require => BindMode::ZeroCopy,
        };
        let (rings, refused) = match self.bind_mode(&iface, queue, first) {
            Ok(r) => (r, None),
            Err(e) if first == BindMode::ZeroCopy && zc == ZeroCopy::Require => {
                return Err(XskError::ZeroCopyRefused {
                    ifname: ifname.into(),
                    queue,
                    source: e,
                });
            }
            Err(e) if first == BindMode::ZeroCopy => {
                let r = self
                    .bind_mode(&iface, queue, BindMode::Copy)
                    .map_err(|source| XskError::Bind {
                        ifname: ifname.into(),
                        queue,
                        mode: BindMode::Copy,
                        source,
                    })?;
                (r, Some(e))
            }
            Err(source) => {
                return Err(XskError::Bind {
                    ifname: ifname.into(),
                    queue,
                    mode: first,
                    source,
                });
            }
        };
        let fd = rings.0.fd().as_raw_fd();
        // Ask the kernel what the bind got: a socket sharing a UMEM inherits its mode.
        let mode = match sys::is_zero_copy(fd) {
            Ok(true) => BindMode::ZeroCopy,
            Ok(false) => BindMode::Copy,
            Err(source) => {
                return Err(XskError::Bind {
                    ifname: ifname.into(),
                    queue,
                    mode: first,
                    source,
                });
            }
        };
        if zc == ZeroCopy::Require && mode != BindMode::ZeroCopy {
            let source = refused.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the shared UMEM is in copy mode",
                )
            });
            return Err(XskError::ZeroCopyRefused {
                ifname: ifname.into(),
                queue,
                source,
            });
        }
        let (tx, rx, fq_cq) = rings;
        let (fill, comp) = fq_cq.ok_or_else(|| XskError::Bind {
            ifname: ifname.into(),
            queue,
            mode,
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "queue already bound from this UMEM",
            ),
        })?;
        // Copy-mode sendto() transmits at most 32 frames per call unless raised; raise it to the
        // TX ring so one kick drains a burst. Older kernels lack the option: keep the default.
        let tx_budget = if mode == BindMode::Copy {
            sys::set_tx_skb_budget(fd, self.params.tx.get())
                .ok()
                .map(|()| self.params.tx.get())
        } else {
            None
        };
        let busy_poll = busy_poll_budget > 0;
        if busy_poll {
            sys::set_busy_poll(fd, busy_poll_budget).map_err(|source| XskError::Bind {
                ifname: ifname.into(),
                queue,
                mode,
                source: io::Error::new(source.kind(), format!("setting busy poll: {source}")),
            })?;
        }
        // Ids run 1..=MAX_OWNER and wrap (a UMEM never has that many sockets at once).
        let id = self
            .ids
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |i| Some(if i >= MAX_OWNER { 1 } else { i + 1 }),
            )
            .map_or(1, |i| if i >= MAX_OWNER { 1 } else { i + 1 });
        Ok(XskQueue {
            id,
            busy_poll,
            ifname: ifname.to_owned(),
            queue,
            mode,
            zero_copy_refusal: refused.map(|e| e.to_string()),
            tx_budget,
            fd,
            tx,
            rx,
            fill,
            comp,
            fill_target: self.params.fill.get() as u64,
            in_fill: 0,
            in_tx: 0,
            tx_size: self.params.tx.get(),
            tx_pending: false,
        })
    }

    /// [`Self::bind_once`], retried while the queue is busy: a socket of an instance that just
    /// died still holds the queue until the kernel's deferred release runs (milliseconds).
    #[expect(clippy::type_complexity, reason = "xsk-rs's own return shape")]
    fn bind_mode(
        &self,
        iface: &Interface,
        queue: u32,
        mode: BindMode,
    ) -> io::Result<(TxQueue, RxQueue, Option<(FillQueue, CompQueue)>)> {
        // A crashed instance's socket and buffer pool are freed from a workqueue: 70-100 ms
        // after SIGKILL here. A live instance holds the queue for good: give up after 3 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match self.bind_once(iface, queue, mode) {
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    #[expect(clippy::type_complexity, reason = "xsk-rs's own return shape")]
    fn bind_once(
        &self,
        iface: &Interface,
        queue: u32,
        mode: BindMode,
    ) -> io::Result<(TxQueue, RxQueue, Option<(FillQueue, CompQueue)>)> {
        let mut flags = BindFlags::XDP_USE_NEED_WAKEUP;
        flags |= match mode {
            BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            BindMode::Copy => BindFlags::XDP_COPY,
        };
        let q =
            |n: u32| QueueSize::new(n).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
        let config = SocketConfig::builder()
            .rx_queue_size(q(self.params.rx.get())?)
            .tx_queue_size(q(self.params.tx.get())?)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(flags)
            .build();
        // SAFETY: xsk-rs requires XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD when the UMEM is shared and
        // the (interface, queue) pair is already bound; we set it on every socket, so libxdp
        // never loads or detaches a program of its own.
        unsafe { Socket::new(config, &self.umem, iface, queue) }.map_err(|e| {
            match std::error::Error::source(&e) {
                Some(src) => match src.downcast_ref::<io::Error>() {
                    Some(io) => io::Error::new(io.kind(), format!("{e}: {io}")),
                    None => io::Error::other(e.to_string()),
                },
                None => io::Error::other(e.to_string()),
            }
        })
    }
}

impl FrameAddr for FrameDesc {
    fn frame_addr(&self) -> usize {
        self.addr()
    }
}

/// A UMEM and the pool of its free frames, owned by one worker.
pub struct XskUmem {
    umem: Umem,
    pool: FramePool<FrameDesc>,
    total: u64,
    ledger: FrameLedger,
    params: RingParams,
    ids: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// Which socket holds each lent frame, when tracked ([`Self::track_owners`]).
    owners: Option<FrameOwners<FrameDesc>>,
}

impl std::fmt::Debug for XskUmem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskUmem")
            .field("total", &self.total)
            .field("free", &self.pool.len())
            .finish()
    }
}

impl XskUmem {
    /// Maps and registers `frames` frames of `params.frame_size` bytes.
    ///
    /// # Errors
    /// [`XskError::Umem`] if the memory cannot be mapped or registered.
    pub fn new(params: RingParams, frames: u32) -> Result<Self, XskError> {
        let umem_err = |reason: String| XskError::Umem { frames, reason };
        let q = |n: u32| QueueSize::new(n).map_err(|e| XskError::Params(e.to_string()));
        let config = UmemConfig::builder()
            .frame_size(
                xsk_rs::config::FrameSize::new(params.frame_size.get())
                    .map_err(|e| XskError::Params(e.to_string()))?,
            )
            .fill_queue_size(q(params.fill.get())?)
            .comp_queue_size(q(params.comp.get())?)
            .build()
            .map_err(|e| XskError::Params(e.to_string()))?;
        let count = NonZeroU32::new(frames).ok_or_else(|| umem_err("zero frames".into()))?;
        let (umem, descs) = Umem::new(config, count, false).map_err(|e| umem_err(e.to_string()))?;
        let total = descs.len() as u64;
        Ok(Self {
            umem,
            pool: FramePool::new(descs),
            total,
            ledger: FrameLedger::default(),
            params,
            ids: std::sync::Arc::default(),
            owners: None,
        })
    }

    /// Keeps track of which socket holds each lent frame (one store per frame lent or given
    /// back), so that a socket can be closed while the UMEM stays in use and its frames come
    /// back ([`Self::reclaim`]). Call before the first frame is lent.
    pub fn track_owners(&mut self) {
        let frames = self.pool.peek_top(self.pool.len());
        self.owners = Some(FrameOwners::new(
            frames,
            self.params.frame_size.get() as usize,
        ));
    }

    /// Frames socket `id` holds now: (fill/RX ring, TX ring); `None` when not tracked.
    pub fn held_by(&self, id: u16) -> Option<(u64, u64)> {
        self.owners.as_ref().map(|o| o.held_by(id))
    }

    /// Takes back every frame the socket `id` held, once it is closed and the kernel has
    /// released its buffers (the caller's word: a frame still in use by the kernel would be
    /// handed out twice). Returns (from its fill/RX ring, from its TX ring); (0, 0) when owners
    /// are not tracked.
    pub fn reclaim(&mut self, id: u16) -> (u64, u64) {
        match &mut self.owners {
            Some(o) => o.reclaim(id, &mut self.pool, &mut self.ledger),
            None => (0, 0),
        }
    }

    /// Where the frames are right now.
    pub fn audit(&self) -> FrameAudit {
        FrameAudit {
            total: self.total,
            free: self.pool.len() as u64,
            in_fill: self.ledger.in_fill,
            in_tx: self.ledger.in_tx,
        }
    }

    /// Creates and binds a socket on `ifname` queue `queue` sharing this UMEM (see
    /// [`XskBinder::bind`]).
    ///
    /// # Errors
    /// [`XskError::Bind`] or [`XskError::ZeroCopyRefused`].
    pub fn bind(
        &mut self,
        ifname: &str,
        queue: u32,
        zc: ZeroCopy,
        busy_poll_budget: u32,
    ) -> Result<XskQueue, XskError> {
        self.binder().bind(ifname, queue, zc, busy_poll_budget)
    }

    /// A handle that binds more sockets to this UMEM from another thread (control's), while
    /// the worker that owns the UMEM keeps polling: how a port joins at run time.
    pub fn binder(&self) -> XskBinder {
        XskBinder {
            umem: self.umem.clone(),
            params: self.params,
            ids: self.ids.clone(),
        }
    }

    /// Tops up `q`'s fill ring from the free pool, at most `max` frames. Returns how many went.
    #[inline]
    pub fn refill(&mut self, q: &mut XskQueue, max: usize) -> usize {
        let want = (q.fill_target - q.in_fill) as usize;
        let n = want.min(max).min(self.pool.len());
        if n == 0 {
            return 0;
        }
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

    /// Takes up to `burst.capacity()` received frames from `q`'s RX ring into `burst`.
    #[inline]
    pub fn rx_burst(&mut self, q: &mut XskQueue, burst: &mut FrameBurst, max: usize) -> usize {
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
        let n = unsafe { q.rx.consume(&mut burst.descs[..max]) };
        if let Some(o) = &mut self.owners {
            o.set(&burst.descs[..n], 0);
        }
        burst.len = n;
        self.ledger.return_rx(n);
        q.in_fill -= n as u64;
        if n == 0 && q.fill.needs_wakeup() {
            let _ = q.fill.wakeup(q.rx.fd_mut(), 0);
        }
        n
    }

    /// Sends the frames of `burst` on `q`; what the TX ring cannot take stays in the burst.
    /// Returns the number queued.
    #[inline]
    pub fn tx_burst(&mut self, q: &mut XskQueue, burst: &mut FrameBurst) -> usize {
        if burst.len == 0 {
            return 0;
        }
        // SAFETY: the burst owns these descriptors (from RX of this UMEM); after `produce` the
        // accepted ones are removed from the burst, so the TX ring is their only owner.
        let n = unsafe { q.tx.produce(&burst.descs[..burst.len]) };
        if let Some(o) = &mut self.owners {
            o.set(&burst.descs[..n], q.id | OWNER_TX);
        }
        burst.descs.copy_within(n..burst.len, 0);
        burst.len -= n;
        self.ledger.lend_tx(n);
        q.in_tx += n as u64;
        if n > 0 {
            q.tx_pending = true;
        }
        n
    }

    /// Kicks the kernel to transmit what `q`'s TX ring holds, if it asks to be kicked.
    #[inline]
    pub fn kick_tx(&mut self, q: &mut XskQueue) {
        if q.tx_pending && q.tx.needs_wakeup() {
            // xsk-rs swallows EAGAIN/EBUSY/ENOBUFS/ENETDOWN: the ring keeps its frames and the
            // next kick retries; frames sent to a dead link come back as completions.
            let _ = q.tx.wakeup();
        }
        // The kernel clears the flag on its own when it consumes the ring in zero-copy mode.
        q.tx_pending = q.tx.nb_free(q.tx_size) < q.tx_size;
    }

    /// Moves completed TX frames back to the free pool. Returns how many.
    #[inline]
    pub fn reap(&mut self, q: &mut XskQueue, scratch: &mut FrameBurst) -> usize {
        if q.in_tx == 0 {
            return 0;
        }
        let mut total = 0;
        loop {
            // SAFETY: completions are descriptors this UMEM lent to a TX ring; once consumed the
            // kernel no longer touches them and the pool becomes their owner.
            let n = unsafe { q.comp.consume(&mut scratch.descs[..]) };
            if let Some(o) = &mut self.owners {
                o.set(&scratch.descs[..n], 0);
            }
            self.pool.put(&scratch.descs[..n]);
            self.ledger.return_comp(n);
            q.in_tx -= n as u64;
            total += n;
            if n < scratch.descs.len() {
                return total;
            }
        }
    }

    /// Drops every frame of `burst` from index `from` on back into the free pool.
    #[inline]
    pub fn drop_from(&mut self, burst: &mut FrameBurst, from: usize) -> usize {
        let n = burst.len.saturating_sub(from);
        self.pool.put(&burst.descs[from..burst.len]);
        burst.len = from.min(burst.len);
        n
    }

    /// Lets `f` read every frame of `burst` (in order), e.g. to learn source addresses.
    #[inline]
    pub fn inspect(&self, burst: &FrameBurst, f: impl FnMut(&[u8])) {
        self.inspect_first(burst, burst.len, f);
    }

    /// Free slots in `q`'s TX ring: how many frames [`Self::tx_burst`] would take now.
    #[inline]
    pub fn tx_room(&mut self, q: &mut XskQueue) -> usize {
        q.tx.nb_free(q.tx_size) as usize
    }

    /// Lets `f` read the first `n` frames of `burst`.
    #[inline]
    pub fn inspect_first(&self, burst: &FrameBurst, n: usize, mut f: impl FnMut(&[u8])) {
        for desc in &burst.descs[..n.min(burst.len)] {
            // SAFETY: the burst owns this frame (see `retain`); the view is read-only and ends
            // before the frame is handed to any ring.
            let data = unsafe { self.umem.data(desc) };
            f(data.contents());
        }
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
}

fn is_busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EBUSY) || e.to_string().contains("os error 16")
}

/// Frames a worker holds for the length of one burst. Preallocated once, reused every burst.
pub struct FrameBurst {
    descs: Box<[FrameDesc]>,
    len: usize,
}

impl FrameBurst {
    /// An empty burst of [`MAX_BURST`] slots (the worker's only allocation for frames).
    pub fn new() -> Self {
        Self {
            descs: vec![FrameDesc::default(); MAX_BURST as usize].into_boxed_slice(),
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

    /// Total bytes of the frames held.
    #[inline]
    pub fn bytes(&self) -> u64 {
        self.descs[..self.len]
            .iter()
            .map(|d| d.lengths().data() as u64)
            .sum()
    }
}

impl Default for FrameBurst {
    fn default() -> Self {
        Self::new()
    }
}

/// One AF_XDP socket: a (port, queue) pair with its four rings, owned by one worker.
pub struct XskQueue {
    /// Names this socket as a frame holder in the UMEM's [`FrameOwners`].
    id: u16,
    busy_poll: bool,
    ifname: String,
    queue: u32,
    mode: BindMode,
    zero_copy_refusal: Option<String>,
    tx_budget: Option<u32>,
    fd: i32,
    tx: TxQueue,
    rx: RxQueue,
    fill: FillQueue,
    comp: CompQueue,
    fill_target: u64,
    in_fill: u64,
    in_tx: u64,
    tx_size: u32,
    tx_pending: bool,
}

impl std::fmt::Debug for XskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskQueue")
            .field("ifname", &self.ifname)
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .finish()
    }
}

impl XskQueue {
    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The queue id.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// What the bind got.
    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// Why the zero-copy bind was refused, when the socket fell back to copy mode.
    pub fn zero_copy_refusal(&self) -> Option<&str> {
        self.zero_copy_refusal.as_deref()
    }

    /// The copy-mode TX budget set with `XDP_MAX_TX_SKB_BUDGET`, if the kernel took it.
    pub fn tx_budget(&self) -> Option<u32> {
        self.tx_budget
    }

    /// The socket's id as a frame holder (see [`XskUmem::held_by`], [`XskUmem::reclaim`]).
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The socket's file descriptor, to be stored in the port's XSKMAP. Valid while the queue
    /// lives.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// Frames this socket holds lent to the kernel on TX.
    pub fn in_tx(&self) -> u64 {
        self.in_tx
    }

    /// A handle that reads the kernel's per-socket `XDP_STATISTICS` from another thread. It
    /// holds a duplicate of the socket's descriptor, so it keeps the socket open: drop it with
    /// the port.
    ///
    /// # Errors
    /// `dup` failing (out of descriptors).
    pub fn stats_reader(&self) -> io::Result<XskStatsReader> {
        Ok(XskStatsReader {
            fd: sys::dup(self.fd)?,
        })
    }
}

/// Reads `XDP_STATISTICS` of a socket from the control thread; `getsockopt` does not touch the
/// rings, so it runs concurrently with the worker.
#[derive(Debug)]
pub struct XskStatsReader {
    fd: std::os::fd::OwnedFd,
}

impl XskStatsReader {
    /// The kernel's counters for this socket.
    ///
    /// # Errors
    /// The `getsockopt` error (e.g. `EBADF` once the socket is closed).
    pub fn read(&self) -> io::Result<XskStats> {
        sys::xdp_statistics(self.fd.as_raw_fd())
    }
}
