//! `isopath doctor`: is this host ready to run isopathd well?
//!
//! Reads the kernel's own files under a root directory ([`Root`]: `/` live, a fixture directory
//! in tests) and reports one [`Finding`] per check and subject: ok, warn or fail, one line on why
//! it matters, and the exact command or kernel parameter that fixes it. It never changes the
//! host.
//!
//! # Design
//!
//! Checks come in three groups, each in its own module: the kernel ([`kernel`]: version-gated
//! AF_XDP features, build options from the kernel config, BTF, JIT), CPU isolation ([`cpu`]:
//! `isolcpus`, `nohz_full`, `rcu_nocbs`, `irqaffinity` against the worker cores, frequency
//! governor, irqbalance, other tasks pinned onto worker cores, unbound kernel threads allowed
//! on them) and every configured port
//! ([`port`]: driver and zero-copy, queues, MTU against the XDP frame limit, link, IRQ
//! affinity). Every input is a file, so a fixture directory holding a copy of a real host's
//! layout reproduces its findings exactly.
//!
//! # Limitations
//!
//! Only files are read (control forbids unsafe code, so no `socket(AF_XDP)` or netlink probe):
//! whether AF_XDP and busy polling are built in comes from the kernel config (`/proc/config.gz`,
//! `/boot/config-RELEASE`), and zero-copy support from a list of drivers known to implement it;
//! the daemon logs the mode the kernel actually grants at bind. The channel maximum
//! (`ethtool -l`) is not in sysfs: only the current queue count is checked.

pub mod cpu;
pub mod kernel;
pub mod port;
mod root;
pub mod tasks;

use std::fmt::Write as _;

pub use root::Root;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    config::{Config, Cores},
    cpulist::{self, Cpus},
};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but costs performance or robustness.
    Warn,
    /// isopathd will not start, or will drop traffic.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// The result of one check on one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check, dotted (`cpu.isolcpus`).
    pub check: &'static str,
    /// What was checked: `kernel`, a port name, a core list.
    pub subject: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// Why it matters, in one line.
    pub why: String,
    /// The exact command or kernel parameter that fixes it (none when ok).
    pub fix: Option<String>,
}

impl Finding {
    fn new(check: &'static str, subject: impl Into<String>, status: Status) -> Self {
        Self {
            check,
            subject: subject.into(),
            status,
            detail: String::new(),
            why: String::new(),
            fix: None,
        }
    }

    /// An ok finding.
    pub fn ok(check: &'static str, subject: impl Into<String>) -> Self {
        Self::new(check, subject, Status::Ok)
    }

    /// A warning.
    pub fn warn(check: &'static str, subject: impl Into<String>) -> Self {
        Self::new(check, subject, Status::Warn)
    }

    /// A failure.
    pub fn fail(check: &'static str, subject: impl Into<String>) -> Self {
        Self::new(check, subject, Status::Fail)
    }

    /// Sets what was found.
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = d.into();
        self
    }

    /// Sets why it matters.
    pub fn why(mut self, w: impl Into<String>) -> Self {
        self.why = w.into();
        self
    }

    /// Sets the fix.
    pub fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = Some(f.into());
        self
    }
}

/// A port as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPort {
    /// Interface name.
    pub name: String,
    /// `queues` of the port's config: sockets on queues `0..n` only.
    pub queues: Option<u32>,
}

/// What the host is checked for: the configuration's ports and worker cores.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where the configuration came from, for the report.
    pub config: Option<String>,
    /// The ports.
    pub ports: Vec<TargetPort>,
    /// The worker cores.
    pub worker_cores: Cpus,
    /// UMEM frame size in bytes.
    pub frame_size: u32,
    /// Preferred busy-poll budget (0: off).
    pub busy_poll_budget: u32,
}

/// The frame size isopathd uses when the config names none.
const DEFAULT_FRAME_SIZE: u32 = 2048;

impl Target {
    /// The ports and cores of `config`; with `cores = "auto"` the cores the placement picks on
    /// the host under `root` (see [`crate::topology`]).
    pub fn from_config(config: &Config, path: Option<&str>, root: &Root) -> Self {
        let worker_cores = match &config.workers.cores {
            Cores::List(c) => c.iter().copied().collect(),
            Cores::Auto => auto_workers(root, config),
        };
        Self {
            config: path.map(str::to_owned),
            ports: config
                .ports
                .iter()
                .map(|p| TargetPort {
                    name: p.name.clone(),
                    queues: p.queues,
                })
                .collect(),
            worker_cores,
            frame_size: config.rings.frame_size.unwrap_or(DEFAULT_FRAME_SIZE),
            busy_poll_budget: config.rings.busy_poll_budget.unwrap_or(0),
        }
    }

    /// No configuration: host checks only, with the worker core the default placement picks.
    pub fn host_only(root: &Root) -> Self {
        Self {
            config: None,
            ports: Vec::new(),
            worker_cores: auto_workers(root, &Config::default()),
            frame_size: DEFAULT_FRAME_SIZE,
            busy_poll_budget: 0,
        }
    }
}

/// The worker CPUs `cores = "auto"` picks under `root`; on a fixture without a topology file,
/// over single-thread cores.
fn auto_workers(root: &Root, config: &Config) -> Cpus {
    let online = online_cpus(root);
    let machine = crate::topology::machine_at(root)
        .unwrap_or_else(|_| crate::topology::machine::Machine::flat(online.len()));
    crate::topology::plan_with(&machine, root, config)
        .map(|p| p.worker_cpus())
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| online.last().copied().into_iter().collect())
}

/// The online CPUs of the host under `root` (`sys/devices/system/cpu/online`).
pub fn online_cpus(root: &Root) -> Cpus {
    root.read("sys/devices/system/cpu/online")
        .and_then(|s| cpulist::parse(&s, None).ok())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| [0].into_iter().collect())
}

/// Everything doctor found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The root directory examined.
    pub root: String,
    /// The target it was examined for.
    pub target: Target,
    /// Findings, in check order.
    pub findings: Vec<Finding>,
}

/// Runs every check for `target` on the host under `root`.
pub fn diagnose(root: &Root, target: &Target) -> Report {
    let facts = kernel::Facts::read(root);
    let mut findings = kernel::check(root, &facts, target);
    findings.extend(cpu::check(root, &facts, target));
    for p in &target.ports {
        findings.extend(port::check(root, &facts, target, p));
    }
    Report {
        root: root.base().display().to_string(),
        target: target.clone(),
        findings,
    }
}

impl Report {
    /// The worst status found.
    pub fn worst(&self) -> Status {
        self.findings
            .iter()
            .map(|f| f.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    fn count(&self, s: Status) -> usize {
        self.findings.iter().filter(|f| f.status == s).count()
    }

    /// The report as one JSON document.
    pub fn to_json(&self) -> Value {
        json!({
            "root": self.root,
            "config": self.target.config,
            "ports": self.target.ports.iter().map(|p| &p.name).collect::<Vec<_>>(),
            "worker_cores": cpulist::format(&self.target.worker_cores),
            "summary": {
                "ok": self.count(Status::Ok),
                "warn": self.count(Status::Warn),
                "fail": self.count(Status::Fail),
            },
            "findings": self.findings,
        })
    }

    /// The report as a table: one line per finding, then `why:` and `fix:` lines under each
    /// finding that is not ok.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let ports: Vec<&str> = self.target.ports.iter().map(|p| p.name.as_str()).collect();
        let _ = writeln!(
            out,
            "isopath doctor: root {}, config {}, ports [{}], worker cores {}",
            self.root,
            self.target.config.as_deref().unwrap_or("(none)"),
            ports.join(", "),
            cpulist::format(&self.target.worker_cores)
        );
        let wc = self
            .findings
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(5);
        let ws = self
            .findings
            .iter()
            .map(|f| f.subject.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let _ = writeln!(
            out,
            "{:<7}{:<wc$}  {:<ws$}  FINDING",
            "STATUS", "CHECK", "SUBJECT"
        );
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{:<7}{:<wc$}  {:<ws$}  {}",
                f.status.as_str(),
                f.check,
                f.subject,
                f.detail
            );
            if f.status != Status::Ok {
                let pad = 7 + wc + 2;
                let _ = writeln!(out, "{:pad$}why: {}", "", f.why);
                if let Some(fix) = &f.fix {
                    let _ = writeln!(out, "{:pad$}fix: {fix}", "");
                }
            }
        }
        let _ = writeln!(
            out,
            "summary: {} ok, {} warn, {} fail",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail)
        );
        out
    }
}

/// `isopath doctor`: diagnoses the host under `root` for `config` (default: the root's
/// `etc/isopath/isopath.toml` if there is one, else host checks only) and prints the table, or
/// the JSON document with `json`. Returns the worst status.
///
/// # Errors
/// The configuration cannot be read or parsed.
pub fn run_cli(
    root: &std::path::Path,
    config: Option<&std::path::Path>,
    json: bool,
) -> Result<Status, crate::config::ConfigError> {
    let root = Root::new(root);
    let default = root.base().join("etc/isopath/isopath.toml");
    let path = config
        .map(std::path::Path::to_path_buf)
        .or_else(|| default.is_file().then_some(default));
    let target = match &path {
        Some(p) => Target::from_config(&Config::load(p)?, Some(&p.display().to_string()), &root),
        None => Target::host_only(&root),
    };
    let report = diagnose(&root, &target);
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(report.worst())
}

#[cfg(test)]
mod tests;
