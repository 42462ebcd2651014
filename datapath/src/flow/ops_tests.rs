//! Flushes, the event ring, and the burst path against the one-packet path.

use super::{tests::*, *};
use crate::{
    wire::tcp::ACK,
    worker::classify::{Policy, Verdicts},
};

fn at_port(mut p: FlowPacket, port: u8) -> FlowPacket {
    p.port = port;
    p
}

fn flush_all_steps(t: &mut FlowTable, f: Flush, budget: u32) -> (u32, u32) {
    let (mut removed, mut calls, mut from) = (0, 0, 0);
    loop {
        let p = t.flush(&f, from, budget, 10 * S);
        removed += p.removed;
        calls += 1;
        match p.next {
            Some(n) => from = n,
            None => return (removed, calls),
        }
    }
}

#[test]
fn flush_by_port_covers_both_directions() {
    let mut t = FlowTable::with_seed(&params(256), 0, 10).unwrap();
    // Flow 1 entered on port 3 (originator); flow 2's reply came in on port 3; flow 3 never
    // touched port 3; flow 4 is unreplied from port 5 (its reply port is unset, not 0).
    let f1 = pkt(0x0a00_0001, 1, 0x0a00_0002, 2, 17, 0);
    t.track(&at_port(f1, 3), S).unwrap();
    let f2 = pkt(0x0a00_0003, 1, 0x0a00_0004, 2, 17, 0);
    t.track(&at_port(f2, 4), S).unwrap();
    t.track(&at_port(pkt(0x0a00_0004, 2, 0x0a00_0003, 1, 17, 0), 3), S)
        .unwrap();
    let f3 = pkt(0x0a00_0005, 1, 0x0a00_0006, 2, 17, 0);
    t.track(&at_port(f3, 4), S).unwrap();
    t.track(&at_port(pkt(0x0a00_0006, 2, 0x0a00_0005, 1, 17, 0), 5), S)
        .unwrap();
    let f4 = pkt(0x0a00_0007, 1, 0x0a00_0008, 2, 17, 0);
    t.track(&at_port(f4, 5), S).unwrap();
    assert_eq!(flush_all_steps(&mut t, Flush::Port(3), 1000), (2, 1));
    assert!(t.lookup(&f1.key).is_none() && t.lookup(&f2.key).is_none());
    assert!(t.lookup(&f3.key).is_some() && t.lookup(&f4.key).is_some());
    assert_eq!(
        flush_all_steps(&mut t, Flush::Port(0), 1000),
        (0, 1),
        "no reply port 0"
    );
    assert_eq!(t.counters().flushed.get(), 2);
    let ev = t.events();
    let flushed = std::iter::from_fn(|| ev.pop())
        .filter(|e| e.kind == EventKind::Destroy && e.reason == EndReason::Flush)
        .count();
    assert_eq!(flushed, 2);
}

#[test]
#[cfg_attr(miri, ignore = "too slow under Miri")]
fn flush_by_prefix_zone_and_all_is_bounded_per_call() {
    let mut t = FlowTable::with_seed(&params(1024), 0, 11).unwrap();
    for i in 0..300u32 {
        // 198.18.1.x <-> 198.18.200.x, zone i % 3
        let (key, dir) = FlowKey::new(
            &v4([198, 18, 1, i as u8]),
            &v4([198, 18, 200, (i >> 8) as u8]),
            i as u16,
            80,
            6,
            false,
            [0, 0],
            (i % 3) as u16,
        );
        let p = FlowPacket {
            key,
            dir,
            l3_len: 60,
            tcp_flags: ACK,
            port: 1,
        };
        t.track(&p, S).unwrap();
    }
    let (key6, dir6) = FlowKey::new(
        &"2001:2::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
        &"2001:2:0:5::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        1,
        2,
        17,
        true,
        [0, 0],
        0,
    );
    t.track(
        &FlowPacket {
            key: key6,
            dir: dir6,
            l3_len: 80,
            tcp_flags: 0,
            port: 2,
        },
        S,
    )
    .unwrap();
    assert_eq!(t.in_use(), 301);
    // 198.18.1.128/25 on either side: flows 128..=255 (their b side is 198.18.200.0).
    let pfx = |a: [u8; 4], len| Flush::Prefix {
        addr: v4(a),
        len,
        v6: false,
    };
    let (n, calls) = flush_all_steps(&mut t, pfx([198, 18, 1, 128], 25), 100);
    assert_eq!(n, 128);
    assert_eq!(calls, 11, "1024 slots, 100 per call");
    // The b side: 198.18.200.1/32 holds flows 256..300.
    assert_eq!(
        flush_all_steps(&mut t, pfx([198, 18, 200, 1], 32), 1024).0,
        44
    );
    let v6 = Flush::Prefix {
        addr: "2001:2:0:4::"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        len: 62,
        v6: true,
    };
    assert_eq!(
        flush_all_steps(&mut t, v6, 1024).0,
        1,
        "2001:2:0:5::9 is in /62"
    );
    let left = t.in_use();
    let zone1 = (0..256)
        .filter(|i| !(128..256).contains(i) && i % 3 == 1)
        .count() as u32;
    assert_eq!(flush_all_steps(&mut t, Flush::Zone(1), 1024).0, zone1);
    assert_eq!(flush_all_steps(&mut t, Flush::All, 7).0, left - zone1);
    assert_eq!(t.in_use(), 0);
    // A flushed table takes new flows at once.
    t.track(&pkt(1, 1, 2, 2, 17, 0), 11 * S).unwrap();
    assert_eq!(t.in_use(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "too slow under Miri")]
fn a_full_event_ring_is_counted_and_loses_only_events() {
    let p = FlowParams::new(1024, Timeouts::default(), 0, 16).unwrap();
    let mut t = FlowTable::with_seed(&p, 0, 12).unwrap();
    for i in 0..100u32 {
        t.track(&pkt(0x0a00_0000 | i, 1, 2, 2, 17, 0), S).unwrap();
    }
    let c = t.counters();
    assert_eq!((c.events.get(), c.events_dropped.get()), (16, 84));
    assert_eq!(t.in_use(), 100, "every flow tracked all the same");
    let ev = t.events();
    assert_eq!(ev.len(), 16);
    let e = ev.pop().unwrap();
    assert_eq!(
        (e.kind, e.reason, e.flow.packets),
        (EventKind::New, EndReason::None, [0, 0])
    );
    while ev.pop().is_some() {}
    assert_eq!(t.expire(40 * S, 1000), 100);
    let c = t.counters();
    assert_eq!((c.events.get(), c.events_dropped.get()), (32, 168));
    let e = ev.pop().unwrap();
    assert_eq!(
        (e.kind, e.reason, e.flow.packets),
        (EventKind::Destroy, EndReason::Idle, [1, 0])
    );
    assert_eq!(e.flow.bytes, [100, 0]);
}

fn frame(i: u32, reply: bool) -> Vec<u8> {
    use crate::wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket};
    let mut f = vec![0u8; 60];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst([2, 0, 0, 0, 0, 2]);
    e.set_src([2, 0, 0, 0, 0, 1]);
    e.set_ethertype(EtherType::Ipv4);
    let (a, b) = (
        std::net::Ipv4Addr::from(0x0a00_0000 | i),
        "198.18.0.2".parse().unwrap(),
    );
    let (s, d) = if reply { (b, a) } else { (a, b) };
    Ipv4Packet::new_unchecked(&mut f[14..34]).fill(s, d, IpProtocol::Udp, 18, 64, true);
    let (sp, dp) = if reply {
        (53, 1000 + i as u16)
    } else {
        (1000 + i as u16, 53)
    };
    UdpPacket::new_unchecked(&mut f[34..52]).fill(sp, dp, 10);
    f
}

#[test]
#[cfg_attr(miri, ignore = "too slow under Miri")]
fn the_burst_path_counts_what_the_packet_path_counts() {
    let mut bt = FlowTable::with_seed(&params(4096), 0, 13).unwrap();
    let mut pt = FlowTable::with_seed(&params(4096), 0, 13).unwrap();
    let mut vs = Verdicts::new();
    let mut burst = FlowBurst::new();
    let mut arp = vec![0u8; 60];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    for round in 0..50u32 {
        // 64 frames: a new flow, repeats of recent ones (some twice in the burst), replies,
        // and an ARP frame.
        let frames: Vec<Vec<u8>> = (0..64u32)
            .map(|k| match k {
                0 => arp.clone(),
                _ => frame((round * 7 + k % 13) % 200, k % 3 == 0),
            })
            .collect();
        vs.classify(frames.iter().map(|f| &f[..]), Policy::default());
        burst.clear();
        for (f, v) in frames.iter().zip(vs.as_slice()) {
            burst.push(f, v, 1, 0);
        }
        let now = S + u64::from(round) * 1_000_000;
        assert_eq!(bt.track_burst(&burst, now), 63);
        for p in burst.packets() {
            pt.track(p, now).unwrap();
        }
    }
    assert_eq!(bt.in_use(), pt.in_use());
    assert_eq!(bt.counters().packets.get(), 50 * 63);
    assert_eq!(pt.counters().packets.get(), 50 * 63);
    assert_eq!(bt.counters().skipped[Skip::NotIp as usize].get(), 50);
    for i in 0..200 {
        let p = FlowPacket::from_frame(
            &frame(i, false),
            &crate::worker::classify::classify(&frame(i, false), &Policy::default()),
            1,
            0,
        )
        .unwrap();
        let (a, b) = (bt.lookup(&p.key), pt.lookup(&p.key));
        assert_eq!(a.is_some(), b.is_some());
        if let (Some(a), Some(b)) = (a, b) {
            let (sa, sb) = (bt.get(a).unwrap(), pt.get(b).unwrap());
            assert_eq!(
                (sa.packets, sa.bytes, sa.state),
                (sb.packets, sb.bytes, sb.state)
            );
        }
    }
}

#[test]
fn flush_by_tuple_takes_one_connection_either_way_round_whatever_its_vlan() {
    let mut t = FlowTable::with_seed(&params(256), 0, 10).unwrap();
    let mut tagged = pkt(0x0a00_0001, 1000, 0x0a00_0002, 53, 17, 0);
    (tagged.key, tagged.dir) = FlowKey::new(
        &v4([10, 0, 0, 1]),
        &v4([10, 0, 0, 2]),
        1000,
        53,
        17,
        false,
        [100, 0],
        0,
    );
    t.track(&tagged, S).unwrap();
    // Same addresses, other port; same 5-tuple, other protocol; same 5-tuple, other zone.
    t.track(&pkt(0x0a00_0001, 1001, 0x0a00_0002, 53, 17, 0), S)
        .unwrap();
    t.track(&pkt(0x0a00_0001, 1000, 0x0a00_0002, 53, 6, ACK), S)
        .unwrap();
    let mut zoned = pkt(0x0a00_0001, 1000, 0x0a00_0002, 53, 17, 0);
    (zoned.key, zoned.dir) = FlowKey::new(
        &v4([10, 0, 0, 1]),
        &v4([10, 0, 0, 2]),
        1000,
        53,
        17,
        false,
        [0, 0],
        7,
    );
    t.track(&zoned, S).unwrap();
    // Named from the replier's side, untagged: the tagged flow of zone 0 only.
    let (asked, _) = FlowKey::new(
        &v4([10, 0, 0, 2]),
        &v4([10, 0, 0, 1]),
        53,
        1000,
        17,
        false,
        [0, 0],
        0,
    );
    assert_eq!(flush_all_steps(&mut t, Flush::Tuple(asked), 1000), (1, 1));
    assert!(t.lookup(&tagged.key).is_none());
    assert!(t.lookup(&zoned.key).is_some());
    assert_eq!(t.in_use(), 3);
    assert_eq!(flush_all_steps(&mut t, Flush::Tuple(asked), 1000).0, 0);
}
