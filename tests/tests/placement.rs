//! Worker placement on the running lab: `cores = "auto"` picks CPU 1 on this 2-CPU VM, every
//! thread of the daemon that is not a worker keeps off it, and a thread that ignores the
//! housekeeping mask is reported. Also `isopath worker plan` on a fixture host, which needs no
//! privileges.

use std::{collections::BTreeSet, path::Path, process::Command};

use isopath_tests::{
    ChildGuard, Lab, bin,
    isopathd::{Isopathd, PORTS, START_TIMEOUT, lab_config, request, socket_path},
    repo_root, require_privileges,
};
use serde_json::Value;

/// `(name, Cpus_allowed_list)` of every thread of `pid`.
fn thread_masks(pid: u32) -> Vec<(String, BTreeSet<usize>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads") {
        let dir = e.unwrap().path();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        out.push((field("Name:"), cpus(&field("Cpus_allowed_list:"))));
    }
    out
}

/// `0-1,3` → {0, 1, 3}.
fn cpus(list: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        out.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap());
    }
    out
}

fn auto_config(lab: &Lab) -> String {
    let cfg = lab_config(lab, "", PORTS);
    assert!(cfg.contains("cores = [1]"));
    cfg.replace("cores = [1]", "cores = \"auto\"")
}

#[test]
fn auto_places_the_worker_on_cpu_1_and_every_other_thread_keeps_off_it() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("plc");
    let mut d = Isopathd::start(&lab, &auto_config(&lab), &[]);
    let s = d.status();
    let p = &s["placement"];
    assert_eq!(p["workers"][0]["core"], 1, "{p:#}");
    assert_eq!(p["workers"].as_array().map(Vec::len), Some(1), "{p:#}");
    assert_eq!(p["housekeeping_cores"], serde_json::json!([0]), "{p:#}");
    assert_eq!(s["workers"][0]["core"], 1);
    // veth: no PCI locality, and the plan says so.
    for port in p["ports"].as_array().unwrap() {
        assert!(
            port["note"]
                .as_str()
                .unwrap()
                .contains("veth: a virtual device"),
            "{port}"
        );
    }

    // The kernel's view: the worker on CPU 1 only, every other thread (control loop,
    // rtnetlink, ...) without CPU 1 in its mask.
    let masks = thread_masks(d.pid());
    assert!(masks.len() >= 3, "{masks:?}");
    let mut workers = 0;
    for (name, allowed) in &masks {
        if name == "isopath-w1" {
            workers += 1;
            assert_eq!(allowed, &BTreeSet::from([1]), "{name}");
        } else {
            assert!(
                !allowed.contains(&1),
                "{name} may run on the worker CPU: {allowed:?}"
            );
            assert!(!allowed.is_empty(), "{name}");
        }
    }
    assert_eq!(workers, 1, "{masks:?}");
    assert!(masks.iter().any(|(n, _)| n == "isopath-rtnl"), "{masks:?}");

    // The daemon's own check agrees.
    let t = &s["threads"];
    assert_eq!(t["offenders"], serde_json::json!([]), "{t:#}");
    assert_eq!(t["workers_pinned"], 1, "{t:#}");
    assert_eq!(t["threads"].as_u64(), Some(masks.len() as u64), "{t:#}");

    // Logged at start, with the one warning about isolation.
    let log = d.log();
    assert!(log.contains("placement: housekeeping CPUs: 0"), "{log}");
    assert!(
        log.contains("placement: no worker CPU is isolated")
            && log.contains("isolcpus=domain,managed_irq,1 nohz_full=1 rcu_nocbs=1 irqaffinity=0"),
        "{log}"
    );
    assert!(log.contains("off_worker_cpus=true"), "{log}");
    let out = d.stop();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_thread_planted_without_the_mask_is_reported() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("pla");
    let path = std::env::temp_dir().join(format!("isopath-{}.toml", lab.prefix));
    std::fs::write(&path, auto_config(&lab)).unwrap();
    let cmd = [
        "env".to_owned(),
        "ISOPATH_TEST_UNPINNED_THREAD=1".to_owned(),
        bin("isopathd").display().to_string(),
        "-c".to_owned(),
        path.display().to_string(),
    ];
    let mut d = ChildGuard::new(lab.spawn(lab.ns_app(), &cmd)).with_label("isopathd");
    assert!(
        d.wait_stderr_contains(" ready ", START_TIMEOUT),
        "{}",
        d.stderr_so_far()
    );
    let s: Value = request(&socket_path(&lab), "status").unwrap();
    let offenders = s["threads"]["offenders"].as_array().unwrap().clone();
    assert_eq!(offenders.len(), 1, "{:#}", s["threads"]);
    let o = &offenders[0];
    assert_eq!(o["name"], "isopath-planted");
    assert_eq!(o["allowed"], "0-1");
    assert!(
        o["problem"].as_str().unwrap().contains("worker CPUs 1"),
        "{o}"
    );
    // It is real: the kernel lets that thread run on CPU 1.
    let masks = thread_masks(d.id());
    let planted = masks.iter().find(|(n, _)| n == "isopath-planted").unwrap();
    assert!(planted.1.contains(&1), "{masks:?}");
    // Everything else still keeps off it.
    for (name, allowed) in masks.iter().filter(|(n, _)| n != "isopath-planted") {
        assert!(
            name == "isopath-w1" || !allowed.contains(&1),
            "{name}: {allowed:?}"
        );
    }
    let log = d.stderr_so_far();
    assert!(
        log.contains(&format!(
            "thread {} (isopath-planted) may run on CPUs 0-1",
            o["tid"]
        )),
        "{log}"
    );
    assert!(log.contains("off_worker_cpus=false"), "{log}");
    let out = d.stop();
    assert!(out.status.success(), "{out:?}");
    let _ = std::fs::remove_file(path);
}

/// Needs no privileges: the plan of a fixture host, as JSON, from the binary.
#[test]
fn worker_plan_reads_a_fixture_host() {
    let host = repo_root().join("tests/fixtures/hosts/two-socket-82599");
    let out = Command::new(bin("isopath"))
        .args(["worker", "plan", "-j", "--root"])
        .arg(&host)
        .arg("--config")
        .arg(host.join("isopath.toml"))
        .output()
        .expect("isopath worker plan");
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cores: Vec<u64> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["core"].as_u64().unwrap())
        .collect();
    assert_eq!(cores, (8..16).collect::<Vec<_>>(), "{v:#}");
    assert!(
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["numa"] == 1)
    );
    assert_eq!(
        v["housekeeping_cores"],
        serde_json::json!([0, 1, 2, 3, 16, 17, 18, 19])
    );
    assert_eq!(v["warnings"], serde_json::json!([]));
    // The table, and a root without a topology file refused with the reason.
    let out = Command::new(bin("isopath"))
        .args(["worker", "plan", "--root"])
        .arg(&host)
        .arg("--config")
        .arg(host.join("isopath.toml"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("why: NIC-local NUMA node 1 first"),
        "{table}"
    );
    let out = Command::new(bin("isopath"))
        .args(["worker", "plan", "--root"])
        .arg(Path::new("/nonexistent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no topology.xml"),
        "{out:?}"
    );
}
