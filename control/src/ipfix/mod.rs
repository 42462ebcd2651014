//! IPFIX flow export: the workers' flow events, as RFC 7011 messages over UDP to the
//! configured collectors.
//!
//! # Design
//! - The control loop drains the workers' event rings (it does so for the netlink `flows`
//!   group too, `daemon::nl_flows`) and hands each update and destroy event to the exporter
//!   through a bounded channel ([`QUEUE`] events) with `try_send`: a full channel drops the
//!   event and counts it (`dropped_channel`). Neither the workers nor the loop ever wait for
//!   the exporter; a slow or absent collector costs counted drops, never memory.
//! - The exporter is a thread of its own (`isopath-ipfix`, on the housekeeping CPUs, with no
//!   capabilities). It turns events into biflow records with delta counts ([`records`]),
//!   packs them into messages of at most [`MAX_MESSAGE`](isopath_proto::ipfix::MAX_MESSAGE)
//!   bytes ([`isopath_proto::ipfix::Encoder`]) and sends a message when it is full or when
//!   its first record has waited [`FLUSH`].
//! - Templates go out at start and every `template_refresh_s` (RFC 7011 §8.1: over UDP,
//!   periodically), as a message of their own.
//! - One connected UDP socket per collector, made at the first send (and again after a send
//!   that could not make one: no route yet), so a collector that is down shows as
//!   `ECONNREFUSED` on a later send: counted in `send_errors`, never fatal. Every collector
//!   is sent the same messages (one sequence number stream per observation domain).
//!
//! # Limitations
//! - Records are sent only for update and destroy events, so a flow shorter than the active
//!   timeout is one record at its end; flowStartMilliseconds is the flow's first packet in
//!   every record of it (interim records included).
//! - No options templates (exporter statistics go to `isopath status` instead).
//! - Flows still live when the daemon stops get no final record (the tables are not flushed
//!   at stop); what the exporter holds is sent before its thread ends.

pub mod config;
pub mod records;

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

pub use config::{CollectorConfig, IpfixConfig, IpfixPlan};
use isopath_proto::ipfix::{Encoder, MAX_MESSAGE, PushError};
pub use records::{Deltas, ExportEvent};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// Events the channel from the control loop holds (about 200 bytes each): several turns of
/// every worker's ring (1024 events a turn each).
pub const QUEUE: usize = 16_384;
/// Longest a record waits in a message that is not full.
pub const FLUSH: Duration = Duration::from_millis(100);
/// The exporter thread's name.
pub const THREAD: &str = "isopath-ipfix";

/// The exporter's counters, shared with the status.
#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    records: AtomicU64,
    messages: AtomicU64,
    templates: AtomicU64,
    dropped_channel: AtomicU64,
    send_errors: AtomicU64,
    flows: AtomicU64,
    stale: AtomicU64,
}

/// `ipfix` in `isopath status`: counts since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpfixStatus {
    /// Where messages go.
    pub collectors: Vec<String>,
    /// The observation domain.
    pub observation_domain_id: u32,
    /// Events the exporter took from the channel.
    pub events: u64,
    /// Data records in the messages sent (handed to every collector's socket, whether or
    /// not the send succeeded).
    pub records: u64,
    /// Messages sent (each to every collector; template messages included).
    pub messages: u64,
    /// Template sets sent.
    pub templates: u64,
    /// Events dropped because the channel to the exporter was full.
    pub dropped_channel: u64,
    /// Sends that failed, per collector and message. A collector that is down answers with
    /// ICMP port unreachable, which the connected socket reports as `ECONNREFUSED` on the
    /// next send (that message is lost too): about every other send fails.
    pub send_errors: u64,
    /// Flows with export state (their last exported counters).
    pub flows: u64,
    /// Export state entries replaced by a new flow in their slot (a destroy event was lost).
    pub stale: u64,
}

/// The control loop's end of a running exporter.
#[derive(Debug)]
pub struct Exporter {
    tx: Option<SyncSender<ExportEvent>>,
    counters: Arc<Counters>,
    plan: IpfixPlan,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Starts the exporter thread; `on_start` runs first on it (pinning to the housekeeping
    /// CPUs). Each collector's socket is made and connected at its first send, and again
    /// after a send that could not make one: a collector without a route at start (or a
    /// socket that cannot be made) costs counted send errors, not the daemon's start.
    ///
    /// # Errors
    /// The thread could not start.
    pub fn start(
        plan: &IpfixPlan,
        on_start: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Self> {
        let sinks = plan
            .collectors
            .iter()
            .map(|&c| {
                let mut sock: Option<UdpSocket> = None;
                let send: Sink = Box::new(move |b: &[u8]| {
                    let s = match &sock {
                        Some(s) => s,
                        None => sock.insert(connect(c)?),
                    };
                    s.send(b).map(drop)
                });
                (c, send)
            })
            .collect();
        Self::start_with(plan, sinks, on_start)
    }

    /// [`Self::start`] with the given sinks in place of the collectors' sockets.
    fn start_with(
        plan: &IpfixPlan,
        sinks: Vec<(SocketAddr, Sink)>,
        on_start: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let run = Run {
            rx,
            sinks,
            enc: Encoder::new(plan.domain, MAX_MESSAGE),
            deltas: Deltas::default(),
            counters: counters.clone(),
            refresh: Duration::from_secs(plan.template_refresh_s.into()),
        };
        let thread = std::thread::Builder::new()
            .name(THREAD.into())
            .spawn(move || {
                on_start();
                if let Err(e) = crate::privs::drop_all_for_thread() {
                    warn!("ipfix thread: {e}");
                }
                run.run();
            })?;
        Ok(Self {
            tx: Some(tx),
            counters,
            plan: plan.clone(),
            thread: Some(thread),
        })
    }

    /// Hands an event to the exporter; a full channel drops it (counted).
    pub fn offer(&self, e: ExportEvent) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters
                    .dropped_channel
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counters.
    pub fn status(&self) -> IpfixStatus {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IpfixStatus {
            collectors: self.plan.collectors.iter().map(|c| c.to_string()).collect(),
            observation_domain_id: self.plan.domain,
            events: g(&c.events),
            records: g(&c.records),
            messages: g(&c.messages),
            templates: g(&c.templates),
            dropped_channel: g(&c.dropped_channel),
            send_errors: g(&c.send_errors),
            flows: g(&c.flows),
            stale: g(&c.stale),
        }
    }

    /// Sends what is pending and stops the thread.
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("ipfix thread panicked");
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn connect(c: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = if c.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let s = UdpSocket::bind(any)?;
    s.connect(c)?;
    Ok(s)
}

/// Where a message goes: a connected UDP socket's `send` (a test's channel in unit tests).
type Sink = Box<dyn FnMut(&[u8]) -> std::io::Result<()> + Send>;

/// The exporter thread's state.
struct Run {
    rx: Receiver<ExportEvent>,
    sinks: Vec<(SocketAddr, Sink)>,
    enc: Encoder,
    deltas: Deltas,
    counters: Arc<Counters>,
    refresh: Duration,
}

impl Run {
    fn run(mut self) {
        let mut templates_at = Instant::now();
        self.templates();
        // When the oldest record of the message being built was pushed.
        let mut pending: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let due = [
                Some(templates_at + self.refresh),
                pending.map(|p| p + FLUSH),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("the refresh is always due");
            let got = self.rx.recv_timeout(due.saturating_duration_since(now));
            let now = Instant::now();
            match got {
                Ok(e) => {
                    self.counters.events.fetch_add(1, Ordering::Relaxed);
                    if let Some(rec) = self.deltas.record(&e) {
                        loop {
                            match self.enc.push(&rec) {
                                Ok(()) => break,
                                Err(PushError::Full(_)) => {
                                    self.send();
                                    pending = None;
                                }
                                Err(PushError::Mixed(_)) => break,
                            }
                        }
                        pending.get_or_insert(now);
                    }
                    let c = &self.counters;
                    c.flows.store(self.deltas.len() as u64, Ordering::Relaxed);
                    c.stale.store(self.deltas.stale, Ordering::Relaxed);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.send();
                    return;
                }
            }
            if pending.is_some_and(|p| now >= p + FLUSH) {
                self.send();
                pending = None;
            }
            if now >= templates_at + self.refresh {
                self.send();
                pending = None;
                templates_at = now;
                self.templates();
            }
        }
    }

    /// Sends the templates as a message of their own.
    fn templates(&mut self) {
        self.send();
        if self.enc.push_templates().is_ok() {
            self.counters.templates.fetch_add(1, Ordering::Relaxed);
        }
        self.send();
    }

    /// Sends the message being built (if any) to every collector.
    fn send(&mut self) {
        let Some(m) = self.enc.finish(unix_s()) else {
            return;
        };
        let c = &self.counters;
        for (addr, send) in &mut self.sinks {
            if let Err(e) = send(m.bytes()) {
                let n = c.send_errors.fetch_add(1, Ordering::Relaxed);
                // The first error and then one in 1000: a collector that is down fails
                // every send.
                if n.is_multiple_of(1000) {
                    warn!(collector = %addr, "ipfix send: {e}");
                }
            }
        }
        c.messages.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(m.records().into(), Ordering::Relaxed);
    }
}

fn unix_s() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use isopath_datapath::flow::{
        EndReason, EventKind, FlowEvent, FlowKey, FlowSnapshot, FlowState,
    };

    use super::*;

    fn event(slot: u32, kind: EventKind, packets: u64) -> ExportEvent {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[198, 18, 0, 1]);
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[198, 18, 0, 2]);
        ExportEvent {
            worker: 0,
            event: FlowEvent {
                kind,
                reason: EndReason::Idle,
                flow: FlowSnapshot {
                    slot,
                    generation: 1,
                    key: FlowKey::new(&a, &b, 1000 + slot as u16, 53, 17, false, [0, 0], 0).0,
                    orig_is_b: false,
                    state: FlowState::Unreplied,
                    tcp_flags: [0, 0],
                    ingress: [1, 0],
                    packets: [packets, 0],
                    bytes: [packets * 100, 0],
                    first_seen_ns: 0,
                    last_seen_ns: 0,
                    expires_in_ms: 0,
                },
            },
            first_ms: 1,
            last_ms: 2,
            ingress: [3, 0],
        }
    }

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_be_bytes([b[i], b[i + 1]])
    }
    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    fn plan(domain: u32) -> IpfixPlan {
        IpfixPlan {
            collectors: vec!["198.18.0.100:4739".parse().unwrap()],
            domain,
            active_timeout_s: 60,
            template_refresh_s: 600,
        }
    }

    /// An exporter whose one collector is a channel (the real sockets are the lab test's:
    /// unit tests stay off the host's loopback).
    fn start(domain: u32) -> (Exporter, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel();
        let sink: Sink = Box::new(move |b: &[u8]| {
            tx.send(b.to_vec())
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
        });
        let p = plan(domain);
        let x = Exporter::start_with(&p, vec![(p.collectors[0], sink)], || {}).unwrap();
        (x, rx)
    }

    #[test]
    fn exports_templates_then_packed_records_with_sequence_numbers() {
        let (mut x, rx) = start(42);
        let t = Duration::from_secs(5);
        let buf = rx.recv_timeout(t).unwrap();
        // Templates alone: header and the template set.
        assert_eq!(buf.len(), 16 + isopath_proto::ipfix::TEMPLATE_SET_LEN);
        assert_eq!(
            (u16_at(&buf, 0), u32_at(&buf, 8), u32_at(&buf, 12)),
            (10, 0, 42)
        );
        assert_eq!(u16_at(&buf, 16), 2);
        // 40 destroys of one-way UDP flows: 19 records fit a message (16 + 4 + 19 * 70 =
        // 1350; 20 would make 1420), so 19, 19, then 2 after the flush delay.
        let started = Instant::now();
        for s in 0..40 {
            x.offer(event(s, EventKind::New, 1));
            x.offer(event(s, EventKind::Destroy, 3));
        }
        let mut seqs = Vec::new();
        let mut total = 0;
        while total < 40 {
            let buf = rx.recv_timeout(t).unwrap();
            assert!(buf.len() <= MAX_MESSAGE);
            let records = (u16_at(&buf, 18) as usize - 4) / 70;
            assert_eq!(buf.len(), 16 + 4 + records * 70);
            assert_eq!(u16_at(&buf, 16), 256);
            // Each record: 3 packets, 300 octets, idle end.
            for r in 0..records {
                let at = 20 + r * 70;
                let u64_at = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().unwrap());
                assert_eq!((u64_at(at + 13), u64_at(at + 21)), (300, 3));
                assert_eq!(buf[at + 53], 1);
            }
            seqs.push((u32_at(&buf, 8), records));
            total += records;
        }
        // The last, partial message waited for the flush delay, not for more records.
        let waited = started.elapsed();
        assert!(waited >= FLUSH && waited < FLUSH * 20, "{waited:?}");
        assert_eq!(seqs, [(0, 19), (19, 19), (38, 2)]);
        x.stop();
        let s = x.status();
        assert_eq!(
            (s.events, s.records, s.messages, s.templates, s.flows),
            (80, 40, 4, 1, 0)
        );
        assert_eq!((s.dropped_channel, s.send_errors, s.stale), (0, 0, 0));
        assert!(rx.try_recv().is_err());
    }

    /// A collector that fails every send (as a connected socket to a collector that is down
    /// does with ECONNREFUSED): counted, and the exporter goes on.
    #[test]
    fn send_errors_are_counted_not_fatal() {
        let (mut x, rx) = start(1);
        // The templates went out; every send from now on fails.
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        drop(rx);
        for s in 0..100 {
            x.offer(event(s, EventKind::Destroy, 1));
        }
        x.stop();
        let s = x.status();
        // The templates, then 100 records: 19, 19, 19, 19, 19, 5.
        assert_eq!((s.events, s.records, s.messages), (100, 100, 7));
        assert_eq!(s.send_errors, 6);
    }

    /// Templates go out at start and then every `template_refresh_s`, each as a message of
    /// its own, with the sequence number of the data records before it.
    #[test]
    fn templates_are_sent_again_on_time() {
        let (tx, rx) = mpsc::channel();
        let sink: Sink = Box::new(move |b: &[u8]| {
            tx.send((Instant::now(), b.to_vec()))
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
        });
        let mut p = plan(3);
        p.template_refresh_s = 1;
        let start = Instant::now();
        let mut x = Exporter::start_with(&p, vec![(p.collectors[0], sink)], || {}).unwrap();
        x.offer(event(1, EventKind::Destroy, 2));
        std::thread::sleep(Duration::from_millis(2500));
        x.stop();
        let got: Vec<(Duration, u16, u32)> = rx
            .try_iter()
            .map(|(t, b)| (t - start, u16_at(&b, 16), u32_at(&b, 8)))
            .collect();
        let kinds: Vec<(u16, u32)> = got.iter().map(|g| (g.1, g.2)).collect();
        // Templates (seq 0), the record (seq 0), templates at 1 s and 2 s (seq 1).
        assert_eq!(kinds, [(2, 0), (256, 0), (2, 1), (2, 1)], "{got:?}");
        for (i, want) in [(2, 1000), (3, 2000)] {
            let ms = got[i].0.as_millis();
            assert!((want..want + 400).contains(&ms), "template {i} at {ms} ms");
        }
        assert_eq!(x.status().templates, 3);
    }

    /// A channel that is full drops and counts; it never grows.
    #[test]
    fn a_full_channel_drops_and_counts() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(QUEUE);
        let x = Exporter {
            tx: Some(tx),
            counters: Arc::default(),
            plan: IpfixPlan {
                collectors: vec![],
                domain: 1,
                active_timeout_s: 60,
                template_refresh_s: 600,
            },
            thread: None,
        };
        for s in 0..QUEUE as u32 + 10 {
            x.offer(event(s, EventKind::Destroy, 1));
        }
        assert_eq!(x.status().dropped_channel, 10);
    }
}
