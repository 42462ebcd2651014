//! Bond commands at run time: `bond add`/`release`, `bond set`, `bond switch`.

use std::time::{Instant, SystemTime};

use isopath_datapath::worker::WorkerCmd;
use tracing::warn;

use super::{Daemon, lock};
use crate::{
    bond::{Member, MemberLink},
    host::Host,
    request::{MemberChanged, OptionSet, Switched},
};

impl Daemon {
    /// Adds port `name` to bond `bond`, or releases it, at run time: the bond's state first,
    /// then every worker retags the port's sockets. An interface that is not a port yet is
    /// added as one first (as `ip link set IF master BOND` takes any interface).
    pub(super) fn bond_member(
        &mut self,
        bond: &str,
        name: &str,
        on: bool,
        host: &dyn Host,
    ) -> Result<MemberChanged, String> {
        let err = Err;
        let known_bond = lock(&self.book).bonds.iter().any(|b| b.name == bond);
        if on
            && known_bond
            && !self.ports.iter().any(|p| p.name == name)
            && let Err(e) = self.port_add(name, host)
        {
            return err(e);
        }
        let Some(port) = self.ports.iter().find(|p| p.name == name) else {
            return err(format!("no port named {name:?}"));
        };
        let Some(ifname) = WorkerCmd::ifname(name) else {
            return err(format!("{name:?}: interface name too long"));
        };
        let mut book = lock(&self.book);
        let Some(bi) = book.bonds.iter().position(|b| b.name == bond) else {
            return err(format!("no bond named {bond:?}"));
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let result = if on {
            if self.connected.iter().any(|c| c == name) {
                return err(format!("{name} is cross-connected: it cannot join a bond"));
            }
            let other =
                book.bonds.iter().enumerate().any(|(j, b)| {
                    j != bi && b.members.iter().any(|m| m.name == name && !m.released)
                });
            if other {
                return err(format!("{name} is a member of another bond"));
            }
            let up = port.link.is_up();
            let member = Member {
                name: name.to_owned(),
                ifindex: port.ifindex,
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
        book.bonds[bi].trace_events();
        let m = match result {
            Ok(m) => m,
            Err(e) => return err(e.to_string()),
        };
        let cmd = WorkerCmd::SetMember {
            bond: bi,
            member: m,
            ifname,
            on,
        };
        if !self.workers.iter().all(|w| w.handle.command(cmd)) {
            return err("a worker's command queue is full; try again".into());
        }
        book.announce(now);
        drop(book);
        // The bond's capture target spans its members: future captures see the change, and a
        // capture running on the bond holds a new member promiscuous too.
        let ifindex = port.ifindex;
        if let Some((_, _, members)) = self.taps.iter_mut().find(|t| t.0 == bond) {
            members.retain(|&i| i != ifindex);
            if on {
                members.push(ifindex);
            }
        }
        if !on && let Some(c) = self.captures.iter_mut().find(|c| c.target == bond) {
            c.release(ifindex);
        }
        if on && let Some(c) = self.captures.iter_mut().find(|c| c.target == bond) {
            let net_raw = crate::privs::need(caps::Capability::CAP_NET_RAW);
            let held = crate::privs::with_effective(net_raw.as_slice(), || c.hold(ifindex));
            if !matches!(held, Ok(Ok(()))) {
                warn!(
                    bond,
                    port = name,
                    "the running capture could not hold the new member promiscuous"
                );
            }
        }
        Ok(MemberChanged {
            ok: true,
            bond: bond.to_owned(),
            member: name.to_owned(),
            index: m,
            added: on,
        })
    }

    pub(super) fn bond_set(&self, bond: &str, key: &str, value: &str) -> Result<OptionSet, String> {
        let mut book = lock(&self.book);
        let Some(b) = book.bonds.iter_mut().find(|b| b.name == bond) else {
            return Err(format!("no bond named {bond:?}"));
        };
        let result = b.set_option(key, value, Instant::now(), SystemTime::now());
        b.trace_events();
        book.announce(Instant::now());
        match result {
            Ok(()) => Ok(OptionSet {
                ok: true,
                option: key.to_owned(),
                value: value.to_owned(),
            }),
            Err(e) => Err(format!("{bond}: {e}")),
        }
    }

    pub(super) fn bond_switch(&self, bond: &str, member: &str) -> Result<Switched, String> {
        let mut book = lock(&self.book);
        let Some(b) = book.bonds.iter_mut().find(|b| b.name == bond) else {
            return Err(format!("no bond named {bond:?}"));
        };
        let result = b.switch_to(member, Instant::now(), SystemTime::now());
        b.trace_events();
        book.announce(Instant::now());
        match result {
            Ok(changed) => Ok(Switched {
                ok: true,
                changed,
                active: member.to_owned(),
            }),
            Err(e) => Err(e.to_string()),
        }
    }
}
