//! The mixed-traffic pcap fixture (`tests/fixtures/mixed.pcap`), made by the project with the
//! datapath's own packet writers: ARP, IPv4 and IPv6, a TCP connection from handshake to FIN,
//! UDP both ways, ICMP and ICMPv6 echo, neighbour discovery, 802.1Q and QinQ, IPv6 extension
//! headers, IPv4 and IPv6 fragments, LLDP, and malformed frames of every kind the parser names.
//! Each frame comes with the parse error the views must report for it (`None`: it parses).
//!
//! Regenerate: `ISOPATH_WRITE_FIXTURES=1 cargo test -p isopath-tests --test pcap_fixture`.

use std::net::{Ipv4Addr, Ipv6Addr};

use isopath_datapath::wire::{
    EtherType, EthernetFrame, IcmpPacket, IpProtocol, Ipv4Packet, Ipv6FragHeader, Ipv6Packet,
    ParseError, TcpPacket, UdpPacket, VlanHeader, arp::ArpOp, checksum, tcp,
};

/// One frame of the fixture.
#[derive(Debug, Clone)]
pub struct FixtureFrame {
    /// What it is, for messages.
    pub label: &'static str,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The parse error the views must report.
    pub error: Option<ParseError>,
}

const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn a6() -> Ipv6Addr {
    "2001:2::1".parse().unwrap()
}

fn b6() -> Ipv6Addr {
    "2001:2::2".parse().unwrap()
}

/// L2 header: `tags` are (TPID, VLAN id), outer first.
fn l2(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ethertype: EtherType) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 4 * tags.len()];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst(dst);
    e.set_src(src);
    let types: Vec<u16> = tags.iter().map(|t| t.0).chain([ethertype.into()]).collect();
    f[12..14].copy_from_slice(&types[0].to_be_bytes());
    for (i, &(_, vid)) in tags.iter().enumerate() {
        let mut v = VlanHeader::new_unchecked(&mut f[14 + 4 * i..]);
        v.set_tci(0, vid);
        v.set_ethertype_raw(types[i + 1]);
    }
    f
}

/// An L4 message of `proto` with its checksum over the pseudo-header.
fn with_l4_checksum(proto: IpProtocol, pseudo: u64, mut msg: Vec<u8>) -> Vec<u8> {
    let c = checksum::l4(pseudo, &msg);
    let at = match proto {
        IpProtocol::Tcp => 16,
        IpProtocol::Udp => 6,
        _ => 2,
    };
    let c = if proto == IpProtocol::Udp && c == 0 {
        0xffff
    } else {
        c
    };
    msg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    msg
}

fn ipv4(l2: Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, l4: &[u8]) -> Vec<u8> {
    let mut f = l2;
    let at = f.len();
    f.resize(at + 20, 0);
    Ipv4Packet::new_unchecked(&mut f[at..]).fill(src, dst, proto, l4.len(), 64, true);
    f.extend_from_slice(l4);
    pad(f)
}

fn ipv6(l2: Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr, next: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let mut f = l2;
    let at = f.len();
    f.resize(at + 40, 0);
    Ipv6Packet::new_unchecked(&mut f[at..]).fill(src, dst, next, payload.len(), 64);
    f.extend_from_slice(payload);
    pad(f)
}

fn pad(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

fn tcp_seg(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    TcpPacket::new_unchecked(&mut t[..]).fill(sport, dport, seq, ack, flags, 64240);
    t.extend_from_slice(data);
    t
}

fn udp_dgram(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8 + data.len()];
    let mut p = UdpPacket::new_unchecked(&mut u[..]);
    p.fill(sport, dport, data.len());
    p.payload_mut().copy_from_slice(data);
    u
}

fn echo(msg_type: u8, ident: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    let mut i = IcmpPacket::new_unchecked(&mut m[..]);
    i.set_type(msg_type, 0);
    let [a, b] = ident.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    i.set_rest([a, b, c, d]);
    m[8..].copy_from_slice(b"isopath!");
    m
}

fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, seg: Vec<u8>, l2h: Vec<u8>) -> Vec<u8> {
    let pseudo = checksum::pseudo_v4(src, dst, 6, seg.len());
    ipv4(
        l2h,
        src,
        dst,
        IpProtocol::Tcp,
        &with_l4_checksum(IpProtocol::Tcp, pseudo, seg),
    )
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, d: Vec<u8>, l2h: Vec<u8>) -> Vec<u8> {
    let pseudo = checksum::pseudo_v4(src, dst, 17, d.len());
    ipv4(
        l2h,
        src,
        dst,
        IpProtocol::Udp,
        &with_l4_checksum(IpProtocol::Udp, pseudo, d),
    )
}

fn icmp4(src: Ipv4Addr, dst: Ipv4Addr, m: Vec<u8>) -> Vec<u8> {
    let e = l2(B, A, &[], EtherType::Ipv4);
    ipv4(
        e,
        src,
        dst,
        IpProtocol::Icmp,
        &with_l4_checksum(IpProtocol::Icmp, 0, m),
    )
}

fn l4_6(src: Ipv6Addr, dst: Ipv6Addr, proto: IpProtocol, m: Vec<u8>, l2h: Vec<u8>) -> Vec<u8> {
    let pseudo = checksum::pseudo_v6(src, dst, proto.into(), m.len());
    ipv6(l2h, src, dst, proto, &with_l4_checksum(proto, pseudo, m))
}

fn arp(
    op: ArpOp,
    dst: [u8; 6],
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = l2(dst, sha, &[], EtherType::Arp);
    let at = f.len();
    f.resize(at + 28, 0);
    isopath_datapath::wire::ArpPacket::new_unchecked(&mut f[at..]).fill(op, sha, spa, tha, tpa);
    pad(f)
}

/// The fixture's frames, in order.
pub fn mixed_traffic() -> Vec<FixtureFrame> {
    let mut out = Vec::new();
    let mut push = |label: &'static str, bytes: Vec<u8>, error: Option<ParseError>| {
        out.push(FixtureFrame {
            label,
            bytes,
            error,
        });
    };
    let e4 = |dst, src| l2(dst, src, &[], EtherType::Ipv4);
    let e6 = |dst, src| l2(dst, src, &[], EtherType::Ipv6);
    push(
        "arp request",
        arp(ArpOp::Request, [0xff; 6], A, A4, [0; 6], B4),
        None,
    );
    push("arp reply", arp(ArpOp::Reply, A, B, B4, A, A4), None);
    // TCP over IPv4, handshake to FIN.
    let (c, s) = (40000, 80);
    let tcp_flow: [(bool, u32, u32, u8, &[u8]); 8] = [
        (true, 1000, 0, tcp::SYN, b""),
        (false, 5000, 1001, tcp::SYN | tcp::ACK, b""),
        (true, 1001, 5001, tcp::ACK, b""),
        (true, 1001, 5001, tcp::PSH | tcp::ACK, b"GET / HTTP"),
        (false, 5001, 1011, tcp::ACK, b""),
        (true, 1011, 5001, tcp::FIN | tcp::ACK, b""),
        (false, 5001, 1012, tcp::FIN | tcp::ACK, b""),
        (true, 1012, 5002, tcp::ACK, b""),
    ];
    for (fwd, seq, ack, flags, data) in tcp_flow {
        let f = if fwd {
            tcp4(A4, B4, tcp_seg(c, s, seq, ack, flags, data), e4(B, A))
        } else {
            tcp4(B4, A4, tcp_seg(s, c, seq, ack, flags, data), e4(A, B))
        };
        push("tcp4", f, None);
    }
    push(
        "udp4 a->b",
        udp4(A4, B4, udp_dgram(5000, 53, b"query"), e4(B, A)),
        None,
    );
    push(
        "udp4 b->a",
        udp4(B4, A4, udp_dgram(53, 5000, b"answer"), e4(A, B)),
        None,
    );
    push("icmp echo request", icmp4(A4, B4, echo(8, 0x1234, 1)), None);
    push("icmp echo reply", icmp4(B4, A4, echo(0, 0x1234, 1)), None);
    // IPv6.
    push(
        "tcp6 syn",
        l4_6(
            a6(),
            b6(),
            IpProtocol::Tcp,
            tcp_seg(40001, 443, 7, 0, tcp::SYN, b""),
            e6(B, A),
        ),
        None,
    );
    push(
        "tcp6 syn-ack",
        l4_6(
            b6(),
            a6(),
            IpProtocol::Tcp,
            tcp_seg(443, 40001, 9, 8, tcp::SYN | tcp::ACK, b""),
            e6(A, B),
        ),
        None,
    );
    push(
        "udp6 a->b",
        l4_6(
            a6(),
            b6(),
            IpProtocol::Udp,
            udp_dgram(6000, 123, b"ntp?"),
            e6(B, A),
        ),
        None,
    );
    push(
        "udp6 b->a",
        l4_6(
            b6(),
            a6(),
            IpProtocol::Udp,
            udp_dgram(123, 6000, b"ntp!"),
            e6(A, B),
        ),
        None,
    );
    push(
        "icmpv6 echo request",
        l4_6(
            a6(),
            b6(),
            IpProtocol::Icmpv6,
            echo(128, 0x4321, 2),
            e6(B, A),
        ),
        None,
    );
    push(
        "icmpv6 echo reply",
        l4_6(
            b6(),
            a6(),
            IpProtocol::Icmpv6,
            echo(129, 0x4321, 2),
            e6(A, B),
        ),
        None,
    );
    let group: Ipv6Addr = "ff02::1:ff00:2".parse().unwrap();
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&b6().octets());
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&A);
    let mut f = l4_6(
        a6(),
        group,
        IpProtocol::Icmpv6,
        ns,
        e6([0x33, 0x33, 0xff, 0, 0, 2], A),
    );
    f[14 + 7] = 255; // hop limit of ND
    push("icmpv6 neighbour solicitation", f, None);
    // VLANs.
    push(
        "vlan 100 udp4",
        udp4(
            A4,
            B4,
            udp_dgram(5001, 53, b"tagged"),
            l2(B, A, &[(0x8100, 100)], EtherType::Ipv4),
        ),
        None,
    );
    push(
        "qinq 10/20 udp4",
        udp4(
            A4,
            B4,
            udp_dgram(5002, 53, b"qinq"),
            l2(B, A, &[(0x88a8, 10), (0x8100, 20)], EtherType::Ipv4),
        ),
        None,
    );
    // IPv6 TCP in QinQ behind hop-by-hop and destination options.
    let seg = tcp_seg(40002, 22, 1, 0, tcp::SYN, b"");
    let pseudo = checksum::pseudo_v6(a6(), b6(), 6, seg.len());
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0, 6, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&with_l4_checksum(IpProtocol::Tcp, pseudo, seg));
    push(
        "qinq ipv6 ext headers tcp",
        ipv6(
            l2(B, A, &[(0x88a8, 10), (0x8100, 20)], EtherType::Ipv6),
            a6(),
            b6(),
            IpProtocol::HopByHop,
            &ext,
        ),
        None,
    );
    // IPv4 fragments: a 32-byte UDP datagram in two.
    let d = udp_dgram(5003, 9, &[0x55; 24]);
    let pseudo = checksum::pseudo_v4(A4, B4, 17, d.len());
    let d = with_l4_checksum(IpProtocol::Udp, pseudo, d);
    for (off, more, part) in [(0u16, true, &d[..16]), (16, false, &d[16..])] {
        let mut f = ipv4(e4(B, A), A4, B4, IpProtocol::Udp, part);
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_frag(0x77, more, off);
        ip.fill_checksum();
        push(
            if off == 0 {
                "ipv4 first fragment"
            } else {
                "ipv4 later fragment"
            },
            f,
            None,
        );
    }
    // IPv6 fragments of the same datagram.
    for (off, more, part) in [(0u16, true, &d[..16]), (16, false, &d[16..])] {
        let mut p = vec![0u8; 8];
        Ipv6FragHeader::new_unchecked(&mut p[..]).fill(IpProtocol::Udp, off, more, 0x99);
        p.extend_from_slice(part);
        push(
            if off == 0 {
                "ipv6 first fragment"
            } else {
                "ipv6 later fragment"
            },
            ipv6(e6(B, A), a6(), b6(), IpProtocol::Ipv6Frag, &p),
            None,
        );
    }
    // LLDP: chassis id, port id, TTL, end.
    let mut lldp = l2([0x01, 0x80, 0xc2, 0, 0, 0x0e], A, &[], EtherType::Lldp);
    lldp.extend_from_slice(&[0x02, 0x07, 0x04]);
    lldp.extend_from_slice(&A);
    lldp.extend_from_slice(&[
        0x04, 0x04, 0x05, b'u', b'p', b'0', 0x06, 0x02, 0x00, 0x78, 0, 0,
    ]);
    push("lldp", pad(lldp), None);
    push(
        "other ethertype",
        pad([l2(B, A, &[], EtherType::Unknown(0x88b5)), vec![0xab; 20]].concat()),
        None,
    );

    // Malformed, one per reason (some twice).
    let good = udp4(A4, B4, udp_dgram(5004, 9, b"abcdefgh"), e4(B, A));
    let edit = |f: &[u8], at: usize, v: u8, refix: bool| {
        let mut f = f.to_vec();
        f[at] = v;
        if refix {
            Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
        }
        f
    };
    let mut bad_sum = good.clone();
    bad_sum[24] ^= 0x5a;
    push(
        "bad ipv4 checksum",
        bad_sum,
        Some(ParseError::BadIpv4Checksum),
    );
    push(
        "bad ihl",
        edit(&good, 14, 0x44, false),
        Some(ParseError::BadIhl),
    );
    push(
        "ipv4 version 5",
        edit(&good, 14, 0x55, false),
        Some(ParseError::BadIpVersion),
    );
    push(
        "ipv4 total length beyond the frame",
        edit(&good, 17, 200, true),
        Some(ParseError::BadTotalLength),
    );
    push(
        "ipv4 truncated",
        [l2(B, A, &[], EtherType::Ipv4), vec![0x45; 10]].concat(),
        Some(ParseError::Truncated),
    );
    push(
        "udp length 7",
        edit(&good, 39, 7, true),
        Some(ParseError::BadL4Header),
    );
    let mut tcp_bad = tcp4(A4, B4, tcp_seg(40003, 80, 1, 0, tcp::SYN, b""), e4(B, A));
    tcp_bad[34 + 12] = 0x40;
    push("tcp data offset 4", tcp_bad, Some(ParseError::BadL4Header));
    push(
        "three vlan tags",
        udp4(
            A4,
            B4,
            udp_dgram(5005, 9, b"3tags"),
            l2(
                B,
                A,
                &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)],
                EtherType::Ipv4,
            ),
        ),
        Some(ParseError::TooManyVlanTags),
    );
    let mut nine = Vec::new();
    for i in 0..9 {
        nine.extend_from_slice(&[if i == 8 { 59 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
    }
    push(
        "nine extension headers",
        ipv6(e6(B, A), a6(), b6(), IpProtocol::HopByHop, &nine),
        Some(ParseError::TooManyExtHeaders),
    );
    let mut short6 = ipv6(
        e6(B, A),
        a6(),
        b6(),
        IpProtocol::Udp,
        &udp_dgram(7, 7, b"x"),
    );
    short6[19] = 80; // payload length beyond the frame
    push(
        "ipv6 payload length beyond the frame",
        short6,
        Some(ParseError::BadTotalLength),
    );
    push(
        "arp truncated",
        [
            l2([0xff; 6], A, &[], EtherType::Arp),
            vec![0, 1, 8, 0, 6, 4],
        ]
        .concat(),
        Some(ParseError::Truncated),
    );
    out
}

/// A classic pcap file (microsecond timestamps, little-endian) of `frames`, one per
/// millisecond from a fixed start, so that the file is the same on every run.
pub fn pcap(frames: &[FixtureFrame]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        let len = f.bytes.len() as u32;
        let (sec, usec) = (1_767_225_600 + i as u32 / 1000, (i as u32 % 1000) * 1000);
        for v in [sec, usec, len, len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&f.bytes);
    }
    out
}

/// The frames of a classic little-endian microsecond pcap file (what [`pcap`] writes).
pub fn read_pcap(data: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        frames.push(data[at + 16..at + 16 + caplen].to_vec());
        at += 16 + caplen;
    }
    frames
}
