//! The `SOCK_SEQPACKET` Unix socket under the netlink-format server: bind, accept, receive and
//! send one datagram, the peer's credentials. Every call is non-blocking; nothing here waits.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::Path,
};

use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType, accept_with,
    bind, connect, listen, recv, send, socket_with, sockopt,
};

/// Connections waiting to be accepted (the kernel's backlog).
const BACKLOG: i32 = 128;

/// The peer of a connection, as the kernel recorded it at `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// `SO_PEERCRED` uid.
    pub uid: u32,
    /// `SO_PEERCRED` gid.
    pub gid: u32,
    /// `SO_PEERCRED` pid.
    pub pid: u32,
    /// `SO_PEERGROUPS`: supplementary groups.
    pub groups: Vec<u32>,
}

fn seqpacket(flags: SocketFlags) -> io::Result<OwnedFd> {
    Ok(socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        flags | SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A listening socket at `path`, non-blocking. A file left there by a dead instance is
/// removed; a live one (it accepts a connection) is refused with `EADDRINUSE`.
///
/// # Errors
/// Creating, binding or listening failed.
pub(super) fn listen_at(path: &Path) -> io::Result<OwnedFd> {
    if path.exists() {
        if connect_to(path, SocketFlags::NONBLOCK).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
        }
        std::fs::remove_file(path)?;
    }
    let fd = seqpacket(SocketFlags::NONBLOCK)?;
    bind(&fd, &SocketAddrUnix::new(path)?)?;
    listen(&fd, BACKLOG)?;
    Ok(fd)
}

/// A connection to the server at `path` (`flags`: `NONBLOCK` or empty).
///
/// # Errors
/// The socket cannot be reached.
pub(super) fn connect_to(path: &Path, flags: SocketFlags) -> io::Result<OwnedFd> {
    let fd = seqpacket(flags)?;
    connect(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(fd)
}

/// Accepts one connection, non-blocking; `None` when none waits.
///
/// # Errors
/// `accept` failed otherwise (e.g. `EMFILE`).
pub(super) fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The credentials of `fd`'s peer.
///
/// # Errors
/// The socket options cannot be read.
pub(super) fn creds(fd: BorrowedFd<'_>) -> io::Result<Creds> {
    let c = sockopt::socket_peercred(fd)?;
    Ok(Creds {
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
        pid: c.pid.as_raw_nonzero().get() as u32,
        groups: isopath_datapath::xsk::peer_groups(fd)?,
    })
}

/// What a receive found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Recv {
    /// A datagram of this many bytes (cut to the buffer if it was longer).
    Datagram(usize),
    /// Nothing waiting.
    Empty,
    /// The peer closed the connection.
    Closed,
}

/// Receives one datagram into `buf`, non-blocking.
///
/// # Errors
/// The receive failed (e.g. `ECONNRESET`).
pub(super) fn recv_one(fd: impl AsFd, buf: &mut [u8]) -> io::Result<Recv> {
    match recv(fd, buf, RecvFlags::DONTWAIT) {
        Ok((0, _)) => Ok(Recv::Closed),
        Ok((n, _)) => Ok(Recv::Datagram(n)),
        Err(rustix::io::Errno::AGAIN) => Ok(Recv::Empty),
        Err(e) => Err(e.into()),
    }
}

/// Sends one datagram, non-blocking: `false` when the socket has no room now (send it later).
///
/// # Errors
/// The send failed (`EPIPE`: the peer went).
pub(super) fn send_one(fd: impl AsFd, bytes: &[u8]) -> io::Result<bool> {
    match send(fd, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::AGAIN) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sends one datagram, waiting for room (the client's side).
///
/// # Errors
/// The send failed.
pub(super) fn send_wait(fd: impl AsFd, bytes: &[u8]) -> io::Result<()> {
    send(fd, bytes, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Waits up to `timeout_ms` for `fd` to be readable (the client's side); `false` on timeout.
///
/// # Errors
/// `poll` failed.
pub(super) fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    let t = Timespec {
        tv_sec: i64::from(timeout_ms / 1000),
        tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
    };
    loop {
        match poll(&mut fds, Some(&t)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Of `fds`, which are readable or hung up now (one `poll`, no wait).
///
/// # Errors
/// `poll` failed.
pub(super) fn ready(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut p: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .collect();
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut p, Some(&zero)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(p.iter().map(|p| !p.revents().is_empty()).collect())
}

/// Waits up to `timeout_ms` until one of `fds` is ready for what it asks (`true`: writable,
/// `false`: readable); returns which are ready (hang-ups and errors count as ready).
pub(super) fn wait_any(fds: &[(BorrowedFd<'_>, bool)], timeout_ms: i64) -> io::Result<Vec<bool>> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut p: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(fd, out)| {
            PollFd::from_borrowed_fd(*fd, if *out { PollFlags::OUT } else { PollFlags::IN })
        })
        .collect();
    let t = Timespec {
        tv_sec: timeout_ms / 1000,
        tv_nsec: (timeout_ms % 1000) * 1_000_000,
    };
    match poll(&mut p, Some(&t)) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(vec![false; fds.len()]),
        Err(e) => return Err(e.into()),
    }
    Ok(p.iter().map(|p| !p.revents().is_empty()).collect())
}

/// The gid of group `name` from `/etc/group` (`None` if there is no such group).
pub fn group_gid(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    parse_group(&text, name)
}

fn parse_group(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_from_the_group_file() {
        let text = "root:x:0:\nisopath:x:997:alice,bob\nisopath-admin:x:996:\nbad:x:zz:\n";
        assert_eq!(parse_group(text, "isopath"), Some(997));
        assert_eq!(parse_group(text, "isopath-admin"), Some(996));
        assert_eq!(parse_group(text, "isopat"), None);
        assert_eq!(parse_group(text, "bad"), None);
        assert_eq!(parse_group("", "root"), None);
    }
}
