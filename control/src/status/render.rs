//! Text views of the snapshots, as `isopath status`, `isopath bond show` and `isopath rates`
//! print them.

use std::fmt::Write;

use super::{BondStatus, Status};

/// `isopath status`: ports with their counters, workers, housekeeping and the thread check.
pub fn status(v: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "isopathd pid {} uptime {} ms", v.pid, v.uptime_ms);
    for p in &v.ports {
        let _ = writeln!(
            o,
            "port {} link {} queues {} bind {} xdp {}",
            p.name,
            p.link,
            p.queues,
            p.bind.as_deref().unwrap_or("-"),
            p.xdp_mode.as_deref().unwrap_or("-"),
        );
        let _ = writeln!(
            o,
            "    rx {} pkts {} bytes   tx {} pkts {} bytes",
            p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes
        );
        let pairs = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
        };
        let xsk: Vec<String> = p
            .xsk
            .pairs()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        for (label, kv) in [
            ("drops", pairs(&p.drops)),
            ("parse errors", pairs(&p.parse_errors)),
            ("classes", pairs(&p.classes)),
            ("kernel xsk", xsk),
        ] {
            let _ = writeln!(o, "    {label}: {}", kv.join(", "));
        }
    }
    for w in &v.workers {
        let f = &w.frames;
        let _ = writeln!(
            o,
            "worker core {} loops {} busy {}  frames total {} free {} in_fill {} in_tx {}",
            w.core.map_or_else(|| "null".to_owned(), |c| c.to_string()),
            w.loops,
            w.busy_loops,
            f.total,
            f.free,
            f.in_fill,
            f.in_tx
        );
        let _ = writeln!(o, "    {}", flows_line(&w.flows));
    }
    let house: Vec<String> = v
        .placement
        .housekeeping_cores
        .iter()
        .map(usize::to_string)
        .collect();
    let t = &v.threads;
    let _ = writeln!(
        o,
        "housekeeping CPUs {}; threads {}, workers pinned {}, others on worker CPUs {}",
        house.join(","),
        t.threads,
        t.workers_pinned,
        t.offenders.len()
    );
    for x in &t.offenders {
        let _ = writeln!(
            o,
            "    thread {} ({}) may run on CPUs {}: {}",
            x.tid, x.name, x.allowed, x.problem
        );
    }
    if let Some(c) = &v.config {
        let timeouts: Vec<String> = c
            .flow_timeouts
            .iter()
            .map(|(k, s)| format!("{k} {s}"))
            .collect();
        let _ = writeln!(
            o,
            "config: {}, reloads {}, refused {}; flows strict {}, active_timeout {}, {}",
            c.path,
            c.reloads,
            c.reloads_refused,
            c.flows_strict,
            c.flow_active_timeout_s,
            timeouts.join(", ")
        );
        if let Some(r) = &c.last_refusal {
            let _ = writeln!(o, "    last reload refused: {r}");
        }
    }
    let l = &v.lifecycle;
    let _ = writeln!(
        o,
        "lifecycle: unregistered {} in {} batches, quiesces {} (last {} us, max {} us, timeouts {}), freed {}, tx_drop_loopback {}",
        l.unregistered,
        l.batches,
        l.quiesces,
        l.quiesce_last_us,
        l.quiesce_max_us,
        l.quiesce_timeouts,
        l.freed,
        l.tx_drop_loopback
    );
    for e in &l.kernel_events {
        let _ = writeln!(
            o,
            "    kernel: {} (index {}) {}: {}",
            e.port, e.ifindex, e.event, e.detail
        );
    }
    for d in &l.unregistering {
        let _ = writeln!(
            o,
            "    {} (index {}) {}, usage count {}",
            d.name, d.ifindex, d.state, d.refs
        );
    }
    if let Some(x) = &v.ipfix {
        let _ = writeln!(
            o,
            "ipfix: to {} (domain {}): records {}, messages {}, templates {}, dropped_channel {}, send_errors {}, flows {}",
            x.collectors.join(", "),
            x.observation_domain_id,
            x.records,
            x.messages,
            x.templates,
            x.dropped_channel,
            x.send_errors,
            x.flows
        );
    }
    o
}

/// A worker's flow table on one line of `isopath status`.
fn flows_line(f: &crate::flows::WorkerFlowStatus) -> String {
    match &f.counters {
        Some(c) if f.enabled => format!(
            "flows in_use {} capacity {} inserts {} expiries {} full {}",
            c.in_use, c.capacity, c.inserts, c.expiries, c.full
        ),
        _ => "flows: tracking off".to_owned(),
    }
}

/// `isopath bond show`: one bond like `/proc/net/bonding/bond0`, its last `events` events.
pub fn bond(b: &BondStatus, status: &Status, events: usize) -> String {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let opts = &b.options;
    let mut o = String::new();
    let _ = writeln!(o, "Bond: {}", b.name);
    let _ = writeln!(o, "Bonding Mode: fault-tolerance (active-backup)");
    let _ = writeln!(o, "Carrier: {}", b.carrier);
    let _ = writeln!(o, "Currently Active Member: {}", s(&b.active));
    let _ = writeln!(
        o,
        "Primary Member: {} (primary_reselect {})",
        s(&opts.primary),
        opts.primary_reselect.name()
    );
    let _ = writeln!(
        o,
        "MII Polling Interval (ms): {} (carrier events from rtnetlink)",
        opts.miimon_ms
    );
    let _ = writeln!(
        o,
        "Up Delay (ms): {}  Down Delay (ms): {}",
        opts.updelay_ms, opts.downdelay_ms
    );
    let _ = writeln!(
        o,
        "Peer Notification: num_grat_arp {} num_unsol_na {} delay {} ms, reannounce {}",
        opts.num_grat_arp, opts.num_unsol_na, opts.peer_notif_delay_ms, opts.reannounce
    );
    let _ = writeln!(
        o,
        "fail_over_mac: {}  MAC: {}  all_members_active: {}",
        opts.fail_over_mac.name(),
        b.mac,
        opts.all_members_active
    );
    let notifications = serde_json::to_string(&b.notifications).unwrap_or_default();
    let _ = writeln!(
        o,
        "Failovers: {}  Notifications: {notifications}",
        b.failovers
    );
    let _ = writeln!(o, "Addresses: {}", b.addresses.join(", "));
    for v in &b.vlans {
        let _ = writeln!(o, "VLAN {}: {}", v.id, v.addresses.join(", "));
    }
    for m in &b.members {
        let _ = writeln!(o);
        let _ = writeln!(o, "Member Interface: {} ({})", m.name, m.state.name());
        let _ = writeln!(o, "MII Status: {}", m.link);
        let _ = writeln!(o, "Speed: {} Mbps  Prio: {}", m.speed_mbps, m.prio);
        let _ = writeln!(o, "Link Failure Count: {}", m.link_failures);
        let _ = writeln!(o, "Permanent HW addr: {}", m.perm_mac);
        if let Some(p) = status.port(&m.name) {
            let backup = p
                .drops
                .get("rx_drop_backup")
                .map_or_else(|| "null".to_owned(), u64::to_string);
            let _ = writeln!(
                o,
                "Queues: {}  rx {} tx {}  rx_drop_backup {backup}",
                p.queues, p.rx_packets, p.tx_packets
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "Recent events:");
    for e in b.events.iter().skip(b.events.len().saturating_sub(events)) {
        let _ = writeln!(
            o,
            "  {}.{:09} {} {} {}",
            e.unix_ns / 1_000_000_000,
            e.unix_ns % 1_000_000_000,
            e.kind.name(),
            s(&e.member),
            e.detail
        );
    }
    o
}

/// `isopath rates`: per-port rates between two snapshots (`None` if `cur` names a port `prev`
/// does not have).
pub fn rates_line(prev: &Status, cur: &Status) -> Option<String> {
    let dt = (cur.uptime_ms.saturating_sub(prev.uptime_ms)).max(1) as f64 / 1000.0;
    let mut line = String::new();
    for p in &cur.ports {
        let q = prev.port(&p.name)?;
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        let drops: u64 = p.drops.values().sum();
        let pdrops: u64 = q.drops.values().sum();
        let _ = write!(
            line,
            "{}: rx {:>9.0} pps {:>8.2} Mb/s  tx {:>9.0} pps  drop {:>7.0} pps | ",
            p.name,
            rate(p.rx_packets, q.rx_packets),
            rate(p.rx_bytes, q.rx_bytes) * 8.0 / 1e6,
            rate(p.tx_packets, q.tx_packets),
            drops.saturating_sub(pdrops) as f64 / dt
        );
    }
    Some(line.trim_end_matches(" | ").to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        status::{
            BondDrops, BondOptionsStatus, ControlCounters, EventStatus, FrameCounts, Link,
            MemberState, MemberStatus, NotifyStatus, PortStatus, VlanStatus, WorkerStatus,
            XdpCounters, XskCounters,
        },
        topology::{Plan, Summary, ThreadCheck},
    };

    pub(crate) fn sample() -> Status {
        let port = |name: &str, rx: u64| PortStatus {
            name: name.into(),
            link: Link::Up,
            down_reason: None,
            queues: 2,
            bind: Some("copy".into()),
            xdp_mode: None,
            rx_packets: rx,
            rx_bytes: rx * 64,
            tx_packets: 5,
            tx_bytes: 320,
            drops: [
                ("rx_drop_backup".to_owned(), 7),
                ("rx_drop_runt".to_owned(), 1),
            ]
            .into(),
            parse_errors: [("parse_truncated".to_owned(), 2)].into(),
            classes: [("arp".to_owned(), 3), ("ipv4".to_owned(), 9)].into(),
            xdp: XdpCounters::default(),
            xsk: XskCounters {
                rx_ring_full: 4,
                ..XskCounters::default()
            },
        };
        let bond = BondStatus {
            name: "bond0".into(),
            mode: "active-backup".into(),
            carrier: Link::Up,
            active: Some("m0".into()),
            failovers: 2,
            options: BondOptionsStatus {
                miimon_ms: 10,
                updelay_ms: 0,
                downdelay_ms: 0,
                primary: None,
                primary_reselect: crate::bond::Reselect::Always,
                all_members_active: false,
                drain_ms: 50,
                fail_over_mac: crate::bond::FailOverMac::None,
                num_grat_arp: 1,
                num_unsol_na: 1,
                peer_notif_delay_ms: 0,
                reannounce: true,
                reannounce_table: 256,
                reannounce_max_age_s: 300,
                arp_interval_ms: None,
                arp_ip_target: None,
                arp_validate: None,
                arp_all_targets: None,
                arp_missed_max: None,
            },
            mac: "02:00:00:00:00:01".into(),
            addresses: vec!["198.18.0.10".into(), "2001:2::10".into()],
            vlans: vec![VlanStatus {
                id: 100,
                addresses: vec!["198.18.1.10".into()],
            }],
            notifications: NotifyStatus {
                grat_arp: 3,
                ..NotifyStatus::default()
            },
            members: vec![MemberStatus {
                name: "m0".into(),
                link: "up".into(),
                state: MemberState::Active,
                link_failures: 1,
                prio: 0,
                speed_mbps: 10_000,
                perm_mac: "02:00:00:00:00:01".into(),
            }],
            events: vec![EventStatus {
                unix_ns: 1_700_000_000_000_000_123,
                kind: crate::bond::EventKind::ActiveChanged,
                member: None,
                detail: "none -> m0 (start)".into(),
            }],
            tx_packets: 5,
            to_control: 1,
            drops: BondDrops::default(),
        };
        Status {
            state: "running".into(),
            pid: 42,
            uptime_ms: 1000,
            ports: vec![port("m0", 10), port("up0", 20)],
            workers: vec![WorkerStatus {
                core: None,
                flows: crate::flows::WorkerFlowStatus {
                    enabled: false,
                    counters: None,
                },
                loops: 9,
                busy_loops: 3,
                queues: 4,
                queues_attached_at_run_time: 0,
                queues_retired_at_run_time: 0,
                frames_reclaimed: 0,
                spare_queues: 2,
                frames: FrameCounts {
                    total: 4096,
                    free: 1,
                    in_fill: 2,
                    in_tx: 3,
                },
                last_loop_unix_ns: 1_700_000_000_500_000_000,
            }],
            bonds: vec![bond],
            captures: Vec::new(),
            control: ControlCounters::default(),
            placement: Plan {
                workers: Vec::new(),
                housekeeping_cores: vec![0, 2],
                isolated: Vec::new(),
                warnings: Vec::new(),
                decisions: Vec::new(),
                ports: Vec::new(),
                topology: Summary {
                    source: "test".into(),
                    packages: 1,
                    numa_nodes: Vec::new(),
                    cores: 2,
                    cpus: 2,
                    threads_per_core: 1,
                    caches: Vec::new(),
                },
            },
            threads: ThreadCheck::default(),
            rtnetlink: None,
            lifecycle: crate::status::LifecycleStatus {
                quiesces: 2,
                batches: 1,
                unregistered: 2,
                freed: 1,
                unregistering: vec![crate::status::UnregisteringDevice {
                    name: "m9".into(),
                    ifindex: 7,
                    refs: 1,
                    state: "unregistering".into(),
                }],
                ..Default::default()
            },
            ipfix: Some(crate::ipfix::IpfixStatus {
                collectors: vec!["198.18.0.100:4739".into()],
                observation_domain_id: 1,
                records: 40,
                messages: 4,
                ..Default::default()
            }),
            watchdog: None,
            config: None,
        }
    }

    #[test]
    fn a_status_survives_the_wire() {
        let s = sample();
        let line = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&line).unwrap(), s);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ports"][0]["link"], "up");
        assert_eq!(v["ports"][0]["drops"]["rx_drop_backup"], 7);
        assert_eq!(v["bonds"][0]["members"][0]["state"], "active");
        assert_eq!(v["workers"][0]["core"], serde_json::Value::Null);
        assert_eq!(v["rtnetlink"], serde_json::Value::Null);
    }

    #[test]
    fn status_text() {
        let t = status(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "isopathd pid 42 uptime 1000 ms");
        assert_eq!(lines[1], "port m0 link up queues 2 bind copy xdp -");
        assert_eq!(lines[2], "    rx 10 pkts 640 bytes   tx 5 pkts 320 bytes");
        assert_eq!(lines[3], "    drops: rx_drop_backup 7, rx_drop_runt 1");
        assert_eq!(lines[4], "    parse errors: parse_truncated 2");
        assert_eq!(lines[5], "    classes: arp 3, ipv4 9");
        assert_eq!(
            lines[6],
            "    kernel xsk: rx_dropped 0, rx_fill_ring_empty_descs 0, rx_invalid_descs 0, rx_ring_full 4, tx_invalid_descs 0, tx_ring_empty_descs 0"
        );
        assert_eq!(
            lines[13],
            "worker core null loops 9 busy 3  frames total 4096 free 1 in_fill 2 in_tx 3"
        );
        assert_eq!(lines[14], "    flows: tracking off");
        assert_eq!(
            lines[15],
            "housekeeping CPUs 0,2; threads 0, workers pinned 0, others on worker CPUs 0"
        );
        assert_eq!(
            lines[16],
            "lifecycle: unregistered 2 in 1 batches, quiesces 2 (last 0 us, max 0 us, timeouts 0), freed 1, tx_drop_loopback 0"
        );
        assert_eq!(lines[17], "    m9 (index 7) unregistering, usage count 1");
        assert_eq!(
            lines[18],
            "ipfix: to 198.18.0.100:4739 (domain 1): records 40, messages 4, templates 0, dropped_channel 0, send_errors 0, flows 0"
        );
        assert_eq!(lines.len(), 19);
        let mut on = sample();
        on.workers[0].flows = crate::flows::WorkerFlowStatus {
            enabled: true,
            counters: Some(crate::flows::WorkerFlows {
                worker: 0,
                in_use: 3,
                capacity: 64,
                inserts: 5,
                expiries: 2,
                full: 0,
            }),
        };
        assert_eq!(
            status(&on).lines().nth(14),
            Some("    flows in_use 3 capacity 64 inserts 5 expiries 2 full 0")
        );
    }

    #[test]
    fn bond_text() {
        let s = sample();
        let t = bond(&s.bonds[0], &s, 10);
        for want in [
            "Carrier: up",
            "Currently Active Member: m0",
            "Primary Member: - (primary_reselect always)",
            "Failovers: 2  Notifications: {\"grat_arp\":3,\"mailbox_full\":0,\"rate_limited\":0,\"reannounced\":0,\"unsol_na\":0}",
            "Addresses: 198.18.0.10, 2001:2::10",
            "VLAN 100: 198.18.1.10",
            "Member Interface: m0 (active)",
            "Queues: 2  rx 10 tx 5  rx_drop_backup 7",
            "  1700000000.000000123 active_changed - none -> m0 (start)",
        ] {
            assert!(t.lines().any(|l| l == want), "{want:?} not in\n{t}");
        }
        assert!(!bond(&s.bonds[0], &s, 0).contains("active_changed"));
    }

    #[test]
    fn rates_between_two_snapshots() {
        let a = sample();
        let mut b = sample();
        b.uptime_ms += 500;
        b.ports[0].rx_packets += 1000;
        *b.ports[0].drops.get_mut("rx_drop_runt").unwrap() += 50;
        let line = rates_line(&a, &b).unwrap();
        assert!(line.starts_with("m0: rx      2000 pps"), "{line}");
        assert!(
            line.contains("drop     100 pps | up0: rx         0 pps"),
            "{line}"
        );
        b.ports[1].name = "m9".into();
        assert_eq!(rates_line(&a, &b), None);
    }
}
