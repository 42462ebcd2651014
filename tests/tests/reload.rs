//! Live reload on the lab: `SIGHUP` and `isopath reload` re-read the configuration while
//! numbered traffic flows through up0 ⇄ bond0 { m0, m1 }.

use std::time::{Duration, Instant};

use isopath_tests::{
    ChildGuard, Lab, assert_udp_accounted,
    isopathd::{Isopathd, assert_clean_stop, bond_config, u, write_config},
    require_privileges,
};
use serde_json::Value;

/// The lab's bond config with `bond` options and a `[flows]` section.
fn config(lab: &Lab, bond: &str, flows: &str) -> String {
    format!("{}\n[flows]\n{flows}\n", bond_config(lab, "", bond))
}

fn stream(
    lab: &Lab,
    src_ns: &str,
    dst_ns: &str,
    dst: &str,
    n: u64,
    pps: u64,
) -> (ChildGuard, ChildGuard) {
    let rx = lab.udp_recv(dst_ns, dst, n, n / pps + 4);
    (rx, lab.udp_send_spawn(src_ns, 0, dst, 64, n, pps))
}

/// The streams' flows (UDP to port 9000 or 9001): their `expires_in_s`.
fn stream_flows(d: &Isopathd) -> Vec<u64> {
    let r = d.request("flow show limit 1000");
    r["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("flow show: {r}"))
        .iter()
        .filter(|f| f["proto"] == "udp" && [9000, 9001].contains(&u(f, "dport")))
        .map(|f| u(f, "expires_in_s"))
        .collect()
}

#[test]
fn a_reload_changes_miimon_and_a_flow_timeout_while_numbered_traffic_loses_nothing() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("rld");
    let mut d = Isopathd::start(&lab, &config(&lab, "miimon = 10", "udp_s = 30"), &[]);
    lab.ping_far();
    let (n, pps) = (30_000u64, 10_000u64);
    let (rx_far, _t1) = stream(
        &lab,
        lab.ns_traffic(),
        lab.ns_far(),
        &format!("{}:9000", Lab::FAR_IP),
        n,
        pps,
    );
    let (rx_near, _t2) = stream(
        &lab,
        lab.ns_far(),
        lab.ns_traffic(),
        &format!("{}:9001", Lab::TRAFFIC_IP),
        n,
        pps,
    );
    std::thread::sleep(Duration::from_millis(800));
    // 1. SIGHUP, as systemd's ExecReload sends it.
    write_config(&lab, &config(&lab, "miimon = 50", "udp_s = 20"));
    d.hangup();
    let s = d.wait_for("the first reload", Duration::from_secs(3), |s| {
        s["config"]["reloads"] == 1
    });
    assert_eq!(
        s["bonds"][0]["options"]["miimon_ms"], 50,
        "{:#}",
        s["bonds"][0]
    );
    assert_eq!(
        s["config"]["flow_timeouts"]["udp_s"], 20,
        "{:#}",
        s["config"]
    );
    std::thread::sleep(Duration::from_millis(500));
    // 2. The CLI, which says what changed.
    write_config(
        &lab,
        &config(&lab, "miimon = 50\nupdelay = 20", "udp_s = 3"),
    );
    let said = d.cli(&["reload"]);
    assert!(said.contains("bond bond0: updelay 0 -> 20"), "{said}");
    assert!(said.contains("flows.udp_s: 20 -> 3"), "{said}");
    assert!(
        !said.contains("miimon"),
        "unchanged options are not listed: {said}"
    );
    for (name, rx) in [("traffic->far", rx_far), ("far->traffic", rx_near)] {
        let out = rx.wait_output(Duration::from_secs(n / pps + 10));
        let r: Value = serde_json::from_slice(&out.stdout).expect("udp-recv JSON");
        assert_udp_accounted(&r, n, name);
    }
    let ended = Instant::now();
    let s = d.status();
    assert_eq!(s["config"]["reloads"], 2);
    assert_eq!(s["config"]["reloads_refused"], 0);
    assert_eq!(s["bonds"][0]["options"]["updelay_ms"], 20);
    assert_eq!(u(&s["bonds"][0], "failovers"), 0, "a reload is no failover");
    // The streams' flows, in the table since before the reloads, now expire after 3 s idle
    // (they had 30 s when they began): the workers re-armed them.
    let live = stream_flows(&d);
    assert_eq!(live.len(), 2, "one flow per stream: {live:?}");
    assert!(
        live.iter().all(|&s| s <= 3),
        "time left under the new timeout: {live:?}"
    );
    while !stream_flows(&d).is_empty() && ended.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = ended.elapsed();
    assert!(
        stream_flows(&d).is_empty() && took < Duration::from_secs(6),
        "the streams' flows expired after {took:?}: the old 30 s timeout was still in force"
    );
    assert_clean_stop(&d.stop());
}

#[test]
fn a_reload_that_changes_a_ring_size_is_refused_and_changes_nothing() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("rlr");
    let d = Isopathd::start(&lab, &config(&lab, "miimon = 10", "udp_s = 30"), &[]);
    // A ring size, the core layout and a bond option at once: the two fixed ones named, and
    // not even the live one applied.
    let bad = config(&lab, "miimon = 70", "udp_s = 30")
        .replace("rx_ring_size = 1024", "rx_ring_size = 2048")
        .replace("cores = [1]", "cores = [0]");
    write_config(&lab, &bad);
    let out = d.cli_output(&["reload"]);
    assert!(!out.status.success(), "a refused reload fails the CLI");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rings.rx_ring_size: 1024 -> 2048: needs a restart"),
        "{err}"
    );
    assert!(err.contains("workers.cores"), "{err}");
    let s = d.status();
    assert_eq!(s["bonds"][0]["options"]["miimon_ms"], 10, "nothing applied");
    assert_eq!(s["config"]["reloads"], 0);
    assert_eq!(s["config"]["reloads_refused"], 1);
    assert!(
        s["config"]["last_refusal"]
            .as_str()
            .unwrap_or("")
            .contains("rings.rx_ring_size"),
        "{:#}",
        s["config"]
    );
    // A file that does not parse: refused too, the daemon runs on.
    write_config(&lab, "[rings\n");
    let out = d.cli_output(&["reload"]);
    assert!(!out.status.success());
    assert_eq!(d.status()["config"]["reloads_refused"], 2);
    // The running config is whole: the original file reloads as "nothing changed".
    write_config(&lab, &config(&lab, "miimon = 10", "udp_s = 30"));
    let said = d.cli(&["reload"]);
    assert!(said.contains("reloaded, nothing changed"), "{said}");
    // The log level changes live: at warn, the next reload's info line is not written.
    let quiet = config(&lab, "miimon = 10", "udp_s = 30").replacen(
        "[daemon]\n",
        "[daemon]\nlog_level = \"warn\"\n",
        1,
    );
    write_config(&lab, &quiet);
    let said = d.cli(&["reload"]);
    assert!(said.contains("daemon.log_level: info -> warn"), "{said}");
    let said = d.cli(&["reload"]);
    assert!(said.contains("reloaded, nothing changed"), "{said}");
    // Back to info (the stop's frame audit is an info line), which this reload logs.
    write_config(&lab, &config(&lab, "miimon = 10", "udp_s = 30"));
    let said = d.cli(&["reload"]);
    assert!(said.contains("daemon.log_level: warn -> info"), "{said}");
    lab.ping_far();
    let out = d.stop();
    assert_clean_stop(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    let infos = log.matches("configuration reloaded").count();
    assert_eq!(
        infos, 2,
        "the two reloads at warn log nothing at info (the one before and the one back do):\n{log}"
    );
    assert!(
        log.contains("reload refused"),
        "refusals are errors, logged at any level"
    );
}
