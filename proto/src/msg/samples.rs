//! One sample of every request and every message the daemon sends, with realistic values:
//! the round-trip tests, the dump tests and the fuzz seeds use them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::{
    attr::Mac,
    attrs::{self, IFF_LOWER_UP, IFF_UP},
    nl::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_MULTI},
};

pub(crate) const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10));
pub(crate) const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10));

fn stats(base: u64) -> LinkStats {
    LinkStats {
        rx_packets: base + 1,
        rx_bytes: base + 2,
        tx_packets: base + 3,
        tx_bytes: base + 4,
        rx_drop_runt: base + 5,
        rx_drop_no_output: base + 6,
        tx_drop_link_down: base + 7,
        tx_drop_ring_full: base + 8,
        rx_drop_backup: base + 9,
        tx_drop_no_active_member: base + 10,
        rx_drop_control_full: base + 11,
        rx_drop_no_socket: base + 12,
        xdp_rx_redirect: base + 13,
        to_control: base + 14,
    }
}

fn xsk() -> XskStats {
    XskStats {
        rx_dropped: 1,
        rx_invalid_descs: 2,
        tx_invalid_descs: 3,
        rx_ring_full: 4,
        rx_fill_ring_empty_descs: 5,
        tx_ring_empty_descs: u64::MAX,
    }
}

fn link() -> LinkMsg {
    LinkMsg {
        ifindex: 7,
        name: "m0".into(),
        kind: LinkKind::Port,
        flags: IFF_UP | IFF_LOWER_UP,
        operstate: Some(OperState::Up),
        mtu: Some(1500),
        address: Some(Mac([2, 0, 0, 0, 0, 1])),
        master: Some("bond0".into()),
        peer: None,
        queues: Some(2),
        bind_mode: Some(BindMode::Copy),
        xdp_mode: Some(XdpMode::Native),
        promiscuity: Some(1),
        stats: Some(stats(100)),
        xsk_stats: Some(xsk()),
        stamp_ns: Some(123_456_789),
        event_ns: None,
    }
}

fn bond_event(bond: Option<&str>) -> BondEvent {
    BondEvent {
        bond: bond.map(Into::into),
        unix_ns: 1_700_000_000_000_000_000,
        kind: BondEventKind::ActiveChanged,
        member: Some("m1".into()),
        detail: Some("m0 -> m1 (link down)".into()),
        active: Some("m1".into()),
    }
}

fn bond() -> BondMsg {
    let mut options = BondOptions::none();
    options.miimon_ms = Some(10);
    options.updelay_ms = Some(0);
    options.downdelay_ms = Some(0);
    options.primary = Some("m0".into());
    options.primary_reselect = Some(Reselect::Better);
    options.all_members_active = Some(false);
    options.drain_ms = Some(50);
    options.fail_over_mac = Some(FailOverMac::Follow);
    options.num_grat_arp = Some(1);
    options.num_unsol_na = Some(1);
    options.peer_notif_delay_ms = Some(0);
    options.reannounce = Some(true);
    options.reannounce_table = Some(256);
    options.reannounce_max_age_s = Some(300);
    options.arp_interval_ms = Some(50);
    options.arp_ip_target = vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))];
    options.ns_ip6_target = vec![V6];
    options.arp_validate = Some(ArpValidate::Active);
    options.arp_all_targets = Some(ArpAllTargets::Any);
    options.arp_missed_max = Some(2);
    options.link_state_tracking = Some(true);
    let member = |name: &str, state| MemberMsg {
        name: name.into(),
        ifindex: Some(8),
        link: MemberLink::Up,
        state,
        link_failures: 3,
        prio: -5,
        speed_mbps: 25_000,
        perm_address: Some(Mac([2, 0, 0, 0, 0, 2])),
    };
    BondMsg {
        name: "bond0".into(),
        mode: BondMode::ActiveBackup,
        carrier: true,
        active: Some("m1".into()),
        draining: Some("m0".into()),
        failovers: 4,
        options: Some(options),
        address: Some(Mac([2, 0, 0, 0, 0, 3])),
        addresses: vec![V4, V6],
        vlans: vec![
            BondVlan {
                id: 100,
                addresses: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10))],
            },
            BondVlan {
                id: 200,
                addresses: vec![],
            },
        ],
        notify: Some(BondNotify {
            grat_arp: 1,
            unsol_na: 2,
            reannounced: 3,
            mailbox_full: 0,
            rate_limited: 5,
        }),
        members: vec![
            member("m0", MemberState::Draining),
            member("m1", MemberState::Active),
        ],
        events: vec![bond_event(None), bond_event(None)],
        stats: Some(stats(0)),
    }
}

pub(crate) fn flow() -> FlowMsg {
    FlowMsg {
        id: 0x0001_0000_0000_002a,
        zone: 3,
        proto: 6,
        src: V4,
        dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        sport: Some(40000),
        dport: Some(443),
        in_link: Some(7),
        out_link: Some(8),
        tcp_state: Some(TcpState::Established),
        packets_orig: 10,
        bytes_orig: 1000,
        packets_reply: 9,
        bytes_reply: 20_000,
        first_ns: Some(1),
        last_ns: Some(2),
        worker: Some(0),
        event_ns: None,
        vlan_outer: Some(100),
        vlan_inner: None,
        expires_ms: Some(431_999_000),
        end_reason: None,
    }
}

fn filter() -> FlowFilter {
    FlowFilter {
        zone: Some(3),
        link: Some(7),
        addr: Some(IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0))),
        prefix_len: Some(48),
        l4_port: Some(443),
        proto: Some(6),
        tcp_state: Some(TcpState::TimeWait),
        min_packets: Some(2),
    }
}

pub(crate) fn tuple() -> FlowTuple {
    FlowTuple {
        zone: Some(0),
        proto: 17,
        src: V6,
        dst: V6,
        sport: Some(53),
        dport: Some(5353),
    }
}

/// One of every request, with the flags it is sent with.
pub(crate) fn requests() -> Vec<(Request, u16)> {
    let mut set = BondOptions::none();
    set.miimon_ms = Some(100);
    set.primary = Some(String::new());
    vec![
        (
            Request::GetLink(LinkQuery {
                ifindex: None,
                name: Some("m0".into()),
                kind: None,
                ext_mask: Some(attrs::EXT_STATS | attrs::EXT_XSK_STATS),
            }),
            NLM_F_ACK,
        ),
        (
            Request::GetLink(LinkQuery {
                ifindex: None,
                name: None,
                kind: Some(LinkKind::Bond),
                ext_mask: None,
            }),
            NLM_F_DUMP,
        ),
        (
            Request::AddLink(LinkAdd {
                name: "m2".into(),
                kind: Some(LinkKind::Port),
            }),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        ),
        (
            Request::DelLink(LinkDel {
                names: vec!["m2".into(), "m3".into()],
            }),
            NLM_F_ACK,
        ),
        (
            Request::SetLink(LinkSet::named("m0").with_flag(IFF_UP, true)),
            NLM_F_ACK,
        ),
        (
            Request::SetLink(LinkSet {
                ifindex: Some(7),
                name: None,
                flags: None,
                change: None,
                mtu: Some(9000),
            }),
            NLM_F_ACK,
        ),
        (
            Request::GetBond(BondQuery {
                name: Some("bond0".into()),
                event_limit: Some(50),
            }),
            0,
        ),
        (
            Request::SetBond(BondSet {
                name: "bond0".into(),
                options: Some(set),
                active: None,
            }),
            NLM_F_ACK,
        ),
        (
            Request::SetBond(BondSet {
                name: "bond0".into(),
                options: None,
                active: Some("m1".into()),
            }),
            NLM_F_ACK,
        ),
        (
            Request::AddMember(MemberRef {
                bond: "bond0".into(),
                name: "m2".into(),
            }),
            NLM_F_ACK,
        ),
        (
            Request::DelMember(MemberRef {
                bond: "bond0".into(),
                name: "m2".into(),
            }),
            NLM_F_ACK,
        ),
        (Request::GetWorker(WorkerQuery { index: None }), NLM_F_DUMP),
        (
            Request::GetStats(StatsQuery {
                link: Some("m0".into()),
            }),
            0,
        ),
        (Request::ClearStats(StatsQuery { link: None }), NLM_F_ACK),
        (Request::GetStatus(StatusQuery {}), 0),
        (
            Request::StartCapture(CaptureStart {
                target: "bond0".into(),
                file: "/tmp/bond0 with space.pcap".into(),
                direction: Some(CaptureDir::In),
            }),
            NLM_F_CREATE | NLM_F_ACK,
        ),
        (
            Request::StopCapture(CaptureRef {
                target: Some("bond0".into()),
            }),
            NLM_F_ACK,
        ),
        (Request::GetCapture(CaptureRef { target: None }), NLM_F_DUMP),
        (
            Request::GetFlow(FlowQuery {
                filter: Some(filter()),
                limit: Some(1000),
                tuple: None,
            }),
            NLM_F_DUMP,
        ),
        (
            Request::GetFlow(FlowQuery {
                filter: None,
                limit: None,
                tuple: Some(tuple()),
            }),
            0,
        ),
        (
            Request::DelFlow(FlowQuery {
                filter: Some(FlowFilter::any()),
                limit: None,
                tuple: None,
            }),
            NLM_F_ACK,
        ),
        (Request::GetFlowTable(FlowTableQuery { zone: Some(3) }), 0),
        (Request::GetConn(ConnQuery {}), 0),
        (
            Request::SetConn(ConnSet {
                strict: Some(true),
                dump_buf: Some(4096),
                join: Some(Group::Links.mask() | Group::Bonds.mask()),
                leave: Some(Group::Flows.mask()),
            }),
            NLM_F_ACK,
        ),
    ]
}

/// One of every message the daemon sends with a body, with its flags.
pub(crate) fn replies() -> Vec<(Message, u16)> {
    let mut gone = link();
    gone.stats = None;
    gone.xsk_stats = None;
    gone.event_ns = Some(1_700_000_000_000_000_001);
    vec![
        (Message::NewLink(link()), NLM_F_MULTI),
        (Message::DelLink(gone), 0),
        (Message::NewBond(bond()), 0),
        (
            Message::NewWorker(WorkerMsg {
                index: 0,
                core: 1,
                queues: vec![
                    WorkerQueue {
                        link: "up0".into(),
                        queue: 0,
                    },
                    WorkerQueue {
                        link: "m0".into(),
                        queue: 1,
                    },
                ],
                spare_queues: 2,
                loops: 1 << 40,
                busy_loops: 1 << 20,
                queues_attached: 1,
                queues_retired: 1,
                frames_reclaimed: 2048,
                frames: Some(Frames {
                    total: 8192,
                    free: 100,
                    in_fill: 4000,
                    in_tx: 92,
                }),
                pinned: Some(true),
                stamp_ns: Some(5),
            }),
            NLM_F_MULTI,
        ),
        (
            Message::NewStats(StatsMsg {
                stamp_ns: 9,
                link: None,
                totals: stats(1000),
                xsk_stats: Some(xsk()),
                cleared_ns: Some(1_700_000_000_000_000_000),
            }),
            0,
        ),
        (
            Message::NewStatus(StatusMsg {
                state: DaemonState::Running,
                pid: 4242,
                uptime_ns: 10_000_000_000,
                version: Some("0.1.0".into()),
                links: 3,
                bonds: 1,
                workers: 1,
                captures: 0,
                clients: 2,
                requests: 17,
                bad_requests: 1,
                rtnl_events: Some(4),
                rtnl_malformed: Some(0),
                rtnl_errors: None,
                events_lost: 0,
                dumps: Some(3),
                dumps_active: Some(1),
                flow_events: None,
            }),
            0,
        ),
        (
            Message::NewCapture(CaptureMsg {
                target: "m0".into(),
                file: "/tmp/m0.pcap".into(),
                direction: CaptureDir::Both,
                captured: 10,
                dropped: 1,
                written: 9,
                write_errors: 0,
                snaplen: 262_144,
            }),
            NLM_F_MULTI,
        ),
        (Message::NewBondEvent(bond_event(Some("bond0"))), 0),
        (
            Message::NewErrorEvent(ErrorEvent {
                unix_ns: 3,
                kind: ErrorKind::Capture,
                link: Some("m0".into()),
                errno: Some(libc::ENOSPC),
                msg: "pcap write failed: no space left on device".into(),
            }),
            0,
        ),
        (Message::NewFlow(flow()), NLM_F_MULTI),
        (
            Message::DelFlow(FlowMsg {
                event_ns: Some(4),
                tcp_state: Some(TcpState::Unknown(200)),
                end_reason: Some(EndReason::Flush),
                ..flow()
            }),
            0,
        ),
        (
            Message::NewFlowTable(FlowTableMsg {
                count: 1_000_000,
                capacity: 1 << 21,
                created: 2_000_000,
                expired: 1_000_000,
                evicted: 0,
                events_suppressed: 12,
                zone: None,
            }),
            0,
        ),
        (
            Message::NewConn(ConnMsg {
                strict: false,
                dump_buf: 32768,
                groups: Group::Links.mask(),
                events_lost: 0,
                uid: Some(1000),
                gid: Some(1000),
                pid: Some(99),
                admin: false,
            }),
            0,
        ),
    ]
}
