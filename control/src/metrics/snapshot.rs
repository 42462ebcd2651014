//! What a scrape reads: a snapshot the control loop publishes when the endpoint asks for one,
//! and the metric families made from it.
//!
//! The endpoint's thread never touches the control loop's state: it sets [`Published::want`]
//! and waits (bounded) for the loop to publish a [`Snapshot`] on its next turn. A loop that is
//! busy longer (a handler that blocks it) leaves the page one snapshot old, counted as stale.
//! Nothing here walks a flow table: the flow figures are the workers' counters.

use std::{
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::text::Family;
use crate::{
    bond::EventKind,
    nlserver::NlCounters,
    status::{Link, MemberState, Status, XskCounters},
};

/// One socket (a port's queue) and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSample {
    /// The port.
    pub port: String,
    /// The queue id.
    pub queue: u32,
    /// The worker that polls it.
    pub worker: usize,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// The kernel's `XDP_STATISTICS` of the socket (`None`: unreadable).
    pub xsk: Option<XskCounters>,
}

/// What the control loop publishes for a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The status, as `isopath status -j` shows it.
    pub status: Status,
    /// Every socket.
    pub queues: Vec<QueueSample>,
    /// The netlink-format socket's counters.
    pub netlink: Option<NlCounters>,
    /// Dumps holding a cursor now.
    pub active_dumps: usize,
    /// Flow events sent to the `flows` group.
    pub flow_events_sent: u64,
}

/// The slot between the control loop (publisher) and the endpoint (reader).
#[derive(Debug, Default)]
pub struct Published {
    slot: Mutex<Slot>,
    ready: Condvar,
    want: AtomicBool,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u64,
    snapshot: Option<Arc<Snapshot>>,
}

impl Published {
    /// Whether a scrape waits for a snapshot; clears the request (the control loop asks this
    /// once per turn and publishes when it is true).
    pub fn wanted(&self) -> bool {
        self.want.swap(false, Ordering::AcqRel)
    }

    /// Publishes `s` and wakes the waiting scrape.
    pub fn publish(&self, s: Snapshot) {
        let mut g = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        g.generation += 1;
        g.snapshot = Some(Arc::new(s));
        drop(g);
        self.ready.notify_all();
    }

    /// Asks for a snapshot and waits up to `wait` for it: the fresh one (`true`), or the last
    /// one published (`false`; `None` before the first).
    pub fn fetch(&self, wait: Duration) -> (Option<Arc<Snapshot>>, bool) {
        let g = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let seen = g.generation;
        self.want.store(true, Ordering::Release);
        let (g, timeout) = self
            .ready
            .wait_timeout_while(g, wait, |s| s.generation == seen)
            .unwrap_or_else(|e| e.into_inner());
        (g.snapshot.clone(), !timeout.timed_out())
    }
}

/// `1` for true.
fn flag(b: bool) -> u64 {
    u64::from(b)
}

impl Snapshot {
    /// Appends the families of this snapshot to `out`.
    pub fn families(&self, out: &mut Vec<Family>) {
        self.port_families(out);
        self.queue_families(out);
        self.worker_families(out);
        self.bond_families(out);
        self.control_families(out);
    }

    fn port_families(&self, out: &mut Vec<Family>) {
        let s = &self.status;
        let mut rx_p = Family::counter("isopath_port_rx_packets", "Frames received on a port.");
        let mut rx_b = Family::counter(
            "isopath_port_rx_bytes",
            "Bytes received on a port (whole frames).",
        );
        let mut tx_p = Family::counter("isopath_port_tx_packets", "Frames sent on a port.");
        let mut tx_b = Family::counter(
            "isopath_port_tx_bytes",
            "Bytes sent on a port (whole frames).",
        );
        let mut up = Family::gauge("isopath_port_up", "1 while the port's link is up.");
        let mut redirected = Family::counter(
            "isopath_port_xdp_redirected_packets",
            "Frames the port's XDP program redirected into a socket.",
        );
        let mut classes = Family::counter(
            "isopath_port_rx_class_packets",
            "Frames received on a port, by class (what the parse found).",
        );
        let mut drops = Family::counter(
            "isopath_drops",
            "Frames dropped, by device and named reason (worker, strict parse, XDP program, bond, \
             loopback).",
        );
        let mut parse = Family::counter(
            "isopath_parse_errors",
            "Frames that did not parse, by port and reason (forwarded unless strict: not drops).",
        );
        for p in &s.ports {
            let port = p.name.as_str();
            rx_p.sample(&[("port", port)], p.rx_packets);
            rx_b.sample(&[("port", port)], p.rx_bytes);
            tx_p.sample(&[("port", port)], p.tx_packets);
            tx_b.sample(&[("port", port)], p.tx_bytes);
            up.sample(&[("port", port)], flag(p.link == Link::Up));
            redirected.sample(&[("port", port)], p.xdp.rx_redirect);
            for (class, n) in &p.classes {
                classes.sample(&[("port", port), ("class", class)], *n);
            }
            for (reason, n) in &p.drops {
                drops.sample(&[("port", port), ("reason", reason)], *n);
            }
            for (reason, n) in &p.parse_errors {
                parse.sample(&[("port", port), ("reason", reason)], *n);
            }
        }
        for b in &s.bonds {
            let port = b.name.as_str();
            drops.sample(
                &[("port", port), ("reason", "tx_drop_no_active_member")],
                b.drops.tx_drop_no_active_member,
            );
            drops.sample(
                &[("port", port), ("reason", "rx_drop_control_full")],
                b.drops.rx_drop_control_full,
            );
        }
        drops.sample(
            &[("port", "lo"), ("reason", "tx_drop_loopback")],
            s.lifecycle.tx_drop_loopback,
        );
        out.extend([
            rx_p, rx_b, tx_p, tx_b, up, redirected, classes, drops, parse,
        ]);
    }

    fn queue_families(&self, out: &mut Vec<Family>) {
        let mut rx_p = Family::counter("isopath_queue_rx_packets", "Frames received on a queue.");
        let mut rx_b = Family::counter("isopath_queue_rx_bytes", "Bytes received on a queue.");
        let mut tx_p = Family::counter("isopath_queue_tx_packets", "Frames sent on a queue.");
        let mut tx_b = Family::counter("isopath_queue_tx_bytes", "Bytes sent on a queue.");
        let mut xsk: Vec<Family> = XskCounters::default()
            .pairs()
            .iter()
            .map(|(name, _)| {
                Family::counter(
                    format!("isopath_xsk_{name}"),
                    "The kernel's XDP_STATISTICS of a queue's AF_XDP socket.",
                )
            })
            .collect();
        for q in &self.queues {
            let queue = q.queue.to_string();
            let worker = q.worker.to_string();
            let l = [
                ("port", q.port.as_str()),
                ("queue", queue.as_str()),
                ("worker", worker.as_str()),
            ];
            rx_p.sample(&l, q.rx_packets);
            rx_b.sample(&l, q.rx_bytes);
            tx_p.sample(&l, q.tx_packets);
            tx_b.sample(&l, q.tx_bytes);
            if let Some(k) = &q.xsk {
                for (f, (_, v)) in xsk.iter_mut().zip(k.pairs()) {
                    f.sample(&l[..2], v);
                }
            }
        }
        out.extend([rx_p, rx_b, tx_p, tx_b]);
        out.extend(xsk);
    }

    fn worker_families(&self, out: &mut Vec<Family>) {
        let mut loops = Family::counter("isopath_worker_loops", "Poll loops a worker ran.");
        let mut busy = Family::counter(
            "isopath_worker_busy_loops",
            "Poll loops that moved at least one frame.",
        );
        let mut last = Family::gauge(
            "isopath_worker_last_loop_timestamp_seconds",
            "When the worker's loop counter last moved (as the control loop saw it, every 5 ms), \
             seconds since the Unix epoch.",
        );
        let mut queues = Family::gauge("isopath_worker_queues", "Sockets the worker polls.");
        let mut umem = Family::gauge("isopath_worker_umem_frames", "Frames of the worker's UMEM.");
        let mut frames = Family::gauge(
            "isopath_worker_frames",
            "The worker's frames by place: its free pool, fill rings, TX rings.",
        );
        let mut in_use = Family::gauge("isopath_flows", "Flows in the worker's table.");
        let mut capacity =
            Family::gauge("isopath_flows_capacity", "Flows the worker's table holds.");
        let mut inserts = Family::counter("isopath_flow_inserts", "Flows inserted.");
        let mut expiries = Family::counter("isopath_flow_expiries", "Flows expired (idle).");
        let mut full = Family::counter(
            "isopath_flow_table_full",
            "New flows not tracked because the table was full (their frames were forwarded).",
        );
        for (i, w) in self.status.workers.iter().enumerate() {
            let worker = i.to_string();
            let core = w.core.map_or_else(|| "none".to_owned(), |c| c.to_string());
            let l = [("worker", worker.as_str()), ("core", core.as_str())];
            loops.sample(&l, w.loops);
            busy.sample(&l, w.busy_loops);
            if w.last_loop_unix_ns > 0 {
                last.sample(&l, w.last_loop_unix_ns as f64 / 1e9);
            }
            queues.sample(&l, w.queues as u64);
            umem.sample(&l, w.frames.total);
            for (place, n) in [
                ("free", w.frames.free),
                ("fill", w.frames.in_fill),
                ("tx", w.frames.in_tx),
            ] {
                frames.sample(&[l[0], l[1], ("place", place)], n);
            }
            if let Some(f) = &w.flows.counters {
                in_use.sample(&l[..1], f.in_use);
                capacity.sample(&l[..1], f.capacity);
                inserts.sample(&l[..1], f.inserts);
                expiries.sample(&l[..1], f.expiries);
                full.sample(&l[..1], f.full);
            }
        }
        out.extend([
            loops, busy, last, queues, umem, frames, in_use, capacity, inserts, expiries, full,
        ]);
    }

    fn bond_families(&self, out: &mut Vec<Family>) {
        let mut up = Family::gauge("isopath_bond_up", "1 while a member of the bond is active.");
        let mut active = Family::gauge(
            "isopath_bond_active_member",
            "1 for the bond's active member, 0 for the others.",
        );
        let mut failovers = Family::counter(
            "isopath_bond_failovers",
            "Times the bond's active member changed.",
        );
        let mut last = Family::gauge(
            "isopath_bond_last_failover_timestamp_seconds",
            "When the bond's active member last changed, seconds since the Unix epoch (of the \
             events the bond keeps).",
        );
        let mut link_failures = Family::counter(
            "isopath_bond_member_link_failures",
            "Times a member's link went down.",
        );
        let mut tx = Family::counter("isopath_bond_tx_packets", "Frames sent through the bond.");
        let mut to_control = Family::counter(
            "isopath_bond_to_control_packets",
            "Frames of the bond handed to control (ARP, NS, frames for its own MAC).",
        );
        for b in &self.status.bonds {
            let bond = b.name.as_str();
            up.sample(&[("bond", bond)], flag(b.carrier == Link::Up));
            failovers.sample(&[("bond", bond)], b.failovers);
            tx.sample(&[("bond", bond)], b.tx_packets);
            to_control.sample(&[("bond", bond)], b.to_control);
            for m in &b.members {
                let l = [("bond", bond), ("member", m.name.as_str())];
                active.sample(&l, flag(m.state == MemberState::Active));
                link_failures.sample(&l, m.link_failures);
            }
            if let Some(e) = b
                .events
                .iter()
                .rev()
                .find(|e| e.kind == EventKind::ActiveChanged)
            {
                last.sample(&[("bond", bond)], e.unix_ns as f64 / 1e9);
            }
        }
        out.extend([up, active, failovers, last, link_failures, tx, to_control]);
    }

    fn control_families(&self, out: &mut Vec<Family>) {
        let s = &self.status;
        let c = |name: &str, help: &'static str, v: u64| Family::counter(name, help).with(&[], v);
        out.push(c(
            "isopath_control_requests",
            "Control connections accepted (line protocol).",
            s.control.requests,
        ));
        out.push(c(
            "isopath_control_bad_requests",
            "Control requests refused, unreadable or failed (line protocol).",
            s.control.bad_requests,
        ));
        if let Some(n) = &self.netlink {
            for (name, help, v) in [
                (
                    "isopath_netlink_connections",
                    "Netlink-format connections accepted.",
                    n.accepted,
                ),
                (
                    "isopath_netlink_refused_connections",
                    "Connections refused past max_clients.",
                    n.refused_max_clients,
                ),
                (
                    "isopath_netlink_messages",
                    "Netlink-format messages received.",
                    n.messages,
                ),
                (
                    "isopath_netlink_malformed_messages",
                    "Malformed messages.",
                    n.malformed,
                ),
                (
                    "isopath_netlink_permission_refusals",
                    "Requests refused for want of permission.",
                    n.refused_perm,
                ),
                ("isopath_netlink_errors", "Error replies sent.", n.errors),
                ("isopath_netlink_dumps", "Dumps started.", n.dumps),
                (
                    "isopath_netlink_io_errors",
                    "Connections closed on an I/O error.",
                    n.io_errors,
                ),
                (
                    "isopath_netlink_events",
                    "Events sent to subscribers (monitor).",
                    n.events,
                ),
                (
                    "isopath_netlink_events_lost",
                    "Events subscribers lost (they did not keep up).",
                    n.events_lost,
                ),
            ] {
                out.push(c(name, help, v));
            }
        }
        out.push(
            Family::gauge(
                "isopath_netlink_dumps_active",
                "Dumps holding a cursor now.",
            )
            .with(&[], self.active_dumps as u64),
        );
        out.push(c(
            "isopath_flow_events",
            "Flow events sent to the flows group.",
            self.flow_events_sent,
        ));
        if let Some(r) = &s.rtnetlink {
            out.push(c(
                "isopath_rtnetlink_events",
                "Kernel link events delivered.",
                r.events,
            ));
            out.push(c(
                "isopath_rtnetlink_malformed",
                "Malformed rtnetlink messages skipped.",
                r.malformed,
            ));
            out.push(c(
                "isopath_rtnetlink_errors",
                "rtnetlink receive errors.",
                r.errors,
            ));
        }
        let l = &s.lifecycle;
        out.push(c(
            "isopath_unregister_batches",
            "Unregistration batches.",
            l.batches,
        ));
        out.push(c(
            "isopath_devices_unregistered",
            "Devices unregistered.",
            l.unregistered,
        ));
        out.push(c(
            "isopath_quiesces",
            "Worker quiesces (2 per batch).",
            l.quiesces,
        ));
        out.push(c(
            "isopath_quiesce_timeouts",
            "Quiesces that gave up waiting for a worker.",
            l.quiesce_timeouts,
        ));
        out.push(
            Family::gauge(
                "isopath_devices_unregistering",
                "Devices unregistered but still referenced.",
            )
            .with(&[], l.unregistering.len() as u64),
        );
        let mut cap = [
            Family::counter("isopath_capture_frames", "Frames a capture copied."),
            Family::counter(
                "isopath_capture_dropped",
                "Frames a capture's ring had no room for.",
            ),
            Family::counter("isopath_capture_written", "Records a capture wrote."),
            Family::counter("isopath_capture_write_errors", "A capture's failed writes."),
        ];
        for c in &s.captures {
            let l = [("target", c.target.as_str()), ("file", c.file.as_str())];
            for (f, v) in cap
                .iter_mut()
                .zip([c.captured, c.dropped, c.written, c.write_errors])
            {
                f.sample(&l, v);
            }
        }
        out.extend(cap);
    }
}

/// `isopath_build_info`.
pub fn build_info(out: &mut Vec<Family>) {
    out.push(
        Family::gauge(
            "isopath_build_info",
            "1, labelled with the version isopathd was built from.",
        )
        .with(&[("version", env!("CARGO_PKG_VERSION"))], 1u64),
    );
}

/// The endpoint's own counters.
pub fn http_families(s: &super::HttpStats, out: &mut Vec<Family>) {
    let v = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    out.push(
        Family::counter("isopath_metrics_scrapes", "Pages served (before this one).")
            .with(&[], v(&s.scrapes)),
    );
    out.push(
        Family::counter(
            "isopath_metrics_bad_requests",
            "Requests the endpoint refused.",
        )
        .with(&[], v(&s.bad_requests)),
    );
    out.push(
        Family::counter(
            "isopath_metrics_stale_pages",
            "Pages built from an older snapshot (the control loop did not publish in time).",
        )
        .with(&[], v(&s.stale)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::text::{Format, Kind, encode};

    fn snapshot() -> Snapshot {
        let mut status = crate::status::render::tests::sample();
        status.workers[0].core = Some(1);
        status.workers[0].flows = crate::flows::WorkerFlowStatus {
            enabled: true,
            counters: Some(crate::flows::WorkerFlows {
                worker: 0,
                in_use: 3,
                capacity: 64,
                inserts: 5,
                expiries: 2,
                full: 1,
            }),
        };
        Snapshot {
            status,
            queues: vec![
                QueueSample {
                    port: "up0".into(),
                    queue: 0,
                    worker: 0,
                    rx_packets: 12,
                    rx_bytes: 768,
                    tx_packets: 2,
                    tx_bytes: 128,
                    xsk: Some(XskCounters {
                        rx_ring_full: 4,
                        ..XskCounters::default()
                    }),
                },
                QueueSample {
                    port: "up0".into(),
                    queue: 1,
                    worker: 0,
                    rx_packets: 8,
                    rx_bytes: 512,
                    tx_packets: 3,
                    tx_bytes: 192,
                    xsk: None,
                },
            ],
            netlink: Some(NlCounters {
                dumps: 7,
                ..NlCounters::default()
            }),
            active_dumps: 1,
            flow_events_sent: 11,
        }
    }

    fn page() -> String {
        let mut f = Vec::new();
        snapshot().families(&mut f);
        build_info(&mut f);
        let mut out = String::new();
        encode(&f, Format::Classic, &mut out);
        out
    }

    #[test]
    fn the_page_carries_the_snapshot_figures() {
        let page = page();
        for line in [
            "isopath_port_rx_packets_total{port=\"m0\"} 10",
            "isopath_port_rx_packets_total{port=\"up0\"} 20",
            "isopath_port_rx_bytes_total{port=\"up0\"} 1280",
            "isopath_port_tx_packets_total{port=\"up0\"} 5",
            "isopath_port_up{port=\"m0\"} 1",
            "isopath_drops_total{port=\"m0\",reason=\"rx_drop_backup\"} 7",
            "isopath_drops_total{port=\"bond0\",reason=\"tx_drop_no_active_member\"} 0",
            "isopath_drops_total{port=\"lo\",reason=\"tx_drop_loopback\"} 0",
            "isopath_parse_errors_total{port=\"up0\",reason=\"parse_truncated\"} 2",
            "isopath_port_rx_class_packets_total{port=\"m0\",class=\"ipv4\"} 9",
            "isopath_queue_rx_packets_total{port=\"up0\",queue=\"1\",worker=\"0\"} 8",
            "isopath_xsk_rx_ring_full_total{port=\"up0\",queue=\"0\"} 4",
            "isopath_worker_loops_total{worker=\"0\",core=\"1\"} 9",
            "isopath_worker_busy_loops_total{worker=\"0\",core=\"1\"} 3",
            "isopath_worker_last_loop_timestamp_seconds{worker=\"0\",core=\"1\"} 1700000000.5",
            "isopath_worker_frames{worker=\"0\",core=\"1\",place=\"fill\"} 2",
            "isopath_worker_umem_frames{worker=\"0\",core=\"1\"} 4096",
            "isopath_flows{worker=\"0\"} 3",
            "isopath_flows_capacity{worker=\"0\"} 64",
            "isopath_flow_table_full_total{worker=\"0\"} 1",
            "isopath_bond_active_member{bond=\"bond0\",member=\"m0\"} 1",
            "isopath_bond_failovers_total{bond=\"bond0\"} 2",
            "isopath_bond_member_link_failures_total{bond=\"bond0\",member=\"m0\"} 1",
            "isopath_bond_up{bond=\"bond0\"} 1",
            "isopath_netlink_dumps_total 7",
            "isopath_netlink_dumps_active 1",
            "isopath_flow_events_total 11",
            "isopath_devices_unregistering 1",
            "isopath_quiesces_total 2",
            "isopath_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(page.lines().any(|l| l == line), "{line:?} not in\n{page}");
        }
        // The queue without kernel statistics has no xsk samples.
        assert!(!page.contains("isopath_xsk_rx_ring_full_total{port=\"up0\",queue=\"1\"}"));
        let ts = page
            .lines()
            .find_map(|l| {
                l.strip_prefix("isopath_bond_last_failover_timestamp_seconds{bond=\"bond0\"} ")
            })
            .unwrap();
        assert!((ts.parse::<f64>().unwrap() - 1.7e9).abs() < 1e-3, "{ts}");
    }

    #[test]
    fn families_are_unique_and_counters_end_in_total() {
        let mut f = Vec::new();
        snapshot().families(&mut f);
        let mut names: Vec<&str> = f.iter().map(Family::name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a family twice: {names:?}");
        let mut out = String::new();
        encode(&f, Format::Classic, &mut out);
        for fam in &f {
            for line in out.lines().filter(|l| l.starts_with("# TYPE ")) {
                let mut w = line.split(' ').skip(2);
                let (name, kind) = (w.next().unwrap(), w.next().unwrap());
                if name.trim_end_matches("_total") == fam.name() {
                    let counter = fam.kind() == Kind::Counter;
                    assert_eq!(kind == "counter", counter, "{line}");
                    assert_eq!(name.ends_with("_total"), counter, "{line}");
                }
            }
        }
    }

    #[test]
    fn a_scrape_waits_for_the_loop_and_takes_the_last_snapshot_when_it_is_late() {
        let p = Arc::new(Published::default());
        // Nothing published, nobody publishing: the wait ends empty.
        let t = std::time::Instant::now();
        assert_eq!(p.fetch(Duration::from_millis(30)), (None, false));
        assert!(t.elapsed() >= Duration::from_millis(30));
        // The scrape's request is seen once.
        assert!(p.wanted());
        assert!(!p.wanted());
        // A loop that answers the request: the scrape gets that snapshot, fresh.
        let pp = p.clone();
        let publisher = std::thread::spawn(move || {
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while !pp.wanted() {
                assert!(std::time::Instant::now() < end, "no request came");
                std::thread::sleep(Duration::from_millis(1));
            }
            pp.publish(snapshot());
        });
        let (s, fresh) = p.fetch(Duration::from_secs(10));
        publisher.join().unwrap();
        assert!(fresh);
        assert_eq!(*s.unwrap(), snapshot());
        // Late loop: the previous snapshot, not fresh.
        let (s, fresh) = p.fetch(Duration::from_millis(10));
        assert!(!fresh);
        assert_eq!(s.unwrap().flow_events_sent, 11);
    }
}
