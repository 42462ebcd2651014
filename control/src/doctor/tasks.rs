//! Tasks and threads as `/proc/PID[/task/TID]/status` describes them: who they are, whether
//! they are kernel threads, which CPUs they may run on. Read by the doctor's CPU checks and by
//! the daemon's own thread check ([`crate::topology::threads`]).

use super::Root;
use crate::cpulist::{self, Cpus};

/// A process or thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Its process.
    pub pid: u32,
    /// The thread (the pid for a single-threaded process).
    pub tid: u32,
    /// `Name:` (the comm, at most 15 bytes).
    pub name: String,
    /// Whether it is a kernel thread (kthreadd or one of its children).
    pub kthread: bool,
    /// `Cpus_allowed_list:`, its affinity.
    pub allowed: Option<Cpus>,
}

/// Reads `DIR/status`, the task `pid`/`tid`; `last` is the highest CPU number.
pub fn read_status(root: &Root, dir: &str, pid: u32, tid: u32, last: usize) -> Option<Task> {
    let s = root.read(&format!("{dir}/status"))?;
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
    };
    let ppid = field("PPid:").and_then(|v| v.parse::<u32>().ok());
    // `Kthread:` appeared in 6.x; before it, kernel threads are kthreadd (pid 2) and its children.
    let kthread = match field("Kthread:") {
        Some(k) => k == "1",
        None => pid == 2 || ppid == Some(2),
    };
    Some(Task {
        pid,
        tid,
        name: field("Name:").unwrap_or_default(),
        kthread,
        allowed: field("Cpus_allowed_list:").and_then(|l| cpulist::parse(&l, Some(last)).ok()),
    })
}

/// The threads of `proc/PROC` (`self` or a pid), or the process alone when `task/` cannot be
/// read.
pub fn threads(root: &Root, proc: &str, pid: u32, last: usize) -> Vec<Task> {
    let dir = format!("proc/{proc}");
    let tids: Vec<u32> = root
        .list(&format!("{dir}/task"))
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect();
    if tids.is_empty() {
        return read_status(root, &dir, pid, pid, last)
            .into_iter()
            .collect();
    }
    tids.into_iter()
        .filter_map(|tid| read_status(root, &format!("{dir}/task/{tid}"), pid, tid, last))
        .collect()
}

/// Every task (threads included where `task/` is readable).
pub fn tasks(root: &Root, last: usize) -> Vec<Task> {
    root.list("proc")
        .iter()
        .filter_map(|p| p.parse::<u32>().ok())
        .flat_map(|pid| threads(root, &pid.to_string(), pid, last))
        .collect()
}
