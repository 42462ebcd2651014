//! Keeping the daemon's own threads off the worker cores, and checking that they are.
//!
//! Every thread that is not a worker calls [`Housekeeping::pin_current`] first thing: its
//! affinity becomes the plan's housekeeping CPUs. (A thread inherits its creator's mask, so
//! this also covers helpers a library starts later from such a thread.) [`check`] then reads
//! `/proc/self/task/*/status` and names every thread allowed on a worker CPU that is not that
//! CPU's worker, and every worker not pinned to its CPU.

use std::sync::Arc;

use hwlocality::{Topology, cpu::binding::CpuBindingFlags, cpu::cpuset::CpuSet};
use serde::{Deserialize, Serialize};

use super::{Plan, TopologyError};
use crate::{
    cpulist::{self, Cpus},
    doctor::{Root, tasks},
};

/// The name prefix of worker threads (`isopath-w3` polls on CPU 3).
pub const WORKER_THREAD: &str = "isopath-w";

/// The housekeeping CPU set and the means to bind threads to it.
#[derive(Clone)]
pub struct Housekeeping {
    cpus: Cpus,
    workers: Cpus,
    topology: Arc<Topology>,
}

impl std::fmt::Debug for Housekeeping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Housekeeping")
            .field("cpus", &cpulist::format(&self.cpus))
            .field("workers", &cpulist::format(&self.workers))
            .finish()
    }
}

/// Setting a thread's affinity failed.
#[derive(Debug, thiserror::Error)]
#[error("binding thread {thread:?} to CPUs {cpus}: {reason}")]
pub struct BindError {
    thread: String,
    cpus: String,
    reason: String,
}

impl Housekeeping {
    /// The housekeeping CPUs of `plan`, on the running host.
    ///
    /// # Errors
    /// hwloc cannot read the running host (binding needs its topology).
    pub fn new(plan: &Plan) -> Result<Self, TopologyError> {
        // Only CPUs matter for binding: leave I/O devices out.
        let topology = Topology::new().map_err(|e| TopologyError::Load(e.to_string()))?;
        Ok(Self {
            cpus: plan.housekeeping(),
            workers: plan.worker_cpus(),
            topology: Arc::new(topology),
        })
    }

    /// The housekeeping CPUs.
    pub fn cpus(&self) -> &Cpus {
        &self.cpus
    }

    /// Binds the calling thread to the housekeeping CPUs.
    ///
    /// # Errors
    /// The kernel refused the mask (a CPU outside the thread's cpuset cgroup).
    pub fn pin_current(&self) -> Result<(), BindError> {
        bind_current(&self.topology, &self.cpus)
    }

    /// Test-only hook (`ISOPATH_TEST_UNPINNED_THREAD` set in isopathd's environment): starts a
    /// thread that binds itself to every online CPU, worker CPUs included, and sleeps until
    /// `stop` is set, so the live test can see [`check`] report it.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn_unpinned(
        &self,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let topology = self.topology.clone();
        let all: Cpus = self.cpus.union(&self.workers).copied().collect();
        let (bound, wait) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("isopath-planted".into())
            .spawn(move || {
                if let Err(e) = bind_current(&topology, &all) {
                    tracing::warn!("planted thread: {e}");
                }
                let _ = bound.send(());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })?;
        // Returns once the mask is set, so a check made next sees it.
        let _ = wait.recv_timeout(std::time::Duration::from_secs(5));
        Ok(thread)
    }
}

fn bind_current(topology: &Topology, cpus: &Cpus) -> Result<(), BindError> {
    let set: CpuSet = cpus
        .iter()
        .map(|&c| hwlocality::bitmap::BitmapIndex::try_from(c))
        .filter_map(Result::ok)
        .collect();
    topology
        .bind_cpu(&set, CpuBindingFlags::THREAD)
        .map_err(|e| BindError {
            thread: std::thread::current().name().unwrap_or("?").to_owned(),
            cpus: cpulist::format(cpus),
            reason: e.to_string(),
        })
}

/// A thread allowed where it should not be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offender {
    /// Its thread id.
    pub tid: u32,
    /// Its name.
    pub name: String,
    /// Where it may run.
    pub allowed: String,
    /// What is wrong.
    pub problem: String,
}

/// What the thread check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ThreadCheck {
    /// Threads read.
    pub threads: usize,
    /// Workers pinned to their own CPU.
    pub workers_pinned: usize,
    /// Threads that could run on a worker CPU, or workers not pinned to theirs.
    pub offenders: Vec<Offender>,
}

impl ThreadCheck {
    /// One warning line per offender.
    pub fn warnings(&self) -> Vec<String> {
        self.offenders
            .iter()
            .map(|o| {
                format!(
                    "thread {} ({}) may run on CPUs {}: {}",
                    o.tid, o.name, o.allowed, o.problem
                )
            })
            .collect()
    }
}

/// Checks the threads of the process under `root` (`proc/self/task`) against `plan`: a thread
/// named `isopath-wN` must be allowed on CPU N only; every other thread on no worker CPU.
pub fn check(root: &Root, plan: &Plan) -> ThreadCheck {
    let workers = plan.worker_cpus();
    let last = workers
        .iter()
        .chain(&plan.housekeeping_cores)
        .max()
        .copied()
        .unwrap_or(0);
    let all = tasks::threads(root, "self", std::process::id(), last.max(1023));
    let mut out = ThreadCheck {
        threads: all.len(),
        ..ThreadCheck::default()
    };
    for t in all {
        let Some(allowed) = &t.allowed else {
            continue;
        };
        let worker_cpu = t
            .name
            .strip_prefix(WORKER_THREAD)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|c| workers.contains(c));
        let problem = match worker_cpu {
            Some(c) if allowed.len() == 1 && allowed.contains(&c) => {
                out.workers_pinned += 1;
                continue;
            }
            Some(c) => format!("the worker of CPU {c} is not pinned to it"),
            None if !allowed.is_disjoint(&workers) => format!(
                "it shares worker CPUs {} with the poll loop",
                cpulist::format(&allowed.intersection(&workers).copied().collect())
            ),
            None => continue,
        };
        out.offenders.push(Offender {
            tid: t.tid,
            name: t.name.clone(),
            allowed: cpulist::format(allowed),
            problem,
        });
    }
    out
}

/// Moves the calling thread into the cgroup directory `dir` (a v2 threaded cgroup: its
/// `cgroup.threads`), so that it may be pinned to the isolated partition's CPUs.
///
/// # Errors
/// The thread id cannot be read or the cgroup refuses it.
pub fn join_cgroup(dir: &std::path::Path) -> std::io::Result<()> {
    // /proc/thread-self is a link to PID/task/TID.
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .ok_or_else(|| std::io::Error::other("/proc/thread-self has no thread id"))?
        .to_owned();
    std::fs::write(dir.join("cgroup.threads"), tid)
}
