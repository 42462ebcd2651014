//! Real frames through the datapath: traffic namespace ↔ up0 ⇄ worker ⇄ m0 ↔ far bridge.

use std::time::Duration;

use isopath_tests::{
    ChildGuard, Lab, assert_udp_accounted, bin,
    isopathd::{Isopathd, PORTS, assert_clean_stop, assert_frames_add_up, lab_config, port_of, u},
    json_out, require_privileges,
};
use serde_json::Value;

const PACE_PPS: u64 = 20_000;

/// Sends `count` UDP datagrams of `size` payload bytes from `src_ns` to `dst` (in `dst_ns`) and
/// returns the receiver's report.
fn udp(lab: &Lab, src_ns: &str, dst_ns: &str, dst: &str, size: usize, count: u64) -> Value {
    let rx = lab.udp_recv(dst_ns, dst, count, 10);
    lab.udp_send(src_ns, 0, dst, size, count, PACE_PPS);
    json_out(&rx.wait_output(Duration::from_secs(15)))
}

fn counters(d: &Isopathd) -> (Value, Value) {
    (d.port("up0"), d.port("m0"))
}

/// Every frame the XDP program redirected was either taken by the worker or dropped by the
/// kernel in the socket (ring full): the worker's count and the kernel's XDP_STATISTICS agree.
fn assert_cross_check(p: &Value) {
    assert_eq!(
        u(p, "xdp.rx_redirect"),
        u(p, "rx_packets") + u(p, "xsk.rx_dropped"),
        "XDP redirects != worker rx + kernel rx_dropped: {p:#}"
    );
    // Every descriptor the worker gave the kernel was valid.
    assert_eq!(
        u(p, "xsk.tx_invalid_descs") + u(p, "xsk.rx_invalid_descs"),
        0,
        "{p:#}"
    );
}

#[test]
fn frames_cross_both_ways_counted_end_to_end() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("fwd");
    let d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &[]);
    // Warm ARP in both directions so the counts below are UDP only.
    let ping = lab.exec(
        lab.ns_traffic(),
        ["ping", "-c", "2", "-i", "0.2", "-W", "2", Lab::FAR_IP],
    );
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    let n = 2000u64;
    // 18 payload bytes make a 60-byte frame (64 on a wire with its FCS); 1472 make 1514.
    for (size, frame) in [(18usize, 60u64), (1472, 1514)] {
        for (from, to, dst, ingress, egress) in [
            (
                lab.ns_traffic(),
                lab.ns_far(),
                format!("{}:9000", Lab::FAR_IP),
                "up0",
                "m0",
            ),
            (
                lab.ns_far(),
                lab.ns_traffic(),
                format!("{}:9000", Lab::TRAFFIC_IP),
                "m0",
                "up0",
            ),
        ] {
            let before = d.status();
            let r = udp(&lab, from, to, &dst, size, n);
            // Every datagram arrived, or the receiving kernel counted where it dropped it.
            let dropped =
                assert_udp_accounted(&r, n, &format!("{size}-byte payloads {ingress}->{egress}"));
            assert_eq!(u(&r, "bytes"), (n - dropped) * size as u64, "{r}");
            let after = d.status();
            let delta =
                |name: &str, k: &str| u(port_of(&after, name), k) - u(port_of(&before, name), k);
            // The datapath saw every datagram in on one port and out on the other, with its
            // exact frame size; at most a few frames of other traffic (ARP) besides.
            for (name, pk, bk) in [
                (ingress, "rx_packets", "rx_bytes"),
                (egress, "tx_packets", "tx_bytes"),
            ] {
                let (p, b) = (delta(name, pk), delta(name, bk));
                assert!(p >= n && p <= n + 10, "{name} {pk} delta {p}, sent {n}");
                assert!(
                    b >= n * frame && b <= n * frame + 10 * 1514,
                    "{name} {bk} delta {b}"
                );
            }
            assert_frames_add_up(&after);
        }
    }
    let (up0, m0) = counters(&d);
    for p in [&up0, &m0] {
        assert_cross_check(p);
        for (k, v) in p["drops"].as_object().unwrap() {
            assert_eq!(v, 0, "unexpected drops {k} on {}: {p:#}", p["name"]);
        }
    }
    assert_clean_stop(&d.stop());
}

#[test]
fn ping_and_tcp_work_through_the_datapath() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("tcp");
    let d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &[]);
    let ping = lab.exec(
        lab.ns_traffic(),
        ["ping", "-c", "5", "-i", "0.2", "-W", "2", Lab::FAR_IP],
    );
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping6 = lab.exec(
        lab.ns_far(),
        [
            "ping",
            "-6",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            Lab::TRAFFIC_IP6,
        ],
    );
    assert!(
        ping6.status.success(),
        "ping6: {}",
        String::from_utf8_lossy(&ping6.stdout)
    );

    let bench = bin("isopath-bench");
    let bytes = 20_000_000u64;
    for (from, to, dst) in [
        (
            lab.ns_traffic(),
            lab.ns_far(),
            format!("{}:9001", Lab::FAR_IP),
        ),
        (
            lab.ns_far(),
            lab.ns_traffic(),
            format!("[{}]:9001", Lab::TRAFFIC_IP6),
        ),
    ] {
        let mut rx = ChildGuard::new(lab.spawn(
            to,
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
            from,
            [
                bench.to_str().unwrap(),
                "tcp-send",
                "--dst",
                &dst,
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
        assert_eq!(u(&r, "received_bytes"), bytes, "{dst}: {r}");
        assert_eq!(r["ok"], true, "{r}");
    }
    let s = d.status();
    assert_frames_add_up(&s);
    assert_clean_stop(&d.stop());
}

#[test]
fn copy_mode_fallback_is_reported_and_zero_copy_require_refused() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("zc");
    let mut d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &[]);
    for p in ["up0", "m0"] {
        let s = d.port(p);
        assert_eq!(s["bind"], "copy", "{s}");
        assert_eq!(s["xdp_mode"], "native", "{s}");
        assert_eq!(u(&s, "queues"), 2, "{s}");
    }
    let log = d.log();
    assert!(log.contains("zero-copy bind refused"), "{log}");
    assert_clean_stop(&d.stop());

    let out = Isopathd::start_failing(
        &lab,
        &lab_config(&lab, "zero_copy = \"require\"", PORTS),
        &[],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("zero-copy required"), "{log}");
}

#[test]
fn a_down_link_drops_with_a_reason_and_leaks_no_frame() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("down");
    let d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &[]);
    let ping = lab.exec(
        lab.ns_traffic(),
        ["ping", "-c", "1", "-W", "2", Lab::FAR_IP],
    );
    assert!(ping.status.success());

    // Pull the far end of m0: m0 loses carrier.
    assert!(
        lab.exec(lab.ns_far(), ["ip", "link", "set", "s0", "down"])
            .status
            .success()
    );
    d.wait_for("m0 link down", Duration::from_secs(2), |s| {
        port_of(s, "m0")["link"] == "down"
    });
    let sent = 1000u64;
    lab.udp_send(
        lab.ns_traffic(),
        0,
        &format!("{}:9000", Lab::FAR_IP),
        100,
        sent,
        PACE_PPS,
    );
    let s = d.wait_for("link-down drops", Duration::from_secs(2), |s| {
        let m0 = port_of(s, "m0");
        u(m0, "drops.tx_drop_link_down") >= sent
    });
    assert_frames_add_up(&s);

    // Back up: forwarding resumes, nothing was lost on the way.
    assert!(
        lab.exec(lab.ns_far(), ["ip", "link", "set", "s0", "up"])
            .status
            .success()
    );
    d.wait_for("m0 link up", Duration::from_secs(2), |s| {
        port_of(s, "m0")["link"] == "up"
    });
    let ping = lab.exec(
        lab.ns_traffic(),
        ["ping", "-c", "2", "-i", "0.2", "-W", "2", Lab::FAR_IP],
    );
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert_frames_add_up(&d.status());
    assert_clean_stop(&d.stop());
}

#[test]
fn frames_on_a_queue_without_a_socket_are_counted_and_dropped_in_xdp() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("nosk");
    // Only queue 0 of up0 gets a socket; queue 1 has none.
    let ports = "[[port]]\nname = \"up0\"\nqueues = 1\n[[port]]\nname = \"m0\"\nqueues = 1\n";
    let d = Isopathd::start(&lab, &lab_config(&lab, "", ports), &[]);
    // No ARP: a resolution whose request lands on the unbound queue never completes, and the
    // kernel would then hold back the datagrams below (a few) and drop the rest unsent. The far
    // host's address is pinned instead, so every datagram leaves t0.
    let pin = lab.exec(
        lab.ns_traffic(),
        [
            "ip",
            "neigh",
            "replace",
            Lab::FAR_IP,
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "t0",
            "nud",
            "permanent",
        ],
    );
    assert!(
        pin.status.success(),
        "{}",
        String::from_utf8_lossy(&pin.stderr)
    );
    // Many flows from both CPUs spread over both RX queues of up0.
    let per_flow = 200u64;
    let flows = 16u64;
    for f in 0..flows {
        let dst = format!("{}:{}", Lab::FAR_IP, 9100 + f);
        lab.udp_send(
            lab.ns_traffic(),
            (f % 2) as usize,
            &dst,
            64,
            per_flow,
            PACE_PPS,
        );
    }
    // The worker counts a burst when it takes it: wait (bounded) until every datagram is seen.
    let sent = flows * per_flow;
    let seen = |p: &Value| u(p, "rx_packets") + u(p, "drops.rx_drop_no_socket");
    let up0 = d.wait_for(
        "every datagram counted on up0",
        Duration::from_secs(5),
        |s| seen(port_of(s, "up0")) >= sent,
    );
    let up0 = port_of(&up0, "up0").clone();
    let no_sock = u(&up0, "drops.rx_drop_no_socket");
    let rx = u(&up0, "rx_packets");
    assert!(no_sock > 0, "no frame landed on the unbound queue: {up0:#}");
    assert!(rx > 0, "no frame landed on the bound queue: {up0:#}");
    // Every frame is accounted for: taken by the worker or dropped with a reason in XDP. None
    // is ARP (pinned above); at most a few are the traffic host's own IPv6 chatter.
    assert!(
        rx + no_sock <= sent + 10,
        "worker rx {rx} + XDP rx_drop_no_socket {no_sock} > sent {sent} + 10: {up0:#}"
    );
    assert_eq!(u(&up0, "xdp.rx_drop_no_socket"), no_sock);
    assert_cross_check(&up0);
    assert_clean_stop(&d.stop());
}
