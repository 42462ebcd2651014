//! The status snapshot, from the workers' and the kernel's counters.

use std::sync::atomic::Ordering;

use isopath_datapath::{stats::DropReason, xsk::XskStats};

use super::{Daemon, PortIo, lock};
use crate::{
    capture::Capture,
    status::{
        BondDrops, BondStatus, ControlCounters, FrameCounts, LifecycleStatus, Link, PortStatus,
        RtnetlinkCounters, Status, UnregisteringDevice, WorkerStatus, XdpCounters, XskCounters,
    },
};

impl Daemon {
    /// The status snapshot: ports with their counters, workers with their frame audit.
    pub fn status(&self) -> Status {
        let workers = self
            .plane
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let c = w.handle.counters();
                WorkerStatus {
                    core: w.handle.core(),
                    flows: crate::flows::worker_status(i, w.handle.flow_reader()),
                    loops: c.loops.get(),
                    busy_loops: c.busy_loops.get(),
                    queues: w.handle.queues().len(),
                    queues_attached_at_run_time: c.queues_attached.get(),
                    queues_retired_at_run_time: c.queues_retired.get(),
                    frames_reclaimed: c.frames_reclaimed.get(),
                    spare_queues: w.handle.spare(),
                    frames: FrameCounts {
                        total: c.frames_total.get(),
                        free: c.frames_free.get(),
                        in_fill: c.frames_in_fill.get(),
                        in_tx: c.frames_in_tx.get(),
                    },
                    last_loop_unix_ns: self.loop_seen.get(i).map_or(0, |s| {
                        s.wall
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos() as u64)
                    }),
                }
            })
            .collect();
        Status {
            state: "running".to_owned(),
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            ports: self
                .registry
                .devices()
                .iter()
                .filter_map(|(_, d)| Some(self.port_status(&d.name, d.data.port()?)))
                .collect(),
            workers,
            bonds: self.bonds_status(),
            captures: self.plane.captures.iter().map(Capture::status).collect(),
            control: ControlCounters {
                requests: self.server.accepted,
                bad_requests: self.bad_requests,
            },
            placement: self.placement.clone(),
            threads: self.check_threads(),
            rtnetlink: self.rtnl.as_ref().map(|r| RtnetlinkCounters {
                events: r.events.load(Ordering::Relaxed),
                malformed: r.malformed.load(Ordering::Relaxed),
                errors: r.errors.load(Ordering::Relaxed),
            }),
            lifecycle: self.lifecycle_status(),
            ipfix: self.ipfix.as_ref().map(crate::ipfix::Exporter::status),
            watchdog: self
                .watchdog
                .as_ref()
                .map(|w| crate::status::WatchdogStatus {
                    timeout_ms: w.timeout().as_millis() as u64,
                    beats: w.beats,
                    withheld: w.withheld,
                }),
            config: self.config_status(),
        }
    }

    /// What a metrics scrape reads: the status, every socket's counters, when each worker's
    /// loop last moved, the netlink socket's counters.
    pub(super) fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        use crate::metrics::QueueSample;
        let devs = self.registry.devices();
        let mut queues = Vec::new();
        for (wi, w) in self.plane.workers.iter().enumerate() {
            for q in w.handle.queues() {
                let Some(io) = devs
                    .id_of(&q.ifname, crate::registry::DeviceKind::Port)
                    .and_then(|id| devs.get(id))
                    .and_then(|d| d.data.port())
                else {
                    continue;
                };
                let xsk = io
                    .xsk
                    .iter()
                    .find(|(qid, _)| *qid == q.queue)
                    .and_then(|(_, r)| r.read().ok())
                    .map(XskCounters::from);
                let c = &q.counters;
                queues.push(QueueSample {
                    port: q.ifname.clone(),
                    queue: q.queue,
                    worker: wi,
                    rx_packets: c.rx_packets.get(),
                    rx_bytes: c.rx_bytes.get(),
                    tx_packets: c.tx_packets.get(),
                    tx_bytes: c.tx_bytes.get(),
                    xsk,
                });
            }
        }
        crate::metrics::Snapshot {
            status: self.status(),
            queues,
            netlink: self.nl.as_ref().map(|n| n.counters),
            active_dumps: self.nl.as_ref().map_or(0, |n| n.active_dumps()),
            flow_events_sent: self.flow_events_sent,
        }
    }

    /// The registry's unregistrations and the workers' quiesces.
    fn lifecycle_status(&self) -> LifecycleStatus {
        let r = self.registry.stats();
        let q = self.plane.quiesce;
        let devs = self.registry.devices();
        LifecycleStatus {
            quiesces: r.quiesces,
            batches: r.batches,
            unregistered: r.unregistered,
            freed: r.freed,
            quiesce_timeouts: q.timeouts,
            quiesce_last_us: q.last_us,
            quiesce_max_us: q.max_us,
            late_sockets: q.late_sockets,
            unregistering: devs
                .unregistering()
                .map(|(id, d)| UnregisteringDevice {
                    name: d.name.clone(),
                    ifindex: id.index(),
                    refs: d.life.refs(),
                    state: "unregistering".to_owned(),
                })
                .collect(),
            tx_drop_loopback: devs
                .get(self.registry.loopback())
                .map_or(0, |lo| lo.life.tx_drop_loopback()),
            kernel_deleted: self.kernel_deleted_total,
            kernel_events: self.link_history.iter().cloned().collect(),
        }
    }

    pub(super) fn bonds_status(&self) -> Vec<BondStatus> {
        let book = lock(&self.plane.book);
        book.bonds
            .iter()
            .map(|b| {
                let mut v = b.status();
                let mut drops = BondDrops::default();
                for bi in self
                    .plane
                    .workers
                    .iter()
                    .flat_map(|w| w.handle.bonds())
                    .filter(|i| i.name == b.name)
                {
                    v.tx_packets += bi.counters.tx_packets.get();
                    v.to_control += bi.counters.rx_packets.get();
                    drops.tx_drop_no_active_member +=
                        bi.counters.drops(DropReason::TxNoActiveMember);
                    drops.rx_drop_control_full += bi.counters.drops(DropReason::RxControlFull);
                }
                v.drops = drops;
                v
            })
            .collect()
    }

    pub(super) fn port_status(&self, name: &str, p: &PortIo) -> PortStatus {
        let (mut rx_p, mut rx_b, mut tx_p, mut tx_b) = (0, 0, 0, 0);
        let mut drops = [0u64; DropReason::ALL.len()];
        for q in self
            .plane
            .workers
            .iter()
            .flat_map(|w| w.handle.queues())
            .filter(|q| q.ifname == name)
        {
            let c = &q.counters;
            rx_p += c.rx_packets.get();
            rx_b += c.rx_bytes.get();
            tx_p += c.tx_packets.get();
            tx_b += c.tx_bytes.get();
            for (d, r) in drops.iter_mut().zip(DropReason::ALL) {
                *d += c.drops(r);
            }
        }
        let mut drop_map: std::collections::BTreeMap<String, u64> = drops
            .iter()
            .zip(DropReason::ALL)
            .map(|(d, r)| (r.name().to_owned(), *d))
            .collect();
        let parse = crate::parse_status::ParseCounters::sum(
            self.plane
                .workers
                .iter()
                .flat_map(|w| w.handle.queues())
                .filter(|q| q.ifname == name)
                .map(|q| &**q.counters),
        );
        for (k, v) in &parse.parse_drops {
            drop_map.insert((*k).to_owned(), *v);
        }
        let xdp = p.prog.stats().ok().unwrap_or_default();
        drop_map.insert("rx_drop_no_socket".into(), xdp.rx_drop_no_socket);
        let mut k = XskStats::default();
        for (_, r) in &p.xsk {
            if let Ok(s) = r.read() {
                k.rx_dropped += s.rx_dropped;
                k.rx_invalid_descs += s.rx_invalid_descs;
                k.tx_invalid_descs += s.tx_invalid_descs;
                k.rx_ring_full += s.rx_ring_full;
                k.rx_fill_ring_empty_descs += s.rx_fill_ring_empty_descs;
                k.tx_ring_empty_descs += s.tx_ring_empty_descs;
            }
        }
        let owned = |m: &std::collections::BTreeMap<&'static str, u64>| {
            m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        PortStatus {
            name: name.to_owned(),
            link: Link::from_up(p.link.is_up()),
            down_reason: self.mtu_down.get(name).cloned(),
            queues: p.xsk.len(),
            bind: p.modes.first().map(|m| m.to_string()),
            xdp_mode: p.prog.mode().map(|m| m.to_string()),
            rx_packets: rx_p,
            rx_bytes: rx_b,
            tx_packets: tx_p,
            tx_bytes: tx_b,
            drops: drop_map,
            parse_errors: owned(&parse.parse_errors),
            classes: owned(&parse.classes),
            xdp: XdpCounters {
                rx_redirect: xdp.rx_redirect,
                rx_drop_no_socket: xdp.rx_drop_no_socket,
            },
            xsk: k.into(),
        }
    }
}
