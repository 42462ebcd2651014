//! The placement decision: which CPU each worker polls on, which queues it owns, where
//! everything else runs. Pure: a [`Machine`], an [`Isolation`] and a [`Request`] in, a
//! [`Plan`] out, so the same decision is made, and tested, for the running host and a fixture.

use std::collections::BTreeMap;

use super::{
    Plan, PlanError, PortLocality, QueueRef, Summary, WorkerSlot,
    isolation::{Isolation, Mechanisms},
    machine::Machine,
};
use crate::cpulist::{self, Cpus};

/// Where workers go: chosen from the topology, or listed by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CoreChoice {
    /// Isolated cores first, NIC-local NUMA node first, one worker per physical core.
    #[default]
    Auto,
    /// One worker per listed CPU, in order.
    List(Vec<usize>),
}

/// A port to place: its name, how many queues get sockets, where its NIC is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    /// Where the port is.
    pub locality: PortLocality,
    /// Queues bound (`0..queues`).
    pub queues: u32,
}

/// What the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The ports, in configuration order.
    pub ports: Vec<PortRequest>,
    /// `[workers] cores`.
    pub cores: CoreChoice,
    /// `[workers] allow_siblings`: two workers may share a physical core.
    pub allow_siblings: bool,
}

const GRUB: &str = "GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot";

/// Places workers and housekeeping on `machine` as isolated by `iso`.
///
/// # Errors
/// A listed CPU that is not online.
pub fn place(machine: &Machine, iso: &Isolation, req: &Request) -> Result<Plan, PlanError> {
    let mut online: Cpus = iso.online.intersection(&machine.cpus()).copied().collect();
    if online.is_empty() {
        online = iso.online.clone();
    }
    let reach: Cpus = iso.reachable().intersection(&online).copied().collect();
    let isolated: Cpus = iso.isolated().intersection(&online).copied().collect();
    let mut warnings: Vec<String> = iso.problems.clone();
    let mut decisions = Vec::new();

    // NUMA nodes by how many ports' NICs hang off them.
    let mut by_node: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for p in &req.ports {
        if let Some(n) = p.locality.numa {
            by_node.entry(n).or_default().push(&p.locality.port);
        }
    }
    let mut nodes: Vec<(usize, Vec<&str>)> = by_node.into_iter().collect();
    nodes.sort_by_key(|(n, ports)| (std::cmp::Reverse(ports.len()), *n));
    let rank = |numa: Option<usize>| {
        numa.and_then(|n| nodes.iter().position(|(m, _)| *m == n))
            .unwrap_or(nodes.len())
    };
    let max_workers = req
        .ports
        .iter()
        .map(|p| p.queues.max(1) as usize)
        .min()
        .unwrap_or(1);

    let cpus: Vec<usize> = match &req.cores {
        CoreChoice::List(list) => {
            for &c in list {
                if !online.contains(&c) {
                    return Err(PlanError::NoSuchCpu {
                        cpu: c,
                        online: cpulist::format(&online),
                    });
                }
            }
            decisions.push(format!(
                "workers on the listed CPUs {}",
                cpulist::format(&list.iter().copied().collect())
            ));
            list.clone()
        }
        CoreChoice::Auto => {
            let usable = |c: &super::machine::Core| -> Vec<usize> {
                c.pus
                    .iter()
                    .copied()
                    .filter(|p| online.contains(p) && reach.contains(p))
                    .collect()
            };
            // Isolated cores if there are any; else every core but CPU 0's (where the kernel's
            // own housekeeping and boot-time work run); else, on a one-core host, that one.
            // (NUMA node, candidate CPUs, whether a sibling is a non-isolated CPU).
            let mut tier: Vec<(Option<usize>, Vec<usize>, bool)> = machine
                .cores
                .iter()
                .map(|c| {
                    let all = usable(c);
                    let pus: Vec<usize> = all
                        .iter()
                        .copied()
                        .filter(|p| isolated.contains(p))
                        .collect();
                    let partial = pus.len() < all.len();
                    (c.numa, pus, partial)
                })
                .filter(|(_, pus, _)| !pus.is_empty())
                .collect();
            if tier.is_empty() {
                if !isolated.is_empty() {
                    warnings.push(format!(
                        "CPUs {} are isolated but this process's cpuset cgroup {} (CPUs {}) cannot use them: workers are placed as if nothing were isolated; run isopathd in a cgroup that holds them",
                        cpulist::format(&isolated),
                        iso.cgroup.path.as_deref().unwrap_or("?"),
                        cpulist::format(&reach)
                    ));
                }
                tier = machine
                    .cores
                    .iter()
                    .filter(|c| !c.pus.contains(&0))
                    .map(|c| (c.numa, usable(c), false))
                    .filter(|(_, pus, _)| !pus.is_empty())
                    .collect();
                decisions.push("no isolated CPU: workers on cores away from CPU 0".to_owned());
            } else {
                decisions.push(format!(
                    "workers on isolated CPUs {}",
                    cpulist::format(&isolated)
                ));
            }
            if tier.is_empty() {
                tier = machine
                    .cores
                    .iter()
                    .map(|c| (c.numa, usable(c), false))
                    .filter(|(_, pus, _)| !pus.is_empty())
                    .collect();
                warnings
                    .push("only one core: the worker shares CPU 0 with everything else".to_owned());
            }
            // Whole isolated cores before those whose sibling is a housekeeping CPU, then the
            // NIC-local node, then by CPU number.
            tier.sort_by_key(|(numa, pus, partial)| (*partial, rank(*numa), pus.first().copied()));
            if let Some((n, ports)) = nodes.first() {
                decisions.push(format!(
                    "NIC-local NUMA node {n} first ({})",
                    ports.join(", ")
                ));
            }
            // One hardware thread per physical core first; siblings only when allowed, and
            // only after every core has one worker.
            let mut picked: Vec<usize> = tier.iter().map(|(_, pus, _)| pus[0]).collect();
            if req.allow_siblings {
                picked.extend(tier.iter().flat_map(|(_, pus, _)| pus[1..].iter().copied()));
            }
            let available = picked.len();
            picked.truncate(max_workers);
            if available > picked.len() {
                decisions.push(format!(
                    "{} worker(s): every worker needs a queue on every port, and the port with the fewest has {max_workers}",
                    picked.len()
                ));
            }
            picked
        }
    };

    let wset: Cpus = cpus.iter().copied().collect();
    // Hyperthread siblings of worker CPUs are left idle: anything there shares the worker's
    // pipeline and L1/L2.
    let siblings: Cpus = cpus
        .iter()
        .filter_map(|&c| machine.core_of(c))
        .flat_map(|core| core.pus.iter().copied())
        .filter(|p| !wset.contains(p) && online.contains(p))
        .collect();
    for &c in &cpus {
        let Some(core) = machine.core_of(c) else {
            continue;
        };
        let shared: Vec<usize> = core
            .pus
            .iter()
            .copied()
            .filter(|p| *p != c && wset.contains(p))
            .collect();
        if !shared.is_empty() && !req.allow_siblings && shared[0] > c {
            warnings.push(format!(
                "workers on CPUs {c} and {} are hyperthread siblings of one core: each gets about half of it (set allow_siblings = true if that is meant)",
                cpulist::format(&shared.iter().copied().collect())
            ));
        }
    }
    if !siblings.is_empty() {
        decisions.push(format!(
            "hyperthread siblings {} of worker cores left idle",
            cpulist::format(&siblings)
        ));
    }

    let used: Cpus = wset.union(&siblings).copied().collect();
    let idle: Cpus = isolated.difference(&used).copied().collect();
    if !idle.is_empty() && !wset.is_empty() {
        decisions.push(format!(
            "isolated CPUs {} left unused",
            cpulist::format(&idle)
        ));
    }
    let minus = |set: &Cpus, out: &Cpus| -> Cpus { set.difference(out).copied().collect() };
    let mut house = minus(&minus(&reach, &isolated), &used);
    if house.is_empty() {
        // Better a worker's sibling than an isolated CPU.
        house = minus(&minus(&reach, &isolated), &wset);
        if !house.is_empty() {
            warnings.push(format!(
                "housekeeping CPUs {} are hyperthread siblings of worker CPUs: the control threads share those cores",
                cpulist::format(&house)
            ));
        }
    }
    if house.is_empty() {
        house = minus(&reach, &used);
    }
    if house.is_empty() {
        house = minus(&online, &wset);
    }
    if house.is_empty() {
        warnings.push(
            "no CPU is left for housekeeping: the control threads share the worker cores"
                .to_owned(),
        );
        house = online.clone();
    }
    if let Some(aff) = &iso.affinity
        && aff != &online
    {
        let narrowed: Cpus = house.intersection(aff).copied().collect();
        if narrowed.is_empty() {
            warnings.push(format!(
                "this process's CPU affinity ({}) holds no housekeeping CPU: housekeeping threads use {} instead",
                cpulist::format(aff),
                cpulist::format(&house)
            ));
        } else if narrowed != house {
            decisions.push(format!(
                "housekeeping narrowed to this process's affinity {} (CPUAffinity=, taskset)",
                cpulist::format(aff)
            ));
            house = narrowed;
        }
    }

    // Isolation of the worker CPUs: one warning naming what the kernel command line lacks.
    let on_isolated: Cpus = wset.intersection(&isolated).copied().collect();
    let plain: Cpus = minus(&wset, &isolated);
    if !wset.is_empty() {
        if on_isolated.is_empty() {
            let missing = iso.mechanisms(&wset).missing(&wset, &house);
            warnings.push(format!(
                "no worker CPU is isolated: workers on {} share their cores with other tasks, the scheduler tick, RCU callbacks and interrupts; to isolate them add `{}` to the kernel command line ({GRUB})",
                cpulist::format(&wset),
                missing.join(" ")
            ));
        } else {
            let m = iso.mechanisms(&on_isolated);
            let missing = m.missing(&on_isolated, &house);
            if !missing.is_empty() {
                warnings.push(format!(
                    "worker CPUs {} are isolated by {} only; also add `{}` to the kernel command line ({GRUB})",
                    cpulist::format(&on_isolated),
                    describe(&m),
                    missing.join(" ")
                ));
            }
        }
        if !plain.is_empty() && !on_isolated.is_empty() {
            warnings.push(format!(
                "worker CPUs {} are not isolated while {} are: list them in the isolation parameters too, or choose isolated CPUs",
                cpulist::format(&plain),
                cpulist::format(&on_isolated)
            ));
        }
        if wset.contains(&0) && online.len() > 1 {
            warnings.push(
                "a worker polls on CPU 0, which takes most of the kernel's housekeeping".to_owned(),
            );
        }
    }

    // Queues: queue q of every port goes to worker q mod n, as even as the counts allow.
    let n = cpus.len().max(1);
    let mut workers: Vec<WorkerSlot> = cpus
        .iter()
        .enumerate()
        .map(|(w, &cpu)| {
            let core = machine.core_of(cpu);
            WorkerSlot {
                worker: w,
                core: cpu,
                numa: core.and_then(|c| c.numa),
                siblings: core
                    .map(|c| c.pus.iter().copied().filter(|p| *p != cpu).collect())
                    .unwrap_or_default(),
                isolation: describe(&iso.mechanisms(&[cpu].into_iter().collect())),
                cgroup: iso.partition_of(cpu).map(|p| p.dir.clone()),
                queues: Vec::new(),
            }
        })
        .collect();
    for p in &req.ports {
        for q in 0..p.queues {
            if let Some(w) = workers.get_mut(q as usize % n) {
                w.queues.push(QueueRef {
                    port: p.locality.port.clone(),
                    queue: q,
                });
            }
        }
        if !(p.queues as usize).is_multiple_of(n) {
            warnings.push(format!(
                "{} has {} queues for {n} workers: some workers poll one more than others (ethtool -L {} combined {n} evens them out)",
                p.locality.port, p.queues, p.locality.port
            ));
        }
        if let Some(node) = p.locality.numa {
            let remote: Vec<String> = workers
                .iter()
                .filter(|w| w.numa.is_some_and(|m| m != node))
                .map(|w| w.core.to_string())
                .collect();
            if remote.is_empty() {
                continue;
            }
            warnings.push(format!(
                "{}'s NIC is on NUMA node {node}; workers on CPUs {} are not: their frames cross the interconnect",
                p.locality.port,
                remote.join(",")
            ));
        }
    }

    Ok(Plan {
        workers,
        housekeeping_cores: house.into_iter().collect(),
        isolated: isolated.into_iter().collect(),
        warnings,
        decisions,
        ports: req.ports.iter().map(|p| p.locality.clone()).collect(),
        topology: Summary::of(machine),
    })
}

/// `isolcpus domain, managed_irq, nohz_full, rcu_nocbs` or `none`.
fn describe(m: &Mechanisms) -> String {
    let names: Vec<&str> = [
        (m.partition, "cpuset partition"),
        (m.domain && !m.partition, "isolcpus domain"),
        (m.managed_irq, "managed_irq"),
        (m.nohz_full, "nohz_full"),
        (m.rcu_nocbs, "rcu_nocbs"),
        (m.irqaffinity, "irqaffinity"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
