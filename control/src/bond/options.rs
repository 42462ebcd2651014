//! What a bond is configured with, the bounds shared by the config and `bond set`, and
//! `bond set` itself.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Bond, BondError, EventKind, Reason};

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

impl Bond {
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
        self.select(Reason::Options, now, wall);
        Ok(())
    }
}
