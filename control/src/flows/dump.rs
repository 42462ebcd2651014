//! Flow state on the netlink-format socket: the `GETFLOW` dump (a cursor over the workers'
//! slabs, filtered in the server), one flow by 5-tuple, the records of the `flows` event
//! group, and the filters `flow flush` hands to the workers.
//!
//! The dump follows `netlink_dump`: each call fills one part from the cursor and returns;
//! the cursor is a position (worker, slot), never a reference to a flow, so seeking to it
//! is O(1) and nothing it names is pinned (the ctnetlink bug of commit de788b2e6227: a
//! referenced entry in a dump cursor blocked namespace teardown). Records are copied
//! through [`FlowReader::read`]'s sequence check: no worker waits for a dump, and no record
//! is torn or from a reused slot. Flows under traffic are dumped loosely consistent, as
//! conntrack's are: a flow alive for the whole dump sits in one slot all along and is
//! read exactly once; flows created or expired meanwhile may or may not appear.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use isopath_datapath::flow::{
    EndReason as DpEnd, FlowKey, FlowReader, FlowSnapshot, FlowState, Flush, ReadError,
    TcpState as DpTcp,
};
use isopath_proto::{
    dump::{Dump, Part, Step},
    msg::{EndReason, FlowFilter, FlowMsg, FlowTuple, TcpState, kind},
};

/// Slots one part may scan (a filter that refuses most flows yields after this many, so the
/// control loop keeps serving between parts: about 0.5 ms of reads).
pub const SCAN_BUDGET: u32 = 32 * 1024;

/// Parts a busy slot is retried in before the dump skips it (counted).
const BUSY_RETRIES: u8 = 4;

/// The links the workers' port ids name: id `n` is `ifindex[n - 1]` (0: no link known).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortLinks(pub Vec<u32>);

impl PortLinks {
    /// The ifindex of port id `id` (`None` for 0, unset, or unknown).
    pub fn ifindex(&self, id: u8) -> Option<u32> {
        let i = usize::from(id).checked_sub(1)?;
        self.0.get(i).copied().filter(|&x| x != 0)
    }

    /// The port id of link `ifindex`, if a worker port is that link.
    pub fn port_of(&self, ifindex: u32) -> Option<u8> {
        let i = self.0.iter().position(|&x| x == ifindex && x != 0)?;
        u8::try_from(i + 1).ok()
    }
}

/// A flow's wire id: worker, slot and the slot's generation (stable for the flow's life,
/// different for the next flow in the same slot).
pub fn flow_id(worker: u32, slot: u32, generation: u8) -> u64 {
    u64::from(worker) << 40 | u64::from(slot) << 8 | u64::from(generation)
}

/// conntrack's number for a TCP flow's state (`None` for other protocols).
pub fn tcp_state(s: FlowState) -> Option<TcpState> {
    match s {
        FlowState::Tcp(t) => Some(match t {
            DpTcp::None => TcpState::None,
            DpTcp::SynSent => TcpState::SynSent,
            DpTcp::SynRecv => TcpState::SynRecv,
            DpTcp::Established => TcpState::Established,
            DpTcp::FinWait => TcpState::FinWait,
            DpTcp::TimeWait => TcpState::TimeWait,
            DpTcp::Closed => TcpState::Close,
        }),
        FlowState::Unreplied | FlowState::Replied => None,
    }
}

/// The wire's end reason of a destroy event.
pub fn end_reason(r: DpEnd) -> Option<EndReason> {
    match r {
        DpEnd::None => None,
        DpEnd::Idle => Some(EndReason::Idle),
        DpEnd::Flush => Some(EndReason::Flush),
        DpEnd::Evict => Some(EndReason::Evict),
        DpEnd::Reopen => Some(EndReason::Reopen),
    }
}

/// Whether the protocol's flows are told apart by ports (ICMP and ICMPv6 echo: the
/// identifier, in both port fields).
fn has_ports(proto: u8) -> bool {
    matches!(proto, 1 | 6 | 17 | 58 | 132 | 136)
}

/// Turns the worker's flow clock into Unix time: both read at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The worker's flow clock (ns) ...
    pub flow_ns: u64,
    /// ... and the Unix time (ns) at that instant.
    pub unix_ns: u64,
}

impl Clock {
    /// The Unix time of flow-clock instant `t`.
    pub fn unix(&self, t: u64) -> u64 {
        (self.unix_ns + t).saturating_sub(self.flow_ns)
    }
}

/// The record of flow `f` of worker `worker`.
pub fn flow_msg(f: &FlowSnapshot, worker: u32, links: &PortLinks, clock: Clock) -> FlowMsg {
    let ((src, sport), (dst, dport)) = f.orig();
    let proto = f.key.proto();
    let ports = has_ports(proto);
    let [outer, inner] = f.key.vlan();
    FlowMsg {
        id: flow_id(worker, f.slot, f.generation),
        zone: f.key.zone(),
        proto,
        src,
        dst,
        sport: ports.then_some(sport),
        dport: ports.then_some(dport),
        in_link: links.ifindex(f.ingress[0]),
        out_link: links.ifindex(f.ingress[1]),
        tcp_state: if proto == 6 { tcp_state(f.state) } else { None },
        packets_orig: f.packets[0],
        bytes_orig: f.bytes[0],
        packets_reply: f.packets[1],
        bytes_reply: f.bytes[1],
        first_ns: Some(clock.unix(f.first_seen_ns)),
        last_ns: Some(clock.unix(f.last_seen_ns)),
        worker: Some(worker),
        event_ns: None,
        vlan_outer: (outer != 0).then_some(outer),
        vlan_inner: (inner != 0).then_some(inner),
        expires_ms: Some(f.expires_in_ms),
        end_reason: None,
    }
}

/// A flow's state as `conntrack -L` names it: the TCP state, else `UNREPLIED`/`ASSURED`.
pub fn state_name(f: &FlowMsg) -> String {
    match f.tcp_state {
        Some(TcpState::Close) => "CLOSE".to_owned(),
        Some(t) => t.name().to_ascii_uppercase(),
        None if f.packets_reply == 0 => "UNREPLIED".to_owned(),
        None => "ASSURED".to_owned(),
    }
}

/// An address prefix: family, bytes (IPv4 in the first 4), length in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prefix {
    v6: bool,
    addr: [u8; 16],
    len: u8,
}

impl Prefix {
    fn contains(&self, a: &[u8; 16]) -> bool {
        let full = usize::from(self.len / 8);
        if a[..full] != self.addr[..full] {
            return false;
        }
        let rest = self.len % 8;
        rest == 0 || (a[full] ^ self.addr[full]) >> (8 - rest) == 0
    }
}

fn bytes_of(a: IpAddr) -> ([u8; 16], bool) {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            b[..4].copy_from_slice(&v4.octets());
            (b, false)
        }
        IpAddr::V6(v6) => (v6.octets(), true),
    }
}

/// A dump or flush filter, checked: every criterion given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Select {
    zone: Option<u16>,
    link: Option<u32>,
    prefix: Option<Prefix>,
    l4_port: Option<u16>,
    proto: Option<u8>,
    tcp_state: Option<TcpState>,
    min_packets: Option<u64>,
}

impl Select {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Checks a request's filter.
    ///
    /// # Errors
    /// A prefix length without an address or longer than the address.
    pub fn new(f: &FlowFilter) -> Result<Self, String> {
        let prefix = match (f.addr, f.prefix_len) {
            (None, None) => None,
            (None, Some(_)) => return Err("a prefix length needs an address".to_owned()),
            (Some(a), len) => {
                let (addr, v6) = bytes_of(a);
                let max = if v6 { 128 } else { 32 };
                let len = len.unwrap_or(max);
                if len > max {
                    return Err(format!(
                        "prefix length {len} is longer than {a}'s {max} bits"
                    ));
                }
                let mut addr = addr;
                mask(&mut addr, len);
                Some(Prefix { v6, addr, len })
            }
        };
        Ok(Self {
            zone: f.zone,
            link: f.link,
            prefix,
            l4_port: f.l4_port,
            proto: f.proto,
            tcp_state: f.tcp_state,
            min_packets: f.min_packets,
        })
    }

    /// Whether flow `f` is selected (`links` names its ports).
    pub fn matches(&self, f: &FlowSnapshot, links: &PortLinks) -> bool {
        let k = &f.key;
        self.zone.is_none_or(|z| k.zone() == z)
            && self.proto.is_none_or(|p| k.proto() == p)
            && self
                .min_packets
                .is_none_or(|n| f.packets[0] + f.packets[1] >= n)
            && self
                .l4_port
                .is_none_or(|p| has_ports(k.proto()) && (k.port_a() == p || k.port_b() == p))
            && self.tcp_state.is_none_or(|s| {
                k.proto() == 6 && tcp_state(f.state).is_some_and(|t| t.raw() == s.raw())
            })
            && self.link.is_none_or(|l| {
                links.ifindex(f.ingress[0]) == Some(l) || links.ifindex(f.ingress[1]) == Some(l)
            })
            && self.prefix.is_none_or(|p| {
                k.is_v6() == p.v6 && (p.contains(&k.addr_a()) || p.contains(&k.addr_b()))
            })
    }

    /// The worker's flush for this filter: everything, a zone, a link (either direction) or
    /// a prefix (either side): one criterion, as the workers' flush takes.
    ///
    /// # Errors
    /// Several criteria, or one the flush cannot take, or a link no worker port is.
    pub fn flush(&self, links: &PortLinks) -> Result<Flush, String> {
        let given = [
            self.zone.is_some(),
            self.link.is_some(),
            self.prefix.is_some(),
            self.l4_port.is_some(),
            self.proto.is_some(),
            self.tcp_state.is_some(),
            self.min_packets.is_some(),
        ];
        let refuse = || {
            "flow flush takes no filter (everything) or one of zone, link, address/prefix"
                .to_owned()
        };
        match given.iter().filter(|&&g| g).count() {
            0 => return Ok(Flush::All),
            1 => {}
            _ => return Err(refuse()),
        }
        if let Some(z) = self.zone {
            return Ok(Flush::Zone(z));
        }
        if let Some(l) = self.link {
            return links
                .port_of(l)
                .map(Flush::Port)
                .ok_or_else(|| format!("no port of the datapath is link {l}"));
        }
        if let Some(p) = self.prefix {
            return Ok(Flush::Prefix {
                addr: p.addr,
                len: p.len,
                v6: p.v6,
            });
        }
        Err(refuse())
    }
}

fn mask(a: &mut [u8; 16], len: u8) {
    for (i, b) in a.iter_mut().enumerate() {
        let bits = (i as u32 * 8).min(u32::from(len));
        let keep = (u32::from(len) - bits).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
}

/// The key a `flow del` or one-flow `GETFLOW` names.
///
/// # Errors
/// Source and destination of different families.
pub fn tuple_key(t: &FlowTuple) -> Result<FlowKey, String> {
    let (s, v6s) = bytes_of(t.src);
    let (d, v6d) = bytes_of(t.dst);
    if v6s != v6d {
        return Err(format!("{} and {} are not of one family", t.src, t.dst));
    }
    let (k, _) = FlowKey::new(
        &s,
        &d,
        t.sport.unwrap_or(0),
        t.dport.unwrap_or(0),
        t.proto,
        v6s,
        [0, 0],
        t.zone.unwrap_or(0),
    );
    Ok(k)
}

/// Counts the dumps holding a cursor (shown in the status; a test sees it return to 0 after
/// a client leaves mid-dump).
#[derive(Debug, Clone, Default)]
pub struct Cursors(Arc<AtomicUsize>);

impl Cursors {
    /// Dumps holding a cursor now.
    pub fn live(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A `GETFLOW` dump: its cursor (worker, slot), its filter, its limit.
#[derive(Debug)]
pub struct FlowDump {
    readers: Vec<(u32, FlowReader, Clock)>,
    links: PortLinks,
    select: Select,
    limit: Option<u64>,
    /// Where the next part starts: an index into `readers` and a slot of that worker.
    at: (usize, u32),
    busy_tries: u8,
    sent: u64,
    /// Busy slots skipped after [`BUSY_RETRIES`] parts.
    pub skipped_busy: u64,
    live: Option<Cursors>,
}

impl FlowDump {
    /// A dump of the flows of `readers` (worker index, its reader, its clock) that `select`
    /// takes, at most `limit` of them.
    pub fn new(
        readers: Vec<(u32, FlowReader, Clock)>,
        links: PortLinks,
        select: Select,
        limit: Option<u64>,
        cursors: &Cursors,
    ) -> Self {
        cursors.0.fetch_add(1, Ordering::Relaxed);
        Self {
            readers,
            links,
            select,
            limit,
            at: (0, 0),
            busy_tries: 0,
            sent: 0,
            skipped_busy: 0,
            live: Some(cursors.clone()),
        }
    }

    /// Records sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

impl Dump for FlowDump {
    fn dump(&mut self, part: &mut Part<'_>) -> Step {
        let mut budget = SCAN_BUDGET;
        while let Some((worker, r, clock)) = self.readers.get(self.at.0) {
            let cap = r.capacity();
            while self.at.1 < cap {
                if self.limit.is_some_and(|l| self.sent >= l) {
                    return Step::Finished(0);
                }
                if budget == 0 {
                    return Step::More;
                }
                budget -= 1;
                match r.read(self.at.1) {
                    Ok(f) => {
                        if self.select.matches(&f, &self.links) {
                            let m = flow_msg(&f, *worker, &self.links, *clock);
                            if part.push(kind::NEWFLOW, &m).is_err() {
                                return Step::More;
                            }
                            self.sent += 1;
                        }
                    }
                    Err(ReadError::Busy) if self.busy_tries < BUSY_RETRIES => {
                        // The worker kept rewriting it: try again in the next part.
                        self.busy_tries += 1;
                        return Step::More;
                    }
                    Err(ReadError::Busy) => self.skipped_busy += 1,
                    Err(ReadError::Free | ReadError::OutOfRange) => {}
                }
                self.busy_tries = 0;
                self.at.1 += 1;
            }
            self.at = (self.at.0 + 1, 0);
        }
        Step::Finished(0)
    }

    fn done(&mut self) {
        if let Some(c) = self.live.take() {
            c.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for FlowDump {
    fn drop(&mut self) {
        self.done();
    }
}

/// The one flow `key` names, searched in every worker's table (a scan of each slab).
pub fn find(
    readers: &[(u32, FlowReader, Clock)],
    key: &FlowKey,
    links: &PortLinks,
) -> Option<FlowMsg> {
    readers.iter().find_map(|(w, r, clock)| {
        (0..r.capacity()).find_map(|slot| {
            let f = r.read(slot).ok()?;
            f.key
                .same_tuple(key)
                .then(|| flow_msg(&f, *w, links, *clock))
        })
    })
}

#[cfg(test)]
#[path = "dump_tests.rs"]
mod tests;
