//! Doctor against fixture hosts: `tests/fixtures/hosts/*`, written by `make-fixtures.py` in the
//! shape the named kernels give their files (see the README there).

use std::path::PathBuf;

use super::*;

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hosts")
        .join(name)
}

fn fixture(name: &str) -> Report {
    let dir = fixture_dir(name);
    let root = Root::new(&dir);
    let cfg = dir.join("isopath.toml");
    let config = Config::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let target = Target::from_config(&config, Some("isopath.toml"), &root);
    diagnose(&root, &target)
}

use Status::{Fail as F, Warn as W};

/// Per host: every finding that is not ok, as (check, subject, status), in report order, and
/// text its detail must hold. Everything else must be ok.
#[allow(clippy::type_complexity)]
const TABLE: &[(&str, &[(&str, &str, Status, &str)])] = &[
    (
        "no-isolation",
        &[
            ("kernel.tx_budget", "kernel", W, "6.1.0-18-amd64"),
            (
                "cpu.isolcpus",
                "cores 2-3",
                W,
                "not on the kernel command line",
            ),
            (
                "cpu.nohz_full",
                "cores 2-3",
                W,
                "not on the kernel command line",
            ),
            (
                "cpu.rcu_nocbs",
                "cores 2-3",
                W,
                "not on the kernel command line",
            ),
            ("cpu.irqaffinity", "cores 2-3", W, "new IRQs may go to 0-3"),
            (
                "cpu.governor",
                "cores 2-3",
                W,
                "cpu2 powersave, cpu3 powersave",
            ),
            ("cpu.irqbalance", "irqbalance", W, "running (pid 612)"),
            (
                "cpu.kthreads",
                "cores 2-3",
                W,
                "2 kthreadd on 0-3, 10 rcu_preempt on 0-3, 11 kworker/u16:0-events_unbound on 0-3, 12 kcompactd0 on 0-3",
            ),
            (
                "port.queues",
                "ens1f0",
                W,
                "4 RX / 4 TX queues for 2 worker",
            ),
            ("port.irqs", "ens1f0", W, "129 i40e-ens1f0-TxRx-2 -> 2"),
            (
                "port.queues",
                "ens1f1",
                W,
                "4 RX / 4 TX queues for 2 worker",
            ),
            ("port.link", "ens1f1", W, "no carrier"),
            ("port.irqs", "ens1f1", W, "135 i40e-ens1f1-TxRx-3 -> 3"),
        ],
    ),
    (
        "isolcpus-flags",
        &[("kernel.tx_budget", "kernel", W, "needs 6.17")],
    ),
    (
        "nohz-full",
        &[
            ("kernel.tx_budget", "kernel", W, "needs 6.17"),
            (
                "cpu.isolcpus",
                "cores 2-3",
                W,
                "not on the kernel command line",
            ),
            (
                "cpu.irqaffinity",
                "cores 2-3",
                W,
                "not on the kernel command line",
            ),
            (
                "cpu.pinned_tasks",
                "cores 2-3",
                W,
                "pid 4242 (qemu-system-x86) on 3",
            ),
            ("port.queues", "enp1s0f0np0", W, "4 RX / 4 TX"),
            (
                "port.mtu",
                "enp1s0f0np0",
                F,
                "4096-byte UMEM frame holds 3840",
            ),
        ],
    ),
    (
        "ixgbe-16q",
        &[
            ("kernel.tx_budget", "kernel", W, "5.15.0-131-generic"),
            (
                "cpu.nohz_full",
                "cores 2-3",
                W,
                "not on the kernel command line",
            ),
            (
                "cpu.rcu_nocbs",
                "cores 2-3",
                W,
                "not on the kernel command line",
            ),
            ("cpu.irqaffinity", "cores 2-3", W, "new IRQs may go to 0-15"),
            ("cpu.kthreads", "cores 2-3", W, "2 kthreadd on 0-15"),
            (
                "port.queues",
                "eth2",
                W,
                "16 RX / 16 TX queues for 2 worker core(s)",
            ),
            ("port.mtu", "eth2", F, "ixgbe refuses an XDP program"),
            (
                "port.irqs",
                "eth2",
                W,
                "72 eth2-TxRx-2 -> 2, 73 eth2-TxRx-3 -> 3",
            ),
        ],
    ),
    (
        "veth-host",
        &[
            (
                "cpu.isolcpus",
                "cores 1",
                W,
                "not on the kernel command line",
            ),
            ("cpu.nohz_full", "cores 1", W, "without CONFIG_NO_HZ_FULL"),
            (
                "cpu.rcu_nocbs",
                "cores 1",
                W,
                "not on the kernel command line",
            ),
            ("cpu.irqaffinity", "cores 1", W, "new IRQs may go to 0-1"),
            (
                "cpu.kthreads",
                "cores 1",
                W,
                "2 kthreadd on 0-1, 4 kworker/R-rcu_gp on 0-1, 12 kworker/u8:0-kvfree_rcu_reclaim on 0-1, 15 rcu_preempt on 0-1 and 1 more",
            ),
            ("port.zero_copy", "up0", W, "copy mode only"),
            ("port.queues", "up0", W, "2 RX / 2 TX"),
            ("port.zero_copy", "m0", W, "copy mode only"),
            ("port.queues", "m0", W, "2 RX / 2 TX"),
        ],
    ),
];

#[test]
fn fixture_hosts_give_the_expected_findings() {
    for &(host, expected) in TABLE {
        let report = fixture(host);
        let got: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.status != Status::Ok)
            .collect();
        let show = || report.table();
        assert_eq!(
            got.iter()
                .map(|f| (f.check, f.subject.as_str(), f.status))
                .collect::<Vec<_>>(),
            expected
                .iter()
                .map(|&(c, s, st, _)| (c, s, st))
                .collect::<Vec<_>>(),
            "{host}:\n{}",
            show()
        );
        for (f, &(_, _, _, text)) in got.iter().zip(expected) {
            assert!(
                f.detail.contains(text),
                "{host} {} {}: {text:?} not in {:?}",
                f.check,
                f.subject,
                f.detail
            );
        }
        for f in &report.findings {
            assert!(!f.why.is_empty(), "{host} {}: no why", f.check);
            assert_eq!(
                f.fix.is_some(),
                f.status != Status::Ok,
                "{host} {} {}: a fix exactly when not ok",
                f.check,
                f.subject
            );
        }
    }
}

#[test]
fn every_check_runs_once_per_subject() {
    let r = fixture("veth-host");
    let kernel = r.findings.iter().filter(|f| f.subject == "kernel").count();
    let cpu = r
        .findings
        .iter()
        .filter(|f| f.check.starts_with("cpu."))
        .count();
    let per_port = |p: &str| r.findings.iter().filter(|f| f.subject == p).count();
    assert_eq!((kernel, cpu, per_port("up0"), per_port("m0")), (7, 9, 6, 6));
}

#[test]
fn fixes_name_the_exact_values() {
    let r = fixture("ixgbe-16q");
    let fix = |check: &str| {
        r.findings
            .iter()
            .find(|f| f.check == check)
            .and_then(|f| f.fix.clone())
            .unwrap_or_default()
    };
    assert!(fix("cpu.nohz_full").contains("nohz_full=2-3"));
    assert!(fix("cpu.irqaffinity").contains("irqaffinity=0-1,4-15"));
    assert!(
        fix("cpu.kthreads").starts_with("for p in 2 10 11 12; do taskset -p -c 0-1,4-15 $p; done")
            && fix("cpu.kthreads").contains("echo fff3 > /sys/devices/virtual/workqueue/cpumask")
            && fix("cpu.kthreads").contains("nohz_full=2-3"),
        "{}",
        fix("cpu.kthreads")
    );
    assert!(fix("port.queues").contains("ethtool -L eth2 combined 2"));
    assert!(fix("port.mtu").contains("ip link set dev eth2 mtu 1774"));
    assert!(
        fix("port.irqs")
            .contains("for i in 72 73 86; do echo 0-1,4-15 > /proc/irq/$i/smp_affinity_list; done"),
        "{}",
        fix("port.irqs")
    );
}

#[test]
fn a_missing_port_fails_and_host_only_runs_without_ports() {
    let dir = fixture_dir("veth-host");
    let root = Root::new(&dir);
    let mut target = Target::host_only(&root);
    assert_eq!(cpulist::format(&target.worker_cores), "1");
    let r = diagnose(&root, &target);
    assert!(r.findings.iter().all(|f| !f.check.starts_with("port.")));
    target.ports.push(TargetPort {
        name: "nosuch0".into(),
        queues: None,
    });
    let r = diagnose(&root, &target);
    let f = r.findings.last().unwrap();
    assert_eq!((f.check, f.status), ("port.driver", Status::Fail));
    assert_eq!(r.worst(), Status::Fail);
}

#[test]
fn a_queue_limit_below_the_device_queues_fails() {
    let dir = fixture_dir("ixgbe-16q");
    let root = Root::new(&dir);
    let mut target = Target::host_only(&root);
    target.worker_cores = [2, 3].into_iter().collect();
    target.ports.push(TargetPort {
        name: "eth2".into(),
        queues: Some(2),
    });
    let r = diagnose(&root, &target);
    let q = r
        .findings
        .iter()
        .find(|f| f.check == "port.queues")
        .unwrap();
    assert_eq!(q.status, Status::Fail, "{q:?}");
    assert!(q.detail.contains("queues 2-15 are dropped"), "{q:?}");
}

#[test]
fn json_holds_the_summary_and_every_finding() {
    let r = fixture("nohz-full");
    let v = r.to_json();
    assert_eq!(v["worker_cores"], "2-3");
    assert_eq!(v["summary"]["fail"], 1);
    assert_eq!(v["summary"]["warn"], 5);
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), r.findings.len());
    let mtu = findings.iter().find(|f| f["check"] == "port.mtu").unwrap();
    assert_eq!(mtu["status"], "fail");
    assert_eq!(mtu["subject"], "enp1s0f0np0");
    assert!(mtu["fix"].as_str().unwrap().contains("mtu 3822"));
}

#[test]
fn the_table_shows_why_and_fix_under_problems_only() {
    let t = fixture("isolcpus-flags").table();
    assert!(t.contains("ok     cpu.isolcpus"), "{t}");
    assert!(t.contains("isolcpus=nohz,domain,managed_irq,2-5 covers the worker cores"));
    assert_eq!(t.matches("why:").count(), 1, "{t}");
    assert!(
        t.trim_end().ends_with("summary: 27 ok, 1 warn, 0 fail"),
        "{t}"
    );
}

/// Live on this machine: it must not crash, and what it reads must be sane.
#[test]
fn the_running_host_is_diagnosed_without_crashing() {
    let root = Root::new("/");
    let r = diagnose(&root, &Target::host_only(&root));
    assert!(r.findings.iter().any(|f| f.check == "kernel.version"));
    assert_ne!(
        r.findings
            .iter()
            .find(|f| f.check == "kernel.version")
            .map(|f| f.status),
        Some(Status::Fail)
    );
    let _ = r.table();
    let _ = r.to_json();
}
