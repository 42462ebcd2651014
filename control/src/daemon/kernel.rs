//! What the kernel does to a port's interface underneath the daemon: deleted (`RTM_DELLINK`,
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
            // A stale event (the name is back on the same index) changes nothing.
            if host.ifindex(&name) == Some(ifindex) {
                continue;
            }
            self.port_gone(id, &name, ifindex);
        }
    }

    /// Ports the link poll finds without their interface (the event may have been lost).
    pub(super) fn poll_gone(&self, host: &dyn Host) {
        let gone: Vec<u32> = self
            .registry
            .devices()
            .of_kind(DeviceKind::Port)
            .filter_map(|(_, d)| {
                let ifindex = d.ifindex?;
                (host.carrier(&d.name).is_none() && host.ifindex(&d.name) != Some(ifindex))
                    .then_some(ifindex)
            })
            .collect();
        if !gone.is_empty() {
            lock(&self.kernel_deleted).extend(gone);
        }
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
        if self.link_history.len() == LINK_HISTORY {
            self.link_history.pop_front();
        }
        self.link_history.push_back(KernelLinkEvent {
            unix_ns: self.plane.turn.wall_ns(),
            port: name.to_owned(),
            ifindex,
            event: "deleted".to_owned(),
            detail,
        });
    }
}
