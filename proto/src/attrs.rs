//! Every nest of the protocol: its attribute numbers and types. `docs/protocol.md` lists the
//! same tables; `proto::doc` tests that the two agree.
//!
//! Numbers are part of the wire format: never renumber, only append.

use super::attr::policy;

policy! {
    /// A link: a port, a bond, a loopback port or a capture tap (`NEWLINK`, `DELLINK`, and the
    /// link requests).
    pub mod link = "link" {
        /// Device index (the kernel's ifindex for ports).
        IFINDEX = 1: U32,
        /// Interface name.
        NAME = 2: Str(15),
        /// What the link is ([`crate::msg::LinkKind`]).
        KIND = 3: U8,
        /// `IFF_*` flags as in `ifinfomsg.ifi_flags`.
        FLAGS = 4: U32,
        /// Request: which `FLAGS` bits to change (`ifi_change`).
        CHANGE = 5: U32,
        /// RFC 2863 operational state (`IF_OPER_*`).
        OPERSTATE = 6: U8,
        /// MTU.
        MTU = 7: U32,
        /// MAC address.
        ADDRESS = 8: Mac,
        /// The bond this link is a member of.
        MASTER = 9: Str(15),
        /// Datapath queues (AF_XDP sockets) the link has.
        QUEUES = 10: U32,
        /// AF_XDP bind mode.
        BIND_MODE = 11: U8,
        /// XDP attach mode.
        XDP_MODE = 12: U8,
        /// Promiscuity holders (captures).
        PROMISCUITY = 13: U32,
        /// Datapath counters.
        STATS = 14: Nested(&super::link_stats::NEST),
        /// The kernel's `XDP_STATISTICS`, summed over the link's sockets.
        XSK_STATS = 15: Nested(&super::xsk_stats::NEST),
        /// Request: what to include (`EXT_*` bits, as `IFLA_EXT_MASK`).
        EXT_MASK = 16: U32,
        /// Request: several links at once, all or none (`port del`).
        NAMES = 17: Array(&Str(15)),
        /// When the counters were read: nanoseconds of the daemon's monotonic clock.
        STAMP_NS = 18: U64,
        /// Events: when it happened, nanoseconds since the Unix epoch.
        EVENT_NS = 19: U64,
        /// The link cross-connected to this one.
        PEER = 20: Str(15),
    }

    /// A link's datapath counters, summed over its queues and workers.
    pub mod link_stats = "link_stats" {
        /// Frames received.
        RX_PACKETS = 1: U64,
        /// Bytes received.
        RX_BYTES = 2: U64,
        /// Frames sent.
        TX_PACKETS = 3: U64,
        /// Bytes sent.
        TX_BYTES = 4: U64,
        /// Dropped: shorter than an Ethernet header.
        RX_DROP_RUNT = 5: U64,
        /// Dropped: nowhere to forward.
        RX_DROP_NO_OUTPUT = 6: U64,
        /// Dropped: output link down.
        TX_DROP_LINK_DOWN = 7: U64,
        /// Dropped: output TX ring full.
        TX_DROP_RING_FULL = 8: U64,
        /// Dropped: received on a bond's backup member.
        RX_DROP_BACKUP = 9: U64,
        /// Dropped: bond without an active member.
        TX_DROP_NO_ACTIVE_MEMBER = 10: U64,
        /// Dropped: for the appliance, but control's queue was full.
        RX_DROP_CONTROL_FULL = 11: U64,
        /// Dropped by the XDP program: no socket on the queue.
        RX_DROP_NO_SOCKET = 12: U64,
        /// Redirected by the XDP program to a socket.
        XDP_RX_REDIRECT = 13: U64,
        /// Frames handed to control (ARP, ND, echo for the appliance).
        TO_CONTROL = 14: U64,
    }

    /// `struct xdp_statistics` (getsockopt `XDP_STATISTICS`), summed.
    pub mod xsk_stats = "xsk_stats" {
        /// `rx_dropped`.
        RX_DROPPED = 1: U64,
        /// `rx_invalid_descs`.
        RX_INVALID_DESCS = 2: U64,
        /// `tx_invalid_descs`.
        TX_INVALID_DESCS = 3: U64,
        /// `rx_ring_full`.
        RX_RING_FULL = 4: U64,
        /// `rx_fill_ring_empty_descs`.
        RX_FILL_RING_EMPTY_DESCS = 5: U64,
        /// `tx_ring_empty_descs`.
        TX_RING_EMPTY_DESCS = 6: U64,
    }

    /// A bond (`NEWBOND`, `GETBOND`, `SETBOND`), like `/proc/net/bonding/BOND`.
    pub mod bond = "bond" {
        /// Name.
        NAME = 1: Str(15),
        /// Mode ([`crate::msg::BondMode`]).
        MODE = 2: U8,
        /// Carrier: 1 when a member is active.
        CARRIER = 3: U8,
        /// The active member; `SETBOND`: switch to this member.
        ACTIVE = 4: Str(15),
        /// The member still accepted while peers relearn after a planned switch.
        DRAINING = 5: Str(15),
        /// Changes of active member.
        FAILOVERS = 6: U64,
        /// Options; `SETBOND`: the ones to change.
        OPTIONS = 7: Nested(&super::bond_opt::NEST),
        /// The bond's MAC address.
        ADDRESS = 8: Mac,
        /// The appliance's own addresses on the bond.
        ADDRESSES = 9: Array(&Ip),
        /// 802.1Q VLANs over the bond.
        VLANS = 10: Array(&Nested(&super::bond_vlan::NEST)),
        /// Peer-notification counters.
        NOTIFY = 11: Nested(&super::bond_notify::NEST),
        /// Members.
        MEMBERS = 12: Array(&Nested(&super::member::NEST)),
        /// Recent events, oldest first.
        EVENTS = 13: Array(&Nested(&super::bondev::NEST)),
        /// `GETBOND`: how many recent events to include (default 0).
        EVENT_LIMIT = 14: U32,
        /// The bond's datapath counters.
        STATS = 15: Nested(&super::link_stats::NEST),
    }

    /// Bond options, the names of the config file and of `bond set`.
    pub mod bond_opt = "bond_opt" {
        /// `miimon`.
        MIIMON_MS = 1: U32,
        /// `updelay`.
        UPDELAY_MS = 2: U32,
        /// `downdelay`.
        DOWNDELAY_MS = 3: U32,
        /// `primary`; an empty string is none.
        PRIMARY = 4: Str(15),
        /// `primary_reselect`.
        PRIMARY_RESELECT = 5: U8,
        /// `all_members_active` (0 or 1).
        ALL_MEMBERS_ACTIVE = 6: U8,
        /// `drain_ms`.
        DRAIN_MS = 7: U32,
        /// `fail_over_mac`.
        FAIL_OVER_MAC = 8: U8,
        /// `num_grat_arp`.
        NUM_GRAT_ARP = 9: U32,
        /// `num_unsol_na`.
        NUM_UNSOL_NA = 10: U32,
        /// `peer_notif_delay`.
        PEER_NOTIF_DELAY_MS = 11: U32,
        /// `reannounce` (0 or 1).
        REANNOUNCE = 12: U8,
        /// Size of the table of MACs seen behind the bond.
        REANNOUNCE_TABLE = 13: U32,
        /// Age after which a seen MAC is forgotten.
        REANNOUNCE_MAX_AGE_S = 14: U32,
        /// `arp_interval` (absent: the ARP monitor is off).
        ARP_INTERVAL_MS = 15: U32,
        /// `arp_ip_target`.
        ARP_IP_TARGET = 16: Array(&Ip),
        /// `ns_ip6_target`.
        NS_IP6_TARGET = 17: Array(&Ip),
        /// `arp_validate`.
        ARP_VALIDATE = 18: U8,
        /// `arp_all_targets`.
        ARP_ALL_TARGETS = 19: U8,
        /// `arp_missed_max`.
        ARP_MISSED_MAX = 20: U32,
        /// `link_state_tracking` (0 or 1).
        LINK_STATE_TRACKING = 21: U8,
    }

    /// A VLAN over a bond.
    pub mod bond_vlan = "bond_vlan" {
        /// VLAN id.
        ID = 1: U16,
        /// The appliance's addresses on it.
        ADDRESSES = 2: Array(&Ip),
    }

    /// Peer-notification counters of a bond.
    pub mod bond_notify = "bond_notify" {
        /// Gratuitous ARPs sent.
        GRAT_ARP = 1: U64,
        /// Unsolicited neighbour advertisements sent.
        UNSOL_NA = 2: U64,
        /// Announcements sent for MACs seen behind the bond.
        REANNOUNCED = 3: U64,
        /// Notifications not sent: the worker's mailbox was full.
        MAILBOX_FULL = 4: U64,
        /// Announcements held back by the rate limit.
        RATE_LIMITED = 5: U64,
    }

    /// A bond member (entries of `bond.MEMBERS`; `NEWMEMBER`, `DELMEMBER`).
    pub mod member = "member" {
        /// Interface name.
        NAME = 1: Str(15),
        /// Interface index.
        IFINDEX = 2: U32,
        /// `NEWMEMBER`, `DELMEMBER`: the bond.
        BOND = 3: Str(15),
        /// Link as the bond sees it, after delays ([`crate::msg::MemberLink`]).
        LINK = 4: U8,
        /// Role ([`crate::msg::MemberState`]).
        STATE = 5: U8,
        /// Times the link went down.
        LINK_FAILURES = 6: U64,
        /// Selection priority.
        PRIO = 7: I32,
        /// Speed, Mb/s.
        SPEED_MBPS = 8: U32,
        /// The member's own MAC address.
        PERM_ADDRESS = 9: Mac,
    }

    /// A bond event (`NEWBONDEV` in the `bonds` group; entries of `bond.EVENTS`).
    pub mod bondev = "bondev" {
        /// The bond.
        BOND = 1: Str(15),
        /// When, nanoseconds since the Unix epoch.
        UNIX_NS = 2: U64,
        /// What ([`crate::msg::BondEventKind`]).
        KIND = 3: U8,
        /// The member concerned.
        MEMBER = 4: Str(15),
        /// Free text: from/to, reason.
        DETAIL = 5: Str(255),
        /// The active member after the event.
        ACTIVE = 6: Str(15),
    }

    /// A worker thread (`NEWWORKER`, `GETWORKER`).
    pub mod worker = "worker" {
        /// Index.
        INDEX = 1: U32,
        /// The core it is pinned to.
        CORE = 2: U32,
        /// The queues it polls.
        QUEUES = 3: Array(&Nested(&super::worker_queue::NEST)),
        /// Queue slots still free for ports added at run time.
        SPARE_QUEUES = 4: U32,
        /// Poll-loop iterations.
        LOOPS = 5: U64,
        /// Iterations that moved frames (busy share = BUSY_LOOPS / LOOPS).
        BUSY_LOOPS = 6: U64,
        /// Queues attached at run time.
        QUEUES_ATTACHED = 7: U64,
        /// Queues retired at run time.
        QUEUES_RETIRED = 8: U64,
        /// Frames returned from retired sockets.
        FRAMES_RECLAIMED = 9: U64,
        /// The frame audit.
        FRAMES = 10: Nested(&super::frames::NEST),
        /// Pinned to its core (0 or 1).
        PINNED = 11: U8,
        /// When the counters were read (daemon monotonic ns).
        STAMP_NS = 12: U64,
    }

    /// One queue a worker polls.
    pub mod worker_queue = "worker_queue" {
        /// The link.
        LINK = 1: Str(15),
        /// Its queue id.
        QUEUE = 2: U32,
    }

    /// A worker's frames: where each of its UMEM's frames is.
    pub mod frames = "frames" {
        /// All frames.
        TOTAL = 1: U64,
        /// In the free pool.
        FREE = 2: U64,
        /// In fill rings.
        IN_FILL = 3: U64,
        /// In TX rings.
        IN_TX = 4: U64,
    }

    /// Traffic totals over all links (`NEWSTATS`, `GETSTATS`, `DELSTATS`).
    pub mod stats = "stats" {
        /// When read (daemon monotonic ns).
        STAMP_NS = 1: U64,
        /// Requests: only this link.
        LINK = 2: Str(15),
        /// Summed datapath counters.
        TOTALS = 3: Nested(&super::link_stats::NEST),
        /// Summed `XDP_STATISTICS`.
        XSK_STATS = 4: Nested(&super::xsk_stats::NEST),
        /// When the counters were last cleared, Unix ns (absent: never).
        CLEARED_NS = 5: U64,
    }

    /// The daemon (`NEWSTATUS`, `GETSTATUS`).
    pub mod status = "status" {
        /// [`crate::msg::DaemonState`].
        STATE = 1: U8,
        /// Process id.
        PID = 2: U32,
        /// Time since start, ns.
        UPTIME_NS = 3: U64,
        /// `isopathd` version.
        VERSION = 4: Str(63),
        /// Links registered.
        LINKS = 5: U32,
        /// Bonds.
        BONDS = 6: U32,
        /// Workers.
        WORKERS = 7: U32,
        /// Captures running.
        CAPTURES = 8: U32,
        /// Control connections open.
        CLIENTS = 9: U32,
        /// Requests handled.
        REQUESTS = 10: U64,
        /// Requests refused as malformed.
        BAD_REQUESTS = 11: U64,
        /// rtnetlink link events received.
        RTNL_EVENTS = 12: U64,
        /// rtnetlink messages malformed.
        RTNL_MALFORMED = 13: U64,
        /// rtnetlink receive errors.
        RTNL_ERRORS = 14: U64,
        /// Events not delivered to slow subscribers.
        EVENTS_LOST = 15: U64,
        /// Dumps started.
        DUMPS = 16: U64,
        /// Dumps in progress (cursors held).
        DUMPS_ACTIVE = 17: U32,
        /// Flow events sent to the `flows` group.
        FLOW_EVENTS = 18: U64,
    }

    /// A packet capture (`NEWCAPTURE`, `DELCAPTURE`, `GETCAPTURE`).
    pub mod capture = "capture" {
        /// Port or bond captured.
        TARGET = 1: Str(15),
        /// The pcap file (absolute path).
        FILE = 2: Str(4095),
        /// [`crate::msg::CaptureDir`].
        DIRECTION = 3: U8,
        /// Frames captured.
        CAPTURED = 4: U64,
        /// Frames lost: the capture ring was full.
        DROPPED = 5: U64,
        /// Frames written to the file.
        WRITTEN = 6: U64,
        /// Write errors.
        WRITE_ERRORS = 7: U64,
        /// Bytes kept per frame.
        SNAPLEN = 8: U32,
    }

    /// An error event (`NEWERROREV` in the `errors` group).
    pub mod errorev = "errorev" {
        /// When, Unix ns.
        UNIX_NS = 1: U64,
        /// Where ([`crate::msg::ErrorKind`]).
        KIND = 2: U8,
        /// The link concerned.
        LINK = 3: Str(15),
        /// The errno, positive.
        ERRNO = 4: I32,
        /// What happened.
        MSG = 5: Str(255),
    }

    /// A flow record (`NEWFLOW`, `DELFLOW` from the daemon: dump parts and `flows` events).
    /// Flat, no nests, so a client parses a million of them without allocating.
    pub mod flow = "flow" {
        /// Stable id of the flow (slot and generation).
        ID = 1: U64,
        /// Zone (namespace).
        ZONE = 2: U16,
        /// IP protocol number.
        PROTO = 3: U8,
        /// Source address, original direction.
        SRC = 4: Ip,
        /// Destination address, original direction.
        DST = 5: Ip,
        /// Source port (absent without ports).
        SPORT = 6: U16,
        /// Destination port.
        DPORT = 7: U16,
        /// Link the flow arrived on (ifindex).
        IN_LINK = 8: U32,
        /// Link it leaves by.
        OUT_LINK = 9: U32,
        /// TCP state ([`crate::msg::TcpState`]).
        TCP_STATE = 10: U8,
        /// Packets, original direction.
        PACKETS_ORIG = 11: U64,
        /// Bytes, original direction.
        BYTES_ORIG = 12: U64,
        /// Packets, reply direction.
        PACKETS_REPLY = 13: U64,
        /// Bytes, reply direction.
        BYTES_REPLY = 14: U64,
        /// First seen, Unix ns.
        FIRST_NS = 15: U64,
        /// Last seen, Unix ns.
        LAST_NS = 16: U64,
        /// Worker holding it.
        WORKER = 17: U32,
        /// Events: when, Unix ns.
        EVENT_NS = 18: U64,
        /// Outer VLAN id (absent: untagged).
        VLAN_OUTER = 19: U16,
        /// Inner VLAN id (802.1ad: the customer tag).
        VLAN_INNER = 20: U16,
        /// Milliseconds until it expires if idle.
        EXPIRES_MS = 21: U64,
        /// Why it ended (`DELFLOW` events: [`crate::msg::EndReason`]).
        END_REASON = 22: U8,
    }

    /// A flow's 5-tuple and zone (`flowreq.TUPLE`: get or delete one flow).
    pub mod flow_tuple = "flow_tuple" {
        /// Zone.
        ZONE = 1: U16,
        /// IP protocol.
        PROTO = 2: U8,
        /// Source address.
        SRC = 3: Ip,
        /// Destination address.
        DST = 4: Ip,
        /// Source port.
        SPORT = 5: U16,
        /// Destination port.
        DPORT = 6: U16,
    }

    /// Server-side dump filters (all given must match).
    pub mod flow_filter = "flow_filter" {
        /// Zone.
        ZONE = 1: U16,
        /// Link, either direction (ifindex).
        LINK = 2: U32,
        /// Address, either side (with `PREFIX_LEN`: a prefix).
        ADDR = 3: Ip,
        /// Prefix length of `ADDR` (default: the whole address).
        PREFIX_LEN = 4: U8,
        /// Port number, either side.
        L4_PORT = 5: U16,
        /// IP protocol.
        PROTO = 6: U8,
        /// TCP state.
        TCP_STATE = 7: U8,
        /// At least this many packets (both directions).
        MIN_PACKETS = 8: U64,
    }

    /// Flow requests (`GETFLOW`, `DELFLOW` from a client).
    pub mod flowreq = "flowreq" {
        /// Filters (dump, flush).
        FILTER = 1: Nested(&super::flow_filter::NEST),
        /// Stop after this many records.
        LIMIT = 2: U32,
        /// One flow (get, delete).
        TUPLE = 3: Nested(&super::flow_tuple::NEST),
    }

    /// The flow table's counters (`NEWFLOWTAB`, `GETFLOWTAB`), without a dump.
    pub mod flowtab = "flowtab" {
        /// Flows in the table.
        COUNT = 1: U64,
        /// Slots.
        CAPACITY = 2: U64,
        /// Flows created.
        CREATED = 3: U64,
        /// Flows expired.
        EXPIRED = 4: U64,
        /// Flows evicted for room.
        EVICTED = 5: U64,
        /// Flow events the workers suppressed (event ring full).
        EVENTS_SUPPRESSED = 6: U64,
        /// Request: only this zone.
        ZONE = 7: U16,
    }

    /// The client's connection (`NEWCONN`, `GETCONN`, `SETCONN`).
    pub mod conn = "conn" {
        /// Strict checking of every request on this connection (0 or 1).
        STRICT = 1: U8,
        /// Bytes per dump part (the kernel's receive-buffer hint); bounded by the daemon.
        DUMP_BUF = 2: U32,
        /// `SETCONN`: join these event groups (bit `1 << (group - 1)`).
        JOIN = 3: U32,
        /// `SETCONN`: leave these event groups.
        LEAVE = 4: U32,
        /// Groups joined.
        GROUPS = 5: U32,
        /// Events this connection lost (overruns).
        EVENTS_LOST = 6: U64,
        /// The peer's uid (`SO_PEERCRED`).
        UID = 7: U32,
        /// The peer's gid.
        GID = 8: U32,
        /// The peer's pid.
        PID = 9: U32,
        /// The peer may make changes and dump flows (0 or 1).
        ADMIN = 10: U8,
    }

    /// Extended-ack attributes after an `nlmsgerr` or a `NLMSG_DONE` status (`NLMSGERR_ATTR_*`
    /// of include/uapi/linux/netlink.h).
    pub mod nlmsgerr = "nlmsgerr" {
        /// `NLMSGERR_ATTR_MSG`: the error's text.
        MSG = 1: Str(1024),
        /// `NLMSGERR_ATTR_OFFS`: offset of the offending attribute from the start of the
        /// request's `nlmsghdr`.
        OFFS = 2: U32,
        /// `NLMSGERR_ATTR_COOKIE` (the kernel's; never sent by isopath).
        COOKIE = 3: Bytes(20),
        /// `NLMSGERR_ATTR_POLICY` (the kernel's policy dump; never sent by isopath).
        POLICY = 4: Bytes(65531),
        /// `NLMSGERR_ATTR_MISS_TYPE`: the type of a missing required attribute.
        MISS_TYPE = 5: U32,
        /// `NLMSGERR_ATTR_MISS_NEST`: offset of the nest it was missing from.
        MISS_NEST = 6: U32,
    }
}

/// `IFF_UP` (include/uapi/linux/if.h).
pub const IFF_UP: u32 = 0x1;
/// `IFF_BROADCAST`.
pub const IFF_BROADCAST: u32 = 0x2;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 0x8;
/// `IFF_RUNNING`.
pub const IFF_RUNNING: u32 = 0x40;
/// `IFF_PROMISC`.
pub const IFF_PROMISC: u32 = 0x100;
/// `IFF_LOWER_UP`: carrier.
pub const IFF_LOWER_UP: u32 = 0x1_0000;

/// `link.EXT_MASK` bit: include `STATS`.
pub const EXT_STATS: u32 = 1;
/// `link.EXT_MASK` bit: include `XSK_STATS`.
pub const EXT_XSK_STATS: u32 = 2;

/// Every nest, for the documentation check and the fuzzer.
pub const ALL: &[&super::attr::Policy] = &[
    &link::NEST,
    &link_stats::NEST,
    &xsk_stats::NEST,
    &bond::NEST,
    &bond_opt::NEST,
    &bond_vlan::NEST,
    &bond_notify::NEST,
    &member::NEST,
    &bondev::NEST,
    &worker::NEST,
    &worker_queue::NEST,
    &frames::NEST,
    &stats::NEST,
    &status::NEST,
    &capture::NEST,
    &errorev::NEST,
    &flow::NEST,
    &flow_tuple::NEST,
    &flow_filter::NEST,
    &flowreq::NEST,
    &flowtab::NEST,
    &conn::NEST,
    &nlmsgerr::NEST,
];
