//! The machine as hwloc sees it, copied into plain data: packages, NUMA nodes, physical cores
//! with their hyperthreads, caches, and the NUMA node each network interface's PCI device
//! hangs off. Placement works on this copy only, so it is the same code for the running host
//! and for a fixture's hwloc XML.

use std::{collections::BTreeMap, path::Path};

use hwlocality::{
    Topology,
    object::{TopologyObject, attributes::ObjectAttributes, types::ObjectType},
    topology::builder::TypeFilter,
};
use serde::{Deserialize, Serialize};

use super::TopologyError;
use crate::cpulist::{self, Cpus};

/// One physical core: its hardware threads (hyperthread siblings share the core's pipeline and
/// L1/L2 caches), as the kernel's CPU numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Core {
    /// CPU numbers of its hardware threads, lowest first.
    pub pus: Vec<usize>,
    /// The package (socket) it sits in.
    pub package: Option<usize>,
    /// Its NUMA node.
    pub numa: Option<usize>,
}

/// A NUMA node and its CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    /// The node number (`/sys/devices/system/node/nodeN`).
    pub node: usize,
    /// Its CPUs, as a list (`0-7,16-23`).
    pub cpus: String,
}

/// One level of CPU cache, summarised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// 1, 2, 3.
    pub level: usize,
    /// Size of one instance in KiB.
    pub kib: u64,
    /// How many instances.
    pub count: usize,
    /// CPUs sharing one instance (the first one's count).
    pub shared_by: usize,
}

/// A network interface hwloc found below a PCI device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The PCI device (`0000:81:00.0`).
    pub pci: String,
    /// The device name from the PCI database, if hwloc had it.
    pub model: Option<String>,
    /// NUMA node the device is attached to: `None` when it hangs off the whole machine.
    pub numa: Option<usize>,
}

/// Everything placement needs to know about the hardware.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Where it came from: `this host`, an XML file, a synthetic description.
    pub source: String,
    /// Number of packages (sockets).
    pub packages: usize,
    /// NUMA nodes.
    pub numa: Vec<NumaNode>,
    /// Physical cores, ordered by their first CPU number.
    pub cores: Vec<Core>,
    /// CPU caches, one entry per level.
    pub caches: Vec<Cache>,
    /// Network interfaces on PCI devices, by interface name.
    pub nics: BTreeMap<String, Nic>,
}

impl Machine {
    /// The running host.
    ///
    /// # Errors
    /// hwloc could not discover it.
    pub fn live() -> Result<Self, TopologyError> {
        let t = builder()?.build().map_err(hwloc)?;
        Ok(Self::from_topology(&t, "this host".into()))
    }

    /// The running host's topology as hwloc XML, what `lstopo --of xml` writes (a fixture).
    ///
    /// # Errors
    /// hwloc could not discover or export it.
    pub fn live_xml() -> Result<String, TopologyError> {
        let t = builder()?.build().map_err(hwloc)?;
        let xml = t
            .export_xml(hwlocality::topology::export::xml::XMLExportFlags::empty())
            .map_err(hwloc)?;
        Ok(xml.as_str().to_owned())
    }

    /// From hwloc XML (`lstopo --of xml`).
    ///
    /// # Errors
    /// The file is missing or not hwloc XML this libhwloc reads.
    pub fn from_xml_file(path: &Path) -> Result<Self, TopologyError> {
        let t = builder()?
            .from_xml_file(path)
            .map_err(|e| TopologyError::Load(format!("{}: {e}", path.display())))?
            .build()
            .map_err(|e| TopologyError::Load(format!("{}: {e}", path.display())))?;
        Ok(Self::from_topology(&t, path.display().to_string()))
    }

    /// From a synthetic description (`lstopo --of synthetic`: `Package:2 Core:8 PU:2`).
    ///
    /// # Errors
    /// hwloc does not accept the description.
    pub fn from_synthetic(description: &str) -> Result<Self, TopologyError> {
        let t = builder()?
            .from_synthetic(description)
            .map_err(|e| TopologyError::Load(format!("synthetic {description:?}: {e}")))?
            .build()
            .map_err(hwloc)?;
        Ok(Self::from_topology(
            &t,
            format!("synthetic {description:?}"),
        ))
    }

    /// `cpus` cores of one thread each in one package: what is assumed of a host that can
    /// only say how many CPUs it has.
    pub fn flat(cpus: usize) -> Self {
        Self {
            source: format!("{cpus} CPUs, topology unknown"),
            packages: 1,
            numa: vec![NumaNode {
                node: 0,
                cpus: format!("0-{}", cpus.saturating_sub(1)),
            }],
            cores: (0..cpus)
                .map(|c| Core {
                    pus: vec![c],
                    package: Some(0),
                    numa: Some(0),
                })
                .collect(),
            caches: Vec::new(),
            nics: BTreeMap::new(),
        }
    }

    fn from_topology(t: &Topology, source: String) -> Self {
        let cpus = |o: &TopologyObject| -> Cpus {
            o.cpuset()
                .map(|s| s.iter_set().map(usize::from).collect())
                .unwrap_or_default()
        };
        let nodes: Vec<(usize, Cpus)> = t
            .objects_with_type(ObjectType::NUMANode)
            .filter_map(|n| Some((n.os_index()?, cpus(n))))
            .collect();
        let packages: Vec<(usize, Cpus)> = t
            .objects_with_type(ObjectType::Package)
            .enumerate()
            .map(|(i, p)| (p.os_index().unwrap_or(i), cpus(p)))
            .collect();
        let holder = |set: &[(usize, Cpus)], pus: &Cpus| {
            set.iter()
                .find(|(_, c)| !pus.is_empty() && pus.is_subset(c))
                .map(|&(i, _)| i)
        };
        let mut cores: Vec<Core> = t
            .objects_with_type(ObjectType::Core)
            .map(cpus)
            .filter(|pus| !pus.is_empty())
            .map(|pus| Core {
                package: holder(&packages, &pus),
                numa: holder(&nodes, &pus),
                pus: pus.into_iter().collect(),
            })
            .collect();
        // A topology without Core objects (some VMs, synthetic PU-only descriptions): each CPU
        // is its own core.
        if cores.is_empty() {
            cores = t
                .objects_with_type(ObjectType::PU)
                .filter_map(TopologyObject::os_index)
                .map(|pu| {
                    let one: Cpus = [pu].into_iter().collect();
                    Core {
                        pus: vec![pu],
                        package: holder(&packages, &one),
                        numa: holder(&nodes, &one),
                    }
                })
                .collect();
        }
        cores.sort_by_key(|c| c.pus.first().copied());
        Self {
            source,
            packages: packages.len().max(1),
            numa: nodes
                .iter()
                .map(|(n, c)| NumaNode {
                    node: *n,
                    cpus: cpulist::format(c),
                })
                .collect(),
            cores,
            caches: caches(t),
            nics: nics(t),
        }
    }

    /// Every CPU, whether the scheduler may use it or not.
    pub fn cpus(&self) -> Cpus {
        self.cores
            .iter()
            .flat_map(|c| c.pus.iter().copied())
            .collect()
    }

    /// Hardware threads per core (the most any core has).
    pub fn threads_per_core(&self) -> usize {
        self.cores.iter().map(|c| c.pus.len()).max().unwrap_or(1)
    }

    /// The core holding CPU `cpu`.
    pub fn core_of(&self, cpu: usize) -> Option<&Core> {
        self.cores.iter().find(|c| c.pus.contains(&cpu))
    }
}

/// I/O objects are filtered out by default: keep PCI devices and their network interfaces.
fn builder() -> Result<hwlocality::topology::builder::TopologyBuilder, TopologyError> {
    Topology::builder()
        .with_io_type_filter(TypeFilter::KeepImportant)
        .map_err(|e| TopologyError::Load(e.to_string()))
}

fn hwloc(e: impl std::fmt::Display) -> TopologyError {
    TopologyError::Load(e.to_string())
}

fn caches(t: &Topology) -> Vec<Cache> {
    let mut out = Vec::new();
    for (level, ty) in [
        (1, ObjectType::L1Cache),
        (2, ObjectType::L2Cache),
        (3, ObjectType::L3Cache),
    ] {
        let all: Vec<&TopologyObject> = t.objects_with_type(ty).collect();
        let Some(first) = all.first() else {
            continue;
        };
        let kib = match first.attributes() {
            Some(ObjectAttributes::Cache(c)) => c.size().map_or(0, |s| s.get() / 1024),
            _ => 0,
        };
        out.push(Cache {
            level,
            kib,
            count: all.len(),
            shared_by: first.cpuset().and_then(|s| s.weight()).unwrap_or(0),
        });
    }
    out
}

fn nics(t: &Topology) -> BTreeMap<String, Nic> {
    let mut out = BTreeMap::new();
    for dev in t.os_devices() {
        let Some(name) = dev.name().and_then(|n| n.to_str().ok()) else {
            continue;
        };
        let Some(pci) = dev
            .ancestors()
            .find(|a| a.object_type() == ObjectType::PCIDevice)
        else {
            continue;
        };
        let Some(ObjectAttributes::PCIDevice(attr)) = pci.attributes() else {
            continue;
        };
        // Only network interfaces: PCI class 02xx (network controllers) and InfiniBand (0c06).
        let class = attr.class_id();
        if class >> 8 != 0x02 && class != 0x0c06 {
            continue;
        }
        let nodes: Vec<usize> = dev
            .first_non_io_ancestor()
            .and_then(TopologyObject::nodeset)
            .map(|s| s.iter_set().map(usize::from).collect())
            .unwrap_or_default();
        out.insert(
            name.to_owned(),
            Nic {
                pci: format!(
                    "{:04x}:{:02x}:{:02x}.{}",
                    attr.domain(),
                    attr.bus_id(),
                    attr.bus_device(),
                    attr.function()
                ),
                model: pci
                    .info("PCIDevice")
                    .and_then(|m| m.to_str().ok())
                    .map(str::to_owned),
                // A device whose first non-I/O ancestor spans several nodes (the machine) is
                // local to none of them.
                numa: (nodes.len() == 1).then(|| nodes[0]),
            },
        );
    }
    out
}
