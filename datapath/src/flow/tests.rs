//! The flow table's behaviour with an injected clock: keys from frames, the TCP state
//! machine through the table, ageing per state, capacity and eviction.

use super::*;
use crate::wire::{
    self, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
    tcp::{ACK, FIN, PSH, RST, SYN},
};

pub(crate) const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

pub(crate) fn params(cap: u64) -> FlowParams {
    FlowParams::new(cap, Timeouts::default(), 0, 64).unwrap()
}

pub(crate) fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[..4].copy_from_slice(&a);
    x
}

/// A packet from (`src`, `sport`) to (`dst`, `dport`).
pub(crate) fn pkt(src: u32, sport: u16, dst: u32, dport: u16, proto: u8, flags: u8) -> FlowPacket {
    let (key, dir) = FlowKey::new(
        &v4(src.to_be_bytes()),
        &v4(dst.to_be_bytes()),
        sport,
        dport,
        proto,
        false,
        [0, 0],
        0,
    );
    FlowPacket {
        key,
        dir,
        l3_len: 100,
        tcp_flags: flags,
        port: 1,
    }
}

const A: u32 = 0xc612_0001; // 198.18.0.1
const B: u32 = 0xc612_0002; // 198.18.0.2

fn tcp(from_a: bool, flags: u8) -> FlowPacket {
    let mut p = if from_a {
        pkt(A, 40000, B, 80, 6, flags)
    } else {
        pkt(B, 80, A, 40000, 6, flags)
    };
    p.port = if from_a { 1 } else { 2 };
    p
}

fn snap(t: &FlowTable, id: FlowId) -> FlowSnapshot {
    t.get(id).expect("live flow")
}

fn state(t: &FlowTable, id: FlowId) -> FlowState {
    snap(t, id).state
}

fn eth(f: &mut Vec<u8>, l3: EtherType) {
    f.resize(14, 0);
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst([2, 0, 0, 0, 0, 2]);
    e.set_src([2, 0, 0, 0, 0, 1]);
    e.set_ethertype(l3);
}

fn udp4(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    eth(&mut f, EtherType::Ipv4);
    f.resize(14 + 20 + 8 + 4, 0);
    Ipv4Packet::new_unchecked(&mut f[14..]).fill(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        IpProtocol::Udp,
        12,
        64,
        true,
    );
    UdpPacket::new_unchecked(&mut f[34..]).fill(sport, dport, 4);
    f.resize(60, 0);
    f
}

fn tcp6(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = Vec::new();
    eth(&mut f, EtherType::Ipv6);
    f.resize(14 + 40 + 20, 0);
    Ipv6Packet::new_unchecked(&mut f[14..]).fill(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        IpProtocol::Tcp,
        20,
        64,
    );
    TcpPacket::new_unchecked(&mut f[54..]).fill(sport, dport, 1, 0, flags, 1000);
    f
}

fn icmp4(src: &str, dst: &str, ty: u8, ident: u16) -> Vec<u8> {
    let mut f = Vec::new();
    eth(&mut f, EtherType::Ipv4);
    f.resize(14 + 20 + 8, 0);
    Ipv4Packet::new_unchecked(&mut f[14..]).fill(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        IpProtocol::Icmp,
        8,
        64,
        true,
    );
    f[34] = ty;
    f[38..40].copy_from_slice(&ident.to_be_bytes());
    f.resize(60, 0);
    f
}

fn key_of(f: &[u8]) -> Result<(FlowKey, Dir), Skip> {
    FlowKey::from_headers(f, &wire::parse(f), 0)
}

#[test]
fn keys_from_frames_and_what_is_skipped() {
    let (k, d) = key_of(&udp4("198.18.0.1", 5000, "198.18.0.2", 53)).unwrap();
    let (k2, d2) = key_of(&udp4("198.18.0.2", 53, "198.18.0.1", 5000)).unwrap();
    assert_eq!((k, d), (k2, Dir::AtoB));
    assert_eq!(d2, Dir::BtoA);
    assert_eq!(
        (k.port_a(), k.port_b(), k.proto(), k.is_v6()),
        (5000, 53, 17, false)
    );
    assert_eq!(k.ip_a().to_string(), "198.18.0.1");
    let (k6, _) = key_of(&tcp6("2001:2::2", 80, "2001:2::1", 40000, SYN | ACK)).unwrap();
    assert!(k6.is_v6());
    assert_eq!(k6.ip_a().to_string(), "2001:2::1");
    assert_eq!((k6.port_a(), k6.port_b()), (40000, 80));
    // Echo request and reply are one flow; the identifier is the port on both sides.
    let (e1, _) = key_of(&icmp4("198.18.0.1", "198.18.0.2", 8, 77)).unwrap();
    let (e2, _) = key_of(&icmp4("198.18.0.2", "198.18.0.1", 0, 77)).unwrap();
    assert_eq!(e1, e2);
    assert_eq!((e1.port_a(), e1.proto()), (77, 1));
    let mut arp = vec![0u8; 60];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(key_of(&arp), Err(Skip::NotIp));
    let mut bad = udp4("198.18.0.1", 5000, "198.18.0.2", 53);
    bad[24] ^= 0xff;
    assert_eq!(key_of(&bad), Err(Skip::ParseError));
    let mut frag = udp4("198.18.0.1", 5000, "198.18.0.2", 53);
    let mut ip = Ipv4Packet::new_unchecked(&mut frag[14..34]);
    ip.set_frag(1, false, 16);
    ip.fill_checksum();
    assert_eq!(key_of(&frag), Err(Skip::Fragment));
}

#[test]
fn a_tcp_connection_through_every_state() {
    let mut t = FlowTable::with_seed(&params(1024), 0, 1).unwrap();
    let mut now = 5 * S;
    let id = t.track(&tcp(true, SYN), now).unwrap();
    assert_eq!(state(&t, id), FlowState::Tcp(TcpState::SynSent));
    now += MS;
    assert_eq!(t.track(&tcp(false, SYN | ACK), now), Ok(id));
    assert_eq!(state(&t, id), FlowState::Tcp(TcpState::SynRecv));
    assert_eq!(t.track(&tcp(true, ACK), now), Ok(id));
    assert_eq!(state(&t, id), FlowState::Tcp(TcpState::Established));
    for _ in 0..10 {
        t.track(&tcp(true, ACK | PSH), now).unwrap();
        t.track(&tcp(false, ACK), now).unwrap();
    }
    t.track(&tcp(false, FIN | ACK), now).unwrap();
    assert_eq!(state(&t, id), FlowState::Tcp(TcpState::FinWait));
    t.track(&tcp(true, ACK), now).unwrap();
    assert_eq!(state(&t, id), FlowState::Tcp(TcpState::FinWait));
    t.track(&tcp(true, FIN | ACK), now).unwrap();
    assert_eq!(state(&t, id), FlowState::Tcp(TcpState::TimeWait));
    t.track(&tcp(false, ACK), now).unwrap();
    let s = snap(&t, id);
    assert_eq!(s.packets, [14, 13]);
    assert_eq!(s.bytes, [1400, 1300]);
    assert_eq!(s.ingress, [1, 2]);
    assert_eq!(s.tcp_flags, [SYN | ACK | PSH | FIN, SYN | ACK | FIN]);
    assert!(!s.orig_is_b);
    assert_eq!(s.first_seen_ns, 5 * S);
    assert_eq!(s.last_seen_ns, now);
    assert_eq!(s.expires_in_ms, 120_000);
    let ((src, sp), (dst, dp)) = s.orig();
    assert_eq!(
        (src.to_string(), sp, dst.to_string(), dp),
        ("198.18.0.1".into(), 40000, "198.18.0.2".into(), 80)
    );
    assert_eq!(t.in_use(), 1);
    // Time-wait ages out after tcp_fin_wait_s, not before.
    assert_eq!(t.expire(now + 119 * S, 1000), 0);
    assert_eq!(t.expire(now + 121 * S, 1000), 1);
    assert_eq!(t.in_use(), 0);
    assert!(t.get(id).is_none());
    assert_eq!(t.counters().expiries.get(), 1);
}

#[test]
fn rst_closes_from_any_state_and_a_syn_reopens() {
    for setup in [
        &[SYN][..],
        &[SYN, SYN | ACK],
        &[SYN, SYN | ACK, ACK],
        &[ACK, FIN | ACK],
    ] {
        for rst_from_a in [true, false] {
            let mut t = FlowTable::with_seed(&params(64), 0, 2).unwrap();
            let mut id = None;
            for (i, &f) in setup.iter().enumerate() {
                id = Some(t.track(&tcp(i % 2 == 0, f), S).unwrap());
            }
            let id = id.unwrap();
            t.track(&tcp(rst_from_a, RST), S).unwrap();
            assert_eq!(state(&t, id), FlowState::Tcp(TcpState::Closed), "{setup:?}");
            assert_eq!(t.expire(S + 9 * S, 100), 0);
            assert_eq!(t.expire(S + 11 * S, 100), 1, "closed ages out in 10 s");
        }
    }
    // A RST or a bare FIN opens nothing.
    let mut t = FlowTable::with_seed(&params(64), 0, 2).unwrap();
    assert_eq!(t.track(&tcp(true, RST), S), Err(Some(Skip::TcpInvalid)));
    assert_eq!(t.track(&tcp(true, FIN), S), Err(Some(Skip::TcpInvalid)));
    assert_eq!(t.counters().skipped[Skip::TcpInvalid as usize].get(), 2);
    // A SYN after the close is a new connection in the same slot.
    let id = t.track(&tcp(true, SYN), S).unwrap();
    t.track(&tcp(false, RST | ACK), S).unwrap();
    let g = snap(&t, id).generation;
    assert_eq!(t.track(&tcp(false, SYN), 2 * S), Ok(id));
    let s = snap(&t, id);
    assert_eq!(s.state, FlowState::Tcp(TcpState::SynSent));
    assert_eq!(
        (s.packets, s.orig_is_b),
        ([1, 0], true),
        "the new originator"
    );
    assert_ne!(s.generation, g);
    assert_eq!(t.counters().reopened.get(), 1);
    let ev = t.events();
    let kinds: Vec<_> = std::iter::from_fn(|| ev.pop())
        .map(|e| (e.kind, e.reason))
        .collect();
    use events::{EndReason as R, EventKind as K};
    assert_eq!(
        kinds,
        [
            (K::New, R::None),
            (K::Destroy, R::Reopen),
            (K::New, R::None)
        ]
    );
}

#[test]
fn mid_stream_pickup_is_established_on_its_first_ack() {
    let mut t = FlowTable::with_seed(&params(64), 0, 3).unwrap();
    let id = t.track(&tcp(false, ACK | PSH), S).unwrap();
    let s = snap(&t, id);
    assert_eq!(s.state, FlowState::Tcp(TcpState::Established));
    assert!(s.orig_is_b, "the first sender is taken as the originator");
    t.track(&tcp(true, ACK), S).unwrap();
    assert_eq!(snap(&t, id).packets, [1, 1]);
    assert_eq!(snap(&t, id).ingress, [2, 1]);
    // A FIN+ACK first: picked up while closing.
    let id2 = t.track(&pkt(A, 1, B, 2, 6, FIN | ACK), S).unwrap();
    assert_eq!(state(&t, id2), FlowState::Tcp(TcpState::FinWait));
}

/// Makes one flow in each state at `t0`; returns (flow, timeout s).
fn one_of_each(t: &mut FlowTable, t0: u64) -> Vec<(FlowId, u64, &'static str)> {
    let mut out = Vec::new();
    let mut port = 1000;
    let mut conn = |t: &mut FlowTable, segs: &[(bool, u8)], proto: u8, secs, name| {
        port += 1;
        let mut id = None;
        for &(from_a, f) in segs {
            let p = if from_a {
                pkt(A, port, B, 80, proto, f)
            } else {
                pkt(B, 80, A, port, proto, f)
            };
            id = Some(t.track(&p, t0).unwrap());
        }
        out.push((id.unwrap(), secs, name));
    };
    conn(t, &[(true, SYN)], 6, 30, "syn-sent");
    conn(t, &[(true, SYN), (false, SYN | ACK)], 6, 30, "syn-recv");
    conn(
        t,
        &[(true, SYN), (false, SYN | ACK), (true, ACK)],
        6,
        300,
        "established",
    );
    conn(t, &[(true, ACK), (true, FIN | ACK)], 6, 120, "fin-wait");
    conn(
        t,
        &[(true, ACK), (true, FIN | ACK), (false, FIN | ACK)],
        6,
        120,
        "time-wait",
    );
    conn(t, &[(true, ACK), (false, RST)], 6, 10, "closed");
    conn(t, &[(true, 0)], 17, 30, "udp");
    conn(t, &[(true, 0), (false, 0)], 17, 120, "udp stream");
    conn(t, &[(true, 0)], 1, 30, "icmp");
    conn(t, &[(true, 0), (false, 0)], 58, 30, "icmpv6");
    conn(t, &[(true, 0), (false, 0)], 47, 120, "gre both ways");
    out
}

#[test]
#[cfg_attr(miri, ignore = "too big for Miri")]
fn ageing_per_state_with_an_injected_clock() {
    let mut t = FlowTable::with_seed(&params(1024), 0, 4).unwrap();
    let t0 = 1000 * S;
    let flows = one_of_each(&mut t, t0);
    let mut now = t0;
    // Step the clock by 100 ms; each flow must be gone within 256 ms after its timeout
    // (a wheel slot is 128 ms) and not a moment before.
    while now < t0 + 301 * S {
        now += 100 * MS;
        t.expire(now, 1_000);
        for &(id, secs, name) in &flows {
            let live = t.get(id).is_some();
            if now < t0 + secs * S {
                assert!(live, "{name} expired early at {} ms", (now - t0) / MS);
            } else if now > t0 + secs * S + 256 * MS {
                assert!(!live, "{name} still live at {} ms", (now - t0) / MS);
            }
        }
    }
    assert_eq!(t.in_use(), 0);
    assert_eq!(t.counters().expiries.get(), flows.len() as u64);
    // A packet moves the deadline: a UDP flow refreshed every 20 s never expires.
    let p = pkt(A, 1, B, 2, 17, 0);
    let id = t.track(&p, now).unwrap();
    for _ in 0..20 {
        now += 20 * S;
        t.track(&p, now).unwrap();
        t.expire(now, 1000);
    }
    assert!(t.get(id).is_some());
    assert_eq!(snap(&t, id).expires_in_ms, 30_000);
    t.expire(now + 31 * S, 1000);
    assert!(t.get(id).is_none());
}

#[test]
#[cfg_attr(miri, ignore = "too big for Miri")]
fn expiry_runs_in_bounded_slices() {
    let mut t = FlowTable::with_seed(&params(20_000), 0, 5).unwrap();
    for i in 0..10_000u32 {
        t.track(&pkt(A, i as u16, B, 9, 17, 0), S).unwrap();
    }
    let mut calls = 0;
    let mut total = 0;
    loop {
        let n = t.expire(40 * S, 256);
        assert!(n <= 256);
        if n == 0 {
            break;
        }
        total += n;
        calls += 1;
    }
    assert_eq!(total, 10_000);
    assert_eq!(calls, 10_000usize.div_ceil(256));
}

#[test]
#[cfg_attr(miri, ignore = "too big for Miri")]
fn all_1048576_flows_insert_and_the_next_is_counted_full() {
    let cap = 1u32 << 20;
    let mut t = FlowTable::with_seed(&params(cap.into()), 0, 6).unwrap();
    for i in 0..cap {
        let p = pkt(0x0a00_0000 | i, 7, B, 9, 17, 0);
        assert!(t.track(&p, S).is_ok(), "flow {i}");
    }
    assert_eq!(t.in_use(), cap);
    // Every flow is established TCP? No: these are UDP, which may be evicted. Make the
    // table hold only live established connections first.
    let mut t = FlowTable::with_seed(&params(cap.into()), 0, 7).unwrap();
    for i in 0..cap {
        let p = pkt(0x0a00_0000 | i, 7, B, 9, 6, ACK);
        assert!(t.track(&p, S).is_ok(), "flow {i}");
    }
    assert_eq!(t.in_use(), cap);
    assert_eq!(t.counters().full.get(), 0);
    let next = pkt(0x0b00_0000, 7, B, 9, 6, ACK);
    assert_eq!(t.track(&next, S), Err(None), "not tracked");
    assert_eq!(t.counters().full.get(), 1);
    assert_eq!(
        t.counters().evictions.get(),
        0,
        "no established flow evicted"
    );
    // Every flow is still found.
    for i in (0..cap).step_by(997) {
        let p = pkt(0x0a00_0000 | i, 7, B, 9, 6, ACK);
        assert!(matches!(t.lookup_or_insert(&p.key, S), Lookup::Hit(_)));
    }
    let per_flow = t.allocated_bytes() as f64 / f64::from(cap);
    eprintln!(
        "{} bytes allocated for {cap} flows: {per_flow:.2} B/flow",
        t.allocated_bytes()
    );
    assert!(per_flow <= 96.0, "{per_flow} B/flow");
}

#[test]
fn eviction_takes_closed_and_idle_flows_never_live_established_ones() {
    let mut t = FlowTable::with_seed(&params(64), 0, 8).unwrap();
    // 20 established connections opened at 1 s and active at 290 s, one closed, one UDP,
    // one established that went idle at 1 s; the rest established from 290 s.
    let live: Vec<FlowPacket> = (0..20u16).map(|i| pkt(A, i, B, 80, 6, ACK)).collect();
    for p in &live {
        t.track(p, S).unwrap();
    }
    let closed = pkt(A, 100, B, 80, 6, ACK);
    t.track(&closed, S).unwrap();
    t.track(&pkt(B, 80, A, 100, 6, RST), S).unwrap();
    let udp = pkt(A, 101, B, 53, 17, 0);
    t.track(&udp, 2 * S).unwrap();
    let idle = pkt(A, 102, B, 80, 6, ACK);
    t.track(&idle, S).unwrap();
    for p in &live {
        t.track(p, 290 * S).unwrap();
    }
    for i in 0..41u16 {
        t.track(&pkt(A, 500 + i, B, 80, 6, ACK), 290 * S).unwrap();
    }
    assert_eq!(t.in_use(), 64);
    // At 302 s `idle` is past its 300 s but not reaped (no expire call): evictable.
    let now = 302 * S;
    let there = |t: &FlowTable, p: &FlowPacket| t.lookup(&p.key).is_some();
    for (i, gone) in [&closed, &udp, &idle].into_iter().enumerate() {
        t.track(&pkt(A, 200 + i as u16, B, 80, 6, ACK), now)
            .unwrap();
        assert!(
            !there(&t, gone),
            "eviction {i}: closed first, then by deadline"
        );
        assert_eq!(t.counters().evictions.get(), i as u64 + 1);
    }
    assert!(live.iter().all(|p| there(&t, p)));
    // Every flow is now live and established: the next is not tracked.
    assert_eq!(t.track(&pkt(A, 300, B, 80, 6, ACK), now), Err(None));
    assert_eq!(
        (t.counters().full.get(), t.counters().evictions.get()),
        (1, 3)
    );
    assert_eq!(t.in_use(), 64);
    let ev = t.events();
    let evicted = std::iter::from_fn(|| ev.pop())
        .filter(|e| e.reason == EndReason::Evict)
        .count();
    assert!(evicted <= 3);
}

#[test]
fn active_timeout_sends_updates_of_long_flows() {
    let p = FlowParams::new(64, Timeouts::default(), 60, 1024).unwrap();
    let mut t = FlowTable::with_seed(&p, 0, 9).unwrap();
    let pk = pkt(A, 1, B, 2, 17, 0);
    let mut now = S;
    t.track(&pk, now).unwrap();
    for _ in 0..36 {
        now += 10 * S;
        t.track(&pk, now).unwrap();
        t.expire(now, 100);
    }
    // 360 s of traffic: updates at 60, 120, ..., 360 s.
    let ev = t.events();
    let updates: Vec<u64> = std::iter::from_fn(|| ev.pop())
        .filter(|e| e.kind == EventKind::Update)
        .map(|e| (e.flow.last_seen_ns - S) / S)
        .collect();
    assert_eq!(updates.len(), 6, "{updates:?}");
}

#[test]
#[cfg_attr(miri, ignore = "3600 expiry calls: too slow for Miri")]
fn a_timeout_beyond_one_turn_of_the_wheel() {
    let to = Timeouts {
        tcp_established_s: 3600,
        ..Timeouts::default()
    };
    let mut t = FlowTable::with_seed(&FlowParams::new(64, to, 0, 64).unwrap(), 0, 14).unwrap();
    let p = tcp(true, ACK);
    t.track(&p, S).unwrap();
    let mut now = S;
    while now < 3600 * S {
        now += S;
        assert_eq!(t.expire(now, 100), 0, "at {} s", now / S);
    }
    now += 2 * S;
    assert_eq!(t.expire(now, 100), 1, "gone after 3600 s idle");
    assert!(t.lookup(&p.key).is_none());
}

/// A reload that shortens a timeout: a flow already in the table expires at its new
/// deadline once [`FlowTable::retime`] has swept the slab, not at the old one; and a reader
/// sees the new time left.
#[test]
fn shorter_timeouts_apply_to_flows_already_in_the_table() {
    let mut t = FlowTable::with_seed(&params(4096), 0, 15).unwrap();
    let t0 = 10 * S;
    let ids: Vec<FlowId> = (0..3000u16)
        .map(|i| t.track(&pkt(A, i, B, 53, 17, 0), t0).unwrap())
        .collect();
    let shorter = Timeouts {
        udp_s: 2,
        ..Timeouts::default()
    };
    assert!(
        t.set_timeouts(shorter, 0),
        "a shorter timeout needs a sweep"
    );
    // In slices, as the worker runs it.
    let mut from = Some(0);
    let mut slices = 0;
    while let Some(f) = from {
        from = t.retime(f, 1024, t0);
        slices += 1;
    }
    assert_eq!(slices, 4);
    assert_eq!(snap(&t, ids[0]).expires_in_ms, 2_000);
    let mut now = t0;
    while now < t0 + 2 * S + 256 * MS {
        now += 100 * MS;
        t.expire(now, 10_000);
        if now < t0 + 2 * S {
            assert_eq!(t.in_use(), 3000, "expired early at {} ms", (now - t0) / MS);
        }
    }
    assert_eq!(t.in_use(), 0, "still live 256 ms after the new 2 s timeout");
    // Longer again: no sweep needed (the lazy wheel puts an early visit back).
    assert!(!t.set_timeouts(Timeouts::default(), 0));
    let id = t.track(&pkt(A, 1, B, 53, 17, 0), now).unwrap();
    assert!(t.set_timeouts(shorter, 0));
    t.expire(now + 3 * S, 100);
    assert!(
        t.get(id).is_some(),
        "without the sweep the old deadline holds"
    );
    assert_eq!(t.retime(0, 4096, now + 3 * S), None);
    // Put back one wheel slot (128 ms) ahead at the earliest.
    t.expire(now + 3 * S + 256 * MS, 100);
    assert!(
        t.get(id).is_none(),
        "after the sweep it is past its new deadline"
    );
}
