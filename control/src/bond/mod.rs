//! Active-backup bonding, control side: member link states, selection of the active member,
//! planned switches and the event log.
//!
//! The state machine does no I/O and reads no clock: callers pass `now` (a monotonic
//! [`Instant`]) and the wall-clock time to stamp events with. It publishes nothing and logs
//! nothing: after each change the caller stores [`Bond::view`] into the workers'
//! [`BondShared`](isopath_datapath::bond::BondShared) (one atomic word), then logs the
//! [`Bond::untraced`] events. Semantics follow Linux's bonding driver in mode 1: `miimon`,
//! `updelay`/`downdelay`, `primary`, `primary_reselect` (always/better/failure), per-member
//! `prio`, `all_slaves_active` (here `all_members_active`).
//!
//! The bond's parts: `options` (what a bond is configured with, and `bond set`), member
//! and event types, the ARP/NS monitor (`arp`), peer announcements (`announce`) and the
//! status view (`status`).

mod announce;
mod arp;
mod error;
mod event;
mod member;
mod options;
mod status;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use isopath_datapath::bond::{BondView, MAX_MEMBERS};

pub use announce::Due;
use announce::Pending;
use arp::ArpRecord;
pub use arp::{ArpProbe, ArpSeen};
pub use error::BondError;
pub use event::{Event, EventKind, Reason};
pub use member::{Member, MemberLink};
pub use options::{
    ArpOptions, ArpValidate, BondOptions, EVENT_LOG, FailOverMac, MAX_NOTIFY_COUNT, MAX_OPTION_MS,
    NotifyOptions, Reselect, notify_count, option_ms,
};

/// A bond.
#[derive(Debug)]
pub struct Bond {
    /// Name.
    pub name: String,
    /// Members, in configuration order (their index is the datapath's member index).
    pub members: Vec<Member>,
    /// Options.
    pub opts: BondOptions,
    active: Option<usize>,
    draining: Option<(usize, Instant)>,
    events: VecDeque<Event>,
    /// Times the active member changed.
    pub failovers: u64,
    pending: Option<Pending>,
    arp: Vec<ArpRecord>,
    arp_next: Option<Instant>,
    arp_rr: usize,
    untraced: usize,
    last_reannounce: Option<Instant>,
    /// Notification frames sent: gratuitous ARPs, unsolicited NAs, MAC re-announcements.
    pub sent: NotifyCounters,
}

/// Peer notification counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NotifyCounters {
    /// Gratuitous ARPs queued.
    pub grat_arp: u64,
    /// Unsolicited NAs queued.
    pub unsol_na: u64,
    /// MAC re-announcements queued.
    pub reannounced: u64,
    /// Frames not queued because the mailbox was full.
    pub mailbox_full: u64,
    /// Re-announcement bursts skipped by the rate limit.
    pub rate_limited: u64,
}

/// Nanoseconds since the Unix epoch of `t`.
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Bond {
    /// A bond over `members` (each with its carrier at start); picks the first active member.
    ///
    /// # Panics
    /// If there are more than [`MAX_MEMBERS`] members.
    pub fn new(
        name: &str,
        members: Vec<Member>,
        opts: BondOptions,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        assert!(
            members.len() <= MAX_MEMBERS,
            "at most {MAX_MEMBERS} members"
        );
        let mut b = Self {
            name: name.to_owned(),
            members,
            opts,
            active: None,
            draining: None,
            events: VecDeque::new(),
            failovers: 0,
            pending: None,
            arp: Vec::new(),
            arp_next: None,
            arp_rr: 0,
            untraced: 0,
            last_reannounce: None,
            sent: NotifyCounters::default(),
        };
        if let Some(a) = &b.opts.arp {
            // Every member starts with the benefit of the doubt (as Linux's bonding does): the
            // first verdict comes after arp_missed_max intervals without proof.
            let rec = ArpRecord {
                target: vec![Some(now); a.targets.len() + a.ns_targets.len()],
                any: Some(now),
                validated: Some(now),
            };
            b.arp = vec![rec; b.members.len()];
            b.arp_next = Some(now);
        }
        b.select(Reason::Start, now, wall);
        b
    }

    /// The active member.
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// Member index of interface `ifindex`.
    pub fn member_by_ifindex(&self, ifindex: u32) -> Option<usize> {
        self.members.iter().position(|m| m.ifindex == ifindex)
    }

    /// Events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    fn log(&mut self, wall: SystemTime, kind: EventKind, member: Option<usize>, detail: String) {
        if self.events.len() == EVENT_LOG {
            self.events.pop_front();
        }
        let member = member.map(|m| self.members[m].name.clone());
        self.events.push_back(Event {
            unix_ns: unix_ns(wall),
            kind,
            member,
            detail,
        });
        // Logged by the caller ([`Self::untraced`]), after it has published the new view: a log
        // write (stderr, a journal) must never sit between a carrier loss and the failover.
        self.untraced = (self.untraced + 1).min(EVENT_LOG);
    }

    /// The events recorded since the last call, oldest first, for the caller to log.
    pub fn untraced(&mut self) -> impl Iterator<Item = &Event> {
        let n = std::mem::take(&mut self.untraced);
        self.events.iter().skip(self.events.len().saturating_sub(n))
    }

    /// What the workers act on: the active member, the draining one, whether backups
    /// receive. The caller publishes it
    /// ([`BondShared::set`](isopath_datapath::bond::BondShared::set)) after every call that may
    /// change it.
    pub fn view(&self) -> BondView {
        let draining = self.draining.map(|(m, _)| m);
        BondView::new(self.active, draining, self.opts.all_members_active)
    }

    /// A carrier report for member `m` (from rtnetlink or the miimon poll). Returns whether
    /// the active member changed.
    pub fn carrier(&mut self, m: usize, up: bool, now: Instant, wall: SystemTime) -> bool {
        // Under the ARP monitor only ARP proves a member up; a lost carrier still takes it down
        // at once (a dead link cannot carry the proof anyway).
        if self.opts.arp.is_some() {
            return !up && self.set_link(m, MemberLink::Down, now, wall);
        }
        let link = self.members[m].link;
        let next = match (link, up) {
            (MemberLink::Up, false) if self.opts.downdelay.is_zero() => MemberLink::Down,
            (MemberLink::Up, false) => MemberLink::GoingDown(now + self.opts.downdelay),
            (MemberLink::GoingDown(_), true) => MemberLink::Up,
            (MemberLink::Down, true) if self.opts.updelay.is_zero() => MemberLink::Up,
            (MemberLink::Down, true) => MemberLink::GoingUp(now + self.opts.updelay),
            (MemberLink::GoingUp(_), false) => MemberLink::Down,
            (same, _) => same,
        };
        self.set_link(m, next, now, wall)
    }

    fn set_link(&mut self, m: usize, next: MemberLink, now: Instant, wall: SystemTime) -> bool {
        let prev = self.members[m].link;
        if prev == next {
            return false;
        }
        self.members[m].link = next;
        let was_up = prev.counts_up();
        let is_up = next.counts_up();
        self.log(
            wall,
            EventKind::MemberLink,
            Some(m),
            format!("{} -> {}", prev.name(), next.name()),
        );
        if was_up && !is_up {
            self.members[m].link_failures += 1;
            if self.active == Some(m) {
                return self.select(Reason::LinkDown, now, wall);
            }
            if self.draining.is_some_and(|(d, _)| d == m) {
                self.draining = None;
            }
        } else if !was_up && is_up {
            return self.select(Reason::LinkUp, now, wall);
        }
        false
    }

    /// Timers: up/down delays and the end of a planned switch's drain. Returns whether the
    /// active member changed.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> bool {
        let mut changed = false;
        for m in 0..self.members.len() {
            match self.members[m].link {
                MemberLink::GoingDown(at) if now >= at => {
                    changed |= self.set_link(m, MemberLink::Down, now, wall);
                }
                MemberLink::GoingUp(at) if now >= at => {
                    changed |= self.set_link(m, MemberLink::Up, now, wall);
                }
                _ => {}
            }
        }
        if let Some((m, until)) = self.draining
            && now >= until
        {
            self.draining = None;
            self.log(
                wall,
                EventKind::DrainDone,
                Some(m),
                "old active member is a backup again".into(),
            );
        }
        changed
    }

    /// The best up member by prio (ties: configuration order), preferring the primary.
    fn best(&self) -> Option<usize> {
        if let Some(p) = self.opts.primary
            && self.members[p].link.counts_up()
            && !self.members[p].released
        {
            return Some(p);
        }
        let mut best: Option<usize> = None;
        for (i, m) in self.members.iter().enumerate() {
            if m.released {
                continue;
            }
            if m.link.counts_up() && best.is_none_or(|b| m.prio > self.members[b].prio) {
                best = Some(i);
            }
        }
        best
    }

    /// Chooses the active member after `reason`. Returns whether it changed.
    fn select(&mut self, reason: Reason, now: Instant, wall: SystemTime) -> bool {
        let current = self
            .active
            .filter(|&a| self.members[a].link.counts_up() && !self.members[a].released);
        let candidate = self.best();
        let next = match (current, candidate) {
            (None, c) => c,
            // A new primary set by the operator takes over at once (Linux does the same).
            (Some(cur), Some(c))
                if reason == Reason::Options && c != cur && Some(c) == self.opts.primary =>
            {
                Some(c)
            }
            (Some(cur), Some(c)) if c != cur && Some(c) == self.opts.primary => {
                match self.opts.primary_reselect {
                    Reselect::Always => Some(c),
                    Reselect::Better if self.better(c, cur) => Some(c),
                    Reselect::Better | Reselect::Failure => Some(cur),
                }
            }
            (Some(cur), _) => Some(cur),
        };
        if next == self.active {
            return false;
        }
        let from = self.active;
        self.active = next;
        self.arp_grace(next, now);
        // A failover cancels any drain: the old member is down or no longer trusted.
        self.draining = None;
        self.failovers += u64::from(from.is_some());
        let name = |m: Option<usize>| m.map_or("none".to_owned(), |m| self.members[m].name.clone());
        let detail = format!("{} -> {} ({})", name(from), name(next), reason.name());
        if let Some(m) = next
            && reason != Reason::Start
        {
            self.schedule_notify(m, now);
        }
        match next {
            Some(_) => self.log(wall, EventKind::ActiveChanged, next, detail),
            None => self.log(wall, EventKind::NoActiveMember, None, detail),
        }
        true
    }
    /// Takes member `name` out of the bond (Linux's release): it is never selected again until
    /// re-added; the active member moves at once if it was this one. Returns its index.
    ///
    /// # Errors
    /// No such member, or it is already released.
    pub fn release(
        &mut self,
        name: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<usize, BondError> {
        let m = self
            .members
            .iter()
            .position(|x| x.name == name && !x.released)
            .ok_or_else(|| BondError::NoMember {
                bond: self.name.clone(),
                member: name.to_owned(),
            })?;
        self.members[m].released = true;
        if self.opts.primary == Some(m) {
            self.opts.primary = None;
        }
        self.log(wall, EventKind::MemberReleased, Some(m), String::new());
        if self.active == Some(m) || self.draining.is_some_and(|(d, _)| d == m) {
            self.draining = None;
            self.select(Reason::Options, now, wall);
        }
        Ok(m)
    }

    /// Adds port `member` to the bond at run time (or re-adds a released one). Returns its
    /// member index.
    ///
    /// # Errors
    /// Already a member, or the bond is full.
    pub fn enslave(
        &mut self,
        mut member: Member,
        now: Instant,
        wall: SystemTime,
    ) -> Result<usize, BondError> {
        let m = match self.members.iter().position(|x| x.name == member.name) {
            Some(i) if !self.members[i].released => {
                return Err(BondError::AlreadyMember {
                    bond: self.name.clone(),
                    member: member.name,
                });
            }
            Some(i) => {
                self.members[i].released = false;
                self.members[i].link = member.link;
                i
            }
            None if self.members.len() >= MAX_MEMBERS => {
                return Err(BondError::Full {
                    bond: self.name.clone(),
                });
            }
            None => {
                member.released = false;
                self.members.push(member);
                if let Some(a) = &self.opts.arp {
                    let n = a.targets.len() + a.ns_targets.len();
                    self.arp.push(ArpRecord {
                        target: vec![Some(now); n],
                        any: Some(now),
                        validated: Some(now),
                    });
                }
                self.members.len() - 1
            }
        };
        self.log(wall, EventKind::MemberAdded, Some(m), String::new());
        self.select(Reason::LinkUp, now, wall);
        Ok(m)
    }
    fn better(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.members[a], &self.members[b]);
        (a.speed, a.prio) > (b.speed, b.prio)
    }

    /// A planned switch to member `name`: TX moves at once; the old active member's RX stays
    /// accepted for the drain window so that frames still in flight towards it are not lost.
    ///
    /// # Errors
    /// [`BondError::NoMember`], [`BondError::NotUp`].
    pub fn switch_to(
        &mut self,
        name: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<bool, BondError> {
        let m = self
            .members
            .iter()
            .position(|x| x.name == name)
            .ok_or_else(|| BondError::NoMember {
                bond: self.name.clone(),
                member: name.to_owned(),
            })?;
        let link = self.members[m].link;
        if !link.counts_up() {
            return Err(BondError::NotUp {
                bond: self.name.clone(),
                member: name.to_owned(),
                link: link.name(),
            });
        }
        if self.active == Some(m) {
            return Ok(false);
        }
        let from = self.active;
        self.active = Some(m);
        self.arp_grace(Some(m), now);
        self.draining = from.map(|f| (f, now + self.opts.drain));
        self.failovers += 1;
        self.schedule_notify(m, now);
        let old = from.map_or("none".to_owned(), |f| self.members[f].name.clone());
        self.log(
            wall,
            EventKind::ActiveChanged,
            Some(m),
            format!("{old} -> {name} (manual switch)"),
        );
        Ok(true)
    }
}
