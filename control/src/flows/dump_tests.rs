//! The flow dump against real flow tables: parts, resumption, churn, filters, limits and
//! cursors.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use isopath_datapath::flow::{FlowPacket, FlowParams, FlowTable, Timeouts};
use isopath_proto::{
    dump::Dumper,
    frame::MIN_DUMP_BUF,
    msg::Message,
    nl::{NLM_F_DUMP_INTR, messages},
};

use super::*;

const S: u64 = 1_000_000_000;

fn table(cap: u64) -> FlowTable {
    let p = FlowParams::new(cap, Timeouts::default(), 0, 64).unwrap();
    FlowTable::with_seed(&p, 0, 7).unwrap()
}

/// One flow the tests create: its originator's 5-tuple, zone, ports, packets each way.
#[derive(Debug, Clone, Copy)]
struct Spec {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    zone: u16,
    in_port: u8,
    reply_port: u8,
    orig: u64,
    reply: u64,
}

fn bytes(a: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v) => b[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => b = v.octets(),
    }
    b
}

fn packet(s: &Spec, reply: bool, flags: u8) -> FlowPacket {
    let (a, b, pa, pb) = if reply {
        (s.dst, s.src, s.dport, s.sport)
    } else {
        (s.src, s.dst, s.sport, s.dport)
    };
    let (key, dir) = FlowKey::new(
        &bytes(a),
        &bytes(b),
        pa,
        pb,
        s.proto,
        a.is_ipv6(),
        [0, 0],
        s.zone,
    );
    FlowPacket {
        key,
        dir,
        l3_len: 100,
        tcp_flags: flags,
        port: if reply { s.reply_port } else { s.in_port },
    }
}

fn add(t: &mut FlowTable, s: &Spec, now: u64) {
    // TCP: a mid-stream ACK picks the flow up, established (conntrack's loose mode).
    let flags = if s.proto == 6 { 0x10 } else { 0 };
    for _ in 0..s.orig {
        t.track(&packet(s, false, flags), now).unwrap();
    }
    for _ in 0..s.reply {
        t.track(&packet(s, true, flags), now).unwrap();
    }
}

fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (i & 0xffff)))
}

fn udp(i: u32) -> Spec {
    Spec {
        src: v4(i),
        dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        sport: 1024 + (i % 50_000) as u16,
        dport: 53,
        proto: 17,
        zone: 0,
        in_port: 1,
        reply_port: 2,
        orig: 1,
        reply: 0,
    }
}

fn links() -> PortLinks {
    PortLinks(vec![11, 12, 13])
}

fn clock() -> Clock {
    Clock {
        flow_ns: 0,
        unix_ns: 1_700_000_000 * S,
    }
}

/// Runs a dump to its end in parts of `buf` bytes; `between` runs after every part. Returns
/// each record's id with the part it came in, and whether any part was marked interrupted.
fn run(mut d: Dumper<FlowDump>, buf: usize, mut between: impl FnMut(usize)) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let mut b = vec![0u8; buf];
    let mut part = 0;
    while let Some(p) = d.next_part(&mut b) {
        for m in messages(&b[..p.len]) {
            let m = m.unwrap();
            assert_eq!(
                m.header.flags & NLM_F_DUMP_INTR,
                0,
                "flows are loosely consistent"
            );
            match Message::decode(&m, isopath_proto::attr::Ctx { strict: true }).unwrap() {
                Message::NewFlow(f) => out.push((f.id, part)),
                Message::Done(done) => assert_eq!(done.status, 0),
                other => panic!("{other:?}"),
            }
        }
        part += 1;
        between(part);
        assert!(part < 100_000, "the dump does not end");
    }
    out
}

fn dump_of(
    t: &FlowTable,
    select: Select,
    limit: Option<u64>,
    cursors: &Cursors,
) -> Dumper<FlowDump> {
    let d = FlowDump::new(
        vec![(0, t.reader(), clock())],
        links(),
        select,
        limit,
        cursors,
    );
    Dumper::new(d, 1, 2)
}

#[test]
fn a_dump_resumed_across_many_parts_has_every_flow_exactly_once() {
    let mut t = table(8192);
    for i in 0..5000 {
        add(&mut t, &udp(i), S);
    }
    let cursors = Cursors::default();
    let got = run(
        dump_of(&t, Select::all(), None, &cursors),
        MIN_DUMP_BUF,
        |_| {},
    );
    let ids: HashSet<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(got.len(), 5000);
    assert_eq!(ids.len(), 5000, "no duplicates");
    let parts = got.last().unwrap().1 + 1;
    assert!(
        parts >= 1000,
        "1 KiB parts hold a few records each: {parts}"
    );
    assert_eq!(cursors.live(), 0, "done released the cursor");
}

#[test]
fn a_flow_alive_for_the_whole_dump_appears_once_while_a_fifth_of_the_table_churns() {
    let mut t = table(16384);
    let long: Vec<Spec> = (0..4000).map(udp).collect();
    for s in &long {
        add(&mut t, s, S);
    }
    // Short-lived flows, interleaved in the slab with the long ones.
    let short = |i: u32| Spec {
        sport: 7,
        ..udp(100_000 + i)
    };
    for i in 0..1000 {
        add(&mut t, &short(i), S);
    }
    let cursors = Cursors::default();
    let d = FlowDump::new(
        vec![(0, t.reader(), clock())],
        links(),
        Select::all(),
        None,
        &cursors,
    );
    let mut d = Dumper::new(d, 1, 2);
    let mut b = vec![0u8; 4096];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let (mut created, mut removed, mut next_short) = (0u32, 0u32, 1000u32);
    while let Some(p) = d.next_part(&mut b) {
        for m in messages(&b[..p.len]) {
            if let Message::NewFlow(f) =
                Message::decode(&m.unwrap(), isopath_proto::attr::Ctx { strict: false }).unwrap()
            {
                *seen.entry(f.id).or_default() += 1;
            }
        }
        // Between parts: 5 new short flows, and 5 old short ones flushed.
        for _ in 0..5 {
            add(&mut t, &short(next_short), S);
            next_short += 1;
            created += 1;
        }
        for _ in 0..5 {
            let k = packet(&short(removed), false, 0).key;
            removed += t.flush(&Flush::Tuple(k), 0, 1 << 20, S).removed;
        }
    }
    assert!(
        f64::from(created + removed) >= 0.2 * 5000.0,
        "churn {created} created + {removed} removed"
    );
    let r = t.reader();
    for s in &long {
        let key = packet(s, false, 0).key;
        let id = t.lookup(&key).expect("long-lived flow");
        let f = t.get(id).unwrap();
        let wire = flow_id(0, f.slot, f.generation);
        assert_eq!(seen.get(&wire), Some(&1), "{s:?} seen once");
    }
    drop(r);
    assert!(seen.values().all(|&n| n == 1), "no flow twice");
}

/// A deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
}

fn random_spec(r: &mut Rng, i: u32) -> Spec {
    let v6 = r.next().is_multiple_of(4);
    let host = |r: &mut Rng| -> IpAddr {
        let n = (r.next() % 64) as u16;
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, n % 4, 0, 0, 0, n))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 18, (n % 4) as u8, n as u8))
        }
    };
    let proto = r.pick(&[6u8, 17, 17, if v6 { 58 } else { 1 }, 47]);
    let ports = proto != 47;
    Spec {
        src: host(r),
        dst: host(r),
        sport: if ports { 1000 + (i % 30_000) as u16 } else { 0 },
        dport: if ports {
            r.pick(&[53u16, 80, 443, 1000])
        } else {
            0
        },
        proto,
        zone: r.pick(&[0u16, 0, 1, 2]),
        in_port: r.pick(&[1u8, 2, 3]),
        reply_port: r.pick(&[1u8, 2, 3]),
        orig: 1 + r.next() % 4,
        reply: r.next() % 3,
    }
}

/// The reference: what each filter means, written against the flows the test made.
fn reference(s: &Spec, f: &FlowFilter) -> bool {
    let in_prefix = |a: IpAddr| match (f.addr, a) {
        (None, _) => true,
        (Some(IpAddr::V4(p)), IpAddr::V4(a)) => {
            let len = u32::from(f.prefix_len.unwrap_or(32));
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(p) & m == u32::from(a) & m
        }
        (Some(IpAddr::V6(p)), IpAddr::V6(a)) => {
            let len = u32::from(f.prefix_len.unwrap_or(128));
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(p) & m == u128::from(a) & m
        }
        _ => false,
    };
    let ifindex = |p: u8| 10 + u32::from(p);
    let ports = matches!(s.proto, 6 | 17 | 1 | 58);
    f.zone.is_none_or(|z| s.zone == z)
        && f.proto.is_none_or(|p| s.proto == p)
        && f.min_packets.is_none_or(|n| s.orig + s.reply >= n)
        && f.l4_port.is_none_or(|p| ports && (s.sport == p || s.dport == p))
        // Every TCP flow here was picked up mid-stream: established.
        && f.tcp_state.is_none_or(|t| s.proto == 6 && t == TcpState::Established)
        && f.link.is_none_or(|l| {
            ifindex(s.in_port) == l || (s.reply > 0 && ifindex(s.reply_port) == l)
        })
        && (f.addr.is_none() || in_prefix(s.src) || in_prefix(s.dst))
}

#[test]
fn every_filter_selects_what_a_brute_force_reference_does() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut t = table(8192);
    let mut specs: HashMap<(IpAddr, IpAddr, u16, u16, u8, u16), Spec> = HashMap::new();
    for i in 0..3000 {
        let s = random_spec(&mut r, i);
        // One flow per connection either way round: skip a spec that names one already made.
        let k = |s: &Spec| (s.src, s.dst, s.sport, s.dport, s.proto, s.zone);
        let rev = Spec {
            src: s.dst,
            dst: s.src,
            sport: s.dport,
            dport: s.sport,
            ..s
        };
        if s.src == s.dst || specs.contains_key(&k(&s)) || specs.contains_key(&k(&rev)) {
            continue;
        }
        add(&mut t, &s, S);
        specs.insert(k(&s), s);
    }
    assert_eq!(t.in_use() as usize, specs.len());
    let filters: Vec<FlowFilter> = (0..200)
        .map(|_| {
            let mut f = FlowFilter::any();
            let pick = r.next();
            if pick & 1 != 0 {
                f.zone = Some(r.pick(&[0, 1, 2, 9]));
            }
            if pick & 2 != 0 {
                f.link = Some(r.pick(&[11, 12, 13, 99]));
            }
            if pick & 4 != 0 {
                let s = r.pick(&specs.values().copied().collect::<Vec<_>>());
                f.addr = Some(s.src);
                let max = if s.src.is_ipv6() { 128 } else { 32 };
                f.prefix_len = Some(r.pick(&[max, max - 2, 24.min(max), 0]));
            }
            if pick & 8 != 0 {
                f.l4_port = Some(r.pick(&[53, 80, 443, 1000, 1001]));
            }
            if pick & 16 != 0 {
                f.proto = Some(r.pick(&[6, 17, 1, 58, 47]));
            }
            if pick & 32 != 0 {
                f.tcp_state = Some(r.pick(&[TcpState::Established, TcpState::SynSent]));
            }
            if pick & 64 != 0 {
                f.min_packets = Some(r.pick(&[1, 2, 4, 6]));
            }
            f
        })
        .collect();
    let mut nonempty = 0;
    for f in &filters {
        let cursors = Cursors::default();
        let d = FlowDump::new(
            vec![(0, t.reader(), clock())],
            PortLinks(vec![11, 12, 13]),
            Select::new(f).unwrap(),
            None,
            &cursors,
        );
        let got: HashSet<u64> = run(Dumper::new(d, 1, 2), 8192, |_| {})
            .into_iter()
            .map(|g| g.0)
            .collect();
        let want: HashSet<u64> = specs
            .values()
            .filter(|s| reference(s, f))
            .map(|s| {
                let id = t.lookup(&packet(s, false, 0).key).unwrap();
                let snap = t.get(id).unwrap();
                flow_id(0, snap.slot, snap.generation)
            })
            .collect();
        assert_eq!(got, want, "filter {f:?}");
        nonempty += usize::from(!want.is_empty() && want.len() < specs.len());
    }
    assert!(
        nonempty >= 50,
        "the filters select something: {nonempty} of 200"
    );
}

#[test]
fn records_carry_the_flow_as_opened_with_links_times_and_state() {
    let mut t = table(1024);
    let s = Spec {
        proto: 6,
        orig: 3,
        reply: 2,
        ..udp(5)
    };
    add(&mut t, &s, 5 * S);
    let cursors = Cursors::default();
    let d = FlowDump::new(
        vec![(3, t.reader(), clock())],
        links(),
        Select::all(),
        None,
        &cursors,
    );
    let mut d = Dumper::new(d, 1, 2);
    let mut b = vec![0u8; 4096];
    let p = d.next_part(&mut b).unwrap();
    let msgs: Vec<Message> = messages(&b[..p.len])
        .map(|m| Message::decode(&m.unwrap(), isopath_proto::attr::Ctx { strict: true }).unwrap())
        .collect();
    let Message::NewFlow(f) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(
        (f.src, f.dst, f.sport, f.dport),
        (s.src, s.dst, Some(s.sport), Some(53))
    );
    assert_eq!((f.packets_orig, f.packets_reply), (3, 2));
    assert_eq!((f.bytes_orig, f.bytes_reply), (300, 200));
    assert_eq!((f.in_link, f.out_link), (Some(11), Some(12)));
    assert_eq!(f.tcp_state, Some(TcpState::Established));
    assert_eq!(f.worker, Some(3));
    assert_eq!(f.id >> 40, 3);
    assert_eq!(f.first_ns, Some(1_700_000_005 * S));
    assert!(f.expires_ms.is_some_and(|ms| ms > 0));
    assert!(matches!(msgs.last(), Some(Message::Done(_))), "{msgs:?}");
}

#[test]
fn a_limit_stops_the_dump_and_a_dropped_dump_releases_its_cursor() {
    let mut t = table(4096);
    for i in 0..1000 {
        add(&mut t, &udp(i), S);
    }
    let cursors = Cursors::default();
    assert_eq!(
        run(dump_of(&t, Select::all(), Some(10), &cursors), 4096, |_| {}).len(),
        10
    );
    let mut d = dump_of(&t, Select::all(), None, &cursors);
    let mut other = dump_of(&t, Select::all(), None, &cursors);
    let mut b = vec![0u8; MIN_DUMP_BUF];
    d.next_part(&mut b).unwrap();
    let first = other.next_part(&mut b).unwrap().records;
    assert!(first > 0);
    assert_eq!(cursors.live(), 2, "two dumps at once");
    drop(d);
    assert_eq!(cursors.live(), 1, "a client gone mid-dump frees its cursor");
    assert_eq!(
        run(other, 65536, |_| {}).len(),
        1000 - first,
        "the other dump goes on"
    );
    assert_eq!(cursors.live(), 0);
}

#[test]
fn a_filter_that_refuses_everything_yields_between_parts() {
    let mut t = table(1 << 17);
    for i in 0..1000 {
        add(&mut t, &udp(i), S);
    }
    let f = FlowFilter {
        zone: Some(42),
        ..FlowFilter::any()
    };
    let cursors = Cursors::default();
    let mut d = dump_of(&t, Select::new(&f).unwrap(), None, &cursors);
    let mut b = vec![0u8; 4096];
    let mut empty = 0;
    loop {
        let p = d.next_part(&mut b).unwrap();
        if p.last {
            break;
        }
        assert_eq!((p.len, p.records), (0, 0));
        empty += 1;
    }
    assert_eq!(
        empty,
        (1 << 17) / SCAN_BUDGET as usize - 1,
        "one yield per scan budget"
    );
}

#[test]
fn bad_filters_are_refused_and_flushes_take_one_criterion() {
    let f = |a: Option<&str>, len: Option<u8>| FlowFilter {
        addr: a.map(|a| a.parse().unwrap()),
        prefix_len: len,
        ..FlowFilter::any()
    };
    assert!(Select::new(&f(None, Some(8))).is_err());
    assert!(Select::new(&f(Some("198.18.0.1"), Some(33))).is_err());
    assert!(Select::new(&f(Some("2001:2::1"), Some(129))).is_err());
    assert!(Select::new(&f(Some("2001:2::1"), Some(128))).is_ok());
    let l = links();
    assert_eq!(Select::all().flush(&l), Ok(Flush::All));
    let by = |f: FlowFilter| Select::new(&f).unwrap().flush(&l);
    assert_eq!(
        by(FlowFilter {
            link: Some(12),
            ..FlowFilter::any()
        }),
        Ok(Flush::Port(2))
    );
    assert!(
        by(FlowFilter {
            link: Some(99),
            ..FlowFilter::any()
        })
        .is_err()
    );
    assert_eq!(
        by(FlowFilter {
            zone: Some(4),
            ..FlowFilter::any()
        }),
        Ok(Flush::Zone(4))
    );
    let Ok(Flush::Prefix {
        addr,
        len: 16,
        v6: false,
    }) = by(f(Some("198.18.7.9"), Some(16)))
    else {
        panic!()
    };
    assert_eq!(addr[..4], [198, 18, 0, 0], "masked to the prefix");
    assert!(
        by(FlowFilter {
            zone: Some(1),
            proto: Some(6),
            ..FlowFilter::any()
        })
        .is_err()
    );
    assert!(
        by(FlowFilter {
            proto: Some(6),
            ..FlowFilter::any()
        })
        .is_err()
    );
}
