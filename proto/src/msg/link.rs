//! Links: ports, bonds, loopback ports and capture taps, their counters, and the link requests
//! (`link show`, `port add|del`, `link set`).

use crate::{
    attr::{Mac, record, wire_enum},
    attrs::{IFF_PROMISC, IFF_UP, link, link_stats, xsk_stats},
};

wire_enum! {
    /// What a link is.
    pub enum LinkKind {
        /// An interface driven through AF_XDP.
        Port = 1 => "port",
        /// An active-backup bond over ports.
        Bond = 2 => "bond",
        /// An in-memory loopback port.
        Loopback = 3 => "loopback",
        /// A capture tap.
        Capture = 4 => "capture",
    }

    /// RFC 2863 operational state, the kernel's `IF_OPER_*` numbers.
    pub enum OperState {
        /// `IF_OPER_UNKNOWN`.
        Unset = 0 => "unknown",
        /// `IF_OPER_NOTPRESENT`.
        NotPresent = 1 => "notpresent",
        /// `IF_OPER_DOWN`.
        Down = 2 => "down",
        /// `IF_OPER_LOWERLAYERDOWN`.
        LowerLayerDown = 3 => "lowerlayerdown",
        /// `IF_OPER_TESTING`.
        Testing = 4 => "testing",
        /// `IF_OPER_DORMANT`.
        Dormant = 5 => "dormant",
        /// `IF_OPER_UP`.
        Up = 6 => "up",
    }

    /// How a link's AF_XDP sockets are bound.
    pub enum BindMode {
        /// `XDP_COPY`.
        Copy = 1 => "copy",
        /// `XDP_ZEROCOPY`.
        ZeroCopy = 2 => "zero-copy",
    }

    /// How a link's XDP program is attached.
    pub enum XdpMode {
        /// `XDP_FLAGS_DRV_MODE`.
        Native = 1 => "native",
        /// `XDP_FLAGS_SKB_MODE`.
        Generic = 2 => "generic",
    }
}

record! {
    /// A link as the daemon reports it: a `GETLINK` reply or dump record, a `NEWLINK` or
    /// `DELLINK` event of the `links` group.
    pub struct LinkMsg: link {
        /// Device index.
        req ifindex: u32 = IFINDEX,
        /// Name.
        req name: String = NAME,
        /// Kind.
        req kind: LinkKind = KIND,
        /// `IFF_*` flags.
        req flags: u32 = FLAGS,
        /// Operational state.
        opt operstate: OperState = OPERSTATE,
        /// MTU.
        opt mtu: u32 = MTU,
        /// MAC address.
        opt address: Mac = ADDRESS,
        /// The bond it is a member of.
        opt master: String = MASTER,
        /// The link cross-connected to it.
        opt peer: String = PEER,
        /// Datapath queues.
        opt queues: u32 = QUEUES,
        /// AF_XDP bind mode.
        opt bind_mode: BindMode = BIND_MODE,
        /// XDP attach mode.
        opt xdp_mode: XdpMode = XDP_MODE,
        /// Promiscuity holders.
        opt promiscuity: u32 = PROMISCUITY,
        /// Counters (when asked for with `EXT_STATS`).
        opt stats: LinkStats = STATS,
        /// `XDP_STATISTICS` (when asked for with `EXT_XSK_STATS`).
        opt xsk_stats: XskStats = XSK_STATS,
        /// When the counters were read.
        opt stamp_ns: u64 = STAMP_NS,
        /// Events: when it happened.
        opt event_ns: u64 = EVENT_NS,
    }

    /// A link's datapath counters.
    pub struct LinkStats: link_stats {
        /// Frames received.
        req rx_packets: u64 = RX_PACKETS,
        /// Bytes received.
        req rx_bytes: u64 = RX_BYTES,
        /// Frames sent.
        req tx_packets: u64 = TX_PACKETS,
        /// Bytes sent.
        req tx_bytes: u64 = TX_BYTES,
        /// `rx_drop_runt`.
        req rx_drop_runt: u64 = RX_DROP_RUNT,
        /// `rx_drop_no_output`.
        req rx_drop_no_output: u64 = RX_DROP_NO_OUTPUT,
        /// `tx_drop_link_down`.
        req tx_drop_link_down: u64 = TX_DROP_LINK_DOWN,
        /// `tx_drop_ring_full`.
        req tx_drop_ring_full: u64 = TX_DROP_RING_FULL,
        /// `rx_drop_backup`.
        req rx_drop_backup: u64 = RX_DROP_BACKUP,
        /// `tx_drop_no_active_member`.
        req tx_drop_no_active_member: u64 = TX_DROP_NO_ACTIVE_MEMBER,
        /// `rx_drop_control_full`.
        req rx_drop_control_full: u64 = RX_DROP_CONTROL_FULL,
        /// `rx_drop_no_socket` (the XDP program's).
        req rx_drop_no_socket: u64 = RX_DROP_NO_SOCKET,
        /// Redirected by the XDP program.
        req xdp_rx_redirect: u64 = XDP_RX_REDIRECT,
        /// Handed to control.
        req to_control: u64 = TO_CONTROL,
    }

    /// `struct xdp_statistics`, summed over a link's sockets.
    pub struct XskStats: xsk_stats {
        /// `rx_dropped`.
        req rx_dropped: u64 = RX_DROPPED,
        /// `rx_invalid_descs`.
        req rx_invalid_descs: u64 = RX_INVALID_DESCS,
        /// `tx_invalid_descs`.
        req tx_invalid_descs: u64 = TX_INVALID_DESCS,
        /// `rx_ring_full`.
        req rx_ring_full: u64 = RX_RING_FULL,
        /// `rx_fill_ring_empty_descs`.
        req rx_fill_ring_empty_descs: u64 = RX_FILL_RING_EMPTY_DESCS,
        /// `tx_ring_empty_descs`.
        req tx_ring_empty_descs: u64 = TX_RING_EMPTY_DESCS,
    }

    /// `GETLINK`: one link by index or name; with `NLM_F_DUMP` all of them, or those of one
    /// kind (`link show [type KIND]`).
    pub struct LinkQuery: link {
        /// By index.
        opt ifindex: u32 = IFINDEX,
        /// By name.
        opt name: String = NAME,
        /// Dump filter: only links of this kind.
        opt kind: LinkKind = KIND,
        /// What to include (`EXT_*` bits).
        opt ext_mask: u32 = EXT_MASK,
    }

    /// `NEWLINK` with `NLM_F_CREATE`: register an interface as a port (`port add IFNAME`).
    pub struct LinkAdd: link {
        /// The interface.
        req name: String = NAME,
        /// What to make it (only `port` today; absent means port).
        opt kind: LinkKind = KIND,
    }

    /// `DELLINK`: unregister links, all or none (`port del IFNAME...`).
    pub struct LinkDel: link {
        /// The links.
        list names: String = NAMES,
    }

    /// `SETLINK`: `link set DEV up|down|promisc on|off|mtu N`. The flags to change are the
    /// bits of `change`, their new values those bits of `flags` (`ifi_flags`/`ifi_change`).
    pub struct LinkSet: link {
        /// By index.
        opt ifindex: u32 = IFINDEX,
        /// By name.
        opt name: String = NAME,
        /// New flag values.
        opt flags: u32 = FLAGS,
        /// Which flags change.
        opt change: u32 = CHANGE,
        /// New MTU.
        opt mtu: u32 = MTU,
    }
}

impl LinkSet {
    /// A change of the link named `name`, nothing set yet.
    pub fn named(name: &str) -> Self {
        Self {
            ifindex: None,
            name: Some(name.to_owned()),
            flags: None,
            change: None,
            mtu: None,
        }
    }

    /// Sets flag bits `bits` to `on`.
    pub fn with_flag(mut self, bits: u32, on: bool) -> Self {
        let f = self.flags.unwrap_or(0) & !bits;
        self.flags = Some(if on { f | bits } else { f });
        self.change = Some(self.change.unwrap_or(0) | bits);
        self
    }

    /// What the request does to flag bit `bit`: `Some(on)` when it changes it.
    pub fn flag(&self, bit: u32) -> Option<bool> {
        (self.change.unwrap_or(0) & bit != 0).then(|| self.flags.unwrap_or(0) & bit != 0)
    }

    /// `up` / `down`.
    pub fn up(&self) -> Option<bool> {
        self.flag(IFF_UP)
    }

    /// `promisc on|off`.
    pub fn promisc(&self) -> Option<bool> {
        self.flag(IFF_PROMISC)
    }
}

impl LinkStats {
    /// All counters zero.
    pub fn zero() -> Self {
        Self {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            rx_drop_runt: 0,
            rx_drop_no_output: 0,
            tx_drop_link_down: 0,
            tx_drop_ring_full: 0,
            rx_drop_backup: 0,
            tx_drop_no_active_member: 0,
            rx_drop_control_full: 0,
            rx_drop_no_socket: 0,
            xdp_rx_redirect: 0,
            to_control: 0,
        }
    }

    /// Every drop counter with its name (the names of `isopath status` and the datapath's
    /// `DropReason`).
    pub fn drops(&self) -> [(&'static str, u64); 8] {
        [
            ("rx_drop_runt", self.rx_drop_runt),
            ("rx_drop_no_output", self.rx_drop_no_output),
            ("tx_drop_link_down", self.tx_drop_link_down),
            ("tx_drop_ring_full", self.tx_drop_ring_full),
            ("rx_drop_backup", self.rx_drop_backup),
            ("tx_drop_no_active_member", self.tx_drop_no_active_member),
            ("rx_drop_control_full", self.rx_drop_control_full),
            ("rx_drop_no_socket", self.rx_drop_no_socket),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_set_flags_follow_ifi_change() {
        let s = LinkSet::named("m0")
            .with_flag(IFF_UP, false)
            .with_flag(IFF_PROMISC, true);
        assert_eq!(s.flags, Some(IFF_PROMISC));
        assert_eq!(s.change, Some(IFF_UP | IFF_PROMISC));
        assert_eq!((s.up(), s.promisc()), (Some(false), Some(true)));
        assert_eq!(LinkSet::named("m0").up(), None);
    }

    #[test]
    fn every_datapath_drop_reason_has_a_counter_attribute() {
        // Adding a drop reason to the datapath without a protocol attribute fails here.
        let names: Vec<&str> = LinkStats::zero().drops().iter().map(|d| d.0).collect();
        for r in isopath_datapath::stats::DropReason::ALL {
            assert!(names.contains(&r.name()), "{} has no attribute", r.name());
            let attr = r.name().to_uppercase();
            assert!(
                link_stats::NEST.attrs.iter().any(|a| a.name == attr),
                "link_stats lacks {attr}"
            );
        }
    }
}
