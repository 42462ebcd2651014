//! Bond commands at run time: `bond add`/`release`, `bond set`, `bond switch`.

use isopath_datapath::worker::WorkerCmd;

use super::{Daemon, Turn, lock};
use crate::{
    bond::BondError,
    registry::{DeviceKind, RegistryError},
    request::{MemberChanged, OptionSet, Switched},
};

impl Daemon {
    /// Adds port `name` to bond `bond`, or releases it, at run time, through the registry
    /// (JOIN or LEAVE): its listeners change the bond's state, have every worker retag the
    /// port's sockets and keep a capture on the bond in step.
    pub(super) fn bond_member(
        &mut self,
        bond: &str,
        name: &str,
        on: bool,
    ) -> Result<MemberChanged, String> {
        let err = Err;
        let known_bond = self.registry.devices().id_of(bond, DeviceKind::Bond);
        let Some(port) = self.registry.devices().id_of(name, DeviceKind::Port) else {
            return err(format!("no port named {name:?}"));
        };
        if WorkerCmd::ifname(name).is_none() {
            return err(format!("{name:?}: interface name too long"));
        }
        let Some(bond_id) = known_bond else {
            return err(format!("no bond named {bond:?}"));
        };
        let changed = if on {
            self.registry.join(port, bond_id, &mut self.plane)
        } else {
            self.registry.leave(port, bond_id, &mut self.plane)
        };
        let (bond_s, member) = (bond.to_owned(), name.to_owned());
        match changed {
            Ok(()) => {}
            Err(RegistryError::AlreadyMember { .. }) => {
                return err(BondError::AlreadyMember {
                    bond: bond_s,
                    member,
                }
                .to_string());
            }
            Err(RegistryError::NotMember { .. }) => {
                return err(BondError::NoMember {
                    bond: bond_s,
                    member,
                }
                .to_string());
            }
            Err(e) => return err(e.to_string()),
        }
        // The member's index in the bond (its slot in the datapath's member table).
        let index = lock(&self.plane.book)
            .bonds
            .iter()
            .find(|b| b.name == bond)
            .and_then(|b| b.members.iter().position(|m| m.name == name))
            .unwrap_or_default();
        Ok(MemberChanged {
            ok: true,
            bond: bond.to_owned(),
            member: name.to_owned(),
            index,
            added: on,
        })
    }

    pub(super) fn bond_set(&self, bond: &str, key: &str, value: &str) -> Result<OptionSet, String> {
        let mut book = lock(&self.plane.book);
        let Some(b) = book.bonds.iter_mut().find(|b| b.name == bond) else {
            return Err(format!("no bond named {bond:?}"));
        };
        let Turn { now, wall } = self.plane.turn;
        let result = b.set_option(key, value, now, wall);
        book.publish();
        book.trace();
        book.announce(now);
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
        let mut book = lock(&self.plane.book);
        let Some(b) = book.bonds.iter_mut().find(|b| b.name == bond) else {
            return Err(format!("no bond named {bond:?}"));
        };
        let Turn { now, wall } = self.plane.turn;
        let result = b.switch_to(member, now, wall);
        book.publish();
        book.trace();
        book.announce(now);
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
