//! A device of the registry: a port (an interface with sockets on the workers), a bond (the
//! daemon's own, over member ports) or the loopback, and the read-only view of the table
//! listeners get.

use std::{collections::BTreeMap, fmt, sync::Arc};

use isopath_datapath::tap::Tap;

use super::lifecycle::Life;

/// A device's index (its ifindex in the registry's namespace): allocated cyclically at
/// registration, as Linux's `dev_index_reserve` does, and never reused while the device is
/// registered or waits on the todo list for its references to go. Until the allocator wraps
/// (at [`super::Options::max_index`]), a table ordered by id lists devices in registration
/// order. Index 1 is the loopback's.
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
    /// The loopback: created with the registry, never unregistered, a sink (what is sent to
    /// it is counted as `tx_drop_loopback` and dropped).
    Loopback,
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

/// Operational state, RFC 2863's `ifOperStatus` as Linux reports it (`IF_OPER_*`,
/// `include/uapi/linux/if.h`; `Documentation/networking/operstates.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OperState {
    /// `IF_OPER_UNKNOWN`: not known (yet), or the device does not report it (the loopback).
    #[default]
    Unknown,
    /// `IF_OPER_NOTPRESENT`: a component is missing.
    NotPresent,
    /// `IF_OPER_DOWN`: no carrier (a port), no active member (a bond).
    Down,
    /// `IF_OPER_LOWERLAYERDOWN`: down because a device it sits on is down.
    LowerLayerDown,
    /// `IF_OPER_TESTING`: in a test mode.
    Testing,
    /// `IF_OPER_DORMANT`: up but waiting for an external event.
    Dormant,
    /// `IF_OPER_UP`: carrier (a port), an active member (a bond).
    Up,
}

impl OperState {
    /// `Up` or `Down`.
    pub fn from_up(up: bool) -> Self {
        if up { Self::Up } else { Self::Down }
    }

    /// Its `IF_OPER_*` value (`IFLA_OPERSTATE`).
    pub fn code(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::NotPresent => 1,
            Self::Down => 2,
            Self::LowerLayerDown => 3,
            Self::Testing => 4,
            Self::Dormant => 5,
            Self::Up => 6,
        }
    }

    /// Whether it counts as running (`netif_oper_up`: UP or UNKNOWN).
    pub fn oper_up(self) -> bool {
        matches!(self, Self::Up | Self::Unknown)
    }
}

/// Interface flags as `SIOCGIFFLAGS` and `ifinfomsg.ifi_flags` report them (`IFF_*`,
/// `include/uapi/linux/if.h`), derived from the device's state by [`Device::iff`] the way
/// `dev_get_flags` does: nothing here is stored twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Iff(pub u32);

impl Iff {
    /// `IFF_UP`: administratively up.
    pub const UP: u32 = 0x1;
    /// `IFF_LOOPBACK`.
    pub const LOOPBACK: u32 = 0x8;
    /// `IFF_RUNNING`: up and operationally up (RFC 2863 OPER_UP, or unknown).
    pub const RUNNING: u32 = 0x40;
    /// `IFF_PROMISC`: promiscuity above zero.
    pub const PROMISC: u32 = 0x100;
    /// `IFF_MASTER`: a bond.
    pub const MASTER: u32 = 0x400;
    /// `IFF_SLAVE`: a member of a bond.
    pub const SLAVE: u32 = 0x800;
    /// `IFF_LOWER_UP`: up with carrier.
    pub const LOWER_UP: u32 = 0x1_0000;

    /// Whether every bit of `bits` is set.
    pub fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }
}

impl fmt::Display for Iff {
    /// As `ip link` shows them: `UP,LOWER_UP`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::LOOPBACK, "LOOPBACK"),
            (Self::PROMISC, "PROMISC"),
            (Self::MASTER, "MASTER"),
            (Self::SLAVE, "SLAVE"),
            (Self::UP, "UP"),
            (Self::RUNNING, "RUNNING"),
            (Self::LOWER_UP, "LOWER_UP"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.contains(bit) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
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
    /// What the registry keeps of its life: references, promiscuity, the loopback's drops.
    /// Read-only outside the registry (its fields are private); reset at registration.
    pub life: Life,
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
            life: Life::default(),
        }
    }

    /// Its `IFF_*` flags, derived as `dev_get_flags` does: RUNNING and LOWER_UP only while
    /// up; carrier is an operational state of UP, DORMANT or TESTING (the loopback always
    /// has it).
    pub fn iff(&self) -> Iff {
        let mut f = 0;
        let lo = self.kind == DeviceKind::Loopback;
        if self.flags.up {
            f |= Iff::UP;
            if self.operstate.oper_up() {
                f |= Iff::RUNNING;
            }
            let carrier = matches!(
                self.operstate,
                OperState::Up | OperState::Dormant | OperState::Testing
            );
            if carrier || lo {
                f |= Iff::LOWER_UP;
            }
        }
        if lo {
            f |= Iff::LOOPBACK;
        }
        if self.life.promiscuity() > 0 {
            f |= Iff::PROMISC;
        }
        if self.kind == DeviceKind::Bond {
            f |= Iff::MASTER;
        }
        if self.master.is_some() {
            f |= Iff::SLAVE;
        }
        Iff(f)
    }
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegState {
    /// In the table: visible, found by name.
    Registered,
    /// Unregistered, on the todo list until its last reference goes: no longer visible, its
    /// name free, its index not.
    Unregistering,
}

impl fmt::Display for RegState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Registered => "registered",
            Self::Unregistering => "unregistering",
        })
    }
}

/// The table of devices, read-only to everyone but the registry (listeners get `&Devices`).
/// The registered devices are the table; the unregistered ones still referenced wait apart,
/// on the todo list ([`Self::unregistering`]).
#[derive(Debug)]
pub struct Devices<D> {
    pub(super) by_id: BTreeMap<DeviceId, Device<D>>,
    pub(super) todo: BTreeMap<DeviceId, Device<D>>,
}

impl<D> Devices<D> {
    /// The devices on the todo list (unregistered, waiting for their references to go).
    pub fn unregistering(&self) -> impl Iterator<Item = (DeviceId, &Device<D>)> {
        self.todo.iter().map(|(&i, d)| (i, d))
    }

    /// Where device `id` is: registered, on the todo list, or (`None`) freed or never there.
    pub fn state(&self, id: DeviceId) -> Option<RegState> {
        if self.by_id.contains_key(&id) {
            Some(RegState::Registered)
        } else if self.todo.contains_key(&id) {
            Some(RegState::Unregistering)
        } else {
            None
        }
    }

    /// Whether index `id` is taken (registered or on the todo list).
    pub(super) fn taken(&self, id: DeviceId) -> bool {
        self.by_id.contains_key(&id) || self.todo.contains_key(&id)
    }

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

    /// How many devices are registered (the loopback included).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
