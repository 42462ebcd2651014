//! A small IPFIX (RFC 7011) encoder: the message header, one template set with isopath's two
//! flow templates, and data sets of biflow records (RFC 5103), packed into messages that fit
//! one UDP datagram.
//!
//! # Why here
//! No maintained IPFIX encoder crate exists (the crates found parse). The encoder is pure
//! wire format like the rest of this crate (fixed buffers, big-endian fields, no I/O, no
//! allocation per record) and this crate builds in seconds (libc and thiserror only), so its
//! golden-byte tests run without the datapath or the daemon. The exporter (sockets, timers,
//! per-flow delta state) lives in `isopath-control`'s `ipfix` module.
//!
//! # Design
//! - One [`Encoder`] per observation domain. Its sequence number is what RFC 7011 §3.1 asks:
//!   the count, modulo 2^32, of data records sent from the domain before this message
//!   (template records do not count).
//! - Two templates, [`TEMPLATE_V4`] and [`TEMPLATE_V6`], with the same elements but the
//!   addresses ([`V4_FIELDS`], [`V6_FIELDS`]); every record is a biflow: the forward
//!   direction is the flow's initiator, the reverse counters are RFC 5103 reverse elements
//!   (enterprise bit set, PEN [`REVERSE_PEN`] 29305), which nfdump decodes as "out" counters.
//! - [`Encoder::push`] refuses a record that would make the message longer than the limit
//!   given at construction ([`Full`]): the caller sends the message ([`Encoder::finish`]) and
//!   pushes again. Records of both families may share a message (one data set each run).
//!
//! # Limitations
//! - Every field is sent at its full size (no reduced-size encoding) and `tcpControlBits` is
//!   the 2-byte type of RFC 7125 carrying the eight classic flags.
//! - The reverse direction has octets and packets only. RFC 5103 would also allow reverse
//!   `tcpControlBits` and `ingressInterface`, but nfdump 1.7.1 (checked here with nfcapd
//!   and `nfdump -o json`) decodes those two as the forward elements, overwriting the
//!   initiator's flags and port with the responder's.
//! - No options templates (no exporting-process statistics records) and no template
//!   withdrawal: over UDP a collector forgets templates on its own timeout (RFC 7011 §8.4).

use std::net::IpAddr;

pub use crate::error::Full;

/// The protocol version in every message header.
pub const VERSION: u16 = 10;
/// Bytes of the message header.
pub const HEADER_LEN: usize = 16;
/// Bytes of a set header.
pub const SET_HEADER_LEN: usize = 4;
/// Set id of a template set.
pub const TEMPLATE_SET: u16 = 2;
/// Template (and data set) id of IPv4 flows.
pub const TEMPLATE_V4: u16 = 256;
/// Template (and data set) id of IPv6 flows.
pub const TEMPLATE_V6: u16 = 257;
/// RFC 5103's private enterprise number for reverse information elements.
pub const REVERSE_PEN: u32 = 29305;
/// The largest message this crate's users send: fits one UDP datagram on a 1500-byte path
/// with room for IPv6 and tunnel headers.
pub const MAX_MESSAGE: usize = 1400;

/// One template field: information element id, length, enterprise number for reverse
/// elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Information element id (without the enterprise bit).
    pub id: u16,
    /// Length on the wire.
    pub len: u16,
    /// Whether it is the RFC 5103 reverse element (PEN 29305).
    pub reverse: bool,
}

const fn f(id: u16, len: u16) -> Field {
    Field {
        id,
        len,
        reverse: false,
    }
}

const fn r(id: u16, len: u16) -> Field {
    Field {
        id,
        len,
        reverse: true,
    }
}

/// Fields after the addresses, common to both templates.
const COMMON: [Field; 13] = [
    f(4, 1),   // protocolIdentifier
    f(7, 2),   // sourceTransportPort
    f(11, 2),  // destinationTransportPort
    f(1, 8),   // octetDeltaCount (L3 octets, initiator -> responder)
    f(2, 8),   // packetDeltaCount
    f(152, 8), // flowStartMilliseconds
    f(153, 8), // flowEndMilliseconds
    f(6, 2),   // tcpControlBits
    f(10, 4),  // ingressInterface (the initiator's packets' port, kernel ifindex)
    f(58, 2),  // vlanId (outer tag; 0 untagged)
    f(136, 1), // flowEndReason
    r(1, 8),   // reverse octetDeltaCount
    r(2, 8),   // reverse packetDeltaCount
];

const fn fields<const N: usize>(src: u16, dst: u16, alen: u16) -> [Field; N] {
    let mut out = [f(0, 0); N];
    out[0] = f(src, alen);
    out[1] = f(dst, alen);
    let mut i = 0;
    while i < COMMON.len() {
        out[2 + i] = COMMON[i];
        i += 1;
    }
    out
}

/// The IPv4 template: sourceIPv4Address 8, destinationIPv4Address 12, then the common fields.
pub const V4_FIELDS: [Field; 15] = fields(8, 12, 4);
/// The IPv6 template: sourceIPv6Address 27, destinationIPv6Address 28, then the common fields.
pub const V6_FIELDS: [Field; 15] = fields(27, 28, 16);

const fn record_len(fields: &[Field]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < fields.len() {
        n += fields[i].len as usize;
        i += 1;
    }
    n
}

const fn template_len(fields: &[Field]) -> usize {
    let mut n = 4;
    let mut i = 0;
    while i < fields.len() {
        n += if fields[i].reverse { 8 } else { 4 };
        i += 1;
    }
    n
}

/// Bytes of one IPv4 data record.
pub const V4_RECORD_LEN: usize = record_len(&V4_FIELDS);
/// Bytes of one IPv6 data record.
pub const V6_RECORD_LEN: usize = record_len(&V6_FIELDS);
/// Bytes of the template set carrying both templates.
pub const TEMPLATE_SET_LEN: usize =
    SET_HEADER_LEN + template_len(&V4_FIELDS) + template_len(&V6_FIELDS);

const _: () = assert!(V4_RECORD_LEN == 70 && V6_RECORD_LEN == 94 && TEMPLATE_SET_LEN == 148);

/// IPFIX `flowEndReason` values (RFC 7011 §... / IANA IE 136).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EndReason {
    /// Idle timeout.
    Idle = 1,
    /// Active timeout: the flow goes on (an interim record).
    Active = 2,
    /// End of flow detected (e.g. a new connection reused the 5-tuple).
    EndDetected = 3,
    /// Forced end (a flush).
    Forced = 4,
    /// Lack of resources (evicted to make room).
    LackOfResources = 5,
}

/// One biflow record: the forward direction is the initiator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// The initiator's address; both addresses are of one family.
    pub src: IpAddr,
    /// The responder's address.
    pub dst: IpAddr,
    /// IP protocol.
    pub proto: u8,
    /// The initiator's port (0 for protocols without ports).
    pub sport: u16,
    /// The responder's port.
    pub dport: u16,
    /// L3 octets from the initiator since the previous record of this flow.
    pub octets: u64,
    /// Packets from the initiator since the previous record.
    pub packets: u64,
    /// L3 octets from the responder since the previous record.
    pub rev_octets: u64,
    /// Packets from the responder since the previous record.
    pub rev_packets: u64,
    /// The flow's first packet, ms since the Unix epoch.
    pub start_ms: u64,
    /// Its last packet so far, ms since the Unix epoch.
    pub end_ms: u64,
    /// TCP flags the initiator sent (0 for other protocols).
    pub tcp_flags: u8,
    /// Kernel ifindex of the port the initiator's packets came in by (0: unknown).
    pub ingress: u32,
    /// Outer VLAN id (0: untagged).
    pub vlan: u16,
    /// Why this record was sent.
    pub end_reason: EndReason,
}

/// Addresses of two families in one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("source and destination addresses are of different families")]
pub struct MixedFamilies;

/// Why [`Encoder::push`] refused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The message has no room for it: finish the message, then push again.
    #[error(transparent)]
    Full(#[from] Full),
    /// The record cannot be encoded (it never will be).
    #[error(transparent)]
    Mixed(#[from] MixedFamilies),
}

/// Builds IPFIX messages of one observation domain.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    max: usize,
    buf: Vec<u8>,
    /// The open data set: its id and the offset of its header.
    set: Option<(u16, usize)>,
    /// Data records in the message being built.
    records: u32,
    /// Data records sent before the message being built (mod 2^32).
    seq: u32,
}

impl Encoder {
    /// An encoder for observation domain `domain` whose messages are at most `max` bytes
    /// (clamped to `HEADER_LEN + TEMPLATE_SET_LEN ..= 65535`, so the templates always fit an
    /// empty message).
    pub fn new(domain: u32, max: usize) -> Self {
        let max = max.clamp(HEADER_LEN + TEMPLATE_SET_LEN, usize::from(u16::MAX));
        let mut buf = Vec::with_capacity(max);
        buf.resize(HEADER_LEN, 0);
        Self {
            domain,
            max,
            buf,
            set: None,
            records: 0,
            seq: 0,
        }
    }

    /// Data records sent before the message being built: the next header's sequence number.
    pub fn sequence(&self) -> u32 {
        self.seq
    }

    /// Data records in the message being built.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Whether the message being built holds no set.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_LEN
    }

    /// Adds the template set (both templates) to the message.
    ///
    /// # Errors
    /// [`Full`] when the message has no room: finish it, then add again (an empty message
    /// always has room).
    pub fn push_templates(&mut self) -> Result<(), Full> {
        if self.buf.len() + TEMPLATE_SET_LEN > self.max {
            return Err(Full);
        }
        self.close_set();
        let b = &mut self.buf;
        b.extend_from_slice(&TEMPLATE_SET.to_be_bytes());
        b.extend_from_slice(&(TEMPLATE_SET_LEN as u16).to_be_bytes());
        for (id, fields) in [(TEMPLATE_V4, &V4_FIELDS), (TEMPLATE_V6, &V6_FIELDS)] {
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&(fields.len() as u16).to_be_bytes());
            for x in fields {
                let id = if x.reverse { x.id | 0x8000 } else { x.id };
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&x.len.to_be_bytes());
                if x.reverse {
                    b.extend_from_slice(&REVERSE_PEN.to_be_bytes());
                }
            }
        }
        Ok(())
    }

    /// Adds a data record (opening a data set of its family if the last set is another).
    ///
    /// # Errors
    /// [`PushError::Full`] when the message has no room: finish it, then push again;
    /// [`PushError::Mixed`] for addresses of two families.
    pub fn push(&mut self, rec: &FlowRecord) -> Result<(), PushError> {
        let (id, len) = match (rec.src, rec.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (TEMPLATE_V4, V4_RECORD_LEN),
            (IpAddr::V6(_), IpAddr::V6(_)) => (TEMPLATE_V6, V6_RECORD_LEN),
            _ => return Err(MixedFamilies.into()),
        };
        let open = matches!(self.set, Some((s, _)) if s == id);
        let need = len + if open { 0 } else { SET_HEADER_LEN };
        if self.buf.len() + need > self.max {
            return Err(Full.into());
        }
        if !open {
            self.close_set();
            self.set = Some((id, self.buf.len()));
            self.buf.extend_from_slice(&id.to_be_bytes());
            self.buf.extend_from_slice(&[0, 0]);
        }
        let b = &mut self.buf;
        match (rec.src, rec.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                b.extend_from_slice(&s.octets());
                b.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                b.extend_from_slice(&s.octets());
                b.extend_from_slice(&d.octets());
            }
            _ => unreachable!("families checked above"),
        }
        b.push(rec.proto);
        b.extend_from_slice(&rec.sport.to_be_bytes());
        b.extend_from_slice(&rec.dport.to_be_bytes());
        b.extend_from_slice(&rec.octets.to_be_bytes());
        b.extend_from_slice(&rec.packets.to_be_bytes());
        b.extend_from_slice(&rec.start_ms.to_be_bytes());
        b.extend_from_slice(&rec.end_ms.to_be_bytes());
        b.extend_from_slice(&u16::from(rec.tcp_flags).to_be_bytes());
        b.extend_from_slice(&rec.ingress.to_be_bytes());
        b.extend_from_slice(&rec.vlan.to_be_bytes());
        b.push(rec.end_reason as u8);
        b.extend_from_slice(&rec.rev_octets.to_be_bytes());
        b.extend_from_slice(&rec.rev_packets.to_be_bytes());
        self.records += 1;
        Ok(())
    }

    /// Writes the header (export time `export_s`, seconds since the Unix epoch) and returns
    /// the message; the next message starts empty and its sequence number counts this one's
    /// records. `None` when the message holds nothing.
    pub fn finish(&mut self, export_s: u32) -> Option<Message<'_>> {
        if self.is_empty() {
            return None;
        }
        self.close_set();
        let len = self.buf.len() as u16;
        let seq = self.seq;
        let h = &mut self.buf[..HEADER_LEN];
        h[0..2].copy_from_slice(&VERSION.to_be_bytes());
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h[4..8].copy_from_slice(&export_s.to_be_bytes());
        h[8..12].copy_from_slice(&seq.to_be_bytes());
        h[12..16].copy_from_slice(&self.domain.to_be_bytes());
        let records = std::mem::take(&mut self.records);
        self.seq = seq.wrapping_add(records);
        Some(Message { enc: self, records })
    }

    /// Writes the open data set's length.
    fn close_set(&mut self) {
        if let Some((_, at)) = self.set.take() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }
}

/// A finished message; dropping it empties the encoder for the next one.
#[derive(Debug)]
pub struct Message<'a> {
    enc: &'a mut Encoder,
    records: u32,
}

impl Message<'_> {
    /// The message's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.enc.buf
    }

    /// Data records it carries.
    pub fn records(&self) -> u32 {
        self.records
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        self.enc.buf.truncate(HEADER_LEN);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4() -> FlowRecord {
        FlowRecord {
            src: Ipv4Addr::new(198, 18, 0, 1).into(),
            dst: Ipv4Addr::new(198, 19, 0, 2).into(),
            proto: 6,
            sport: 40000,
            dport: 5201,
            octets: 0x0102_0304,
            packets: 0x1234,
            rev_octets: 0x0506,
            rev_packets: 7,
            start_ms: 0x0000_0192_0000_0001,
            end_ms: 0x0000_0192_0000_0202,
            tcp_flags: 0x1b,
            ingress: 9,
            vlan: 100,
            end_reason: EndReason::Idle,
        }
    }

    fn v6() -> FlowRecord {
        FlowRecord {
            src: "2001:2::1".parse::<Ipv6Addr>().unwrap().into(),
            dst: "2001:2:0:1::2".parse::<Ipv6Addr>().unwrap().into(),
            proto: 17,
            sport: 1000,
            dport: 53,
            octets: 1,
            packets: 2,
            rev_octets: 3,
            rev_packets: 4,
            start_ms: 5,
            end_ms: 6,
            tcp_flags: 0,
            ingress: 0x0a0b_0c0d,
            vlan: 0,
            end_reason: EndReason::Active,
        }
    }

    /// Hand-written: RFC 7011 §3.4.1 template record layout, field by field.
    const TEMPLATE_SET_BYTES: [u8; TEMPLATE_SET_LEN] = [
        0x00, 0x02, 0x00, 0x94, // set id 2, length 148
        0x01, 0x00, 0x00, 0x0f, // template 256, 15 fields
        0x00, 0x08, 0x00, 0x04, // sourceIPv4Address, 4
        0x00, 0x0c, 0x00, 0x04, // destinationIPv4Address, 4
        0x00, 0x04, 0x00, 0x01, // protocolIdentifier, 1
        0x00, 0x07, 0x00, 0x02, // sourceTransportPort, 2
        0x00, 0x0b, 0x00, 0x02, // destinationTransportPort, 2
        0x00, 0x01, 0x00, 0x08, // octetDeltaCount, 8
        0x00, 0x02, 0x00, 0x08, // packetDeltaCount, 8
        0x00, 0x98, 0x00, 0x08, // flowStartMilliseconds, 8
        0x00, 0x99, 0x00, 0x08, // flowEndMilliseconds, 8
        0x00, 0x06, 0x00, 0x02, // tcpControlBits, 2
        0x00, 0x0a, 0x00, 0x04, // ingressInterface, 4
        0x00, 0x3a, 0x00, 0x02, // vlanId, 2
        0x00, 0x88, 0x00, 0x01, // flowEndReason, 1
        0x80, 0x01, 0x00, 0x08, 0x00, 0x00, 0x72, 0x79, // reverse octetDeltaCount, PEN 29305
        0x80, 0x02, 0x00, 0x08, 0x00, 0x00, 0x72, 0x79, // reverse packetDeltaCount
        0x01, 0x01, 0x00, 0x0f, // template 257, 15 fields
        0x00, 0x1b, 0x00, 0x10, // sourceIPv6Address, 16
        0x00, 0x1c, 0x00, 0x10, // destinationIPv6Address, 16
        0x00, 0x04, 0x00, 0x01, //
        0x00, 0x07, 0x00, 0x02, //
        0x00, 0x0b, 0x00, 0x02, //
        0x00, 0x01, 0x00, 0x08, //
        0x00, 0x02, 0x00, 0x08, //
        0x00, 0x98, 0x00, 0x08, //
        0x00, 0x99, 0x00, 0x08, //
        0x00, 0x06, 0x00, 0x02, //
        0x00, 0x0a, 0x00, 0x04, //
        0x00, 0x3a, 0x00, 0x02, //
        0x00, 0x88, 0x00, 0x01, //
        0x80, 0x01, 0x00, 0x08, 0x00, 0x00, 0x72, 0x79, //
        0x80, 0x02, 0x00, 0x08, 0x00, 0x00, 0x72, 0x79, //
    ];

    #[test]
    fn template_set_golden() {
        let mut e = Encoder::new(7, MAX_MESSAGE);
        e.push_templates().unwrap();
        let m = e.finish(0x6000_0001).unwrap();
        let b = m.bytes();
        assert_eq!(
            b[..HEADER_LEN],
            [
                0x00, 0x0a, 0x00, 0xa4, // version 10, length 16 + 148 = 164
                0x60, 0x00, 0x00, 0x01, // export time
                0x00, 0x00, 0x00, 0x00, // sequence: no data records before
                0x00, 0x00, 0x00, 0x07, // observation domain 7
            ]
        );
        assert_eq!(b[HEADER_LEN..], TEMPLATE_SET_BYTES);
        assert_eq!(m.records(), 0);
        drop(m);
        assert_eq!(e.sequence(), 0, "template records do not count");
        assert!(e.is_empty());
    }

    #[test]
    fn v4_record_golden() {
        let mut e = Encoder::new(1, MAX_MESSAGE);
        e.push(&v4()).unwrap();
        let m = e.finish(2).unwrap();
        let want: [u8; HEADER_LEN + 4 + 70] = [
            0x00, 0x0a, 0x00, 0x5a, // version, length 90
            0x00, 0x00, 0x00, 0x02, // export time
            0x00, 0x00, 0x00, 0x00, // sequence
            0x00, 0x00, 0x00, 0x01, // domain
            0x01, 0x00, 0x00, 0x4a, // set 256, length 74
            198, 18, 0, 1, // src
            198, 19, 0, 2, // dst
            6, // proto
            0x9c, 0x40, // sport 40000
            0x14, 0x51, // dport 5201
            0, 0, 0, 0, 0x01, 0x02, 0x03, 0x04, // octets
            0, 0, 0, 0, 0, 0, 0x12, 0x34, // packets
            0, 0, 0x01, 0x92, 0, 0, 0, 0x01, // start ms
            0, 0, 0x01, 0x92, 0, 0, 0x02, 0x02, // end ms
            0x00, 0x1b, // tcp flags
            0, 0, 0, 9, // ingress
            0x00, 0x64, // vlan 100
            1,    // end reason idle
            0, 0, 0, 0, 0, 0, 0x05, 0x06, // reverse octets
            0, 0, 0, 0, 0, 0, 0, 7, // reverse packets
        ];
        assert_eq!(m.bytes(), want);
        assert_eq!(m.records(), 1);
        drop(m);
        assert_eq!(e.sequence(), 1);
    }

    #[test]
    fn v6_record_golden() {
        let mut e = Encoder::new(0x0102_0304, MAX_MESSAGE);
        e.push(&v6()).unwrap();
        let m = e.finish(0xffff_ffff).unwrap();
        let want: [u8; HEADER_LEN + 4 + 94] = [
            0x00, 0x0a, 0x00, 0x72, // version, length 114
            0xff, 0xff, 0xff, 0xff, // export time
            0x00, 0x00, 0x00, 0x00, // sequence
            0x01, 0x02, 0x03, 0x04, // domain
            0x01, 0x01, 0x00, 0x62, // set 257, length 98
            0x20, 0x01, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // src 2001:2::1
            0x20, 0x01, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2,  // dst 2001:2:0:1::2
            17, // proto
            0x03, 0xe8, // sport 1000
            0x00, 0x35, // dport 53
            0, 0, 0, 0, 0, 0, 0, 1, // octets
            0, 0, 0, 0, 0, 0, 0, 2, // packets
            0, 0, 0, 0, 0, 0, 0, 5, // start
            0, 0, 0, 0, 0, 0, 0, 6, // end
            0, 0, // tcp flags
            0x0a, 0x0b, 0x0c, 0x0d, // ingress
            0, 0, // vlan
            2, // active timeout
            0, 0, 0, 0, 0, 0, 0, 3, // reverse octets
            0, 0, 0, 0, 0, 0, 0, 4, // reverse packets
        ];
        assert_eq!(m.bytes(), want);
    }

    /// Parses a message's set headers: (id, length) of each, checking they tile the message.
    fn sets(b: &[u8]) -> Vec<(u16, usize)> {
        assert_eq!(u16::from_be_bytes([b[0], b[1]]), 10);
        assert_eq!(usize::from(u16::from_be_bytes([b[2], b[3]])), b.len());
        let mut out = Vec::new();
        let mut at = HEADER_LEN;
        while at < b.len() {
            let id = u16::from_be_bytes([b[at], b[at + 1]]);
            let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
            assert!(len >= SET_HEADER_LEN && at + len <= b.len());
            out.push((id, len));
            at += len;
        }
        assert_eq!(at, b.len());
        out
    }

    fn seq_of(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }

    #[test]
    fn mixed_families_share_a_message_in_runs() {
        let mut e = Encoder::new(0, MAX_MESSAGE);
        e.push_templates().unwrap();
        for r in [v4(), v4(), v6(), v4()] {
            e.push(&r).unwrap();
        }
        let m = e.finish(0).unwrap();
        assert_eq!(
            sets(m.bytes()),
            [
                (2, TEMPLATE_SET_LEN),
                (256, 4 + 2 * 70),
                (257, 4 + 94),
                (256, 4 + 70)
            ]
        );
        assert_eq!(m.bytes().len(), 16 + 148 + 144 + 98 + 74);
        let mut bad = v4();
        bad.dst = Ipv6Addr::LOCALHOST.into();
        drop(m);
        assert_eq!(e.push(&bad), Err(PushError::Mixed(MixedFamilies)));
        assert!(e.is_empty());
    }

    /// Packs as many records as fit 1400 bytes, never more; the sequence number of each
    /// message counts the data records of the ones before.
    #[test]
    fn packing_bounds_and_sequence() {
        let mut e = Encoder::new(3, MAX_MESSAGE);
        let mut sent = Vec::new();
        let mut pushed = 0u32;
        e.push_templates().unwrap();
        for i in 0..100 {
            let r = if i % 10 == 9 { v6() } else { v4() };
            loop {
                match e.push(&r) {
                    Ok(()) => break,
                    Err(PushError::Full(Full)) => {
                        let m = e.finish(0).unwrap();
                        sent.push((m.bytes().to_vec(), m.records()));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            pushed += 1;
        }
        let m = e.finish(0).unwrap();
        sent.push((m.bytes().to_vec(), m.records()));
        drop(m);
        assert!(e.finish(0).is_none());
        let mut before = 0u32;
        for (i, (b, n)) in sent.iter().enumerate() {
            assert!(b.len() <= MAX_MESSAGE, "message {i}: {} bytes", b.len());
            assert_eq!(seq_of(b), before, "message {i}");
            // Full: one more v4 record (the smaller, in a new set at worst) would not fit,
            // except in the last message.
            if i + 1 < sent.len() {
                assert!(
                    b.len() + V6_RECORD_LEN + SET_HEADER_LEN > MAX_MESSAGE,
                    "message {i} not packed"
                );
            }
            let data: usize = sets(b)
                .iter()
                .filter(|s| s.0 >= 256)
                .map(|s| s.1 - SET_HEADER_LEN)
                .sum();
            let v6n = data % 70 / 24; // 94 = 70 + 24: count v6 records by the remainder
            assert_eq!(data, (*n as usize - v6n) * 70 + v6n * 94, "message {i}");
            before += n;
        }
        assert_eq!(before, pushed);
        assert_eq!(e.sequence(), 100);
        // The first message: header and templates (164), nine v4 records, the v6 one, then
        // seven more v4 records in a third set: 1390 bytes; an eighth would make 1460.
        assert_eq!(sent[0].1, 17);
        assert_eq!(sent[0].0.len(), 16 + 148 + 4 + 9 * 70 + 4 + 94 + 4 + 7 * 70);
        assert_eq!(sent[0].0.len(), 1390);
    }

    #[test]
    fn sequence_wraps_and_limits_clamp() {
        let mut e = Encoder::new(0, 10);
        e.seq = u32::MAX;
        e.push_templates().unwrap();
        // Clamped to header + templates: no record fits beside them.
        assert_eq!(e.push(&v4()), Err(PushError::Full(Full)));
        drop(e.finish(0));
        e.push(&v4()).unwrap();
        e.push(&v4()).unwrap();
        // 16 + 4 + 3 * 70 = 230 > 164.
        assert_eq!(e.push(&v4()), Err(PushError::Full(Full)));
        let m = e.finish(0).unwrap();
        assert_eq!(m.bytes().len(), 160);
        assert_eq!(seq_of(m.bytes()), u32::MAX);
        drop(m);
        assert_eq!(e.sequence(), 1);
        let e = Encoder::new(0, 1 << 20);
        assert_eq!(e.max, 65535);
    }
}
