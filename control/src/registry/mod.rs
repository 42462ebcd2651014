//! The device registry: one table of the daemon's devices (ports, bonds and the loopback it
//! is created with), changed only here, and the notifier chain that tells listeners what
//! changed.
//!
//! Everything that follows a device's life (bond membership, captures, cross-connects, the
//! link book's index of ports, link-state tracking) is a [`Listener`] on the chain rather than
//! a call written into `port del` or `bond add`: the registry changes the table, then emits
//! the [`Event`]; a listener acts on it or vetoes it. Listeners get the table read-only and a
//! context the owner passes in (see [`notifier`]'s Design), so nothing calls back into the
//! registry while it emits.
//!
//! A device's life after registration (references, batched unregistration, the todo list,
//! promiscuity, the loopback) is in [`lifecycle`].
//!
//! # Limitations
//! The registry is single-threaded (the control loop owns it). Threads other than the loop
//! (the rtnetlink thread) see what listeners publish for them, never the table; a
//! [`DevRef`] may be dropped on any thread.

pub mod device;
pub mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
pub mod name;
pub mod notifier;
#[cfg(test)]
mod tests;

pub use device::{Device, DeviceId, DeviceKind, Devices, Flags, Hold, Iff, OperState, RegState};
pub use lifecycle::{
    DevRef, Holder, LOOPBACK, Life, Options, PromiscFlag, Promiscuity, Stats, Teardown, TodoReport,
    Waiting,
};
pub use name::NameError;
pub use notifier::{Chain, Errno, Event, Listener, Veto};

use std::{collections::BTreeMap, time::Instant};

/// Why the registry refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No such device.
    #[error("no device {0}")]
    NoDevice(DeviceId),
    /// The name is taken.
    #[error("{0} is already registered")]
    Exists(String),
    /// The device is not of the kind the operation needs.
    #[error("{name} is not a {expected:?}")]
    Kind {
        /// The device.
        name: String,
        /// What it needed to be.
        expected: DeviceKind,
    },
    /// A batch names the device twice.
    #[error("{0} is listed twice")]
    Twice(String),
    /// The port is a member of another bond.
    #[error("{port} is a member of another bond")]
    OtherMaster {
        /// The port.
        port: String,
    },
    /// The port is a member of this bond already.
    #[error("{port} is already a member of {bond}")]
    AlreadyMember {
        /// The port.
        port: String,
        /// The bond.
        bond: String,
    },
    /// The port is not a member of the bond.
    #[error("{port} is not a member of {bond}")]
    NotMember {
        /// The port.
        port: String,
        /// The bond.
        bond: String,
    },
    /// A listener failed while a device of a batch being unregistered left its bond: the batch
    /// stopped there (what had left stays out, nothing was unregistered).
    #[error("releasing {port} from {bond}: {veto}")]
    Unlink {
        /// The member.
        port: String,
        /// The bond.
        bond: String,
        /// The listener's failure.
        veto: Veto,
    },
    /// Not a valid device name.
    #[error("{name:?}: {why}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        why: NameError,
    },
    /// Every index up to [`Options::max_index`] is taken (by a registered device or one
    /// waiting on the todo list).
    #[error("no free device index")]
    NoIndex,
    /// The loopback cannot be unregistered.
    #[error(
        "{0} is the loopback device: it cannot be unregistered (it goes last, with the registry)"
    )]
    Loopback(String),
    /// A second loopback.
    #[error("there is one loopback device and it exists")]
    OneLoopback,
    /// Promiscuity would go below what was added.
    #[error("{0}: promiscuity would go below zero")]
    PromiscUnderflow(String),
    /// Promiscuity would wrap.
    #[error("{0}: promiscuity touches roof")]
    PromiscOverflow(String),
    /// A holder's references would wrap.
    #[error("{name}: too many references held by {holder}")]
    RefOverflow {
        /// The device.
        name: String,
        /// The holder.
        holder: Holder,
    },
    /// A listener vetoed the change: nothing changed.
    #[error("{0}")]
    Vetoed(Veto),
    /// A listener failed on a change that cannot be refused: the change is made.
    #[error("{0}")]
    Failed(Veto),
}

impl RegistryError {
    /// The errno of the refusal (`notifier_to_errno` for a listener's).
    pub fn errno(&self) -> Errno {
        match self {
            Self::NoDevice(_) => Errno::ENODEV,
            Self::Exists(_) | Self::AlreadyMember { .. } => Errno::EEXIST,
            Self::Kind { .. }
            | Self::NotMember { .. }
            | Self::Twice(_)
            | Self::BadName { .. }
            | Self::PromiscUnderflow(_) => Errno::EINVAL,
            Self::OtherMaster { .. } | Self::NoIndex => Errno::EBUSY,
            Self::Loopback(_) => Errno::EOPNOTSUPP,
            Self::OneLoopback => Errno::EEXIST,
            Self::PromiscOverflow(_) | Self::RefOverflow { .. } => Errno::EOVERFLOW,
            Self::Vetoed(v) | Self::Failed(v) | Self::Unlink { veto: v, .. } => v.errno,
        }
    }
}

/// The registry: the devices and the listeners on them. `D` is what the owner keeps per device,
/// `C` what listeners act on.
#[derive(Debug)]
pub struct Registry<D, C> {
    devices: Devices<D>,
    chain: Chain<D, C>,
    /// Where the index allocator looks next.
    next: u32,
    opts: Options,
    /// When each device on the todo list is reported next.
    waits: BTreeMap<DeviceId, Instant>,
    stats: Stats,
}

impl<D: Default, C> Default for Registry<D, C> {
    fn default() -> Self {
        Self::with_options(D::default(), Options::default())
    }
}

impl<D: Default, C> Registry<D, C> {
    /// A registry without listeners, with its loopback (what the owner keeps for it:
    /// `D::default()`).
    pub fn new() -> Self {
        Self::default()
    }
}

impl<D, C> Registry<D, C> {
    /// A registry without listeners, tuned by `opts`, with its loopback (`lo`, index 1, up,
    /// MTU 65536, MAC 0), whose owner keeps `loopback` for it. Listeners added later are not
    /// told of it (Linux replays REGISTER to a late notifier; none of ours acts on it).
    pub fn with_options(loopback: D, opts: Options) -> Self {
        let mut lo = Device {
            flags: Flags {
                up: true,
                cross_connected: false,
            },
            mtu: Some(65_536),
            mac: Some([0; 6]),
            ..Device::new("lo", DeviceKind::Loopback, loopback)
        };
        lo.life = Life::registered();
        Self {
            devices: Devices {
                by_id: BTreeMap::from([(LOOPBACK, lo)]),
                todo: BTreeMap::new(),
            },
            chain: Chain::default(),
            next: LOOPBACK.0 + 1,
            opts,
            waits: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    /// The table.
    pub fn devices(&self) -> &Devices<D> {
        &self.devices
    }

    /// What the owner keeps for device `id` (the table's other fields change only through
    /// the registry's operations).
    pub fn data_mut(&mut self, id: DeviceId) -> Option<&mut D> {
        self.devices.by_id.get_mut(&id).map(|d| &mut d.data)
    }

    /// Adds `listener` to the chain with `priority` (higher first, equal in the order added).
    pub fn listen(&mut self, listener: Box<dyn Listener<D, C>>, priority: i32) {
        self.chain.register(listener, priority);
    }

    /// The listeners, in call order.
    pub fn listeners(&self) -> Vec<&'static str> {
        self.chain.names()
    }

    fn dev(&self, id: DeviceId) -> Result<&Device<D>, RegistryError> {
        self.devices.get(id).ok_or(RegistryError::NoDevice(id))
    }

    fn dev_mut(&mut self, id: DeviceId) -> Result<&mut Device<D>, RegistryError> {
        self.devices
            .by_id
            .get_mut(&id)
            .ok_or(RegistryError::NoDevice(id))
    }

    fn kind(&self, id: DeviceId, expected: DeviceKind) -> Result<&Device<D>, RegistryError> {
        let d = self.dev(id)?;
        if d.kind != expected {
            return Err(RegistryError::Kind {
                name: d.name.clone(),
                expected,
            });
        }
        Ok(d)
    }

    fn emit(&mut self, ev: Event, cx: &mut C) -> Result<(), Veto> {
        self.chain.call(ev, &self.devices, cx)
    }

    /// Registers `dev` (its `master`, if set, must be a bond: a member from the start) and
    /// emits REGISTER: its name validated ([`name::validate`]), an index allocated, the
    /// registry's reference taken. A veto takes it out again completely: the listeners told
    /// before get UNREGISTER, the index is released, nothing of it stays visible.
    ///
    /// # Errors
    /// A bad name, the name taken, a second loopback, no free index, the master not a bond,
    /// or a listener vetoed.
    pub fn register(&mut self, mut dev: Device<D>, cx: &mut C) -> Result<DeviceId, RegistryError> {
        if let Err(why) = name::validate(&dev.name) {
            return Err(RegistryError::BadName {
                name: dev.name,
                why,
            });
        }
        if dev.kind == DeviceKind::Loopback {
            return Err(RegistryError::OneLoopback);
        }
        if self.devices.find(&dev.name).is_some() {
            return Err(RegistryError::Exists(dev.name));
        }
        if let Some(m) = dev.master {
            self.kind(m, DeviceKind::Bond)?;
        }
        let id = self.alloc_index()?;
        dev.life = Life::registered();
        if dev.master.is_some() {
            dev.life.membership = DevRef::take(id, Holder::BondMember, dev.life.usage());
        }
        self.devices.by_id.insert(id, dev);
        if let Err(v) = self.emit(Event::Register(id), cx) {
            // Dropped with its references: the index is free again.
            self.devices.by_id.remove(&id);
            return Err(RegistryError::Vetoed(v));
        }
        Ok(id)
    }

    /// The next free index from where the last one was taken, wrapping at
    /// [`Options::max_index`] to 2 (1 is the loopback's), skipping those taken.
    fn alloc_index(&mut self) -> Result<DeviceId, RegistryError> {
        let max = self.opts.max_index.max(2);
        let mut i = self.next;
        // At most one lap over the taken indexes (bounded by how many devices there are).
        for _ in 0..=self.devices.by_id.len() + self.devices.todo.len() {
            if !(2..=max).contains(&i) {
                i = 2;
            }
            if !self.devices.taken(DeviceId(i)) {
                self.next = i.saturating_add(1);
                return Ok(DeviceId(i));
            }
            i = i.saturating_add(1);
        }
        Err(RegistryError::NoIndex)
    }

    /// Sets device `id` administratively up (UP, vetoable) or down (DOWN); no event if it
    /// already is.
    ///
    /// # Errors
    /// No such device, or a listener vetoed UP (the device stays down); a listener's failure
    /// on DOWN is returned after the change.
    pub fn set_up(&mut self, id: DeviceId, up: bool, cx: &mut C) -> Result<(), RegistryError> {
        let d = self.dev_mut(id)?;
        if d.flags.up == up {
            return Ok(());
        }
        d.flags.up = up;
        let ev = if up { Event::Up(id) } else { Event::Down(id) };
        match self.emit(ev, cx) {
            Ok(()) => Ok(()),
            Err(v) if up => {
                self.dev_mut(id)?.flags.up = false;
                Err(RegistryError::Vetoed(v))
            }
            Err(v) => Err(RegistryError::Failed(v)),
        }
    }

    /// Records device `id`'s operational state; CHANGE if it changed. Returns whether it did.
    ///
    /// # Errors
    /// No such device, or a listener failed (the state is recorded).
    pub fn set_operstate(
        &mut self,
        id: DeviceId,
        state: OperState,
        cx: &mut C,
    ) -> Result<bool, RegistryError> {
        let d = self.dev_mut(id)?;
        if d.operstate == state {
            return Ok(false);
        }
        d.operstate = state;
        self.emit(Event::Change(id), cx)
            .map_err(RegistryError::Failed)?;
        Ok(true)
    }

    /// Records device `id`'s MTU (the kernel changed it); CHANGE if it changed. Returns whether
    /// it did.
    ///
    /// # Errors
    /// No such device, or a listener failed (the MTU is recorded).
    pub fn set_mtu(&mut self, id: DeviceId, mtu: u32, cx: &mut C) -> Result<bool, RegistryError> {
        let d = self.dev_mut(id)?;
        if d.mtu == Some(mtu) {
            return Ok(false);
        }
        d.mtu = Some(mtu);
        self.emit(Event::Change(id), cx)
            .map_err(RegistryError::Failed)?;
        Ok(true)
    }

    /// Records bond `bond`'s active member; ACTIVE if it changed. Returns whether it did.
    ///
    /// # Errors
    /// No such bond, or a listener failed (the member is recorded).
    pub fn set_active(
        &mut self,
        bond: DeviceId,
        member: Option<DeviceId>,
        cx: &mut C,
    ) -> Result<bool, RegistryError> {
        self.kind(bond, DeviceKind::Bond)?;
        let d = self.dev_mut(bond)?;
        if d.active == member {
            return Ok(false);
        }
        d.active = member;
        self.emit(Event::Active { bond, member }, cx)
            .map_err(RegistryError::Failed)?;
        Ok(true)
    }

    /// Makes port `port` a member of bond `bond` and emits JOIN. A veto unlinks it again; the
    /// listeners told before get LEAVE.
    ///
    /// # Errors
    /// Not a port or not a bond, a member of a bond already, or a listener vetoed.
    pub fn join(
        &mut self,
        port: DeviceId,
        bond: DeviceId,
        cx: &mut C,
    ) -> Result<(), RegistryError> {
        let bond_name = self.kind(bond, DeviceKind::Bond)?.name.clone();
        let p = self.kind(port, DeviceKind::Port)?;
        match p.master {
            Some(m) if m == bond => {
                return Err(RegistryError::AlreadyMember {
                    port: p.name.clone(),
                    bond: bond_name,
                });
            }
            Some(_) => {
                return Err(RegistryError::OtherMaster {
                    port: p.name.clone(),
                });
            }
            None => {}
        }
        let held = self.hold(port, Holder::BondMember)?;
        let p = self.dev_mut(port)?;
        p.master = Some(bond);
        p.life.membership = Some(held);
        if let Err(v) = self.emit(Event::Join { port, bond }, cx) {
            let p = self.dev_mut(port)?;
            p.master = None;
            p.life.membership = None;
            return Err(RegistryError::Vetoed(v));
        }
        Ok(())
    }

    /// Takes port `port` out of bond `bond` and emits LEAVE.
    ///
    /// # Errors
    /// Not a member of `bond`, or a listener failed (the port has left).
    pub fn leave(
        &mut self,
        port: DeviceId,
        bond: DeviceId,
        cx: &mut C,
    ) -> Result<(), RegistryError> {
        let bond_name = self.kind(bond, DeviceKind::Bond)?.name.clone();
        let p = self.kind(port, DeviceKind::Port)?;
        if p.master != Some(bond) {
            return Err(RegistryError::NotMember {
                port: p.name.clone(),
                bond: bond_name,
            });
        }
        let p = self.dev_mut(port)?;
        p.master = None;
        p.life.membership = None;
        if self
            .devices
            .get(bond)
            .is_some_and(|b| b.active == Some(port))
        {
            self.dev_mut(bond)?.active = None;
        }
        self.emit(Event::Leave { port, bond }, cx)
            .map_err(RegistryError::Failed)
    }

    /// Asks the listeners whether device `id` may go (PREUNREGISTER); nothing changes.
    ///
    /// # Errors
    /// No such device, or a listener vetoed.
    pub fn pre_unregister(&mut self, id: DeviceId, cx: &mut C) -> Result<(), RegistryError> {
        self.dev(id)?;
        self.emit(Event::PreUnregister(id), cx)
            .map_err(RegistryError::Vetoed)
    }

    /// Takes every device out without events, for the owner's stop once everything the
    /// listeners act on has stopped: the registered ones in index order, then those on the
    /// todo list, the loopback last.
    pub fn drain(&mut self) -> Vec<Device<D>> {
        let mut regs = std::mem::take(&mut self.devices.by_id);
        let lo = regs.remove(&LOOPBACK);
        self.waits.clear();
        regs.into_values()
            .chain(std::mem::take(&mut self.devices.todo).into_values())
            .chain(lo)
            .collect()
    }

    /// Takes device `id` out of its bond, and a bond's members out of it.
    fn unlink(&mut self, id: DeviceId, cx: &mut C) -> Result<(), RegistryError> {
        let mut pairs: Vec<(DeviceId, DeviceId)> =
            self.devices.members(id).map(|(m, _)| (m, id)).collect();
        if let Some(bond) = self.dev(id)?.master {
            pairs.insert(0, (id, bond));
        }
        for (port, bond) in pairs {
            let names = |r: &Self| {
                let n = |i| r.devices.get(i).map(|d| d.name.clone()).unwrap_or_default();
                (n(port), n(bond))
            };
            match self.leave(port, bond, cx) {
                Ok(()) => {}
                Err(RegistryError::Failed(veto)) => {
                    let (port, bond) = names(self);
                    return Err(RegistryError::Unlink { port, bond, veto });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
