//! [`FlowTable`]: one worker's flows: the slab, its index, its wheel, its event ring.
//!
//! # Design
//! Everything is allocated in [`FlowTable::new`]; nothing after it allocates, grows or
//! rehashes. A packet's flow is found through the index (one bucket line, one record) or
//! inserted into a slot taken from the free list; when none is free, a flow that is not a
//! live established TCP connection is evicted (the soonest due first, counted), and if there
//! is none the packet goes untracked (`flow_table_full`) and is forwarded all the same.
//! [`FlowTable::track_burst`] does a whole burst in three passes: hash every key and prefetch
//! its bucket, read the buckets and prefetch the candidate records, then compare and update
//! (the idea of DPDK's `rte_hash_lookup_bulk`), so the burst's cache misses overlap.

use std::sync::{Arc, atomic::Ordering};

use super::types::{FlowBurst, FlowPacket, Flush, FlushProgress, matches};
use super::{
    FlowParams, Timeouts,
    events::{EndReason, EventKind, EventReader, EventRing, FlowEvent},
    index::{Index, Place},
    key::{Dir, FlowKey, KeyHasher, Skip},
    mem::prefetch,
    record::{EXPORT_PARITY, FlowReader, LIVE, ORIG_IS_B, REPLIED, Record, Shared},
    tcp::{self, TcpState},
    types::FlowCounters,
    wheel::{SLOTS, Wheel},
};
use crate::wire::tcp::FIN;

/// A flow's slab position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId(pub u32);

/// What [`FlowTable::lookup_or_insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The flow was there.
    Hit(FlowId),
    /// A new flow was made (its counters are zero until [`FlowTable::update`]).
    Inserted(FlowId),
    /// No room: the packet is not tracked (`flow_table_full`).
    Full,
}

/// One worker's flow table.
#[derive(Debug)]
pub struct FlowTable {
    sh: Arc<Shared>,
    ix: Index,
    wheel: Wheel,
    hasher: KeyHasher,
    timeouts: Timeouts,
    active_ms: u64,
    ring: EventRing,
    now_ms: u64,
    in_use: u32,
    cap: u32,
    /// Packets counted since the last publication to `counters.packets`.
    pending_packets: u64,
    #[cfg(test)]
    pub(crate) reuse_unprotected: bool,
}

/// Flows examined per eviction attempt.
const EVICT_LOOK: usize = 32;

impl FlowTable {
    /// A table for `params.capacity()` flows, all memory allocated now; `now_ns` is the
    /// caller's clock (the table's epoch).
    ///
    /// # Errors
    /// The memory could not be mapped.
    pub fn new(params: &FlowParams, now_ns: u64) -> std::io::Result<Self> {
        Self::with_hasher(params, now_ns, KeyHasher::random())
    }

    /// [`FlowTable::new`] with fixed hash secrets (benchmarks and tests that must repeat).
    ///
    /// # Errors
    /// As [`FlowTable::new`].
    pub fn with_seed(params: &FlowParams, now_ns: u64, seed: u64) -> std::io::Result<Self> {
        Self::with_hasher(params, now_ns, KeyHasher::with_seed(seed))
    }

    fn with_hasher(params: &FlowParams, now_ns: u64, hasher: KeyHasher) -> std::io::Result<Self> {
        let cap = params.capacity();
        let sh = Shared {
            slab: super::mem::Region::new(cap as usize)?,
            counters: FlowCounters::default(),
            epoch_ns: now_ns,
            now_ms: Default::default(),
            timeouts: super::record::SharedTimeouts::new(params.timeouts()),
        };
        sh.counters.capacity.set(cap.into());
        Ok(Self {
            sh: Arc::new(sh),
            ix: Index::new(cap)?,
            wheel: Wheel::new(cap)?,
            hasher,
            timeouts: params.timeouts(),
            active_ms: u64::from(params.active_timeout_s()) * 1000,
            ring: EventRing::new(params.event_ring()),
            now_ms: 0,
            in_use: 0,
            cap,
            pending_packets: 0,
            #[cfg(test)]
            reuse_unprotected: false,
        })
    }

    /// A reader of the slab for other threads.
    pub fn reader(&self) -> FlowReader {
        FlowReader {
            shared: self.sh.clone(),
        }
    }

    /// Control's end of the event ring.
    pub fn events(&self) -> EventReader {
        EventReader {
            q: self.ring.q.clone(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &FlowCounters {
        &self.sh.counters
    }

    /// Flows in the table.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Slots in the table.
    pub fn capacity(&self) -> u32 {
        self.cap
    }

    /// Bytes allocated at start: slab, index, links and event ring.
    pub fn allocated_bytes(&self) -> usize {
        self.sh.slab.bytes() + self.ix.bytes() + self.wheel.bytes() + self.ring.bytes()
    }

    /// The worker's own view of a flow (no sequence check: it is the writer).
    pub fn get(&self, id: FlowId) -> Option<super::FlowSnapshot> {
        let r = self.sh.slab.get(id.0 as usize)?;
        (r.hot().meta & LIVE != 0).then(|| self.sh.local(id.0))
    }

    #[inline]
    fn set_now(&mut self, now_ns: u64) {
        let ms = now_ns.saturating_sub(self.sh.epoch_ns) / 1_000_000;
        if ms != self.now_ms {
            self.now_ms = ms;
            self.sh.now_ms.store(ms, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn slab(&self, s: u32) -> &Record {
        &self.sh.slab[s as usize]
    }

    /// A record time (ms modulo 2^32) as milliseconds since the start.
    #[inline]
    fn full_ms(&self, t: u32) -> u64 {
        self.now_ms
            .saturating_sub(u64::from((self.now_ms as u32).wrapping_sub(t)))
    }

    #[inline]
    fn timeout_ms(&self, proto: u8, meta: u32, state: TcpState) -> u64 {
        u64::from(tcp::timeout_s(
            &self.timeouts,
            proto,
            state,
            meta & REPLIED != 0,
        )) * 1000
    }

    #[inline]
    fn place(&self, key: &FlowKey) -> Place {
        self.ix.place(self.hasher.hash(key))
    }

    #[inline]
    fn unprotected(&self) -> bool {
        #[cfg(test)]
        return self.reuse_unprotected;
        #[cfg(not(test))]
        false
    }

    /// Finds `key`'s flow, or makes one (TCP: whatever the first segment; see
    /// [`FlowTable::track`] for the state machine's rule on opening).
    pub fn lookup_or_insert(&mut self, key: &FlowKey, now_ns: u64) -> Lookup {
        self.set_now(now_ns);
        let p = self.place(key);
        if let Some(s) = self.find(p, key) {
            return Lookup::Hit(FlowId(s));
        }
        match self.insert(p, key, 0, TcpState::None) {
            Some(s) => Lookup::Inserted(FlowId(s)),
            None => Lookup::Full,
        }
    }

    /// Finds `key`'s flow without making one.
    pub fn lookup(&self, key: &FlowKey) -> Option<FlowId> {
        self.find(self.place(key), key).map(FlowId)
    }

    /// Looks up a batch of keys (at most 64 at a time, as [`FlowTable::track_burst`]: every
    /// bucket prefetched, then every candidate record, then the compares): `out[i]` is the
    /// flow of `keys[i]`. The analogue of `rte_hash_lookup_bulk`.
    pub fn lookup_bulk(&self, keys: &[FlowKey], out: &mut [Option<FlowId>]) {
        for (keys, out) in keys.chunks(64).zip(out.chunks_mut(64)) {
            let mut pl = [Place { bucket: 0, tag: 0 }; 64];
            for (p, k) in pl.iter_mut().zip(keys) {
                *p = self.place(k);
                self.ix.prefetch(*p);
            }
            let mut cand = [u32::MAX; 64];
            for (c, p) in cand.iter_mut().zip(&pl[..keys.len()]) {
                if let Some(s) = self.ix.first_candidate(*p) {
                    *c = s;
                    self.prefetch_record(s);
                }
            }
            for (((o, k), p), &c) in out.iter_mut().zip(keys).zip(&pl).zip(&cand) {
                *o = if c != u32::MAX && self.slab(c).holds(k) {
                    Some(FlowId(c))
                } else {
                    self.find(*p, k).map(FlowId)
                };
            }
        }
    }

    #[inline(always)]
    fn prefetch_record(&self, s: u32) {
        let a = self.sh.slab.addr(s as usize);
        prefetch(a);
        prefetch(a.wrapping_add(std::mem::size_of::<Record>() - 1));
    }

    #[inline]
    fn find(&self, p: Place, key: &FlowKey) -> Option<u32> {
        let slab = &self.sh.slab;
        self.ix.find(p, |s| slab[s as usize].holds(key))
    }

    /// Counts `pkt` into flow `id`: both directions' counters, flags, ingress port, state.
    pub fn update(&mut self, id: FlowId, pkt: &FlowPacket, now_ns: u64) {
        self.set_now(now_ns);
        self.count(id.0, pkt);
        self.publish_packets();
    }

    /// Publishes the packet counter once per call rather than per packet.
    #[inline]
    fn publish_packets(&mut self) {
        self.sh.counters.packets.add(self.pending_packets);
        self.pending_packets = 0;
    }

    /// Looks up or inserts `pkt`'s flow and counts the packet into it. A TCP segment that
    /// matches no flow opens one only if it is a SYN or carries an ACK (conntrack's loose
    /// pickup); a RST or a bare FIN is not tracked (`flow_skip_tcp_invalid`).
    ///
    /// # Errors
    /// Why the packet is not tracked: [`Skip::TcpInvalid`], or `None` when the table is full.
    pub fn track(&mut self, pkt: &FlowPacket, now_ns: u64) -> Result<FlowId, Option<Skip>> {
        self.set_now(now_ns);
        let p = self.place(&pkt.key);
        let r = self.track_at(p, pkt);
        self.publish_packets();
        r
    }

    #[inline]
    fn track_at(&mut self, p: Place, pkt: &FlowPacket) -> Result<FlowId, Option<Skip>> {
        if let Some(s) = self.find(p, &pkt.key) {
            self.count(s, pkt);
            return Ok(FlowId(s));
        }
        self.open(p, pkt)
    }

    #[cold]
    #[inline(never)]
    fn open(&mut self, p: Place, pkt: &FlowPacket) -> Result<FlowId, Option<Skip>> {
        let (state, sender_is_orig) = if pkt.key.proto() == 6 {
            match tcp::open(pkt.tcp_flags) {
                Some(o) => o,
                None => {
                    self.sh.counters.skipped[Skip::TcpInvalid as usize].add(1);
                    return Err(Some(Skip::TcpInvalid));
                }
            }
        } else {
            (TcpState::None, true)
        };
        let sender_is_b = pkt.dir == Dir::BtoA;
        let orig_is_b = sender_is_b == sender_is_orig;
        let bits = if orig_is_b { ORIG_IS_B } else { 0 };
        let s = self.insert(p, &pkt.key, bits, state).ok_or(None)?;
        self.count_new(s, pkt);
        Ok(FlowId(s))
    }

    /// Takes a slot (evicting if need be), indexes it and writes the new flow; arms its
    /// timer and sends its new event.
    fn insert(&mut self, p: Place, key: &FlowKey, bits: u32, state: TcpState) -> Option<u32> {
        let s = match self.wheel.alloc() {
            Some(s) => s,
            None => {
                if !self.evict_one() {
                    self.sh.counters.full.add(1);
                    return None;
                }
                self.wheel.alloc()?
            }
        };
        if !self.ix.insert(p, s) {
            self.wheel.free(s, true);
            self.sh.counters.full.add(1);
            return None;
        }
        let now = self.now_ms as u32;
        let r = self.slab(s);
        if self.unprotected() {
            r.fill(key, bits, state, now);
        } else {
            let seq = r.begin();
            r.fill(key, bits, state, now);
            r.end(seq);
        }
        let meta = r.hot().meta;
        let deadline = self.now_ms + self.timeout_ms(key.proto(), meta, state);
        self.wheel.arm(s, self.next_visit(deadline));
        self.in_use += 1;
        let c = &self.sh.counters;
        c.inserts.add(1);
        c.in_use.set(self.in_use.into());
        self.emit(s, EventKind::New, EndReason::None);
        Some(s)
    }

    /// The first packet of a flow just inserted.
    #[inline]
    fn count_new(&mut self, s: u32, pkt: &FlowPacket) {
        // count() handles the direction and flags; the state was set by open.
        self.count(s, pkt);
    }

    /// The per-packet update. A flow that is not TCP (state bits 0) takes no state step.
    #[inline(always)]
    fn count(&mut self, s: u32, pkt: &FlowPacket) {
        let r = self.slab(s);
        let mut hot = r.hot();
        let orig_is_b = hot.meta & ORIG_IS_B != 0;
        let d = usize::from((pkt.dir == Dir::BtoA) != orig_is_b);
        let sh = 8 * d as u32;
        hot.flags |= u32::from(pkt.tcp_flags) << sh;
        hot.flags = (hot.flags & !(0xff << (16 + sh))) | u32::from(pkt.port) << (16 + sh);
        hot.meta |= (d as u32) * REPLIED;
        let tcp = hot.is_tcp();
        let old = if tcp { hot.state() } else { TcpState::None };
        if tcp {
            let fin_o = hot.flags & u32::from(FIN) != 0;
            let fin_r = (hot.flags >> 8) & u32::from(FIN) != 0;
            let st = tcp::step(old, d == 0, pkt.tcp_flags, fin_o, fin_r);
            if st.reopen {
                return self.reopen(s, pkt);
            }
            hot.set_state(st.state);
        }
        let now = self.now_ms as u32;
        let seq = r.begin();
        r.count(d, u32::from(pkt.l3_len), hot, now);
        r.end(seq);
        self.pending_packets += 1;
        if tcp {
            let new = hot.state();
            if new != old {
                self.state_changed(s, hot.meta, old, new);
            }
        }
    }

    /// A TCP flow changed state: moved on the wheel if its new timeout is shorter.
    #[cold]
    fn state_changed(&mut self, s: u32, meta: u32, old: TcpState, new: TcpState) {
        let t_new = self.timeout_ms(6, meta, new);
        if t_new < self.timeout_ms(6, meta, old) {
            let deadline = self.now_ms + t_new;
            self.wheel.rearm(s, self.next_visit(deadline));
        }
    }

    /// A SYN on a closed 5-tuple: the old flow ends, a new one starts in the same slot.
    #[cold]
    fn reopen(&mut self, s: u32, pkt: &FlowPacket) {
        self.emit(s, EventKind::Destroy, EndReason::Reopen);
        self.sh.counters.reopened.add(1);
        let bits = if pkt.dir == Dir::BtoA { ORIG_IS_B } else { 0 };
        let r = self.slab(s);
        let seq = r.begin();
        r.fill(&pkt.key, bits, TcpState::SynSent, self.now_ms as u32);
        r.end(seq);
        self.emit(s, EventKind::New, EndReason::None);
        self.count(s, pkt);
        let deadline = self.now_ms + u64::from(self.timeouts.tcp_syn_s) * 1000;
        self.wheel.rearm(s, self.next_visit(deadline));
    }

    /// When the wheel should next look at a flow due at `deadline`: then, or at its next
    /// active-timeout update if sooner.
    #[inline]
    fn next_visit(&self, deadline: u64) -> u64 {
        if self.active_ms == 0 {
            deadline
        } else {
            deadline.min(self.now_ms + self.active_ms)
        }
    }

    #[inline]
    fn emit(&self, s: u32, kind: EventKind, reason: EndReason) {
        let flow = self.sh.local(s);
        let c = &self.sh.counters;
        if self.ring.push(FlowEvent { kind, reason, flow }) {
            c.events.add(1);
        } else {
            c.events_dropped.add(1);
        }
    }

    /// Removes flow `s` (unlinked from the wheel already): destroy event, index, record,
    /// free list.
    fn destroy(&mut self, s: u32, reason: EndReason) {
        self.emit(s, EventKind::Destroy, reason);
        let r = self.slab(s);
        let key = r.key();
        let p = self.place(&key);
        let removed = self.ix.remove(p, s);
        debug_assert!(removed, "a live flow is in the index");
        let r = self.slab(s);
        if !self.unprotected() {
            let seq = r.begin();
            r.kill();
            r.end(seq);
        }
        self.wheel.free(s, self.unprotected());
        self.in_use -= 1;
        self.sh.counters.in_use.set(self.in_use.into());
    }

    /// Makes room: the soonest-due flow that is not a live established TCP connection.
    /// Live ones met on the way are put back at their real deadline (the wheel is lazy:
    /// a flow that kept sending still sits where its first deadline was), so a later call
    /// does not look at them again. At most [`EVICT_LOOK`] flows are looked at.
    #[cold]
    fn evict_one(&mut self) -> bool {
        let mut t = 0;
        for _ in 0..EVICT_LOOK {
            let Some(s) = self.wheel.first_from(&mut t) else {
                return false;
            };
            let r = self.slab(s);
            let hot = r.hot();
            let state = hot.state();
            let proto = r.key().proto();
            let deadline = self.full_ms(r.last_ms()) + self.timeout_ms(proto, hot.meta, state);
            self.wheel.unlink(s);
            if state != TcpState::Established || deadline <= self.now_ms {
                self.destroy(s, EndReason::Evict);
                self.sh.counters.evictions.add(1);
                return true;
            }
            self.wheel.arm(s, self.next_visit(deadline));
        }
        false
    }

    /// Expires flows idle past their timeout, at most `budget` wheel entries looked at;
    /// returns how many expired. Sends active-timeout updates of the flows it looks at.
    pub fn expire(&mut self, now_ns: u64, budget: u32) -> u32 {
        self.set_now(now_ns);
        let mut slots = SLOTS;
        let mut n = 0;
        for _ in 0..budget {
            let Some(s) = self.wheel.pop_due(self.now_ms, &mut slots) else {
                break;
            };
            let r = self.slab(s);
            let hot = r.hot();
            let proto = r.key().proto();
            let deadline =
                self.full_ms(r.last_ms()) + self.timeout_ms(proto, hot.meta, hot.state());
            if deadline <= self.now_ms {
                self.destroy(s, EndReason::Idle);
                self.sh.counters.expiries.add(1);
                n += 1;
                continue;
            }
            let age = self.now_ms - self.full_ms(r.first_ms());
            if let Some(k) = age.checked_div(self.active_ms) {
                let parity = if k & 1 == 1 { EXPORT_PARITY } else { 0 };
                if hot.meta & EXPORT_PARITY != parity {
                    let seq = r.begin();
                    r.set_meta(hot.meta ^ EXPORT_PARITY);
                    r.end(seq);
                    self.emit(s, EventKind::Update, EndReason::None);
                }
            }
            self.wheel.arm(s, self.next_visit(deadline));
        }
        n
    }

    /// Changes the idle timeouts and the active timeout (a reload). The flows already in the
    /// table keep the wheel slots their old timeouts gave them until [`FlowTable::retime`]
    /// moves them: the caller runs it over the whole slab, in slices, when this returns true
    /// (a timeout got shorter, or the active timeout changed). A longer timeout needs no
    /// sweep: the wheel is lazy, and a flow visited early is put back at its real deadline.
    pub fn set_timeouts(&mut self, timeouts: Timeouts, active_timeout_s: u32) -> bool {
        let active_ms = u64::from(active_timeout_s) * 1000;
        let shorter = self
            .timeouts
            .named()
            .iter()
            .zip(timeouts.named())
            .any(|((_, old), (_, new))| new < *old);
        let sweep = shorter || active_ms != self.active_ms;
        self.timeouts = timeouts;
        self.active_ms = active_ms;
        self.sh.timeouts.store(timeouts);
        sweep
    }

    /// Puts the live flows among slots `from..from + budget` back in the wheel at their
    /// deadline under the timeouts in force; returns where to go on, `None` at the end.
    pub fn retime(&mut self, from: u32, budget: u32, now_ns: u64) -> Option<u32> {
        self.set_now(now_ns);
        let end = from.saturating_add(budget).min(self.cap);
        for s in from.min(end)..end {
            let r = self.slab(s);
            let hot = r.hot();
            if hot.meta & LIVE == 0 {
                continue;
            }
            let deadline =
                self.full_ms(r.last_ms()) + self.timeout_ms(r.key().proto(), hot.meta, hot.state());
            self.wheel.rearm(s, self.next_visit(deadline));
        }
        (end < self.cap).then_some(end)
    }

    /// Removes the flows `f` selects among slots `from..from + budget`; call again from
    /// [`FlushProgress::next`] until it is `None`.
    pub fn flush(&mut self, f: &Flush, from: u32, budget: u32, now_ns: u64) -> FlushProgress {
        self.set_now(now_ns);
        let end = from.saturating_add(budget).min(self.cap);
        let mut removed = 0;
        for s in from.min(end)..end {
            let r = self.slab(s);
            let hot = r.hot();
            if hot.meta & LIVE == 0 || !matches(f, r, hot.meta, hot.flags) {
                continue;
            }
            self.wheel.unlink(s);
            self.destroy(s, EndReason::Flush);
            removed += 1;
        }
        self.sh.counters.flushed.add(removed.into());
        FlushProgress {
            removed,
            next: (end < self.cap).then_some(end),
        }
    }

    /// Tracks a burst: hashes every key and prefetches its bucket, reads the buckets and
    /// prefetches the candidate records, then compares and updates (inserting what is new).
    /// Returns how many packets were counted into a flow.
    pub fn track_burst(&mut self, b: &FlowBurst, now_ns: u64) -> u32 {
        self.set_now(now_ns);
        let c = &self.sh.counters;
        for (i, &n) in b.skipped.iter().enumerate() {
            if n != 0 {
                c.skipped[i].add(n.into());
            }
        }
        let mut tracked = 0;
        for chunk in b.packets().chunks(64) {
            let n = chunk.len();
            let mut pl = [Place { bucket: 0, tag: 0 }; 64];
            let mut cand = [u32::MAX; 64];
            // Pass 1: hash every key, start loading its bucket.
            for i in 0..n {
                pl[i] = self.place(&chunk[i].key);
                self.ix.prefetch(pl[i]);
            }
            // Pass 2: the buckets' first candidates, start loading their records.
            for i in 0..n {
                if let Some(s) = self.ix.first_candidate(pl[i]) {
                    cand[i] = s;
                    self.prefetch_record(s);
                }
            }
            // Pass 3: compare and count (the rest of the index, or a new flow, if not it).
            for i in 0..n {
                let (pkt, c) = (&chunk[i], cand[i]);
                if c != u32::MAX && self.slab(c).holds(&pkt.key) {
                    self.count(c, pkt);
                    tracked += 1;
                } else if self.track_at(pl[i], pkt).is_ok() {
                    tracked += 1;
                }
            }
        }
        self.publish_packets();
        tracked
    }
}
