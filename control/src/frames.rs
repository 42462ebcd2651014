//! Frames control sends on a bond's members: peer notifications after a change of active member.
//!
//! - Gratuitous ARP (a request for the appliance's own IPv4 address, sender = target), as Linux's
//!   bonding sends `num_grat_arp` of.
//! - Unsolicited neighbour advertisement (RFC 4861 §7.2.6, Override flag, to all-nodes), as
//!   Linux sends `num_unsol_na` of.
//! - Re-announcement of a MAC address seen behind the appliance: one broadcast RARP frame
//!   sourced from it (what QEMU and hypervisors send after a live migration), so that switches
//!   relearn where that host now is.
//!
//! All are padded to the 60-byte Ethernet minimum. On a VLAN of the bond they carry an 802.1Q
//! tag ([`tag`]); what arrives tagged is read with the tag taken off ([`untag`]).

use std::net::{Ipv4Addr, Ipv6Addr};

/// A MAC address.
pub type Mac = [u8; 6];

const BROADCAST: Mac = [0xff; 6];
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_RARP: u16 = 0x8035;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const MIN_FRAME: usize = 60;

fn eth(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(96);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// The VLAN of a frame with an 802.1Q tag, and the frame with the tag taken off; an untagged
/// frame as it is. A priority tag (VLAN id 0) is taken off and means no VLAN.
pub fn untag(f: &[u8]) -> (Option<u16>, std::borrow::Cow<'_, [u8]>) {
    if f.len() < 18 || f[12..14] != ETH_P_8021Q.to_be_bytes() {
        return (None, std::borrow::Cow::Borrowed(f));
    }
    let vid = u16::from_be_bytes([f[14], f[15]]) & 0x0fff;
    let mut u = Vec::with_capacity(f.len() - 4);
    u.extend_from_slice(&f[..12]);
    u.extend_from_slice(&f[16..]);
    ((vid != 0).then_some(vid), std::borrow::Cow::Owned(u))
}

/// `f` on VLAN `vid`: an 802.1Q tag (priority 0) after the MAC addresses; `None` leaves it
/// untagged.
pub fn tag(f: Vec<u8>, vid: Option<u16>) -> Vec<u8> {
    let Some(vid) = vid else {
        return f;
    };
    let mut t = Vec::with_capacity(f.len() + 4);
    t.extend_from_slice(&f[..12]);
    t.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
    t.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    t.extend_from_slice(&f[12..]);
    t
}

fn pad(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < MIN_FRAME {
        f.resize(MIN_FRAME, 0);
    }
    f
}

fn arp_body(f: &mut Vec<u8>, op: u16, sha: Mac, spa: [u8; 4], tha: Mac, tpa: [u8; 4]) {
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
}

/// A gratuitous ARP request announcing that `ip` is at `mac`.
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(BROADCAST, mac, ETH_P_ARP);
    arp_body(&mut f, 1, mac, ip.octets(), [0; 6], ip.octets());
    pad(f)
}

/// A broadcast RARP frame sourced from `mac`: makes every learning switch on the path move
/// `mac` to the port it arrives on.
pub fn announce(mac: Mac) -> Vec<u8> {
    let mut f = eth(BROADCAST, mac, ETH_P_RARP);
    arp_body(&mut f, 3, mac, [0; 4], mac, [0; 4]);
    pad(f)
}

/// An unsolicited neighbour advertisement for `ip` at `mac`, to all nodes (ff02::1).
pub fn unsolicited_na(mac: Mac, ip: Ipv6Addr) -> Vec<u8> {
    let dst_ip = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut f = eth([0x33, 0x33, 0, 0, 0, 1], mac, ETH_P_IPV6);
    // ICMPv6: type 136, code 0, checksum, flags (Override), target, option 2 (target LL addr).
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]);
    icmp.extend_from_slice(&0x2000_0000u32.to_be_bytes());
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(ip, dst_ip, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    // IPv6 header: version 6, payload length, next header 58, hop limit 255 (RFC 4861).
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&dst_ip.octets());
    f.extend_from_slice(&icmp);
    pad(f)
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `msg` (whose checksum field is zero).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for c in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC address.
pub fn fmt_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [2, 0, 0, 0, 1, 1];

    #[test]
    fn gratuitous_arp_layout() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &MAC, "sender MAC");
        assert_eq!(&f[28..32], &[198, 18, 0, 10], "sender IP");
        assert_eq!(&f[38..42], &[198, 18, 0, 10], "target IP = sender IP");
    }

    #[test]
    fn announce_is_broadcast_rarp_from_the_host() {
        let host = [2, 0, 0, 0, 0, 1];
        let f = announce(host);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &host);
        assert_eq!(&f[12..14], &[0x80, 0x35]);
        assert_eq!(&f[20..22], &[0, 3]);
    }

    #[test]
    fn unsolicited_na_checksum_verifies() {
        let ip: Ipv6Addr = "2001:2::10".parse().unwrap();
        let f = unsolicited_na(MAC, ip);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14 + 6], 58);
        assert_eq!(f[14 + 7], 255);
        let icmp = &f[54..54 + 32];
        assert_eq!(icmp[0], 136);
        assert_eq!(&icmp[8..24], &ip.octets());
        // Summing over the message including its checksum gives 0 (one's complement).
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(icmpv6_checksum(ip, dst, icmp), 0);
    }

    #[test]
    fn vlan_tags_go_on_and_come_off() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(198, 18, 1, 10));
        let t = tag(f.clone(), Some(100));
        assert_eq!(t.len(), f.len() + 4);
        assert_eq!(&t[12..16], &[0x81, 0x00, 0x00, 100]);
        assert_eq!(&t[16..18], &[0x08, 0x06]);
        let (vid, u) = untag(&t);
        assert_eq!((vid, &u[..]), (Some(100), &f[..]));
        assert_eq!(
            parse_arp(&u).map(|a| a.spa),
            Some(Ipv4Addr::new(198, 18, 1, 10))
        );
        // Untagged stays as is; a priority tag (VLAN 0) comes off and means no VLAN.
        assert_eq!(untag(&f), (None, std::borrow::Cow::Borrowed(&f[..])));
        assert_eq!(tag(f.clone(), None), f);
        let prio = tag(f.clone(), Some(0));
        let (vid, u) = untag(&prio);
        assert_eq!((vid, &u[..]), (None, &f[..]));
        // Too short to hold a tag and an EtherType: left alone.
        assert_eq!(untag(&t[..17]).0, None);
    }

    #[test]
    fn macs_parse_and_print() {
        assert_eq!(parse_mac("02:00:00:00:01:01"), Some(MAC));
        assert_eq!(fmt_mac(&MAC), "02:00:00:00:01:01");
        for bad in ["", "02:00", "02:00:00:00:01:01:07", "zz:00:00:00:01:01"] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}

/// An ARP packet (Ethernet/IPv4), as the ARP monitor and the responder read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sha: Mac,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

/// Parses an Ethernet frame carrying ARP for IPv4 over Ethernet.
pub fn parse_arp(f: &[u8]) -> Option<Arp> {
    if f.len() < 42 || f[12..14] != [0x08, 0x06] || f[14..20] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    Some(Arp {
        op: u16::from_be_bytes([f[20], f[21]]),
        sha: f[22..28].try_into().ok()?,
        spa: ip(28),
        tpa: ip(38),
    })
}

/// An ARP request from `mac`/`ip` for `target` (the ARP monitor's probe).
pub fn arp_request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(BROADCAST, mac, ETH_P_ARP);
    arp_body(&mut f, 1, mac, ip.octets(), [0; 6], target.octets());
    pad(f)
}

/// The reply to `req` from `mac`, which owns `req.tpa`.
pub fn arp_reply(mac: Mac, req: &Arp) -> Vec<u8> {
    let mut f = eth(req.sha, mac, ETH_P_ARP);
    arp_body(&mut f, 2, mac, req.tpa.octets(), req.sha, req.spa.octets());
    pad(f)
}

fn ip_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// If `f` is an ICMP echo request to one of `own` (IPv4, no options), the echo reply from `mac`.
pub fn icmp_echo_reply(f: &[u8], mac: Mac, own: &[Ipv4Addr]) -> Option<Vec<u8>> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[14] != 0x45 || f[23] != 1 || f[34] != 8 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    if !own.contains(&dst) || total < 28 || 14 + total > f.len() {
        return None;
    }
    let mut r = f[..14 + total].to_vec();
    r[..6].copy_from_slice(&f[6..12]);
    r[6..12].copy_from_slice(&mac);
    r.copy_within(26..30, 30); // the request's source becomes the destination
    r[26..30].copy_from_slice(&dst.octets());
    r[22] = 64; // TTL
    r[24..26].copy_from_slice(&[0, 0]);
    let c = ip_checksum(&r[14..34]);
    r[24..26].copy_from_slice(&c.to_be_bytes());
    r[34] = 0; // echo reply
    r[36..38].copy_from_slice(&[0, 0]);
    let c = ip_checksum(&r[34..14 + total]);
    r[36..38].copy_from_slice(&c.to_be_bytes());
    Some(pad(r))
}

#[cfg(test)]
mod arp_tests {
    use super::*;

    #[test]
    fn arp_request_and_reply_round_trip() {
        let me = [2, 0, 0, 0, 0xb, 1];
        let req = arp_request(
            me,
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 2),
        );
        let a = parse_arp(&req).unwrap();
        assert_eq!((a.op, a.sha, a.tpa), (1, me, Ipv4Addr::new(198, 18, 0, 2)));
        let host = [2, 0, 0, 0, 0, 2];
        let ask = arp_request(
            host,
            Ipv4Addr::new(198, 18, 0, 2),
            Ipv4Addr::new(198, 18, 0, 10),
        );
        let rep = arp_reply(me, &parse_arp(&ask).unwrap());
        let r = parse_arp(&rep).unwrap();
        assert_eq!(
            (r.op, r.sha, r.spa, r.tpa),
            (
                2,
                me,
                Ipv4Addr::new(198, 18, 0, 10),
                Ipv4Addr::new(198, 18, 0, 2)
            )
        );
        assert_eq!(&rep[..6], &host);
        assert!(parse_arp(&[0; 41]).is_none());
    }

    #[test]
    fn echo_reply_swaps_addresses_and_checksums_verify() {
        // A ping from 198.18.0.2 to 198.18.0.10, 8 bytes of data.
        let mut f = vec![0u8; 14 + 36];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0xb, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&36u16.to_be_bytes());
        f[22] = 64;
        f[23] = 1;
        f[26..30].copy_from_slice(&[198, 18, 0, 2]);
        f[30..34].copy_from_slice(&[198, 18, 0, 10]);
        f[34] = 8;
        f[38..42].copy_from_slice(&[0x12, 0x34, 0, 1]);
        let me = [2, 0, 0, 0, 0xb, 1];
        let own = [Ipv4Addr::new(198, 18, 0, 10)];
        let r = icmp_echo_reply(&f, me, &own).expect("a reply");
        assert_eq!(&r[..6], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&r[26..30], &[198, 18, 0, 10]);
        assert_eq!(&r[30..34], &[198, 18, 0, 2]);
        assert_eq!(r[34], 0);
        assert_eq!(ip_checksum(&r[14..34]), 0);
        assert_eq!(ip_checksum(&r[34..50]), 0);
        assert!(
            icmp_echo_reply(&f, me, &[Ipv4Addr::new(1, 1, 1, 1)]).is_none(),
            "not ours"
        );
        assert!(icmp_echo_reply(&f[..40], me, &own).is_none(), "truncated");
    }
}

/// A neighbour solicitation or advertisement (ICMPv6 135/136, no extension headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nd {
    /// 135 solicitation, 136 advertisement.
    pub kind: u8,
    /// Ethernet source.
    pub src_mac: Mac,
    /// IPv6 source.
    pub src: Ipv6Addr,
    /// The target address.
    pub target: Ipv6Addr,
}

fn ip6(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    Ipv6Addr::from(o)
}

/// Parses an Ethernet frame carrying an NS or NA.
pub fn parse_nd(f: &[u8]) -> Option<Nd> {
    if f.len() < 78 || f[12..14] != [0x86, 0xdd] || f[20] != 58 || f[21] != 255 {
        return None;
    }
    let kind = f[54];
    if kind != 135 && kind != 136 {
        return None;
    }
    Some(Nd {
        kind,
        src_mac: f[6..12].try_into().ok()?,
        src: ip6(&f[22..38]),
        target: ip6(&f[62..78]),
    })
}

fn ipv6_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop: u8,
    mut icmp: Vec<u8>,
) -> Vec<u8> {
    let sum = icmpv6_checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = eth(dst_mac, src_mac, ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, hop]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    pad(f)
}

/// A solicited advertisement of `own` at `mac`, answering `ns`.
pub fn solicited_na(mac: Mac, own: Ipv6Addr, ns: &Nd) -> Vec<u8> {
    let mut icmp = vec![136, 0, 0, 0];
    icmp.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // Solicited | Override
    icmp.extend_from_slice(&own.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    ipv6_frame(ns.src_mac, mac, own, ns.src, 255, icmp)
}

/// A neighbour solicitation from `src` at `mac` for `target` (to its solicited-node group).
pub fn neighbour_solicitation(mac: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&mac);
    ipv6_frame(
        [0x33, 0x33, 0xff, t[13], t[14], t[15]],
        mac,
        src,
        group,
        255,
        icmp,
    )
}

/// If `f` is an ICMPv6 echo request to one of `own`, the echo reply from `mac`.
pub fn icmpv6_echo_reply(f: &[u8], mac: Mac, own: &[Ipv6Addr]) -> Option<Vec<u8>> {
    if f.len() < 62 || f[12..14] != [0x86, 0xdd] || f[20] != 58 || f[54] != 128 {
        return None;
    }
    let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
    let (src, dst) = (ip6(&f[22..38]), ip6(&f[38..54]));
    if !own.contains(&dst) || plen < 8 || 54 + plen > f.len() {
        return None;
    }
    let mut icmp = f[54..54 + plen].to_vec();
    icmp[0] = 129;
    icmp[2..4].copy_from_slice(&[0, 0]);
    Some(ipv6_frame(
        f[6..12].try_into().ok()?,
        mac,
        dst,
        src,
        64,
        icmp,
    ))
}

#[cfg(test)]
mod nd_tests {
    use super::*;

    #[test]
    fn ns_na_round_trip_and_checksums_verify() {
        let me = [2, 0, 0, 0, 0xb, 1];
        let host = [2, 0, 0, 0, 0, 2];
        let own: Ipv6Addr = "2001:2::10".parse().unwrap();
        let far: Ipv6Addr = "2001:2::2".parse().unwrap();
        let ns = neighbour_solicitation(host, far, own);
        assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0, 0, 0x10]);
        let parsed = parse_nd(&ns).unwrap();
        assert_eq!(
            (parsed.kind, parsed.src, parsed.target, parsed.src_mac),
            (135, far, own, host)
        );
        let group = ip6(&ns[38..54]);
        assert_eq!(icmpv6_checksum(far, group, &ns[54..54 + 32]), 0);
        let na = solicited_na(me, own, &parsed);
        let p = parse_nd(&na).unwrap();
        assert_eq!((p.kind, p.src, p.target), (136, own, own));
        assert_eq!(&na[..6], &host);
        assert_eq!(icmpv6_checksum(own, far, &na[54..54 + 32]), 0);
    }

    #[test]
    fn echo6_reply_verifies() {
        let me = [2, 0, 0, 0, 0xb, 1];
        let own: Ipv6Addr = "2001:2::10".parse().unwrap();
        let far: Ipv6Addr = "2001:2::2".parse().unwrap();
        let mut icmp = vec![128, 0, 0, 0, 0x12, 0x34, 0, 1, 9, 9, 9, 9];
        let req = ipv6_frame(
            me,
            [2, 0, 0, 0, 0, 2],
            far,
            own,
            64,
            std::mem::take(&mut icmp),
        );
        let rep = icmpv6_echo_reply(&req, me, &[own]).unwrap();
        assert_eq!(rep[54], 129);
        assert_eq!(ip6(&rep[22..38]), own);
        assert_eq!(ip6(&rep[38..54]), far);
        assert_eq!(icmpv6_checksum(own, far, &rep[54..54 + 12]), 0);
        assert!(icmpv6_echo_reply(&req, me, &[far]).is_none());
    }
}
