//! The notifier chain: typed device events to listeners ordered by priority.
//!
//! Modelled on Linux's `netdevice` notifier chain (`kernel/notifier.c`): a listener registers
//! with a priority, higher ones are called first and equal ones in registration order
//! (`notifier_chain_register` inserts a block after every block of the same or a higher
//! priority). A listener refuses a vetoable event ([`Event::vetoable`]) by returning a
//! [`Veto`] carrying an errno; the chain stops there and the errno reaches the registry's
//! caller (`notifier_to_errno`). For events that change state (REGISTER, UP, JOIN), the
//! listeners already told get the inverse event, in chain order, before the caller sees the
//! veto (`notifier_call_chain_robust`).
//!
//! # Design
//! A listener is called with the event, a shared borrow of the device table and a context `C`
//! that the registry's owner passes in (the parts of the daemon a listener acts on: workers,
//! the link book, captures). It never gets the registry itself, so it cannot register, remove
//! or change a device while an event is being delivered: the registry's write side cannot be
//! re-entered, by type.

use std::fmt;

use super::device::{DeviceId, Devices};

/// A device event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `NETDEV_REGISTER`: the device is in the table. Vetoable.
    Register(DeviceId),
    /// `NETDEV_UP`: the device was set administratively up. Vetoable.
    Up(DeviceId),
    /// `NETDEV_DOWN`: the device was set administratively down.
    Down(DeviceId),
    /// `NETDEV_CHANGE`: the device's operational state changed.
    Change(DeviceId),
    /// `NETDEV_CHANGEUPPER` (linking): `port` joins bond `bond`. Vetoable, like
    /// `NETDEV_PRECHANGEUPPER`; the port's master is already set when listeners see it.
    Join {
        /// The member.
        port: DeviceId,
        /// The bond.
        bond: DeviceId,
    },
    /// `NETDEV_CHANGEUPPER` (unlinking): `port` leaves bond `bond` (its master is cleared).
    Leave {
        /// The member.
        port: DeviceId,
        /// The bond.
        bond: DeviceId,
    },
    /// `NETDEV_BONDING_FAILOVER`: bond `bond`'s active member is now `member`.
    Active {
        /// The bond.
        bond: DeviceId,
        /// Its active member (`None`: no member is up).
        member: Option<DeviceId>,
    },
    /// The device is about to be unregistered; nothing has changed yet. Vetoable (Linux has
    /// no such event: its unregistration cannot be refused, the daemon's can, for ends of a
    /// cross-connect).
    PreUnregister(DeviceId),
    /// `NETDEV_UNREGISTER`: the device leaves the table once the chain has run; listeners
    /// still see it.
    Unregister(DeviceId),
}

impl Event {
    /// Whether a listener's [`Veto`] stops the action.
    pub fn vetoable(self) -> bool {
        matches!(
            self,
            Self::Register(_) | Self::Up(_) | Self::Join { .. } | Self::PreUnregister(_)
        )
    }

    /// The event that undoes this one, for the listeners told before a veto.
    pub fn inverse(self) -> Option<Self> {
        match self {
            Self::Register(d) => Some(Self::Unregister(d)),
            Self::Up(d) => Some(Self::Down(d)),
            Self::Join { port, bond } => Some(Self::Leave { port, bond }),
            _ => None,
        }
    }
}

/// An errno (`include/uapi/asm-generic/errno-base.h`), as a listener's veto carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// Try again.
    pub const EAGAIN: Self = Self(11);
    /// Device or resource busy.
    pub const EBUSY: Self = Self(16);
    /// Exists.
    pub const EEXIST: Self = Self(17);
    /// No such device.
    pub const ENODEV: Self = Self(19);
    /// Invalid argument.
    pub const EINVAL: Self = Self(22);
    /// No space left (a bond with every member slot taken).
    pub const ENOSPC: Self = Self(28);
    /// Value too large (a count that would wrap).
    pub const EOVERFLOW: Self = Self(75);
    /// Operation not supported.
    pub const EOPNOTSUPP: Self = Self(95);
}

/// A listener's refusal (or, on an event that cannot be refused, its failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veto {
    /// Why, as an errno.
    pub errno: Errno,
    /// Why, for the operator.
    pub reason: String,
}

impl Veto {
    /// A veto with `errno` and `reason`.
    pub fn new(errno: Errno, reason: impl Into<String>) -> Self {
        Self {
            errno,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Veto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A listener on the chain.
pub trait Listener<D, C> {
    /// Its name, for logs.
    fn name(&self) -> &'static str;

    /// Handles `ev`. `devs` is the table as the event leaves it; `cx` is what the registry's
    /// owner lets listeners act on.
    ///
    /// # Errors
    /// A [`Veto`]: it stops a vetoable event; on any other it is reported and the chain goes
    /// on.
    fn event(&mut self, ev: Event, devs: &Devices<D>, cx: &mut C) -> Result<(), Veto>;
}

struct Entry<D, C> {
    priority: i32,
    listener: Box<dyn Listener<D, C>>,
}

/// Listeners by priority.
pub struct Chain<D, C> {
    entries: Vec<Entry<D, C>>,
}

impl<D, C> Default for Chain<D, C> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<D, C> fmt::Debug for Chain<D, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (e.priority, e.listener.name())))
            .finish()
    }
}

impl<D, C> Chain<D, C> {
    /// Adds `listener` after every listener of the same or a higher priority.
    pub fn register(&mut self, listener: Box<dyn Listener<D, C>>, priority: i32) {
        let at = self
            .entries
            .iter()
            .position(|e| e.priority < priority)
            .unwrap_or(self.entries.len());
        self.entries.insert(at, Entry { priority, listener });
    }

    /// The listeners' names, in call order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.listener.name()).collect()
    }

    /// Delivers `ev` to every listener in order. A vetoable event stops at the first veto;
    /// the listeners already told get [`Event::inverse`] (in chain order), and the veto is
    /// returned. On an event that cannot be refused every listener is called and the first
    /// failure is returned.
    ///
    /// # Errors
    /// The veto, or the first failure.
    pub fn call(&mut self, ev: Event, devs: &Devices<D>, cx: &mut C) -> Result<(), Veto> {
        let mut first = None;
        for i in 0..self.entries.len() {
            let Err(v) = self.entries[i].listener.event(ev, devs, cx) else {
                continue;
            };
            if !ev.vetoable() {
                tracing::warn!(
                    listener = self.entries[i].listener.name(),
                    event = ?ev,
                    "device event: {v}"
                );
                first.get_or_insert(v);
                continue;
            }
            if let Some(back) = ev.inverse() {
                for e in &mut self.entries[..i] {
                    // An undo cannot be refused; its failure is only logged.
                    if let Err(u) = e.listener.event(back, devs, cx) {
                        tracing::warn!(listener = e.listener.name(), event = ?back, "undo: {u}");
                    }
                }
            }
            return Err(v);
        }
        first.map_or(Ok(()), Err)
    }
}
