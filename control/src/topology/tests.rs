//! Placement over fixture hosts (`tests/fixtures/hosts/*`: hwloc XML or synthetic topologies,
//! the kernel's isolation files) and over the running host.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::{place::place, *};

fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hosts")
        .join(name)
}

/// The plan for host `name` with its isopath.toml, `[workers]` replaced by `workers`.
fn plan_for(name: &str, workers: &str) -> Plan {
    let dir = fixture_dir(name);
    let text = std::fs::read_to_string(dir.join("isopath.toml")).unwrap();
    // Drop the host's own [workers] table (cores and nothing else in these fixtures).
    let text = text.replace("[workers]\ncores = [2, 3, 4, 5]\n", "");
    let text = text.replace("[workers]\ncores = [2, 3]\n", "");
    let text = text.replace("[workers]\ncores = [1]\n", "");
    let config = Config::parse(&format!("{text}\n[workers]\n{workers}\n")).unwrap();
    plan_at(&Root::new(&dir), &config).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `(core, numa, "port:queue ...")` per worker.
fn workers(spec: &[(usize, usize, &str)]) -> Value {
    Value::Array(
        spec.iter()
            .enumerate()
            .map(|(w, &(core, numa, queues))| {
                let queues: Vec<Value> = queues
                    .split_whitespace()
                    .map(|q| {
                        let (port, queue) = q.split_once(':').unwrap();
                        json!({ "port": port, "queue": queue.parse::<u32>().unwrap() })
                    })
                    .collect();
                json!({ "worker": w, "core": core, "numa": numa, "queues": queues })
            })
            .collect(),
    )
}

/// The part of the plan JSON the table fixes: workers (without the descriptive fields),
/// housekeeping and isolated CPUs.
fn decision(plan: &Plan) -> Value {
    let mut v = serde_json::to_value(plan).unwrap();
    for w in v["workers"].as_array_mut().unwrap() {
        let o = w.as_object_mut().unwrap();
        o.retain(|k, _| ["worker", "core", "numa", "queues"].contains(&k.as_str()));
    }
    json!({
        "workers": v["workers"],
        "housekeeping_cores": v["housekeeping_cores"],
        "isolated": v["isolated"],
    })
}

struct Case {
    host: &'static str,
    workers: &'static str,
    expect: Value,
    /// Each warning, by text it must hold; no other warning.
    warnings: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            host: "no-isolation",
            workers: "",
            expect: json!({
                "workers": workers(&[
                    (1, 0, "ens1f0:0 ens1f0:3 ens1f1:0 ens1f1:3"),
                    (2, 0, "ens1f0:1 ens1f1:1"),
                    (3, 0, "ens1f0:2 ens1f1:2"),
                ]),
                "housekeeping_cores": [0],
                "isolated": [],
            }),
            warnings: &[
                "add `isolcpus=domain,managed_irq,1-3 nohz_full=1-3 rcu_nocbs=1-3 irqaffinity=0` to the kernel command line",
                "ens1f0 has 4 queues for 3 workers",
                "ens1f1 has 4 queues for 3 workers",
            ],
        },
        Case {
            host: "isolcpus-flags",
            workers: "",
            expect: json!({
                "workers": workers(&[
                    (2, 0, "ens2f0np0:0 ens2f1np1:0"),
                    (3, 0, "ens2f0np0:1 ens2f1np1:1"),
                    (4, 0, "ens2f0np0:2 ens2f1np1:2"),
                    (5, 0, "ens2f0np0:3 ens2f1np1:3"),
                ]),
                "housekeeping_cores": [0, 1, 6, 7],
                "isolated": [2, 3, 4, 5],
            }),
            warnings: &[],
        },
        Case {
            host: "isolcpus-2-7",
            workers: "",
            expect: json!({
                "workers": workers(&[
                    (2, 0, "ens1f0:0"),
                    (3, 0, "ens1f0:1"),
                    (4, 0, "ens1f0:2"),
                    (5, 0, "ens1f0:3"),
                    (6, 0, "ens1f0:4"),
                    (7, 0, "ens1f0:5"),
                ]),
                "housekeeping_cores": [0, 1],
                "isolated": [2, 3, 4, 5, 6, 7],
            }),
            warnings: &[
                "isolated by isolcpus domain, managed_irq only; also add `nohz_full=2-7 rcu_nocbs=2-7 irqaffinity=0-1`",
            ],
        },
        Case {
            host: "nohz-full",
            workers: "",
            expect: json!({
                "workers": workers(&[
                    (2, 0, "enp1s0f0np0:0 enp1s0f0np0:2"),
                    (3, 0, "enp1s0f0np0:1 enp1s0f0np0:3"),
                ]),
                "housekeeping_cores": [0, 1],
                "isolated": [2, 3],
            }),
            warnings: &[
                "isolated by nohz_full, rcu_nocbs only; also add `isolcpus=domain,managed_irq,2-3 irqaffinity=0-1`",
            ],
        },
        Case {
            host: "cgroup-v2-partition",
            workers: "",
            expect: json!({
                "workers": workers(&[
                    (4, 0, "ens3f0:0 ens3f1:0"),
                    (5, 0, "ens3f0:1 ens3f1:1"),
                    (6, 0, "ens3f0:2 ens3f1:2"),
                    (7, 0, "ens3f0:3 ens3f1:3"),
                ]),
                "housekeeping_cores": [0, 1, 2, 3],
                "isolated": [4, 5, 6, 7],
            }),
            warnings: &[
                "isolated by cpuset partition only; also add `isolcpus=managed_irq,4-7 nohz_full=4-7 rcu_nocbs=4-7 irqaffinity=0-3`",
            ],
        },
        Case {
            host: "two-socket-82599",
            workers: "",
            expect: json!({
                "workers": workers(&(8..16)
                    .map(|c| (c, 1, ["ens1f0:0 ens1f1:0", "ens1f0:1 ens1f1:1", "ens1f0:2 ens1f1:2",
                        "ens1f0:3 ens1f1:3", "ens1f0:4 ens1f1:4", "ens1f0:5 ens1f1:5",
                        "ens1f0:6 ens1f1:6", "ens1f0:7 ens1f1:7"][c - 8]))
                    .collect::<Vec<_>>()),
                "housekeeping_cores": [0, 1, 2, 3, 16, 17, 18, 19],
                "isolated": (4..16).chain(20..32).collect::<Vec<_>>(),
            }),
            warnings: &[],
        },
        Case {
            host: "veth-host",
            workers: "",
            expect: json!({
                "workers": workers(&[(1, 0, "up0:0 up0:1 m0:0 m0:1")]),
                "housekeeping_cores": [0],
                "isolated": [],
            }),
            warnings: &[
                "no worker CPU is isolated: workers on 1 share their cores with other tasks, the scheduler tick, RCU callbacks and interrupts; to isolate them add `isolcpus=domain,managed_irq,1 nohz_full=1 rcu_nocbs=1 irqaffinity=0` to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot)",
            ],
        },
        // The lab's explicit list: the same plan as "auto".
        Case {
            host: "veth-host",
            workers: "cores = [1]",
            expect: json!({
                "workers": workers(&[(1, 0, "up0:0 up0:1 m0:0 m0:1")]),
                "housekeeping_cores": [0],
                "isolated": [],
            }),
            warnings: &["no worker CPU is isolated"],
        },
        // Two workers on one core's hyperthreads, as listed: kept, and said.
        Case {
            host: "two-socket-82599",
            workers: "cores = [8, 24]",
            expect: json!({
                "workers": workers(&[
                    (8, 1, "ens1f0:0 ens1f0:2 ens1f0:4 ens1f0:6 ens1f1:0 ens1f1:2 ens1f1:4 ens1f1:6"),
                    (24, 1, "ens1f0:1 ens1f0:3 ens1f0:5 ens1f0:7 ens1f1:1 ens1f1:3 ens1f1:5 ens1f1:7"),
                ]),
                "housekeeping_cores": [0, 1, 2, 3, 16, 17, 18, 19],
                "isolated": (4..16).chain(20..32).collect::<Vec<_>>(),
            }),
            warnings: &["workers on CPUs 8 and 24 are hyperthread siblings of one core"],
        },
        // A worker listed on a node-0 housekeeping CPU: not isolated, remote from the NIC.
        Case {
            host: "two-socket-82599",
            workers: "cores = [9, 2]",
            expect: json!({
                "workers": workers(&[
                    (9, 1, "ens1f0:0 ens1f0:2 ens1f0:4 ens1f0:6 ens1f1:0 ens1f1:2 ens1f1:4 ens1f1:6"),
                    (2, 0, "ens1f0:1 ens1f0:3 ens1f0:5 ens1f0:7 ens1f1:1 ens1f1:3 ens1f1:5 ens1f1:7"),
                ]),
                "housekeeping_cores": [0, 1, 3, 16, 17, 19],
                "isolated": (4..16).chain(20..32).collect::<Vec<_>>(),
            }),
            warnings: &[
                "worker CPUs 2 are not isolated while 9 are",
                "ens1f0's NIC is on NUMA node 1; workers on CPUs 2 are not",
                "ens1f1's NIC is on NUMA node 1; workers on CPUs 2 are not",
            ],
        },
    ]
}

#[test]
fn fixture_hosts_give_the_expected_plans() {
    for c in cases() {
        let plan = plan_for(c.host, c.workers);
        let what = format!("{} [{}]:\n{}", c.host, c.workers, plan.table());
        assert_eq!(decision(&plan), c.expect, "{what}");
        assert_eq!(plan.warnings.len(), c.warnings.len(), "{what}");
        for (got, want) in plan.warnings.iter().zip(c.warnings) {
            assert!(got.contains(want), "{what}\n{want:?} not in {got:?}");
        }
        // Housekeeping never overlaps a worker or a worker's idle sibling.
        let house = plan.housekeeping();
        for w in &plan.workers {
            assert!(!house.contains(&w.core), "{what}");
            assert!(w.siblings.iter().all(|s| !house.contains(s)), "{what}");
        }
    }
}

#[test]
fn the_two_socket_plan_says_where_and_why() {
    let plan = plan_for("two-socket-82599", "");
    for p in &plan.ports {
        assert_eq!(p.numa, Some(1), "{p:?}");
        assert!(p.note.contains("82599ES"), "{p:?}");
    }
    assert!(plan.workers.iter().all(|w| w.siblings == [w.core + 16]));
    let t = &plan.topology;
    assert_eq!(
        (
            t.packages,
            t.numa_nodes.len(),
            t.cores,
            t.cpus,
            t.threads_per_core
        ),
        (2, 2, 16, 32, 2)
    );
    let table = plan.table();
    for line in [
        "why: NIC-local NUMA node 1 first (ens1f0, ens1f1)",
        "why: hyperthread siblings 24-31 of worker cores left idle",
        "why: isolated CPUs 4-7,20-23 left unused",
        "housekeeping CPUs: 0-3,16-19",
    ] {
        assert!(table.contains(line), "{line:?} not in\n{table}");
    }
}

#[test]
fn the_partition_is_joined_and_the_veth_has_no_locality() {
    let plan = plan_for("cgroup-v2-partition", "");
    for w in &plan.workers {
        assert_eq!(
            w.cgroup.as_deref(),
            Some("/sys/fs/cgroup/isopath.slice/isopath.service/workers"),
            "{w:?}"
        );
    }
    let plan = plan_for("veth-host", "");
    assert!(plan.workers.iter().all(|w| w.cgroup.is_none()));
    for p in &plan.ports {
        assert_eq!((p.numa, p.pci.as_deref()), (None, None));
        assert!(
            p.note.contains("veth: a virtual device, no PCI locality"),
            "{p:?}"
        );
    }
    // The JSON shape, key for key.
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["workers"][0]["worker"], 0);
    assert_eq!(v["workers"][0]["core"], 1);
    assert_eq!(v["workers"][0]["numa"], 0);
    assert_eq!(
        v["workers"][0]["queues"][0],
        json!({"port": "up0", "queue": 0})
    );
    assert_eq!(v["housekeeping_cores"], json!([0]));
    assert_eq!(v["isolated"], json!([]));
    assert!(v["warnings"].is_array());
}

#[test]
fn siblings_are_used_only_when_allowed() {
    // Two cores of two threads each, nothing isolated: CPU 0's core keeps the housekeeping.
    let m = machine::Machine::from_synthetic("Package:1 Core:2 PU:2").unwrap();
    let iso = Isolation::none((0..4).collect());
    let port = |q| PortRequest {
        locality: PortLocality {
            port: "p0".into(),
            numa: None,
            pci: None,
            note: String::new(),
        },
        queues: q,
    };
    let mut req = Request {
        ports: vec![port(4)],
        ..Request::default()
    };
    let plan = place(&m, &iso, &req).unwrap();
    assert_eq!(plan.worker_cpus().into_iter().collect::<Vec<_>>(), [2]);
    assert_eq!(plan.workers[0].siblings, [3]);
    assert_eq!(plan.housekeeping_cores, [0, 1]);
    req.allow_siblings = true;
    let plan = place(&m, &iso, &req).unwrap();
    assert_eq!(plan.worker_cpus().into_iter().collect::<Vec<_>>(), [2, 3]);
    assert_eq!(plan.housekeeping_cores, [0, 1]);
    assert!(plan.warnings.iter().all(|w| !w.contains("siblings")));
    // At most as many workers as the port has queues.
    req.ports = vec![port(1)];
    assert_eq!(place(&m, &iso, &req).unwrap().workers.len(), 1);
    // A listed CPU that does not exist is refused.
    req.cores = CoreChoice::List(vec![7]);
    let e = place(&m, &iso, &req).unwrap_err().to_string();
    assert_eq!(e, "CPU 7 is not online (online: 0-3)");
}

#[test]
fn an_isolated_core_whose_sibling_is_housekeeping_comes_last() {
    // Siblings numbered side by side (AMD): isolcpus=1-7 leaves CPU 1 isolated on the core of
    // housekeeping CPU 0; a worker there would share a core with the control threads.
    let m = machine::Machine::from_synthetic("Package:1 Core:4 PU:2").unwrap();
    let mut iso = Isolation::none((0..8).collect());
    iso.sysfs_isolated = Some((1..8).collect());
    let mut req = Request {
        ports: vec![PortRequest {
            locality: PortLocality {
                port: "p0".into(),
                numa: None,
                pci: None,
                note: String::new(),
            },
            queues: 2,
        }],
        ..Request::default()
    };
    let plan = place(&m, &iso, &req).unwrap();
    assert_eq!(plan.worker_cpus().into_iter().collect::<Vec<_>>(), [2, 4]);
    assert_eq!(plan.housekeeping_cores, [0]);
    // With more queues than whole isolated cores, the shared one is used last.
    req.ports[0].queues = 4;
    let plan = place(&m, &iso, &req).unwrap();
    assert_eq!(
        plan.workers.iter().map(|w| w.core).collect::<Vec<_>>(),
        [2, 4, 6, 1]
    );
    assert_eq!(plan.housekeeping_cores, [0]);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.starts_with("housekeeping CPUs 0 are hyperthread siblings of worker CPUs")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn isolcpus_nohz_counts_as_tick_isolation() {
    let mut iso = Isolation::none((0..8).collect());
    iso.isolcpus_flags = vec!["nohz".into(), "domain".into(), "managed_irq".into()];
    iso.isolcpus_cpus = Some((2..6).collect());
    let cpus: Cpus = (2..6).collect();
    let m = iso.mechanisms(&cpus);
    assert!(m.domain && m.managed_irq && m.nohz_full && m.rcu_nocbs && !m.irqaffinity);
    assert_eq!(
        m.missing(&cpus, &[0, 1, 6, 7].into_iter().collect()),
        ["irqaffinity=0-1,6-7"]
    );
    // managed_irq alone: isolated for placement, but the scheduler still balances onto them.
    iso.isolcpus_flags = vec!["managed_irq".into()];
    assert_eq!(iso.domain(), Cpus::new());
    assert_eq!(iso.isolated(), cpus);
    let m = iso.mechanisms(&cpus);
    assert!(!m.domain && m.managed_irq && !m.nohz_full);
}

/// The running host: on this project's 2-CPU lab VM the one worker goes on CPU 1 (the tests
/// and the demo run traffic on CPU 0).
#[test]
fn the_running_host_is_placed_away_from_cpu_0() {
    let root = Root::new("/");
    let plan = plan_at(&root, &Config::default()).unwrap();
    let online = crate::doctor::online_cpus(&root);
    assert_eq!(plan.workers.len(), 1);
    let house = plan.housekeeping();
    assert!(!house.is_empty() && house.is_disjoint(&plan.worker_cpus()));
    if online.len() > 1 {
        assert_ne!(plan.workers[0].core, 0, "{}", plan.table());
    }
    if online == [0, 1].into_iter().collect() {
        assert_eq!(plan.workers[0].core, 1);
        assert_eq!(plan.housekeeping_cores, [0]);
    }
    assert!(
        plan.topology.source == "this host",
        "{}",
        plan.topology.source
    );
}

#[test]
fn the_thread_check_names_threads_on_worker_cpus() {
    let plan = plan_for("veth-host", "");
    // This test process: its threads may run anywhere, and none is a worker.
    let check = threads::check(&Root::new("/"), &plan);
    assert!(check.threads >= 1);
    assert_eq!(check.workers_pinned, 0);
    let me = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let allowed = me
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned();
    let on_worker = cpulist::parse(&allowed, None).unwrap().contains(&1);
    assert_eq!(
        check.offenders.iter().any(|o| o.allowed == allowed),
        on_worker,
        "{check:?}"
    );
}
