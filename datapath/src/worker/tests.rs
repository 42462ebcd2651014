//! The worker's loop on in-memory rings ([`MemUmem`]): classify, punting, backup gating, the
//! bond's per-burst member choice, learning and slot renumbering on detach, with no lab.

use std::sync::Arc;

use super::{Worker, WorkerBuilder, WorkerCmd, WorkerHandle};
use crate::{
    bond::{BondShared, BondView, Mailbox, Punt, SeenMacs, mac_u64},
    params::{Burst, ZeroCopy},
    stats::{DropReason, LinkState},
    wire::{EtherType, EthernetFrame, FrameClass, IpProtocol, Ipv4Packet, ParseError},
    xsk::{Rings, mem::MemUmem},
};

const OWN: [u8; 6] = [2, 0, 0, 0, 0xb, 1];
const HOST: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// A 60-byte IPv4/UDP frame from `src` to `dst` whose payload starts with `tag`.
fn udp(src: [u8; 6], dst: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst(dst);
    e.set_src(src);
    e.set_ethertype(EtherType::Ipv4);
    Ipv4Packet::new_unchecked(&mut f[14..]).fill(
        "198.18.0.1".parse().unwrap(),
        "198.18.0.2".parse().unwrap(),
        IpProtocol::Udp,
        12,
        64,
        true,
    );
    f[34..42].copy_from_slice(&[0x30, 0x39, 0, 9, 0, 12, 0, 0]);
    f[42] = tag;
    f
}

fn arp_broadcast(src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f
}

struct Bond {
    shared: Arc<BondShared>,
    punt: Arc<Punt>,
    seen: Arc<SeenMacs>,
}

/// A worker over in-memory rings with one queue on each of `ports` (slot i = ports[i]), and a
/// bond over `members` (indices into `ports`) when not empty.
fn worker(
    ports: &[&str],
    members: &[usize],
    strict: bool,
    connect: impl FnOnce(&mut WorkerBuilder<MemUmem>),
) -> (Worker<MemUmem>, WorkerHandle<MemUmem>, Bond) {
    let mut b = WorkerBuilder::with_rings(MemUmem::new(1024, 2048, 64)).strict(strict);
    for p in ports {
        b.add_queue(
            p,
            0,
            ZeroCopy::Auto,
            0,
            Arc::new(LinkState::new(true)),
            Arc::default(),
        )
        .unwrap();
    }
    let bond = Bond {
        shared: Arc::new(BondShared::new()),
        punt: Arc::new(Punt::new()),
        seen: Arc::new(SeenMacs::new(64)),
    };
    if !members.is_empty() {
        let i = b.add_bond(
            "bond0",
            bond.shared.clone(),
            Arc::new(Mailbox::new(16)),
            Some(bond.seen.clone()),
            Arc::default(),
            bond.punt.clone(),
        );
        for (m, &slot) in members.iter().enumerate() {
            b.add_member(i, m, slot);
        }
    }
    connect(&mut b);
    let (mut w, h) = b.build(None, Burst::new("burst", 64).unwrap(), 2);
    w.poll_once(); // stocks the fill rings
    (w, h, bond)
}

fn deliver(w: &mut Worker<MemUmem>, port: &str, frames: &[Vec<u8>]) {
    for f in frames {
        assert!(w.rings_mut().deliver(port, 0, f), "{port}: no room");
    }
}

fn counters<'a>(h: &'a WorkerHandle<MemUmem>, port: &str) -> &'a crate::stats::QueueCounters {
    &h.queues()
        .iter()
        .find(|q| q.ifname == port)
        .unwrap()
        .counters
}

#[test]
fn a_cross_connect_forwards_everything_unchanged_and_counts_parse_errors() {
    let (mut w, h, _) = worker(&["up0", "m0"], &[], false, |b| {
        b.connect(0, 1);
        b.connect(1, 0);
    });
    let good = udp(HOST, [2, 0, 0, 0, 0, 2], 1);
    let mut bad_sum = udp(HOST, [2, 0, 0, 0, 0, 2], 2);
    bad_sum[24] ^= 0xff;
    let mut bad_ihl = udp(HOST, [2, 0, 0, 0, 0, 2], 3);
    bad_ihl[14] = 0x44;
    let mut lldp = good.clone();
    lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
    let frames = vec![
        good.clone(),
        bad_sum.clone(),
        bad_ihl.clone(),
        lldp.clone(),
        vec![0; 10],
    ];
    deliver(&mut w, "up0", &frames);
    assert_eq!(w.poll_once(), 5);
    let out = w.rings_mut().sent("m0", 0);
    assert_eq!(
        out,
        vec![good, bad_sum, bad_ihl, lldp],
        "malformed frames still forwarded"
    );
    let c = counters(&h, "up0");
    assert_eq!((c.rx_packets.get(), c.rx_bytes.get()), (5, 250));
    assert_eq!(c.drops(DropReason::RxRunt), 1);
    assert_eq!(c.parse_errors(ParseError::BadIpv4Checksum), 1);
    assert_eq!(c.parse_errors(ParseError::BadIhl), 1);
    assert_eq!(
        (c.class(FrameClass::Ipv4), c.class(FrameClass::Lldp)),
        (3, 1)
    );
    let m0 = counters(&h, "m0");
    assert_eq!((m0.tx_packets.get(), m0.tx_bytes.get()), (4, 240));
    // The other way too, and nothing leaked.
    deliver(&mut w, "m0", &[udp([2, 0, 0, 0, 0, 2], HOST, 9)]);
    w.poll_once();
    assert_eq!(w.rings_mut().sent("up0", 0).len(), 1);
    w.poll_once();
    assert_eq!(w.rings_mut().audit().unaccounted(), 0);
}

#[test]
fn strict_drops_what_does_not_parse_with_its_reason() {
    let (mut w, h, _) = worker(&["up0", "m0"], &[], true, |b| b.connect(0, 1));
    let good = udp(HOST, [2, 0, 0, 0, 0, 2], 1);
    let mut bad = good.clone();
    bad[17] = 200; // total length beyond the frame
    deliver(&mut w, "up0", &[bad.clone(), good.clone(), bad]);
    w.poll_once();
    assert_eq!(w.rings_mut().sent("m0", 0), vec![good]);
    let c = counters(&h, "up0");
    assert_eq!(c.parse_errors(ParseError::BadTotalLength), 2);
    assert_eq!(c.parse_drops(ParseError::BadTotalLength), 2);
    assert_eq!(c.drops(DropReason::RxRunt), 0);
}

#[test]
fn a_flow_policy_command_turns_strict_on_and_off_between_bursts() {
    let (mut w, h, _) = worker(&["up0", "m0"], &[], false, |b| b.connect(0, 1));
    let good = udp(HOST, [2, 0, 0, 0, 0, 2], 1);
    let mut bad = good.clone();
    bad[17] = 200; // total length beyond the frame
    let policy = |strict| {
        assert!(h.set_flow_policy(crate::flow::Timeouts::default(), 0, strict));
    };
    deliver(&mut w, "up0", &[bad.clone()]);
    w.poll_once();
    assert_eq!(
        w.rings_mut().sent("m0", 0),
        vec![bad.clone()],
        "lax: forwarded"
    );
    policy(true);
    deliver(&mut w, "up0", &[bad.clone(), good.clone()]);
    w.poll_once();
    assert_eq!(
        w.rings_mut().sent("m0", 0),
        vec![good.clone()],
        "strict: dropped"
    );
    assert_eq!(
        counters(&h, "up0").parse_drops(ParseError::BadTotalLength),
        1
    );
    policy(false);
    deliver(&mut w, "up0", &[bad.clone()]);
    w.poll_once();
    assert_eq!(w.rings_mut().sent("m0", 0), vec![bad], "lax again");
    assert_eq!(
        counters(&h, "up0").parse_errors(ParseError::BadTotalLength),
        3
    );
}

#[test]
fn punting_copies_nd_consumes_own_mac_and_gating_drops_the_backup() {
    // up0 <-> bond0 over m0, m1; m0 active.
    let (mut w, h, bond) = worker(&["up0", "m0", "m1"], &[1, 2], false, |b| {
        b.connect_bond(0, 0);
        b.connect(1, 0);
        b.connect(2, 0);
    });
    bond.shared.set(BondView::new(Some(0), None, false));
    bond.punt
        .arp
        .store(true, std::sync::atomic::Ordering::Relaxed);
    bond.punt
        .own_mac
        .store(mac_u64(&OWN), std::sync::atomic::Ordering::Relaxed);
    let arp = arp_broadcast([2, 0, 0, 0, 0, 2]);
    let to_us = udp([2, 0, 0, 0, 0, 2], OWN, 7);
    let through = udp([2, 0, 0, 0, 0, 2], HOST, 8);
    deliver(&mut w, "m0", &[arp.clone(), to_us.clone(), through.clone()]);
    w.poll_once();
    assert_eq!(
        w.rings_mut().sent("up0", 0),
        vec![arp.clone(), through.clone()]
    );
    let punted: Vec<(u8, Vec<u8>)> = std::iter::from_fn(|| bond.punt.queue.pop())
        .map(|p| (p.member, p.frame().to_vec()))
        .collect();
    assert_eq!(punted, vec![(0, arp.clone()), (0, to_us.clone())]);
    // The backup's frames are dropped, but its ARP still reaches control (the monitor's
    // evidence), and the consumed frame is not a backup drop.
    deliver(&mut w, "m1", &[arp.clone(), to_us, through]);
    w.poll_once();
    assert!(w.rings_mut().sent("up0", 0).is_empty());
    assert_eq!(counters(&h, "m1").drops(DropReason::RxBackup), 2);
    let punted: Vec<u8> = std::iter::from_fn(|| bond.punt.queue.pop())
        .map(|p| p.member)
        .collect();
    assert_eq!(punted, vec![1, 1]);
    assert_eq!(h.bonds()[0].counters.rx_packets.get(), 4, "to control");
    w.poll_once();
    assert_eq!(w.rings_mut().audit().unaccounted(), 0);
}

#[test]
fn the_bond_picks_its_member_once_per_burst_and_learns_each_source() {
    let (mut w, h, bond) = worker(&["up0", "m0", "m1"], &[1, 2], false, |b| {
        b.connect_bond(0, 0)
    });
    let burst: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            udp(
                [2, 0, 0, 0, 0, 1 + (i / 5) as u8],
                [2, 0, 0, 0, 0, 9],
                i as u8,
            )
        })
        .collect();
    bond.shared.set(BondView::new(Some(0), None, false));
    deliver(&mut w, "up0", &burst);
    w.poll_once();
    assert_eq!(w.rings_mut().sent("m0", 0), burst);
    assert!(w.rings_mut().sent("m1", 0).is_empty());
    let mut seen = bond.seen.recent(bond.seen.now_s(), 60);
    seen.sort();
    assert_eq!(
        seen,
        vec![([2, 0, 0, 0, 0, 1], None), ([2, 0, 0, 0, 0, 2], None)]
    );
    bond.shared.set(BondView::new(Some(1), None, false));
    deliver(&mut w, "up0", &burst);
    w.poll_once();
    assert_eq!(w.rings_mut().sent("m1", 0), burst);
    assert!(w.rings_mut().sent("m0", 0).is_empty());
    bond.shared.set(BondView::new(None, None, false));
    deliver(&mut w, "up0", &burst[..3]);
    w.poll_once();
    assert_eq!(h.bonds()[0].counters.drops(DropReason::TxNoActiveMember), 3);
    assert_eq!(h.bonds()[0].counters.tx_packets.get(), 20);
}

#[test]
fn detach_renumbers_slots_and_reclaim_returns_every_frame() {
    // Slots: a=0, b=1, c=2; a <-> c. Taking b out shifts c to slot 1.
    let (mut w, mut h, _) = worker(&["a", "b", "c"], &[], false, |b| {
        b.connect(0, 2);
        b.connect(2, 0);
    });
    let f = udp(HOST, [2, 0, 0, 0, 0, 2], 1);
    deliver(&mut w, "b", std::slice::from_ref(&f));
    assert!(h.command(WorkerCmd::Detach {
        ifname: WorkerCmd::ifname("b").unwrap()
    }));
    w.poll_once();
    let retired = h.take_retired().expect("b given back");
    assert_eq!((retired.ifname(), h.forget_queues("b")), ("b", 1));
    deliver(&mut w, "a", std::slice::from_ref(&f));
    deliver(&mut w, "c", &[f.clone(), f.clone()]);
    w.poll_once();
    assert_eq!(
        w.rings_mut().sent("c", 0),
        vec![f.clone()],
        "a's output followed c"
    );
    assert_eq!(w.rings_mut().sent("a", 0).len(), 2);
    // b's frames (its fill ring and the frame waiting in its RX ring) are still lent until
    // control says the socket is closed.
    let before = w.rings_mut().audit();
    assert!(h.command(WorkerCmd::Reclaim { id: retired.id() }));
    w.poll_once();
    w.poll_once();
    let after = w.rings_mut().audit();
    assert_eq!(after.unaccounted(), 0);
    assert_eq!(
        h.counters().frames_reclaimed.get(),
        64,
        "b's whole fill ring"
    );
    assert!(after.in_fill < before.in_fill);
    // A new port joins at run time into the spare slot and gets an output by command.
    let nq = h
        .bind_queue(
            "d",
            0,
            ZeroCopy::Auto,
            0,
            Arc::new(LinkState::new(true)),
            Arc::default(),
        )
        .unwrap();
    h.attach(nq).unwrap();
    w.poll_once();
    assert_eq!(h.counters().queues_attached.get(), 1);
    deliver(&mut w, "d", &[f]);
    w.poll_once();
    assert_eq!(counters(&h, "d").drops(DropReason::RxNoOutput), 1);
}

/// `f` (a frame of [`udp`]) the other way: addresses, ports and MACs swapped.
fn reversed(f: &[u8]) -> Vec<u8> {
    let mut r = f.to_vec();
    r[..6].copy_from_slice(&f[6..12]);
    r[6..12].copy_from_slice(&f[..6]);
    r[26..30].copy_from_slice(&f[30..34]);
    r[30..34].copy_from_slice(&f[26..30]);
    r[34..36].copy_from_slice(&f[36..38]);
    r[36..38].copy_from_slice(&f[34..36]);
    r
}

#[test]
fn tracking_counts_both_directions_into_one_flow_and_flushes_by_port() {
    let params = crate::flow::FlowParams::new(1024, Default::default(), 0, 64).unwrap();
    // Without `flows` no table: nothing to read or flush.
    let (_, h0, _) = worker(&["up0", "m0"], &[], false, |b| b.connect(0, 1));
    assert!(h0.flow_reader().is_none() && !h0.flush_flows(crate::flow::Flush::All));
    let mut b = WorkerBuilder::with_rings(MemUmem::new(1024, 2048, 64))
        .flows(&params)
        .unwrap();
    for p in ["up0", "m0"] {
        b.add_queue(
            p,
            0,
            ZeroCopy::Auto,
            0,
            Arc::new(LinkState::new(true)),
            Arc::default(),
        )
        .unwrap();
    }
    b.connect(0, 1);
    b.connect(1, 0);
    b.set_flow_port(0, 1);
    b.set_flow_port(1, 2);
    let (mut w, h) = b.build(None, Burst::new("burst", 64).unwrap(), 0);
    w.poll_once();
    let there = udp(HOST, [2, 0, 0, 0, 0, 2], 1);
    let back = reversed(&there);
    deliver(&mut w, "up0", &[there.clone(), there.clone(), vec![0; 10]]);
    w.poll_once();
    deliver(&mut w, "m0", std::slice::from_ref(&back));
    w.poll_once();
    assert_eq!(w.rings_mut().sent("m0", 0), vec![there.clone(), there]);
    assert_eq!(w.rings_mut().sent("up0", 0), vec![back]);
    let r = h.flow_reader().unwrap();
    let flows: Vec<_> = (0..r.capacity()).filter_map(|s| r.read(s).ok()).collect();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = flows[0];
    assert_eq!((f.packets, f.bytes), ([2, 1], [2 * 32, 32]));
    assert_eq!(f.ingress, [1, 2], "each direction's port");
    assert_eq!(f.state.name(), "ASSURED");
    // A flush by the reply's port finds it too, within a few loops.
    assert!(h.flush_flows(crate::flow::Flush::Port(2)));
    for _ in 0..4 {
        w.poll_once();
    }
    assert_eq!(r.counters().in_use.get(), 0);
    assert_eq!(r.counters().flushed.get(), 1);
    assert_eq!(w.rings_mut().audit().unaccounted(), 0);
}

#[test]
fn a_quiesce_after_detach_finds_the_socket_given_back_by_a_running_worker() {
    use std::time::{Duration, Instant};
    let (w, mut h, _) = worker(&["a", "b"], &[], false, |b| {
        b.connect(0, 1);
        b.connect(1, 0);
    });
    assert!(h.grace().passed(h.grace().ticket()), "not running: idle");
    let thread = std::thread::spawn(move || w.run());
    // Until the thread loops the worker is idle, which counts as quiescent (it applies the
    // commands before it touches anything) but has given nothing back yet: wait for it.
    let start = Instant::now();
    while h.counters().loops.get() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the worker never ran"
        );
        std::thread::yield_now();
    }
    let quiesce = |h: &WorkerHandle<MemUmem>| {
        let t = h.grace().ticket();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !h.grace().passed(t) {
            assert!(
                Instant::now() < deadline,
                "the worker never passed a grace point"
            );
            std::hint::spin_loop();
        }
    };
    let ifname = WorkerCmd::ifname("c").unwrap();
    for round in 0..300 {
        let nq = h
            .bind_queue(
                "c",
                0,
                ZeroCopy::Auto,
                0,
                Arc::new(LinkState::new(true)),
                Arc::default(),
            )
            .unwrap();
        h.attach(nq).unwrap();
        assert!(h.command(WorkerCmd::Detach { ifname }));
        quiesce(&h);
        // One quiesce is enough: the worker applied the hand-over and the Detach in the loop
        // the quiesce waited for, so the socket is back now, not a loop later.
        let q = h
            .take_retired()
            .unwrap_or_else(|| {
                panic!(
                    "round {round}: c still held after the quiesce (grace points {}, loops {}, attached {}, retired {})",
                    h.grace().count(),
                    h.counters().loops.get(),
                    h.counters().queues_attached.get(),
                    h.counters().queues_retired.get()
                )
            });
        assert_eq!(h.forget_queues("c"), 1);
        let id = q.id();
        drop(q);
        assert!(h.command(WorkerCmd::Reclaim { id }));
    }
    quiesce(&h);
    let loops = h.counters().loops.get();
    assert!(h.grace().count() >= 2 * 300 && h.grace().count() <= loops + 1);
    h.stop();
    let exit = thread.join().unwrap();
    assert!(h.grace().passed(h.grace().ticket()), "stopped: idle");
    assert_eq!(exit.audit.unaccounted(), 0);
}
