//! The link book: link states and bonds, what carrier events change, and what the bonds send
//! (ARP/NS answers and probes, peer announcements). Link-state tracking, which follows a
//! bond's carrier, is a listener on the registry (`listeners`).

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use isopath_datapath::{
    bond::{BondShared, Inject, Mailbox, Punt, SeenMacs},
    stats::LinkState,
};
use tracing::info;

use crate::{
    bond::{ArpSeen, Bond},
    frames,
};

#[cfg(test)]
mod tests;

/// Queues `frame` for a worker to send on bond member `member`; false if it does not fit or
/// the mailbox is full.
fn enqueue(mailbox: &Mailbox, member: usize, frame: &[u8]) -> bool {
    Inject::new(member, frame).is_some_and(|i| mailbox.push(i).is_ok())
}

/// Link states and bonds: what carrier events change. One lock (the daemon's RTNL): taken by
/// the rtnetlink thread, the miimon poll and control commands, never by a worker.
pub(super) struct LinkBook {
    /// (name, ifindex, link state) of every port: the rtnetlink thread's index of the
    /// registry's ports, kept by the `Links` listener.
    pub(super) links: Vec<(String, u32, Arc<LinkState>)>,
    pub(super) bonds: Vec<Bond>,
    /// Per bond: the view its workers act on, published after every change of the bond.
    pub(super) shared: Vec<Arc<BondShared>>,
    /// Per bond: the mailbox workers send from, and the MACs they saw behind the bond.
    pub(super) outboxes: Vec<(Arc<Mailbox>, Option<Arc<SeenMacs>>)>,
    /// Per bond: what workers hand to control (ARP, frames to the bond's own MAC).
    pub(super) punts: Vec<Arc<Punt>>,
    /// The bonds' events since the control loop last took them (for the netlink-format
    /// socket's `bonds` group), at most [`MAX_EVENTS_OUT`]: older ones are dropped and counted.
    pub(super) events_out: Vec<(String, crate::bond::Event)>,
    /// Events dropped from `events_out`.
    pub(super) events_out_lost: u64,
    /// Ports (by ifindex) held down whatever their carrier says (an MTU the frames cannot
    /// hold): carrier reports count as down for them.
    pub(super) held_down: Vec<u32>,
}

/// Most bond events kept for the control loop between two of its turns.
pub(super) const MAX_EVENTS_OUT: usize = 1024;

impl LinkBook {
    /// A carrier report for `ifindex` (rtnetlink or miimon), at `now` (`wall` stamps the
    /// bond's events).
    pub(super) fn carrier(&mut self, ifindex: u32, up: bool, now: Instant, wall: SystemTime) {
        let up = up && !self.held_down.contains(&ifindex);
        // The bond first: moving traffic off a dead member is what is urgent; the port's own
        // link flag (which makes the worker drop instead of send into it) comes next, and
        // logging only after both.
        for b in &mut self.bonds {
            if let Some(m) = b.member_by_ifindex(ifindex) {
                b.carrier(m, up, now, wall);
            }
        }
        self.publish();
        let mut changed = None;
        for (name, idx, link) in &self.links {
            if *idx == ifindex && link.is_up() != up {
                link.set(up);
                changed = Some(name.clone());
            }
        }
        self.announce(now);
        // Link-state tracking is not done here: this runs on the rtnetlink thread, which holds
        // no capability at all; the control thread applies it on its next link tick (10 ms).
        if let Some(name) = changed {
            info!(port = %name, up, "link state changed");
        }
        self.trace();
    }

    /// Publishes every bond's view to its workers (one atomic store each).
    pub(super) fn publish(&self) {
        for (b, shared) in self.bonds.iter().zip(&self.shared) {
            shared.set(b.view());
        }
    }

    /// Logs the bonds' events recorded since the last call (after publishing: a log write
    /// never sits between a carrier loss and the failover).
    pub(super) fn trace(&mut self) {
        for b in &mut self.bonds {
            let name = b.name.clone();
            for e in b.untraced() {
                let member = e.member.as_deref().unwrap_or("-");
                info!(bond = %name, kind = e.kind.name(), member, detail = %e.detail, "bond event");
                if self.events_out.len() >= MAX_EVENTS_OUT {
                    self.events_out.remove(0);
                    self.events_out_lost += 1;
                }
                self.events_out.push((name.clone(), e.clone()));
            }
        }
    }

    /// Handles what the workers handed over (ARP monitor evidence, ARP requests and pings for
    /// the bond's own addresses), then runs the ARP monitors' periods.
    pub(super) fn control_frames(&mut self, now: Instant, wall: SystemTime) {
        for (bi, punt) in self.punts.iter().enumerate() {
            let b = &mut self.bonds[bi];
            let mailbox = &self.outboxes[bi].0;
            // The appliance's addresses per VLAN (None: untagged, on the bond itself).
            let own: Vec<(
                Option<u16>,
                Vec<std::net::Ipv4Addr>,
                Vec<std::net::Ipv6Addr>,
            )> = std::iter::once((None, &b.opts.addresses))
                .chain(b.opts.vlans.iter().map(|(id, a)| (Some(*id), a)))
                .map(|(vid, addrs)| {
                    let v4 = addrs
                        .iter()
                        .filter_map(|a| match a {
                            IpAddr::V4(v) => Some(*v),
                            IpAddr::V6(_) => None,
                        })
                        .collect();
                    let v6 = addrs
                        .iter()
                        .filter_map(|a| match a {
                            IpAddr::V6(v) => Some(*v),
                            IpAddr::V4(_) => None,
                        })
                        .collect();
                    (vid, v4, v6)
                })
                .collect();
            let (own4, own6) = (&own[0].1, &own[0].2);
            let mac = b.own_mac();
            let mut answers = Vec::new();
            while let Some(p) = punt.queue.pop() {
                let m = usize::from(p.member);
                // A frame on a VLAN is read untagged, checked against that VLAN's addresses,
                // and answered on the same VLAN; a VLAN not configured has none.
                let (vid, f) = frames::untag(p.frame());
                let f = &f[..];
                let (own4, own6) = match own.iter().find(|o| o.0 == vid) {
                    Some((_, v4, v6)) => (&v4[..], &v6[..]),
                    None => (&[][..], &[][..]),
                };
                let before = answers.len();
                if let Some(arp) = frames::parse_arp(f) {
                    let seen = ArpSeen {
                        spa: arp.spa,
                        tpa: arp.tpa,
                        sha: arp.sha,
                        reply: arp.op == 2,
                    };
                    b.arp_rx(m, &seen, now);
                    // Requests for our own addresses, answered through the active member.
                    if arp.op == 1 && own4.contains(&arp.tpa) && arp.sha != mac {
                        answers.push(frames::arp_reply(mac, &arp));
                    }
                } else if let Some(nd) = frames::parse_nd(f) {
                    b.nd_rx(m, nd.src, nd.kind == 136, now);
                    // Solicitations for our own IPv6 addresses.
                    if nd.kind == 135 && own6.contains(&nd.target) && nd.src_mac != mac {
                        answers.push(frames::solicited_na(mac, nd.target, &nd));
                    }
                } else if let Some(r) = frames::icmp_echo_reply(f, mac, own4) {
                    answers.push(r);
                } else if let Some(r) = frames::icmpv6_echo_reply(f, mac, own6) {
                    answers.push(r);
                }
                if let Some(a) = answers.get_mut(before) {
                    *a = frames::tag(std::mem::take(a), vid);
                }
            }
            if let Some(active) = b.active() {
                for a in answers {
                    if !enqueue(mailbox, active, &a) {
                        b.sent.mailbox_full += 1;
                    }
                }
            }
            let probe = b.arp_tick(now, wall);
            self.shared[bi].set(b.view());
            if let Some(probe) = probe {
                let mut reqs = Vec::new();
                if let Some(&src) = own4.first() {
                    reqs.extend(
                        probe
                            .targets
                            .iter()
                            .map(|&t| frames::arp_request(mac, src, t)),
                    );
                }
                if let Some(&src) = own6.first() {
                    reqs.extend(
                        probe
                            .ns_targets
                            .iter()
                            .map(|&t| frames::neighbour_solicitation(mac, src, t)),
                    );
                }
                for req in reqs {
                    if !enqueue(mailbox, probe.member, &req) {
                        b.sent.mailbox_full += 1;
                    }
                }
            }
        }
    }

    /// Queues the peer notifications that are due: gratuitous ARP and unsolicited NA for the
    /// bond's own addresses, and one announcement per MAC seen behind the bond.
    pub(super) fn announce(&mut self, now: Instant) {
        for (b, (mailbox, seen)) in self.bonds.iter_mut().zip(&self.outboxes) {
            while let Some(due) = b.due(now) {
                let mut frames: Vec<(Vec<u8>, u8)> = Vec::new();
                // The bond's own addresses untagged, then each VLAN's on its VLAN (as Linux
                // announces through the bond's VLAN devices).
                let on_vlans = b.opts.vlans.iter().map(|(id, a)| (Some(*id), a));
                for (vid, addrs) in std::iter::once((None, &b.opts.addresses)).chain(on_vlans) {
                    for a in addrs {
                        match a {
                            IpAddr::V4(ip) if due.grat_arp => frames
                                .push((frames::tag(frames::gratuitous_arp(due.mac, *ip), vid), 0)),
                            IpAddr::V6(ip) if due.unsol_na => frames
                                .push((frames::tag(frames::unsolicited_na(due.mac, *ip), vid), 1)),
                            _ => {}
                        }
                    }
                }
                if due.reannounce
                    && let Some(seen) = seen
                {
                    let max_age = b.opts.notify.reannounce_max_age_s;
                    for (mac, vid) in seen.recent(seen.now_s(), max_age) {
                        frames.push((frames::tag(frames::announce(mac), vid), 2));
                    }
                }
                for (f, kind) in frames {
                    let queued =
                        Inject::new(due.member, &f).is_some_and(|i| mailbox.push(i).is_ok());
                    let c = &mut b.sent;
                    match (queued, kind) {
                        (false, _) => c.mailbox_full += 1,
                        (true, 0) => c.grat_arp += 1,
                        (true, 1) => c.unsol_na += 1,
                        (true, _) => c.reannounced += 1,
                    }
                }
            }
        }
    }
}
