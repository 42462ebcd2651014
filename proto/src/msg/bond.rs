//! Bonds: status like `/proc/net/bonding/BOND`, options, members, events, and the bond requests
//! (`bond show|set|switch|add|release`).

use std::net::IpAddr;

use super::LinkStats;
use crate::{
    attr::{Mac, record, wire_enum},
    attrs::{bond, bond_notify, bond_opt, bond_vlan, bondev, member},
};

wire_enum! {
    /// Bonding mode (the kernel's `BOND_MODE_*` numbers).
    pub enum BondMode {
        /// `BOND_MODE_ACTIVEBACKUP`.
        ActiveBackup = 1 => "active-backup",
    }

    /// `primary_reselect` (the kernel's `BOND_PRI_RESELECT_*`).
    pub enum Reselect {
        /// Always back to the primary.
        Always = 0 => "always",
        /// Only if the primary is better (speed).
        Better = 1 => "better",
        /// Only when the active member fails.
        Failure = 2 => "failure",
    }

    /// `fail_over_mac` (the kernel's `BOND_FOM_*`).
    pub enum FailOverMac {
        /// All members share the bond's MAC.
        None = 0 => "none",
        /// The bond takes the active member's MAC.
        Active = 1 => "active",
        /// The new active member takes the old one's MAC.
        Follow = 2 => "follow",
    }

    /// `arp_validate` (the kernel's `BOND_ARP_VALIDATE_*`).
    pub enum ArpValidate {
        /// Any ARP.
        None = 0 => "none",
        /// The active member needs replies from the targets.
        Active = 1 => "active",
        /// Backups need the probes or the targets' ARP.
        Backup = 2 => "backup",
        /// Both rules.
        All = 3 => "all",
    }

    /// `arp_all_targets` (the kernel's `BOND_ARP_TARGETS_*`).
    pub enum ArpAllTargets {
        /// Any target answering proves the link.
        Any = 0 => "any",
        /// Every target must answer.
        All = 1 => "all",
    }

    /// A member's link as the bond sees it (the kernel's `BOND_LINK_*`).
    pub enum MemberLink {
        /// Counts as up.
        Up = 0 => "up",
        /// Carrier lost, down after `downdelay`.
        GoingDown = 1 => "going down",
        /// Down.
        Down = 2 => "down",
        /// Carrier back, up after `updelay`.
        GoingUp = 3 => "going up",
    }

    /// A member's role (0 and 1 are the kernel's `BOND_STATE_*`).
    pub enum MemberState {
        /// Carries the bond's traffic.
        Active = 0 => "active",
        /// Standing by.
        Backup = 1 => "backup",
        /// The old active member, still accepted while peers relearn.
        Draining = 2 => "draining",
        /// Taken out of the bond.
        Released = 3 => "released",
    }

    /// What a bond event records.
    pub enum BondEventKind {
        /// A member's link changed.
        MemberLink = 1 => "member_link",
        /// The active member changed.
        ActiveChanged = 2 => "active_changed",
        /// No member can be active.
        NoActiveMember = 3 => "no_active_member",
        /// An option changed.
        OptionChanged = 4 => "option_changed",
        /// A member joined.
        MemberAdded = 5 => "member_added",
        /// A member left.
        MemberReleased = 6 => "member_released",
        /// A planned switch's drain ended.
        DrainDone = 7 => "drain_done",
    }
}

record! {
    /// A bond: a `GETBOND` reply or dump record.
    pub struct BondMsg: bond {
        /// Name.
        req name: String = NAME,
        /// Mode.
        req mode: BondMode = MODE,
        /// Carrier.
        req carrier: bool = CARRIER,
        /// Active member.
        opt active: String = ACTIVE,
        /// Draining member.
        opt draining: String = DRAINING,
        /// Changes of active member.
        req failovers: u64 = FAILOVERS,
        /// Options.
        opt options: BondOptions = OPTIONS,
        /// MAC address.
        opt address: Mac = ADDRESS,
        /// Own addresses.
        list addresses: IpAddr = ADDRESSES,
        /// VLANs.
        list vlans: BondVlan = VLANS,
        /// Peer-notification counters.
        opt notify: BondNotify = NOTIFY,
        /// Members.
        list members: MemberMsg = MEMBERS,
        /// Recent events.
        list events: BondEvent = EVENTS,
        /// Datapath counters.
        opt stats: LinkStats = STATS,
    }

    /// Bond options: all of them in a reply, the ones to change in `SETBOND`.
    pub struct BondOptions: bond_opt {
        /// `miimon`, ms.
        opt miimon_ms: u32 = MIIMON_MS,
        /// `updelay`, ms.
        opt updelay_ms: u32 = UPDELAY_MS,
        /// `downdelay`, ms.
        opt downdelay_ms: u32 = DOWNDELAY_MS,
        /// `primary` (empty: none).
        opt primary: String = PRIMARY,
        /// `primary_reselect`.
        opt primary_reselect: Reselect = PRIMARY_RESELECT,
        /// `all_members_active`.
        opt all_members_active: bool = ALL_MEMBERS_ACTIVE,
        /// `drain_ms`.
        opt drain_ms: u32 = DRAIN_MS,
        /// `fail_over_mac`.
        opt fail_over_mac: FailOverMac = FAIL_OVER_MAC,
        /// `num_grat_arp`.
        opt num_grat_arp: u32 = NUM_GRAT_ARP,
        /// `num_unsol_na`.
        opt num_unsol_na: u32 = NUM_UNSOL_NA,
        /// `peer_notif_delay`, ms.
        opt peer_notif_delay_ms: u32 = PEER_NOTIF_DELAY_MS,
        /// `reannounce`.
        opt reannounce: bool = REANNOUNCE,
        /// Seen-MAC table size.
        opt reannounce_table: u32 = REANNOUNCE_TABLE,
        /// Seen-MAC age limit, s.
        opt reannounce_max_age_s: u32 = REANNOUNCE_MAX_AGE_S,
        /// `arp_interval`, ms.
        opt arp_interval_ms: u32 = ARP_INTERVAL_MS,
        /// `arp_ip_target`.
        list arp_ip_target: IpAddr = ARP_IP_TARGET,
        /// `ns_ip6_target`.
        list ns_ip6_target: IpAddr = NS_IP6_TARGET,
        /// `arp_validate`.
        opt arp_validate: ArpValidate = ARP_VALIDATE,
        /// `arp_all_targets`.
        opt arp_all_targets: ArpAllTargets = ARP_ALL_TARGETS,
        /// `arp_missed_max`.
        opt arp_missed_max: u32 = ARP_MISSED_MAX,
        /// `link_state_tracking`.
        opt link_state_tracking: bool = LINK_STATE_TRACKING,
    }

    /// A VLAN over a bond.
    pub struct BondVlan: bond_vlan {
        /// VLAN id.
        req id: u16 = ID,
        /// Own addresses on it.
        list addresses: IpAddr = ADDRESSES,
    }

    /// Peer-notification counters.
    pub struct BondNotify: bond_notify {
        /// Gratuitous ARPs.
        req grat_arp: u64 = GRAT_ARP,
        /// Unsolicited NAs.
        req unsol_na: u64 = UNSOL_NA,
        /// Re-announcements.
        req reannounced: u64 = REANNOUNCED,
        /// Mailbox full.
        req mailbox_full: u64 = MAILBOX_FULL,
        /// Rate limited.
        req rate_limited: u64 = RATE_LIMITED,
    }

    /// A member of a bond.
    pub struct MemberMsg: member {
        /// Interface name.
        req name: String = NAME,
        /// Interface index.
        opt ifindex: u32 = IFINDEX,
        /// Link after delays.
        req link: MemberLink = LINK,
        /// Role.
        req state: MemberState = STATE,
        /// Link failures.
        req link_failures: u64 = LINK_FAILURES,
        /// Priority.
        req prio: i32 = PRIO,
        /// Speed, Mb/s.
        req speed_mbps: u32 = SPEED_MBPS,
        /// Own MAC.
        opt perm_address: Mac = PERM_ADDRESS,
    }

    /// A bond event: an entry of a bond's history, or a `NEWBONDEV` of the `bonds` group.
    pub struct BondEvent: bondev {
        /// The bond (events; absent inside a bond's own history).
        opt bond: String = BOND,
        /// When, Unix ns.
        req unix_ns: u64 = UNIX_NS,
        /// What.
        req kind: BondEventKind = KIND,
        /// The member.
        opt member: String = MEMBER,
        /// From/to, reason.
        opt detail: String = DETAIL,
        /// Active member afterwards.
        opt active: String = ACTIVE,
    }

    /// `GETBOND`: one bond by name, or all with `NLM_F_DUMP` (`bond show [BOND] [--events N]`).
    pub struct BondQuery: bond {
        /// The bond.
        opt name: String = NAME,
        /// How many recent events to include.
        opt event_limit: u32 = EVENT_LIMIT,
    }

    /// `SETBOND`: change options (`bond set BOND OPTION VALUE`) or switch the active member
    /// (`bond switch BOND MEMBER`).
    pub struct BondSet: bond {
        /// The bond.
        req name: String = NAME,
        /// Options to change.
        opt options: BondOptions = OPTIONS,
        /// Member to switch to.
        opt active: String = ACTIVE,
    }

    /// `NEWMEMBER` (`bond add BOND PORT`) and `DELMEMBER` (`bond release BOND MEMBER`).
    pub struct MemberRef: member {
        /// The bond.
        req bond: String = BOND,
        /// The port.
        req name: String = NAME,
    }
}

impl BondOptions {
    /// No option set (a `SETBOND` that changes nothing yet).
    pub fn none() -> Self {
        Self {
            miimon_ms: None,
            updelay_ms: None,
            downdelay_ms: None,
            primary: None,
            primary_reselect: None,
            all_members_active: None,
            drain_ms: None,
            fail_over_mac: None,
            num_grat_arp: None,
            num_unsol_na: None,
            peer_notif_delay_ms: None,
            reannounce: None,
            reannounce_table: None,
            reannounce_max_age_s: None,
            arp_interval_ms: None,
            arp_ip_target: Vec::new(),
            ns_ip6_target: Vec::new(),
            arp_validate: None,
            arp_all_targets: None,
            arp_missed_max: None,
            link_state_tracking: None,
        }
    }
}
