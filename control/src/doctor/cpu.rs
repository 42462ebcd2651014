//! CPU checks: is anything else going to run on the worker cores?
//!
//! A worker polls without sleeping; whatever else the kernel schedules on its core (tasks,
//! timer ticks, RCU callbacks, interrupts) is time the poll loop does not run and frames wait in
//! the RX ring. The kernel parameters that keep it away are documented in
//! Documentation/admin-guide/kernel-parameters.txt (`isolcpus`, `nohz_full`, `rcu_nocbs`,
//! `irqaffinity`).

use super::{
    Finding, Root, Target,
    kernel::Facts,
    tasks::{Task, tasks},
};
use crate::cpulist::{self, Cpus};

/// The flags `isolcpus=` accepts before its CPU list (kernel/sched/isolation.c).
const ISOLCPUS_FLAGS: [&str; 3] = ["nohz", "domain", "managed_irq"];

/// `isolcpus=` split into its flags and CPU list. No flag means `domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolcpus {
    /// The flags given (empty: the default, `domain`).
    pub flags: Vec<String>,
    /// The isolated CPUs.
    pub cpus: Cpus,
}

impl Isolcpus {
    /// Parses the value of `isolcpus=`.
    ///
    /// # Errors
    /// A malformed CPU list.
    pub fn parse(value: &str, last: usize) -> Result<Self, String> {
        let mut flags = Vec::new();
        let mut rest = value;
        while let Some((head, tail)) = rest.split_once(',') {
            if ISOLCPUS_FLAGS.contains(&head) {
                flags.push(head.to_owned());
                rest = tail;
            } else {
                break;
            }
        }
        Ok(Self {
            flags,
            cpus: cpulist::parse(rest, Some(last))?,
        })
    }

    /// Whether the scheduler keeps tasks off these CPUs.
    pub fn domain(&self) -> bool {
        self.flags.is_empty() || self.flags.iter().any(|f| f == "domain")
    }
}

/// The worker cores and the rest (the housekeeping cores).
struct Cores<'a> {
    workers: &'a Cpus,
    list: String,
    housekeeping: Cpus,
}

/// The CPU checks.
pub fn check(root: &Root, f: &Facts, target: &Target) -> Vec<Finding> {
    let workers = &target.worker_cores;
    let cores = Cores {
        workers,
        list: cpulist::format(workers),
        housekeeping: f.online.difference(workers).copied().collect(),
    };
    let subject = format!("cores {}", cores.list);
    let mut out = Vec::new();

    let offline: Cpus = workers.difference(&f.online).copied().collect();
    out.push(if !offline.is_empty() {
        Finding::fail("cpu.worker_cores", &subject)
            .detail(format!(
                "worker cores {} are not online (online: {})",
                cpulist::format(&offline),
                cpulist::format(&f.online)
            ))
            .why("isopathd refuses to start with a worker on a core that does not exist")
            .fix(format!(
                "set [workers] cores to online CPUs (here {}) in the config",
                cpulist::format(&f.online)
            ))
    } else if workers.contains(&0) {
        Finding::warn("cpu.worker_cores", &subject)
            .detail("a worker runs on core 0")
            .why("core 0 takes most housekeeping: timers, unbound kernel work, IRQs that cannot move")
            .fix("move the worker off core 0 ([workers] cores in the config)")
    } else {
        Finding::ok("cpu.worker_cores", &subject)
            .detail(format!(
                "worker cores {} online, housekeeping {}",
                cores.list,
                cpulist::format(&cores.housekeeping)
            ))
            .why("each worker polls its own core")
    });

    out.push(isolcpus(f, &cores, &subject));
    out.push(nohz_full(f, &cores, &subject));
    out.push(rcu_nocbs(f, &cores, &subject));
    out.push(irqaffinity(root, f, &cores, &subject));
    out.push(governor(root, &cores, &subject));
    out.push(irqbalance(root, &cores));
    out.push(pinned_tasks(root, f, &cores, &subject));
    out.push(kthreads(root, f, &cores, &subject));
    out
}

fn grub(param: &str) -> String {
    format!("add {param} to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub, reboot")
}

fn isolcpus(f: &Facts, c: &Cores<'_>, subject: &str) -> Finding {
    let why = "without it the scheduler runs other tasks on worker cores and each preemption stalls the poll loop";
    let fix = grub(&format!("isolcpus=domain,managed_irq,{}", c.list));
    let Some(v) = f.cmdline.get("isolcpus") else {
        return Finding::warn("cpu.isolcpus", subject)
            .detail("isolcpus= is not on the kernel command line")
            .why(why)
            .fix(fix);
    };
    let iso = match Isolcpus::parse(v, f.last_cpu()) {
        Ok(i) => i,
        Err(e) => {
            return Finding::warn("cpu.isolcpus", subject)
                .detail(format!("isolcpus={v}: {e}"))
                .why(why)
                .fix(fix);
        }
    };
    let uncovered: Cpus = c.workers.difference(&iso.cpus).copied().collect();
    if !iso.domain() {
        Finding::warn("cpu.isolcpus", subject)
            .detail(format!(
                "isolcpus={v} has no `domain` flag: the scheduler still balances tasks onto {}",
                cpulist::format(&iso.cpus)
            ))
            .why(why)
            .fix(fix)
    } else if !uncovered.is_empty() {
        Finding::warn("cpu.isolcpus", subject)
            .detail(format!(
                "isolcpus={v} leaves worker cores {} to the scheduler",
                cpulist::format(&uncovered)
            ))
            .why(why)
            .fix(fix)
    } else {
        Finding::ok("cpu.isolcpus", subject)
            .detail(format!("isolcpus={v} covers the worker cores"))
            .why(why)
    }
}

fn nohz_full(f: &Facts, c: &Cores<'_>, subject: &str) -> Finding {
    let why = "the scheduler tick interrupts a busy worker core up to 1000 times a second unless nohz_full covers it";
    let fix = grub(&format!("nohz_full={}", c.list));
    if f.kconfig("CONFIG_NO_HZ_FULL") == Some(false) {
        return Finding::warn("cpu.nohz_full", subject)
            .detail("kernel built without CONFIG_NO_HZ_FULL: nohz_full= has no effect")
            .why(why)
            .fix(format!(
                "boot a kernel with CONFIG_NO_HZ_FULL=y (Debian's has it) with nohz_full={}",
                c.list
            ));
    }
    let value = f
        .cmdline
        .get("nohz_full")
        .map(|v| (format!("nohz_full={v}"), v.clone()));
    cover_check("cpu.nohz_full", "nohz_full", value, f, c, subject, why, fix)
}

fn rcu_nocbs(f: &Facts, c: &Cores<'_>, subject: &str) -> Finding {
    let why = "RCU callbacks run on the CPU that queued them unless offloaded to rcuo threads on housekeeping cores";
    let fix = grub(&format!("rcu_nocbs={}", c.list));
    if f.kconfig("CONFIG_RCU_NOCB_CPU") == Some(false) {
        return Finding::warn("cpu.rcu_nocbs", subject)
            .detail("kernel built without CONFIG_RCU_NOCB_CPU: rcu_nocbs= has no effect")
            .why(why)
            .fix(format!(
                "boot a kernel with CONFIG_RCU_NOCB_CPU=y (Debian's has it) with rcu_nocbs={}",
                c.list
            ));
    }
    // nohz_full CPUs are offloaded too (kernel/rcu/tree_nocb.h, rcu_init_nohz).
    let value = match (f.cmdline.get("rcu_nocbs"), f.cmdline.get("nohz_full")) {
        (Some(r), Some(n)) if !r.is_empty() => Some((
            format!("rcu_nocbs={r} with nohz_full={n}"),
            format!("{r},{n}"),
        )),
        (Some(r), None) => Some((format!("rcu_nocbs={r}"), r.clone())),
        (_, Some(n)) => Some((
            format!("nohz_full={n} (which offloads RCU callbacks too)"),
            n.clone(),
        )),
        (None, None) => None,
    };
    cover_check("cpu.rcu_nocbs", "rcu_nocbs", value, f, c, subject, why, fix)
}

/// Kernel parameters holding a CPU list that should cover every worker core. `value` is what
/// to show and the CPU list, or `None` when `param` is absent.
#[allow(clippy::too_many_arguments)]
fn cover_check(
    check: &'static str,
    param: &str,
    value: Option<(String, String)>,
    f: &Facts,
    c: &Cores<'_>,
    subject: &str,
    why: &str,
    fix: String,
) -> Finding {
    let Some((shown, list)) = value else {
        return Finding::warn(check, subject)
            .detail(format!("{param}= is not on the kernel command line"))
            .why(why)
            .fix(fix);
    };
    match cpulist::parse(&list, Some(f.last_cpu())) {
        Ok(cpus) => {
            let uncovered: Cpus = c.workers.difference(&cpus).copied().collect();
            if uncovered.is_empty() {
                Finding::ok(check, subject)
                    .detail(format!("{shown} covers the worker cores"))
                    .why(why)
            } else {
                Finding::warn(check, subject)
                    .detail(format!(
                        "{shown} does not cover worker cores {}",
                        cpulist::format(&uncovered)
                    ))
                    .why(why)
                    .fix(fix)
            }
        }
        Err(e) => Finding::warn(check, subject)
            .detail(format!("{shown}: {e}"))
            .why(why)
            .fix(fix),
    }
}

/// `/proc/irq/default_smp_affinity`: a hex mask in 32-bit groups, most significant first.
fn parse_hex_mask(s: &str) -> Option<Cpus> {
    let mut cpus = Cpus::new();
    let groups: Vec<&str> = s.trim().split(',').collect();
    for (i, g) in groups.iter().rev().enumerate() {
        let word = u32::from_str_radix(g, 16).ok()?;
        for bit in 0..32 {
            if word & (1 << bit) != 0 {
                cpus.insert(i * 32 + bit);
            }
        }
    }
    Some(cpus)
}

fn irqaffinity(root: &Root, f: &Facts, c: &Cores<'_>, subject: &str) -> Finding {
    let why = "interrupts that land on a worker core preempt its poll loop; irqaffinity= sets where new IRQs go";
    let fix = grub(&format!("irqaffinity={}", cpulist::format(&c.housekeeping)));
    let default = root
        .read("proc/irq/default_smp_affinity")
        .and_then(|s| parse_hex_mask(&s))
        .map(|m| m.intersection(&f.online).copied().collect::<Cpus>());
    let on_workers = |cpus: &Cpus| cpus.intersection(c.workers).copied().collect::<Cpus>();
    match (f.cmdline.get("irqaffinity"), default) {
        (_, Some(d)) if !d.is_empty() && on_workers(&d).is_empty() => {
            Finding::ok("cpu.irqaffinity", subject)
                .detail(format!(
                    "new IRQs go to {} (default_smp_affinity), off the worker cores",
                    cpulist::format(&d)
                ))
                .why(why)
        }
        (Some(v), _) => match cpulist::parse(v, Some(f.last_cpu())) {
            Ok(cpus) if on_workers(&cpus).is_empty() => Finding::ok("cpu.irqaffinity", subject)
                .detail(format!("irqaffinity={v}, off the worker cores"))
                .why(why),
            Ok(cpus) => Finding::warn("cpu.irqaffinity", subject)
                .detail(format!(
                    "irqaffinity={v} includes worker cores {}",
                    cpulist::format(&on_workers(&cpus))
                ))
                .why(why)
                .fix(fix),
            Err(e) => Finding::warn("cpu.irqaffinity", subject)
                .detail(format!("irqaffinity={v}: {e}"))
                .why(why)
                .fix(fix),
        },
        (None, d) => Finding::warn("cpu.irqaffinity", subject)
            .detail(match d {
                Some(d) => format!(
                    "irqaffinity= is not on the kernel command line; new IRQs may go to {}",
                    cpulist::format(&d)
                ),
                None => "irqaffinity= is not on the kernel command line".to_owned(),
            })
            .why(why)
            .fix(fix),
    }
}

fn governor(root: &Root, c: &Cores<'_>, subject: &str) -> Finding {
    let why = "a power-saving governor lowers the clock of a polling core and adds latency on every ramp-up";
    let govs: Vec<(usize, Option<String>)> = c
        .workers
        .iter()
        .map(|&cpu| {
            (
                cpu,
                root.read_trim(&format!(
                    "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
                )),
            )
        })
        .collect();
    if govs.iter().all(|(_, g)| g.is_none()) {
        return Finding::ok("cpu.governor", subject)
            .detail("no cpufreq driver: the clock is not under the kernel's control (VM or fixed frequency)")
            .why(why);
    }
    let slow: Vec<String> = govs
        .iter()
        .filter(|(_, g)| g.as_deref() != Some("performance"))
        .map(|(cpu, g)| format!("cpu{cpu} {}", g.as_deref().unwrap_or("unknown")))
        .collect();
    if slow.is_empty() {
        Finding::ok("cpu.governor", subject)
            .detail("performance on every worker core")
            .why(why)
    } else {
        Finding::warn("cpu.governor", subject)
            .detail(format!("governor {}", slow.join(", ")))
            .why(why)
            .fix(format!(
                "cpupower -c {} frequency-set -g performance (linux-cpupower), or echo performance into each cpuN/cpufreq/scaling_governor",
                c.list
            ))
    }
}

fn irqbalance(root: &Root, c: &Cores<'_>) -> Finding {
    let why = "irqbalance rewrites IRQ affinities every 10 s and can move NIC interrupts onto worker cores";
    let running: Vec<u32> = root
        .list("proc")
        .iter()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|pid| root.read_trim(&format!("proc/{pid}/comm")).as_deref() == Some("irqbalance"))
        .collect();
    match running.first() {
        None => Finding::ok("cpu.irqbalance", "irqbalance")
            .detail("not running")
            .why(why),
        Some(pid) => Finding::warn("cpu.irqbalance", "irqbalance")
            .detail(format!("running (pid {pid})"))
            .why(why)
            .fix(format!(
                "systemctl disable --now irqbalance, or IRQBALANCE_BANNED_CPULIST={} in /etc/default/irqbalance and systemctl restart irqbalance",
                c.list
            )),
    }
}

fn pinned_tasks(root: &Root, f: &Facts, c: &Cores<'_>, subject: &str) -> Finding {
    let why = "a task pinned onto a worker core competes with the poll loop even under isolcpus, which only stops the scheduler from placing tasks there";
    let me = root.is_live().then(std::process::id);
    let pinned: Vec<Task> = tasks(root, f.last_cpu())
        .into_iter()
        .filter(|t| !t.kthread && Some(t.pid) != me)
        // isopathd's own workers belong there.
        .filter(|t| t.name != "isopathd" && !t.name.starts_with("isopath-"))
        .filter(|t| {
            t.allowed.as_ref().is_some_and(|a| {
                a != &f.online && a.is_subset(&f.online) && !a.is_disjoint(c.workers)
            })
        })
        .collect();
    if pinned.is_empty() {
        return Finding::ok("cpu.pinned_tasks", subject)
            .detail("no other task is pinned onto a worker core")
            .why(why);
    }
    let shown: Vec<String> = pinned
        .iter()
        .take(4)
        .map(|t| {
            let who = if t.tid == t.pid {
                format!("pid {}", t.pid)
            } else {
                format!("pid {} thread {}", t.pid, t.tid)
            };
            format!(
                "{who} ({}) on {}",
                t.name,
                cpulist::format(t.allowed.as_ref().expect("filtered on Some"))
            )
        })
        .collect();
    let more = pinned.len().saturating_sub(shown.len());
    let mut pids: Vec<u32> = pinned.iter().map(|t| t.pid).collect();
    pids.dedup();
    let pid_list: Vec<String> = pids.iter().map(u32::to_string).collect();
    Finding::warn("cpu.pinned_tasks", subject)
        .detail(format!(
            "{}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
        .why(why)
        .fix(format!(
            "for p in {}; do taskset -a -p -c {} $p; done (and fix whatever pins them)",
            pid_list.join(" "),
            cpulist::format(&c.housekeeping)
        ))
}

/// Kernel threads that are not per-CPU (kthreadd itself, kswapd, kcompactd, RCU's grace-period
/// threads, unbound kworkers) may run wherever their affinity says; on kernels that boot with
/// `isolcpus=` alone it still covers the isolated CPUs (kthreadd follows the `nohz_full`
/// housekeeping mask, kernel/kthread.c). Per-CPU ones (one CPU allowed) belong where they are.
fn kthreads(root: &Root, f: &Facts, c: &Cores<'_>, subject: &str) -> Finding {
    let why = "an unbound kernel thread allowed on a worker core can be scheduled there and preempt the poll loop";
    let mut found: Vec<Task> = tasks(root, f.last_cpu())
        .into_iter()
        .filter(|t| t.kthread)
        .filter(|t| {
            t.allowed
                .as_ref()
                .is_some_and(|a| a.len() > 1 && !a.is_disjoint(c.workers))
        })
        .collect();
    // By pid: kthreadd (2) first, whose mask new kernel threads inherit.
    found.sort_by_key(|t| t.pid);
    if found.is_empty() {
        return Finding::ok("cpu.kthreads", subject)
            .detail("no unbound kernel thread may run on a worker core")
            .why(why);
    }
    let shown: Vec<String> = found
        .iter()
        .take(4)
        .map(|t| {
            format!(
                "{} {} on {}",
                t.pid,
                t.name,
                cpulist::format(t.allowed.as_ref().expect("filtered on Some"))
            )
        })
        .collect();
    let more = found.len().saturating_sub(shown.len());
    let pids: Vec<String> = found.iter().map(|t| t.pid.to_string()).collect();
    let house = cpulist::format(&c.housekeeping);
    Finding::warn("cpu.kthreads", subject)
        .detail(format!(
            "{}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
        .why(why)
        .fix(format!(
            "for p in {}; do taskset -p -c {house} $p; done (kthreadd first: new kernel threads inherit its mask; per-CPU ones refuse); echo {} > /sys/devices/virtual/workqueue/cpumask for unbound kworkers; to make it stick boot with nohz_full={}",
            pids.join(" "),
            format_hex_mask(&c.housekeeping),
            c.list
        ))
}

/// A CPU set as the kernel's hex mask (`/proc/irq/*/smp_affinity`, the workqueue cpumask):
/// 32-bit groups, most significant first, comma-separated.
fn format_hex_mask(cpus: &Cpus) -> String {
    let words = cpus.last().map_or(1, |l| l / 32 + 1);
    let mut out: Vec<String> = (0..words)
        .rev()
        .map(|w| {
            let v: u32 = cpus
                .iter()
                .filter(|&&c| c / 32 == w)
                .fold(0, |m, &c| m | 1 << (c % 32));
            format!("{v:08x}")
        })
        .collect();
    // The leading group without padding, as the kernel prints it.
    if let Some(first) = out.first_mut() {
        let t = first.trim_start_matches('0');
        *first = if t.is_empty() { "0".into() } else { t.into() };
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolcpus_flags_and_lists() {
        let i = Isolcpus::parse("nohz,domain,managed_irq,2-5", 7).unwrap();
        assert_eq!(i.flags, ["nohz", "domain", "managed_irq"]);
        assert_eq!(cpulist::format(&i.cpus), "2-5");
        assert!(i.domain());
        let i = Isolcpus::parse("managed_irq,3,5", 7).unwrap();
        assert_eq!(cpulist::format(&i.cpus), "3,5");
        assert!(
            !i.domain(),
            "managed_irq alone does not isolate from the scheduler"
        );
        let i = Isolcpus::parse("1-N", 3).unwrap();
        assert!(i.flags.is_empty() && i.domain());
        assert_eq!(cpulist::format(&i.cpus), "1-3");
    }

    #[test]
    fn default_affinity_masks() {
        assert_eq!(cpulist::format(&parse_hex_mask("3\n").unwrap()), "0-1");
        assert_eq!(
            cpulist::format(&parse_hex_mask("00000000,00000003").unwrap()),
            "0-1"
        );
        assert_eq!(
            cpulist::format(&parse_hex_mask("1,00000001").unwrap()),
            "0,32"
        );
        assert_eq!(parse_hex_mask("zz"), None);
        for set in [&[0usize, 1][..], &[0, 32], &[2, 3, 4, 5], &[40]] {
            let c: Cpus = set.iter().copied().collect();
            assert_eq!(
                parse_hex_mask(&format_hex_mask(&c)),
                Some(c.clone()),
                "{set:?}"
            );
        }
        assert_eq!(format_hex_mask(&[0, 1, 6, 7].into_iter().collect()), "c3");
        assert_eq!(
            format_hex_mask(&[0, 32].into_iter().collect()),
            "1,00000001"
        );
    }
}
