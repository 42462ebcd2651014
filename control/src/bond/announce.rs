//! Peer notifications after a change of active member: gratuitous ARP, unsolicited NA and
//! re-announcement of the MACs seen behind the bond.

use std::time::{Duration, Instant};

use super::{Bond, FailOverMac};

/// What to send now, as decided by [`Bond::due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Member to send on (the active one).
    pub member: usize,
    /// Send a gratuitous ARP for each own IPv4 address.
    pub grat_arp: bool,
    /// Send an unsolicited NA for each own IPv6 address.
    pub unsol_na: bool,
    /// Re-announce the seen MACs.
    pub reannounce: bool,
    /// Source MAC of the appliance's own frames.
    pub mac: [u8; 6],
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) member: usize,
    pub(super) grat_arp_left: u32,
    pub(super) unsol_na_left: u32,
    pub(super) reannounce: bool,
    pub(super) next_at: Instant,
}

impl Bond {
    pub(super) fn schedule_notify(&mut self, member: usize, now: Instant) {
        let n = &self.opts.notify;
        self.pending = Some(Pending {
            member,
            grat_arp_left: n.num_grat_arp,
            unsol_na_left: n.num_unsol_na,
            reannounce: n.reannounce,
            next_at: now,
        });
    }

    /// The MAC the appliance's own frames carry now.
    pub fn own_mac(&self) -> [u8; 6] {
        let bond_mac = self
            .opts
            .mac
            .or_else(|| {
                self.members
                    .first()
                    .and_then(|m| crate::frames::parse_mac(&m.perm_mac))
            })
            .unwrap_or([0x02, 0, 0, 0, 0, 0]);
        match (self.opts.fail_over_mac, self.active) {
            (FailOverMac::Active, Some(a)) => {
                crate::frames::parse_mac(&self.members[a].perm_mac).unwrap_or(bond_mac)
            }
            _ => bond_mac,
        }
    }

    /// Peer notifications due at `now` (after a change of active member): one round per call,
    /// rounds spaced by `peer_notif_delay` (at least 10 ms). Re-announcement happens in the
    /// first round only, and at most once per `reannounce_min_interval`.
    pub fn due(&mut self, now: Instant) -> Option<Due> {
        let p = self.pending.as_mut()?;
        if now < p.next_at {
            return None;
        }
        if self.active != Some(p.member) {
            self.pending = None;
            return None;
        }
        let mut reannounce = std::mem::take(&mut p.reannounce);
        if reannounce {
            let min = self.opts.notify.reannounce_min_interval;
            if self
                .last_reannounce
                .is_some_and(|t| now.duration_since(t) < min)
            {
                reannounce = false;
                self.sent.rate_limited += 1;
            } else {
                self.last_reannounce = Some(now);
            }
        }
        let due = Due {
            member: p.member,
            grat_arp: p.grat_arp_left > 0,
            unsol_na: p.unsol_na_left > 0,
            reannounce,
            mac: [0; 6],
        };
        p.grat_arp_left = p.grat_arp_left.saturating_sub(1);
        p.unsol_na_left = p.unsol_na_left.saturating_sub(1);
        p.next_at = now
            + self
                .opts
                .notify
                .peer_notif_delay
                .max(Duration::from_millis(10));
        if p.grat_arp_left == 0 && p.unsol_na_left == 0 {
            self.pending = None;
        }
        Some(Due {
            mac: self.own_mac(),
            ..due
        })
    }
}
