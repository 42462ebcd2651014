//! The worker's per-frame pipeline, stage by stage, one burst of 64 frames per iteration
//! (`Throughput::Elements(64)`). Run: `cargo bench -p isopath-datapath --bench pipeline`.
//!
//! Group `pipeline`; ids `STAGE/CASE` with the implementation as parameter:
//! - `parse/ipv4_udp`, `parse/ipv6_tcp_ext`, `parse/vlan_qinq`: our views ([`wire::parse`]:
//!   Ethernet, tags, L3 with the IPv4 header checksum, IPv6 extension headers, L4 ports and
//!   flags) against etherparse 0.21's `LaxSlicedPacket` reading the same fields (with the same
//!   IPv4 checksum check, which etherparse leaves out).
//! - `classify/*`: the whole classify pass over a burst (verdicts and tally).
//! - `hit/*`, `miss_insert/*`, `full/*`, `expire/*`: the flow table (`pipeline/flows.rs`).
//!
//! To add a stage, add a function taking the group and call it from [`pipeline`].

#[path = "pipeline/flows.rs"]
mod flows;

use std::hint::black_box;

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime};
use isopath_datapath::{
    wire::{
        self, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
        VlanHeader, checksum, tcp,
    },
    worker::classify::{Policy, Verdicts},
};

/// Frames per iteration: one burst.
const BURST: usize = 64;

/// 64 frames of one kind, each with its own source port.
fn burst(kind: &str) -> Vec<Vec<u8>> {
    (0..BURST as u16).map(|i| frame(kind, 10_000 + i)).collect()
}

fn frame(kind: &str, sport: u16) -> Vec<u8> {
    let tags: &[(u16, u16)] = match kind {
        "vlan_qinq" => &[(0x88a8, 10), (0x8100, 20)],
        _ => &[],
    };
    let ipv6 = kind == "ipv6_tcp_ext";
    let mut f = vec![0u8; 14 + 4 * tags.len()];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst([2, 0, 0, 0, 0, 2]);
    e.set_src([2, 0, 0, 0, 0, 1]);
    let l3 = if ipv6 {
        EtherType::Ipv6
    } else {
        EtherType::Ipv4
    };
    let types: Vec<u16> = tags.iter().map(|t| t.0).chain([l3.into()]).collect();
    f[12..14].copy_from_slice(&types[0].to_be_bytes());
    for (i, &(_, vid)) in tags.iter().enumerate() {
        let mut v = VlanHeader::new_unchecked(&mut f[14 + 4 * i..]);
        v.set_tci(0, vid);
        v.set_ethertype_raw(types[i + 1]);
    }
    let at = f.len();
    if ipv6 {
        // Hop-by-hop and destination options (8 bytes each), then a TCP SYN.
        let mut p = vec![60, 0, 1, 4, 0, 0, 0, 0, 6, 0, 1, 4, 0, 0, 0, 0];
        let mut t = vec![0u8; 20];
        TcpPacket::new_unchecked(&mut t[..]).fill(sport, 80, 1, 0, tcp::SYN, 64240);
        p.extend_from_slice(&t);
        f.resize(at + 40, 0);
        Ipv6Packet::new_unchecked(&mut f[at..]).fill(
            "2001:2::1".parse().unwrap(),
            "2001:2::2".parse().unwrap(),
            IpProtocol::HopByHop,
            p.len(),
            64,
        );
        f.extend_from_slice(&p);
    } else {
        let mut u = vec![0u8; 8 + 18];
        UdpPacket::new_unchecked(&mut u[..]).fill(sport, 9, 18);
        f.resize(at + 20, 0);
        Ipv4Packet::new_unchecked(&mut f[at..]).fill(
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            IpProtocol::Udp,
            u.len(),
            64,
            true,
        );
        f.extend_from_slice(&u);
    }
    f.resize(f.len().max(60), 0);
    assert_eq!(wire::parse(&f).error, None, "{kind}");
    f
}

/// What both parsers extract from a frame.
#[derive(Debug, Default, PartialEq, Eq)]
struct Fields {
    vlan: [u16; 2],
    proto: u8,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    l3_len: u16,
    ok: bool,
}

#[inline]
fn ours(f: &[u8]) -> Fields {
    let h = wire::parse(f);
    Fields {
        vlan: h.vlan,
        proto: h.proto,
        sport: h.sport,
        dport: h.dport,
        tcp_flags: h.tcp_flags,
        l3_len: h.l3_len,
        ok: h.error.is_none(),
    }
}

#[inline]
fn etherparse(f: &[u8]) -> Fields {
    use etherparse::{LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice};
    let mut out = Fields::default();
    let Ok(p) = LaxSlicedPacket::from_ethernet(f) else {
        return out;
    };
    for (i, ext) in p.link_exts.iter().take(2).enumerate() {
        if let LaxLinkExtSlice::Vlan(v) = ext {
            out.vlan[i] = v.vlan_identifier().value();
        }
    }
    out.ok = p.stop_err.is_none();
    match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            out.ok &= checksum::verify(h.slice());
            out.l3_len = h.total_len();
            out.proto = ip.payload_ip_number().0;
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            out.l3_len = 40 + ip.header().payload_length();
            out.proto = ip.payload().ip_number.0;
        }
        _ => {}
    }
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            out.sport = t.source_port();
            out.dport = t.destination_port();
            out.tcp_flags = t.header_slice()[13];
        }
        Some(TransportSlice::Udp(u)) => {
            out.sport = u.source_port();
            out.dport = u.destination_port();
        }
        _ => {}
    }
    out
}

/// `parse/*`: our views against etherparse on the same bursts.
fn parse(g: &mut BenchmarkGroup<'_, WallTime>) {
    for kind in ["ipv4_udp", "ipv6_tcp_ext", "vlan_qinq"] {
        let frames = burst(kind);
        for f in &frames {
            assert_eq!(ours(f), etherparse(f), "both read {kind} the same");
        }
        let id = format!("parse/{kind}");
        g.bench_with_input(BenchmarkId::new(&id, "isopath"), &frames, |b, fr| {
            b.iter(|| {
                for f in fr {
                    black_box(ours(black_box(f)));
                }
            })
        });
        g.bench_with_input(BenchmarkId::new(&id, "etherparse"), &frames, |b, fr| {
            b.iter(|| {
                for f in fr {
                    black_box(etherparse(black_box(f)));
                }
            })
        });
    }
}

/// `classify/*`: the worker's classify pass over a burst (parse, punt decisions, tally).
fn classify(g: &mut BenchmarkGroup<'_, WallTime>) {
    let mut vs = Verdicts::new();
    for kind in ["ipv4_udp", "ipv6_tcp_ext", "vlan_qinq"] {
        let frames = burst(kind);
        let policy = Policy {
            own_mac: wire::ethernet::mac_u64(&[2, 0, 0, 0, 0xb, 1]),
            punt_nd: true,
            strict: false,
        };
        g.bench_function(
            BenchmarkId::new(format!("classify/{kind}"), "isopath"),
            |b| {
                b.iter(|| {
                    vs.classify(frames.iter().map(|f| black_box(&f[..])), policy);
                    black_box(vs.tally());
                })
            },
        );
    }
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    parse(&mut g);
    classify(&mut g);
    flows::hit(&mut g);
    flows::miss_insert(&mut g);
    flows::full(&mut g);
    flows::expire(&mut g);
    g.finish();
}

criterion::criterion_group!(benches, pipeline);
criterion::criterion_main!(benches);
