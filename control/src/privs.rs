//! Least privilege: the capabilities isopathd needs, checked before anything is touched, and
//! lowered once start-up is over.
//!
//! # Design
//!
//! The set is [`NEEDED`], measured on Linux 6.18 by starting the daemon on the veth lab as the
//! unprivileged user `nobody` with `setpriv --ambient-caps` holding the set minus one capability
//! at a time (see `tests/tests/service.rs` and `deploy/README.md`):
//!
//! | removed | what fails |
//! |---|---|
//! | `CAP_BPF` | libbpf cannot load any program (`bpf_object__probe_loading`: EPERM) |
//! | `CAP_NET_ADMIN` | creating the XSKMAP (`BPF_MAP_CREATE` of `BPF_MAP_TYPE_XSKMAP`: EPERM); attaching the XDP link; a busy-poll budget above the default |
//! | `CAP_NET_RAW` | creating the AF_XDP socket that registers the UMEM (`socket(AF_XDP)`: EPERM) |
//! | `CAP_IPC_LOCK` | registering the UMEM: its pages are charged to `RLIMIT_MEMLOCK` (8 MiB here, and the hard limit cannot be raised) unless the caller has `CAP_IPC_LOCK` |
//!
//! Not needed: `CAP_SYS_NICE` (a thread may set its own CPU affinity without it; the daemon sets
//! no real-time priority), `CAP_SYS_RESOURCE` (BPF maps are charged to the memory cgroup, not to
//! `RLIMIT_MEMLOCK`), `CAP_PERFMON`, and `CAP_SYS_ADMIN`. Without `CAP_SYS_ADMIN` the name of a
//! program found on a port cannot be read (`BPF_PROG_GET_NEXT_ID` and `BPF_PROG_GET_FD_BY_ID`
//! require it), so a program left in netlink mode by something else is reported as foreign with
//! an unknown name; see [`foreign_name_hint`]. The daemon's own programs are attached through BPF
//! links, which the kernel removes when the process dies, so a crashed instance leaves none.
//!
//! [`acquire`] runs first: it checks that every needed capability is permitted, naming any that
//! is missing and what it is for, and raises them into the effective set (`CAP_IPC_LOCK` is not
//! asked for when `RLIMIT_MEMLOCK` is unlimited, e.g. `LimitMEMLOCK=infinity` in the unit). [`settle`] runs once
//! every port is bound and every worker polls: the effective set is emptied, the permitted set is
//! reduced to [`NEEDED`] (kept for run-time changes such as adding a port or a capture, which
//! raise what they use with [`with_effective`]), and the inheritable and ambient sets are
//! cleared, so no program the daemon might run inherits anything.
//!
//! # Limitations
//!
//! Capabilities belong to threads, not processes: [`settle`] lowers the calling thread's sets
//! only. A thread spawned during start-up (a worker, the rtnetlink watcher) keeps the effective
//! set it was created with unless it calls [`drop_all_for_thread`] itself; threads spawned after
//! [`settle`] start with nothing effective but the main thread's permitted set. The bounding set is left as the service manager set it (lowering it needs
//! `CAP_SETPCAP`, which the daemon does not hold).

use std::fmt;

use caps::{CapSet, Capability, CapsHashSet};

/// A capability the daemon needs, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The capability.
    pub cap: Capability,
    /// What it is needed for (completes "needed to ...").
    pub why: &'static str,
}

/// Everything isopathd needs, in the order they are first used at start-up.
pub const NEEDED: [Need; 4] = [
    Need {
        cap: Capability::CAP_BPF,
        why: "load the XDP program and create its maps (BPF_PROG_LOAD, BPF_MAP_CREATE, BPF_BTF_LOAD)",
    },
    Need {
        cap: Capability::CAP_NET_ADMIN,
        why: "create the XSKMAP and attach the XDP program to the ports (BPF_LINK_CREATE)",
    },
    Need {
        cap: Capability::CAP_NET_RAW,
        why: "create the AF_XDP sockets (and, at run time, the packet sockets that hold a capture's ports promiscuous)",
    },
    Need {
        cap: Capability::CAP_IPC_LOCK,
        why: "pin the UMEM frames in memory beyond RLIMIT_MEMLOCK",
    },
];

/// A capability problem. Names the capability, never a bare errno.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// Needed capabilities that are not in the permitted set.
    #[error("{}", missing_message(.0))]
    Missing(Vec<Need>),
    /// The capability sets could not be read or changed.
    #[error("{op}: {source}")]
    Caps {
        /// What was being done.
        op: String,
        /// The caps crate's error.
        source: caps::errors::CapsError,
    },
}

fn missing_message(missing: &[Need]) -> String {
    let each: Vec<String> = missing
        .iter()
        .map(|n| format!("missing capability {}: needed to {}", n.cap, n.why))
        .collect();
    format!(
        "{} (grant it with AmbientCapabilities= in the systemd unit, setpriv --ambient-caps, or run as root)",
        each.join("; ")
    )
}

fn caps_err(op: impl Into<String>) -> impl FnOnce(caps::errors::CapsError) -> PrivError {
    let op = op.into();
    move |source| PrivError::Caps { op, source }
}

/// The calling thread's capability sets, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Effective set.
    pub effective: CapsHashSet,
    /// Permitted set.
    pub permitted: CapsHashSet,
    /// Ambient set.
    pub ambient: CapsHashSet,
}

impl Snapshot {
    /// Reads the calling thread's sets.
    ///
    /// # Errors
    /// [`PrivError::Caps`].
    pub fn read() -> Result<Self, PrivError> {
        let read =
            |set: CapSet| caps::read(None, set).map_err(caps_err(format!("reading {set:?}")));
        Ok(Self {
            effective: read(CapSet::Effective)?,
            permitted: read(CapSet::Permitted)?,
            ambient: read(CapSet::Ambient)?,
        })
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |s: &CapsHashSet| {
            let mut v: Vec<String> = s.iter().map(ToString::to_string).collect();
            v.sort();
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(",")
            }
        };
        write!(
            f,
            "effective={} permitted={} ambient={}",
            names(&self.effective),
            names(&self.permitted),
            names(&self.ambient)
        )
    }
}

/// The needed capabilities missing from `permitted`.
pub fn missing(permitted: &CapsHashSet) -> Vec<Need> {
    NEEDED
        .iter()
        .filter(|n| !permitted.contains(&n.cap))
        .copied()
        .collect()
}

/// Checks that every capability in [`NEEDED`] is permitted and raises them into the effective
/// set of the calling thread. Call it before the daemon touches any interface.
///
/// # Errors
/// [`PrivError::Missing`] naming every missing capability and what it is for;
/// [`PrivError::Caps`] if the sets cannot be read or changed.
pub fn acquire() -> Result<(), PrivError> {
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(caps_err("reading the permitted set"))?;
    let mut missing = missing(&permitted);
    // With an unlimited RLIMIT_MEMLOCK (LimitMEMLOCK=infinity) the UMEM is pinned without it.
    if memlock_unlimited() {
        missing.retain(|n| n.cap != Capability::CAP_IPC_LOCK);
    }
    if !missing.is_empty() {
        return Err(PrivError::Missing(missing));
    }
    for n in NEEDED.iter().filter(|n| permitted.contains(&n.cap)) {
        caps::raise(None, CapSet::Effective, n.cap).map_err(caps_err(format!(
            "raising {} into the effective set",
            n.cap
        )))?;
    }
    Ok(())
}

/// Whether this process's `RLIMIT_MEMLOCK` is unlimited (read from `/proc/self/limits`).
fn memlock_unlimited() -> bool {
    std::fs::read_to_string("/proc/self/limits").is_ok_and(|s| memlock_unlimited_in(&s))
}

fn memlock_unlimited_in(limits: &str) -> bool {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max locked memory"))
        .and_then(|rest| rest.split_whitespace().next())
        .is_some_and(|soft| soft == "unlimited")
}

/// Ends start-up for the calling thread: empties the effective set, reduces the permitted set
/// to [`NEEDED`], clears the inheritable and ambient sets.
///
/// # Errors
/// [`PrivError::Caps`].
pub fn settle() -> Result<(), PrivError> {
    // Ambient first (each ambient capability must stay permitted and inheritable while it is
    // set), then effective (it must stay a subset of permitted), then permitted.
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clearing the inheritable set"))?;
    caps::clear(None, CapSet::Effective).map_err(caps_err("clearing the effective set"))?;
    let keep: CapsHashSet = NEEDED.iter().map(|n| n.cap).collect();
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(caps_err("reading the permitted set"))?;
    let reduced: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Permitted, &reduced).map_err(caps_err("reducing the permitted set"))?;
    Ok(())
}

/// Gives up every capability of the calling thread, for good: ambient, inheritable, effective
/// and permitted sets emptied. For threads spawned during start-up that never need one (the
/// workers), which otherwise keep the start-up sets: call it first thing in the thread.
///
/// # Errors
/// [`PrivError::Caps`].
pub fn drop_all_for_thread() -> Result<(), PrivError> {
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clearing the inheritable set"))?;
    caps::clear(None, CapSet::Effective).map_err(caps_err("clearing the effective set"))?;
    caps::clear(None, CapSet::Permitted).map_err(caps_err("clearing the permitted set"))
}

/// Runs `f` with `needed` raised into the calling thread's effective set, then lowers them
/// again (also when `f` panics). For run-time changes after [`settle`].
///
/// # Errors
/// [`PrivError::Missing`] if one of them is not permitted (nothing is run);
/// [`PrivError::Caps`].
pub fn with_effective<T>(needed: &[Need], f: impl FnOnce() -> T) -> Result<T, PrivError> {
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(caps_err("reading the permitted set"))?;
    let missing: Vec<Need> = needed
        .iter()
        .filter(|n| !permitted.contains(&n.cap))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(PrivError::Missing(missing));
    }
    struct Lower<'a>(&'a [Need]);
    impl Drop for Lower<'_> {
        fn drop(&mut self) {
            for n in self.0 {
                let _ = caps::drop(None, CapSet::Effective, n.cap);
            }
        }
    }
    let guard = Lower(needed);
    for n in needed {
        caps::raise(None, CapSet::Effective, n.cap)
            .map_err(caps_err(format!("raising {}", n.cap)))?;
    }
    let out = f();
    drop(guard);
    Ok(out)
}

/// The [`Need`] entry of `cap`, if the daemon needs it.
pub fn need(cap: Capability) -> Option<Need> {
    NEEDED.iter().find(|n| n.cap == cap).copied()
}

/// An explanation to add when a foreign program with an unreadable (empty) name refused start
/// and the daemon lacks `CAP_SYS_ADMIN`, which reading another program's name requires.
pub fn foreign_name_hint() -> Option<&'static str> {
    let admin = caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap_or(true);
    (!admin).then_some(
        "the attached program's name cannot be read without CAP_SYS_ADMIN (BPF_PROG_GET_NEXT_ID needs it), \
         so a program of ours attached in netlink mode (e.g. by `ip link set dev IF xdp obj ...`) cannot be \
         told from a foreign one; isopathd's own programs use BPF links and never outlive it. Remove it with \
         `ip link set dev IF xdp off`, or start once with --force",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_each_capability_and_its_use() {
        let permitted: CapsHashSet = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW]
            .into_iter()
            .collect();
        let m = missing(&permitted);
        assert_eq!(
            m.iter().map(|n| n.cap).collect::<Vec<_>>(),
            [Capability::CAP_BPF, Capability::CAP_IPC_LOCK]
        );
        let msg = PrivError::Missing(m).to_string();
        assert!(
            msg.starts_with("missing capability CAP_BPF: needed to load the XDP program"),
            "{msg}"
        );
        assert!(
            msg.contains("missing capability CAP_IPC_LOCK: needed to pin the UMEM"),
            "{msg}"
        );
    }

    #[test]
    fn nothing_missing_from_the_full_set() {
        assert!(missing(&caps::all()).is_empty());
        assert_eq!(
            need(Capability::CAP_NET_RAW).map(|n| n.why),
            Some(
                "create the AF_XDP sockets (and, at run time, the packet sockets that hold a capture's ports promiscuous)"
            )
        );
        assert_eq!(need(Capability::CAP_SYS_ADMIN), None);
    }

    #[test]
    fn memlock_limit_is_read_from_proc_limits() {
        let limited = "Limit                     Soft Limit           Hard Limit           Units     \n\
                       Max locked memory         8388608              8388608              bytes     \n";
        assert!(!memlock_unlimited_in(limited));
        let unlimited = limited.replace(
            "8388608              8388608",
            "unlimited            unlimited",
        );
        assert!(memlock_unlimited_in(&unlimited));
        assert!(!memlock_unlimited_in(""));
    }

    #[test]
    fn snapshot_reads_this_thread() {
        let s = Snapshot::read().expect("reading capabilities of this thread");
        assert!(s.effective.is_subset(&s.permitted), "{s}");
        assert!(s.to_string().starts_with("effective="));
    }
}
