//! The raw syscalls our own code makes (xsk-rs makes the set-up ones): socket options that
//! xsk-rs does not wrap, interface lookup, descriptor duplication.

use std::{
    ffi::CString,
    io, mem,
    os::fd::{FromRawFd, OwnedFd},
};

/// `XDP_MAX_TX_SKB_BUDGET` (include/uapi/linux/if_xdp.h): frames one copy-mode `sendto` may
/// transmit. The kernel default is 32.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// `XDP_STATISTICS` (include/uapi/linux/if_xdp.h).
const XDP_STATISTICS: libc::c_int = 7;
/// `XDP_OPTIONS` and its `XDP_OPTIONS_ZEROCOPY` flag (include/uapi/linux/if_xdp.h).
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;

/// `struct xdp_statistics` of include/uapi/linux/if_xdp.h, all six fields (since Linux 5.9).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XskStats {
    /// Dropped for other reasons than invalid descriptors (e.g. the RX ring was full).
    pub rx_dropped: u64,
    /// Dropped because of invalid descriptors.
    pub rx_invalid_descs: u64,
    /// TX descriptors the kernel refused as invalid.
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when kicked.
    pub tx_ring_empty_descs: u64,
}

const _: () = assert!(
    mem::size_of::<XskStats>() == 48,
    "struct xdp_statistics is 6 u64"
);

pub(super) fn set_tx_skb_budget(fd: i32, budget: u32) -> io::Result<()> {
    let v: u32 = budget;
    // SAFETY: `v` is a live u32 and its size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&raw const v).cast(),
            mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the socket's pool runs in zero-copy mode (`getsockopt(XDP_OPTIONS)`). This is the
/// kernel's word on it: a socket bound with `XDP_SHARED_UMEM` inherits the mode of the UMEM's
/// first socket whatever flags it asked for.
pub(super) fn is_zero_copy(fd: i32) -> io::Result<bool> {
    let mut flags: u32 = 0;
    let mut len = mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `struct xdp_options` is a single u32; `flags` is writable and `len` its size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            XDP_OPTIONS,
            (&raw mut flags).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(flags & XDP_OPTIONS_ZEROCOPY != 0)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL_BUDGET` (include/uapi/asm-generic/socket.h).
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

fn set_int(fd: i32, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: `v` is a live c_int and its size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&raw const v).cast(),
            mem::size_of::<libc::c_int>() as _,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Preferred busy polling: the socket's NAPI context runs in the worker's `recvfrom`, on the
/// worker's core, instead of in softirq wherever the interrupt (or, on veth, the sender) is.
pub(super) fn set_busy_poll(fd: i32, budget: u32) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, SO_PREFER_BUSY_POLL, 1)?;
    set_int(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL, 20)?;
    set_int(
        fd,
        libc::SOL_SOCKET,
        SO_BUSY_POLL_BUDGET,
        budget as libc::c_int,
    )
}

/// Drives the socket's NAPI once (busy poll) without blocking: `recvfrom(MSG_DONTWAIT)`.
#[inline]
pub(super) fn busy_poll_rx(fd: i32) {
    // SAFETY: a zero-length receive with null buffers is valid for AF_XDP sockets (the kernel
    // reads no user memory); the result is deliberately ignored (EAGAIN is the normal answer).
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

pub(super) fn xdp_statistics(fd: i32) -> io::Result<XskStats> {
    let mut stats = XskStats::default();
    let mut len = mem::size_of::<XskStats>() as libc::socklen_t;
    // SAFETY: `stats` is a writable repr(C) struct of `len` bytes matching the kernel's layout;
    // the kernel writes at most `len` bytes and stores the written length in `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            XDP_STATISTICS,
            (&raw mut stats).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(stats)
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn dup(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on any integer is memory-safe; an invalid fd gives EBADF.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The interface index of `ifname` in the current network namespace.
///
/// # Errors
/// `NotFound` if there is no such interface.
pub fn if_index(ifname: &str) -> io::Result<u32> {
    let name = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {ifname}"),
        ))
    } else {
        Ok(idx)
    }
}

/// Holds an interface in promiscuous mode the way tcpdump does: a packet socket with a
/// `PACKET_MR_PROMISC` membership (packet(7)). The kernel counts such memberships
/// (`promiscuity N` in `ip -d link`) and drops this one when the socket closes, whether the
/// guard is dropped or the process dies. The socket has protocol 0: it receives no frames.
#[derive(Debug)]
pub struct PromiscGuard {
    _fd: OwnedFd,
}

impl PromiscGuard {
    /// Raises the promiscuity of interface `ifindex`.
    ///
    /// # Errors
    /// The socket or the membership cannot be had (e.g. `EPERM` without CAP_NET_RAW).
    pub fn new(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        // SAFETY: `mreq` is a valid, initialised packet_mreq and its size is passed; the kernel
        // only reads it.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&raw const mreq).cast(),
                mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { _fd: owned })
    }
}

/// The supplementary groups of the process at the other end of a connected Unix socket, as
/// they were when it connected (`getsockopt(SO_PEERGROUPS)`, Linux 4.13): what the control
/// socket's permission checks read beside `SO_PEERCRED`. (It lives here, with every other
/// raw syscall of ours: the control crate forbids unsafe code and `nix` does not wrap it.)
///
/// # Errors
/// The `getsockopt` error (`ENOTCONN`, `ENOPROTOOPT` on a socket that is not `AF_UNIX`).
pub fn peer_groups(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    // NGROUPS_MAX is 65536; start with room for 64 and grow when the kernel says ERANGE (it
    // stores the length it needs).
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a writable buffer of exactly `len` bytes; the kernel writes at
        // most `len` bytes and stores the length written (or needed, with ERANGE) in `len`.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / mem::size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || n <= groups.len() || n > 65_536 {
            return Err(e);
        }
        groups.resize(n, 0);
    }
}
