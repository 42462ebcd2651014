//! The lab itself: `deploy/lab.sh` builds what the datapath expects and removes it all.

use std::time::Duration;

use isopath_tests::{ChildGuard, Lab, netns_list, require_privileges};

fn sysctl(lab: &Lab, ns: &str, path: &str) -> String {
    let out = lab.exec(ns, ["cat", path]);
    assert!(
        out.status.success(),
        "cat {path} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn lab_up_builds_the_topology_and_drop_removes_it() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("lab");
    let names = [
        lab.ns_traffic().to_owned(),
        lab.ns_app().to_owned(),
        lab.ns_far().to_owned(),
    ];
    let list = netns_list();
    for ns in &names {
        assert!(list.contains(ns), "namespace {ns} missing from {list:?}");
    }

    // Appliance links: 2 queues each way, fixed MACs, no ARP, no multicast, no addresses.
    for (dev, mac) in [
        ("up0", "02:00:00:00:01:00"),
        ("m0", "02:00:00:00:01:01"),
        ("m1", "02:00:00:00:01:02"),
    ] {
        let d = lab.link_details(lab.ns_app(), dev);
        assert_eq!(d["num_rx_queues"], 2, "{dev}: {d}");
        assert_eq!(d["num_tx_queues"], 2, "{dev}: {d}");
        assert_eq!(d["address"], mac, "{dev}: {d}");
        assert_eq!(d["operstate"], "UP", "{dev}: {d}");
        let flags: Vec<&str> = d["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        assert!(flags.contains(&"NOARP"), "{dev}: {flags:?}");
        assert!(!flags.contains(&"MULTICAST"), "{dev}: {flags:?}");
    }
    let addrs = lab.exec(lab.ns_app(), ["ip", "-o", "addr", "show"]);
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(
        addrs.lines().all(|l| l.contains(" lo ")),
        "addresses outside lo in the app namespace:\n{addrs}"
    );

    // IPv6 is off in the appliance namespace, per device too.
    for conf in ["all", "default", "up0", "m0", "m1"] {
        let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
        assert_eq!(sysctl(&lab, lab.ns_app(), &path), "1", "{path}");
    }
    // Far side: IPv6 only on the bridge, not on its ports.
    let far = |conf: &str| {
        sysctl(
            &lab,
            lab.ns_far(),
            &format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"),
        )
    };
    assert_eq!(far("br0"), "0");
    assert_eq!(far("s0"), "1");
    assert_eq!(far("s1"), "1");
    for dev in ["s0", "s1"] {
        let d = lab.link_details(lab.ns_far(), dev);
        assert_eq!(d["master"], "br0", "{dev}: {d}");
        assert_eq!(d["num_rx_queues"], 2, "{dev}: {d}");
    }
    let t0 = lab.link_details(lab.ns_traffic(), "t0");
    assert_eq!(t0["address"], "02:00:00:00:00:01");
    assert_eq!(t0["num_tx_queues"], 2);

    // Counters are readable; nothing in the appliance's kernel transmits on its links.
    let (_, tx) = lab.link_stats(lab.ns_app(), "up0");
    assert_eq!(tx, 0, "the appliance kernel sent on up0");

    let env = lab.env();
    assert!(env.contains(&("LAB_NS_APP".to_owned(), lab.ns_app().to_owned())));
    assert!(env.contains(&("LAB_FAR_IP".to_owned(), Lab::FAR_IP.to_owned())));

    drop(lab);
    let list = netns_list();
    for ns in &names {
        assert!(!list.contains(ns), "namespace {ns} left behind: {list:?}");
    }
}

#[test]
fn lab_is_removed_when_a_test_panics() {
    if !require_privileges() {
        return;
    }
    let mut prefix = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::up("pan");
        prefix = lab.prefix.clone();
        panic!("deliberate panic with lab {} up", lab.prefix);
    }));
    assert!(result.is_err());
    assert!(!prefix.is_empty());
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|ns| ns.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn child_guard_stops_a_process_in_the_lab() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("chg");
    let guard = ChildGuard::new(lab.spawn(lab.ns_app(), ["sleep", "30"])).with_label("sleep");
    let pid = guard.id();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let started = std::time::Instant::now();
    drop(guard);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still there"
    );

    // A process that ignores SIGTERM is killed after the grace period.
    let mut guard = ChildGuard::new(lab.spawn(
        lab.ns_app(),
        [
            "sh",
            "-c",
            "trap '' TERM; echo ready >&2; while :; do sleep 0.1; done",
        ],
    ))
    .with_grace(Duration::from_millis(300));
    assert!(guard.wait_ready(Duration::from_secs(5)));
    let out = guard.stop();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ready"));

    // exec returns output and status.
    let out = lab.exec(lab.ns_traffic(), ["sh", "-c", "echo hi; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}
