//! Flows through the datapath, counted by the end hosts' kernels: nftables counters matching
//! one 5-tuple in the traffic and far namespaces (`isopath_tests::nft`), per direction, in
//! packets and L3 bytes, against the flow the datapath's table holds for it (`isopath flow
//! show`): one flow per connection, the same counts, the TCP states on the way.

use std::time::{Duration, Instant};

use isopath_tests::{
    ChildGuard, Lab, bin,
    isopathd::{
        Isopathd, PORTS, assert_clean_stop, assert_frames_add_up, bond_config, lab_config, u,
    },
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
    tcp_transfer_watched(lab, bytes, 0, || {});
}

/// [`tcp_transfer`] with the connection held open `linger_ms` after the last byte (sender)
/// and after the sender's FIN (receiver), calling `watch` every 20 ms meanwhile.
fn tcp_transfer_watched(lab: &Lab, bytes: u64, linger_ms: u64, mut watch: impl FnMut()) {
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
            "--linger-ms",
            &linger_ms.to_string(),
        ],
    ));
    assert!(rx.wait_ready(Duration::from_secs(5)));
    let mut tx = ChildGuard::new(lab.spawn(
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
            "--linger-ms",
            &linger_ms.to_string(),
        ],
    ));
    let t = Instant::now();
    while tx.try_wait().is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "tcp-send still runs");
        watch();
        std::thread::sleep(Duration::from_millis(20));
    }
    let tx = tx.wait_output(Duration::from_secs(1));
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

/// A small table: `flow show` walks every slot.
const FLOWS: &str = "[flows]\ncapacity = 65536\n";

/// The flows of `proto` (`tcp`, `udp`, `icmp`) in the datapath's tables, from `isopath flow
/// show -j`.
fn flows_of(d: &Isopathd, proto: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&d.cli(&["flow", "show", "limit", "1000", "-j"]))
        .expect("flow show JSON");
    v["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| f["proto"] == proto)
        .cloned()
        .collect()
}

/// The one flow of `proto`; panics if there are none or several.
fn one_flow(d: &Isopathd, proto: &str) -> Value {
    let fs = flows_of(d, proto);
    assert_eq!(fs.len(), 1, "one {proto} flow expected: {fs:#?}");
    fs[0].clone()
}

/// The flow's counts equal what both end hosts counted of its 5-tuple, per direction.
fn assert_flow_counts(f: &Value, fc: &FlowCounters<'_>, what: &str) {
    let (orig, reply) = assert_ends_agree(fc, what);
    let got = (
        Count {
            packets: u(f, "orig_packets"),
            bytes: u(f, "orig_bytes"),
        },
        Count {
            packets: u(f, "reply_packets"),
            bytes: u(f, "reply_bytes"),
        },
    );
    assert_eq!(got, (orig, reply), "{what}: flow {f:#}");
}

/// A TCP transfer is one flow: its state established while data flows, fin-wait after the
/// sender's FIN, time-wait after both; its counts those of both end hosts. `ports` are the
/// ingress of each direction.
fn tcp_flow(lab: &Lab, d: &Isopathd, ports: (&str, &str)) {
    let fc = FlowCounters::install(lab, tcp_tuple());
    let mut states: Vec<String> = Vec::new();
    tcp_transfer_watched(lab, 4_000_000, 700, || {
        if let Some(f) = flows_of(d, "tcp").first() {
            let s = f["state"].as_str().unwrap_or("").to_owned();
            if states.last() != Some(&s) {
                states.push(s);
            }
        }
    });
    // The last ACK and the receiver's close land: then the counts are final.
    std::thread::sleep(Duration::from_millis(300));
    let f = one_flow(d, "tcp");
    let last = f["state"].as_str().unwrap().to_owned();
    if states.last() != Some(&last) {
        states.push(last);
    }
    let pos = |s: &str| states.iter().position(|x| x == s);
    let (e, w) = (pos("ESTABLISHED"), pos("FIN_WAIT"));
    let t = pos("TIME_WAIT").or(pos("CLOSE"));
    assert!(
        e.is_some() && w.is_some() && t.is_some() && e < w && w < t,
        "states seen: {states:?}"
    );
    assert_eq!(
        (&f["src"], &f["dst"], u(&f, "sport"), u(&f, "dport")),
        (
            &Value::from(Lab::TRAFFIC_IP),
            &Value::from(Lab::FAR_IP),
            40001,
            9001
        ),
        "{f:#}"
    );
    assert_eq!(
        (&f["ingress"], &f["reply_ingress"]),
        (&Value::from(ports.0), &Value::from(ports.1))
    );
    assert_eq!(f["vlan"], serde_json::json!([]));
    assert!(u(&f, "orig_bytes") > 4_000_000, "{f:#}");
    assert_flow_counts(&f, &fc, "tcp");
}

/// Three pings are one ICMP flow of three echoes each way.
fn icmp_flow(lab: &Lab, d: &Isopathd) {
    let echo = FiveTuple {
        initiator: Side::Traffic,
        src: Lab::TRAFFIC_IP.parse().unwrap(),
        dst: Lab::FAR_IP.parse().unwrap(),
        l4: L4::Echo(None),
    };
    let fc = FlowCounters::install(lab, echo);
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
    let f = one_flow(d, "icmp");
    assert_eq!(f["state"], "ASSURED", "{f:#}");
    assert_eq!(
        u(&f, "sport"),
        u(&f, "dport"),
        "the echo identifier both ways: {f:#}"
    );
    assert_eq!(
        (u(&f, "orig_packets"), u(&f, "orig_bytes")),
        (PINGS, PINGS * PING_L3),
        "{f:#}"
    );
    assert_flow_counts(&f, &fc, "icmp");
}

#[test]
fn tcp_ping_and_udp_each_make_one_flow_counted_like_the_end_hosts() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("flw");
    wire_sized_packets(&lab);
    let ports = format!("{PORTS}{FLOWS}");
    let d = Isopathd::start(&lab, &lab_config(&lab, "", &ports), &[]);

    tcp_flow(&lab, &d, ("up0", "m0"));
    icmp_flow(&lab, &d);

    // UDP both ways on one 5-tuple: traffic:5001 -> far:5002, then far:5002 -> traffic:5001.
    let udp = FiveTuple {
        initiator: Side::Traffic,
        src: Lab::TRAFFIC_IP.parse().unwrap(),
        dst: Lab::FAR_IP.parse().unwrap(),
        l4: L4::Udp(5001, 5002),
    };
    let fc = FlowCounters::install(&lab, udp);
    let bench = bin("isopath-bench");
    for (from, to, sport, dst, n) in [
        (
            lab.ns_traffic(),
            lab.ns_far(),
            "5001",
            format!("{}:5002", Lab::FAR_IP),
            100u64,
        ),
        (
            lab.ns_far(),
            lab.ns_traffic(),
            "5002",
            format!("{}:5001", Lab::TRAFFIC_IP),
            40,
        ),
    ] {
        let rx = lab.udp_recv(to, &dst, n, 10);
        let out = lab.exec(
            from,
            [
                bench.to_str().unwrap(),
                "udp-send",
                "--dst",
                &dst,
                "--sport",
                sport,
                "--size",
                "100",
                "--count",
                &n.to_string(),
                "--rate",
                "2000",
            ],
        );
        assert!(
            out.status.success(),
            "udp-send: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&rx.wait_output(Duration::from_secs(15)).stdout)
            .expect("udp-recv JSON");
        assert_eq!(u(&r, "received"), n, "{r}");
    }
    let f = one_flow(&d, "udp");
    assert_eq!(f["state"], "ASSURED", "{f:#}");
    assert_eq!(
        (
            u(&f, "sport"),
            u(&f, "dport"),
            u(&f, "orig_packets"),
            u(&f, "reply_packets")
        ),
        (5001, 5002, 100, 40),
        "{f:#}"
    );
    // L3 bytes: 20 (IPv4) + 8 (UDP) + 100.
    assert_eq!(
        (u(&f, "orig_bytes"), u(&f, "reply_bytes")),
        (100 * 128, 40 * 128),
        "{f:#}"
    );
    assert!(
        u(&f, "expires_in_s") > 60 && u(&f, "expires_in_s") <= 120,
        "udp_stream_s: {f:#}"
    );
    assert_flow_counts(&f, &fc, "udp");
    drop(fc);

    // The table's counters, by the CLI and in status.
    let c: Value = serde_json::from_str(&d.cli(&["flow", "count", "-j"])).expect("count JSON");
    let w = &c["workers"][0];
    assert_eq!(u(w, "capacity"), 65536, "{c}");
    assert!(u(w, "in_use") >= 3 && u(w, "inserts") >= 3, "{c}");
    assert_eq!(u(w, "full"), 0, "{c}");
    let s = d.status();
    assert_eq!(s["workers"][0]["flows"]["enabled"], true, "{s:#}");
    assert_eq!(u(&s["workers"][0]["flows"], "capacity"), 65536);
    let text = d.cli(&["flow", "show"]);
    assert!(
        text.contains("ESTABLISHED") || text.contains("TIME_WAIT"),
        "{text}"
    );
    assert!(
        text.contains("src=198.18.0.1 dst=198.18.0.2 sport=5001 dport=5002"),
        "{text}"
    );

    assert_frames_add_up(&d.status());
    assert_clean_stop(&d.stop());
}

#[test]
fn flows_through_the_bond_are_counted_with_each_direction_s_port() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("flb");
    wire_sized_packets(&lab);
    let bond = format!("primary = \"m0\"\n{FLOWS}");
    let d = Isopathd::start(&lab, &bond_config(&lab, "", &bond), &[]);
    d.wait_for("bond0 active m0", Duration::from_secs(10), |s| {
        s["bonds"][0]["active"] == "m0"
    });
    tcp_flow(&lab, &d, ("up0", "m0"));
    icmp_flow(&lab, &d);
    assert_clean_stop(&d.stop());
}

#[test]
fn tracking_off_keeps_no_table_and_forwards_as_a_wire() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("flo");
    let ports = format!("{PORTS}[flows]\nenabled = false\n");
    let d = Isopathd::start(&lab, &lab_config(&lab, "", &ports), &[]);
    lab.ping_far();
    let c: Value = serde_json::from_str(&d.cli(&["flow", "count", "-j"])).expect("count JSON");
    assert_eq!(c["workers"], serde_json::json!([]), "{c}");
    let s = d.status();
    assert_eq!(
        s["workers"][0]["flows"],
        serde_json::json!({"enabled": false}),
        "{s:#}"
    );
    assert!(d.cli(&["flow", "count"]).contains("flow tracking is off"));
    assert_clean_stop(&d.stop());
}
