//! The table's plain types: the packet a frame brings, the burst of them, what to flush, the
//! counters.

use super::{
    key::{Dir, FlowKey, Skip},
    record::{REPLIED, Record},
};
use crate::{params::MAX_BURST, stats::Counter, worker::classify::Verdict};

/// A flow table's counters: one writer (the worker), read by control.
#[derive(Debug, Default)]
pub struct FlowCounters {
    /// Flows in the table (a gauge).
    pub in_use: Counter,
    /// Slots in the table.
    pub capacity: Counter,
    /// Packets counted into a flow.
    pub packets: Counter,
    /// Flows inserted.
    pub inserts: Counter,
    /// Flows expired (idle past their timeout).
    pub expiries: Counter,
    /// Packets not tracked because the table was full (`flow_table_full`).
    pub full: Counter,
    /// Flows evicted to make room (never a live established one).
    pub evictions: Counter,
    /// Flows removed by flushes.
    pub flushed: Counter,
    /// Flows ended by a new connection on their 5-tuple.
    pub reopened: Counter,
    /// Events pushed to the ring.
    pub events: Counter,
    /// Events lost because the ring was full.
    pub events_dropped: Counter,
    /// Frames not tracked, by reason ([`Skip`]).
    pub skipped: [Counter; Skip::COUNT],
}

/// What one packet brings to its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowPacket {
    /// The normalised key.
    pub key: FlowKey,
    /// Which way the packet goes.
    pub dir: Dir,
    /// L3 bytes (IP total length).
    pub l3_len: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// The port it came in on.
    pub port: u8,
}

impl FlowPacket {
    /// The packet of a frame the classify pass judged.
    ///
    /// # Errors
    /// Why the frame is not tracked.
    #[inline(always)]
    pub fn from_frame(frame: &[u8], v: &Verdict, port: u8, zone: u16) -> Result<Self, Skip> {
        let (key, dir) = FlowKey::from_frame(frame, v, zone)?;
        Ok(Self {
            key,
            dir,
            l3_len: v.hdr.l3_len,
            tcp_flags: v.hdr.tcp_flags,
            port,
        })
    }
}

/// A burst's packets for [`FlowTable::track_burst`], allocated once per worker.
#[derive(Debug)]
pub struct FlowBurst {
    p: Box<[FlowPacket]>,
    n: usize,
    pub(crate) skipped: [u32; Skip::COUNT],
}

impl Default for FlowBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowBurst {
    /// Room for [`MAX_BURST`] packets.
    pub fn new() -> Self {
        Self {
            p: vec![FlowPacket::default(); MAX_BURST as usize].into_boxed_slice(),
            n: 0,
            skipped: [0; Skip::COUNT],
        }
    }

    /// Empties it for the next burst.
    #[inline]
    pub fn clear(&mut self) {
        self.n = 0;
        self.skipped = [0; Skip::COUNT];
    }

    /// Adds a frame (a frame that is not tracked is counted by reason, and `false`
    /// returned; beyond [`MAX_BURST`] frames are ignored).
    #[inline(always)]
    pub fn push(&mut self, frame: &[u8], v: &Verdict, port: u8, zone: u16) -> bool {
        let Some(slot) = self.p.get_mut(self.n) else {
            return self.push_beyond(frame, v, zone);
        };
        // The key goes straight into the burst's slot.
        match slot.key.build(frame, &v.hdr, zone) {
            Ok(dir) => {
                slot.dir = dir;
                slot.l3_len = v.hdr.l3_len;
                slot.tcp_flags = v.hdr.tcp_flags;
                slot.port = port;
                self.n += 1;
                true
            }
            Err(s) => {
                self.skipped[s as usize] += 1;
                false
            }
        }
    }

    /// A frame beyond [`MAX_BURST`]: counted if it is not tracked, ignored otherwise.
    #[cold]
    fn push_beyond(&mut self, frame: &[u8], v: &Verdict, zone: u16) -> bool {
        if let Err(s) = FlowKey::from_frame(frame, v, zone) {
            self.skipped[s as usize] += 1;
        }
        false
    }

    /// Adds a packet.
    #[inline]
    pub fn push_packet(&mut self, p: FlowPacket) -> bool {
        let Some(slot) = self.p.get_mut(self.n) else {
            return false;
        };
        *slot = p;
        self.n += 1;
        true
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The packets.
    pub fn packets(&self) -> &[FlowPacket] {
        &self.p[..self.n]
    }
}

/// What to flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Every flow.
    All,
    /// Flows that entered through this port in either direction.
    Port(u8),
    /// Flows with either endpoint in this prefix.
    Prefix {
        /// The address (IPv4 in the first 4 bytes).
        addr: [u8; 16],
        /// Prefix length in bits.
        len: u8,
        /// IPv6.
        v6: bool,
    },
    /// Flows of this zone.
    Zone(u16),
    /// The flow of this 5-tuple and zone, in either direction and with any VLAN tags.
    Tuple(FlowKey),
}

/// How far a flush got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushProgress {
    /// Flows removed by this call.
    pub removed: u32,
    /// Where the next call starts, `None` when the flush is done.
    pub next: Option<u32>,
}

/// Whether flow `r` is one `f` selects.
pub(crate) fn matches(f: &Flush, r: &Record, meta: u32, flags: u32) -> bool {
    match *f {
        Flush::All => true,
        Flush::Port(p) => {
            (flags >> 16) as u8 == p || (meta & REPLIED != 0 && (flags >> 24) as u8 == p)
        }
        Flush::Zone(z) => r.key().zone() == z,
        Flush::Tuple(k) => r.key().same_tuple(&k),
        Flush::Prefix { addr, len, v6 } => {
            let k = r.key();
            k.is_v6() == v6
                && (in_prefix(&k.addr_a(), &addr, len) || in_prefix(&k.addr_b(), &addr, len))
        }
    }
}

fn in_prefix(a: &[u8; 16], p: &[u8; 16], len: u8) -> bool {
    let full = usize::from(len / 8).min(16);
    if a[..full] != p[..full] {
        return false;
    }
    let rest = len % 8;
    full == 16 || rest == 0 || (a[full] ^ p[full]) >> (8 - rest) == 0
}
