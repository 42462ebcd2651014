//! `isopath-bench dump` (issue 16's flow-dump benchmark) is exact: it fills isopathd's flow
//! table with real flows through the datapath, and its client gets every flow of the table
//! exactly once, each generated 5-tuple once, also while a stream is forwarded; the conntrack
//! half loads as many kernel entries and `conntrack -L` shows them; the root namespace's
//! `nf_conntrack_max` is as before.
//! Correctness only: the run's timings are the benchmark's business, never asserted here.

use isopath_tests::{bin, json_out, lab_script, netns_list, require_privileges};

const FLOWS: u64 = 20_000;

fn conntrack_max() -> Option<String> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max").ok()
}

#[test]
fn the_dump_benchmark_gets_every_flow_exactly_once() {
    if !require_privileges() {
        return;
    }
    let prefix = format!("bdt{}", std::process::id() % 100_000);
    let max_before = conntrack_max();
    // Bounded: the run's own waits are at most --secs each; `timeout` ends it past that.
    let out = std::process::Command::new("timeout")
        .args(["-s", "KILL", "300"])
        .arg(bin("isopath-bench"))
        .args(["dump", "--flows", &FLOWS.to_string(), "--secs", "60"])
        .args(["--repeat", "2", "--prefix", &prefix])
        .output()
        .expect("running isopath-bench dump");
    let _ = std::process::Command::new(lab_script())
        .args(["down", &prefix])
        .output();
    assert!(
        out.status.success(),
        "isopath-bench dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_out(&out);
    assert!(
        netns_list().iter().all(|n| !n.starts_with(&prefix)),
        "lab left behind"
    );
    let iso = &r["isopath"];
    let in_table = r["flows_in_table"].as_u64().unwrap();
    // The lab's own hosts may open a flow or two besides the generator's.
    assert!(
        (FLOWS..=FLOWS + 16).contains(&in_table),
        "the table holds the flows made: {r}"
    );
    assert_eq!(r["flows_dumped"].as_u64(), Some(in_table), "{r}");
    assert_eq!(r["duplicates"].as_u64(), Some(0), "{r}");
    assert_eq!(iso["records"].as_u64(), Some(in_table), "{r}");
    assert_eq!(iso["generated_duplicates"].as_u64(), Some(0), "{r}");
    let generated = iso["generated_flows_dumped"].as_u64().unwrap();
    assert!(
        generated <= FLOWS && generated + (in_table - FLOWS) >= FLOWS,
        "each generated 5-tuple once: {r}"
    );
    // Later dumps: the same table (a flow the lab's hosts open meanwhile may join it).
    for d in iso["every_dump_distinct"].as_array().unwrap() {
        assert!(d.as_u64().unwrap() >= in_table, "every dump whole: {r}");
    }
    assert_eq!(iso["interrupted"], false, "{r}");
    // The dumps made while a stream was forwarded: each whole, none with a duplicate.
    let during = iso["stream"]["with_dump"]["dumps"].as_array().unwrap();
    assert!(!during.is_empty(), "{r}");
    for d in during {
        assert!(d["distinct"].as_u64().unwrap() >= in_table, "{r}");
        assert_eq!(d["duplicates"].as_u64(), Some(0), "{r}");
    }
    assert_eq!(iso["table"]["evicted"].as_u64(), Some(0), "{r}");
    assert!(r["text_secs"].as_f64().is_some(), "the text dump ran: {r}");
    let ct = &r["conntrack"];
    let entries = ct["entries"].as_u64().unwrap();
    assert!(entries >= FLOWS, "conntrack holds the flows: {r}");
    assert_eq!(ct["entries_shown"].as_u64(), Some(entries), "{r}");
    assert!(r["conntrack_secs"].as_f64().is_some(), "{r}");
    assert_eq!(conntrack_max(), max_before, "nf_conntrack_max restored");
}
