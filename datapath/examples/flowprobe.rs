//! Instruction-count probe for callgrind of the flow-tracking path, without a lab: a worker
//! on in-memory rings forwarding bursts of IPv4/UDP frames spread over N flows up0 -> m0
//! with tracking on or off (the lab's `callgrind.sh` rows in miniature), or the table stage
//! alone (classify, key build, lookup/update, expiry slice) over the same frames. The frames
//! are rewritten between bursts outside the measured function, so callgrind counts only it:
//!
//! ```sh
//! cargo build --release -p isopath-datapath --example flowprobe
//! valgrind --tool=callgrind --toggle-collect='*poll_once*' \
//!     target/release/examples/flowprobe on 10000 2000      # tracking on, 10k flows
//! valgrind --tool=callgrind --toggle-collect='*poll_once*' \
//!     target/release/examples/flowprobe off 10000 2000     # tracking off
//! valgrind --tool=callgrind --toggle-collect='flowprobe::table_burst' \
//!     target/release/examples/flowprobe table 10000 2000
//! valgrind --tool=callgrind --cache-sim=yes --toggle-collect='flowprobe::expire_call' \
//!     target/release/examples/flowprobe expire 1047552 2000  # the bench's expire/1M
//! ```
//!
//! Instructions per frame = the total Ir callgrind prints / (bursts x 64). Every flow is
//! seen once before the counted bursts start (the table's steady state: all hits), and the
//! table has the default capacity (1,048,576). Compare modes and builds with each other, not
//! these figures with the lab's (the in-memory rings stand in for the kernel's).

use std::{hint::black_box, sync::Arc};

use isopath_datapath::{
    flow::{FlowBurst, FlowKey, FlowPacket, FlowParams, FlowTable, Timeouts},
    params::{Burst, ZeroCopy},
    stats::LinkState,
    wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket},
    worker::{
        WorkerBuilder,
        classify::{Policy, Verdicts},
    },
    xsk::mem::MemUmem,
};

const BURST: usize = 64;

/// A 60-byte IPv4/UDP frame 198.18.x.y:sport -> 198.19.0.2:9 of flow `i`.
fn frame(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst([2, 0, 0, 0, 0, 2]);
    e.set_src([2, 0, 0, 0, 0, 1]);
    e.set_ethertype(EtherType::Ipv4);
    let src = [198, 18, (i >> 8) as u8, i as u8];
    Ipv4Packet::new_unchecked(&mut f[14..34]).fill(
        src.into(),
        [198, 19, 0, 2].into(),
        IpProtocol::Udp,
        26,
        64,
        true,
    );
    UdpPacket::new_unchecked(&mut f[34..60]).fill(1024 + (i >> 16) as u16, 9, 18);
    f
}

/// The frames of bursts `0..n_bursts` over `flows` flows (burst `b`, frame `k`: flow
/// `(b * 64 + k) % flows`), cycled.
fn bursts(flows: u32) -> Vec<Vec<Vec<u8>>> {
    let n = (flows as usize).div_ceil(BURST).max(1);
    (0..n)
        .map(|b| {
            (0..BURST)
                .map(|k| frame(((b * BURST + k) as u32) % flows))
                .collect()
        })
        .collect()
}

#[inline(never)]
fn table_burst(
    t: &mut FlowTable,
    vs: &mut Verdicts,
    fb: &mut FlowBurst,
    frames: &[Vec<u8>],
    now: u64,
) {
    vs.classify(frames.iter().map(|f| &f[..]), Policy::default());
    fb.clear();
    for (f, v) in frames.iter().zip(vs.as_slice()) {
        fb.push(f, v, 1, 0);
    }
    black_box(t.track_burst(fb, now));
    black_box(t.expire(now, 64));
}

fn table(flows: u32, n: usize) {
    let mut t = FlowTable::new(&FlowParams::default(), 0).expect("table");
    let ev = t.events();
    let mut vs = Verdicts::new();
    let mut fb = FlowBurst::new();
    let all = bursts(flows);
    let mut now = 1_000_000_000u64;
    for b in &all {
        table_burst(&mut t, &mut vs, &mut fb, b, now);
        while ev.pop().is_some() {}
    }
    for i in 0..n {
        now += 10_000;
        table_burst(&mut t, &mut vs, &mut fb, &all[i % all.len()], now);
        while ev.pop().is_some() {}
    }
    assert_eq!(t.in_use(), flows, "every flow tracked, none expired");
}

/// A TCP packet of background flow `i`, or a UDP one of transient flow `i` (10.x.y.z:53).
fn packet(i: u32, tcp: bool) -> FlowPacket {
    let mut s = [0u8; 16];
    s[..4].copy_from_slice(&(0x0a00_0000 | (i & 0xff_ffff)).to_be_bytes());
    let mut d = [0u8; 16];
    d[..4].copy_from_slice(&[198, 18, 0, 2]);
    let proto = if tcp { 6 } else { 17 };
    let (key, dir) = FlowKey::new(&s, &d, 1024 + (i >> 24) as u16, 53, proto, false, [0; 2], 0);
    FlowPacket {
        key,
        dir,
        l3_len: 46,
        tcp_flags: if tcp { 0x10 } else { 0 },
        port: 1,
    }
}

#[inline(never)]
fn expire_call(t: &mut FlowTable, now: u64) -> u32 {
    t.expire(now, 1024)
}

/// `expire/{1k,1M}` of the pipeline bench: `n` established TCP flows (a day's timeout) and,
/// each call, 10 UDP flows in (udp_s = 1) and the 10 of eight calls before out.
fn expire(n: u32, calls: usize) {
    let t = Timeouts {
        udp_s: 1,
        udp_stream_s: 1,
        tcp_established_s: 86_400,
        ..Timeouts::default()
    };
    let mut tb =
        FlowTable::new(&FlowParams::new(1 << 20, t, 0, 4096).expect("params"), 0).expect("table");
    let ev = tb.events();
    for i in 0..n {
        tb.track(&packet(i, true), 1_000_000_000).expect("room");
        while ev.pop().is_some() {}
    }
    let mut now = 2_000_000_000u64;
    let mut next = 1u32 << 21;
    let mut expired = 0;
    for _ in 0..calls {
        now += 128_000_000;
        for _ in 0..10 {
            tb.track(&packet(next, false), now).expect("room");
            next += 1;
        }
        while ev.pop().is_some() {}
        expired += expire_call(&mut tb, now);
    }
    assert!(expired as usize >= (calls - 10) * 10, "{expired} expired");
}

fn worker(track: bool, flows: u32, n: usize) {
    let mut b = WorkerBuilder::with_rings(MemUmem::new(1024, 2048, 256));
    for p in ["up0", "m0"] {
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
    b.connect(0, 1);
    if track {
        b = b.flows(&FlowParams::default()).expect("flow table");
    }
    let (mut w, _h) = b.build(None, Burst::new("burst", 64).expect("burst"), 0);
    w.poll_once();
    let all = bursts(flows);
    for i in 0..all.len() + n {
        for f in &all[i % all.len()] {
            assert!(w.rings_mut().deliver("up0", 0, f));
        }
        assert_eq!(w.poll_once(), BURST);
        assert_eq!(w.rings_mut().sent("m0", 0).len(), BURST);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("on", |s| s);
    let flows: u32 = args.get(2).map_or(10_000, |s| s.parse().expect("flows"));
    let n: usize = args.get(3).map_or(1000, |s| s.parse().expect("bursts"));
    assert!(
        (1..=65_536).contains(&flows) || mode == "expire",
        "1 to 65,536 flows"
    );
    match mode {
        "on" => worker(true, flows, n),
        "off" => worker(false, flows, n),
        "table" => table(flows, n),
        "expire" => expire(flows, n),
        other => panic!("mode {other}: on, off or table"),
    }
    println!("{mode}: {n} bursts of {BURST} frames over {flows} flows");
}
