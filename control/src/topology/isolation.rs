//! Which CPUs the kernel keeps quiet, and which the daemon may use: read from the same files
//! under a [`Root`] that `isopath doctor` reads (the running host at `/`, a fixture directory in
//! tests).
//!
//! Sources, each optional: `/sys/devices/system/cpu/isolated` (what `isolcpus=` with the
//! `domain` flag took out of the scheduler's domains), the kernel command line (`isolcpus=` and
//! its flags, `nohz_full=`, `rcu_nocbs=`, `irqaffinity=`; Documentation/admin-guide/
//! kernel-parameters.txt), `/sys/devices/system/cpu/nohz_full`, the cpuset cgroup of the
//! reading process (v1: `cpuset.effective_cpus`; v2: `cpuset.cpus.effective` and every
//! `cpuset.cpus.partition = isolated` below the mount, Documentation/admin-guide/cgroup-v2.rst)
//! and the process's own affinity (`Cpus_allowed_list` of `/proc/self/status`, which is
//! `sched_getaffinity`).

use serde::Serialize;

use crate::{
    cpulist::{self, Cpus},
    doctor::{Root, cpu::Isolcpus, kernel::parse_cmdline, online_cpus},
};

/// The cgroup hierarchy holding the cpuset controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// cgroup v1, `/sys/fs/cgroup/cpuset`.
    V1,
    /// cgroup v2, the unified hierarchy.
    V2,
}

/// An isolated cpuset partition (cgroup v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// The cgroup, from the hierarchy's root (`/isopath.slice/workers`).
    pub cgroup: String,
    /// Its directory (`/sys/fs/cgroup/isopath.slice/workers`).
    pub dir: String,
    /// Its CPUs.
    #[serde(serialize_with = "super::ser_cpus")]
    pub cpus: Cpus,
}

/// The process's cpuset cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cgroup {
    /// v1 or v2; `None` when no cpuset controller is mounted or the process's cgroup is unknown.
    pub version: Option<CgroupVersion>,
    /// The process's cgroup, from the hierarchy's root.
    pub path: Option<String>,
    /// The CPUs that cgroup lets its tasks use.
    #[serde(serialize_with = "super::ser_opt_cpus")]
    pub effective: Option<Cpus>,
    /// Isolated partitions anywhere in the hierarchy (v2 only).
    pub isolated: Vec<Partition>,
}

/// Everything read about CPU isolation on one host.
#[derive(Debug, Clone, Serialize)]
pub struct Isolation {
    /// Online CPUs.
    #[serde(serialize_with = "super::ser_cpus")]
    pub online: Cpus,
    /// `/sys/devices/system/cpu/isolated`.
    #[serde(serialize_with = "super::ser_opt_cpus")]
    pub sysfs_isolated: Option<Cpus>,
    /// `isolcpus=` as written.
    pub isolcpus: Option<String>,
    /// Its flags (none: `domain`).
    pub isolcpus_flags: Vec<String>,
    /// Its CPUs.
    #[serde(serialize_with = "super::ser_opt_cpus")]
    pub isolcpus_cpus: Option<Cpus>,
    /// `nohz_full=` (or `/sys/devices/system/cpu/nohz_full`).
    #[serde(serialize_with = "super::ser_opt_cpus")]
    pub nohz_full: Option<Cpus>,
    /// `rcu_nocbs=`.
    #[serde(serialize_with = "super::ser_opt_cpus")]
    pub rcu_nocbs: Option<Cpus>,
    /// `irqaffinity=`.
    #[serde(serialize_with = "super::ser_opt_cpus")]
    pub irqaffinity: Option<Cpus>,
    /// The cpuset cgroup.
    pub cgroup: Cgroup,
    /// The reading process's affinity (`sched_getaffinity`).
    #[serde(serialize_with = "super::ser_opt_cpus")]
    pub affinity: Option<Cpus>,
    /// What could not be parsed, for the plan's warnings.
    #[serde(skip)]
    pub problems: Vec<String>,
}

impl Isolation {
    /// Nothing isolated, no restriction: `online` CPUs.
    pub fn none(online: Cpus) -> Self {
        Self {
            online,
            sysfs_isolated: None,
            isolcpus: None,
            isolcpus_flags: Vec::new(),
            isolcpus_cpus: None,
            nohz_full: None,
            rcu_nocbs: None,
            irqaffinity: None,
            cgroup: Cgroup::default(),
            affinity: None,
            problems: Vec::new(),
        }
    }

    /// Reads the host under `root`.
    pub fn read(root: &Root) -> Self {
        let mut me = Self::none(online_cpus(root));
        let last = me.online.last().copied().unwrap_or(0);
        let problems = std::cell::RefCell::new(Vec::new());
        let list = |what: &str, v: &str| match cpulist::parse(v, Some(last)) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.borrow_mut().push(format!("{what}: {e}"));
                None
            }
        };
        me.sysfs_isolated = root
            .read("sys/devices/system/cpu/isolated")
            .and_then(|s| list("/sys/devices/system/cpu/isolated", &s));
        let cmdline = parse_cmdline(&root.read_trim("proc/cmdline").unwrap_or_default());
        if let Some(v) = cmdline.get("isolcpus") {
            match Isolcpus::parse(v, last) {
                Ok(i) => {
                    me.isolcpus_flags = i.flags;
                    me.isolcpus_cpus = Some(i.cpus);
                }
                Err(e) => problems.borrow_mut().push(format!("isolcpus={v}: {e}")),
            }
            me.isolcpus = Some(v.clone());
        }
        me.nohz_full = match cmdline.get("nohz_full") {
            Some(v) => list("nohz_full", v),
            None => root
                .read("sys/devices/system/cpu/nohz_full")
                .and_then(|s| list("/sys/devices/system/cpu/nohz_full", &s))
                .filter(|c| !c.is_empty()),
        };
        me.rcu_nocbs = cmdline.get("rcu_nocbs").and_then(|v| list("rcu_nocbs", v));
        me.irqaffinity = cmdline
            .get("irqaffinity")
            .and_then(|v| list("irqaffinity", v));
        me.affinity = root
            .read("proc/self/status")
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                    .map(str::to_owned)
            })
            .and_then(|v| list("Cpus_allowed_list", &v));
        let mut problems = problems.into_inner();
        me.cgroup = read_cgroup(root, last, &mut problems);
        me.problems = problems;
        me
    }

    /// CPUs the scheduler does not balance tasks onto: `isolcpus=` with `domain` (or no flag),
    /// `/sys/devices/system/cpu/isolated`, isolated cgroup partitions.
    pub fn domain(&self) -> Cpus {
        let mut out = self.sysfs_isolated.clone().unwrap_or_default();
        let domain_flag =
            self.isolcpus_flags.is_empty() || self.isolcpus_flags.iter().any(|f| f == "domain");
        if domain_flag && let Some(c) = &self.isolcpus_cpus {
            out.extend(c);
        }
        for p in &self.cgroup.isolated {
            out.extend(&p.cpus);
        }
        out.intersection(&self.online).copied().collect()
    }

    /// CPUs any of the mechanisms sets apart for latency-critical work: [`Self::domain`], every
    /// `isolcpus=` CPU whatever its flags, `nohz_full=`.
    pub fn isolated(&self) -> Cpus {
        let mut out = self.domain();
        out.extend(self.isolcpus_cpus.iter().flatten());
        out.extend(self.nohz_full.iter().flatten());
        out.intersection(&self.online).copied().collect()
    }

    /// CPUs this process can be scheduled on at all: the online CPUs its cpuset cgroup allows,
    /// plus isolated partitions below its own cgroup (its threads can join them).
    pub fn reachable(&self) -> Cpus {
        let Some(eff) = &self.cgroup.effective else {
            return self.online.clone();
        };
        let mut out = eff.clone();
        if let Some(path) = &self.cgroup.path {
            for p in self
                .cgroup
                .isolated
                .iter()
                .filter(|p| below(&p.cgroup, path))
            {
                out.extend(&p.cpus);
            }
        }
        out.intersection(&self.online).copied().collect()
    }

    /// The isolated partition below the process's cgroup holding `cpu`, which a worker pinned
    /// there must join.
    pub fn partition_of(&self, cpu: usize) -> Option<&Partition> {
        let path = self.cgroup.path.as_deref()?;
        self.cgroup
            .isolated
            .iter()
            .find(|p| p.cpus.contains(&cpu) && below(&p.cgroup, path) && p.cgroup != path)
    }

    /// How `cpus` are isolated: which of the kernel's mechanisms cover all of them.
    pub fn mechanisms(&self, cpus: &Cpus) -> Mechanisms {
        let covers = |set: Option<&Cpus>| set.is_some_and(|s| cpus.is_subset(s));
        let flag = |f: &str| self.isolcpus_flags.iter().any(|x| x == f);
        let partition = !cpus.is_empty()
            && cpus
                .iter()
                .all(|c| self.cgroup.isolated.iter().any(|p| p.cpus.contains(c)));
        let domain = partition || cpus.is_subset(&self.domain()) && !cpus.is_empty();
        let isolcpus = covers(self.isolcpus_cpus.as_ref());
        // isolcpus=nohz sets up the same tick isolation as nohz_full= (housekeeping_setup()
        // calls tick_nohz_full_setup() for it, kernel/sched/isolation.c).
        let nohz = covers(self.nohz_full.as_ref()) || isolcpus && flag("nohz");
        Mechanisms {
            partition,
            domain,
            managed_irq: isolcpus && flag("managed_irq"),
            nohz_full: nohz,
            // nohz_full CPUs have their RCU callbacks offloaded too (rcu_init_nohz).
            rcu_nocbs: nohz || covers(self.rcu_nocbs.as_ref()),
            irqaffinity: self
                .irqaffinity
                .as_ref()
                .is_some_and(|a| a.is_disjoint(cpus)),
        }
    }
}

/// Which isolation mechanisms cover a set of CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mechanisms {
    /// In an isolated cpuset partition (cgroup v2).
    pub partition: bool,
    /// Out of the scheduler's load balancing (`isolcpus=domain`, an isolated partition).
    pub domain: bool,
    /// Managed interrupts kept off (`isolcpus=managed_irq`).
    pub managed_irq: bool,
    /// No scheduler tick while one task runs (`nohz_full=`).
    pub nohz_full: bool,
    /// RCU callbacks offloaded (`rcu_nocbs=`, implied by `nohz_full=`).
    pub rcu_nocbs: bool,
    /// New interrupts go elsewhere (`irqaffinity=` excludes them).
    pub irqaffinity: bool,
}

impl Mechanisms {
    /// The kernel parameters still missing for `cpus` (housekeeping `house`), as they would be
    /// added to the command line.
    pub fn missing(&self, cpus: &Cpus, house: &Cpus) -> Vec<String> {
        let list = cpulist::format(cpus);
        let mut out = Vec::new();
        match (self.domain, self.managed_irq) {
            (false, _) => out.push(format!("isolcpus=domain,managed_irq,{list}")),
            (true, false) => out.push(format!("isolcpus=managed_irq,{list}")),
            (true, true) => {}
        }
        if !self.nohz_full {
            out.push(format!("nohz_full={list}"));
        }
        if !self.rcu_nocbs {
            out.push(format!("rcu_nocbs={list}"));
        }
        if !self.irqaffinity && !house.is_empty() {
            out.push(format!("irqaffinity={}", cpulist::format(house)));
        }
        out
    }
}

/// Whether cgroup `path` is `parent` or below it.
fn below(path: &str, parent: &str) -> bool {
    let parent = parent.trim_end_matches('/');
    path == parent || parent.is_empty() || path.starts_with(&format!("{parent}/"))
}

/// The process's cpuset cgroup from `/proc/self/cgroup` (`ID:cpuset:/path` on v1, `0::/path`
/// on v2), and what its hierarchy says.
fn read_cgroup(root: &Root, last: usize, problems: &mut Vec<String>) -> Cgroup {
    let own = root.read("proc/self/cgroup").unwrap_or_default();
    let mut parse = |what: &str, v: &str| match cpulist::parse(v, Some(last)) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("{what}: {e}"));
            None
        }
    };
    let v1 = own.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
        ctl.split(',')
            .any(|c| c == "cpuset")
            .then(|| path.to_owned())
    });
    if let Some(path) = v1
        && root.exists("sys/fs/cgroup/cpuset/cpuset.cpus")
    {
        let dir = format!("sys/fs/cgroup/cpuset{}", path.trim_end_matches('/'));
        let eff = root
            .read(&format!("{dir}/cpuset.effective_cpus"))
            .or_else(|| root.read(&format!("{dir}/cpuset.cpus")))
            .and_then(|s| parse(&format!("/{dir}/cpuset.effective_cpus"), &s));
        return Cgroup {
            version: Some(CgroupVersion::V1),
            path: Some(path),
            effective: eff,
            isolated: Vec::new(),
        };
    }
    // v2: the unified hierarchy at /sys/fs/cgroup, or at /sys/fs/cgroup/unified beside v1.
    let mount = ["sys/fs/cgroup", "sys/fs/cgroup/unified"]
        .into_iter()
        .find(|m| root.exists(&format!("{m}/cgroup.controllers")));
    let (Some(mount), Some(path)) = (
        mount,
        own.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_owned),
    ) else {
        return Cgroup::default();
    };
    let mut isolated = Vec::new();
    partitions(root, mount, "", 0, &mut isolated, &mut parse);
    let dir = format!("{mount}{}", path.trim_end_matches('/'));
    // A cgroup without the cpuset controller enabled has no cpuset files: the CPUs are then
    // its nearest ancestor's, ultimately the root's (all online CPUs).
    let eff = std::iter::successors(Some(dir.as_str()), |d| {
        d.rsplit_once('/')
            .map(|(p, _)| p)
            .filter(|p| p.len() >= mount.len())
    })
    .find_map(|d| root.read(&format!("{d}/cpuset.cpus.effective")))
    .and_then(|s| parse(&format!("{dir}/cpuset.cpus.effective"), &s));
    Cgroup {
        version: Some(CgroupVersion::V2),
        path: Some(path),
        effective: eff,
        isolated,
    }
}

/// How deep below the v2 mount isolated partitions are looked for (systemd's slices nest a few
/// levels; the whole tree of a busy host can hold thousands of cgroups).
const PARTITION_DEPTH: usize = 4;

fn partitions(
    root: &Root,
    mount: &str,
    rel: &str,
    depth: usize,
    out: &mut Vec<Partition>,
    parse: &mut dyn FnMut(&str, &str) -> Option<Cpus>,
) {
    let dir = format!("{mount}{rel}");
    // "isolated" only: "isolated invalid (reason)" is a partition the kernel refused.
    if root
        .read_trim(&format!("{dir}/cpuset.cpus.partition"))
        .as_deref()
        == Some("isolated")
        && let Some(cpus) = root
            .read(&format!("{dir}/cpuset.cpus.effective"))
            .and_then(|s| parse(&format!("/{dir}/cpuset.cpus.effective"), &s))
    {
        out.push(Partition {
            cgroup: rel.to_owned(),
            dir: format!("/{dir}"),
            cpus,
        });
    }
    if depth == PARTITION_DEPTH {
        return;
    }
    for name in root.list(&dir) {
        let child = format!("{rel}/{name}");
        if root.exists(&format!("{mount}{child}/cgroup.procs")) {
            partitions(root, mount, &child, depth + 1, out, parse);
        }
    }
}
