//! The straight-line path of [`super::parse`] for the common frame: untagged IPv4 with a
//! 20-byte header that is not a fragment, or IPv6 without extension headers, carrying TCP or
//! UDP, every header well-formed. The fixed header bytes are read from arrays (one length check
//! per layer, no per-field bounds checks, no `Result` chain) and the headers written once.
//!
//! It answers only for frames it checks completely and leaves every other frame (tags, IPv4
//! options or fragments, extension headers, ICMP, other EtherTypes, anything malformed) to the
//! layered walk, so what it writes is what the walk would write: `parse_layered` is the
//! reference, and a unit test and the parser fuzz target hold the two equal on every frame.

use super::{
    checksum,
    parse::{Fragment, FrameClass, Headers},
};

/// A big-endian u16 at a constant offset of an array (no bounds check once inlined).
#[inline(always)]
fn be16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Writes `h` (all of it) and returns true when `frame` is a common frame (module docs) with
/// well-formed headers; returns false for any other frame, with `h` partly written (the
/// layered walk then overwrites all of it).
#[inline(always)]
pub(crate) fn parse(frame: &[u8], h: &mut Headers) -> bool {
    // Ethernet, a 20-byte IPv4 header and UDP: the shortest frame this path takes.
    let Some(b) = frame.first_chunk::<42>() else {
        return false;
    };
    let len = frame.len();
    // Compared in native order: a constant, no byte swap.
    let et = u16::from_ne_bytes([b[12], b[13]]);
    if et == u16::from_ne_bytes([0x08, 0x00]) {
        let total = usize::from(be16(b, 16));
        // Version 4, IHL 5; total length from the header to the frame's end; neither more
        // fragments nor an offset (DF may be set).
        if b[14] != 0x45 || total < 20 || total > len - 14 || be16(b, 20) & 0x3fff != 0 {
            return false;
        }
        let Some(ip) = b[14..].first_chunk::<20>() else {
            return false;
        };
        if !checksum::verify20(ip) {
            return false;
        }
        head(h, b, len, 0x0800, FrameClass::Ipv4, total as u16, b[23]);
        l4::<34>(frame, total - 20, b[23], h)
    } else if et == u16::from_ne_bytes([0x86, 0xdd]) {
        let Some(b) = frame.first_chunk::<54>() else {
            return false;
        };
        let plen = usize::from(be16(b, 18));
        if b[14] >> 4 != 6 || 40 + plen > len - 14 {
            return false;
        }
        head(
            h,
            b,
            len,
            0x86dd,
            FrameClass::Ipv6,
            (40 + plen) as u16,
            b[20],
        );
        l4::<54>(frame, plen, b[20], h)
    } else {
        false
    }
}

/// Writes the fields of `h` up to L3 for an untagged frame whose L3 header `b` holds.
#[inline(always)]
fn head<const N: usize>(
    h: &mut Headers,
    b: &[u8; N],
    len: usize,
    ethertype: u16,
    class: FrameClass,
    l3_len: u16,
    proto: u8,
) {
    h.dst = [b[0], b[1], b[2], b[3], b[4], b[5]];
    h.src = [b[6], b[7], b[8], b[9], b[10], b[11]];
    h.len = len.min(usize::from(u16::MAX)) as u16;
    h.ethertype = ethertype;
    h.l3 = 14;
    h.tpid = 0;
    h.vlan = [0; 2];
    h.tags = 0;
    h.frag = Fragment::No;
    h.error = None;
    h.class = class;
    h.l3_len = l3_len;
    h.proto = proto;
}

/// Reads the TCP or UDP header at offset `AT` of `frame` (`payload` bytes of L3 payload) into
/// `h`; false for other protocols and malformed headers.
#[inline(always)]
fn l4<const AT: usize>(frame: &[u8], payload: usize, proto: u8, h: &mut Headers) -> bool {
    match proto {
        17 => {
            let Some(u) = frame.get(AT..AT + 8).and_then(<[u8]>::first_chunk::<8>) else {
                return false;
            };
            let ulen = usize::from(be16(u, 4));
            if ulen < 8 || ulen > payload {
                return false;
            }
            h.sport = be16(u, 0);
            h.dport = be16(u, 2);
            h.tcp_flags = 0;
        }
        6 => {
            let Some(t) = frame.get(AT..AT + 20).and_then(<[u8]>::first_chunk::<20>) else {
                return false;
            };
            let hl = usize::from(t[12] >> 4) * 4;
            if hl < 20 || hl > payload {
                return false;
            }
            h.sport = be16(t, 0);
            h.dport = be16(t, 2);
            h.tcp_flags = t[13];
        }
        _ => return false,
    }
    h.l4 = AT as u16;
    true
}

#[cfg(test)]
mod tests {
    use crate::wire::{
        EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket, parse,
        parse_layered, tcp,
    };

    /// Frames on and just off the straight-line path: IPv4 and IPv6, TCP and UDP, DF set,
    /// minimal and padded, and their neighbours (options, fragments, ICMP, a tag, an
    /// extension header).
    fn bases() -> Vec<Vec<u8>> {
        let eth = |et: EtherType| {
            let mut f = vec![0u8; 14];
            let mut e = EthernetFrame::new_unchecked(&mut f[..]);
            e.set_dst([2, 0, 0, 0, 0, 2]);
            e.set_src([2, 0, 0, 0, 0, 1]);
            e.set_ethertype(et);
            f
        };
        let udp = |n: usize| {
            let mut u = vec![0u8; 8 + n];
            UdpPacket::new_unchecked(&mut u[..]).fill(40000, 53, n);
            u
        };
        let tcp = || {
            let mut t = vec![0u8; 20];
            TcpPacket::new_unchecked(&mut t[..]).fill(40000, 80, 7, 9, tcp::SYN | tcp::ACK, 1024);
            t
        };
        let v4 = |proto: IpProtocol, l4: Vec<u8>, df: bool, pad: usize| {
            let mut f = eth(EtherType::Ipv4);
            f.resize(34, 0);
            Ipv4Packet::new_unchecked(&mut f[14..]).fill(
                "198.18.0.1".parse().unwrap(),
                "198.18.0.2".parse().unwrap(),
                proto,
                l4.len(),
                64,
                df,
            );
            f.extend_from_slice(&l4);
            f.resize(f.len() + pad, 0);
            f
        };
        let v6 = |proto: IpProtocol, l4: Vec<u8>, pad: usize| {
            let mut f = eth(EtherType::Ipv6);
            f.resize(54, 0);
            Ipv6Packet::new_unchecked(&mut f[14..]).fill(
                "2001:2::1".parse().unwrap(),
                "2001:2::2".parse().unwrap(),
                proto,
                l4.len(),
                64,
            );
            f.extend_from_slice(&l4);
            f.resize(f.len() + pad, 0);
            f
        };
        let mut out = vec![
            v4(IpProtocol::Udp, udp(0), false, 0),
            v4(IpProtocol::Udp, udp(4), true, 14),
            v4(IpProtocol::Tcp, tcp(), true, 0),
            v4(IpProtocol::Tcp, tcp(), false, 6),
            v4(IpProtocol::Icmp, vec![8, 0, 0, 0, 0, 1, 0, 1], false, 0),
            v6(IpProtocol::Udp, udp(0), 0),
            v6(IpProtocol::Udp, udp(10), 4),
            v6(IpProtocol::Tcp, tcp(), 0),
            v6(IpProtocol::Icmpv6, vec![128, 0, 0, 0, 0, 1, 0, 1], 0),
        ];
        // A first fragment, IPv4 options, a tag, an IPv6 hop-by-hop header.
        let mut frag = v4(IpProtocol::Udp, udp(4), false, 0);
        let mut ip = Ipv4Packet::new_unchecked(&mut frag[14..]);
        ip.set_frag(1, true, 0);
        ip.fill_checksum();
        out.push(frag);
        let mut opts = v4(IpProtocol::Udp, udp(4), false, 0);
        opts.splice(34..34, [1, 1, 1, 0]);
        opts[14] = 0x46;
        opts[17] += 4;
        Ipv4Packet::new_unchecked(&mut opts[14..]).fill_checksum();
        out.push(opts);
        let mut tagged = v4(IpProtocol::Udp, udp(4), false, 0);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 100]);
        out.push(tagged);
        let mut hbh = udp(4);
        hbh.splice(0..0, [17, 0, 1, 4, 0, 0, 0, 0]);
        out.push(v6(IpProtocol::HopByHop, hbh, 0));
        out
    }

    #[test]
    fn the_straight_line_path_answers_as_the_layered_walk_on_every_variant() {
        let mut on_path = 0;
        let mut n = 0;
        let mut check = |f: &[u8]| {
            let (fast, layered) = (parse(f), parse_layered(f));
            assert_eq!(fast, layered, "frame {f:02x?}");
            let mut h = crate::wire::Headers::default();
            on_path += usize::from(super::parse(f, &mut h));
            n += 1;
        };
        for base in bases() {
            for cut in 0..=base.len() {
                check(&base[..cut]);
            }
            for i in 0..base.len() {
                for edit in [0u8, 0xff, 1, 0x80, 0x0f, 0x40] {
                    let mut f = base.clone();
                    f[i] = if edit == 0 || edit == 0xff {
                        edit
                    } else {
                        f[i] ^ edit
                    };
                    check(&f);
                    // The IPv4 checksum made right again, so that edits reach the checks
                    // behind it.
                    if f.len() >= 34 && f[12..14] == [8, 0] && f[14] == 0x45 {
                        Ipv4Packet::new_unchecked(&mut f[14..34]).fill_checksum();
                        check(&f);
                    }
                }
            }
        }
        // The variants exercise both paths.
        assert!(
            on_path > 1000 && n - on_path > 1000,
            "{on_path} of {n} on the path"
        );
    }
}
