//! Flow requests on the netlink-format socket: `GETFLOW` (a dump with server-side filters,
//! or one flow by 5-tuple), `DELFLOW` (`flow flush [FILTER]`, `flow del TUPLE`),
//! `GETFLOWTAB` (the tables' counters, no dump), and the `flows` event group and the IPFIX
//! exporter, both fed from the workers' event rings.

use isopath_datapath::flow::{EventKind, Flush};
use isopath_proto::msg::{FlowQuery, FlowTableMsg, FlowTableQuery, Group, Message};

use super::Daemon;
use crate::{
    flows::dump::{self, Clock, FlowDump, PortLinks, Select},
    ipfix::{ExportEvent, Exporter},
    nlserver::Answer,
    registry::DeviceKind,
};

/// Events popped from each worker's ring per turn: a burst (a flush of thousands) waits in
/// the ring and reaches subscribers over a few turns, at the pace they read, instead of
/// overrunning them in one (a worker whose ring is full counts what it could not push as
/// suppressed).
const EVENTS_PER_TURN: usize = 1024;

const TRACKING_OFF: &str = "flow tracking is off ([flows] enabled = false)";

impl Daemon {
    /// Worker `i`'s clock pair, taken the first time it is asked for and kept: records and
    /// events are dated by one fixed offset from the worker's flow clock, so their order is
    /// the flow clock's (a pair read every turn would wobble by the flow clock's millisecond).
    fn flow_clock(&mut self, i: usize) -> Option<Clock> {
        let r = self.plane.workers.get(i)?.handle.flow_reader()?;
        if self.flow_clocks.len() <= i {
            self.flow_clocks.resize(i + 1, None);
        }
        let unix_ns = self.plane.turn.wall_ns();
        Some(*self.flow_clocks[i].get_or_insert(Clock {
            flow_ns: r.now_ns(),
            unix_ns,
        }))
    }

    /// The workers' flow tables: worker index, reader, and the clock pair that dates its
    /// records.
    fn flow_readers(&mut self) -> Vec<(u32, isopath_datapath::flow::FlowReader, Clock)> {
        (0..self.plane.workers.len())
            .filter_map(|i| {
                let clock = self.flow_clock(i)?;
                let r = self.plane.workers[i].handle.flow_reader()?.clone();
                Some((i as u32, r, clock))
            })
            .collect()
    }

    /// The links the workers' port ids name.
    fn port_links(&self) -> PortLinks {
        let devs = self.registry.devices();
        PortLinks(
            self.plane
                .flow_ports
                .iter()
                .map(|name| {
                    devs.id_of(name, DeviceKind::Port)
                        .and_then(|id| devs.get(id))
                        .and_then(|d| d.ifindex)
                        .unwrap_or(0)
                })
                .collect(),
        )
    }

    /// `GETFLOW`: a dump (`NLM_F_DUMP`), or the one flow `q.tuple` names.
    pub(super) fn get_flow(&mut self, q: FlowQuery, dump: bool) -> Answer {
        let readers = self.flow_readers();
        if readers.is_empty() {
            return Answer::Error(libc::EOPNOTSUPP, TRACKING_OFF.to_owned());
        }
        let links = self.port_links();
        if !dump {
            let Some(t) = q.tuple else {
                return Answer::Error(libc::EINVAL, "GETFLOW without a dump names a tuple".into());
            };
            let key = match dump::tuple_key(&t) {
                Ok(k) => k,
                Err(e) => return Answer::Error(libc::EINVAL, e),
            };
            return match dump::find(&readers, &key, &links) {
                Some(f) => Answer::Records(vec![Message::NewFlow(f)]),
                None => Answer::Error(libc::ENOENT, format!("no flow {}", tuple_text(&t))),
            };
        }
        let select = match q.filter.as_ref().map_or(Ok(Select::all()), Select::new) {
            Ok(s) => s,
            Err(e) => return Answer::Error(libc::EINVAL, e),
        };
        Answer::Dump(Box::new(FlowDump::new(
            readers,
            links,
            select,
            q.limit.map(u64::from),
            &self.flow_cursors,
        )))
    }

    /// `DELFLOW`: `flow flush [FILTER]` or `flow del TUPLE`, handed to every worker (each
    /// removes them a slice per loop, counted as `flushed`, with destroy events).
    pub(super) fn del_flow(&mut self, q: FlowQuery) -> Answer {
        let readers = self.flow_readers();
        if readers.is_empty() {
            return Answer::Error(libc::EOPNOTSUPP, TRACKING_OFF.to_owned());
        }
        let links = self.port_links();
        let flush = if let Some(t) = &q.tuple {
            let key = match dump::tuple_key(t) {
                Ok(k) => k,
                Err(e) => return Answer::Error(libc::EINVAL, e),
            };
            if dump::find(&readers, &key, &links).is_none() {
                return Answer::Error(libc::ENOENT, format!("no flow {}", tuple_text(t)));
            }
            Flush::Tuple(key)
        } else {
            let select = match q.filter.as_ref().map_or(Ok(Select::all()), Select::new) {
                Ok(s) => s,
                Err(e) => return Answer::Error(libc::EINVAL, e),
            };
            match select.flush(&links) {
                Ok(f) => f,
                Err(e) => return Answer::Error(libc::EOPNOTSUPP, e),
            }
        };
        let refused: Vec<usize> = self
            .plane
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.handle.flow_reader().is_some() && !w.handle.flush_flows(flush))
            .map(|(i, _)| i)
            .collect();
        if refused.is_empty() {
            Answer::Done
        } else {
            Answer::Error(
                libc::EBUSY,
                format!("the command queues of workers {refused:?} are full; try again"),
            )
        }
    }

    /// `GETFLOWTAB`: the tables' counters, summed over the workers.
    pub(super) fn get_flow_table(&mut self, q: FlowTableQuery) -> Answer {
        if q.zone.is_some() {
            return Answer::Error(
                libc::EOPNOTSUPP,
                "per-zone counters come with datapath namespaces".to_owned(),
            );
        }
        let readers = self.flow_readers();
        if readers.is_empty() {
            return Answer::Error(libc::EOPNOTSUPP, TRACKING_OFF.to_owned());
        }
        let mut t = FlowTableMsg {
            count: 0,
            capacity: 0,
            created: 0,
            expired: 0,
            evicted: 0,
            events_suppressed: 0,
            zone: None,
        };
        for (_, r, _) in &readers {
            let c = r.counters();
            t.count += c.in_use.get();
            t.capacity += u64::from(r.capacity());
            t.created += c.inserts.get();
            t.expired += c.expiries.get();
            t.evicted += c.evictions.get();
            t.events_suppressed += c.events_dropped.get();
        }
        Answer::Records(vec![Message::NewFlowTable(t)])
    }

    /// Pops the workers' flow events (at most [`EVENTS_PER_TURN`] each) and fans them out:
    /// to the `flows` group and to the IPFIX exporter (updates and destroys). With neither a
    /// subscriber nor an exporter they are dropped here, so one who joins later is not sent
    /// old news.
    pub(super) fn flow_events(&mut self) {
        if self.nl.is_none() && self.ipfix.is_none() {
            return;
        }
        let waiting = self
            .plane
            .workers
            .iter()
            .any(|w| w.handle.flow_events().is_some_and(|e| !e.is_empty()));
        if !waiting {
            return;
        }
        let send = self
            .nl
            .as_ref()
            .is_some_and(|s| s.has_subscribers(Group::Flows));
        let unix_ns = self.plane.turn.wall_ns();
        let links = if send || self.ipfix.is_some() {
            self.port_links()
        } else {
            PortLinks::default()
        };
        let clocks: Vec<Option<Clock>> = (0..self.plane.workers.len())
            .map(|i| self.flow_clock(i))
            .collect();
        for (i, w) in self.plane.workers.iter().enumerate() {
            let (Some(ev), Some(clock)) = (w.handle.flow_events(), clocks[i]) else {
                continue;
            };
            for e in std::iter::from_fn(|| ev.pop()).take(EVENTS_PER_TURN) {
                if let Some(x) = &self.ipfix
                    && e.kind != EventKind::New
                {
                    let f = &e.flow;
                    x.offer(ExportEvent {
                        worker: i as u32,
                        event: e,
                        first_ms: clock.unix(f.first_seen_ns) / 1_000_000,
                        last_ms: clock.unix(f.last_seen_ns) / 1_000_000,
                        ingress: f.ingress.map(|p| links.ifindex(p).unwrap_or(0)),
                    });
                }
                let Some(server) = self.nl.as_mut().filter(|_| send) else {
                    continue;
                };
                let mut f = dump::flow_msg(&e.flow, i as u32, &links, clock);
                let m = match e.kind {
                    EventKind::New => {
                        f.event_ns = f.first_ns;
                        Message::NewFlow(f)
                    }
                    EventKind::Update => {
                        f.event_ns = f.last_ns;
                        Message::NewFlow(f)
                    }
                    EventKind::Destroy => {
                        f.event_ns = Some(unix_ns);
                        f.end_reason = dump::end_reason(e.reason);
                        Message::DelFlow(f)
                    }
                };
                server.broadcast(Group::Flows, &m);
                self.flow_events_sent += 1;
            }
        }
    }
}

/// Starts the IPFIX exporter on a housekeeping CPU.
///
/// # Errors
/// Its thread could not start.
pub(super) fn start_ipfix(
    plan: &crate::ipfix::IpfixPlan,
    house: Option<crate::topology::Housekeeping>,
) -> Result<Exporter, super::StartError> {
    let on_start = move || {
        if let Some(h) = house
            && let Err(e) = h.pin_current()
        {
            tracing::warn!("ipfix thread: {e}");
        }
    };
    Exporter::start(plan, on_start).map_err(|source| super::StartError::Socket {
        what: format!("starting the {} thread", crate::ipfix::THREAD),
        source,
    })
}

fn tuple_text(t: &isopath_proto::msg::FlowTuple) -> String {
    let port = |p: Option<u16>| p.map_or(String::new(), |p| format!(":{p}"));
    format!(
        "proto {} {}{} -> {}{} zone {}",
        t.proto,
        t.src,
        port(t.sport),
        t.dst,
        port(t.dport),
        t.zone.unwrap_or(0)
    )
}
