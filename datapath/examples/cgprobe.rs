//! Instruction-count probe for callgrind, without a lab: the classify pass over bursts of one
//! kind of frame, or a worker on in-memory rings forwarding bursts up0 -> m0 (plain) or
//! up0 -> bond0 over m0/m1 (bond). The measured work is in one out-of-line function per mode,
//! so callgrind counts only it:
//!
//! ```sh
//! cargo build --release -p isopath-datapath --example cgprobe
//! valgrind --tool=callgrind --toggle-collect='cgprobe::classify_bursts' \
//!     target/release/examples/cgprobe classify ipv4_udp 1000
//! valgrind --tool=callgrind --toggle-collect='*poll_once*' \
//!     target/release/examples/cgprobe bond ipv4_udp 1000
//! ```
//!
//! Instructions per frame = the total Ir callgrind prints / (bursts x 64). In the worker modes
//! the in-memory rings' share is counted too (their RX, TX and completion work stands in for
//! the kernel rings'); compare modes and builds, not these figures with the lab's.
//! Kinds: `ipv4_udp`, `ipv4_tcp`, `ipv6_udp`, `ipv6_tcp_ext` (two extension headers),
//! `vlan_qinq` (IPv4/UDP behind two tags).

use std::{hint::black_box, sync::Arc};

use isopath_datapath::{
    bond::{BondShared, BondView, Mailbox, Punt, SeenMacs},
    params::{Burst, ZeroCopy},
    stats::LinkState,
    wire::{self, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, tcp},
    worker::{
        WorkerBuilder,
        classify::{Policy, Verdicts},
    },
    xsk::mem::MemUmem,
};

const BURST: usize = 64;

fn frame(kind: &str, sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst([2, 0, 0, 0, 0, 2]);
    e.set_src([2, 0, 0, 0, 0, 1]);
    let (v6, tcp_l4, ext) = match kind {
        "ipv4_udp" | "vlan_qinq" => (false, false, false),
        "ipv4_tcp" => (false, true, false),
        "ipv6_udp" => (true, false, false),
        "ipv6_tcp_ext" => (true, true, true),
        other => panic!("unknown kind {other}"),
    };
    if kind == "vlan_qinq" {
        f.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0, 0, 20]);
    }
    let l3: u16 = if v6 { EtherType::Ipv6 } else { EtherType::Ipv4 }.into();
    f.extend_from_slice(&l3.to_be_bytes());
    let l3_at = f.len();
    let mut l4 = if tcp_l4 {
        let mut t = vec![0u8; 20];
        wire::TcpPacket::new_unchecked(&mut t[..]).fill(sport, 80, 1, 0, tcp::SYN, 64240);
        t
    } else {
        let mut u = vec![0u8; 8 + 18];
        wire::UdpPacket::new_unchecked(&mut u[..]).fill(sport, 9, 18);
        u
    };
    let proto = if tcp_l4 {
        IpProtocol::Tcp
    } else {
        IpProtocol::Udp
    };
    if v6 {
        let (first, mut payload) = if ext {
            let mut p = vec![
                60,
                0,
                1,
                4,
                0,
                0,
                0,
                0,
                u8::from(proto),
                0,
                1,
                4,
                0,
                0,
                0,
                0,
            ];
            p.append(&mut l4);
            (IpProtocol::HopByHop, p)
        } else {
            (proto, l4)
        };
        f.resize(l3_at + 40, 0);
        Ipv6Packet::new_unchecked(&mut f[l3_at..]).fill(
            "2001:2::1".parse().unwrap(),
            "2001:2::2".parse().unwrap(),
            first,
            payload.len(),
            64,
        );
        f.append(&mut payload);
    } else {
        f.resize(l3_at + 20, 0);
        Ipv4Packet::new_unchecked(&mut f[l3_at..]).fill(
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            proto,
            l4.len(),
            64,
            true,
        );
        f.append(&mut l4);
    }
    f.resize(f.len().max(60), 0);
    let h = wire::parse(&f);
    assert_eq!((h.error, h.sport), (None, sport), "{kind}");
    f
}

#[inline(never)]
fn classify_bursts(vs: &mut Verdicts, frames: &[Vec<u8>], policy: Policy, bursts: usize) {
    for _ in 0..bursts {
        vs.classify(frames.iter().map(|f| &f[..]), policy);
        black_box(vs.tally());
    }
}

fn worker_bursts(bond: bool, frames: &[Vec<u8>], bursts: usize) {
    let mut b = WorkerBuilder::with_rings(MemUmem::new(1024, 2048, 256));
    for p in ["up0", "m0", "m1"] {
        b.add_queue(
            p,
            0,
            ZeroCopy::Auto,
            0,
            Arc::new(LinkState::new(true)),
            Arc::default(),
        )
        .expect("in-memory queue");
    }
    if bond {
        let shared = Arc::new(BondShared::new());
        shared.set(BondView::new(Some(0), None, false));
        let i = b.add_bond(
            "bond0",
            shared,
            Arc::new(Mailbox::new(16)),
            Some(Arc::new(SeenMacs::new(256))),
            Arc::default(),
            Arc::new(Punt::new()),
        );
        b.add_member(i, 0, 1);
        b.add_member(i, 1, 2);
        b.connect_bond(0, i);
    } else {
        b.connect(0, 1);
    }
    let (mut w, _h) = b.build(None, Burst::new("burst", 64).expect("burst"), 0);
    w.poll_once();
    for _ in 0..bursts {
        for f in frames {
            assert!(w.rings_mut().deliver("up0", 0, f));
        }
        assert_eq!(w.poll_once(), BURST);
        assert_eq!(w.rings_mut().sent("m0", 0).len(), BURST);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, kind) = (
        args.get(1).map_or("classify", |s| s),
        args.get(2).map_or("ipv4_udp", |s| s),
    );
    let bursts: usize = args.get(3).map_or(1000, |s| s.parse().expect("bursts"));
    let frames: Vec<Vec<u8>> = (0..BURST as u16).map(|i| frame(kind, 10_000 + i)).collect();
    match mode {
        "classify" => {
            let mut vs = Verdicts::new();
            let policy = Policy {
                own_mac: wire::ethernet::mac_u64(&[2, 0, 0, 0, 0xb, 1]),
                punt_nd: true,
                strict: false,
            };
            classify_bursts(&mut vs, &frames, policy, bursts);
        }
        "plain" => worker_bursts(false, &frames, bursts),
        "bond" => worker_bursts(true, &frames, bursts),
        other => panic!("mode {other}: classify, plain or bond"),
    }
    println!("{mode} {kind}: {bursts} bursts of {BURST} frames");
}
