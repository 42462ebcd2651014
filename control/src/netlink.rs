//! rtnetlink link events: carrier changes of the datapath's ports as the kernel reports them,
//! and their deletion (`RTM_DELLINK`: the daemon unregisters the port).
//!
//! A socket in the `RTMGRP_LINK` group receives an `RTM_NEWLINK` for every change of a link's
//! flags; the carrier is `IFF_LOWER_UP`. The watcher thread blocks in `recv` and hands each
//! event to a callback at once, so a carrier loss reaches the bond within microseconds of the
//! kernel's notification (Linux bonding's default is a 100 ms miimon poll, DPDK's 10 ms).
//! Messages are split with `netlink-packet-core`'s `NetlinkBuffer` and their `ifinfomsg` read
//! with `netlink-packet-route`'s `LinkHeader`; anything malformed is counted and skipped.
//!
//! Only the `ifinfomsg` is parsed, not the attributes: index and flags are all the carrier
//! needs, and a full `LinkMessage` parse (a kernel `RTM_NEWLINK` carries dozens of attributes)
//! would allocate per event and fail the whole message on an attribute layout the crate's
//! version does not know, losing a carrier change.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread::JoinHandle,
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkFlags, LinkHeader, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// `RTMGRP_LINK` (include/uapi/linux/rtnetlink.h).
const RTMGRP_LINK: u32 = 1;
/// `RTM_NEWLINK`, `RTM_DELLINK`.
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
/// `struct nlmsghdr` size.
const NLMSG_HDR: usize = 16;

/// A link's state in one `RTM_NEWLINK`/`RTM_DELLINK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEvent {
    /// Interface index.
    pub ifindex: u32,
    /// Administratively up and carrier present (a deleted link is down).
    pub up: bool,
    /// The link is gone (`RTM_DELLINK`): the daemon unregisters the port on it.
    pub deleted: bool,
}

/// Parses a buffer of netlink messages into link events; returns the number of malformed
/// messages skipped.
pub fn parse(mut buf: &[u8], out: &mut Vec<LinkEvent>) -> u64 {
    let mut bad = 0;
    while buf.len() >= NLMSG_HDR {
        let Ok(msg) = NetlinkBuffer::new_checked(buf) else {
            // A length shorter than the header or past the buffer: nothing after it can be
            // trusted to start on a message boundary.
            return bad + 1;
        };
        let len = msg.length() as usize;
        let kind = msg.message_type();
        if kind == RTM_NEWLINK || kind == RTM_DELLINK {
            match LinkHeader::parse(msg.payload()) {
                Ok(h) if h.index <= i32::MAX as u32 => {
                    let up =
                        kind == RTM_NEWLINK && h.flags.contains(LinkFlags::Up | LinkFlags::LowerUp);
                    out.push(LinkEvent {
                        ifindex: h.index,
                        up,
                        deleted: kind == RTM_DELLINK,
                    });
                }
                // Too short for an ifinfomsg, or a negative ifi_index.
                _ => bad += 1,
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

/// Sets interface `ifindex` administratively up or down (`RTM_NEWLINK` with `IFF_UP` in
/// `ifi_change`), as `ip link set dev X up|down` does, and waits for the kernel's answer.
///
/// # Errors
/// The socket fails, or the kernel refuses (its errno).
pub fn set_link_up(ifindex: u32, up: bool) -> io::Result<()> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.send_to(&set_link_msg(ifindex, up), &SocketAddr::new(0, 0), 0)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    sock.recv(&mut buf, 0)?;
    ack(&buf)
}

/// The `RTM_NEWLINK` request of [`set_link_up`].
fn set_link_msg(ifindex: u32, up: bool) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.header.flags = if up {
        LinkFlags::Up
    } else {
        LinkFlags::empty()
    };
    link.header.change_mask = LinkFlags::Up;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::NewLink(link)),
    );
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out);
    out
}

/// Reads the kernel's answer to a request: an `NLMSG_ERROR` carrying errno 0 on success, a
/// negative errno otherwise.
fn ack(buf: &[u8]) -> io::Result<()> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf) {
        Ok(m) => match m.payload {
            NetlinkPayload::Error(e) if e.code.is_none() => Ok(()),
            NetlinkPayload::Error(e) => Err(e.to_io()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no netlink acknowledgement",
            )),
        },
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `IFF_UP`, `IFF_LOWER_UP` (include/uapi/linux/if.h).
    const IFF_UP: u32 = 1;
    const IFF_LOWER_UP: u32 = 1 << 16;

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
                    up: true,
                    deleted: false,
                },
                LinkEvent {
                    ifindex: 8,
                    up: false,
                    deleted: false,
                },
                LinkEvent {
                    ifindex: 9,
                    up: false,
                    deleted: true,
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
        let neg = msg(RTM_NEWLINK, -1, IFF_UP | IFF_LOWER_UP);
        assert_eq!(parse(&neg, &mut out), 1);
        assert!(out.is_empty());
    }

    #[test]
    fn set_link_request_is_an_ifinfomsg_changing_only_iff_up() {
        let mut want = Vec::new();
        want.extend_from_slice(&32u32.to_ne_bytes());
        want.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        want.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        want.extend_from_slice(&1u32.to_ne_bytes()); // seq
        want.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        want.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, pad, type
        want.extend_from_slice(&9i32.to_ne_bytes());
        want.extend_from_slice(&IFF_UP.to_ne_bytes()); // flags
        want.extend_from_slice(&IFF_UP.to_ne_bytes()); // change: only IFF_UP
        assert_eq!(set_link_msg(9, true), want);
        want[24..28].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(set_link_msg(9, false), want);
    }

    #[test]
    fn acks_and_errors_from_the_kernel() {
        let reply = |code: i32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
            m.extend_from_slice(&[0; 10]);
            m.extend_from_slice(&code.to_ne_bytes());
            m.extend_from_slice(&msg(RTM_NEWLINK, 3, 0)[..16]);
            m
        };
        assert!(ack(&reply(0)).is_ok());
        let e = ack(&reply(-19)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(19)); // ENODEV
        assert!(ack(&msg(RTM_NEWLINK, 3, 0)).is_err());
        assert!(ack(&[0; 8]).is_err());
    }
}
