//! Active-backup bonding, control side: member link states, selection of the active member,
//! planned switches and the event log.
//!
//! The state machine does no I/O and reads no clock: callers pass `now` (a monotonic
//! [`Instant`]) and the wall-clock time to stamp events with. Its decisions reach the workers
//! through [`BondShared`] (one atomic word). Semantics follow Linux's bonding driver in mode 1:
//! `miimon`, `updelay`/`downdelay`, `primary`, `primary_reselect` (always/better/failure),
//! per-member `prio`, `all_slaves_active` (here `all_members_active`).

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::status::{
    BondDrops, BondOptionsStatus, BondStatus, EventStatus, Link, MemberState, MemberStatus,
    NotifyStatus, VlanStatus,
};
use isopath_datapath::bond::{BondShared, BondView, MAX_MEMBERS};
use serde::{Deserialize, Serialize};

/// Events kept per bond (oldest dropped first).
pub const EVENT_LOG: usize = 1024;

/// The longest delay a bond option takes (`miimon`, `updelay`, `downdelay`, `drain_ms`,
/// `peer_notif_delay`), in milliseconds.
pub const MAX_OPTION_MS: u64 = 60_000;

/// The most notifications of one kind per change (`num_grat_arp`, `num_unsol_na`).
pub const MAX_NOTIFY_COUNT: u32 = 255;

/// A delay option in milliseconds, if within [`MAX_OPTION_MS`]: the one check behind the
/// config and `bond set`.
pub fn option_ms(ms: u64) -> Option<Duration> {
    (ms <= MAX_OPTION_MS).then(|| Duration::from_millis(ms))
}

/// A notification count, if within [`MAX_NOTIFY_COUNT`] (config and `bond set`).
pub fn notify_count(n: u32) -> Option<u32> {
    (n <= MAX_NOTIFY_COUNT).then_some(n)
}

/// A unit enum from its serde name (`"better"` → `Reselect::Better`).
fn parse_name<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    use serde::de::{IntoDeserializer, value::Error};
    T::deserialize(IntoDeserializer::<Error>::into_deserializer(s)).ok()
}

/// When to go back to the primary once it is up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reselect {
    /// Whenever the primary comes back (Linux's default).
    #[default]
    Always,
    /// Only if the primary is better (faster, then higher prio) than the active member.
    Better,
    /// Only when the active member fails.
    Failure,
}

impl Reselect {
    /// The option's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Better => "better",
            Self::Failure => "failure",
        }
    }

    /// Parses the option's name (its serde name: one table for the config, `bond set` and the
    /// status).
    pub fn parse(s: &str) -> Option<Self> {
        parse_name(s)
    }
}

/// Which MAC address the appliance's own frames on the bond carry (Linux's `fail_over_mac`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailOverMac {
    /// The bond's MAC, whatever member is active (Linux's default).
    #[default]
    None,
    /// The active member's own MAC: the bond's address changes with the active member, and
    /// peer notifications announce the new one.
    Active,
    /// The bond's MAC, which the new active member takes over (as `none` here: the members'
    /// MACs never matter to forwarding, which keeps every frame's source).
    Follow,
}

impl FailOverMac {
    /// The option's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Active => "active",
            Self::Follow => "follow",
        }
    }

    /// Parses the option's name (its serde name: one table for the config, `bond set` and the
    /// status).
    pub fn parse(s: &str) -> Option<Self> {
        parse_name(s)
    }
}

/// Peer notification after a change of active member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyOptions {
    /// Gratuitous ARPs per own IPv4 address (Linux's `num_grat_arp`, default 1).
    pub num_grat_arp: u32,
    /// Unsolicited NAs per own IPv6 address (Linux's `num_unsol_na`, default 1).
    pub num_unsol_na: u32,
    /// Gap between repeated notifications (Linux's `peer_notif_delay`).
    pub peer_notif_delay: Duration,
    /// Re-announce the MACs seen behind the bond (one frame each) after a change.
    pub reannounce: bool,
    /// Only MACs seen within this many seconds are re-announced.
    pub reannounce_max_age_s: u16,
    /// Entries of the seen-MAC table.
    pub reannounce_table: usize,
    /// Least time between two re-announcement bursts (a flapping link cannot cause a storm).
    pub reannounce_min_interval: Duration,
}

impl Default for NotifyOptions {
    fn default() -> Self {
        Self {
            num_grat_arp: 1,
            num_unsol_na: 1,
            peer_notif_delay: Duration::ZERO,
            reannounce: true,
            reannounce_max_age_s: 300,
            reannounce_table: 256,
            reannounce_min_interval: Duration::from_millis(100),
        }
    }
}

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
struct Pending {
    member: usize,
    grat_arp_left: u32,
    unsol_na_left: u32,
    reannounce: bool,
    next_at: Instant,
}

/// Which ARP traffic proves a member alive (Linux's `arp_validate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArpValidate {
    /// Any ARP frame on any member.
    #[default]
    None,
    /// The active member needs replies from the targets; backups any ARP.
    Active,
    /// Backups need our own probes (flooded back by the switch) or the targets' ARP; the
    /// active member any ARP.
    Backup,
    /// Both rules.
    All,
}

impl ArpValidate {
    /// Parses the option's name (its serde name: one table for the config, `bond set` and the
    /// status).
    pub fn parse(s: &str) -> Option<Self> {
        parse_name(s)
    }

    /// The option's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Active => "active",
            Self::Backup => "backup",
            Self::All => "all",
        }
    }
}

/// The ARP monitor (Linux's `arp_interval` and friends); replaces carrier monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpOptions {
    /// Probe period.
    pub interval: Duration,
    /// Targets (at most 16).
    pub targets: Vec<std::net::Ipv4Addr>,
    /// IPv6 targets probed with neighbour solicitations (Linux's `ns_ip6_target`, at most 16).
    pub ns_targets: Vec<std::net::Ipv6Addr>,
    /// Validation rule.
    pub validate: ArpValidate,
    /// Every target must answer (`arp_all_targets = all`), or any one (`any`).
    pub all_targets: bool,
    /// Intervals without proof before a member is down (`arp_missed_max`).
    pub missed_max: u32,
}

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
struct ArpRecord {
    /// Last reply (or ARP) from each target.
    target: Vec<Option<Instant>>,
    /// Last ARP of any kind.
    any: Option<Instant>,
    /// Last validated ARP for a backup: our own probe seen again, or a target's ARP.
    validated: Option<Instant>,
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

/// Options of a bond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondOptions {
    /// Periodic carrier check, the safety net behind rtnetlink events (0: off).
    pub miimon: Duration,
    /// Carrier must stay up this long before a member counts as up.
    pub updelay: Duration,
    /// Carrier must stay down this long before a member counts as down.
    pub downdelay: Duration,
    /// The preferred member.
    pub primary: Option<usize>,
    /// When to return to the primary.
    pub primary_reselect: Reselect,
    /// Accept frames received on backups too.
    pub all_members_active: bool,
    /// How long a planned switch keeps accepting frames on the old active member.
    pub drain: Duration,
    /// MAC of the appliance's own frames.
    pub fail_over_mac: FailOverMac,
    /// The bond's MAC (default: the first member's).
    pub mac: Option<[u8; 6]>,
    /// The appliance's own addresses on the bond.
    pub addresses: Vec<std::net::IpAddr>,
    /// VLANs over the bond (802.1Q id) with the appliance's addresses on each.
    pub vlans: Vec<(u16, Vec<std::net::IpAddr>)>,
    /// Peer notification.
    pub notify: NotifyOptions,
    /// ARP monitoring instead of carrier monitoring.
    pub arp: Option<ArpOptions>,
}

impl Default for BondOptions {
    fn default() -> Self {
        Self {
            miimon: Duration::from_millis(10),
            updelay: Duration::ZERO,
            downdelay: Duration::ZERO,
            primary: None,
            primary_reselect: Reselect::Always,
            all_members_active: false,
            drain: Duration::from_millis(500),
            fail_over_mac: FailOverMac::None,
            mac: None,
            addresses: Vec::new(),
            vlans: Vec::new(),
            notify: NotifyOptions::default(),
            arp: None,
        }
    }
}

/// A member's link as the bond sees it (after up/down delays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberLink {
    /// Counts as up.
    Up,
    /// Carrier lost; becomes down at the deadline unless it returns.
    GoingDown(Instant),
    /// Counts as down.
    Down,
    /// Carrier back; becomes up at the deadline unless it drops again.
    GoingUp(Instant),
}

impl MemberLink {
    fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::GoingDown(_) => "going down",
            Self::Down => "down",
            Self::GoingUp(_) => "going up",
        }
    }

    fn counts_up(self) -> bool {
        matches!(self, Self::Up | Self::GoingDown(_))
    }
}

/// A member port.
#[derive(Debug, Clone)]
pub struct Member {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Link state.
    pub link: MemberLink,
    /// Times the link went down.
    pub link_failures: u64,
    /// Priority when choosing a new active member (higher wins; Linux's `prio`).
    pub prio: i32,
    /// Speed in Mb/s, from the NIC or the config (used by `primary_reselect = better`).
    pub speed: u32,
    /// The member's own MAC address.
    pub perm_mac: String,
    /// Taken out of the bond at run time: never selected, its frames no longer the bond's.
    pub released: bool,
}

/// Why the active member changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The bond started.
    Start,
    /// The active member's link went down.
    LinkDown,
    /// A member's link came up and the policy prefers it.
    LinkUp,
    /// The operator asked (planned switch).
    Manual,
    /// Options changed.
    Options,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::LinkDown => "link down",
            Self::LinkUp => "link up",
            Self::Manual => "manual switch",
            Self::Options => "options changed",
        }
    }
}

/// What a bond event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A member's link changed (as the bond sees it, after the delays).
    MemberLink,
    /// A planned switch's drain ended.
    DrainDone,
    /// An option changed (`bond set`).
    OptionChanged,
    /// The active member changed.
    ActiveChanged,
    /// No member is active any more.
    NoActiveMember,
    /// A member was released.
    MemberReleased,
    /// A member was added.
    MemberAdded,
}

impl EventKind {
    /// The name logged and sent (`active_changed`).
    pub fn name(self) -> &'static str {
        match self {
            Self::MemberLink => "member_link",
            Self::DrainDone => "drain_done",
            Self::OptionChanged => "option_changed",
            Self::ActiveChanged => "active_changed",
            Self::NoActiveMember => "no_active_member",
            Self::MemberReleased => "member_released",
            Self::MemberAdded => "member_added",
        }
    }
}

/// One state change, stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Wall-clock time, nanoseconds since the Unix epoch (comparable across processes).
    pub unix_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// The member concerned, if any.
    pub member: Option<String>,
    /// Free text: from/to, reason.
    pub detail: String,
}

/// Errors of bond commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BondError {
    /// `bond set` of an option that does not exist or cannot change at run time.
    #[error(
        "unknown or read-only option {0:?} (run-time options: primary, primary_reselect, miimon, updelay, downdelay, drain_ms, peer_notif_delay, num_grat_arp, num_unsol_na, reannounce, all_members_active, fail_over_mac)"
    )]
    UnknownOption(String),
    /// A value out of the option's range or not of its kind.
    #[error("{key} = {value:?}: {expected}")]
    BadValue {
        /// The option.
        key: String,
        /// The value given.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
    /// `primary` names an interface that is not a member.
    #[error("primary = {member:?}: not a member of {bond}")]
    NotAMember {
        /// Bond.
        bond: String,
        /// The name given.
        member: String,
    },
    /// `bond add` of a member already in the bond.
    #[error("{bond}: {member} is already a member")]
    AlreadyMember {
        /// Bond.
        bond: String,
        /// Member.
        member: String,
    },
    /// `bond add` to a bond with [`MAX_MEMBERS`] members.
    #[error("{bond}: already {MAX_MEMBERS} members")]
    Full {
        /// Bond.
        bond: String,
    },
    /// No such member.
    #[error("{bond}: no member named {member:?}")]
    NoMember {
        /// Bond.
        bond: String,
        /// The name given.
        member: String,
    },
    /// The member's link is not up.
    #[error("{bond}: cannot switch to {member}: its link is {link}")]
    NotUp {
        /// Bond.
        bond: String,
        /// Member.
        member: String,
        /// Its link state.
        link: &'static str,
    },
}

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
    shared: Arc<BondShared>,
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
            shared: Arc::new(BondShared::new()),
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
        b.publish();
        b.trace_events();
        b
    }

    /// The state shared with workers.
    pub fn shared(&self) -> Arc<BondShared> {
        self.shared.clone()
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
        // Logged by `trace_events`, after the new state is published: a log write (stderr, a
        // journal) must never sit between a carrier loss and the failover.
        self.untraced = (self.untraced + 1).min(EVENT_LOG);
    }

    /// Emits the events recorded since the last call as log lines.
    pub fn trace_events(&mut self) {
        let n = std::mem::take(&mut self.untraced);
        for e in self.events.iter().skip(self.events.len().saturating_sub(n)) {
            let member = e.member.as_deref().unwrap_or("-");
            tracing::info!(bond = %self.name, kind = e.kind.name(), member, detail = %e.detail, "bond event");
        }
    }

    fn publish(&self) {
        let draining = self.draining.map(|(m, _)| m);
        self.shared.set(BondView::new(
            self.active,
            draining,
            self.opts.all_members_active,
        ));
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
                self.publish();
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
            self.publish();
            self.log(
                wall,
                EventKind::DrainDone,
                Some(m),
                "old active member is a backup again".into(),
            );
        }
        changed
    }

    /// Changes option `key` to `value` at run time (the names of the config file). Selection
    /// is run again, so a new `primary` takes effect at once as Linux does.
    ///
    /// # Errors
    /// An unknown key or a bad value, with a message naming it; nothing changes then.
    pub fn set_option(
        &mut self,
        key: &str,
        value: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), BondError> {
        let bad = |expected: &'static str| BondError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            expected,
        };
        let ms = |v: &str| {
            v.parse::<u64>()
                .ok()
                .and_then(option_ms)
                .ok_or_else(|| bad("milliseconds, at most 60000"))
        };
        let count = |v: &str| {
            v.parse::<u32>()
                .ok()
                .and_then(notify_count)
                .ok_or_else(|| bad("0..=255"))
        };
        let flag = |v: &str| v.parse::<bool>().map_err(|_| bad("true or false"));
        let mut o = self.opts.clone();
        match key {
            "primary" => {
                o.primary = match value {
                    "none" | "" => None,
                    name => Some(
                        self.members
                            .iter()
                            .position(|m| m.name == name)
                            .ok_or_else(|| BondError::NotAMember {
                                bond: self.name.clone(),
                                member: name.to_owned(),
                            })?,
                    ),
                };
            }
            "primary_reselect" => {
                o.primary_reselect =
                    Reselect::parse(value).ok_or_else(|| bad("always, better or failure"))?;
            }
            "miimon" => o.miimon = ms(value)?,
            "updelay" => o.updelay = ms(value)?,
            "downdelay" => o.downdelay = ms(value)?,
            "drain_ms" => o.drain = ms(value)?,
            "peer_notif_delay" => o.notify.peer_notif_delay = ms(value)?,
            "num_grat_arp" => o.notify.num_grat_arp = count(value)?,
            "num_unsol_na" => o.notify.num_unsol_na = count(value)?,
            "reannounce" => o.notify.reannounce = flag(value)?,
            "all_members_active" => o.all_members_active = flag(value)?,
            "fail_over_mac" => {
                o.fail_over_mac =
                    FailOverMac::parse(value).ok_or_else(|| bad("none, active or follow"))?;
            }
            _ => return Err(BondError::UnknownOption(key.to_owned())),
        }
        self.opts = o;
        self.log(
            wall,
            EventKind::OptionChanged,
            None,
            format!("{key} = {value}"),
        );
        self.publish();
        self.select(Reason::Options, now, wall);
        Ok(())
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
        self.publish();
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

    /// A member that just became active has not been probing: it gets `arp_missed_max`
    /// intervals to show replies before the ARP monitor judges it (Linux does the same).
    fn arp_grace(&mut self, m: Option<usize>, now: Instant) {
        if let Some(rec) = m.and_then(|m| self.arp.get_mut(m)) {
            rec.target.iter_mut().for_each(|t| *t = Some(now));
            rec.any = Some(now);
        }
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
        self.publish();
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
        self.publish();
        Ok(m)
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
        for m in 0..self.members.len() {
            let rec = &self.arp[m];
            let active = self.active == Some(m);
            let w = if active { window } else { backup_window };
            let fresh = |t: Option<Instant>| fresh_in(t, w);
            let replies = if opts.all_targets {
                rec.target.iter().all(|&t| fresh(t))
            } else {
                rec.target.iter().any(|&t| fresh(t))
            };
            let alive = match (active, opts.validate) {
                (true, ArpValidate::Active | ArpValidate::All) => replies,
                (false, ArpValidate::Backup | ArpValidate::All) => fresh(rec.validated),
                _ => fresh(rec.any),
            };
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

    fn schedule_notify(&mut self, member: usize, now: Instant) {
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
        self.publish();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, up: bool) -> Member {
        Member {
            name: name.into(),
            ifindex: 0,
            link: if up { MemberLink::Up } else { MemberLink::Down },
            link_failures: 0,
            prio: 0,
            speed: 10_000,
            perm_mac: String::new(),
            released: false,
        }
    }

    fn bond(opts: BondOptions, ups: &[bool]) -> (Bond, Instant) {
        let now = Instant::now();
        let ms = ups
            .iter()
            .enumerate()
            .map(|(i, &u)| member(&format!("m{i}"), u))
            .collect();
        (Bond::new("bond0", ms, opts, now, SystemTime::now()), now)
    }

    fn view(b: &Bond) -> BondView {
        b.shared().view()
    }

    #[test]
    fn first_up_member_is_active_and_carrier_loss_fails_over() {
        let (mut b, t) = bond(BondOptions::default(), &[true, true]);
        assert_eq!(b.active(), Some(0));
        assert!(view(&b).accepts_rx(0) && !view(&b).accepts_rx(1));
        assert!(b.carrier(0, false, t, SystemTime::now()));
        assert_eq!(view(&b).active(), Some(1));
        assert_eq!(b.members[0].link_failures, 1);
        // Without a primary, the old member's return changes nothing.
        assert!(!b.carrier(0, true, t, SystemTime::now()));
        assert_eq!(b.active(), Some(1));
        // Both down: no active member, carrier down.
        b.carrier(1, false, t, SystemTime::now());
        b.carrier(0, false, t, SystemTime::now());
        assert_eq!(view(&b).active(), None);
        assert_eq!(b.status().carrier, Link::Down);
        b.carrier(1, true, t, SystemTime::now());
        assert_eq!(b.active(), Some(1));
    }

    #[test]
    fn primary_reselect_policies() {
        for (policy, back) in [(Reselect::Always, true), (Reselect::Failure, false)] {
            let opts = BondOptions {
                primary: Some(0),
                primary_reselect: policy,
                ..Default::default()
            };
            let (mut b, t) = bond(opts, &[true, true]);
            assert_eq!(b.active(), Some(0));
            b.carrier(0, false, t, SystemTime::now());
            assert_eq!(b.active(), Some(1));
            b.carrier(0, true, t, SystemTime::now());
            assert_eq!(b.active() == Some(0), back, "{policy:?}");
        }
        // better: only if the primary is faster (speeds given in the config).
        for (primary_speed, back) in [(25_000, true), (10_000, false), (1_000, false)] {
            let opts = BondOptions {
                primary: Some(0),
                primary_reselect: Reselect::Better,
                ..Default::default()
            };
            let (mut b, t) = bond(opts, &[true, true]);
            b.members[0].speed = primary_speed;
            b.carrier(0, false, t, SystemTime::now());
            b.carrier(0, true, t, SystemTime::now());
            assert_eq!(b.active() == Some(0), back, "primary at {primary_speed}");
        }
    }

    #[test]
    fn prio_picks_the_new_active() {
        let (mut b, t) = bond(BondOptions::default(), &[true, true, true]);
        b.members[2].prio = 10;
        b.carrier(0, false, t, SystemTime::now());
        assert_eq!(b.active(), Some(2));
    }

    #[test]
    fn down_and_up_delays() {
        let opts = BondOptions {
            downdelay: Duration::from_millis(200),
            updelay: Duration::from_millis(300),
            ..Default::default()
        };
        let (mut b, t) = bond(opts, &[true, true]);
        b.carrier(0, false, t, SystemTime::now());
        assert_eq!(b.active(), Some(0), "still within downdelay");
        // Carrier back within the delay: nothing happened.
        b.carrier(0, true, t + Duration::from_millis(100), SystemTime::now());
        b.tick(t + Duration::from_millis(250), SystemTime::now());
        assert_eq!(b.active(), Some(0));
        assert_eq!(b.members[0].link_failures, 0);
        // Down for good.
        b.carrier(0, false, t + Duration::from_millis(300), SystemTime::now());
        b.tick(t + Duration::from_millis(499), SystemTime::now());
        assert_eq!(b.active(), Some(0));
        b.tick(t + Duration::from_millis(500), SystemTime::now());
        assert_eq!(b.active(), Some(1));
        // Up again: only after updelay does it count.
        b.carrier(1, false, t + Duration::from_millis(600), SystemTime::now());
        b.tick(t + Duration::from_millis(800), SystemTime::now());
        assert_eq!(b.active(), None);
        b.carrier(0, true, t + Duration::from_millis(900), SystemTime::now());
        assert_eq!(b.active(), None);
        b.tick(t + Duration::from_millis(1200), SystemTime::now());
        assert_eq!(b.active(), Some(0));
    }

    #[test]
    fn planned_switch_drains_the_old_member_then_makes_it_backup() {
        let (mut b, t) = bond(BondOptions::default(), &[true, true]);
        assert_eq!(b.switch_to("m1", t, SystemTime::now()), Ok(true));
        let v = view(&b);
        assert_eq!(v.active(), Some(1));
        assert!(
            v.accepts_rx(0) && v.accepts_rx(1),
            "old active still accepted while draining"
        );
        b.tick(t + Duration::from_millis(499), SystemTime::now());
        assert!(view(&b).accepts_rx(0));
        b.tick(t + Duration::from_millis(500), SystemTime::now());
        assert!(!view(&b).accepts_rx(0));
        assert!(matches!(
            b.switch_to("m9", t, SystemTime::now()),
            Err(BondError::NoMember { .. })
        ));
        b.carrier(0, false, t, SystemTime::now());
        assert!(matches!(
            b.switch_to("m0", t, SystemTime::now()),
            Err(BondError::NotUp { .. })
        ));
    }

    #[test]
    fn notifications_follow_each_change_with_repeats_and_rate_limit() {
        let mut opts = BondOptions::default();
        opts.notify.num_grat_arp = 3;
        opts.notify.num_unsol_na = 1;
        opts.notify.peer_notif_delay = Duration::from_millis(50);
        opts.notify.reannounce_min_interval = Duration::from_secs(1);
        let (mut b, t) = bond(opts, &[true, true]);
        assert_eq!(b.due(t), None, "nothing at start");
        b.carrier(0, false, t, SystemTime::now());
        let d = b.due(t).expect("first round at once");
        assert_eq!(
            (d.member, d.grat_arp, d.unsol_na, d.reannounce),
            (1, true, true, true)
        );
        assert_eq!(
            b.due(t + Duration::from_millis(49)),
            None,
            "spaced by peer_notif_delay"
        );
        let d = b.due(t + Duration::from_millis(50)).unwrap();
        assert_eq!((d.grat_arp, d.unsol_na, d.reannounce), (true, false, false));
        assert!(b.due(t + Duration::from_millis(100)).is_some());
        assert_eq!(
            b.due(t + Duration::from_millis(150)),
            None,
            "three rounds only"
        );
        // A flap within the rate limit: GARPs again, but no second re-announcement burst.
        b.carrier(1, false, t + Duration::from_millis(160), SystemTime::now());
        b.carrier(0, true, t + Duration::from_millis(160), SystemTime::now());
        let d = b.due(t + Duration::from_millis(170)).unwrap();
        assert!(d.grat_arp && !d.reannounce);
        assert_eq!(b.sent.rate_limited, 1);
        // num_grat_arp = 0, reannounce off: nothing at all.
        let mut opts = BondOptions::default();
        opts.notify.num_grat_arp = 0;
        opts.notify.num_unsol_na = 0;
        opts.notify.reannounce = false;
        let (mut b, t) = bond(opts, &[true, true]);
        b.carrier(0, false, t, SystemTime::now());
        let d = b.due(t).unwrap();
        assert!(!d.grat_arp && !d.unsol_na && !d.reannounce);
        assert_eq!(b.due(t + Duration::from_secs(1)), None);
    }

    #[test]
    fn arp_monitor_fails_over_when_the_target_goes_silent_and_rotates_probes() {
        use std::net::Ipv4Addr;
        let target = Ipv4Addr::new(198, 18, 0, 2);
        let opts = BondOptions {
            arp: Some(ArpOptions {
                interval: Duration::from_millis(100),
                targets: vec![target],
                ns_targets: Vec::new(),
                validate: ArpValidate::Active,
                all_targets: false,
                missed_max: 2,
            }),
            mac: Some([2, 0, 0, 0, 0xb, 1]),
            ..Default::default()
        };
        let (mut b, t) = bond(opts, &[true, true]);
        let w = SystemTime::now();
        let reply = ArpSeen {
            spa: target,
            tpa: Ipv4Addr::new(198, 18, 0, 10),
            sha: [2, 0, 0, 0, 0, 2],
            reply: true,
        };
        let chatter = ArpSeen {
            spa: Ipv4Addr::new(198, 18, 0, 77),
            tpa: target,
            sha: [2, 0, 0, 0, 0, 9],
            reply: false,
        };
        assert_eq!(
            b.arp_tick(t, w).map(|p| p.member),
            Some(0),
            "the active member probes"
        );
        // Replies on m0 keep it up; chatter keeps the backup up (validate = active).
        for i in 1..=5 {
            let now = t + Duration::from_millis(100 * i);
            b.arp_rx(0, &reply, now);
            b.arp_rx(1, &chatter, now);
            b.arp_tick(now, w);
            assert_eq!(b.active(), Some(0));
        }
        // Carrier never moves, carrier events cannot bring a member up under ARP.
        assert!(!b.carrier(0, true, t, w));
        // The target goes silent on m0 (chatter alone does not count for the active member).
        for i in 6..=9 {
            let now = t + Duration::from_millis(100 * i);
            b.arp_rx(0, &chatter, now);
            b.arp_rx(1, &chatter, now);
            b.arp_tick(now, w);
        }
        assert_eq!(b.active(), Some(1), "failed over to the backup");
        // (m0 hears chatter, so under validate = active it may count as a live backup again.)
        assert_eq!(b.members[0].link_failures, 1);
        // Everything silent: no active member, probes rotate over the members.
        let mut probed = std::collections::BTreeSet::new();
        for i in 10..=16 {
            let p = b.arp_tick(t + Duration::from_millis(100 * i), w).unwrap();
            probed.insert(p.member);
        }
        assert_eq!(b.active(), None);
        assert_eq!(probed.len(), 2, "each member got to probe");
        // A reply through m0 brings it back.
        b.arp_rx(0, &reply, t + Duration::from_millis(1700));
        b.arp_tick(t + Duration::from_millis(1700), w);
        assert_eq!(b.active(), Some(0));
    }

    /// The active member's path dies: the backup, which heard only the active member's probes
    /// flooded back (and went quiet a moment *before* the last reply), must still be up when
    /// the active member is judged, so the bond fails over directly instead of to no member.
    #[test]
    fn arp_monitor_backup_outlives_the_active_members_silence() {
        use std::net::Ipv4Addr;
        let target = Ipv4Addr::new(198, 18, 0, 2);
        let own = [2, 0, 0, 0, 0xb, 1];
        let opts = BondOptions {
            arp: Some(ArpOptions {
                interval: Duration::from_millis(50),
                targets: vec![target],
                ns_targets: Vec::new(),
                validate: ArpValidate::Active,
                all_targets: false,
                missed_max: 2,
            }),
            mac: Some(own),
            // The active member is the one judged last in a period (index 1), the case where
            // equal windows let the backup expire first.
            primary: Some(1),
            ..Default::default()
        };
        let (mut b, t) = bond(opts, &[true, true]);
        let w = SystemTime::now();
        let reply = ArpSeen {
            spa: target,
            tpa: Ipv4Addr::new(198, 18, 0, 10),
            sha: [2, 0, 0, 0, 0, 2],
            reply: true,
        };
        let flooded_probe = ArpSeen {
            spa: Ipv4Addr::new(198, 18, 0, 10),
            tpa: target,
            sha: own,
            reply: false,
        };
        let ms = |n: u64| t + Duration::from_millis(n);
        let mut last = 0;
        for i in 0..10u64 {
            // Each period: the probe floods back to the backup, the reply arrives on the active
            // member 0.2 ms later; then the monitor runs.
            b.arp_rx(0, &flooded_probe, ms(50 * i));
            b.arp_rx(1, &reply, ms(50 * i) + Duration::from_micros(200));
            b.arp_tick(ms(50 * i + 10), w);
            last = 50 * i + 10;
        }
        assert_eq!(b.active(), Some(1));
        // The active member's far end goes silent: neither member hears anything any more.
        let mut t_fail = None;
        for k in 1..=20u64 {
            b.arp_tick(ms(last + 50 * k), w);
            if b.active() != Some(1) {
                t_fail = Some(k);
                break;
            }
        }
        assert!(
            t_fail.is_some_and(|k| k <= 3),
            "detected within missed_max + 1 periods"
        );
        assert_eq!(b.active(), Some(0), "failed over directly to the backup");
        assert!(
            !b.events().any(|e| e.kind == EventKind::NoActiveMember),
            "never without an active member"
        );
    }

    #[test]
    fn fail_over_mac_active_follows_the_active_member() {
        let mut opts = BondOptions {
            fail_over_mac: FailOverMac::Active,
            ..Default::default()
        };
        opts.mac = Some([2, 0, 0, 0, 9, 9]);
        let (mut b, t) = bond(opts, &[true, true]);
        b.members[0].perm_mac = "02:00:00:00:01:01".into();
        b.members[1].perm_mac = "02:00:00:00:01:02".into();
        assert_eq!(b.own_mac(), [2, 0, 0, 0, 1, 1]);
        b.carrier(0, false, t, SystemTime::now());
        assert_eq!(b.own_mac(), [2, 0, 0, 0, 1, 2]);
        b.opts.fail_over_mac = FailOverMac::None;
        assert_eq!(b.own_mac(), [2, 0, 0, 0, 9, 9]);
    }

    #[test]
    fn options_change_at_run_time_and_bad_ones_change_nothing() {
        let (mut b, t) = bond(BondOptions::default(), &[true, true]);
        let w = SystemTime::now();
        assert_eq!(b.active(), Some(0));
        b.set_option("primary", "m1", t, w).unwrap();
        assert_eq!(b.active(), Some(1), "a new primary takes over");
        b.set_option("all_members_active", "true", t, w).unwrap();
        assert!(b.shared().view().accepts_rx(0));
        b.set_option("downdelay", "200", t, w).unwrap();
        assert_eq!(b.opts.downdelay, Duration::from_millis(200));
        let before = b.opts.clone();
        for (k, v) in [
            ("primary", "m9"),
            ("miimon", "-1"),
            ("num_grat_arp", "999"),
            ("colour", "red"),
            ("reannounce", "maybe"),
        ] {
            let e = b.set_option(k, v, t, w).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
        assert_eq!(b.opts, before);
        assert_eq!(
            b.set_option("miimon", "60001", t, w),
            Err(BondError::BadValue {
                key: "miimon".into(),
                value: "60001".into(),
                expected: "milliseconds, at most 60000",
            })
        );
        assert!(b.set_option("miimon", "60000", t, w).is_ok());
        b.set_option("miimon", "10", t, w).unwrap();
        assert_eq!(
            b.set_option("primary", "m9", t, w),
            Err(BondError::NotAMember {
                bond: b.name.clone(),
                member: "m9".into()
            })
        );
        assert!(matches!(
            b.set_option("colour", "red", t, w),
            Err(BondError::UnknownOption(k)) if k == "colour"
        ));
        assert!(
            b.events()
                .any(|e| e.kind == EventKind::OptionChanged && e.detail == "primary = m1")
        );
    }

    #[test]
    fn members_are_released_and_added_at_run_time() {
        let (mut b, t) = bond(BondOptions::default(), &[true, true]);
        let w = SystemTime::now();
        assert_eq!(b.release("m0", t, w), Ok(0));
        assert_eq!(
            b.active(),
            Some(1),
            "the active member left: failover at once"
        );
        assert!(b.release("m0", t, w).is_err(), "already released");
        b.carrier(1, false, t, w);
        assert_eq!(b.active(), None, "a released member is never selected");
        assert_eq!(
            b.enslave(member("m0", true), t, w),
            Ok(0),
            "re-added in its old place"
        );
        assert_eq!(b.active(), Some(0));
        assert_eq!(b.enslave(member("m2", true), t, w), Ok(2), "a new port");
        assert!(b.enslave(member("m2", true), t, w).is_err());
        assert_eq!(b.status().members[2].state, MemberState::Backup);
    }

    #[test]
    fn events_are_kept_bounded_and_stamped() {
        let (mut b, t) = bond(BondOptions::default(), &[true, true]);
        // Each carrier report stamped with its own wall time: 1 s after the epoch plus i ms.
        let wall = |i: usize| UNIX_EPOCH + Duration::from_secs(1) + Duration::from_millis(i as u64);
        let n = EVENT_LOG + 10;
        for i in 0..n {
            b.carrier(1, i % 2 == 1, t, wall(i));
        }
        // Bounded: the oldest went first, the newest are kept, in order.
        assert_eq!(b.events().count(), EVENT_LOG);
        let stamps: Vec<u64> = b.events().map(|e| e.unix_ns).collect();
        assert_eq!(stamps.last(), Some(&unix_ns(wall(n - 1))));
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "in time order");
        // Stamped with the time the caller passed: the first kept is that of report n - 1024.
        assert_eq!(stamps[0], unix_ns(wall(n - EVENT_LOG)));
        // Each report of m1's carrier is one member_link event, down and up alternating.
        assert!(
            b.events()
                .all(|e| e.kind == EventKind::MemberLink && e.member.as_deref() == Some("m1"))
        );
        let last = b.events().last().unwrap();
        assert!(last.detail.contains("up"), "{last:?}");
    }

    #[test]
    fn option_names_are_their_serde_names() {
        for r in [Reselect::Always, Reselect::Better, Reselect::Failure] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
            assert_eq!(Reselect::parse(r.name()), Some(r));
        }
        for m in [FailOverMac::None, FailOverMac::Active, FailOverMac::Follow] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.name());
            assert_eq!(FailOverMac::parse(m.name()), Some(m));
        }
        for v in [
            ArpValidate::None,
            ArpValidate::Active,
            ArpValidate::Backup,
            ArpValidate::All,
        ] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.name());
            assert_eq!(ArpValidate::parse(v.name()), Some(v));
        }
        assert_eq!(Reselect::parse("sometimes"), None);
        assert_eq!(Reselect::parse("Always"), None);
        for k in [
            EventKind::MemberLink,
            EventKind::DrainDone,
            EventKind::OptionChanged,
            EventKind::ActiveChanged,
            EventKind::NoActiveMember,
            EventKind::MemberReleased,
            EventKind::MemberAdded,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
    }

    #[test]
    fn option_bounds_are_shared() {
        assert_eq!(option_ms(MAX_OPTION_MS), Some(Duration::from_secs(60)));
        assert_eq!(option_ms(MAX_OPTION_MS + 1), None);
        assert_eq!(notify_count(255), Some(255));
        assert_eq!(notify_count(256), None);
    }
}
