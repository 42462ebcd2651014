//! Typed snapshots of the daemon's state: what `status` answers, what the CLI renders and
//! what `--json` prints. The daemon builds them from its live state (and the workers'
//! published counters); nothing reads them back by string key. The field names are the wire
//! format of the control socket (unchanged from the untyped replies they replace).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    bond::{ArpValidate, EventKind, FailOverMac, Reselect},
    topology::{self, ThreadCheck},
};

pub mod render;

/// Up or down: a port's link, a bond's carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// Carrier (or an active member).
    Up,
    /// None.
    Down,
}

impl Link {
    /// `Up` when `up`.
    pub fn from_up(up: bool) -> Self {
        if up { Self::Up } else { Self::Down }
    }

    /// The word shown and sent: `up`, `down`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The daemon's state, as `isopath status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `running`.
    pub state: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Since start, in milliseconds.
    pub uptime_ms: u64,
    /// Every registered port.
    pub ports: Vec<PortStatus>,
    /// Every worker.
    pub workers: Vec<WorkerStatus>,
    /// Every bond.
    pub bonds: Vec<BondStatus>,
    /// Running captures.
    pub captures: Vec<CaptureStatus>,
    /// Control requests answered.
    pub control: ControlCounters,
    /// Where workers and housekeeping run, and why.
    pub placement: topology::Plan,
    /// Which threads may run on worker CPUs.
    pub threads: ThreadCheck,
    /// The rtnetlink link-event listener (`None` when it could not start).
    pub rtnetlink: Option<RtnetlinkCounters>,
    /// Device lifecycle: unregistrations, their quiesces, devices not freed yet, the
    /// loopback's sink (absent from older daemons' replies: all zero).
    #[serde(default)]
    pub lifecycle: LifecycleStatus,
    /// IPFIX export counters (`None` without `[ipfix]`, and from older daemons).
    #[serde(default)]
    pub ipfix: Option<crate::ipfix::IpfixStatus>,
    /// The service manager's watchdog (`None`: not asked for, no `WATCHDOG_USEC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<WatchdogStatus>,
    /// The configuration in force and its reloads (`None`: started without a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigStatus>,
}

/// The configuration in force: its file, what reloads did, and the live values a reload
/// changes that no other part of the status shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The file.
    pub path: String,
    /// Reloads applied (a file that changed nothing counts).
    pub reloads: u64,
    /// Reloads refused (a field that cannot change live, or a bad file): nothing changed.
    pub reloads_refused: u64,
    /// What the last refused reload said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<String>,
    /// `[flows] strict`.
    pub flows_strict: bool,
    /// The flow idle timeouts in force, seconds, by their `[flows]` key (empty when flow
    /// tracking is off).
    pub flow_timeouts: BTreeMap<String, u32>,
    /// The active timeout in force, seconds (0: none).
    pub flow_active_timeout_s: u32,
}

/// `WATCHDOG=1` beats: sent only while every worker's loop moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogStatus {
    /// systemd's timeout (`WATCHDOG_USEC`), in ms; beats go every half of it.
    pub timeout_ms: u64,
    /// Beats sent.
    pub beats: u64,
    /// Beats withheld because a worker had stalled.
    pub withheld: u64,
}

/// Device lifecycle counters ([`crate::registry`]'s batched unregistration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleStatus {
    /// Quiesces (every worker passing a grace point): exactly 2 per batch, whatever its size.
    pub quiesces: u64,
    /// Batches unregistered (`port del A B C` is one).
    pub batches: u64,
    /// Devices unregistered.
    pub unregistered: u64,
    /// Devices freed (their last reference gone).
    pub freed: u64,
    /// Quiesces that gave up waiting for a worker (0 unless a worker is stuck).
    pub quiesce_timeouts: u64,
    /// The last quiesce's wait, in microseconds.
    pub quiesce_last_us: u64,
    /// The longest quiesce wait, in microseconds.
    pub quiesce_max_us: u64,
    /// Sockets a worker still held after the first quiesce of their batch.
    pub late_sockets: u64,
    /// Devices unregistered but still referenced (on the todo list): `unregistering`.
    pub unregistering: Vec<UnregisteringDevice>,
    /// Frames sent to the loopback (which drops them).
    pub tx_drop_loopback: u64,
    /// Ports whose interface the kernel deleted underneath the daemon (unregistered then).
    #[serde(default)]
    pub kernel_deleted: u64,
    /// What the kernel did to ports, the last 16 (oldest first).
    #[serde(default)]
    pub kernel_events: Vec<KernelLinkEvent>,
}

/// Something the kernel did to a port's interface underneath the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLinkEvent {
    /// When (ns since the Unix epoch).
    pub unix_ns: u64,
    /// The port.
    pub port: String,
    /// Its interface index.
    pub ifindex: u32,
    /// `deleted`.
    pub event: String,
    /// What the daemon did.
    pub detail: String,
}

/// A device on the todo list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisteringDevice {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Its usage count.
    pub refs: u64,
    /// `unregistering`.
    pub state: String,
}

impl Status {
    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortStatus> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// Control requests: every one accepted, and those refused or unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlCounters {
    /// Connections accepted.
    pub requests: u64,
    /// Requests refused, unreadable or failed.
    pub bad_requests: u64,
}

/// The rtnetlink listener's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtnetlinkCounters {
    /// Link events delivered.
    pub events: u64,
    /// Malformed messages skipped.
    pub malformed: u64,
    /// Receive errors.
    pub errors: u64,
}

/// One port: link, sockets, counters summed over its sockets on every worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    /// Interface name.
    pub name: String,
    /// Its link, as the workers see it.
    pub link: Link,
    /// Why the daemon holds it down, if it does (an MTU the frames cannot hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_reason: Option<String>,
    /// AF_XDP sockets (one per RX queue).
    pub queues: usize,
    /// Bind mode of its sockets (`copy`, `zero-copy`).
    pub bind: Option<String>,
    /// XDP attach mode (`native`, `generic`).
    pub xdp_mode: Option<String>,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Every drop reason (worker, strict parse, XDP program) and its count.
    pub drops: BTreeMap<String, u64>,
    /// Frames that did not parse, by reason.
    pub parse_errors: BTreeMap<String, u64>,
    /// Frames received by class.
    pub classes: BTreeMap<String, u64>,
    /// The XDP program's counters.
    pub xdp: XdpCounters,
    /// The kernel's per-socket statistics, summed.
    pub xsk: XskCounters,
}

/// The XDP program's counters of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpCounters {
    /// Frames redirected into a socket.
    pub rx_redirect: u64,
    /// Frames on a queue without a socket, dropped.
    pub rx_drop_no_socket: u64,
}

/// `XDP_STATISTICS` summed over a port's sockets (fields in name order, as shown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XskCounters {
    /// Dropped by the kernel for other reasons.
    pub rx_dropped: u64,
    /// The fill ring was empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// The RX ring was full.
    pub rx_ring_full: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// The TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

impl From<isopath_datapath::xsk::XskStats> for XskCounters {
    fn from(k: isopath_datapath::xsk::XskStats) -> Self {
        Self {
            rx_dropped: k.rx_dropped,
            rx_fill_ring_empty_descs: k.rx_fill_ring_empty_descs,
            rx_invalid_descs: k.rx_invalid_descs,
            rx_ring_full: k.rx_ring_full,
            tx_invalid_descs: k.tx_invalid_descs,
            tx_ring_empty_descs: k.tx_ring_empty_descs,
        }
    }
}

impl XskCounters {
    /// (name, value), in name order.
    pub fn pairs(&self) -> [(&'static str, u64); 6] {
        [
            ("rx_dropped", self.rx_dropped),
            ("rx_fill_ring_empty_descs", self.rx_fill_ring_empty_descs),
            ("rx_invalid_descs", self.rx_invalid_descs),
            ("rx_ring_full", self.rx_ring_full),
            ("tx_invalid_descs", self.tx_invalid_descs),
            ("tx_ring_empty_descs", self.tx_ring_empty_descs),
        ]
    }
}

/// One worker: its loop, its sockets, its frame audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The CPU it is pinned to.
    pub core: Option<usize>,
    /// Its flow table's counters.
    pub flows: crate::flows::WorkerFlowStatus,
    /// Poll loops run.
    pub loops: u64,
    /// Loops that moved at least one frame.
    pub busy_loops: u64,
    /// Sockets it polls.
    pub queues: usize,
    /// Sockets handed to it at run time (`port add`).
    pub queues_attached_at_run_time: u64,
    /// Sockets it gave back (`port del`).
    pub queues_retired_at_run_time: u64,
    /// Frames taken back from retired sockets.
    pub frames_reclaimed: u64,
    /// Free slots for sockets added at run time.
    pub spare_queues: usize,
    /// Where its frames are.
    pub frames: FrameCounts,
    /// When its loop counter last moved, as the control loop saw it (every 5 ms), in ns since
    /// the Unix epoch (0 from older daemons).
    #[serde(default)]
    pub last_loop_unix_ns: u64,
}

/// A worker's frames by place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameCounts {
    /// UMEM frames.
    pub total: u64,
    /// In its free pool.
    pub free: u64,
    /// In fill rings.
    pub in_fill: u64,
    /// In TX rings, waiting for completion.
    pub in_tx: u64,
}

/// One bond, like `/proc/net/bonding/bond0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondStatus {
    /// Name.
    pub name: String,
    /// `active-backup`.
    pub mode: String,
    /// Up while a member is active.
    pub carrier: Link,
    /// The active member.
    pub active: Option<String>,
    /// Times the active member changed.
    pub failovers: u64,
    /// Its options.
    pub options: BondOptionsStatus,
    /// The bond's MAC.
    pub mac: String,
    /// The appliance's own addresses on the bond.
    pub addresses: Vec<String>,
    /// 802.1Q VLANs over the bond.
    pub vlans: Vec<VlanStatus>,
    /// Peer notification frames.
    pub notifications: NotifyStatus,
    /// Members, in the datapath's order.
    pub members: Vec<MemberStatus>,
    /// Recent events, oldest first.
    pub events: Vec<EventStatus>,
    /// Frames sent through the bond (all workers).
    #[serde(default)]
    pub tx_packets: u64,
    /// Frames handed to control (ARP, NS, frames for the bond's own MAC).
    #[serde(default)]
    pub to_control: u64,
    /// The bond's own drops.
    #[serde(default)]
    pub drops: BondDrops,
}

/// A bond's options as running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondOptionsStatus {
    /// miimon period.
    pub miimon_ms: u64,
    /// Delay before a member counts as up.
    pub updelay_ms: u64,
    /// Delay before a member counts as down.
    pub downdelay_ms: u64,
    /// The preferred member.
    pub primary: Option<String>,
    /// When the primary takes over again.
    pub primary_reselect: Reselect,
    /// Accept frames on backups too.
    pub all_members_active: bool,
    /// How long a planned switch keeps accepting the old member's frames.
    pub drain_ms: u64,
    /// Which MAC the bond's own frames carry.
    pub fail_over_mac: FailOverMac,
    /// Gratuitous ARPs per address.
    pub num_grat_arp: u32,
    /// Unsolicited NAs per address.
    pub num_unsol_na: u32,
    /// Gap between repeated notifications.
    pub peer_notif_delay_ms: u64,
    /// Re-announce the MACs seen behind the bond.
    pub reannounce: bool,
    /// Entries of the seen-MAC table.
    pub reannounce_table: usize,
    /// Age limit of re-announced MACs.
    pub reannounce_max_age_s: u16,
    /// ARP monitor period (none: carrier monitoring).
    pub arp_interval_ms: Option<u64>,
    /// ARP targets.
    pub arp_ip_target: Option<Vec<String>>,
    /// ARP validation.
    pub arp_validate: Option<ArpValidate>,
    /// `any` or `all`.
    pub arp_all_targets: Option<String>,
    /// Intervals without proof before a member is down.
    pub arp_missed_max: Option<u32>,
}

/// One VLAN over a bond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanStatus {
    /// VLAN id.
    pub id: u16,
    /// Its addresses.
    pub addresses: Vec<String>,
}

/// Peer notification counters (fields in name order, as `bond show` prints them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyStatus {
    /// Gratuitous ARPs queued.
    pub grat_arp: u64,
    /// Frames not queued because the mailbox was full.
    pub mailbox_full: u64,
    /// Re-announcement bursts skipped by the rate limit.
    pub rate_limited: u64,
    /// MAC re-announcements queued.
    pub reannounced: u64,
    /// Unsolicited NAs queued.
    pub unsol_na: u64,
}

/// A member's role in its bond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Carries the bond's traffic.
    Active,
    /// Standing by.
    Backup,
    /// The previous active member of a planned switch, still accepted on RX.
    Draining,
    /// Taken out of the bond.
    Released,
}

impl MemberState {
    /// The word shown and sent.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Backup => "backup",
            Self::Draining => "draining",
            Self::Released => "released",
        }
    }
}

/// One member of a bond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Interface name.
    pub name: String,
    /// Its link as the bond sees it (`up`, `going down`, `down`, `going up`).
    pub link: String,
    /// Its role.
    pub state: MemberState,
    /// Times its link went down.
    pub link_failures: u64,
    /// Selection priority.
    pub prio: i32,
    /// Speed in Mb/s.
    pub speed_mbps: u32,
    /// Its own MAC.
    pub perm_mac: String,
}

/// One bond event, stamped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventStatus {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// What happened.
    pub kind: EventKind,
    /// The member concerned.
    pub member: Option<String>,
    /// From/to, reason.
    pub detail: String,
}

/// A bond's own drops, summed over the workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondDrops {
    /// Frames for the bond while no member was active.
    pub tx_drop_no_active_member: u64,
    /// Frames for control dropped because its queue was full.
    pub rx_drop_control_full: u64,
}

/// A capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStatus {
    /// The port or bond captured.
    pub target: String,
    /// The pcap file.
    pub file: String,
    /// `in`, `out`, `both`.
    pub direction: String,
    /// Frames copied by the workers.
    pub captured: u64,
    /// Frames the ring had no room for.
    pub dropped: u64,
    /// Records written.
    pub written: u64,
    /// Failed writes.
    pub write_errors: u64,
    /// Bytes kept per frame.
    pub snaplen: usize,
}

impl std::fmt::Display for CaptureStatus {
    /// As JSON, the way the reply carries it (for log lines).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_on_the_wire() {
        assert_eq!(serde_json::to_value(Link::Up).unwrap(), "up");
        assert_eq!(
            serde_json::to_value(MemberState::Draining).unwrap(),
            "draining"
        );
        for s in [
            MemberState::Active,
            MemberState::Backup,
            MemberState::Draining,
            MemberState::Released,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
        let x = XskCounters {
            rx_ring_full: 3,
            ..XskCounters::default()
        };
        let v = serde_json::to_value(x).unwrap();
        for (k, n) in x.pairs() {
            assert_eq!(v[k], n, "{k}");
        }
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        let names: Vec<&str> = x.pairs().iter().map(|p| p.0).collect();
        assert_eq!(keys, names);
    }
}
