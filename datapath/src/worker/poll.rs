//! The loop: what a worker does every pass over its sockets (hot code).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    CommandQueue, DRAIN_TIMEOUT, Grace, Out, Slot, WorkerBond,
    classify::{Fate, Policy, Verdicts},
    track::Track,
};
use crate::{
    bond::{INJECT_MAX, Inject, SeenMacs},
    stats::{DropReason, Padded, WorkerCounters},
    tap::{DIR_IN, DIR_OUT},
    xsk::{FrameAudit, FrameBurst, Rings, SocketInfo, XskUmem},
};

/// A worker ready to run on its thread.
pub struct Worker<R: Rings = XskUmem> {
    pub(super) cmds: Arc<CommandQueue>,
    pub(super) attach: Arc<crossbeam_queue::ArrayQueue<Slot<R::Socket>>>,
    pub(super) retired: Arc<crossbeam_queue::ArrayQueue<Slot<R::Socket>>>,
    pub(super) rings: R,
    pub(super) slots: Vec<Slot<R::Socket>>,
    pub(super) bonds: Vec<WorkerBond>,
    pub(super) burst: FrameBurst<R::Desc>,
    pub(super) scratch: FrameBurst<R::Desc>,
    pub(super) verdicts: Verdicts,
    pub(super) burst_size: usize,
    pub(super) strict: bool,
    pub(super) stop: Arc<AtomicBool>,
    /// The grace point passed at the start of every loop ([`Grace`]).
    pub(super) grace: Arc<Grace>,
    pub(super) counters: Arc<Padded<WorkerCounters>>,
    pub(super) core: Option<usize>,
    /// The flow table (`None`: tracking off, the frame path is a plain wire).
    pub(super) flows: Option<Track>,
}

impl<R: Rings> std::fmt::Debug for Worker<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("core", &self.core)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// How a worker's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerExit {
    /// Where the frames were after the drain.
    pub audit: FrameAudit,
    /// Whether the thread got its core.
    pub pinned: bool,
    /// Whether every TX ring drained before [`DRAIN_TIMEOUT`].
    pub drained: bool,
}

/// Wall clock for capture timestamps, read once per burst and only while a capture runs.
#[inline]
fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Transmits the burst on `out`, or drops it with a reason. `verdicts` are the burst's, in
/// frame order (for the byte count). Returns the number sent.
#[inline]
fn forward<R: Rings>(
    rings: &mut R,
    burst: &mut FrameBurst<R::Desc>,
    verdicts: &Verdicts,
    out: &mut Slot<R::Socket>,
) -> usize {
    if !out.link.is_up() {
        let down = rings.drop_from(burst, 0);
        out.counters.count_drop(DropReason::TxLinkDown, down as u64);
        return 0;
    }
    if out.tap.wants(DIR_OUT) {
        // Only what the TX ring will take: a capture shows what crossed the port.
        let room = rings.tx_room(&mut out.q);
        let (tap, ts) = (&out.tap, unix_ns());
        rings.inspect_first(burst, room, |f| tap.record(f, DIR_OUT, ts));
    }
    let sent = rings.tx_burst(&mut out.q, burst);
    out.counters.tx_packets.add(sent as u64);
    out.counters.tx_bytes.add(verdicts.bytes_of_first(sent));
    let full = rings.drop_from(burst, 0);
    out.counters.count_drop(DropReason::TxRingFull, full as u64);
    sent
}

/// Records the source MACs of a burst headed into a bond. Bursts come in runs from one host:
/// each run is learnt once. Without tagged frames in the burst (the tally says) every VLAN is
/// 0 and only the source is compared.
#[inline]
fn learn(seen: &SeenMacs, verdicts: &Verdicts) {
    let Some((first, rest)) = verdicts.as_slice().split_first() else {
        return;
    };
    let now_s = seen.now_s();
    if verdicts.tally().tagged == 0 {
        // Compared with the previous run's source in place.
        let mut last = &first.hdr.src;
        seen.learn(last, 0, now_s);
        for v in rest {
            if v.hdr.src != *last {
                last = &v.hdr.src;
                seen.learn(last, 0, now_s);
            }
        }
    } else {
        let mut last = (first.hdr.src, first.hdr.dot1q_vid());
        seen.learn(&last.0, last.1, now_s);
        for v in rest {
            let key = (v.hdr.src, v.hdr.dot1q_vid());
            if key != last {
                last = key;
                seen.learn(&key.0, key.1, now_s);
            }
        }
    }
}

impl<R: Rings> Worker<R> {
    /// Pins the thread, stocks the fill rings, polls until stopped, drains TX. Returns the final
    /// frame audit.
    pub fn run(mut self) -> WorkerExit {
        let pinned = match self.core {
            Some(id) => core_affinity::set_for_current(core_affinity::CoreId { id }),
            None => true,
        };
        self.grace.set_idle(false);
        // Acquire pairs with WorkerHandle::stop's Release.
        while !self.stop.load(Ordering::Acquire) {
            self.poll_once();
        }
        // No more loops: quiescent for good (the drain touches only its own sockets).
        self.grace.set_idle(true);
        let drained = self.drain();
        self.publish();
        WorkerExit {
            audit: self.rings.audit(),
            pinned,
            drained,
        }
    }

    /// One pass over every socket. Public for tests and benchmarks that drive a worker by hand.
    ///
    /// Kept out of line (it would be inlined into [`Self::run`]): `bench/scripts/callgrind.sh`
    /// measures the instructions of this function per call. A call per loop costs nothing
    /// against the loop's work.
    #[inline(never)]
    pub fn poll_once(&mut self) -> usize {
        // The grace point: nothing of the previous loop is held here. Commands come right
        // after it, so once control sees two more than it read, every command queued before
        // is applied (a detached port's slots are gone) — see `grace.rs`.
        self.grace.pass();
        if !self.cmds.is_empty() || !self.attach.is_empty() {
            self.apply_commands();
        }
        // The flow clock, read once per loop: every burst of this loop shares it.
        let now = self.flows.as_ref().map_or(0, Track::now_ns);
        let mut moved = 0;
        for i in 0..self.slots.len() {
            moved += self.rx_slot(i, now);
        }
        if let Some(t) = &mut self.flows {
            t.tick(now);
        }
        for b in 0..self.bonds.len() {
            self.send_injected(b);
        }
        for slot in &mut self.slots {
            self.rings.kick_tx(&mut slot.q);
            self.rings.reap(&mut slot.q, &mut self.scratch);
            // Top every fill ring up from what completions returned. Refilling only after RX
            // would leave a fill ring that ran dry (all free frames in flight on TX) empty for
            // good: no RX, so no refill. A full ring costs one comparison here.
            self.rings.refill(&mut slot.q, usize::MAX);
        }
        self.counters.loops.add(1);
        if moved > 0 {
            self.counters.busy_loops.add(1);
        }
        self.publish();
        moved
    }

    /// The rings, for tests and benchmarks that play the other side of an in-memory ring.
    pub fn rings_mut(&mut self) -> &mut R {
        &mut self.rings
    }

    #[inline]
    fn rx_slot(&mut self, i: usize, now: u64) -> usize {
        let n = self
            .rings
            .rx_burst(&mut self.slots[i].q, &mut self.burst, self.burst_size);
        if n == 0 {
            return 0;
        }
        let member = self.slots[i].member;
        let policy = match member {
            Some((b, _)) => {
                let (punt_nd, own_mac) = self.bonds[b].punt.enabled();
                Policy {
                    own_mac,
                    punt_nd,
                    strict: self.strict,
                }
            }
            None => Policy {
                own_mac: 0,
                punt_nd: false,
                strict: self.strict,
            },
        };
        let rx = &self.slots[i].counters;
        // A capture on the port sees everything that arrived, even what is dropped next.
        if self.slots[i].tap.wants(DIR_IN) {
            let (tap, ts) = (&self.slots[i].tap, unix_ns());
            self.rings
                .inspect(&self.burst, |f| tap.record(f, DIR_IN, ts));
        }
        // The one pass over the frames' headers; everything below reads the verdicts.
        self.verdicts
            .classify(self.rings.frames(&self.burst), policy);
        let t = self.verdicts.tally();
        rx.rx_packets.add(n as u64);
        rx.rx_bytes.add(t.bytes);
        rx.count_burst(t);

        // Frames for the appliance itself: ARP and NS (the monitors' evidence; also forwarded,
        // they are the hosts' business too) and anything unicast to the bond's MAC (consumed).
        if let Some((b, m)) = member
            && t.punts > 0
        {
            let punt = &self.bonds[b].punt;
            let (mut to_control, mut full) = (0u64, 0u64);
            for (k, v) in self.verdicts.as_slice().iter().enumerate() {
                if v.punt {
                    let f = self.rings.frame(&self.burst, k);
                    match Inject::new(m, &f[..f.len().min(INJECT_MAX)]) {
                        Some(p) if punt.queue.push(p).is_ok() => to_control += 1,
                        _ => full += 1,
                    }
                }
            }
            let c = &self.bonds[b].counters;
            c.rx_packets.add(to_control);
            c.count_drop(DropReason::RxControlFull, full);
        }
        // A backup member's frames are dropped (counted), as Linux's bonding does, unless the
        // bond accepts every member or this one is draining after a planned switch.
        if let Some((b, m)) = member
            && !self.bonds[b].shared.view().accepts_rx(m)
        {
            let n = self.rings.drop_from(&mut self.burst, 0) as u64;
            rx.count_drop(DropReason::RxBackup, n - u64::from(t.not_forwarded));
            self.rings.refill(&mut self.slots[i].q, n as usize);
            return n as usize;
        }
        if t.not_forwarded > 0 {
            let vs = self.verdicts.as_slice();
            self.rings
                .keep(&mut self.burst, |k| vs[k].fate == Fate::Forward);
            self.verdicts.keep_forwarded();
        }
        if let Some(t) = &mut self.flows {
            let port = self.slots[i].flow_port;
            t.burst(&self.rings, &self.burst, &self.verdicts, port, now);
        }
        if let Some((b, _)) = member
            && self.bonds[b].tap.wants(DIR_IN)
        {
            let (tap, ts) = (&self.bonds[b].tap, unix_ns());
            self.rings
                .inspect(&self.burst, |f| tap.record(f, DIR_IN, ts));
        }
        match self.slots[i].out {
            Out::None => {
                let dropped = self.rings.drop_from(&mut self.burst, 0);
                self.slots[i]
                    .counters
                    .count_drop(DropReason::RxNoOutput, dropped as u64);
            }
            Out::Slot(o) => {
                forward(
                    &mut self.rings,
                    &mut self.burst,
                    &self.verdicts,
                    &mut self.slots[o],
                );
            }
            Out::Bond(b) => {
                let bond = &self.bonds[b];
                if bond.tap.wants(DIR_OUT) {
                    let ts = unix_ns();
                    self.rings
                        .inspect(&self.burst, |f| bond.tap.record(f, DIR_OUT, ts));
                }
                if let Some(seen) = &bond.seen {
                    learn(seen, &self.verdicts);
                }
                // One atomic load per burst decides the member for the whole burst.
                match bond.shared.view().active().and_then(|a| bond.members[a]) {
                    Some(o) => {
                        let sent = forward(
                            &mut self.rings,
                            &mut self.burst,
                            &self.verdicts,
                            &mut self.slots[o],
                        );
                        bond.counters.tx_packets.add(sent as u64);
                    }
                    None => {
                        let dropped = self.rings.drop_from(&mut self.burst, 0);
                        bond.counters
                            .count_drop(DropReason::TxNoActiveMember, dropped as u64);
                    }
                }
            }
        }
        self.rings.refill(&mut self.slots[i].q, n);
        n
    }

    /// Sends what control queued for bond `b` (a few per loop, so a large announcement burst
    /// never delays forwarding by much).
    #[inline]
    fn send_injected(&mut self, b: usize) {
        const PER_LOOP: usize = 16;
        let bond = &self.bonds[b];
        if bond.mailbox.is_empty() {
            return;
        }
        for _ in 0..PER_LOOP {
            let Some(frame) = bond.mailbox.pop() else {
                return;
            };
            let Some(slot) = bond.members[frame.member as usize] else {
                bond.counters.count_drop(DropReason::TxNoActiveMember, 1);
                continue;
            };
            let out = &mut self.slots[slot];
            let data = frame.frame();
            let sent = self.rings.tx_from_pool(&mut out.q, 1, |_, buf| {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                n
            });
            if sent == 1 {
                for tap in [&out.tap, &bond.tap] {
                    if tap.wants(DIR_OUT) {
                        tap.record(data, DIR_OUT, unix_ns());
                    }
                }
                out.counters.tx_packets.add(1);
                out.counters.tx_bytes.add(data.len() as u64);
            } else {
                out.counters.count_drop(DropReason::TxRingFull, 1);
            }
        }
    }

    /// Kicks and reaps until no frame is lent to a TX ring, or the timeout passes.
    fn drain(&mut self) -> bool {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let mut pending = 0;
            for slot in &mut self.slots {
                self.rings.kick_tx(&mut slot.q);
                self.rings.reap(&mut slot.q, &mut self.scratch);
                pending += slot.q.in_tx();
            }
            if pending == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    pub(super) fn publish(&self) {
        let a = self.rings.audit();
        let c = &self.counters;
        c.frames_total.set(a.total);
        c.frames_free.set(a.free);
        c.frames_in_fill.set(a.in_fill);
        c.frames_in_tx.set(a.in_tx);
    }
}
