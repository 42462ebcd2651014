//! The bond's status view.

use crate::status::{
    BondDrops, BondOptionsStatus, BondStatus, EventStatus, Link, MemberState, MemberStatus,
    NotifyStatus, VlanStatus,
};

use super::Bond;

impl Bond {
    /// The status view (like `/proc/net/bonding/bond0`); the workers' counters of the bond
    /// (`tx_packets`, `to_control`, `drops`) are the caller's to fill in.
    pub fn status(&self) -> BondStatus {
        let members = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| MemberStatus {
                name: m.name.clone(),
                link: m.link.name().to_owned(),
                state: if m.released {
                    MemberState::Released
                } else if self.active == Some(i) {
                    MemberState::Active
                } else if self.draining.is_some_and(|(d, _)| d == i) {
                    MemberState::Draining
                } else {
                    MemberState::Backup
                },
                link_failures: m.link_failures,
                prio: m.prio,
                speed_mbps: m.speed,
                perm_mac: m.perm_mac.clone(),
            })
            .collect();
        let events = self
            .events
            .iter()
            .map(|e| EventStatus {
                unix_ns: e.unix_ns,
                kind: e.kind,
                member: e.member.clone(),
                detail: e.detail.clone(),
            })
            .collect();
        let o = &self.opts;
        let arp = o.arp.as_ref();
        BondStatus {
            name: self.name.clone(),
            mode: "active-backup".to_owned(),
            carrier: Link::from_up(self.active.is_some()),
            active: self.active.map(|a| self.members[a].name.clone()),
            failovers: self.failovers,
            options: BondOptionsStatus {
                miimon_ms: o.miimon.as_millis() as u64,
                updelay_ms: o.updelay.as_millis() as u64,
                downdelay_ms: o.downdelay.as_millis() as u64,
                primary: o.primary.map(|p| self.members[p].name.clone()),
                primary_reselect: o.primary_reselect,
                all_members_active: o.all_members_active,
                drain_ms: o.drain.as_millis() as u64,
                fail_over_mac: o.fail_over_mac,
                num_grat_arp: o.notify.num_grat_arp,
                num_unsol_na: o.notify.num_unsol_na,
                peer_notif_delay_ms: o.notify.peer_notif_delay.as_millis() as u64,
                reannounce: o.notify.reannounce,
                reannounce_table: o.notify.reannounce_table,
                reannounce_max_age_s: o.notify.reannounce_max_age_s,
                arp_interval_ms: arp.map(|a| a.interval.as_millis() as u64),
                arp_ip_target: arp.map(|a| a.targets.iter().map(|t| t.to_string()).collect()),
                arp_validate: arp.map(|a| a.validate),
                arp_all_targets: arp.map(|a| if a.all_targets { "all" } else { "any" }.to_owned()),
                arp_missed_max: arp.map(|a| a.missed_max),
            },
            mac: crate::frames::fmt_mac(&self.own_mac()),
            addresses: o.addresses.iter().map(|a| a.to_string()).collect(),
            vlans: o
                .vlans
                .iter()
                .map(|(id, addrs)| VlanStatus {
                    id: *id,
                    addresses: addrs.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
            notifications: NotifyStatus {
                grat_arp: self.sent.grat_arp,
                mailbox_full: self.sent.mailbox_full,
                rate_limited: self.sent.rate_limited,
                reannounced: self.sent.reannounced,
                unsol_na: self.sent.unsol_na,
            },
            members,
            events,
            tx_packets: 0,
            to_control: 0,
            drops: BondDrops::default(),
        }
    }
}
