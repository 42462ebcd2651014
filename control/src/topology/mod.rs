//! Where workers and everything else run: the machine's topology through hwloc, CPU isolation
//! from the kernel's own files, a placement [`Plan`] an operator can read, and the proof that
//! the daemon's other threads stay off the worker cores.
//!
//! # Design
//!
//! Three inputs, one pure decision. [`machine::Machine`] is hwloc's view (`hwlocality`:
//! packages, NUMA nodes, physical cores and their hyperthreads, caches, the PCI device and NUMA
//! node of each network interface), copied into plain data, from the running host or from hwloc
//! XML (`lstopo --of xml`) or a synthetic description, so fixtures are real machines' dumps.
//! [`isolation::Isolation`] reads `isolcpus=`, `nohz_full=`, `rcu_nocbs=`, `irqaffinity=`,
//! `/sys/devices/system/cpu/isolated`, the cpuset cgroup and the process's affinity under a
//! [`Root`], like `isopath doctor`. [`place::place`] decides: with `cores = "auto"`, workers go
//! on isolated CPUs, the NUMA node of the ports' NICs first, one per physical core (a
//! hyperthread sibling of a worker stays idle unless `allow_siblings`), at most as many as the
//! port with the fewest queues has queues (every worker polls a queue of every port), queue `q`
//! to worker `q mod n`; housekeeping gets the CPUs that are neither isolated nor a worker's.
//! With nothing isolated it avoids CPU 0's core and says once which kernel parameters would
//! isolate the worker CPUs. An explicit list is kept as written and checked the same way.
//!
//! The daemon makes the plan before it touches an interface, logs it, serves it in its status,
//! and gives every thread that is not a worker the housekeeping CPUs as its affinity
//! ([`Housekeeping::pin_current`]) when the thread starts. After start-up it reads
//! `/proc/self/task/*/status` ([`threads::check`]) and reports every thread allowed on a worker
//! CPU.
//!
//! # Limitations
//!
//! `isopath worker plan` reads the cgroup and affinity of its own process, not of the service
//! (run it under the service's `CPUAffinity=` or in its cgroup to see the same). A cgroup-v1
//! "shield" made of `cpuset.sched_load_balance = 0` cpusets is not recognised as isolation;
//! v2 partitions are. A v2 isolated partition below the daemon's cgroup is used for workers
//! only as far as its threads can join it: a worker whose plan names a cgroup writes its thread
//! id into that cgroup's `cgroup.threads` before it pins itself (threaded cgroups, Linux 4.14+).

pub mod isolation;
pub mod machine;
pub mod place;
pub mod threads;

use std::{fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize, Serializer};

pub use self::threads::{Housekeeping, ThreadCheck};
use self::{
    isolation::Isolation,
    machine::{Cache, Machine, NumaNode},
    place::{CoreChoice, PortRequest, Request},
};
use crate::{
    config::Config,
    cpulist::{self, Cpus},
    doctor::{Root, port::driver},
};

/// Reading the topology failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// hwloc could not load it.
    #[error("topology: {0}")]
    Load(String),
    /// A fixture root without `topology.xml` or `topology.synthetic`.
    #[error("{0}: no topology.xml (lstopo --of xml) or topology.synthetic under the root")]
    NoFixture(String),
}

/// The placement cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A listed CPU does not exist or is offline.
    #[error("CPU {cpu} is not online (online: {online})")]
    NoSuchCpu {
        /// The CPU.
        cpu: usize,
        /// The online CPUs.
        online: String,
    },
    /// The topology could not be read.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The configuration could not be read.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// One queue of one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRef {
    /// The port.
    pub port: String,
    /// The queue id.
    pub queue: u32,
}

/// One worker's place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSlot {
    /// Worker number.
    pub worker: usize,
    /// The CPU it is pinned to (the kernel's CPU number).
    pub core: usize,
    /// Its NUMA node.
    pub numa: Option<usize>,
    /// The queues it polls.
    pub queues: Vec<QueueRef>,
    /// The other hardware threads of its physical core.
    pub siblings: Vec<usize>,
    /// How its CPU is isolated (`isolcpus domain, managed_irq, nohz_full`, or `none`).
    pub isolation: String,
    /// The isolated cgroup partition the worker joins, if its CPU is in one below the daemon's
    /// cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// Where a port's NIC is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortLocality {
    /// The port.
    pub port: String,
    /// The NUMA node its device is attached to.
    pub numa: Option<usize>,
    /// Its PCI address.
    pub pci: Option<String>,
    /// What was found, in words.
    pub note: String,
}

/// The topology, summarised for the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Where it was read.
    pub source: String,
    /// Packages (sockets).
    pub packages: usize,
    /// NUMA nodes and their CPUs.
    pub numa_nodes: Vec<NumaNode>,
    /// Physical cores.
    pub cores: usize,
    /// Hardware threads.
    pub cpus: usize,
    /// Hardware threads per core.
    pub threads_per_core: usize,
    /// Caches.
    pub caches: Vec<Cache>,
}

impl Summary {
    fn of(m: &Machine) -> Self {
        Self {
            source: m.source.clone(),
            packages: m.packages,
            numa_nodes: m.numa.clone(),
            cores: m.cores.len(),
            cpus: m.cpus().len(),
            threads_per_core: m.threads_per_core(),
            caches: m.caches.clone(),
        }
    }
}

/// The placement decision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// One entry per worker.
    pub workers: Vec<WorkerSlot>,
    /// Where every other thread runs.
    pub housekeeping_cores: Vec<usize>,
    /// CPUs the kernel isolates (any mechanism).
    pub isolated: Vec<usize>,
    /// What is wrong or could be better, each with its fix.
    pub warnings: Vec<String>,
    /// What was decided, in order.
    pub decisions: Vec<String>,
    /// Where each port's NIC is.
    pub ports: Vec<PortLocality>,
    /// The machine.
    pub topology: Summary,
}

impl Plan {
    /// The worker CPUs.
    pub fn worker_cpus(&self) -> Cpus {
        self.workers.iter().map(|w| w.core).collect()
    }

    /// The housekeeping CPUs.
    pub fn housekeeping(&self) -> Cpus {
        self.housekeeping_cores.iter().copied().collect()
    }

    /// The plan as the operator reads it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let t = &self.topology;
        let _ = writeln!(
            out,
            "topology: {} package(s), {} NUMA node(s), {} cores, {} CPUs ({} per core) [{}]",
            t.packages,
            t.numa_nodes.len(),
            t.cores,
            t.cpus,
            t.threads_per_core,
            t.source
        );
        for n in &t.numa_nodes {
            let _ = writeln!(out, "  node {}: CPUs {}", n.node, n.cpus);
        }
        for c in &t.caches {
            let _ = writeln!(
                out,
                "  L{}: {} x {} KiB, shared by {} CPU(s)",
                c.level, c.count, c.kib, c.shared_by
            );
        }
        for p in &self.ports {
            let _ = writeln!(out, "port {}: {}", p.port, p.note);
        }
        let _ = writeln!(
            out,
            "isolated CPUs: {}",
            list_or_none(&self.isolated.iter().copied().collect())
        );
        let queues: Vec<String> = self
            .workers
            .iter()
            .map(|w| {
                let q: Vec<String> = w
                    .queues
                    .iter()
                    .map(|q| format!("{}:{}", q.port, q.queue))
                    .collect();
                q.join(" ")
            })
            .collect();
        let wq = queues.iter().map(String::len).max().unwrap_or(0).max(6);
        let _ = writeln!(
            out,
            "{:<7}{:<5}{:<5}{:<wq$}  ISOLATION",
            "WORKER", "CPU", "NUMA", "QUEUES"
        );
        for (w, q) in self.workers.iter().zip(&queues) {
            let _ = writeln!(
                out,
                "{:<7}{:<5}{:<5}{q:<wq$}  {}{}",
                w.worker,
                w.core,
                w.numa.map_or("-".to_owned(), |n| n.to_string()),
                w.isolation,
                w.cgroup
                    .as_deref()
                    .map_or(String::new(), |c| format!(" (joins {c})"))
            );
        }
        let _ = writeln!(
            out,
            "housekeeping CPUs: {}",
            cpulist::format(&self.housekeeping())
        );
        for d in &self.decisions {
            let _ = writeln!(out, "why: {d}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}

fn list_or_none(c: &Cpus) -> String {
    if c.is_empty() {
        "none".to_owned()
    } else {
        cpulist::format(c)
    }
}

/// Where `port`'s NIC is: hwloc's PCI locality first, then sysfs (`device/numa_node`), and for
/// a virtual device (veth, bridge, tun) that it has none.
pub fn locate(machine: &Machine, root: &Root, port: &str) -> PortLocality {
    if let Some(nic) = machine.nics.get(port) {
        let model = nic
            .model
            .as_deref()
            .map_or(String::new(), |m| format!(" ({m})"));
        return PortLocality {
            port: port.to_owned(),
            numa: nic.numa,
            pci: Some(nic.pci.clone()),
            note: match nic.numa {
                Some(n) => format!("PCI {}{model} on NUMA node {n}", nic.pci),
                None => format!("PCI {}{model}, local to no single NUMA node", nic.pci),
            },
        };
    }
    let dir = format!("sys/class/net/{port}");
    if !root.exists(&dir) {
        return PortLocality {
            port: port.to_owned(),
            numa: None,
            pci: None,
            note: "not found (another network namespace?): locality unknown".to_owned(),
        };
    }
    let drv = driver(root, port);
    if drv.virtual_dev {
        return PortLocality {
            port: port.to_owned(),
            numa: None,
            pci: None,
            note: format!(
                "{}: a virtual device, no PCI locality (no NUMA preference)",
                drv.name
            ),
        };
    }
    // The kernel writes -1 when the platform does not say.
    let numa = root
        .read_trim(&format!("{dir}/device/numa_node"))
        .and_then(|s| s.parse::<usize>().ok());
    PortLocality {
        port: port.to_owned(),
        numa,
        pci: drv.bus.clone(),
        note: format!(
            "{} {}: not in hwloc's topology; sysfs numa_node {}",
            drv.name,
            drv.bus.as_deref().unwrap_or("?"),
            numa.map_or("unknown".to_owned(), |n| n.to_string())
        ),
    }
}

/// The machine under `root`: hwloc's discovery of the running host at `/`; elsewhere the
/// fixture's `topology.xml` or `topology.synthetic`.
///
/// # Errors
/// hwloc failed, or a fixture root has no topology file.
pub fn machine_at(root: &Root) -> Result<Machine, TopologyError> {
    if root.is_live() {
        return Machine::live();
    }
    let xml = root.base().join("topology.xml");
    if xml.is_file() {
        return Machine::from_xml_file(&xml);
    }
    match root.read_trim("topology.synthetic") {
        Some(s) => Machine::from_synthetic(&s),
        None => Err(TopologyError::NoFixture(root.base().display().to_string())),
    }
}

/// The running host, or, when hwloc cannot read it, `cpus` single-thread cores (with why, for
/// the plan's source line).
pub fn live_or_flat(cpus: usize) -> Machine {
    Machine::live().unwrap_or_else(|e| {
        let mut m = Machine::flat(cpus);
        m.source = format!("{e}; assuming {cpus} single-thread cores");
        m
    })
}

/// `isopath worker plan`: the placement for `config` (its ports and `[workers]`) on the host
/// under `root`, made without a daemon. A port's queue count is the config's `queues`, else
/// the interface's RX queues in sysfs, else 1.
///
/// # Errors
/// The topology cannot be read, or a listed CPU is not online.
pub fn plan_at(root: &Root, config: &Config) -> Result<Plan, PlanError> {
    plan_with(&machine_at(root)?, root, config)
}

/// [`plan_at`] on a given machine.
///
/// # Errors
/// A listed CPU is not online.
pub fn plan_with(machine: &Machine, root: &Root, config: &Config) -> Result<Plan, PlanError> {
    let iso = Isolation::read(root);
    let ports = config
        .ports
        .iter()
        .map(|p| {
            let rx = root
                .list(&format!("sys/class/net/{}/queues", p.name))
                .iter()
                .filter(|q| q.starts_with("rx-"))
                .count() as u32;
            let mut locality = locate(machine, root, &p.name);
            if p.queues.is_none() && rx == 0 {
                locality.note.push_str("; 1 queue assumed");
            }
            PortRequest {
                locality,
                queues: p.queues.unwrap_or(rx.max(1)),
            }
        })
        .collect();
    place::place(machine, &iso, &request(config, ports))
}

/// The placement request of `config`'s `[workers]` for `ports`.
pub fn request(config: &Config, ports: Vec<PortRequest>) -> Request {
    Request {
        ports,
        cores: match &config.workers.cores {
            crate::config::Cores::Auto => CoreChoice::Auto,
            crate::config::Cores::List(l) => CoreChoice::List(l.clone()),
        },
        allow_siblings: config.workers.allow_siblings.unwrap_or(false),
    }
}

/// `isopath worker plan`: prints the plan for `config` (default: the root's
/// `etc/isopath/isopath.toml`, else no ports) on the host under `root`.
///
/// # Errors
/// The configuration or topology cannot be read, or the plan cannot be made.
pub fn run_cli(root: &Path, config: Option<&Path>, json: bool) -> Result<Plan, PlanError> {
    let root = Root::new(root);
    let default = root.base().join("etc/isopath/isopath.toml");
    let path = config
        .map(Path::to_path_buf)
        .or_else(|| default.is_file().then_some(default));
    let config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let plan = plan_at(&root, &config)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&plan).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    } else {
        print!("{}", plan.table());
    }
    Ok(plan)
}

fn ser_cpus<S: Serializer>(c: &Cpus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&cpulist::format(c))
}

fn ser_opt_cpus<S: Serializer>(c: &Option<Cpus>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_str(&cpulist::format(c)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
