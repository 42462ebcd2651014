//! Malformed frames on a real lab: sent into up0 (a plain cross-connect) and into a bond member,
//! they raise exactly the matching `parse_errors` counters in `isopath status` (and, with
//! `[flows] strict = true`, the matching `rx_drop_parse_*` drops), while good traffic keeps
//! flowing and the punt path keeps answering ARP for the bond's address. The frames are the
//! malformed ones of the mixed-traffic fixture, replayed with `isopath-bench gen --pcap`.

use std::{collections::BTreeMap, time::Duration};

use isopath_datapath::wire::ParseError;
use isopath_tests::{
    Lab, bin,
    fixture::{self, FixtureFrame},
    isopathd::{Isopathd, PORTS, assert_clean_stop, bond_config, lab_config, u},
    require_privileges,
};
use serde_json::Value;

fn malformed() -> Vec<FixtureFrame> {
    fixture::mixed_traffic()
        .into_iter()
        .filter(|f| f.error.is_some())
        .collect()
}

/// Replays `frames` from `iface` in `ns` at 200 frames/s for one second; returns how many left.
fn replay(lab: &Lab, ns: &str, iface: &str, frames: &[FixtureFrame]) -> u64 {
    let pcap = std::env::temp_dir().join(format!("isopath-{}-{iface}-bad.pcap", lab.prefix));
    std::fs::write(&pcap, fixture::pcap(frames)).unwrap();
    let out = lab.exec(
        ns,
        [
            bin("isopath-bench").to_str().unwrap(),
            "gen",
            "--iface",
            iface,
            "--source",
            "xsk",
            "--pcap",
            pcap.to_str().unwrap(),
            "--rate",
            "200",
            "--secs",
            "1",
            "--core",
            "0",
        ],
    );
    let _ = std::fs::remove_file(&pcap);
    assert!(out.status.success(), "gen: {out:?}");
    let line = String::from_utf8_lossy(&out.stdout);
    let last = line.lines().rfind(|l| l.starts_with('{')).unwrap_or("{}");
    let v: Value = serde_json::from_str(last).unwrap();
    let sent = u(&v, "sent");
    assert!(sent >= frames.len() as u64, "gen sent {sent}: {v}");
    sent
}

/// What `sent` frames of the replay (frame k is `frames[k % len]`) must add to each reason.
fn expected(frames: &[FixtureFrame], sent: u64) -> BTreeMap<ParseError, u64> {
    let mut want = BTreeMap::new();
    for k in 0..sent {
        let e = frames[(k % frames.len() as u64) as usize].error.unwrap();
        *want.entry(e).or_insert(0) += 1;
    }
    want
}

/// `port`'s counters of family `key` by name.
fn family(d: &Isopathd, port: &str, key: &str) -> BTreeMap<String, u64> {
    d.port(port)[key]
        .as_object()
        .unwrap_or_else(|| panic!("{port} has no {key}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// Waits until `port`'s parse errors grew by `n` in all, then checks each reason grew by
/// exactly what `want` says (and the others not at all).
fn assert_parse_errors(
    d: &Isopathd,
    port: &str,
    before: &BTreeMap<String, u64>,
    want: &BTreeMap<ParseError, u64>,
    key: &str,
    name: fn(ParseError) -> &'static str,
) {
    let total: u64 = want.values().sum();
    let grown = |s: &Value| -> u64 {
        let p = s["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port)
            .unwrap();
        p[key]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| v.as_u64().unwrap() - before.get(k).copied().unwrap_or(0))
            .sum()
    };
    d.wait_for(
        &format!("{total} more {key} on {port}"),
        Duration::from_secs(5),
        |s| grown(s) >= total,
    );
    // Settle: nothing more may come.
    std::thread::sleep(Duration::from_millis(200));
    let after = family(d, port, key);
    for e in ParseError::ALL {
        let k = name(e);
        let delta = after[k] - before.get(k).copied().unwrap_or(0);
        assert_eq!(
            delta,
            want.get(&e).copied().unwrap_or(0),
            "{port} {k}: {after:?}"
        );
    }
}

#[test]
fn malformed_frames_into_up0_raise_exactly_their_parse_counters_and_are_still_forwarded() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("parse");
    let d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &[]);
    lab.ping_far();
    let frames = malformed();
    let before = family(&d, "up0", "parse_errors");
    let tx_before = u(&d.port("m0"), "tx_packets");
    let sent = replay(&lab, lab.ns_traffic(), "t0", &frames);
    let want = expected(&frames, sent);
    assert_parse_errors(&d, "up0", &before, &want, "parse_errors", ParseError::name);
    // A wire: every one of them went on to m0, and none was a drop.
    assert!(u(&d.port("m0"), "tx_packets") - tx_before >= sent);
    let drops = family(&d, "up0", "drops");
    assert!(drops.iter().all(|(_, &v)| v == 0), "{drops:?}");
    lab.ping_far();
    assert_clean_stop(&d.stop());
}

#[test]
fn strict_drops_malformed_frames_counted_by_reason_and_good_traffic_flows() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("pstrict");
    let d = Isopathd::start(
        &lab,
        &lab_config(&lab, "[flows]\nstrict = true", PORTS),
        &[],
    );
    lab.ping_far();
    let frames = malformed();
    let before = family(&d, "up0", "drops");
    let errors_before = family(&d, "up0", "parse_errors");
    let sent = replay(&lab, lab.ns_traffic(), "t0", &frames);
    let want = expected(&frames, sent);
    assert_parse_errors(&d, "up0", &before, &want, "drops", ParseError::drop_name);
    assert_parse_errors(
        &d,
        "up0",
        &errors_before,
        &want,
        "parse_errors",
        ParseError::name,
    );
    lab.ping_far();
    assert_clean_stop(&d.stop());
}

#[test]
fn malformed_frames_into_a_bond_member_are_counted_there_and_arp_is_still_answered() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("pbond");
    let d = Isopathd::start(
        &lab,
        &bond_config(&lab, "", "primary = \"m0\"\naddresses = [\"198.18.0.10\"]"),
        &[],
    );
    d.wait_for("m0 active", Duration::from_secs(5), |s| {
        s["bonds"][0]["active"] == "m0"
    });
    lab.ping_far();
    let frames = malformed();
    let before = family(&d, "m0", "parse_errors");
    // From the far side's end of m0's link: they arrive on the active member.
    let sent = replay(&lab, lab.ns_far(), "s0", &frames);
    let want = expected(&frames, sent);
    assert_parse_errors(&d, "m0", &before, &want, "parse_errors", ParseError::name);
    // The punt path still answers ARP (and ping) for the bond's own address, and traffic
    // through the bond still flows.
    let out = lab.exec(
        lab.ns_far(),
        ["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.18.0.10"],
    );
    assert!(
        out.status.success(),
        "ping to the bond's address: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    lab.ping_far();
    assert_clean_stop(&d.stop());
}
