//! Flow events into IPFIX records with delta counts: I/O-free, with `now` from the caller.
//!
//! # Design
//! The workers' events carry each flow's cumulative counters. The exporter keeps, per flow,
//! what it last exported and sends the difference. The state is keyed by (worker, slot) and
//! holds the slot's generation, so it can never hold more entries than the flow tables have
//! slots (memory bounded by the tables the daemon allocated at start, about 48 bytes an entry
//! against the record's 84), and an entry whose flow's destroy event was lost (the worker's
//! ring was full) is replaced when its slot's next flow shows up, not kept forever.
//!
//! Lost events cost no miscount of what does arrive: a lost update is covered by the next
//! record's delta (the counters are cumulative); a lost new event changes nothing (the first
//! record's delta starts from zero); a lost destroy loses the flow's last delta (the worker
//! counted it as `events_dropped`). The generation has 7 bits: only a slot reused a multiple
//! of 128 times with every event of those flows lost in between could be taken for the flow
//! the entry remembers (its delta would then be short, never negative).

use std::collections::HashMap;

use isopath_datapath::flow::{EndReason as DpEnd, EventKind, FlowEvent};
use isopath_proto::ipfix::{EndReason, FlowRecord};

/// One event for the exporter: the worker's event, dated and with its ports' ifindexes (the
/// control loop knows the clocks and the ports; the exporter does not).
#[derive(Debug, Clone, Copy)]
pub struct ExportEvent {
    /// The worker whose table the flow is in.
    pub worker: u32,
    /// The event.
    pub event: FlowEvent,
    /// The flow's first packet, ms since the Unix epoch.
    pub first_ms: u64,
    /// Its last packet, ms since the Unix epoch.
    pub last_ms: u64,
    /// Kernel ifindex of the port each direction came in by (originator, replier; 0: none).
    pub ingress: [u32; 2],
}

/// What was exported of one flow so far.
#[derive(Debug, Clone, Copy)]
struct Sent {
    generation: u8,
    packets: [u64; 2],
    bytes: [u64; 2],
}

/// Per-flow export state.
#[derive(Debug, Default)]
pub struct Deltas {
    sent: HashMap<(u32, u32), Sent>,
    /// Entries replaced by another flow in their slot (their destroy event never came).
    pub stale: u64,
}

impl Deltas {
    /// Flows with export state.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// The record event `e` gives, if any: updates and destroys give one, new events none;
    /// an update with nothing new in either direction gives none.
    pub fn record(&mut self, e: &ExportEvent) -> Option<FlowRecord> {
        let f = &e.event.flow;
        let id = (e.worker, f.slot);
        let before = match self.sent.get(&id) {
            Some(s) if s.generation == f.generation => Some(*s),
            Some(_) => {
                self.stale += 1;
                None
            }
            None => None,
        }
        .unwrap_or(Sent {
            generation: f.generation,
            packets: [0; 2],
            bytes: [0; 2],
        });
        let now = Sent {
            generation: f.generation,
            packets: f.packets,
            bytes: f.bytes,
        };
        let reason = match e.event.kind {
            EventKind::New => {
                // Nothing is exported of it yet (the daemon does not even pass these on;
                // a new event whose flow already counted packets starts from zero all the
                // same).
                self.sent.insert(
                    id,
                    Sent {
                        packets: [0; 2],
                        bytes: [0; 2],
                        ..now
                    },
                );
                return None;
            }
            EventKind::Update => {
                if now.packets == before.packets {
                    // Nothing new (the flow only waited); still remember the generation.
                    self.sent.insert(id, now);
                    return None;
                }
                self.sent.insert(id, now);
                EndReason::Active
            }
            EventKind::Destroy => {
                self.sent.remove(&id);
                match e.event.reason {
                    DpEnd::Idle | DpEnd::None => EndReason::Idle,
                    DpEnd::Flush => EndReason::Forced,
                    DpEnd::Evict => EndReason::LackOfResources,
                    DpEnd::Reopen => EndReason::EndDetected,
                }
            }
        };
        let ((src, sport), (dst, dport)) = f.orig();
        let proto = f.key.proto();
        // ICMP and ICMPv6 flows are keyed by the echo identifier in both port fields; it is
        // no transport port, so the record says 0.
        let (sport, dport) = if matches!(proto, 1 | 58) {
            (0, 0)
        } else {
            (sport, dport)
        };
        let tcp = proto == 6;
        Some(FlowRecord {
            src,
            dst,
            proto,
            sport,
            dport,
            octets: now.bytes[0].saturating_sub(before.bytes[0]),
            packets: now.packets[0].saturating_sub(before.packets[0]),
            rev_octets: now.bytes[1].saturating_sub(before.bytes[1]),
            rev_packets: now.packets[1].saturating_sub(before.packets[1]),
            start_ms: e.first_ms,
            end_ms: e.last_ms,
            tcp_flags: if tcp { f.tcp_flags[0] } else { 0 },
            ingress: e.ingress[0],
            vlan: f.key.vlan()[0],
            end_reason: reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use isopath_datapath::flow::{FlowKey, FlowSnapshot, FlowState};

    use super::*;

    fn event(kind: EventKind, slot: u32, generation: u8, p: [u64; 2], b: [u64; 2]) -> ExportEvent {
        let src: IpAddr = "198.18.0.1".parse().unwrap();
        let dst: IpAddr = "198.19.0.2".parse().unwrap();
        let a = |ip: IpAddr| match ip {
            IpAddr::V4(v) => {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&v.octets());
                o
            }
            IpAddr::V6(v) => v.octets(),
        };
        // 198.19.0.2:80 is the lesser endpoint? No: 198.18 < 198.19, so a = the source.
        let (key, _) = FlowKey::new(&a(src), &a(dst), 40000, 80, 6, false, [7, 0], 0);
        ExportEvent {
            worker: 1,
            event: FlowEvent {
                kind,
                reason: if kind == EventKind::Destroy {
                    DpEnd::Idle
                } else {
                    DpEnd::None
                },
                flow: FlowSnapshot {
                    slot,
                    generation,
                    key,
                    orig_is_b: false,
                    state: FlowState::Replied,
                    tcp_flags: [0x02 | 0x10, 0x12],
                    ingress: [1, 2],
                    packets: p,
                    bytes: b,
                    first_seen_ns: 0,
                    last_seen_ns: 0,
                    expires_in_ms: 0,
                },
            },
            first_ms: 1000,
            last_ms: 2000,
            ingress: [11, 12],
        }
    }

    #[test]
    fn deltas_across_updates_and_destroy() {
        let mut d = Deltas::default();
        assert_eq!(
            d.record(&event(EventKind::New, 5, 1, [1, 0], [60, 0])),
            None
        );
        assert_eq!(d.len(), 1);
        let r = d
            .record(&event(EventKind::Update, 5, 1, [10, 8], [1000, 800]))
            .unwrap();
        assert_eq!(
            (r.packets, r.octets, r.rev_packets, r.rev_octets),
            (10, 1000, 8, 800)
        );
        assert_eq!(r.end_reason, EndReason::Active);
        assert_eq!((r.sport, r.dport, r.proto, r.vlan), (40000, 80, 6, 7));
        assert_eq!((r.ingress, r.tcp_flags), (11, 0x12));
        assert_eq!(r.src, "198.18.0.1".parse::<IpAddr>().unwrap());
        // Nothing new: no record.
        assert_eq!(
            d.record(&event(EventKind::Update, 5, 1, [10, 8], [1000, 800])),
            None
        );
        let r = d
            .record(&event(EventKind::Destroy, 5, 1, [15, 8], [1500, 800]))
            .unwrap();
        assert_eq!(
            (r.packets, r.octets, r.rev_packets, r.rev_octets),
            (5, 500, 0, 0)
        );
        assert_eq!(r.end_reason, EndReason::Idle);
        assert!(d.is_empty());
    }

    /// A destroy that never came: the slot's next flow replaces the entry and starts from 0.
    #[test]
    fn lost_destroy_is_replaced_by_the_slots_next_flow() {
        let mut d = Deltas::default();
        d.record(&event(EventKind::Update, 9, 3, [4, 4], [400, 400]));
        let r = d
            .record(&event(EventKind::Update, 9, 4, [2, 1], [200, 100]))
            .unwrap();
        assert_eq!((r.packets, r.rev_packets), (2, 1));
        assert_eq!(d.stale, 1);
        assert_eq!(d.len(), 1);
        // A lost update: the next delta covers both intervals.
        let r = d
            .record(&event(EventKind::Destroy, 9, 4, [9, 1], [900, 100]))
            .unwrap();
        assert_eq!((r.packets, r.octets), (7, 700));
        assert!(d.is_empty());
        // Another worker's slot 9 is another flow.
        let mut e = event(EventKind::Update, 9, 4, [1, 0], [1, 0]);
        d.record(&e);
        e.worker = 2;
        d.record(&e);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn end_reasons_and_icmp_ports() {
        let mut d = Deltas::default();
        for (dp, want) in [
            (DpEnd::Idle, EndReason::Idle),
            (DpEnd::Flush, EndReason::Forced),
            (DpEnd::Evict, EndReason::LackOfResources),
            (DpEnd::Reopen, EndReason::EndDetected),
        ] {
            let mut e = event(EventKind::Destroy, 1, 1, [1, 1], [84, 84]);
            e.event.reason = dp;
            assert_eq!(d.record(&e).unwrap().end_reason, want);
        }
        let a = [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let b = [198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut e = event(EventKind::Destroy, 1, 1, [3, 3], [252, 252]);
        e.event.flow.key = FlowKey::new(&a, &b, 77, 77, 1, false, [0, 0], 0).0;
        let r = d.record(&e).unwrap();
        assert_eq!(
            (r.proto, r.sport, r.dport, r.tcp_flags, r.vlan),
            (1, 0, 0, 0, 0)
        );
    }
}
