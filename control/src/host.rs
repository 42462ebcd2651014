//! What the daemon asks of the host: interfaces, queues, CPUs, links. Behind a trait so that
//! config validation is tested without privileges or real interfaces.

use std::path::PathBuf;

use crate::{
    doctor::Root,
    topology::{PortLocality, isolation::Isolation, locate, machine::Machine},
};

/// Facts about the host.
pub trait Host {
    /// Index of interface `name`, if it exists (in this network namespace).
    fn ifindex(&self, name: &str) -> Option<u32>;
    /// Number of RX queues of interface `name`.
    fn rx_queues(&self, name: &str) -> Option<u32>;
    /// Whether interface `name` has carrier.
    fn carrier(&self, name: &str) -> Option<bool>;
    /// CPUs the host has.
    fn cpus(&self) -> usize;
    /// MAC address of interface `name`.
    fn mac(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }
    /// The name of interface `ifindex` now (it may have been renamed), if it exists.
    fn name_of(&self, ifindex: u32) -> Option<String> {
        let _ = ifindex;
        None
    }
    /// The machine's topology. By default `cpus()` single-thread cores in one NUMA node.
    fn machine(&self) -> Machine {
        Machine::flat(self.cpus())
    }
    /// CPU isolation. By default none.
    fn isolation(&self) -> Isolation {
        Isolation::none((0..self.cpus()).collect())
    }
    /// Where interface `name`'s NIC is. By default unknown.
    fn locality(&self, machine: &Machine, name: &str) -> PortLocality {
        let _ = machine;
        PortLocality {
            port: name.to_owned(),
            numa: None,
            pci: None,
            note: "locality unknown".to_owned(),
        }
    }
}

/// The running host, read through sysfs of the current network namespace.
#[derive(Debug, Default)]
pub struct LiveHost {
    sysfs: PathBuf,
    /// The hardware, read once (hwloc's discovery takes a while and the machine does not
    /// change under a running daemon: a reload plans against the same one).
    machine: std::sync::OnceLock<Machine>,
}

impl LiveHost {
    /// Reads `/sys/class/net`.
    pub fn new() -> Self {
        Self {
            sysfs: PathBuf::from("/sys/class/net"),
            machine: std::sync::OnceLock::new(),
        }
    }
}

impl Host for LiveHost {
    fn ifindex(&self, name: &str) -> Option<u32> {
        isopath_datapath::xsk::if_index(name).ok()
    }

    fn rx_queues(&self, name: &str) -> Option<u32> {
        let dir = std::fs::read_dir(self.sysfs.join(name).join("queues")).ok()?;
        let n = dir
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count();
        u32::try_from(n).ok().filter(|&n| n > 0)
    }

    fn carrier(&self, name: &str) -> Option<bool> {
        let s = std::fs::read_to_string(self.sysfs.join(name).join("carrier")).ok()?;
        Some(s.trim() == "1")
    }

    fn name_of(&self, ifindex: u32) -> Option<String> {
        // One directory walk: only asked when a port's name stopped resolving.
        std::fs::read_dir(&self.sysfs)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| {
                std::fs::read_to_string(e.path().join("ifindex"))
                    .is_ok_and(|s| s.trim().parse() == Ok(ifindex))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
    }

    fn cpus(&self) -> usize {
        // Not available_parallelism(): it counts only the CPUs of this process's affinity mask,
        // which the service's CPUAffinity= (the housekeeping cores) makes smaller than the host.
        crate::cpulist::online()
            .and_then(|c| c.last().map(|&l| l + 1))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    fn mac(&self, name: &str) -> Option<String> {
        let s = std::fs::read_to_string(self.sysfs.join(name).join("address")).ok()?;
        Some(s.trim().to_owned())
    }

    fn machine(&self) -> Machine {
        self.machine
            .get_or_init(|| crate::topology::live_or_flat(self.cpus()))
            .clone()
    }

    fn isolation(&self) -> Isolation {
        Isolation::read(&Root::new("/"))
    }

    fn locality(&self, machine: &Machine, name: &str) -> PortLocality {
        locate(machine, &Root::new("/"), name)
    }
}

/// A host made of given interfaces, for tests.
#[derive(Debug, Clone)]
pub struct FakeHost {
    cpus: usize,
    ifaces: Vec<(String, u32)>,
}

impl FakeHost {
    /// `cpus` CPUs and interfaces as (name, RX queues).
    pub fn new(cpus: usize, ifaces: &[(&str, u32)]) -> Self {
        Self {
            cpus,
            ifaces: ifaces.iter().map(|&(n, q)| (n.to_owned(), q)).collect(),
        }
    }
}

impl Host for FakeHost {
    fn ifindex(&self, name: &str) -> Option<u32> {
        self.ifaces
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| i as u32 + 2)
    }

    fn rx_queues(&self, name: &str) -> Option<u32> {
        self.ifaces.iter().find(|(n, _)| n == name).map(|&(_, q)| q)
    }

    fn carrier(&self, name: &str) -> Option<bool> {
        self.ifindex(name).map(|_| true)
    }

    fn cpus(&self) -> usize {
        self.cpus
    }
}
