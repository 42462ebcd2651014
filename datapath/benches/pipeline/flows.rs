//! The flow stages of the `pipeline` group (included by `pipeline.rs`): `hit/{1,10k,1M}`,
//! `miss_insert/1M`, `full/{1,10k,1M}_{uniform,zipf}`, `expire/{1k,1M}`. One iteration is one
//! burst of 64 frames; headers and bursts are prepared outside the timed part, in batches of
//! [`BATCH`] bursts, and only the table's work (and for `full`, the classify pass) is timed.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{BenchmarkGroup, BenchmarkId, measurement::WallTime};
use isopath_datapath::{
    flow::{FlowBurst, FlowKey, FlowPacket, FlowParams, FlowTable, Flush, Timeouts},
    wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket},
    worker::classify::{Policy, Verdicts},
};

/// Frames per burst.
const BURST: usize = 64;
/// Bursts prepared at a time.
const BATCH: usize = 32;
/// Length of the pre-drawn key sequences.
const SEQ: usize = 1 << 22;
const CAP: u64 = 1 << 20;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Flow `i`'s source address and port (destination 198.18.0.2:53, UDP).
fn endpoint(i: u32) -> ([u8; 4], u16) {
    let a = 0x0a00_0000 | (i & 0xff_ffff);
    (a.to_be_bytes(), 1024 + (i >> 24) as u16)
}

fn packet(i: u32) -> FlowPacket {
    packet_of(i, 17, 0)
}

/// Flow `i` as a TCP connection picked up mid-stream (established).
fn tcp_packet(i: u32) -> FlowPacket {
    packet_of(i, 6, 0x10)
}

fn packet_of(i: u32, proto: u8, tcp_flags: u8) -> FlowPacket {
    let (a, port) = endpoint(i);
    let mut s = [0u8; 16];
    s[..4].copy_from_slice(&a);
    let mut d = [0u8; 16];
    d[..4].copy_from_slice(&[198, 18, 0, 2]);
    let (key, dir) = FlowKey::new(&s, &d, port, 53, proto, false, [0, 0], 0);
    FlowPacket {
        key,
        dir,
        l3_len: 46,
        tcp_flags,
        port: 1,
    }
}

/// `SEQ` flow numbers below `n`: uniform, or Zipf with s = 1.0 (inverse CDF).
fn sequence(n: u32, zipf: bool, seed: u64) -> Vec<u32> {
    let mut r = Rng(seed);
    if !zipf {
        return (0..SEQ).map(|_| (r.next() % u64::from(n)) as u32).collect();
    }
    let mut cdf = Vec::with_capacity(n as usize);
    let mut sum = 0.0;
    for k in 1..=n {
        sum += 1.0 / f64::from(k);
        cdf.push(sum);
    }
    (0..SEQ)
        .map(|_| {
            let u = r.unit() * sum;
            cdf.partition_point(|&c| c < u).min(n as usize - 1) as u32
        })
        .collect()
}

fn params(udp_s: u32) -> FlowParams {
    let t = Timeouts {
        udp_s,
        udp_stream_s: udp_s,
        tcp_established_s: 86_400,
        ..Timeouts::default()
    };
    FlowParams::new(CAP, t, 0, 4096).unwrap()
}

/// A table of capacity 1M holding flows `0..n` (UDP, or established TCP).
fn table(n: u32, udp_s: u32, tcp: bool) -> FlowTable {
    let mut t = FlowTable::with_seed(&params(udp_s), 0, 7).unwrap();
    let ev = t.events();
    for i in 0..n {
        let p = if tcp { tcp_packet(i) } else { packet(i) };
        t.track(&p, 1_000_000_000).unwrap();
        if i % 4096 == 0 {
            while ev.pop().is_some() {}
        }
    }
    while ev.pop().is_some() {}
    t
}

fn label(n: u32) -> &'static str {
    match n {
        1 => "1",
        1_000 => "1k",
        10_000 => "10k",
        _ => "1M",
    }
}

/// Times `iters` bursts in batches: `prep` fills batch slot `b` for burst number `k`
/// (untimed), `run` does burst `b` (timed); both work on the state `st`.
fn batched<S, P, R>(iters: u64, st: &mut S, mut prep: P, mut run: R) -> Duration
where
    P: FnMut(&mut S, usize, u64),
    R: FnMut(&mut S, usize, u64),
{
    let mut total = Duration::ZERO;
    let mut k = 0u64;
    while k < iters {
        let n = (iters - k).min(BATCH as u64) as usize;
        for b in 0..n {
            prep(st, b, k + b as u64);
        }
        let t0 = Instant::now();
        for b in 0..n {
            run(st, b, k + b as u64);
        }
        total += t0.elapsed();
        k += n as u64;
    }
    total
}

/// `hit/{1,10k,1M}`: bursts of 64 packets of flows already in the table (lookup and update).
pub(crate) fn hit(g: &mut BenchmarkGroup<'_, WallTime>) {
    for n in [1u32, 10_000, 1 << 20] {
        let seq = sequence(n, false, 1);
        let bursts: Vec<FlowBurst> = (0..BATCH).map(|_| FlowBurst::new()).collect();
        let mut st = (table(n, 86_400, false), bursts, 0usize);
        g.bench_function(BenchmarkId::new("hit", label(n)), |b| {
            b.iter_custom(|iters| {
                batched(
                    iters,
                    &mut st,
                    |(_, bursts, pos), s, _| {
                        bursts[s].clear();
                        for _ in 0..BURST {
                            bursts[s].push_packet(packet(seq[*pos % SEQ]));
                            *pos += 1;
                        }
                    },
                    |(t, bursts, _), s, k| {
                        black_box(t.track_burst(&bursts[s], 2_000_000_000 + k * 1000));
                    },
                )
            })
        });
    }
}

/// `miss_insert/1M`: bursts of 64 new flows into a table of 1M (flushed, untimed, when
/// nearly full).
pub(crate) fn miss_insert(g: &mut BenchmarkGroup<'_, WallTime>) {
    let t = table(0, 86_400, false);
    let ev = t.events();
    let bursts: Vec<FlowBurst> = (0..BATCH).map(|_| FlowBurst::new()).collect();
    let mut st = (t, bursts, 0u32);
    g.bench_function(BenchmarkId::new("miss_insert", "1M"), |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                &mut st,
                |(t, bursts, next), s, _| {
                    if s == 0 {
                        while ev.pop().is_some() {}
                        if t.in_use() as u64 > CAP - (BATCH * BURST) as u64 {
                            let mut from = Some(0);
                            while let Some(f) = from {
                                from = t.flush(&Flush::All, f, 1 << 20, 3_000_000_000).next;
                            }
                            while ev.pop().is_some() {}
                        }
                    }
                    bursts[s].clear();
                    for _ in 0..BURST {
                        bursts[s].push_packet(packet(*next));
                        *next = next.wrapping_add(1);
                    }
                },
                |(t, bursts, _), s, k| {
                    black_box(t.track_burst(&bursts[s], 3_000_000_000 + k * 1000));
                },
            )
        })
    });
}

/// A 60-byte IPv4/UDP frame of flow `i`.
fn write_frame(f: &mut [u8], i: u32) {
    let (a, port) = endpoint(i);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
    ip.set_src(a.into());
    ip.fill_checksum();
    UdpPacket::new_unchecked(&mut f[34..42]).set_src_port(port);
}

fn blank_frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst([2, 0, 0, 0, 0, 2]);
    e.set_src([2, 0, 0, 0, 0, 1]);
    e.set_ethertype(EtherType::Ipv4);
    Ipv4Packet::new_unchecked(&mut f[14..34]).fill(
        "10.0.0.0".parse().unwrap(),
        "198.18.0.2".parse().unwrap(),
        IpProtocol::Udp,
        26,
        64,
        true,
    );
    UdpPacket::new_unchecked(&mut f[34..60]).fill(1024, 53, 18);
    f
}

/// `full/{1,10k,1M}_{uniform,zipf}`: classify + lookup/insert + counters and state + an
/// expiry slice, over frames whose headers are rewritten (untimed) from a 4M-key sequence.
pub(crate) fn full(g: &mut BenchmarkGroup<'_, WallTime>) {
    for n in [1u32, 10_000, 1 << 20] {
        let mut t = table(n, 86_400, false);
        for zipf in [false, true] {
            let seq = sequence(n, zipf, 2);
            let frames: Vec<Vec<Vec<u8>>> = (0..BATCH)
                .map(|_| (0..BURST).map(|_| blank_frame()).collect())
                .collect();
            let mut vs = Verdicts::new();
            let mut burst = FlowBurst::new();
            let mut st = (frames, 0usize);
            let id = format!("{}_{}", label(n), if zipf { "zipf" } else { "uniform" });
            g.bench_function(BenchmarkId::new("full", id), |b| {
                b.iter_custom(|iters| {
                    batched(
                        iters,
                        &mut st,
                        |(frames, pos), s, _| {
                            for f in &mut frames[s] {
                                write_frame(f, seq[*pos % SEQ]);
                                *pos += 1;
                            }
                        },
                        |(frames, _), s, k| {
                            let now = 4_000_000_000 + k * 1000;
                            vs.classify(frames[s].iter().map(|f| &f[..]), Policy::default());
                            burst.clear();
                            for (f, v) in frames[s].iter().zip(vs.as_slice()) {
                                burst.push(f, v, 1, 0);
                            }
                            black_box(t.track_burst(&burst, now));
                            black_box(t.expire(now, 64));
                        },
                    )
                })
            });
        }
    }
}

/// `expire/{1k,1M}`: an expiry call that finds 10 flows due, in a table of 1k or 1M live
/// flows. Each iteration the clock moves one wheel slot (128 ms); 10 UDP flows (udp_s = 1)
/// are inserted untimed, so each call expires the 10 inserted eight slots before.
pub(crate) fn expire(g: &mut BenchmarkGroup<'_, WallTime>) {
    // "1M": the table full but for room for the flows coming and going (80 at a time).
    for n in [1_000u32, (1 << 20) - 1024] {
        let mut t = table(n, 1, true);
        let mut ev = t.events();
        let mut next = 1u32 << 21;
        let mut now = 2_000_000_000u64;
        let mut expired = 0u64;
        let mut calls = 0u64;
        g.bench_function(BenchmarkId::new("expire", label(n)), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // The background flows live a day; start again long before.
                    if now > 80_000_000_000_000 {
                        t = table(n, 1, true);
                        ev = t.events();
                        now = 2_000_000_000;
                    }
                    now += 128_000_000;
                    for _ in 0..10 {
                        t.track(&packet(next), now).unwrap();
                        next = ((next + 1) % (1 << 24)) | (1 << 21);
                    }
                    while ev.pop().is_some() {}
                    let t0 = Instant::now();
                    let e = t.expire(now, 1024);
                    total += t0.elapsed();
                    expired += u64::from(e);
                    calls += 1;
                }
                total
            })
        });
        assert!(
            calls < 100 || expired >= (calls - 10) * 10,
            "{expired} in {calls} calls"
        );
    }
}
