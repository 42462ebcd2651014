//! A device's life after registration: references, batched unregistration with its todo
//! list, promiscuity, the loopback's sink.
//!
//! Modelled on Linux (`net/core/dev.c`):
//! - **References** (`dev_hold`/`dev_put`, `netdev_tracker`): a [`DevRef`] is taken by a typed
//!   [`Holder`] and gives its reference back when dropped (or released through
//!   [`Registry::release`], which frees the device then if it was the last). The registry holds
//!   one reference of its own while the device is registered, and a bond's member is held by
//!   its membership ([`Holder::BondMember`]) for as long as it is one.
//! - **Unregistration** ([`Registry::unregister_many`], `unregister_netdevice_many`): a batch,
//!   all or none, in the steps of `unregister_netdevice_many_notify`: close the devices that
//!   are up (`dev_close_many`), one quiesce (`synchronize_net`), per device the UNREGISTER
//!   notifiers and the owner's detach, a second quiesce for the whole batch, then the
//!   registry's reference is dropped and the devices go on the todo list (`net_todo_list`).
//!   A batch needs exactly two quiesces whatever its size.
//! - **The todo list** ([`Registry::poll_todo`], `netdev_run_todo` and
//!   `netdev_wait_allrefs_any`): a device is freed once its count reaches zero; while
//!   references linger, `unregister: waiting for <dev> to become free. Usage count = N` is
//!   logged every [`Options::wait_interval`] (10 s, `netdev_unregister_timeout_secs`).
//! - **Promiscuity** (`dev_set_promiscuity`, `__dev_change_flags` for the operator's
//!   `IFF_PROMISC` in `gflags`): a count, PROMISC set on 0 → 1 and cleared on 1 → 0, the
//!   transition reported to the caller, who takes or releases the kernel's membership then.
//!
//! # Design
//! Nothing here does I/O or reads a clock: `now` is passed in, and what the datapath must do
//! (pass a grace point, detach a device's programs and sockets) the owner does through
//! [`Teardown`], implemented by the listeners' context. Counts are atomics behind an `Arc`, so
//! a [`DevRef`] can be dropped anywhere (a dump cursor, a pending flush); the registry notices
//! at its next [`Registry::poll_todo`].
//!
//! # Limitations
//! The registry's own quiesce count says how many the registry asked for; whether the owner's
//! [`Teardown::quiesce`] waited for anything is the owner's.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{Device, DeviceId, DeviceKind, Event, Registry, RegistryError};

/// Who holds a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// The device is a member of a bond (taken by the registry at JOIN, given back at LEAVE).
    BondMember,
    /// The device is an end of a cross-connect.
    CrossConnect,
    /// A capture runs on the device.
    Capture,
    /// A flush of the device's flows has not finished.
    PendingFlush,
    /// A dump's cursor points at the device.
    DumpCursor,
}

impl Holder {
    /// Every holder, in the order counts are kept.
    pub const ALL: [Self; 5] = [
        Self::BondMember,
        Self::CrossConnect,
        Self::Capture,
        Self::PendingFlush,
        Self::DumpCursor,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BondMember => "bond membership",
            Self::CrossConnect => "cross-connect",
            Self::Capture => "capture",
            Self::PendingFlush => "pending flush",
            Self::DumpCursor => "dump cursor",
        })
    }
}

/// A device's references by holder.
#[derive(Debug, Default)]
pub(super) struct Usage {
    by_holder: [AtomicU32; Holder::ALL.len()],
}

impl Usage {
    fn get(&self, h: Holder) -> Result<(), ()> {
        self.by_holder[h.slot()]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_add(1))
            .map(drop)
            .map_err(drop)
    }

    pub(super) fn put(&self, h: Holder) {
        // Never below zero: every decrement is a DevRef's drop, and each DevRef was counted.
        let _ = self.by_holder[h.slot()]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub(super) fn held(&self, h: Holder) -> u32 {
        self.by_holder[h.slot()].load(Ordering::Acquire)
    }

    fn total(&self) -> u64 {
        Holder::ALL.iter().map(|&h| u64::from(self.held(h))).sum()
    }
}

/// A counted reference on a device, taken by a [`Holder`] ([`Registry::hold`]); dropping it
/// gives the reference back (`dev_put`). While one exists the device's index is not reused
/// and an unregistered device waits on the todo list.
#[must_use = "dropping it gives the reference back at once"]
pub struct DevRef {
    id: DeviceId,
    holder: Holder,
    usage: Arc<Usage>,
}

impl DevRef {
    pub(super) fn take(id: DeviceId, holder: Holder, usage: &Arc<Usage>) -> Option<Self> {
        usage.get(holder).ok()?;
        Some(Self {
            id,
            holder,
            usage: usage.clone(),
        })
    }

    /// The device.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Who holds it.
    pub fn holder(&self) -> Holder {
        self.holder
    }
}

impl Drop for DevRef {
    fn drop(&mut self) {
        self.usage.put(self.holder);
    }
}

impl fmt::Debug for DevRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevRef({}, {})", self.id, self.holder)
    }
}

/// What the registry keeps of a device's life (see [`Device::life`]).
#[derive(Debug, Default)]
pub struct Life {
    usage: Arc<Usage>,
    /// The registry's own reference: held while the device is registered.
    own: bool,
    /// Held for the device's bond membership.
    pub(super) membership: Option<DevRef>,
    /// The operator's `promisc on` (`gflags & IFF_PROMISC`): counts once.
    promisc_operator: bool,
    /// Everything else's promiscuity (captures).
    promisc_holds: u32,
    /// Frames sent to the loopback, dropped.
    tx_drop_loopback: u64,
}

impl Life {
    /// A registered device's: the registry's reference only.
    pub(super) fn registered() -> Self {
        Self {
            own: true,
            ..Self::default()
        }
    }

    /// The usage count: every holder's references, and the registry's own while registered.
    pub fn refs(&self) -> u64 {
        self.usage.total() + u64::from(self.own)
    }

    /// The references `holder` holds.
    pub fn held_by(&self, holder: Holder) -> u32 {
        self.usage.held(holder)
    }

    /// The promiscuity count (`ip -d link`'s `promiscuity N`).
    pub fn promiscuity(&self) -> u32 {
        // Within u32: `set_promiscuity` and `set_promisc` refuse what would overflow.
        self.promisc_holds
            .saturating_add(u32::from(self.promisc_operator))
    }

    /// Whether the operator set it promiscuous (`ip link set DEV promisc on`).
    pub fn promisc_operator(&self) -> bool {
        self.promisc_operator
    }

    /// Frames sent to the loopback and dropped (`tx_drop_loopback`; 0 on other devices).
    pub fn tx_drop_loopback(&self) -> u64 {
        self.tx_drop_loopback
    }

    pub(super) fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }
}

/// What unregistration needs of the registry's owner, implemented by the listeners' context.
pub trait Teardown<D> {
    /// Closes device `id` for the batch (`dev_close_many`, `dev_deactivate_many`): no new work
    /// reaches it and the datapath is asked to let go of it, which the first quiesce then
    /// waits for. Called for every device of the batch, before the first quiesce.
    fn close(&mut self, id: DeviceId, dev: &mut Device<D>) {
        let _ = (id, dev);
    }

    /// Returns once every worker has passed a grace point since the call: nothing of the
    /// `batch` a worker looked up before it is still in use (`synchronize_net`).
    fn quiesce(&mut self, batch: &[DeviceId]);

    /// Detaches device `id`'s programs and sockets (after its UNREGISTER notifiers).
    fn detach(&mut self, id: DeviceId, dev: &mut Device<D>);
}

/// The registry's tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The highest index the allocator hands out before it wraps to 2 (Linux: `INT_MAX`).
    pub max_index: u32,
    /// How often a device on the todo list that is still referenced is reported (Linux:
    /// `netdev_unregister_timeout_secs`, 10 s).
    pub wait_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_index: i32::MAX as u32,
            wait_interval: Duration::from_secs(10),
        }
    }
}

/// The registry's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Quiesces asked for (two per batch).
    pub quiesces: u64,
    /// Batches unregistered.
    pub batches: u64,
    /// Devices unregistered.
    pub unregistered: u64,
    /// Devices freed (their last reference gone).
    pub freed: u64,
}

/// A device still referenced on the todo list, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The device.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// Its usage count.
    pub refs: u64,
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unregister: waiting for {} to become free. Usage count = {}",
            self.name, self.refs
        )
    }
}

/// What a batch or a poll of the todo list did.
#[derive(Debug)]
pub struct TodoReport<D> {
    /// The devices freed, for their owner to drop.
    pub freed: Vec<(DeviceId, Device<D>)>,
    /// The devices still referenced: after a batch, those of the batch; after a poll, those
    /// reported now (each every [`Options::wait_interval`]).
    pub waiting: Vec<Waiting>,
}

/// A change of promiscuity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promiscuity {
    /// The count now.
    pub count: u32,
    /// What happened to PROMISC: the caller takes the kernel's membership on `Set` and
    /// releases it on `Cleared`, and only then.
    pub flag: PromiscFlag,
}

/// What a change of promiscuity did to the PROMISC flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromiscFlag {
    /// Unchanged.
    Unchanged,
    /// 0 → 1: set.
    Set,
    /// 1 → 0: cleared.
    Cleared,
}

/// The loopback's index.
pub const LOOPBACK: DeviceId = DeviceId(1);

impl<D, C> Registry<D, C> {
    /// Takes a reference on registered device `id` for `holder`.
    ///
    /// # Errors
    /// No such registered device, or its count for `holder` is at its maximum.
    pub fn hold(&self, id: DeviceId, holder: Holder) -> Result<DevRef, RegistryError> {
        let d = self.dev(id)?;
        DevRef::take(id, holder, d.life.usage()).ok_or_else(|| RegistryError::RefOverflow {
            name: d.name.clone(),
            holder,
        })
    }

    /// Gives `r` back and, if it was the last reference of a device on the todo list, frees
    /// that device now (returned for its owner to drop).
    pub fn release(&mut self, r: DevRef) -> Option<(DeviceId, Device<D>)> {
        let id = r.id();
        drop(r);
        if self.devices.todo.get(&id)?.life.refs() != 0 {
            return None;
        }
        self.free(id)
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The loopback device's index.
    pub fn loopback(&self) -> DeviceId {
        LOOPBACK
    }

    /// Counts `frames` sent to the loopback, which drops them. Returns `tx_drop_loopback`.
    pub fn loopback_sink(&mut self, frames: u64) -> u64 {
        match self.devices.by_id.get_mut(&LOOPBACK) {
            Some(lo) => {
                lo.life.tx_drop_loopback = lo.life.tx_drop_loopback.saturating_add(frames);
                lo.life.tx_drop_loopback
            }
            None => 0,
        }
    }

    /// Adds `inc` to device `id`'s promiscuity (a capture: +1 at start, -1 at stop), as
    /// `dev_set_promiscuity` does.
    ///
    /// # Errors
    /// No such device, or the count would go below what was added (underflow) or past
    /// `u32::MAX` (overflow): refused, nothing changes.
    pub fn set_promiscuity(
        &mut self,
        id: DeviceId,
        inc: i32,
    ) -> Result<Promiscuity, RegistryError> {
        let d = self.dev_mut(id)?;
        let before = d.life.promiscuity();
        let holds = i64::from(d.life.promisc_holds) + i64::from(inc);
        let op = i64::from(d.life.promisc_operator);
        if holds < 0 {
            return Err(RegistryError::PromiscUnderflow(d.name.clone()));
        }
        if holds + op > i64::from(u32::MAX) {
            return Err(RegistryError::PromiscOverflow(d.name.clone()));
        }
        d.life.promisc_holds = holds as u32;
        Ok(promisc_change(d, before))
    }

    /// The operator's `promisc on|off` (`ip link set DEV promisc`): however often repeated,
    /// `on` counts once and one `off` undoes it.
    ///
    /// # Errors
    /// No such device, or `on` would overflow the count.
    pub fn set_promisc(&mut self, id: DeviceId, on: bool) -> Result<Promiscuity, RegistryError> {
        let d = self.dev_mut(id)?;
        let before = d.life.promiscuity();
        if on && !d.life.promisc_operator && d.life.promisc_holds == u32::MAX {
            return Err(RegistryError::PromiscOverflow(d.name.clone()));
        }
        d.life.promisc_operator = on;
        Ok(promisc_change(d, before))
    }

    /// Unregisters `ids`, all or none, as `unregister_netdevice_many` does: PREUNREGISTER to
    /// each (a veto changes nothing), each member leaves its bond and each bond's members
    /// leave it (LEAVE; a listener's failure there stops the batch before anything is
    /// closed, with what left so far left); then those up are closed (DOWN), one quiesce, per
    /// device the UNREGISTER notifiers and the owner's detach, a second quiesce for the batch,
    /// and the devices leave the table: the registry drops its reference and they go on the
    /// todo list, from which those no longer referenced are freed at once. `now` starts
    /// their wait for the others.
    ///
    /// # Errors
    /// No such device, one listed twice, the loopback, a veto (nothing changed then), or a
    /// listener's failure on LEAVE ([`RegistryError::Unlink`]).
    pub fn unregister_many(
        &mut self,
        ids: &[DeviceId],
        now: Instant,
        cx: &mut C,
    ) -> Result<TodoReport<D>, RegistryError>
    where
        C: Teardown<D>,
    {
        for (i, &id) in ids.iter().enumerate() {
            let d = self.dev(id)?;
            if d.kind == DeviceKind::Loopback {
                return Err(RegistryError::Loopback(d.name.clone()));
            }
            if ids[..i].contains(&id) {
                return Err(RegistryError::Twice(d.name.clone()));
            }
        }
        for &id in ids {
            self.pre_unregister(id, cx)?;
        }
        for &id in ids {
            self.unlink(id, cx)?;
        }
        // Close those up (`dev_close_many`); a failure cannot stop it and is logged. Then the
        // owner closes each (its datapath lets go of it before the first quiesce returns).
        for &id in ids {
            let d = self.dev_mut(id)?;
            if d.flags.up {
                d.flags.up = false;
                let _ = self.emit(Event::Down(id), cx);
            }
        }
        for &id in ids {
            if let Some(d) = self.devices.by_id.get_mut(&id) {
                cx.close(id, d);
            }
        }
        self.quiesce(ids, cx);
        for &id in ids {
            let _ = self.emit(Event::Unregister(id), cx);
            if let Some(d) = self.devices.by_id.get_mut(&id) {
                cx.detach(id, d);
            }
        }
        self.quiesce(ids, cx);
        let wait = self.opts.wait_interval;
        for &id in ids {
            if let Some(mut d) = self.devices.by_id.remove(&id) {
                d.life.own = false;
                self.devices.todo.insert(id, d);
                self.waits.insert(id, now + wait);
            }
        }
        self.stats.batches += 1;
        self.stats.unregistered += ids.len() as u64;
        let freed = self.free_ready();
        let waiting = self
            .devices
            .unregistering()
            .filter(|(id, _)| ids.contains(id))
            .map(|(id, d)| Waiting {
                id,
                name: d.name.clone(),
                refs: d.life.refs(),
            })
            .collect();
        Ok(TodoReport { freed, waiting })
    }

    /// Runs the todo list at `now`: frees the devices whose count has reached zero, and
    /// reports (and logs) each one still referenced every [`Options::wait_interval`] since it
    /// went on the list (a late poll reports once, then keeps to the same steps).
    pub fn poll_todo(&mut self, now: Instant) -> TodoReport<D> {
        let freed = self.free_ready();
        let iv = self.opts.wait_interval.max(Duration::from_millis(1));
        let mut waiting = Vec::new();
        for (&id, next) in &mut self.waits {
            if now < *next {
                continue;
            }
            let late = now.duration_since(*next).as_nanos() % iv.as_nanos();
            *next = now + (iv - Duration::from_nanos(late as u64));
            if let Some(d) = self.devices.todo.get(&id) {
                let w = Waiting {
                    id,
                    name: d.name.clone(),
                    refs: d.life.refs(),
                };
                warn!(device = %id, "{w}");
                waiting.push(w);
            }
        }
        TodoReport { freed, waiting }
    }

    fn quiesce(&mut self, ids: &[DeviceId], cx: &mut C)
    where
        C: Teardown<D>,
    {
        cx.quiesce(ids);
        self.stats.quiesces += 1;
    }

    /// Frees every device on the todo list whose count is zero.
    fn free_ready(&mut self) -> Vec<(DeviceId, Device<D>)> {
        let ready: Vec<DeviceId> = self
            .devices
            .todo
            .iter()
            .filter(|(_, d)| d.life.refs() == 0)
            .map(|(&id, _)| id)
            .collect();
        ready.into_iter().filter_map(|id| self.free(id)).collect()
    }

    fn free(&mut self, id: DeviceId) -> Option<(DeviceId, Device<D>)> {
        let d = self.devices.todo.remove(&id)?;
        self.waits.remove(&id);
        self.stats.freed += 1;
        info!(device = %id, name = %d.name, "unregister: freed");
        Some((id, d))
    }
}

fn promisc_change<D>(d: &Device<D>, before: u32) -> Promiscuity {
    let count = d.life.promiscuity();
    let flag = match (before, count) {
        (0, 1..) => PromiscFlag::Set,
        (1.., 0) => PromiscFlag::Cleared,
        _ => PromiscFlag::Unchanged,
    };
    if flag != PromiscFlag::Unchanged {
        info!(device = %d.name, count, "promiscuity: {flag:?}");
    }
    Promiscuity { count, flag }
}
