//! Device lifecycle at run time: batched unregistration with its two quiesces, promiscuity as a
//! counter, and a port whose veth the kernel deletes underneath the daemon.

use std::time::{Duration, Instant};

use isopath_tests::{
    Lab,
    isopathd::{Isopathd, PORTS, assert_clean_stop, assert_frames_add_up, lab_config, u, xdp_prog},
    require_privileges,
};
use serde_json::Value;

/// Creates veth pair `a` ↔ `b` inside the appliance's namespace, both up (never in the root
/// namespace; removed with the lab's namespaces).
fn veth_pair(lab: &Lab, a: &str, b: &str) {
    for cmd in [
        vec!["ip", "link", "add", a, "type", "veth", "peer", "name", b],
        vec!["ip", "link", "set", a, "up"],
        vec!["ip", "link", "set", b, "up"],
    ] {
        let out = lab.exec(lab.ns_app(), &cmd);
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn ports(s: &Value) -> Vec<String> {
    s["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Sockets the daemon process has open (`/proc/PID/fd`; the AF_XDP ones are the only ones
/// that come and go with ports, `ss --xdp` needs a module this host may not have).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits (1 s at most: a control connection just answered may still be open) until the daemon
/// has `want` sockets open; returns what it has.
fn sockets_settle(pid: u32, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let n = sockets(pid);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const CONFIG_EXTRA: &str = "spare_queues = 4\n";

fn start(lab: &Lab) -> Isopathd {
    let config = lab_config(lab, "", PORTS)
        .replace("cores = [1]\n", &format!("cores = [1]\n{CONFIG_EXTRA}"));
    Isopathd::start(lab, &config, &[])
}

#[test]
fn port_del_of_a_batch_costs_exactly_two_quiesces() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("uqsc");
    veth_pair(&lab, "x0", "x1");
    veth_pair(&lab, "x2", "x3");
    let d = start(&lab);
    let before = d.status();
    assert_eq!(
        u(&before, "lifecycle.quiesces"),
        0,
        "{:#}",
        before["lifecycle"]
    );
    let sockets0 = sockets_settle(d.pid(), usize::MAX);
    for round in 0..3 {
        for p in ["x0", "x1", "x2"] {
            let r = d.request(&format!("port add {p}"));
            assert_eq!(r["ok"], true, "round {round}: {r}");
        }
        let s = d.wait_for("the ports registered", Duration::from_secs(3), |s| {
            ports(s).len() == 5
        });
        let queues: usize = ["x0", "x1", "x2"]
            .iter()
            .map(|p| u(isopath_tests::isopathd::port_of(&s, p), "queues") as usize)
            .sum();
        assert!(queues >= 3, "{s:#}");
        // A socket per queue, and its statistics reader's duplicate of the descriptor.
        assert_eq!(
            sockets_settle(d.pid(), sockets0 + 2 * queues),
            sockets0 + 2 * queues,
            "one socket per queue of each new port"
        );
        // The three in one batch: two quiesces, whatever the size.
        if round == 1 {
            d.cli(&["port", "del", "x0", "x1", "x2"]);
        } else {
            let r = d.request("port del x0 x1 x2");
            assert_eq!(r["ok"], true, "{r}");
        }
        let s2 = d.status();
        let l = &s2["lifecycle"];
        assert_eq!(u(l, "quiesces"), 2 * (round + 1) as u64, "{l:#}");
        assert_eq!(u(l, "batches"), (round + 1) as u64, "{l:#}");
        assert_eq!(u(l, "unregistered"), 3 * (round + 1) as u64, "{l:#}");
        assert_eq!(u(l, "quiesce_timeouts"), 0, "{l:#}");
        // After the first quiesce every worker had given the sockets back: none late.
        assert_eq!(u(l, "late_sockets"), 0, "{l:#}");
        // A looping worker passes a grace point every few microseconds (measured: 0-40 us),
        // but its core is shared with whatever else runs here: a preempted worker took 8 ms
        // in 1 of 10 runs. 100 ms fails at ten times that; the 200 ms timeout never fired.
        assert!(u(l, "quiesce_max_us") < 100_000, "{l:#}");
        assert!(l["unregistering"].as_array().unwrap().is_empty(), "{l:#}");
        assert_eq!(ports(&s2), ["up0", "m0"], "{s2:#}");
        for p in ["x0", "x1", "x2"] {
            assert_eq!(
                xdp_prog(&lab, lab.ns_app(), p),
                None,
                "{p}'s program detached"
            );
        }
        // The sockets were closed between the two quiesces, and their frames come back.
        assert_eq!(
            sockets_settle(d.pid(), sockets0),
            sockets0,
            "no AF_XDP socket leaked"
        );
        let total = u(&s["workers"][0], "frames.total");
        let s3 = d.wait_for("the frames reclaimed", Duration::from_secs(3), |s| {
            let w = &s["workers"][0];
            u(w, "queues_retired_at_run_time") == 3 * (round + 1) as u64
                && u(w, "frames_reclaimed") > 0
        });
        assert_eq!(u(&s3["workers"][0], "frames.total"), total);
        assert_frames_add_up(&s3);
    }
    // A batch of one costs two as well.
    assert_eq!(d.request("port add x0")["ok"], true);
    d.wait_for("x0 registered", Duration::from_secs(3), |s| {
        ports(s).len() == 3
    });
    assert_eq!(d.request("port del x0")["ok"], true);
    let l = d.status()["lifecycle"].clone();
    assert_eq!(u(&l, "quiesces"), 8, "{l:#}");
    eprintln!("lifecycle after 4 batches: {l}");
    // The cross-connect is untouched.
    lab.ping_far();
    let t = Instant::now();
    let text = d.cli(&["status"]);
    assert!(
        text.contains("lifecycle: unregistered 10 in 4 batches, quiesces 8"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_clean_stop(&d.stop());
}

/// The kernel's promiscuity count of `dev` in the appliance's namespace (`ip -d link show`).
fn kernel_promiscuity(lab: &Lab, dev: &str) -> u64 {
    u(&lab.link_details(lab.ns_app(), dev), "promiscuity")
}

/// The daemon's view of link `dev` (`isopath -j link show DEV`): (PROMISC set, count).
fn daemon_promisc(d: &Isopathd, dev: &str) -> (bool, u64) {
    let out = d.cli(&["link", "show", dev, "-j"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let l = &v[0];
    let flag = l["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "PROMISC");
    (flag, u(l, "promiscuity"))
}

#[test]
fn promisc_is_a_counter_and_only_its_transitions_reach_the_kernel() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("uprm");
    let d = start(&lab);
    let k = |dev| kernel_promiscuity(&lab, dev);
    assert_eq!((k("m0"), daemon_promisc(&d, "m0")), (0, (false, 0)));
    // The operator's on, twice (line protocol, then netlink through the CLI): counted once.
    let r = d.request("link set m0 promisc on");
    assert_eq!(
        (&r["ok"], &r["promiscuity"], &r["kernel_membership"]),
        (&Value::Bool(true), &Value::from(1), &Value::Bool(true)),
        "{r}"
    );
    assert_eq!((k("m0"), daemon_promisc(&d, "m0")), (1, (true, 1)));
    d.cli(&["link", "set", "m0", "promisc", "on"]);
    assert_eq!(
        (k("m0"), daemon_promisc(&d, "m0")),
        (1, (true, 1)),
        "on twice counts once"
    );
    // A capture adds its own; the kernel still sees one reference (only 0 -> 1 took it).
    let pcap = std::env::temp_dir().join(format!("isopath-{}-promisc.pcap", lab.prefix));
    d.cli(&["capture", "start", "m0", pcap.to_str().unwrap()]);
    assert_eq!((k("m0"), daemon_promisc(&d, "m0")), (1, (true, 2)));
    // One off undoes the operator's: the capture still holds it promiscuous.
    d.cli(&["link", "set", "m0", "promisc", "off"]);
    assert_eq!((k("m0"), daemon_promisc(&d, "m0")), (1, (true, 1)));
    let r = d.request("link set m0 promisc off");
    assert_eq!(r["promiscuity"], 1, "off twice is still one off: {r}");
    // The capture's stop is the 1 -> 0: the kernel's reference goes.
    d.cli(&["capture", "stop", "m0"]);
    assert_eq!((k("m0"), daemon_promisc(&d, "m0")), (0, (false, 0)));
    // The other order: capture first, then the operator; the operator's off is the last.
    d.cli(&["capture", "start", "m0", pcap.to_str().unwrap()]);
    assert_eq!((k("m0"), daemon_promisc(&d, "m0")), (1, (true, 1)));
    d.cli(&["link", "set", "m0", "promisc", "on"]);
    d.cli(&["capture", "stop", "m0"]);
    assert_eq!((k("m0"), daemon_promisc(&d, "m0")), (1, (true, 1)));
    d.cli(&["link", "set", "m0", "promisc", "off"]);
    assert_eq!((k("m0"), daemon_promisc(&d, "m0")), (0, (false, 0)));
    // Refused: an unknown link, the loopback; other SETLINK changes are not served.
    assert!(d.request("link set nosuch promisc on")["error"].is_string());
    assert!(d.request("link set lo promisc on")["error"].is_string());
    let out = d.cli_output(&["link", "set", "m0", "promisc", "maybe"]);
    assert!(!out.status.success());
    assert_eq!(k("up0"), 0, "the other port was never touched");
    lab.ping_far();
    let _ = std::fs::remove_file(&pcap);
    assert_clean_stop(&d.stop());
}

/// Flows (any protocol) with either end's ingress on `port`, from `isopath flow show -j`.
fn flows_on(d: &Isopathd, port: &str) -> usize {
    let v: Value = serde_json::from_str(&d.cli(&["flow", "show", "limit", "1000", "-j"]))
        .expect("flow show JSON");
    v["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| f["ingress"] == port || f["reply_ingress"] == port)
        .count()
}

#[test]
fn a_port_whose_veth_is_deleted_is_unregistered_and_the_daemon_runs_on() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("udel");
    let config = isopath_tests::isopathd::bond_config(&lab, "", "").replace(
        "[[port]]\nname = \"up0\"",
        "[flows]\ncapacity = 65536\n[[port]]\nname = \"up0\"",
    );
    let mut d = Isopathd::start(&lab, &config, &[]);
    lab.ping_far();
    let b = d.bond();
    assert_eq!(b["active"], "m0", "{b:#}");
    // A steady stream both ways through the bond's active member, m0.
    let (n, pps) = (30_000u64, 5_000u64);
    let rx_far = lab.udp_recv(
        lab.ns_far(),
        &format!("{}:9000", Lab::FAR_IP),
        n,
        n / pps + 6,
    );
    let rx_traffic = lab.udp_recv(
        lab.ns_traffic(),
        &format!("{}:9001", Lab::TRAFFIC_IP),
        n,
        n / pps + 6,
    );
    let mut tx = [
        lab.udp_send_spawn(
            lab.ns_traffic(),
            0,
            &format!("{}:9000", Lab::FAR_IP),
            64,
            n,
            pps,
        ),
        lab.udp_send_spawn(
            lab.ns_far(),
            0,
            &format!("{}:9001", Lab::TRAFFIC_IP),
            64,
            n,
            pps,
        ),
    ];
    std::thread::sleep(Duration::from_secs(1));
    assert!(flows_on(&d, "m0") > 0, "m0 carries flows before it goes");
    let s = d.status();
    let queues = u(isopath_tests::isopathd::port_of(&s, "m0"), "queues") as usize;
    let fds = sockets_settle(d.pid(), usize::MAX);
    let total = u(&s["workers"][0], "frames.total");

    // The kernel deletes m0 (and its peer s0 in the far namespace) underneath the daemon.
    let t = Instant::now();
    let wall0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let out = lab.exec(lab.ns_app(), ["ip", "link", "del", "m0"]);
    // `ip link del` returns once the kernel has freed the device (netdev_wait_allrefs): after
    // the daemon let go of it, so this includes the daemon's part.
    let del_took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = d.wait_for("m0 unregistered", Duration::from_secs(3), |s| {
        u(s, "lifecycle.kernel_deleted") == 1 && !ports(s).iter().any(|p| p == "m0")
    });
    let took = t.elapsed();
    let l = &s["lifecycle"];
    let e = &l["kernel_events"][0];
    let seen_ms = (u(e, "unix_ns").saturating_sub(wall0)) as f64 / 1e6;
    eprintln!(
        "m0 unregistered by the daemon {seen_ms:.1} ms after ip link del began; ip link del took {del_took:?}; seen in status after {took:?}"
    );
    assert_eq!(
        (e["port"].as_str(), e["event"].as_str()),
        (Some("m0"), Some("deleted")),
        "{l:#}"
    );
    assert_eq!(u(l, "quiesces"), 2, "a batch of one: {l:#}");
    assert_eq!(
        (u(l, "quiesce_timeouts"), u(l, "late_sockets")),
        (0, 0),
        "{l:#}"
    );
    // The bond let it go and carries on over m1.
    let b = &s["bonds"][0];
    assert_eq!(b["active"], "m1", "{b:#}");
    let m0 = b["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m0");
    assert!(m0.is_none_or(|m| m["state"] == "released"), "{b:#}");
    // Its flows are flushed, its sockets closed, its frames back in the pool.
    let deadline = Instant::now() + Duration::from_secs(3);
    while flows_on(&d, "m0") > 0 {
        assert!(Instant::now() < deadline, "m0's flows were not flushed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        sockets_settle(d.pid(), fds - 2 * queues),
        fds - 2 * queues,
        "m0's sockets closed"
    );
    let s = d.wait_for("m0's frames back", Duration::from_secs(3), |s| {
        u(&s["workers"][0], "frames_reclaimed") > 0
    });
    assert_eq!(u(&s["workers"][0], "frames.total"), total);
    assert_frames_add_up(&s);
    // The streams run to their end; the daemon answered all along and still forwards.
    for t in &mut tx {
        assert!(
            t.wait_timeout(Duration::from_secs(n / pps + 10)).is_some(),
            "sender ended"
        );
    }
    for rx in [rx_far, rx_traffic] {
        let out = rx.wait_output(Duration::from_secs(n / pps + 10));
        let r: Value = serde_json::from_slice(&out.stdout).expect("udp-recv JSON");
        // Some datagrams are lost in the failover; most got through.
        assert!(u(&r, "received") > n / 2, "{r}");
    }
    lab.ping_far();
    let text = d.cli(&["status"]);
    assert!(text.contains("kernel: m0 ("), "{text}");
    let log = d.log();
    assert!(
        log.contains("the kernel deleted the port's interface (RTM_DELLINK)"),
        "{log}"
    );
    assert_clean_stop(&d.stop());
}

#[test]
fn a_renamed_port_stays_registered_and_goes_when_its_interface_is_deleted() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("uren");
    veth_pair(&lab, "x0", "x1");
    let d = start(&lab);
    let fds = sockets_settle(d.pid(), usize::MAX);
    assert_eq!(d.request("port add x0")["ok"], true);
    d.wait_for("x0 registered", Duration::from_secs(3), |s| {
        ports(s).len() == 3
    });
    let queues = u(
        isopath_tests::isopathd::port_of(&d.status(), "x0"),
        "queues",
    ) as usize;
    // Renamed underneath (a veth must be down for it): recorded, not mistaken for a deletion.
    for cmd in [
        vec!["ip", "link", "set", "x0", "down"],
        vec!["ip", "link", "set", "x0", "name", "x9"],
        vec!["ip", "link", "set", "x9", "up"],
    ] {
        let out = lab.exec(lab.ns_app(), &cmd);
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = d.wait_for("the rename recorded", Duration::from_secs(3), |s| {
        s["lifecycle"]["kernel_events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["event"] == "renamed"))
    });
    let e = &s["lifecycle"]["kernel_events"][0];
    assert_eq!(e["port"], "x0", "{e}");
    assert!(e["detail"].as_str().unwrap().contains("x9"), "{e}");
    // Still a port a while later (the link poll runs every 10 ms).
    std::thread::sleep(Duration::from_millis(300));
    let s = d.status();
    assert_eq!(ports(&s), ["up0", "m0", "x0"], "{:#}", s["lifecycle"]);
    assert_eq!(u(&s, "lifecycle.kernel_deleted"), 0);
    // Deleted under its new name: found by its index, unregistered.
    let out = lab.exec(lab.ns_app(), ["ip", "link", "del", "x9"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = d.wait_for("x0 unregistered", Duration::from_secs(3), |s| {
        u(s, "lifecycle.kernel_deleted") == 1 && ports(s).len() == 2
    });
    assert_eq!(u(&s, "lifecycle.quiesces"), 2, "{:#}", s["lifecycle"]);
    assert!(queues >= 1);
    assert_eq!(sockets_settle(d.pid(), fds), fds, "x0's sockets closed");
    lab.ping_far();
    assert_clean_stop(&d.stop());
}

#[test]
fn an_mtu_the_frames_cannot_hold_takes_the_port_down_with_a_reason() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("umtu");
    let d = start(&lab);
    lab.ping_far();
    let mtu = |m: &str| {
        let out = lab.exec(lab.ns_app(), ["ip", "link", "set", "m0", "mtu", m]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // 2048-byte frames hold 2048 - 256 (XDP headroom) - 18 = 1774 bytes of MTU.
    mtu("3000");
    let s = d.wait_for("m0 taken down", Duration::from_secs(3), |s| {
        let p = isopath_tests::isopathd::port_of(s, "m0");
        p["link"] == "down" && p["down_reason"].is_string()
    });
    let p = isopath_tests::isopathd::port_of(&s, "m0");
    let why = p["down_reason"].as_str().unwrap();
    assert!(why.contains("mtu 3000") && why.contains("1774"), "{why}");
    let e = s["lifecycle"]["kernel_events"].as_array().unwrap();
    assert!(
        e.iter().any(|e| e["port"] == "m0" && e["event"] == "mtu"),
        "{e:?}"
    );
    // Held down against the carrier poll and events: still down a while later.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        isopath_tests::isopathd::port_of(&d.status(), "m0")["link"],
        "down"
    );
    // What the traffic side sends towards m0 is dropped as link down, not sent.
    let out = lab.exec(
        lab.ns_traffic(),
        ["ping", "-c", "3", "-i", "0.2", "-W", "1", Lab::FAR_IP],
    );
    assert!(!out.status.success(), "no traffic through a port held down");
    let p = isopath_tests::isopathd::port_of(&d.status(), "m0").clone();
    assert!(u(&p, "drops.tx_drop_link_down") > 0, "{p:#}");
    // An MTU that fits brings it back.
    mtu("1500");
    let s = d.wait_for("m0 back up", Duration::from_secs(3), |s| {
        isopath_tests::isopathd::port_of(s, "m0")["link"] == "up"
    });
    assert!(isopath_tests::isopathd::port_of(&s, "m0")["down_reason"].is_null());
    lab.ping_far();
    assert_clean_stop(&d.stop());
}
