//! What the kernel does to a port's interface underneath the daemon: renamed (recorded, the port
//! keeps its name: see [`Daemon::poll_gone`]), or deleted (`RTM_DELLINK`,
//! or a namespace move, which the old namespace sees as one), the port is unregistered as a
//! batch of one, with nothing able to veto it (the interface is gone either way): it leaves its
//! bond, its flows are flushed, its captures stop, its sockets close and their frames come back.
//! The daemon keeps running, logs it and records it in the status (`lifecycle.kernel_events`)
//! and, through the registry's listener, as a `DELLINK` on the netlink socket's `links` group.

use tracing::warn;

use super::{Daemon, LINK_HISTORY, lock};
use crate::{
    host::Host,
    registry::{DeviceId, DeviceKind},
    status::KernelLinkEvent,
};

impl Daemon {
    /// Unregisters the ports whose interface the rtnetlink thread saw deleted, and, as the
    /// safety net behind lost events, those the link poll found gone (`poll_links`).
    pub(super) fn kernel_links(&mut self, host: &dyn Host) {
        let mut gone = std::mem::take(&mut *lock(&self.kernel_deleted));
        if gone.is_empty() {
            return;
        }
        gone.sort_unstable();
        gone.dedup();
        for ifindex in gone {
            let Some(id) = self.port_by_ifindex(ifindex) else {
                continue;
            };
            let Some(name) = self.registry.devices().get(id).map(|d| d.name.clone()) else {
                continue;
            };
            // A stale event (the interface is still there) changes nothing.
            if host.ifindex(&name) == Some(ifindex) || host.name_of(ifindex).is_some() {
                continue;
            }
            self.port_gone(id, &name, ifindex);
        }
    }

    /// Ports the link poll finds without their interface (the event may have been lost), and
    /// those whose interface was renamed (CHANGENAME): a renamed port keeps its name here (its
    /// sockets and the workers know it by that name), its carrier then comes from rtnetlink
    /// events only (the sysfs poll reads by name), and the rename is recorded once.
    pub(super) fn poll_gone(&mut self, host: &dyn Host) {
        let lost: Vec<(DeviceId, String, u32)> = self
            .registry
            .devices()
            .of_kind(DeviceKind::Port)
            .filter(|(id, _)| !self.renamed.contains_key(id))
            .filter_map(|(id, d)| {
                let ifindex = d.ifindex?;
                (host.carrier(&d.name).is_none() && host.ifindex(&d.name) != Some(ifindex))
                    .then(|| (id, d.name.clone(), ifindex))
            })
            .collect();
        for (id, name, ifindex) in lost {
            match host.name_of(ifindex) {
                Some(new) => {
                    warn!(
                        port = %name,
                        ifindex,
                        new = %new,
                        "the kernel renamed the port's interface: it keeps its name here"
                    );
                    self.renamed.insert(id, new.clone());
                    self.record(
                        &name,
                        ifindex,
                        "renamed",
                        format!("now {new} in the kernel; the port keeps its name here, carrier from rtnetlink events only"),
                    );
                }
                None => lock(&self.kernel_deleted).push(ifindex),
            }
        }
    }

    /// Records what the kernel did to a port (the status keeps the last [`LINK_HISTORY`]).
    fn record(&mut self, port: &str, ifindex: u32, event: &str, detail: String) {
        if self.link_history.len() == LINK_HISTORY {
            self.link_history.pop_front();
        }
        self.link_history.push_back(KernelLinkEvent {
            unix_ns: self.plane.turn.wall_ns(),
            port: port.to_owned(),
            ifindex,
            event: event.to_owned(),
            detail,
        });
    }

    /// Unregisters port `id` (interface `ifindex`, deleted by the kernel) as a batch of one,
    /// vetoes overridden.
    fn port_gone(&mut self, id: DeviceId, name: &str, ifindex: u32) {
        let now = self.plane.turn.now;
        self.plane.forced = true;
        let r = self.registry.unregister_many(&[id], now, &mut self.plane);
        self.plane.forced = false;
        self.settle_promisc();
        let detail = match r {
            Ok(_) => "unregistered as a batch of one: left its bond, flows flushed, captures stopped, sockets closed".to_owned(),
            Err(e) => format!("could not be unregistered: {e}"),
        };
        warn!(
            port = name,
            ifindex, "the kernel deleted the port's interface (RTM_DELLINK): {detail}"
        );
        self.kernel_deleted_total += 1;
        self.renamed.remove(&id);
        self.record(name, ifindex, "deleted", detail);
    }
}

impl Daemon {
    /// Reads the ports' MTUs again when the rtnetlink thread saw a link change (and every
    /// [`super::MTU_POLL`] regardless): a changed MTU is recorded in the registry; one larger
    /// than the frames hold ([`Daemon::max_mtu`]) takes the port down with that reason (its
    /// carrier counts as down: a bond fails over, TX to it is dropped as `tx_drop_link_down`),
    /// and one that fits again brings it back.
    pub(super) fn kernel_mtus(&mut self) {
        let now = self.plane.turn.now;
        let event = self
            .links_changed
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if !event && now.duration_since(self.mtu_read) < super::MTU_POLL {
            return;
        }
        self.mtu_read = now;
        let ports: Vec<(DeviceId, String, u32, Option<u32>)> = self
            .registry
            .devices()
            .of_kind(DeviceKind::Port)
            .filter(|(id, _)| !self.renamed.contains_key(id))
            .filter_map(|(id, d)| Some((id, d.name.clone(), d.ifindex?, d.mtu)))
            .collect();
        for (id, name, ifindex, was) in ports {
            let Some(mtu) = super::start::sysfs_mtu(&name) else {
                continue;
            };
            if was != Some(mtu) {
                let _ = self.registry.set_mtu(id, mtu, &mut self.plane);
            }
            let too_big = mtu > self.max_mtu;
            let held = self.mtu_down.contains_key(&name);
            let (now, wall) = (self.plane.turn.now, self.plane.turn.wall);
            if too_big && !held {
                let reason = format!(
                    "mtu {mtu} is larger than the frames hold ({}): taken down",
                    self.max_mtu
                );
                warn!(port = %name, ifindex, "{reason}");
                let mut book = lock(&self.plane.book);
                book.held_down.push(ifindex);
                book.carrier(ifindex, false, now, wall);
                drop(book);
                self.mtu_down.insert(name.clone(), reason.clone());
                self.record(&name, ifindex, "mtu", reason);
            } else if !too_big && held {
                let mut book = lock(&self.plane.book);
                book.held_down.retain(|&i| i != ifindex);
                drop(book);
                // The carrier comes back with the next link poll (10 ms) or event.
                self.mtu_down.remove(&name);
                let detail = format!("mtu {mtu} fits the frames again: back up");
                warn!(port = %name, ifindex, "{detail}");
                self.record(&name, ifindex, "mtu", detail);
            }
        }
    }
}
