//! The ARP/NS monitor (Linux's `arp_interval`, `arp_ip_target`, `ns_ip6_target`): what
//! members heard, and where to probe.

use std::time::{Duration, Instant, SystemTime};

use super::{ArpValidate, Bond, MemberLink};

/// An ARP frame a member received, as the monitor needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpSeen {
    /// Sender IP.
    pub spa: std::net::Ipv4Addr,
    /// Target IP.
    pub tpa: std::net::Ipv4Addr,
    /// Sender MAC.
    pub sha: [u8; 6],
    /// A reply.
    pub reply: bool,
}

/// The monitor's record of one member.
#[derive(Debug, Clone)]
pub(super) struct ArpRecord {
    /// Last reply (or ARP) from each target.
    pub(super) target: Vec<Option<Instant>>,
    /// Last ARP of any kind.
    pub(super) any: Option<Instant>,
    /// Last validated ARP for a backup: our own probe seen again, or a target's ARP.
    pub(super) validated: Option<Instant>,
}

/// Probes to send now: ARP requests for `targets` and NS for `ns_targets` on `member`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpProbe {
    /// The member to send on.
    pub member: usize,
    /// The IPv4 targets.
    pub targets: Vec<std::net::Ipv4Addr>,
    /// The IPv6 targets.
    pub ns_targets: Vec<std::net::Ipv6Addr>,
}

impl Bond {
    /// A member that just became active has not been probing: it gets `arp_missed_max`
    /// intervals to show replies before the ARP monitor judges it (Linux does the same).
    pub(super) fn arp_grace(&mut self, m: Option<usize>, now: Instant) {
        if let Some(rec) = m.and_then(|m| self.arp.get_mut(m)) {
            rec.target.iter_mut().for_each(|t| *t = Some(now));
            rec.any = Some(now);
        }
    }
    /// Records an ARP frame received on member `m` (ARP monitor).
    pub fn arp_rx(&mut self, m: usize, seen: &ArpSeen, now: Instant) {
        let Some(opts) = &self.opts.arp else { return };
        let own = self.own_mac();
        let Some(rec) = self.arp.get_mut(m) else {
            return;
        };
        rec.any = Some(now);
        if let Some(t) = opts.targets.iter().position(|&t| t == seen.spa) {
            rec.target[t] = Some(now);
            rec.validated = Some(now);
        } else if seen.sha == own && !seen.reply && opts.targets.contains(&seen.tpa) {
            // One of our probes, flooded back to this member by the switch: its path works.
            rec.validated = Some(now);
        }
    }

    /// Records a neighbour advertisement (or solicitation) received on member `m` from
    /// `target`: the IPv6 half of the monitor (`ns_ip6_target`).
    pub fn nd_rx(&mut self, m: usize, from: std::net::Ipv6Addr, advert: bool, now: Instant) {
        let Some(opts) = &self.opts.arp else { return };
        let Some(rec) = self.arp.get_mut(m) else {
            return;
        };
        rec.any = Some(now);
        if let Some(t) = opts.ns_targets.iter().position(|&t| t == from)
            && advert
        {
            rec.target[opts.targets.len() + t] = Some(now);
            rec.validated = Some(now);
        }
    }

    /// The ARP monitor's period: judges every member on the proof it got within
    /// `arp_missed_max` intervals, then says where to probe (the active member; with none,
    /// each member in turn, as Linux does). Returns `None` between periods or without ARP.
    pub fn arp_tick(&mut self, now: Instant, wall: SystemTime) -> Option<ArpProbe> {
        let opts = self.opts.arp.clone()?;
        if self.arp_next.is_some_and(|t| now < t) {
            return None;
        }
        self.arp_next = Some(now + opts.interval);
        // Half an interval of slack: a reply to the last probe may still be on its way.
        let window = opts.interval * opts.missed_max + opts.interval / 2;
        // A backup gets one interval more than the active member, as in Linux's
        // `bond_ab_arp_inspect` (`missed_max + 1` for a slave that is not active): what a backup
        // hears is mostly the active member's probes flooded back by the switch, so when the
        // active member's path dies the backup goes quiet at the same instant, a little
        // *earlier* than the active member's last reply. With equal windows both would expire
        // in the same period and the bond would fall to no member instead of failing over.
        let backup_window = window + opts.interval;
        let fresh_in = |t: Option<Instant>, w: Duration| {
            t.is_some_and(|t| now.saturating_duration_since(t) <= w)
        };
        let verdicts: Vec<bool> = (0..self.members.len())
            .map(|m| {
                let rec = &self.arp[m];
                let active = self.active == Some(m);
                let w = if active { window } else { backup_window };
                let fresh = |t: Option<Instant>| fresh_in(t, w);
                let replies = if opts.all_targets {
                    rec.target.iter().all(|&t| fresh(t))
                } else {
                    rec.target.iter().any(|&t| fresh(t))
                };
                match (active, opts.validate) {
                    (true, ArpValidate::Active | ArpValidate::All) => replies,
                    (false, ArpValidate::Backup | ArpValidate::All) => fresh(rec.validated),
                    _ => fresh(rec.any),
                }
            })
            .collect();
        // The period in which the active member fails judges no backup down: what the
        // backups heard was the active member's probes, which stopped with its path. The extra
        // interval of `backup_window` orders the two verdicts only while the periods run on
        // time; a period that runs late (a busy core) sees both windows expired at once, and
        // the bond would fall to no member instead of failing over. Linux's
        // `bond_ab_arp_inspect` likewise takes only the active slave down while it searches
        // for a new one. A backup that is dead too fails when its grace as the new active member runs out.
        let judged_active = self.active;
        let active_fails =
            judged_active.is_some_and(|a| !verdicts[a] && self.members[a].link.counts_up());
        // The active member first: its failure selects among the backups still up.
        let order = judged_active
            .into_iter()
            .chain((0..self.members.len()).filter(|&m| Some(m) != judged_active));
        for m in order {
            let alive = verdicts[m];
            if !alive && active_fails && Some(m) != judged_active {
                // Judged again next period, on the new active member's probes.
                continue;
            }
            let next = if alive {
                MemberLink::Up
            } else {
                MemberLink::Down
            };
            if self.members[m].link.counts_up() != alive {
                self.set_link(m, next, now, wall);
            }
        }
        let member = match self.active {
            Some(a) => a,
            None => {
                self.arp_rr = (self.arp_rr + 1) % self.members.len().max(1);
                self.arp_rr
            }
        };
        Some(ArpProbe {
            member,
            targets: opts.targets.clone(),
            ns_targets: opts.ns_targets.clone(),
        })
    }
}
