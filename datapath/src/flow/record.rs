//! The slab's records and the readers' side of them.
//!
//! # Design
//! A record is 21 32-bit words (84 bytes) of relaxed atomics: the worker is their only
//! writer, so a store is a plain `mov` on x86-64, and readers on other threads may read them
//! at any time without a data race. Every write is bracketed by the slot's sequence number
//! (a seqlock: odd while the worker writes, then one past that), and a reader keeps a record
//! only if the sequence number was even and unchanged around its copy. Reuse of a slot for
//! another flow is a write like any other (and bumps the slot's generation), so a reader
//! never keeps a torn or reused record, and it never makes the worker wait: the worker does
//! not know readers exist. A reader that keeps losing the race gives up on that slot
//! ([`ReadError::Busy`]) after a few tries rather than spin.
//!
//! Why not epochs or copies: the bulk-dump target (1M flows in under 1 s, no worker loop
//! more than 10 µs longer) rules out the worker copying records out (it would add the dump's
//! memory traffic to the worker's loop), and an epoch scheme delays reuse, which a fixed slab
//! at full capacity cannot afford. The seqlock costs the worker two stores per update.
//!
//! Times are milliseconds since the table's start modulo 2^32 (49.7 days); an idle time is
//! at most a day, so last-seen is exact, and a flow's age is reported modulo 49.7 days.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use super::{
    Timeouts,
    key::{FlowKey, KEY_WORDS},
    mem::Region,
    tcp::{self, FlowState, TcpState},
    types::FlowCounters,
};

pub(crate) const WORDS: usize = 21;
const SEQ: usize = 0;
const LAST: usize = 1;
const FIRST: usize = 2;
const KEY: usize = 3;
/// The key's last word: zone and family (key), and the flow's state bits.
const META: usize = KEY + KEY_WORDS - 1;
const FLAGS: usize = 14;
const PKTS: usize = 15;
const BYTES: usize = 17;

/// Key bits of [`META`] (zone, IPv6 flag).
const META_KEY: u32 = 0xffff_0001;
const STATE_SHIFT: u32 = 1;
pub(crate) const LIVE: u32 = 1 << 5;
pub(crate) const ORIG_IS_B: u32 = 1 << 6;
pub(crate) const REPLIED: u32 = 1 << 7;
pub(crate) const EXPORT_PARITY: u32 = 1 << 8;
const GEN_SHIFT: u32 = 9;
const GEN_MASK: u32 = 0x7f;

/// One flow's record.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Record {
    w: [AtomicU32; WORDS],
}

const _: () = assert!(std::mem::size_of::<Record>() == 84);

/// What the worker and readers share: the slab, the counters, the clock it last saw.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) slab: Region<Record>,
    pub(crate) counters: FlowCounters,
    /// The caller's clock at the table's start, ns.
    pub(crate) epoch_ns: u64,
    /// Milliseconds since the start at the last call (published once per call).
    pub(crate) now_ms: AtomicU64,
    /// The idle timeouts in force (a reload changes them), for readers' time left.
    pub(crate) timeouts: SharedTimeouts,
}

/// [`Timeouts`] that the worker may change while readers read them: one relaxed atomic per
/// field. A reader racing a change may see some fields old and some new; each is a valid
/// timeout either way, and the next read sees them all new.
#[derive(Debug, Default)]
pub(crate) struct SharedTimeouts([AtomicU32; 7]);

impl SharedTimeouts {
    pub(crate) fn new(t: Timeouts) -> Self {
        let s = Self::default();
        s.store(t);
        s
    }

    pub(crate) fn store(&self, t: Timeouts) {
        for (a, (_, v)) in self.0.iter().zip(t.named()) {
            a.store(v, Ordering::Relaxed);
        }
    }

    pub(crate) fn load(&self) -> Timeouts {
        let f = |i: usize| self.0[i].load(Ordering::Relaxed);
        Timeouts {
            tcp_established_s: f(0),
            tcp_syn_s: f(1),
            tcp_fin_wait_s: f(2),
            tcp_closed_s: f(3),
            udp_s: f(4),
            udp_stream_s: f(5),
            icmp_s: f(6),
        }
    }
}

/// The mutable part of a record, as the worker holds it during an update.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hot {
    pub(crate) meta: u32,
    pub(crate) flags: u32,
}

impl Hot {
    #[inline]
    pub(crate) fn state(&self) -> TcpState {
        TcpState::from_bits(self.meta >> STATE_SHIFT)
    }

    /// Whether the flow is TCP (a state other than none).
    #[inline(always)]
    pub(crate) fn is_tcp(&self) -> bool {
        self.meta & (0xf << STATE_SHIFT) != 0
    }

    #[inline]
    pub(crate) fn set_state(&mut self, s: TcpState) {
        self.meta = (self.meta & !(0xf << STATE_SHIFT)) | (s as u32) << STATE_SHIFT;
    }
}

#[inline]
fn ld(a: &AtomicU32) -> u32 {
    a.load(Ordering::Relaxed)
}

#[inline]
fn st(a: &AtomicU32, v: u32) {
    a.store(v, Ordering::Relaxed)
}

impl Record {
    /// Starts a write: the sequence number goes odd. Returns it as it was.
    #[inline]
    pub(crate) fn begin(&self) -> u32 {
        let s = ld(&self.w[SEQ]);
        st(&self.w[SEQ], s.wrapping_add(1));
        // Orders the odd sequence number before the stores that follow (pairs with the
        // reader's Acquire fence before its second read of the sequence number).
        fence(Ordering::Release);
        s
    }

    /// Ends a write begun at `s`.
    #[inline]
    pub(crate) fn end(&self, s: u32) {
        // Release: the record's stores happen before the even number a reader acquires.
        self.w[SEQ].store(s.wrapping_add(2), Ordering::Release);
    }

    /// Whether the record is live and holds `key`.
    #[inline]
    pub(crate) fn holds(&self, key: &FlowKey) -> bool {
        let mut diff = 0;
        for i in 0..KEY_WORDS - 1 {
            diff |= ld(&self.w[KEY + i]) ^ key.w[i];
        }
        diff |= (ld(&self.w[META]) & (META_KEY | LIVE)) ^ (key.w[KEY_WORDS - 1] | LIVE);
        diff == 0
    }

    /// The key (worker side).
    #[inline]
    pub(crate) fn key(&self) -> FlowKey {
        let mut k = FlowKey::default();
        for (i, w) in k.w.iter_mut().enumerate() {
            *w = ld(&self.w[KEY + i]);
        }
        k.w[KEY_WORDS - 1] &= META_KEY;
        k
    }

    #[inline]
    pub(crate) fn hot(&self) -> Hot {
        Hot {
            meta: ld(&self.w[META]),
            flags: ld(&self.w[FLAGS]),
        }
    }

    #[inline]
    pub(crate) fn last_ms(&self) -> u32 {
        ld(&self.w[LAST])
    }

    #[inline]
    pub(crate) fn first_ms(&self) -> u32 {
        ld(&self.w[FIRST])
    }

    #[inline]
    pub(crate) fn gen_of(meta: u32) -> u32 {
        (meta >> GEN_SHIFT) & GEN_MASK
    }

    /// Writes a new flow into the record (inside a write): counters zero, the next
    /// generation.
    #[inline]
    pub(crate) fn fill(&self, key: &FlowKey, bits: u32, state: TcpState, now: u32) {
        let gen_next = (Self::gen_of(ld(&self.w[META])) + 1) & GEN_MASK;
        for i in 0..KEY_WORDS - 1 {
            st(&self.w[KEY + i], key.w[i]);
        }
        let meta = key.w[KEY_WORDS - 1]
            | LIVE
            | bits
            | (state as u32) << STATE_SHIFT
            | gen_next << GEN_SHIFT;
        st(&self.w[META], meta);
        st(&self.w[FIRST], now);
        st(&self.w[LAST], now);
        for i in FLAGS..WORDS {
            st(&self.w[i], 0);
        }
    }

    /// Counts one packet in direction `d` (0 originator, 1 replier) and stores the new hot
    /// words (inside a write).
    #[inline]
    pub(crate) fn count(&self, d: usize, l3_len: u32, hot: Hot, now: u32) {
        st(&self.w[LAST], now);
        st(&self.w[META], hot.meta);
        st(&self.w[FLAGS], hot.flags);
        let p = &self.w[PKTS + d];
        st(p, ld(p).wrapping_add(1));
        let lo = &self.w[BYTES + 2 * d];
        let (v, carry) = ld(lo).overflowing_add(l3_len);
        st(lo, v);
        if carry {
            let hi = &self.w[BYTES + 2 * d + 1];
            st(hi, ld(hi).wrapping_add(1));
        }
    }

    /// Marks the record free (inside a write); the key stays, for the destroy event.
    #[inline]
    pub(crate) fn kill(&self) {
        st(&self.w[META], ld(&self.w[META]) & !LIVE);
    }

    /// Sets the meta word alone (inside a write).
    #[inline]
    pub(crate) fn set_meta(&self, meta: u32) {
        st(&self.w[META], meta);
    }

    /// Copies the words out (a reader copies inside its sequence check), last word first:
    /// the opposite order to the writer's, so a copy that overlaps a write without the
    /// sequence check (the stress test's unprotected switch) mixes the two.
    #[inline]
    fn copy(&self, out: &mut [u32; WORDS]) {
        for (o, w) in out.iter_mut().zip(&self.w).rev() {
            *o = ld(w);
        }
    }
}

/// Why a slot gave no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The slot holds no flow.
    #[error("free slot")]
    Free,
    /// The worker kept writing the slot during every try; read it again later.
    #[error("slot busy")]
    Busy,
    /// Beyond the table's capacity.
    #[error("slot out of range")]
    OutOfRange,
}

/// One flow as a reader copied it (consistent: no torn or reused record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSnapshot {
    /// Slab position (a dump cursor).
    pub slot: u32,
    /// The slot's generation (changes when the slot is reused; 7 bits).
    pub generation: u8,
    /// The normalised key.
    pub key: FlowKey,
    /// Whether endpoint `b` opened the flow (otherwise `a` did).
    pub orig_is_b: bool,
    /// State.
    pub state: FlowState,
    /// TCP flags seen, originator then replier.
    pub tcp_flags: [u8; 2],
    /// Port each direction entered by, originator then replier (replier: 0 until seen).
    pub ingress: [u8; 2],
    /// Packets, originator then replier.
    pub packets: [u64; 2],
    /// L3 bytes (IP total length), originator then replier.
    pub bytes: [u64; 2],
    /// First packet, in the caller's clock (ns).
    pub first_seen_ns: u64,
    /// Last packet, in the caller's clock (ns).
    pub last_seen_ns: u64,
    /// Milliseconds until it expires if idle (0: due).
    pub expires_in_ms: u64,
}

impl FlowSnapshot {
    /// The originator's address and port, then the replier's.
    pub fn orig(&self) -> ((std::net::IpAddr, u16), (std::net::IpAddr, u16)) {
        let a = (self.key.ip_a(), self.key.port_a());
        let b = (self.key.ip_b(), self.key.port_b());
        if self.orig_is_b { (b, a) } else { (a, b) }
    }

    /// Decodes words copied under a sequence check.
    fn decode(slot: u32, w: &[u32; WORDS], sh: &Shared, now_ms: u64) -> Self {
        let mut key = FlowKey::default();
        key.w.copy_from_slice(&w[KEY..KEY + KEY_WORDS]);
        key.w[KEY_WORDS - 1] &= META_KEY;
        let meta = w[META];
        let st = TcpState::from_bits(meta >> STATE_SHIFT);
        let replied = meta & REPLIED != 0;
        let state = match st {
            TcpState::None if replied => FlowState::Replied,
            TcpState::None => FlowState::Unreplied,
            t => FlowState::Tcp(t),
        };
        let full = |t: u32| now_ms.saturating_sub(u64::from((now_ms as u32).wrapping_sub(t)));
        let last = full(w[LAST]);
        let timeout = u64::from(tcp::timeout_s(
            &sh.timeouts.load(),
            key.proto(),
            st,
            replied,
        )) * 1000;
        let f = w[FLAGS];
        let ms = |m: u64| sh.epoch_ns + m * 1_000_000;
        Self {
            slot,
            generation: Record::gen_of(meta) as u8,
            key,
            orig_is_b: meta & ORIG_IS_B != 0,
            state,
            tcp_flags: [f as u8, (f >> 8) as u8],
            ingress: [(f >> 16) as u8, (f >> 24) as u8],
            packets: [u64::from(w[PKTS]), u64::from(w[PKTS + 1])],
            bytes: [
                u64::from(w[BYTES]) | u64::from(w[BYTES + 1]) << 32,
                u64::from(w[BYTES + 2]) | u64::from(w[BYTES + 3]) << 32,
            ],
            first_seen_ns: ms(full(w[FIRST])),
            last_seen_ns: ms(last),
            expires_in_ms: (last + timeout).saturating_sub(now_ms),
        }
    }
}

/// Reads a worker's flow table from another thread (dumps, stats). Cheap to clone.
#[derive(Debug, Clone)]
pub struct FlowReader {
    pub(crate) shared: std::sync::Arc<Shared>,
}

/// Tries per slot before [`ReadError::Busy`].
const READ_TRIES: u32 = 8;

impl FlowReader {
    /// Slots in the slab (the table's capacity).
    pub fn capacity(&self) -> u32 {
        self.shared.slab.len() as u32
    }

    /// The table's counters.
    pub fn counters(&self) -> &FlowCounters {
        &self.shared.counters
    }

    /// The worker's clock at its last call, ns.
    pub fn now_ns(&self) -> u64 {
        self.shared.epoch_ns + self.shared.now_ms.load(Ordering::Relaxed) * 1_000_000
    }

    /// A consistent copy of the flow in `slot`.
    ///
    /// # Errors
    /// [`ReadError::Free`] for a free slot, [`ReadError::Busy`] when the worker wrote the
    /// slot during every try, [`ReadError::OutOfRange`].
    pub fn read(&self, slot: u32) -> Result<FlowSnapshot, ReadError> {
        let r = self
            .shared
            .slab
            .get(slot as usize)
            .ok_or(ReadError::OutOfRange)?;
        let mut w = [0u32; WORDS];
        for _ in 0..READ_TRIES {
            // Acquire: pairs with the Release store that ended the write.
            let s1 = r.w[SEQ].load(Ordering::Acquire);
            if s1 & 1 == 0 {
                r.copy(&mut w);
                // Acquire fence: the copy's loads happen before the second read below
                // (pairs with the writer's Release fence after it made the number odd).
                fence(Ordering::Acquire);
                if r.w[SEQ].load(Ordering::Relaxed) == s1 {
                    if w[META] & LIVE == 0 {
                        return Err(ReadError::Free);
                    }
                    let now = self.shared.now_ms.load(Ordering::Relaxed);
                    return Ok(FlowSnapshot::decode(slot, &w, &self.shared, now));
                }
            }
            std::hint::spin_loop();
        }
        Err(ReadError::Busy)
    }
}

impl Shared {
    /// The worker's own copy of a record: it is the only writer, so no sequence check.
    pub(crate) fn local(&self, slot: u32) -> FlowSnapshot {
        let mut w = [0u32; WORDS];
        self.slab[slot as usize].copy(&mut w);
        FlowSnapshot::decode(slot, &w, self, self.now_ms.load(Ordering::Relaxed))
    }
}
