//! Flows through the datapath, counted by the end hosts' kernels: nftables counters matching
//! one 5-tuple in the traffic and far namespaces (`isopath_tests::nft`), per direction, in
//! packets and L3 bytes.

use std::time::Duration;

use isopath_tests::{
    ChildGuard, Lab, bin,
    isopathd::{Isopathd, PORTS, assert_clean_stop, assert_frames_add_up, lab_config, u},
    nft::{Count, FiveTuple, FlowCounters, L4, Side, wire_sized_packets},
    require_privileges,
};
use serde_json::Value;

/// Echo requests per ping run.
const PINGS: u64 = 3;
/// ICMP echo of `ping -s 56`: 20 (IPv4) + 8 + 56 bytes.
const PING_L3: u64 = 84;

/// The TCP connection the tests open: traffic → far:9001 from port 40001.
fn tcp_tuple() -> FiveTuple {
    FiveTuple {
        initiator: Side::Traffic,
        src: Lab::TRAFFIC_IP.parse().unwrap(),
        dst: Lab::FAR_IP.parse().unwrap(),
        l4: L4::Tcp(40001, 9001),
    }
}

/// A verified TCP stream of `bytes` from the traffic namespace to the far one over
/// [`tcp_tuple`]; panics unless every byte arrived intact.
fn tcp_transfer(lab: &Lab, bytes: u64) {
    let bench = bin("isopath-bench");
    let dst = format!("{}:9001", Lab::FAR_IP);
    let mut rx = ChildGuard::new(lab.spawn(
        lab.ns_far(),
        [
            bench.to_str().unwrap(),
            "tcp-recv",
            "--bind",
            &dst,
            "--timeout-secs",
            "20",
        ],
    ));
    assert!(rx.wait_ready(Duration::from_secs(5)));
    let tx = lab.exec(
        lab.ns_traffic(),
        [
            bench.to_str().unwrap(),
            "tcp-send",
            "--dst",
            &dst,
            "--sport",
            "40001",
            "--bytes",
            &bytes.to_string(),
        ],
    );
    assert!(
        tx.status.success(),
        "tcp-send: {}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let out = rx.wait_output(Duration::from_secs(25));
    let r: Value = serde_json::from_slice(&out.stdout).expect("tcp-recv JSON");
    assert_eq!(u(&r, "received_bytes"), bytes, "{r}");
    assert_eq!(r["ok"], true, "{r}");
}

/// The counters of both end hosts agree with each other and with what was sent: what one end
/// sent of the flow, the other received, per direction.
fn assert_ends_agree(fc: &FlowCounters<'_>, what: &str) -> (Count, Count) {
    let (i, r) = (fc.initiator(), fc.responder());
    assert_eq!(i.orig, r.orig, "{what}: orig sent != received: {i:?} {r:?}");
    assert_eq!(
        i.reply, r.reply,
        "{what}: reply sent != received: {i:?} {r:?}"
    );
    (i.orig, i.reply)
}

#[test]
fn nft_counters_see_each_flow_once_per_direction_at_both_ends() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("nft");
    wire_sized_packets(&lab);
    let d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &[]);

    let echo = FiveTuple {
        initiator: Side::Traffic,
        src: Lab::TRAFFIC_IP.parse().unwrap(),
        dst: Lab::FAR_IP.parse().unwrap(),
        l4: L4::Echo(None),
    };
    let fc = FlowCounters::install(&lab, echo);
    let out = lab.exec(
        lab.ns_traffic(),
        [
            "ping",
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            Lab::FAR_IP,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (orig, reply) = assert_ends_agree(&fc, "ping");
    let want = Count {
        packets: PINGS,
        bytes: PINGS * PING_L3,
    };
    assert_eq!((orig, reply), (want, want), "ping");
    drop(fc);

    let fc = FlowCounters::install(&lab, tcp_tuple());
    let bytes = 2_000_000;
    tcp_transfer(&lab, bytes);
    let (orig, reply) = assert_ends_agree(&fc, "tcp");
    // Payload plus 40-byte headers at least (options add more), over MSS-sized segments:
    // with offloads off no segment exceeds the 1500-byte MTU.
    assert!(orig.bytes >= bytes + 40 * orig.packets, "{orig:?}");
    assert!(orig.packets >= bytes / 1448, "{orig:?}");
    assert!(orig.bytes <= 1500 * orig.packets, "{orig:?}");
    // ACKs come back (at least one per two segments, delayed ACK), with no payload.
    assert!(
        reply.packets >= orig.packets / 8 && reply.packets > 0,
        "{reply:?}"
    );
    assert!(reply.bytes <= 60 * reply.packets + 1000, "{reply:?}");

    assert_frames_add_up(&d.status());
    assert_clean_stop(&d.stop());
}
