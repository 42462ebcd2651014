//! Promiscuity as a counter (`dev_set_promiscuity`): the registry counts (the operator's
//! `link set DEV promisc on` once, each capture one), and only a port's 0 → 1 takes the
//! kernel's reference on the real interface (a `PACKET_MR_PROMISC` membership, what tcpdump
//! holds) and its 1 → 0 releases it.
//!
//! Listeners cannot reach the registry (they see the devices read-only), so what a capture
//! listener changes on JOIN, LEAVE or UNREGISTER is queued in [`Promisc::pending`] and applied
//! by the daemon when the registry call returns ([`Daemon::settle_promisc`]).

use std::collections::BTreeMap;

use isopath_datapath::xsk::PromiscGuard;
use tracing::{info, warn};

use super::Daemon;
use crate::{
    registry::{DeviceId, DeviceKind, PromiscFlag, Promiscuity},
    request::LinkChanged,
};

/// The kernel's promiscuity references the daemon holds, and the changes listeners queued.
#[derive(Debug, Default)]
pub(super) struct Promisc {
    /// One membership per port whose count is above zero.
    guards: BTreeMap<DeviceId, PromiscGuard>,
    /// (port, +1/-1) queued by listeners.
    pub(super) pending: Vec<(DeviceId, i32)>,
}

impl Promisc {
    /// A port is unregistered: its membership goes with it (its count goes with the device).
    pub(super) fn forget(&mut self, id: DeviceId) {
        if self.guards.remove(&id).is_some() {
            info!(device = %id, "promiscuity: membership released with the device");
        }
    }

    /// Whether the kernel's membership is held for `id`.
    pub(super) fn holds(&self, id: DeviceId) -> bool {
        self.guards.contains_key(&id)
    }
}

/// One change of a device's promiscuity.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
    /// The operator's `promisc on|off`.
    Operator(bool),
    /// A holder's +1 / -1 (a capture).
    Holders(i32),
}

impl Daemon {
    /// Changes `id`'s promiscuity and, on a transition, takes or releases the kernel's
    /// membership (CAP_NET_RAW raised for that call only). A membership that cannot be taken
    /// undoes the change.
    pub(super) fn promisc_change(
        &mut self,
        id: DeviceId,
        change: Change,
    ) -> Result<Promiscuity, String> {
        let before = self.registry.devices().get(id).map(|d| {
            (
                d.life.promisc_operator(),
                d.life.promiscuity(),
                d.ifindex,
                d.kind,
            )
        });
        let Some((was_on, _, ifindex, kind)) = before else {
            return Err(format!("no device {id}"));
        };
        if kind != DeviceKind::Port {
            return Err(format!(
                "{id}: promiscuity is counted on ports only (a bond's follows its members)"
            ));
        }
        let p = match change {
            Change::Operator(on) => self.registry.set_promisc(id, on),
            Change::Holders(n) => self.registry.set_promiscuity(id, n),
        }
        .map_err(|e| e.to_string())?;
        match p.flag {
            PromiscFlag::Set => {
                let ifindex = ifindex.unwrap_or_default();
                let net_raw = crate::privs::need(caps::Capability::CAP_NET_RAW);
                let guard =
                    crate::privs::with_effective(net_raw.as_slice(), || PromiscGuard::new(ifindex))
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                match guard {
                    Ok(g) => {
                        self.plane.promisc.guards.insert(id, g);
                    }
                    Err(e) => {
                        // Undo: the count must say what the kernel holds.
                        let _ = match change {
                            Change::Operator(_) => self.registry.set_promisc(id, was_on),
                            Change::Holders(n) => self.registry.set_promiscuity(id, -n),
                        };
                        return Err(format!("setting promiscuous mode: {e}"));
                    }
                }
            }
            PromiscFlag::Cleared => {
                self.plane.promisc.guards.remove(&id);
            }
            PromiscFlag::Unchanged => {}
        }
        Ok(p)
    }

    /// Applies what listeners queued (a failure is logged: the device may be gone already,
    /// taking its count and membership with it).
    pub(super) fn settle_promisc(&mut self) {
        for (id, n) in std::mem::take(&mut self.plane.promisc.pending) {
            if self.registry.devices().get(id).is_none() {
                continue;
            }
            if let Err(e) = self.promisc_change(id, Change::Holders(n)) {
                warn!(device = %id, inc = n, "promiscuity: {e}");
            }
        }
    }

    /// The port with interface index `ifindex`.
    pub(super) fn port_by_ifindex(&self, ifindex: u32) -> Option<DeviceId> {
        self.registry
            .devices()
            .of_kind(DeviceKind::Port)
            .find(|(_, d)| d.ifindex == Some(ifindex))
            .map(|(id, _)| id)
    }

    /// `link set DEV promisc on|off`: the operator's promiscuity, counted once.
    pub(super) fn link_promisc(&mut self, dev: &str, on: bool) -> Result<LinkChanged, String> {
        let Some((id, d)) = self.registry.devices().find(dev) else {
            return Err(format!("no link named {dev:?}"));
        };
        if d.kind != DeviceKind::Port {
            return Err(format!(
                "{dev} is a {:?}: promisc is set on ports only here",
                d.kind
            ));
        }
        let p = self.promisc_change(id, Change::Operator(on))?;
        info!(
            link = dev,
            on,
            count = p.count,
            "promisc set by the operator"
        );
        Ok(LinkChanged {
            ok: true,
            link: dev.to_owned(),
            promisc: p.count > 0,
            promiscuity: p.count,
            kernel_membership: self.plane.promisc.holds(id),
        })
    }
}
