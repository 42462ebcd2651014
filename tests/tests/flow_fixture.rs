//! The mixed-traffic pcap fixture replayed through the worker's pipeline (classify, then the
//! track stage) on in-memory rings, lab-free: the flows it leaves, their count and fields.

use std::{net::IpAddr, sync::Arc};

use isopath_datapath::{
    flow::{FlowParams, FlowSnapshot, Skip},
    params::{Burst, ZeroCopy},
    stats::LinkState,
    worker::WorkerBuilder,
    xsk::mem::MemUmem,
};
use isopath_tests::{fixture, repo_root};

/// A flow as the test states it: protocol, originator and replier (address, port), VLANs,
/// state, and packets and L3 bytes per direction.
type Want = (
    u8,
    (&'static str, u16),
    (&'static str, u16),
    [u16; 2],
    &'static str,
    [u64; 2],
    [u64; 2],
);

#[test]
fn the_fixture_leaves_the_flows_it_holds() {
    let data = std::fs::read(repo_root().join("tests/fixtures/mixed.pcap")).expect("the fixture");
    let frames = fixture::read_pcap(&data);
    assert_eq!(frames.len(), fixture::mixed_traffic().len());

    let mut b = WorkerBuilder::with_rings(MemUmem::new(1024, 2048, 64))
        .flows(&FlowParams::new(4096, Default::default(), 0, 64).unwrap())
        .unwrap();
    for p in ["up0", "m0"] {
        b.add_queue(
            p,
            0,
            ZeroCopy::Auto,
            0,
            Arc::new(LinkState::new(true)),
            Default::default(),
        )
        .unwrap();
    }
    b.connect(0, 1);
    b.connect(1, 0);
    b.set_flow_port(0, 1);
    b.set_flow_port(1, 2);
    let (mut w, h) = b.build(None, Burst::new("burst", 64).unwrap(), 0);
    w.poll_once();
    // In capture order, a few frames per burst (so a flow's packets meet it in several).
    for chunk in frames.chunks(5) {
        for f in chunk {
            assert!(w.rings_mut().deliver("up0", 0, f));
        }
        w.poll_once();
    }
    assert_eq!(
        w.rings_mut().complete("m0", 0),
        frames.len(),
        "all forwarded"
    );

    let r = h.flow_reader().expect("tracking on");
    let flows: Vec<FlowSnapshot> = (0..r.capacity()).filter_map(|s| r.read(s).ok()).collect();
    let c = r.counters();
    // Every frame is counted into a flow or skipped with its reason: ARP, LLDP and other
    // EtherTypes are not IP, the two later fragments carry no ports, the malformed IP frames
    // do not parse to L4.
    let skipped: Vec<u64> = c.skipped.iter().map(|s| s.get()).collect();
    let tracked: u64 = flows.iter().map(|f| f.packets[0] + f.packets[1]).sum();
    assert_eq!(
        tracked + skipped.iter().sum::<u64>(),
        frames.len() as u64,
        "{skipped:?}"
    );
    assert_eq!(skipped[Skip::Fragment as usize], 2, "{skipped:?}");
    assert_eq!(skipped[Skip::TcpInvalid as usize], 0, "{skipped:?}");

    let wants: [Want; 12] = [
        (
            6,
            ("198.18.0.1", 40000),
            ("198.18.0.2", 80),
            [0, 0],
            "TIME_WAIT",
            [5, 3],
            [5 * 40 + 10, 3 * 40],
        ),
        (
            17,
            ("198.18.0.1", 5000),
            ("198.18.0.2", 53),
            [0, 0],
            "ASSURED",
            [1, 1],
            [28 + 5, 28 + 6],
        ),
        (
            1,
            ("198.18.0.1", 0x1234),
            ("198.18.0.2", 0x1234),
            [0, 0],
            "ASSURED",
            [1, 1],
            [36, 36],
        ),
        (
            6,
            ("2001:2::1", 40001),
            ("2001:2::2", 443),
            [0, 0],
            "SYN_RECV",
            [1, 1],
            [60, 60],
        ),
        (
            17,
            ("2001:2::1", 6000),
            ("2001:2::2", 123),
            [0, 0],
            "ASSURED",
            [1, 1],
            [52, 52],
        ),
        (
            58,
            ("2001:2::1", 0x4321),
            ("2001:2::2", 0x4321),
            [0, 0],
            "ASSURED",
            [1, 1],
            [56, 56],
        ),
        (
            58,
            ("2001:2::1", 0),
            ("ff02::1:ff00:2", 0),
            [0, 0],
            "UNREPLIED",
            [1, 0],
            [72, 0],
        ),
        (
            17,
            ("198.18.0.1", 5001),
            ("198.18.0.2", 53),
            [100, 0],
            "UNREPLIED",
            [1, 0],
            [34, 0],
        ),
        (
            17,
            ("198.18.0.1", 5002),
            ("198.18.0.2", 53),
            [10, 20],
            "UNREPLIED",
            [1, 0],
            [32, 0],
        ),
        (
            6,
            ("2001:2::1", 40002),
            ("2001:2::2", 22),
            [10, 20],
            "SYN_SENT",
            [1, 0],
            [76, 0],
        ),
        // The first fragments carry the ports: 20 + 16 bytes (IPv4), 40 + 8 + 16 (IPv6).
        (
            17,
            ("198.18.0.1", 5003),
            ("198.18.0.2", 9),
            [0, 0],
            "UNREPLIED",
            [1, 0],
            [36, 0],
        ),
        (
            17,
            ("2001:2::1", 5003),
            ("2001:2::2", 9),
            [0, 0],
            "UNREPLIED",
            [1, 0],
            [64, 0],
        ),
    ];
    let shown: Vec<String> = flows
        .iter()
        .map(|f| format!("{:?}", (f.orig(), f.state.name(), f.packets, f.bytes)))
        .collect();
    assert_eq!(flows.len(), wants.len(), "flows: {shown:#?}");
    for (proto, (sa, sp), (da, dp), vlan, state, packets, bytes) in wants {
        let (src, dst): (IpAddr, IpAddr) = (sa.parse().unwrap(), da.parse().unwrap());
        let f = flows
            .iter()
            .find(|f| {
                f.key.proto() == proto && f.orig() == ((src, sp), (dst, dp)) && f.key.vlan() == vlan
            })
            .unwrap_or_else(|| {
                panic!("no flow {proto} {src}:{sp} -> {dst}:{dp} vlan {vlan:?} in {shown:#?}")
            });
        assert_eq!(f.state.name(), state, "{src}:{sp} -> {dst}:{dp}");
        assert_eq!(f.packets, packets, "{src}:{sp} -> {dst}:{dp} packets");
        assert_eq!(f.bytes, bytes, "{src}:{sp} -> {dst}:{dp} L3 bytes");
        assert_eq!(f.ingress[0], 1, "entered by up0");
        assert_eq!(
            f.ingress[1],
            if packets[1] > 0 { 1 } else { 0 },
            "replies by up0"
        );
        assert_eq!(f.key.zone(), 0);
    }
    assert_eq!(c.in_use.get(), 12);
    assert_eq!(c.inserts.get(), 12);
}
