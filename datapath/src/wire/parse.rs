//! The one walk of a whole frame: Ethernet, up to two VLAN tags, the L3 header (IPv4 with its
//! checksum, IPv6 with its extension headers, ARP), the L4 header. What later stages need is
//! kept in [`Headers`], so that none of them reads the headers again.

use super::{
    ArpPacket, EthernetFrame, IcmpPacket, Ipv4Packet, Ipv6ExtHeader, Ipv6FragHeader, Ipv6Packet,
    ParseError, TcpPacket, UdpPacket, VlanHeader,
    ethernet::{self, EtherType, Mac},
    ipv6, udp,
};

/// The most VLAN tags a frame may carry (QinQ: a service tag and a customer tag).
pub const MAX_VLAN_TAGS: usize = 2;
/// The most IPv6 extension headers walked before the L4 header.
pub const MAX_EXT_HEADERS: usize = 8;

/// What a frame carries, as counted per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum FrameClass {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// ARP (and RARP).
    Arp,
    /// LLDP.
    Lldp,
    /// Any other EtherType.
    #[default]
    Other,
}

impl FrameClass {
    /// Number of classes.
    pub const COUNT: usize = 5;
    /// Every class, in counter order.
    pub const ALL: [FrameClass; Self::COUNT] =
        [Self::Ipv4, Self::Ipv6, Self::Arp, Self::Lldp, Self::Other];

    /// The counter's name, as shown by status (`classes`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Arp => "arp",
            Self::Lldp => "lldp",
            Self::Other => "other",
        }
    }
}

/// Whether and where a packet is a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Fragment {
    /// A whole packet.
    #[default]
    No,
    /// The first fragment (offset 0, more to come): it carries the L4 header.
    First,
    /// A later fragment: no L4 header.
    Later,
}

/// Everything [`parse`] learnt about a frame. Offsets count from the frame's first byte. On a
/// parse error, the fields of the layers below the failing one are filled (the Ethernet
/// addresses always are, for frames of at least 14 bytes) and the others are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
// Laid out in this order so that the straight-line parse's stores are few: the fields it
// writes as constants (`l3` to `error`) are adjacent and merge into wide stores.
#[repr(C)]
pub struct Headers {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// The frame's length (saturating at 65535).
    pub len: u16,
    /// The EtherType after the tags (the TPID of a tag that could not be read).
    pub ethertype: u16,
    /// Offset of the L3 header.
    pub l3: u16,
    /// The outer tag's TPID (0x8100 802.1Q, 0x88a8 802.1ad), 0 when untagged.
    pub tpid: u16,
    /// VLAN ids, outer first; `tags` of them are valid.
    pub vlan: [u16; MAX_VLAN_TAGS],
    /// Tags read (0..=2).
    pub tags: u8,
    /// Fragmentation.
    pub frag: Fragment,
    /// Why the frame did not parse to the end, if it did not.
    pub error: Option<ParseError>,
    /// The class counted for this frame.
    pub class: FrameClass,
    /// Offset of the L4 header (IPv4: after the options; IPv6: after the extension headers);
    /// 0 when not reached.
    pub l4: u16,
    /// IPv4 total length, or 40 + IPv6 payload length (the bytes of the L3 packet, padding
    /// excluded); 0 for non-IP frames.
    pub l3_len: u16,
    /// TCP/UDP source port; ICMP/ICMPv6: the echo identifier.
    pub sport: u16,
    /// TCP/UDP destination port; ICMP/ICMPv6: type << 8 | code.
    pub dport: u16,
    /// IP protocol of the L4 header (after IPv6 extension headers).
    pub proto: u8,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
}

impl Headers {
    /// The VLAN of an 802.1Q-tagged frame carrying one tag (what the bond's VLANs are), 0
    /// otherwise (untagged, priority-tagged, QinQ).
    #[inline]
    pub fn dot1q_vid(&self) -> u16 {
        if self.tags == 1 && self.tpid == 0x8100 {
            self.vlan[0]
        } else {
            0
        }
    }

    /// Whether the frame is untagged or carries exactly one 802.1Q tag (what control reads).
    #[inline]
    pub fn untagged_or_dot1q(&self) -> bool {
        self.tags == 0 || (self.tags == 1 && self.tpid == 0x8100)
    }
}

/// Parses `frame` once, to the L4 header. Never panics; a frame that does not parse comes back
/// with [`Headers::error`] set and the layers below the fault filled.
#[inline]
pub fn parse(frame: &[u8]) -> Headers {
    let mut h = Headers::default();
    parse_into(frame, &mut h);
    h
}

/// [`parse`] into `h` (all of it overwritten): the classify pass writes each frame's headers
/// straight into its verdict, with no copy.
///
/// The common frame (untagged IPv4 without options or fragmentation, IPv6 without extension
/// headers, carrying TCP or UDP) takes a straight-line path (`wire/fast.rs`); every other
/// frame the layered walk ([`parse_layered_into`]), which gives the same answer for the
/// common frame too.
#[inline]
pub fn parse_into(frame: &[u8], h: &mut Headers) {
    if !super::fast::parse(frame, h) {
        parse_layered_into(frame, h);
    }
}

/// The layered walk alone: each layer's view checked in turn (what [`parse_into`] does for
/// frames off its straight-line path). The reference the straight-line path is held to.
#[inline]
pub fn parse_layered_into(frame: &[u8], h: &mut Headers) {
    *h = Headers {
        len: frame.len().min(usize::from(u16::MAX)) as u16,
        ..Headers::default()
    };
    if let Err(e) = walk(frame, h) {
        h.error = Some(e);
    }
}

/// [`parse_layered_into`] into a fresh [`Headers`].
pub fn parse_layered(frame: &[u8]) -> Headers {
    let mut h = Headers::default();
    parse_layered_into(frame, &mut h);
    h
}

#[inline]
fn walk(frame: &[u8], h: &mut Headers) -> Result<(), ParseError> {
    let eth = EthernetFrame::new_checked(frame)?;
    h.dst = eth.dst();
    h.src = eth.src();
    let mut et = eth.ethertype_raw();
    let mut off = ethernet::HEADER_LEN;
    h.ethertype = et;
    // Untagged IPv4 skips the tag test: the common case on the fast path.
    while et != 0x0800 && EtherType::is_tag(et) {
        if usize::from(h.tags) == MAX_VLAN_TAGS {
            return Err(ParseError::TooManyVlanTags);
        }
        let tag = VlanHeader::new_checked(&frame[off..])?;
        if h.tags == 0 {
            h.tpid = et;
        }
        h.vlan[usize::from(h.tags)] = tag.vid();
        h.tags += 1;
        et = tag.ethertype_raw();
        off += super::vlan::HEADER_LEN;
        h.ethertype = et;
    }
    h.l3 = off as u16;
    let l3 = &frame[off..];
    match et {
        0x0800 => {
            h.class = FrameClass::Ipv4;
            ipv4(l3, off, h)
        }
        0x86dd => {
            h.class = FrameClass::Ipv6;
            ipv6(l3, off, h)
        }
        0x0806 | 0x8035 => {
            h.class = FrameClass::Arp;
            ArpPacket::new_checked(l3).map(|_| ())
        }
        0x88cc => {
            h.class = FrameClass::Lldp;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[inline]
fn ipv4(l3: &[u8], off: usize, h: &mut Headers) -> Result<(), ParseError> {
    let ip = Ipv4Packet::new_checked(l3)?;
    if !ip.verify_checksum() {
        return Err(ParseError::BadIpv4Checksum);
    }
    h.l3_len = ip.total_len();
    h.proto = ip.protocol_raw();
    h.l4 = (off + ip.header_len()) as u16;
    h.frag = if ip.frag_offset() != 0 {
        Fragment::Later
    } else if ip.more_frags() {
        Fragment::First
    } else {
        Fragment::No
    };
    if h.frag == Fragment::Later {
        return Ok(());
    }
    l4(h.proto, ip.payload(), h)
}

#[inline]
fn ipv6(l3: &[u8], off: usize, h: &mut Headers) -> Result<(), ParseError> {
    let ip = Ipv6Packet::new_checked(l3)?;
    h.l3_len = (ipv6::HEADER_LEN + usize::from(ip.payload_len())) as u16;
    let payload = ip.payload();
    let mut next = ip.next_header_raw();
    let mut at = 0;
    let mut walked = 0;
    // Hop-by-hop, routing, destination options, fragment.
    while let 0 | 43 | 60 | 44 = next {
        if walked == MAX_EXT_HEADERS {
            return Err(ParseError::TooManyExtHeaders);
        }
        walked += 1;
        let rest = &payload[at..];
        if next == 44 {
            let f = Ipv6FragHeader::new_checked(rest)?;
            next = f.next_header_raw();
            at += ipv6::FRAG_HEADER_LEN;
            if f.frag_offset() != 0 {
                h.frag = Fragment::Later;
                h.proto = next;
                h.l4 = (off + ipv6::HEADER_LEN + at) as u16;
                return Ok(());
            }
            if f.more_frags() {
                h.frag = Fragment::First;
            }
        } else {
            let e = Ipv6ExtHeader::new_checked(rest)?;
            next = e.next_header_raw();
            at += e.header_len();
        }
    }
    h.proto = next;
    h.l4 = (off + ipv6::HEADER_LEN + at) as u16;
    l4(next, &payload[at..], h)
}

#[inline]
fn l4(proto: u8, data: &[u8], h: &mut Headers) -> Result<(), ParseError> {
    match proto {
        6 => {
            let t = TcpPacket::new_checked(data)?;
            h.sport = t.src_port();
            h.dport = t.dst_port();
            h.tcp_flags = t.flags();
        }
        17 => {
            // A first fragment's UDP length counts the whole datagram, beyond this fragment.
            let u = if h.frag == Fragment::First {
                if data.len() < udp::HEADER_LEN {
                    return Err(ParseError::Truncated);
                }
                UdpPacket::new_unchecked(data)
            } else {
                UdpPacket::new_checked(data)?
            };
            h.sport = u.src_port();
            h.dport = u.dst_port();
        }
        1 | 58 => {
            let i = IcmpPacket::new_checked(data)?;
            h.sport = i.echo_ident();
            h.dport = u16::from(i.msg_type()) << 8 | u16::from(i.code());
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp;

    /// 02:00:00:00:00:01 -> 02:00:00:00:00:02, 198.18.0.1:12345 -> 198.18.0.2:9 UDP, 4 bytes of
    /// payload, padded to 60 bytes.
    pub(crate) const IPV4_UDP: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, //
        0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xae, 0xa5, 198, 18, 0, 1, 198,
        18, 0, 2, //
        0x30, 0x39, 0x00, 0x09, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// 2001:2::1 -> 2001:2::2 behind an 802.1ad tag (VLAN 10) and an 802.1Q tag (VLAN 20):
    /// hop-by-hop (8 bytes), destination options (8 bytes), TCP 40000 -> 80 SYN|ACK.
    pub(crate) fn ipv6_tcp_ext_qinq() -> Vec<u8> {
        let mut f = vec![
            0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, //
            0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x86, 0xdd, //
            0x60, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x40, //
            0x20, 0x01, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
            0x20, 0x01, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
            60, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop: PadN
            6, 0, 1, 4, 0, 0, 0, 0, // destination options: PadN
        ];
        f.extend_from_slice(&[
            0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x12, 0xfa, 0xf0, 0, 0, 0, 0,
        ]);
        f
    }

    #[test]
    fn golden_ipv4_udp() {
        let h = parse(&IPV4_UDP);
        assert_eq!(h.error, None);
        assert_eq!(
            (h.class, h.ethertype, h.tags, h.l3, h.l4),
            (FrameClass::Ipv4, 0x0800, 0, 14, 34)
        );
        assert_eq!((h.l3_len, h.proto, h.sport, h.dport), (32, 17, 12345, 9));
        assert_eq!(
            (h.src, h.dst, h.len),
            ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], 60)
        );
        assert_eq!(h.frag, Fragment::No);
    }

    #[test]
    fn golden_ipv6_tcp_with_extension_headers_in_qinq() {
        let f = ipv6_tcp_ext_qinq();
        let h = parse(&f);
        assert_eq!(h.error, None);
        assert_eq!(
            (h.tags, h.tpid, h.vlan, h.dot1q_vid()),
            (2, 0x88a8, [10, 20], 0)
        );
        assert_eq!(
            (h.class, h.l3, h.l4, h.l3_len),
            (FrameClass::Ipv6, 22, 22 + 40 + 16, 76)
        );
        assert_eq!((h.proto, h.sport, h.dport), (6, 40000, 80));
        assert_eq!(h.tcp_flags, tcp::SYN | tcp::ACK);
    }

    #[test]
    fn every_malformed_variant_names_its_reason() {
        let err = |f: &[u8]| parse(f).error;
        // A runt and a tag cut short.
        assert_eq!(err(&IPV4_UDP[..13]), Some(ParseError::Truncated));
        let mut tagged = IPV4_UDP[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(err(&tagged), Some(ParseError::Truncated));
        let h = parse(&tagged);
        assert_eq!((h.ethertype, h.tags), (0x8100, 0), "the unread tag's TPID");
        // Three tags.
        let mut three = IPV4_UDP[..12].to_vec();
        three.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x08, 0]);
        three.extend_from_slice(&IPV4_UDP[14..]);
        assert_eq!(err(&three), Some(ParseError::TooManyVlanTags));
        // IPv4 faults, each with a correct checksum where the checksum is not the fault.
        let v4 = |edit: &dyn Fn(&mut [u8])| {
            let mut f = IPV4_UDP;
            edit(&mut f);
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            if ip.header_len() >= 20 {
                ip.fill_checksum();
            }
            f
        };
        assert_eq!(err(&IPV4_UDP[..33]), Some(ParseError::Truncated));
        assert_eq!(err(&v4(&|f| f[14] = 0x65)), Some(ParseError::BadIpVersion));
        assert_eq!(err(&v4(&|f| f[14] = 0x44)), Some(ParseError::BadIhl));
        assert_eq!(err(&v4(&|f| f[17] = 19)), Some(ParseError::BadTotalLength));
        assert_eq!(err(&v4(&|f| f[17] = 47)), Some(ParseError::BadTotalLength));
        let mut bad_sum = IPV4_UDP;
        bad_sum[24] ^= 0xff;
        assert_eq!(err(&bad_sum), Some(ParseError::BadIpv4Checksum));
        assert_eq!(
            err(&v4(&|f| f[39] = 7)),
            Some(ParseError::BadL4Header),
            "UDP length 7"
        );
        assert_eq!(
            err(&v4(&|f| f[39] = 13)),
            Some(ParseError::BadL4Header),
            "UDP length 13 > 12"
        );
        assert_eq!(
            err(&v4(&|f| f[17] = 27)),
            Some(ParseError::Truncated),
            "7 bytes of UDP"
        );
        // TCP with a data offset of 4, and ICMP cut to 4 bytes.
        let tcp_bad = v4(&|f| {
            f[17] = 40;
            f[23] = 6;
            f[34 + 12] = 0x40;
        });
        assert_eq!(err(&tcp_bad), Some(ParseError::BadL4Header));
        let icmp_short = v4(&|f| {
            f[17] = 24;
            f[23] = 1;
        });
        assert_eq!(err(&icmp_short), Some(ParseError::Truncated));
        // IPv6: payload beyond the frame, nine extension headers, one cut short, ARP cut short.
        let mut v6 = ipv6_tcp_ext_qinq();
        v6[27] += 1;
        assert_eq!(err(&v6), Some(ParseError::BadTotalLength));
        let mut nine = ipv6_tcp_ext_qinq()[..62].to_vec();
        nine[28] = 0; // hop-by-hop first
        for i in 0..9 {
            nine.extend_from_slice(&[if i == 8 { 59 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
        }
        let plen = (nine.len() - 62) as u16;
        nine[26..28].copy_from_slice(&plen.to_be_bytes());
        assert_eq!(err(&nine), Some(ParseError::TooManyExtHeaders));
        let mut eight = nine.clone();
        eight.truncate(eight.len() - 8);
        let plen = (eight.len() - 62) as u16;
        eight[26..28].copy_from_slice(&plen.to_be_bytes());
        let last = eight.len() - 8;
        eight[last] = 59;
        assert_eq!(err(&eight), None, "eight is the limit");
        let mut cut = ipv6_tcp_ext_qinq();
        cut[63] = 3; // hop-by-hop claims 32 bytes
        assert_eq!(err(&cut), Some(ParseError::Truncated));
        let mut arp = IPV4_UDP[..14].to_vec();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(err(&arp), Some(ParseError::Truncated));
        assert_eq!(parse(&arp).class, FrameClass::Arp);
    }

    #[test]
    fn fragments_are_flagged_and_later_ones_have_no_ports() {
        let mut first = IPV4_UDP;
        let mut ip = Ipv4Packet::new_unchecked(&mut first[14..]);
        ip.set_frag(1, true, 0);
        ip.fill_checksum();
        let h = parse(&first);
        assert_eq!((h.frag, h.sport, h.error), (Fragment::First, 12345, None));
        // The UDP length of a first fragment counts the whole datagram.
        first[39] = 200;
        assert_eq!(
            parse(&first).error,
            None,
            "UDP length beyond a first fragment"
        );
        let mut whole = IPV4_UDP;
        whole[39] = 200;
        assert_eq!(parse(&whole).error, Some(ParseError::BadL4Header));
        let mut later = IPV4_UDP;
        let mut ip = Ipv4Packet::new_unchecked(&mut later[14..]);
        ip.set_frag(1, false, 8);
        ip.fill_checksum();
        let h = parse(&later);
        assert_eq!(
            (h.frag, h.sport, h.l4, h.error),
            (Fragment::Later, 0, 34, None)
        );
        // IPv6: a fragment header with offset 8, then garbage that is not parsed.
        let mut f = ipv6_tcp_ext_qinq()[..62].to_vec();
        f[28] = 44;
        f.extend_from_slice(&[17, 0, 0, 8, 0, 0, 0, 9, 0xff, 0xff]);
        f[26..28].copy_from_slice(&10u16.to_be_bytes());
        let h = parse(&f);
        assert_eq!(
            (h.frag, h.proto, h.l4, h.error),
            (Fragment::Later, 17, 70, None)
        );
    }

    #[test]
    fn non_ip_classes() {
        let mut f = IPV4_UDP;
        f[12..14].copy_from_slice(&[0x88, 0xcc]);
        assert_eq!(parse(&f).class, FrameClass::Lldp);
        f[12..14].copy_from_slice(&[0x12, 0x34]);
        let h = parse(&f);
        assert_eq!(
            (h.class, h.error, h.ethertype),
            (FrameClass::Other, None, 0x1234)
        );
        // One 802.1Q tag: its VLAN is the bond's VLAN.
        let mut t = IPV4_UDP[..12].to_vec();
        t.extend_from_slice(&[0x81, 0x00, 0x20, 100]);
        t.extend_from_slice(&IPV4_UDP[12..]);
        let h = parse(&t);
        assert_eq!(
            (h.dot1q_vid(), h.l3, h.error, h.untagged_or_dot1q()),
            (100, 18, None, true)
        );
    }
}
