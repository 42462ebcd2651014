//! A device of the registry: a port (an interface with sockets on the workers) or a bond (the
//! daemon's own, over member ports), and the read-only view of the table listeners get.

use std::{collections::BTreeMap, fmt, sync::Arc};

use isopath_datapath::tap::Tap;

/// A device's id: assigned at registration in increasing order and never reused while the
/// daemon runs, so that a table ordered by id lists devices in registration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub(super) u32);

impl DeviceId {
    /// Its number (unique among the registry's devices).
    pub fn index(self) -> u32 {
        self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dev{}", self.0)
    }
}

/// What a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// An interface with an XDP program and sockets on the workers.
    Port,
    /// An active-backup bond over ports.
    Bond,
}

/// Administrative flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// Administratively up (`IFF_UP`): set by [`super::Registry::set_up`].
    pub up: bool,
    /// An end of a configured cross-connect: it can neither join a bond nor go while the
    /// daemon runs (the cross-connect would point at nothing).
    pub cross_connected: bool,
}

/// Operational state (the subset of RFC 2863's `IF_OPER_*` the daemon tells apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OperState {
    /// Not known yet.
    #[default]
    Unknown,
    /// No carrier (a port), no active member (a bond).
    Down,
    /// Carrier (a port), an active member (a bond).
    Up,
}

impl OperState {
    /// `Up` or `Down`.
    pub fn from_up(up: bool) -> Self {
        if up { Self::Up } else { Self::Down }
    }
}

/// A socket of a port held by a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The worker (its index).
    pub worker: usize,
    /// The port's RX queue.
    pub queue: u32,
    /// The worker's slot, when known (start-up knows it; a socket handed over at run time
    /// gets its slot when the worker takes it).
    pub slot: Option<usize>,
}

/// One device.
#[derive(Debug)]
pub struct Device<D> {
    /// Interface name (ports) or bond name.
    pub name: String,
    /// What it is.
    pub kind: DeviceKind,
    /// The kernel's ifindex (ports; a bond is the daemon's own and has none).
    pub ifindex: Option<u32>,
    /// Administrative flags.
    pub flags: Flags,
    /// Operational state.
    pub operstate: OperState,
    /// MAC address, if known.
    pub mac: Option<[u8; 6]>,
    /// MTU, if known.
    pub mtu: Option<u32>,
    /// Which workers hold which of its sockets (ports).
    pub holds: Vec<Hold>,
    /// The bond it is a member of (ports).
    pub master: Option<DeviceId>,
    /// The active member (bonds).
    pub active: Option<DeviceId>,
    /// What a capture on it reads.
    pub tap: Arc<Tap>,
    /// What the owner of the registry keeps per device (its I/O: programs, sockets).
    pub data: D,
}

impl<D> Device<D> {
    /// A device of `kind` named `name`, down, with nothing else known yet.
    pub fn new(name: &str, kind: DeviceKind, data: D) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            ifindex: None,
            flags: Flags::default(),
            operstate: OperState::Unknown,
            mac: None,
            mtu: None,
            holds: Vec::new(),
            master: None,
            active: None,
            tap: Arc::default(),
            data,
        }
    }
}

/// The table of devices, read-only to everyone but the registry (listeners get `&Devices`).
#[derive(Debug)]
pub struct Devices<D> {
    pub(super) by_id: BTreeMap<DeviceId, Device<D>>,
}

impl<D> Devices<D> {
    /// The device `id`.
    pub fn get(&self, id: DeviceId) -> Option<&Device<D>> {
        self.by_id.get(&id)
    }

    /// The device named `name`.
    pub fn find(&self, name: &str) -> Option<(DeviceId, &Device<D>)> {
        self.iter().find(|(_, d)| d.name == name)
    }

    /// The id of the device named `name`, if it is of `kind`.
    pub fn id_of(&self, name: &str, kind: DeviceKind) -> Option<DeviceId> {
        self.find(name)
            .filter(|(_, d)| d.kind == kind)
            .map(|(i, _)| i)
    }

    /// Every device, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = (DeviceId, &Device<D>)> {
        self.by_id.iter().map(|(&i, d)| (i, d))
    }

    /// The devices of `kind`, in registration order.
    pub fn of_kind(&self, kind: DeviceKind) -> impl Iterator<Item = (DeviceId, &Device<D>)> {
        self.iter().filter(move |(_, d)| d.kind == kind)
    }

    /// The members of bond `bond`, in registration order.
    pub fn members(&self, bond: DeviceId) -> impl Iterator<Item = (DeviceId, &Device<D>)> {
        self.iter().filter(move |(_, d)| d.master == Some(bond))
    }

    /// The ifindexes a capture on `id` holds promiscuous: a port's own, a bond's members'.
    pub fn span(&self, id: DeviceId) -> Vec<u32> {
        match self.get(id) {
            Some(d) if d.kind == DeviceKind::Bond => {
                self.members(id).filter_map(|(_, m)| m.ifindex).collect()
            }
            Some(d) => d.ifindex.into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// How many devices there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
