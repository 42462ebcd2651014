//! The daemon's listeners on the registry: what follows a device's registration, its joining
//! or leaving a bond, its carrier and its removal.
//!
//! In call order (priority): `CrossConnects` (300) refuses what would leave a cross-connect
//! pointing at nothing; `Links` (200) keeps the rtnetlink thread's index of ports; `Bonding`
//! (100) changes the bond's state and retags the member's sockets on every worker; `Captures`
//! (0) keeps a running capture's promiscuity counts in step (queued for the daemon, which
//! applies them to the registry) and stops a capture whose device goes; `LinkTracking` (0) takes a bond's peer ports down while it has no active member.

use isopath_datapath::worker::WorkerCmd;
use tracing::{info, warn};

use super::{DevData, DevRegistry, Plane, lock};
use crate::{
    bond::{BondError, Member, MemberLink},
    registry::{self, DeviceId, DeviceKind, Errno, Event, Listener, OperState, Veto},
};

type Table = registry::Devices<DevData>;

/// Adds the daemon's listeners to `registry`.
pub(super) fn install(registry: &mut DevRegistry) {
    registry.listen(Box::new(CrossConnects), 300);
    registry.listen(Box::new(Links), 200);
    registry.listen(Box::new(Bonding), 100);
    registry.listen(Box::new(Captures), 0);
    registry.listen(Box::new(LinkTracking), 0);
}

/// Refuses to let an end of a cross-connect join a bond or be unregistered.
struct CrossConnects;

impl Listener<DevData, Plane> for CrossConnects {
    fn name(&self) -> &'static str {
        "cross-connects"
    }

    fn event(&mut self, ev: Event, devs: &Table, cx: &mut Plane) -> Result<(), Veto> {
        let (id, why) = match ev {
            // The kernel deleted the interface: nothing can keep it. The other end's frames
            // then go nowhere (`rx_drop_no_output`).
            Event::PreUnregister(id) if cx.forced => {
                if let Some(d) = devs.get(id).filter(|d| d.flags.cross_connected) {
                    warn!(port = %d.name, "a cross-connected port's interface was deleted: the other end's frames are dropped");
                }
                return Ok(());
            }
            Event::PreUnregister(id) => (id, "it cannot be unregistered while the daemon runs"),
            Event::Join { port, .. } => (port, "it cannot join a bond"),
            _ => return Ok(()),
        };
        match devs.get(id) {
            Some(d) if d.flags.cross_connected => Err(Veto::new(
                Errno::EBUSY,
                format!("{} is cross-connected: {why}", d.name),
            )),
            _ => Ok(()),
        }
    }
}

/// Keeps the link book's (name, ifindex, link state) of every port: what the rtnetlink
/// thread, which never sees the registry, applies carrier events to.
struct Links;

impl Listener<DevData, Plane> for Links {
    fn name(&self) -> &'static str {
        "links"
    }

    fn event(&mut self, ev: Event, devs: &Table, cx: &mut Plane) -> Result<(), Veto> {
        match ev {
            Event::Register(id) => {
                if let Some((d, p)) = devs.get(id).and_then(|d| Some((d, d.data.port()?)))
                    && let Some(ifindex) = d.ifindex
                {
                    lock(&cx.book)
                        .links
                        .push((d.name.clone(), ifindex, p.link.clone()));
                }
            }
            Event::Unregister(id) => {
                if let Some(ifindex) = devs.get(id).and_then(|d| d.ifindex) {
                    lock(&cx.book).links.retain(|l| l.1 != ifindex);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The bond's side of JOIN and LEAVE: the member enslaved in (or released from) the bond's
/// state, then every worker retags the port's sockets, then the peers are told of a new
/// active member if there is one.
struct Bonding;

impl Listener<DevData, Plane> for Bonding {
    fn name(&self) -> &'static str {
        "bonding"
    }

    fn event(&mut self, ev: Event, devs: &Table, cx: &mut Plane) -> Result<(), Veto> {
        let (port, bond, on) = match ev {
            Event::Join { port, bond } => (port, bond, true),
            Event::Leave { port, bond } => (port, bond, false),
            _ => return Ok(()),
        };
        let (Some(p), Some(bi)) = (devs.get(port), devs.get(bond).and_then(|b| b.data.bond()))
        else {
            return Ok(());
        };
        let name = p.name.as_str();
        let ifname = WorkerCmd::ifname(name).ok_or_else(|| {
            Veto::new(Errno::EINVAL, format!("{name:?}: interface name too long"))
        })?;
        let (now, wall) = (cx.turn.now, cx.turn.wall);
        let mut book = lock(&cx.book);
        let result = if on {
            let up = p.data.port().is_some_and(|io| io.link.is_up());
            let member = Member {
                name: name.to_owned(),
                ifindex: p.ifindex.unwrap_or_default(),
                link: if up { MemberLink::Up } else { MemberLink::Down },
                link_failures: 0,
                prio: 0,
                speed: 10_000,
                perm_mac: std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
                released: false,
            };
            book.bonds[bi].enslave(member, now, wall)
        } else {
            book.bonds[bi].release(name, now, wall)
        };
        book.publish();
        book.trace();
        let m = result.map_err(|e| {
            let errno = match e {
                BondError::AlreadyMember { .. } => Errno::EEXIST,
                BondError::Full { .. } => Errno::ENOSPC,
                BondError::NoMember { .. } => Errno::ENODEV,
                _ => Errno::EINVAL,
            };
            Veto::new(errno, e.to_string())
        })?;
        let cmd = WorkerCmd::SetMember {
            bond: bi,
            member: m,
            ifname,
            on,
        };
        if !cx.workers.iter().all(|w| w.handle.command(cmd)) {
            return Err(Veto::new(
                Errno::EAGAIN,
                "a worker's command queue is full; try again",
            ));
        }
        book.announce(now);
        Ok(())
    }
}

/// Captures follow devices: a capture on a bond holds a joining member promiscuous and lets a
/// leaving one go; a capture on a device that goes stops.
struct Captures;

impl Listener<DevData, Plane> for Captures {
    fn name(&self) -> &'static str {
        "captures"
    }

    fn event(&mut self, ev: Event, devs: &Table, cx: &mut Plane) -> Result<(), Veto> {
        let name = |id: DeviceId| devs.get(id).map(|d| d.name.as_str()).unwrap_or_default();
        match ev {
            Event::Join { port, bond } | Event::Leave { port, bond } => {
                let Some(ifindex) = devs.get(port).and_then(|d| d.ifindex) else {
                    return Ok(());
                };
                let Some(c) = cx.captures.iter_mut().find(|c| c.target == name(bond)) else {
                    return Ok(());
                };
                // Counted here, applied by the daemon once the registry call returns.
                let changed = if matches!(ev, Event::Leave { .. }) {
                    c.release(ifindex).then_some(-1)
                } else {
                    c.hold(ifindex).then_some(1)
                };
                if let Some(n) = changed {
                    cx.promisc.pending.push((port, n));
                }
            }
            Event::Unregister(id) => {
                if let Some(i) = cx.captures.iter().position(|c| c.target == name(id)) {
                    let c = cx.captures.remove(i);
                    // The ports it counted on give their holder back (a bond's members
                    // have left already: nothing is left counted then).
                    for &ifindex in c.held() {
                        if let Some((port, _)) = devs
                            .of_kind(DeviceKind::Port)
                            .find(|(_, d)| d.ifindex == Some(ifindex))
                        {
                            cx.promisc.pending.push((port, -1));
                        }
                    }
                    let v = c.stop();
                    info!(target = name(id), capture = %v, "capture stopped: port unregistered");
                }
                // A port's kernel membership goes with it (its count does too).
                cx.promisc.forget(id);
            }
            _ => {}
        }
        Ok(())
    }
}

/// A bond's link-state tracking: the ports that follow its carrier, and whether they are held
/// down now.
#[derive(Debug, Default)]
pub(super) struct Tracking {
    /// The peers' ifindexes.
    pub(super) peers: Vec<u32>,
    /// Whether they are held down.
    pub(super) held: bool,
}

impl Tracking {
    /// The bond's carrier is `bond_up`: `Some(up)` when the peers must be set `up` now (a
    /// failed set is not retried: the operator's or the peer's own state wins, as before).
    pub(super) fn follow(&mut self, bond_up: bool) -> Option<bool> {
        let down = !bond_up;
        if self.peers.is_empty() || down == self.held {
            return None;
        }
        self.held = down;
        Some(bond_up)
    }
}

/// Link-state tracking: a bond without an active member takes its peer ports down; they come
/// back with the first member. It acts on the bond's operational state, which the control
/// loop carries into the registry at every link tick (the rtnetlink thread holds no
/// capability at all, so it cannot do this itself).
struct LinkTracking;

impl Listener<DevData, Plane> for LinkTracking {
    fn name(&self) -> &'static str {
        "link-state tracking"
    }

    fn event(&mut self, ev: Event, devs: &Table, cx: &mut Plane) -> Result<(), Veto> {
        let (Event::Register(id) | Event::Change(id)) = ev else {
            return Ok(());
        };
        let Some(d) = devs.get(id).filter(|d| d.kind == DeviceKind::Bond) else {
            return Ok(());
        };
        let Some(t) = d.data.bond().and_then(|bi| cx.tracking.get_mut(bi)) else {
            return Ok(());
        };
        let Some(up) = t.follow(d.operstate == OperState::Up) else {
            return Ok(());
        };
        for &ifindex in &t.peers {
            match set_link_up(ifindex, up) {
                Ok(()) => info!(bond = %d.name, ifindex, up, "link-state tracking"),
                Err(e) => warn!(bond = %d.name, ifindex, "link-state tracking: {e}"),
            }
        }
        Ok(())
    }
}

impl Plane {
    /// Gives back every port held down by link-state tracking, and stops tracking (at stop:
    /// the port's own up event must not make the still-memberless bond take it down again).
    pub(super) fn release_tracking(&mut self) {
        for t in &mut self.tracking {
            let peers = std::mem::take(&mut t.peers);
            if std::mem::take(&mut t.held) {
                for ifindex in peers {
                    let _ = set_link_up(ifindex, true);
                }
            }
        }
    }
}

/// Sets a port administratively up or down with CAP_NET_ADMIN raised for the call only (it is
/// permitted but not effective after start-up).
fn set_link_up(ifindex: u32, up: bool) -> std::io::Result<()> {
    let admin = crate::privs::need(caps::Capability::CAP_NET_ADMIN);
    crate::privs::with_effective(admin.as_slice(), || {
        crate::netlink::set_link_up(ifindex, up)
    })
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::Tracking;

    #[test]
    fn tracking_takes_peers_down_once_and_back_with_the_first_member() {
        let mut t = Tracking {
            peers: vec![7, 8],
            held: false,
        };
        assert_eq!(t.follow(true), None, "an up bond leaves its peers alone");
        assert_eq!(t.follow(false), Some(false));
        assert!(t.held);
        assert_eq!(t.follow(false), None, "held down already");
        assert_eq!(t.follow(true), Some(true));
        assert_eq!(t.follow(true), None);
        let mut none = Tracking::default();
        assert_eq!(none.follow(false), None, "no peers, nothing to do");
    }
}
