//! rtnetlink link events: carrier changes of the datapath's ports as the kernel reports them.
//!
//! A socket in the `RTMGRP_LINK` group receives an `RTM_NEWLINK` for every change of a link's
//! flags; the carrier is `IFF_LOWER_UP`. The watcher thread blocks in `recv` and hands each
//! event to a callback at once, so a carrier loss reaches the bond within microseconds of the
//! kernel's notification (Linux bonding's default is a 100 ms miimon poll, DPDK's 10 ms).
//! Messages are parsed with safe slice reads; anything malformed is counted and skipped.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread::JoinHandle,
};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// `RTMGRP_LINK` (include/uapi/linux/rtnetlink.h).
const RTMGRP_LINK: u32 = 1;
/// `RTM_NEWLINK`, `RTM_DELLINK`.
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
/// `IFF_UP`, `IFF_LOWER_UP` (include/uapi/linux/if.h).
const IFF_UP: u32 = 1;
const IFF_LOWER_UP: u32 = 1 << 16;
/// `struct nlmsghdr` and `struct ifinfomsg` sizes.
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;

/// A link's state in one `RTM_NEWLINK`/`RTM_DELLINK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEvent {
    /// Interface index.
    pub ifindex: u32,
    /// Administratively up and carrier present (a deleted link is down).
    pub up: bool,
}

/// Parses a buffer of netlink messages into link events; returns the number of malformed
/// messages skipped.
pub fn parse(mut buf: &[u8], out: &mut Vec<LinkEvent>) -> u64 {
    let mut bad = 0;
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR || len > buf.len() {
            return bad + 1;
        }
        let body = &buf[NLMSG_HDR..len];
        if kind == RTM_NEWLINK || kind == RTM_DELLINK {
            if body.len() >= IFINFOMSG {
                let ifindex = i32::from_ne_bytes([body[4], body[5], body[6], body[7]]);
                let flags = u32::from_ne_bytes([body[8], body[9], body[10], body[11]]);
                let up = kind == RTM_NEWLINK && flags & IFF_UP != 0 && flags & IFF_LOWER_UP != 0;
                match u32::try_from(ifindex) {
                    Ok(ifindex) => out.push(LinkEvent { ifindex, up }),
                    Err(_) => bad += 1,
                }
            } else {
                bad += 1;
            }
        }
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        let step = (len + 3) & !3;
        buf = buf.get(step..).unwrap_or(&[]);
    }
    bad
}

/// Counters of the watcher.
#[derive(Debug, Default)]
pub struct WatcherStats {
    /// Link events delivered.
    pub events: AtomicU64,
    /// Malformed messages skipped.
    pub malformed: AtomicU64,
    /// Receive errors (e.g. ENOBUFS when events were lost: the miimon poll covers them).
    pub errors: AtomicU64,
}

/// Starts the watcher thread; `on_start` runs on it first (its CPU mask), `on_event` for every
/// link event.
///
/// # Errors
/// The socket cannot be created or bound.
pub fn spawn_link_watcher(
    on_start: impl FnOnce() + Send + 'static,
    mut on_event: impl FnMut(LinkEvent) + Send + 'static,
) -> io::Result<(JoinHandle<()>, Arc<WatcherStats>)> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    // Losing events under a storm is survivable (the miimon poll catches up), blocking is not.
    let _ = sock.set_rx_buf_sz(1 << 20);
    let stats = Arc::new(WatcherStats::default());
    let st = stats.clone();
    let thread = std::thread::Builder::new()
        .name("isopath-rtnl".into())
        .spawn(move || {
            on_start();
            // Listening needs no capability: give up what start-up left this thread.
            if let Err(e) = crate::privs::drop_all_for_thread() {
                tracing::warn!("rtnetlink thread: {e}");
            }
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            let mut events = Vec::with_capacity(64);
            loop {
                buf.clear();
                match sock.recv(&mut buf, 0) {
                    Ok(_) => {
                        events.clear();
                        st.malformed.fetch_add(parse(&buf, &mut events), Relaxed);
                        for e in events.drain(..) {
                            st.events.fetch_add(1, Relaxed);
                            on_event(e);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        st.errors.fetch_add(1, Relaxed);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            }
        })?;
    Ok((thread, stats))
}

/// `NLM_F_REQUEST`, `NLM_F_ACK`; `NLMSG_ERROR`.
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;

/// Sets interface `ifindex` administratively up or down (`RTM_NEWLINK` with `IFF_UP` in
/// `ifi_change`), as `ip link set dev X up|down` does, and waits for the kernel's answer.
///
/// # Errors
/// The socket fails, or the kernel refuses (its errno).
pub fn set_link_up(ifindex: u32, up: bool) -> io::Result<()> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    let mut msg = Vec::with_capacity(NLMSG_HDR + IFINFOMSG);
    msg.extend_from_slice(&((NLMSG_HDR + IFINFOMSG) as u32).to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    msg.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, pad, type
    msg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    msg.extend_from_slice(&(if up { IFF_UP } else { 0 }).to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // change: only IFF_UP
    sock.send_to(&msg, &SocketAddr::new(0, 0), 0)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    sock.recv(&mut buf, 0)?;
    // The ack is an NLMSG_ERROR carrying errno 0 on success (negative errno otherwise).
    if buf.len() >= NLMSG_HDR + 4 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if err != 0 {
            return Err(io::Error::from_raw_os_error(-err));
        }
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no netlink acknowledgement",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, ifindex: i32, flags: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&32u32.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]); // flags, seq, pid
        m.extend_from_slice(&[0, 0, 1, 0]); // family, pad, type (ARPHRD_ETHER)
        m.extend_from_slice(&ifindex.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes()); // change
        m
    }

    #[test]
    fn parses_carrier_from_ifinfomsg_flags() {
        let mut buf = msg(RTM_NEWLINK, 7, IFF_UP | IFF_LOWER_UP | 0x1000);
        buf.extend(msg(RTM_NEWLINK, 8, IFF_UP));
        buf.extend(msg(RTM_DELLINK, 9, IFF_UP | IFF_LOWER_UP));
        buf.extend(msg(3, 10, 0)); // NLMSG_DONE-like: ignored
        let mut out = Vec::new();
        assert_eq!(parse(&buf, &mut out), 0);
        assert_eq!(
            out,
            vec![
                LinkEvent {
                    ifindex: 7,
                    up: true
                },
                LinkEvent {
                    ifindex: 8,
                    up: false
                },
                LinkEvent {
                    ifindex: 9,
                    up: false
                },
            ]
        );
    }

    #[test]
    fn malformed_messages_are_counted_not_trusted() {
        let mut out = Vec::new();
        let mut short = msg(RTM_NEWLINK, 1, IFF_UP | IFF_LOWER_UP);
        short[0] = 200; // length beyond the buffer
        assert_eq!(parse(&short, &mut out), 1);
        let mut tiny = msg(RTM_NEWLINK, 1, 0);
        tiny[0] = 20; // too short for an ifinfomsg
        tiny.truncate(20);
        assert_eq!(parse(&tiny, &mut out), 1);
        assert_eq!(parse(&[1, 2, 3], &mut out), 0);
        assert!(out.is_empty());
    }
}
