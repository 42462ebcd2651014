//! Frames control sends on a bond's members: peer notifications after a change of active
//! member, the monitors' probes, and answers to ARP, neighbour solicitations and echo requests
//! for the appliance's own addresses; and the reading of what the members punt to control.
//!
//! - Gratuitous ARP (a request for the appliance's own IPv4 address, sender = target), as Linux's
//!   bonding sends `num_grat_arp` of.
//! - Unsolicited neighbour advertisement (RFC 4861 §7.2.6, Override flag, to all-nodes), as
//!   Linux sends `num_unsol_na` of.
//! - Re-announcement of a MAC address seen behind the appliance: one broadcast RARP frame
//!   sourced from it (what QEMU and hypervisors send after a live migration), so that switches
//!   relearn where that host now is.
//!
//! All are built and read with the datapath's packet views ([`isopath_datapath::wire`]), the
//! same ones the workers' classify pass uses, and padded to the 60-byte Ethernet minimum. On a
//! VLAN of the bond they carry an 802.1Q tag ([`tag`]); what arrives tagged is read with the
//! tag taken off ([`untag`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use isopath_datapath::wire::{
    ArpPacket, EtherType, EthernetFrame, IcmpPacket, IpProtocol, Ipv4Packet, Ipv6Packet,
    VlanHeader, arp::ArpOp, checksum, ethernet, icmp, ipv6,
};

/// A MAC address.
pub type Mac = ethernet::Mac;

const BROADCAST: Mac = ethernet::BROADCAST;
const MIN_FRAME: usize = ethernet::MIN_FRAME;
const ETH: usize = ethernet::HEADER_LEN;

/// A frame of `ETH + payload_len` bytes with its Ethernet header written.
fn eth(dst: Mac, src: Mac, ethertype: EtherType, payload_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; ETH + payload_len];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst(dst);
    e.set_src(src);
    e.set_ethertype(ethertype);
    f
}

/// The VLAN of a frame with an 802.1Q tag, and the frame with the tag taken off; an untagged
/// frame as it is. A priority tag (VLAN id 0) is taken off and means no VLAN.
pub fn untag(f: &[u8]) -> (Option<u16>, std::borrow::Cow<'_, [u8]>) {
    let tag = EthernetFrame::new_checked(f)
        .ok()
        .filter(|e| e.ethertype() == EtherType::Vlan)
        .and_then(|_| VlanHeader::new_checked(&f[ETH..]).ok());
    let Some(tag) = tag else {
        return (None, std::borrow::Cow::Borrowed(f));
    };
    let vid = tag.vid();
    let mut u = Vec::with_capacity(f.len() - 4);
    u.extend_from_slice(&f[..12]);
    u.extend_from_slice(&f[16..]);
    ((vid != 0).then_some(vid), std::borrow::Cow::Owned(u))
}

/// `f` on VLAN `vid`: an 802.1Q tag (priority 0) after the MAC addresses; `None` leaves it
/// untagged.
pub fn tag(f: Vec<u8>, vid: Option<u16>) -> Vec<u8> {
    let (Some(vid), true) = (vid, f.len() >= ETH) else {
        return f;
    };
    let mut t = vec![0u8; f.len() + 4];
    t[..12].copy_from_slice(&f[..12]);
    EthernetFrame::new_unchecked(&mut t[..]).set_ethertype(EtherType::Vlan);
    let mut v = VlanHeader::new_unchecked(&mut t[ETH..]);
    v.set_tci(0, vid);
    v.set_ethertype_raw(EthernetFrame::new_unchecked(&f[..]).ethertype_raw());
    t[ETH + 4..].copy_from_slice(&f[ETH..]);
    t
}

fn pad(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < MIN_FRAME {
        f.resize(MIN_FRAME, 0);
    }
    f
}

/// An ARP (or RARP) frame to `dst`.
fn arp_frame(
    dst: Mac,
    ethertype: EtherType,
    op: ArpOp,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = eth(dst, sha, ethertype, isopath_datapath::wire::arp::PACKET_LEN);
    ArpPacket::new_unchecked(&mut f[ETH..]).fill(op, sha, spa, tha, tpa);
    pad(f)
}

/// A gratuitous ARP request announcing that `ip` is at `mac`.
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        BROADCAST,
        EtherType::Arp,
        ArpOp::Request,
        mac,
        ip,
        [0; 6],
        ip,
    )
}

/// A broadcast RARP frame sourced from `mac`: makes every learning switch on the path move
/// `mac` to the port it arrives on.
pub fn announce(mac: Mac) -> Vec<u8> {
    let any = Ipv4Addr::UNSPECIFIED;
    arp_frame(
        BROADCAST,
        EtherType::Rarp,
        ArpOp::RarpRequest,
        mac,
        any,
        mac,
        any,
    )
}

/// An ND message (`msg_type`, the 32-bit field after the checksum, target, one link-layer
/// address option of kind `opt` carrying `mac`).
fn nd_message(msg_type: u8, rest: [u8; 4], target: Ipv6Addr, opt: u8, mac: Mac) -> Vec<u8> {
    let mut m = vec![0u8; 32];
    let mut i = IcmpPacket::new_unchecked(&mut m[..]);
    i.set_type(msg_type, 0);
    i.set_rest(rest);
    m[8..24].copy_from_slice(&target.octets());
    m[24] = opt;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac);
    m
}

/// An unsolicited neighbour advertisement for `ip` at `mac`, to all nodes (ff02::1).
pub fn unsolicited_na(mac: Mac, ip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    // Override; option 2: target link-layer address.
    let na = nd_message(icmp::V6_NEIGHBOR_ADVERT, [0x20, 0, 0, 0], ip, 2, mac);
    ipv6_frame([0x33, 0x33, 0, 0, 0, 1], mac, ip, all_nodes, 255, na)
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `msg` (whose checksum field is zero).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    checksum::l4(
        checksum::pseudo_v6(src, dst, IpProtocol::Icmpv6.into(), msg.len()),
        msg,
    )
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
    let e = EthernetFrame::new_checked(f).ok()?;
    if e.ethertype() != EtherType::Arp {
        return None;
    }
    let a = ArpPacket::new_checked(e.payload()).ok()?;
    a.is_ethernet_ipv4().then(|| Arp {
        op: a.op().into(),
        sha: a.sha(),
        spa: a.spa(),
        tpa: a.tpa(),
    })
}

/// An ARP request from `mac`/`ip` for `target` (the ARP monitor's probe).
pub fn arp_request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        BROADCAST,
        EtherType::Arp,
        ArpOp::Request,
        mac,
        ip,
        [0; 6],
        target,
    )
}

/// The reply to `req` from `mac`, which owns `req.tpa`.
pub fn arp_reply(mac: Mac, req: &Arp) -> Vec<u8> {
    arp_frame(
        req.sha,
        EtherType::Arp,
        ArpOp::Reply,
        mac,
        req.tpa,
        req.sha,
        req.spa,
    )
}

/// If `f` is an ICMP echo request to one of `own` (IPv4), the echo reply from `mac`: the same
/// packet (options and data) with the addresses swapped, TTL 64 and both checksums redone.
pub fn icmp_echo_reply(f: &[u8], mac: Mac, own: &[Ipv4Addr]) -> Option<Vec<u8>> {
    let e = EthernetFrame::new_checked(f).ok()?;
    if e.ethertype() != EtherType::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(e.payload()).ok()?;
    if ip.protocol() != IpProtocol::Icmp || ip.frag_offset() != 0 || ip.more_frags() {
        return None;
    }
    let echo = IcmpPacket::new_checked(ip.payload()).ok()?;
    if echo.msg_type() != icmp::ECHO_REQUEST || !own.contains(&ip.dst()) {
        return None;
    }
    let (src, dst, hl) = (ip.src(), ip.dst(), ip.header_len());
    let total = usize::from(ip.total_len());
    let mut r = f[..ETH + total].to_vec();
    let mut re = EthernetFrame::new_unchecked(&mut r[..]);
    re.set_dst(e.src());
    re.set_src(mac);
    let mut rip = Ipv4Packet::new_unchecked(&mut r[ETH..]);
    rip.set_src(dst);
    rip.set_dst(src);
    rip.set_ttl(64);
    rip.fill_checksum();
    let mut ri = IcmpPacket::new_unchecked(&mut r[ETH + hl..ETH + total]);
    ri.set_type(icmp::ECHO_REPLY, 0);
    ri.set_checksum(0);
    let c = checksum::checksum(ri.as_bytes());
    ri.set_checksum(c);
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
        assert!(checksum::verify(&r[14..34]));
        assert!(checksum::verify(&r[34..50]));
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

/// An Ethernet frame read as IPv6 carrying ICMPv6.
type Icmpv6Frame<'a> = (
    EthernetFrame<&'a [u8]>,
    Ipv6Packet<&'a [u8]>,
    IcmpPacket<&'a [u8]>,
);

/// The IPv6 packet and its ICMPv6 message of an Ethernet frame (no extension headers).
fn icmpv6_of(f: &[u8]) -> Option<Icmpv6Frame<'_>> {
    let e = EthernetFrame::new_checked(f).ok()?;
    if e.ethertype() != EtherType::Ipv6 {
        return None;
    }
    let ip = Ipv6Packet::new_checked(&f[ETH..]).ok()?;
    if ip.next_header() != IpProtocol::Icmpv6 {
        return None;
    }
    let end = ETH + ipv6::HEADER_LEN + usize::from(ip.payload_len());
    let msg = IcmpPacket::new_checked(&f[ETH + ipv6::HEADER_LEN..end]).ok()?;
    Some((e, ip, msg))
}

/// Parses an Ethernet frame carrying an NS or NA.
pub fn parse_nd(f: &[u8]) -> Option<Nd> {
    let (e, ip, msg) = icmpv6_of(f)?;
    let kind = msg.msg_type();
    if ip.hop_limit() != 255
        || (kind != icmp::V6_NEIGHBOR_SOLICIT && kind != icmp::V6_NEIGHBOR_ADVERT)
    {
        return None;
    }
    Some(Nd {
        kind,
        src_mac: e.src(),
        src: ip.src(),
        target: msg.nd_target()?,
    })
}

/// An IPv6 frame carrying the ICMPv6 message `icmp` (its checksum computed here).
fn ipv6_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop: u8,
    mut icmp: Vec<u8>,
) -> Vec<u8> {
    let sum = icmpv6_checksum(src, dst, &icmp);
    IcmpPacket::new_unchecked(&mut icmp[..]).set_checksum(sum);
    let mut f = eth(
        dst_mac,
        src_mac,
        EtherType::Ipv6,
        ipv6::HEADER_LEN + icmp.len(),
    );
    let mut ip = Ipv6Packet::new_unchecked(&mut f[ETH..]);
    ip.fill(src, dst, IpProtocol::Icmpv6, icmp.len(), hop);
    ip.payload_mut().copy_from_slice(&icmp);
    pad(f)
}

/// A solicited advertisement of `own` at `mac`, answering `ns`.
pub fn solicited_na(mac: Mac, own: Ipv6Addr, ns: &Nd) -> Vec<u8> {
    // Solicited | Override; option 2: target link-layer address.
    let na = nd_message(icmp::V6_NEIGHBOR_ADVERT, [0x60, 0, 0, 0], own, 2, mac);
    ipv6_frame(ns.src_mac, mac, own, ns.src, 255, na)
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
    // Option 1: source link-layer address.
    let ns = nd_message(icmp::V6_NEIGHBOR_SOLICIT, [0; 4], target, 1, mac);
    ipv6_frame(
        [0x33, 0x33, 0xff, t[13], t[14], t[15]],
        mac,
        src,
        group,
        255,
        ns,
    )
}

/// If `f` is an ICMPv6 echo request to one of `own`, the echo reply from `mac`.
pub fn icmpv6_echo_reply(f: &[u8], mac: Mac, own: &[Ipv6Addr]) -> Option<Vec<u8>> {
    let (e, ip, msg) = icmpv6_of(f)?;
    if msg.msg_type() != icmp::V6_ECHO_REQUEST || !own.contains(&ip.dst()) {
        return None;
    }
    let mut reply = msg.as_bytes().to_vec();
    let mut r = IcmpPacket::new_unchecked(&mut reply[..]);
    r.set_type(icmp::V6_ECHO_REPLY, 0);
    r.set_checksum(0);
    Some(ipv6_frame(e.src(), mac, ip.dst(), ip.src(), 64, reply))
}

#[cfg(test)]
mod nd_tests {
    use super::*;

    fn ip6(b: &[u8]) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap())
    }

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
