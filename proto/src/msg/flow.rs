//! Flows: the record a dump or a `flows` event carries, the dump request with its server-side
//! filters, `flow del` by 5-tuple, and the table's counters. The bulk-dump issue fills in the
//! server side; the layout is fixed here.

use std::net::IpAddr;

use crate::{
    attr::{record, wire_enum},
    attrs::{flow, flow_filter, flow_tuple, flowreq, flowtab},
};

wire_enum! {
    /// A TCP flow's state, conntrack's `TCP_CONNTRACK_*` numbers.
    pub enum TcpState {
        /// `TCP_CONNTRACK_NONE`.
        None = 0 => "none",
        /// `TCP_CONNTRACK_SYN_SENT`.
        SynSent = 1 => "syn_sent",
        /// `TCP_CONNTRACK_SYN_RECV`.
        SynRecv = 2 => "syn_recv",
        /// `TCP_CONNTRACK_ESTABLISHED`.
        Established = 3 => "established",
        /// `TCP_CONNTRACK_FIN_WAIT`.
        FinWait = 4 => "fin_wait",
        /// `TCP_CONNTRACK_CLOSE_WAIT`.
        CloseWait = 5 => "close_wait",
        /// `TCP_CONNTRACK_LAST_ACK`.
        LastAck = 6 => "last_ack",
        /// `TCP_CONNTRACK_TIME_WAIT`.
        TimeWait = 7 => "time_wait",
        /// `TCP_CONNTRACK_CLOSE`.
        Close = 8 => "close",
        /// `TCP_CONNTRACK_SYN_SENT2`.
        SynSent2 = 9 => "syn_sent2",
    }
}

wire_enum! {
    /// Why a flow left the table (IPFIX `flowEndReason` where one exists).
    pub enum EndReason {
        /// Idle past its timeout (IPFIX 1).
        Idle = 1 => "idle",
        /// Removed by a flush or `flow del` (IPFIX 4, forced end).
        Flush = 2 => "flush",
        /// Evicted to make room (IPFIX 5, lack of resources).
        Evict = 3 => "evict",
        /// A new connection reused its 5-tuple (IPFIX 3, end of flow detected).
        Reopen = 4 => "reopen",
    }
}

record! {
    /// A flow record: `NEWFLOW` in a dump or a `flows` event (new), `DELFLOW` (destroyed).
    /// Owns no heap memory: decoding a million allocates nothing.
    pub struct FlowMsg: flow {
        /// Stable id.
        req id: u64 = ID,
        /// Zone.
        req zone: u16 = ZONE,
        /// IP protocol.
        req proto: u8 = PROTO,
        /// Source, original direction.
        req src: IpAddr = SRC,
        /// Destination, original direction.
        req dst: IpAddr = DST,
        /// Source port.
        opt sport: u16 = SPORT,
        /// Destination port.
        opt dport: u16 = DPORT,
        /// Link in (ifindex).
        opt in_link: u32 = IN_LINK,
        /// Link out (ifindex).
        opt out_link: u32 = OUT_LINK,
        /// TCP state.
        opt tcp_state: TcpState = TCP_STATE,
        /// Packets, original direction.
        req packets_orig: u64 = PACKETS_ORIG,
        /// Bytes, original direction.
        req bytes_orig: u64 = BYTES_ORIG,
        /// Packets, reply direction.
        req packets_reply: u64 = PACKETS_REPLY,
        /// Bytes, reply direction.
        req bytes_reply: u64 = BYTES_REPLY,
        /// First seen.
        opt first_ns: u64 = FIRST_NS,
        /// Last seen.
        opt last_ns: u64 = LAST_NS,
        /// Worker.
        opt worker: u32 = WORKER,
        /// Events: when.
        opt event_ns: u64 = EVENT_NS,
        /// Outer VLAN.
        opt vlan_outer: u16 = VLAN_OUTER,
        /// Inner VLAN.
        opt vlan_inner: u16 = VLAN_INNER,
        /// Time left before it expires, ms.
        opt expires_ms: u64 = EXPIRES_MS,
        /// Why it ended (destroy events).
        opt end_reason: EndReason = END_REASON,
    }

    /// A 5-tuple in a zone.
    pub struct FlowTuple: flow_tuple {
        /// Zone (default 0).
        opt zone: u16 = ZONE,
        /// IP protocol.
        req proto: u8 = PROTO,
        /// Source.
        req src: IpAddr = SRC,
        /// Destination.
        req dst: IpAddr = DST,
        /// Source port.
        opt sport: u16 = SPORT,
        /// Destination port.
        opt dport: u16 = DPORT,
    }

    /// Dump and flush filters; every one given must match.
    pub struct FlowFilter: flow_filter {
        /// Zone.
        opt zone: u16 = ZONE,
        /// Link, either direction.
        opt link: u32 = LINK,
        /// Address, either side.
        opt addr: IpAddr = ADDR,
        /// Prefix length of `addr`.
        opt prefix_len: u8 = PREFIX_LEN,
        /// Port, either side.
        opt l4_port: u16 = L4_PORT,
        /// IP protocol.
        opt proto: u8 = PROTO,
        /// TCP state.
        opt tcp_state: TcpState = TCP_STATE,
        /// Minimum packets, both directions.
        opt min_packets: u64 = MIN_PACKETS,
    }

    /// `GETFLOW` (a dump with `NLM_F_DUMP`: `flow show [FILTERS] [limit N]`; one flow by
    /// `tuple` otherwise) and `DELFLOW` (`flow flush [FILTERS]` or `flow del TUPLE`).
    pub struct FlowQuery: flowreq {
        /// Filters.
        opt filter: FlowFilter = FILTER,
        /// Record limit.
        opt limit: u32 = LIMIT,
        /// One flow.
        opt tuple: FlowTuple = TUPLE,
    }

    /// The flow table's counters: the `GETFLOWTAB` reply (`flow count`).
    pub struct FlowTableMsg: flowtab {
        /// Flows.
        req count: u64 = COUNT,
        /// Slots.
        req capacity: u64 = CAPACITY,
        /// Created.
        req created: u64 = CREATED,
        /// Expired.
        req expired: u64 = EXPIRED,
        /// Evicted.
        req evicted: u64 = EVICTED,
        /// Events suppressed.
        req events_suppressed: u64 = EVENTS_SUPPRESSED,
        /// The zone, if the request named one.
        opt zone: u16 = ZONE,
    }

    /// `GETFLOWTAB`: all zones, or one.
    pub struct FlowTableQuery: flowtab {
        /// The zone.
        opt zone: u16 = ZONE,
    }
}

impl FlowFilter {
    /// No filter: everything matches.
    pub fn any() -> Self {
        Self {
            zone: None,
            link: None,
            addr: None,
            prefix_len: None,
            l4_port: None,
            proto: None,
            tcp_state: None,
            min_packets: None,
        }
    }
}
