//! Set-up, on control's thread: UMEM creation and registration, socket bind (xsk-rs and
//! libxdp make these syscalls), and the statistics reader. Nothing here runs per burst.

use std::{ffi::CString, io, num::NonZeroU32, os::fd::AsRawFd};

use xsk_rs::{
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
    config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
};

use super::{
    XskError, XskSocket, XskStats, XskUmem,
    pool::{FrameAddr, FrameLedger, FrameOwners, FramePool, MAX_OWNER},
    ring::{Bind, Rings},
    sys,
};
use crate::params::{BindMode, RingParams, ZeroCopy};

/// Binds sockets to a worker's UMEM from control's thread. The socket comes back unstocked:
/// the worker fills its fill ring from its own pool once it takes the socket over.
#[derive(Clone)]
pub struct XskBinder {
    pub(super) umem: Umem,
    pub(super) params: RingParams,
    /// The last socket id given out (ids name a frame's holder in [`FrameOwners`]).
    pub(super) ids: std::sync::Arc<std::sync::atomic::AtomicU16>,
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
    ) -> Result<XskSocket, XskError> {
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
        Ok(XskSocket {
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
                Err(f) if f.errno == Some(libc::EBUSY) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other.map_err(|f| f.error),
            }
        }
    }

    #[expect(clippy::type_complexity, reason = "xsk-rs's own return shape")]
    fn bind_once(
        &self,
        iface: &Interface,
        queue: u32,
        mode: BindMode,
    ) -> Result<(TxQueue, RxQueue, Option<(FillQueue, CompQueue)>), BindFailure> {
        let mut flags = BindFlags::XDP_USE_NEED_WAKEUP;
        flags |= match mode {
            BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            BindMode::Copy => BindFlags::XDP_COPY,
        };
        let q =
            |n: u32| QueueSize::new(n).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
        let config = SocketConfig::builder()
            .rx_queue_size(q(self.params.rx.get()).map_err(BindFailure::from)?)
            .tx_queue_size(q(self.params.tx.get()).map_err(BindFailure::from)?)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(flags)
            .build();
        // SAFETY: xsk-rs requires XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD when the UMEM is shared and
        // the (interface, queue) pair is already bound; we set it on every socket, so libxdp
        // never loads or detaches a program of its own.
        unsafe { Socket::new(config, &self.umem, iface, queue) }.map_err(|e| {
            // xsk-rs's error carries the kernel's as its source: keep its errno as a number
            // (the retry on EBUSY reads it) and its text next to xsk-rs's context.
            match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>()) {
                Some(io) => BindFailure {
                    errno: io.raw_os_error(),
                    error: io::Error::new(io.kind(), format!("{e}: {io}")),
                },
                None => BindFailure::from(io::Error::other(e.to_string())),
            }
        })
    }
}

/// A failed bind: the kernel's errno when it gave one, and the error with xsk-rs's context.
struct BindFailure {
    errno: Option<i32>,
    error: io::Error,
}

impl From<io::Error> for BindFailure {
    fn from(error: io::Error) -> Self {
        Self {
            errno: error.raw_os_error(),
            error,
        }
    }
}

impl Bind for XskBinder {
    type Socket = XskSocket;

    fn bind(
        &self,
        ifname: &str,
        queue: u32,
        zc: ZeroCopy,
        busy_poll_budget: u32,
    ) -> Result<XskSocket, XskError> {
        XskBinder::bind(self, ifname, queue, zc, busy_poll_budget)
    }
}

impl FrameAddr for FrameDesc {
    fn frame_addr(&self) -> usize {
        self.addr()
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
    ) -> Result<XskSocket, XskError> {
        self.binder().bind(ifname, queue, zc, busy_poll_budget)
    }
}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket")
            .field("ifname", &self.ifname)
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .finish()
    }
}

impl XskSocket {
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

    /// The socket's file descriptor, to be stored in the port's XSKMAP. Valid while the queue
    /// lives.
    pub fn fd(&self) -> i32 {
        self.fd
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
