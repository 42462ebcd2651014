//! Active-backup bonding, datapath side: which member transmits right now, and whose frames are
//! accepted.
//!
//! Control (the link monitor, the planned-switch command) writes; workers read the state once
//! per burst with one atomic load. The state packs the active member and a second member whose
//! received frames are still accepted: the old active during a planned switch, until the peers
//! have relearned where the appliance is (so a planned switch loses nothing in either
//! direction). DPDK splits it the same way: its burst functions read the current primary, its
//! link-change handler changes it.

use std::sync::atomic::{AtomicU32, Ordering};

use crossbeam_utils::CachePadded;

use crate::wire::{Mac, ethernet};

/// The most members a bond can have.
pub const MAX_MEMBERS: usize = 8;
/// "No member": no active member (carrier down), or no draining member.
pub const NONE: u8 = u8::MAX;

/// The state as one word: active member (bits 0..8), draining member (8..16), flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BondView(u32);

const ALL_ACTIVE: u32 = 1 << 16;

impl BondView {
    /// The member that transmits, if any.
    #[inline]
    pub fn active(self) -> Option<usize> {
        let a = (self.0 & 0xff) as u8;
        (a != NONE).then_some(a as usize)
    }

    /// Whether frames received on `member` are taken (else dropped as `rx_drop_backup`).
    #[inline]
    pub fn accepts_rx(self, member: usize) -> bool {
        let m = member as u32;
        self.0 & ALL_ACTIVE != 0 || self.0 & 0xff == m || (self.0 >> 8) & 0xff == m
    }

    /// The member whose RX is still accepted after a planned switch.
    #[inline]
    pub fn draining(self) -> Option<usize> {
        let d = ((self.0 >> 8) & 0xff) as u8;
        (d != NONE).then_some(d as usize)
    }

    /// Whether every member's RX is accepted (`all_members_active`).
    #[inline]
    pub fn all_members_active(self) -> bool {
        self.0 & ALL_ACTIVE != 0
    }

    /// Builds a view.
    ///
    /// # Panics
    /// If a member index is not below [`MAX_MEMBERS`].
    pub fn new(active: Option<usize>, draining: Option<usize>, all_members_active: bool) -> Self {
        let enc = |m: Option<usize>| match m {
            Some(i) => {
                assert!(i < MAX_MEMBERS, "member index {i}");
                i as u32
            }
            None => NONE as u32,
        };
        Self(enc(active) | (enc(draining) << 8) | if all_members_active { ALL_ACTIVE } else { 0 })
    }
}

/// A bond's shared state. Control writes it, workers read it once per burst.
#[derive(Debug)]
pub struct BondShared {
    state: CachePadded<AtomicU32>,
}

impl BondShared {
    /// A bond with no active member.
    pub fn new() -> Self {
        Self {
            state: CachePadded::new(AtomicU32::new(BondView::new(None, None, false).0)),
        }
    }

    /// The current state. One atomic load; workers call it once per burst.
    #[inline]
    pub fn view(&self) -> BondView {
        // Acquire pairs with `set`'s Release: nothing the monitor wrote before flipping (e.g.
        // a member's link state) is older than the flip in the worker's eyes.
        BondView(self.state.load(Ordering::Acquire))
    }

    /// Publishes a new state (control side).
    pub fn set(&self, view: BondView) {
        self.state.store(view.0, Ordering::Release);
    }
}

impl Default for BondShared {
    fn default() -> Self {
        Self::new()
    }
}

/// Largest frame control can hand a worker to send (ARP, neighbour advertisements,
/// announcements: all well under it).
pub const INJECT_MAX: usize = 128;

/// A frame control asks a worker to transmit on a bond member (peer notifications, probes).
#[derive(Clone, Copy)]
pub struct Inject {
    /// Member index.
    pub member: u8,
    len: u16,
    data: [u8; INJECT_MAX],
}

impl std::fmt::Debug for Inject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inject")
            .field("member", &self.member)
            .field("len", &self.len)
            .finish()
    }
}

impl Inject {
    /// A frame for `member`; `None` if `frame` is longer than [`INJECT_MAX`].
    pub fn new(member: usize, frame: &[u8]) -> Option<Self> {
        if frame.len() > INJECT_MAX || member >= MAX_MEMBERS {
            return None;
        }
        let mut data = [0; INJECT_MAX];
        data[..frame.len()].copy_from_slice(frame);
        Some(Self {
            member: member as u8,
            len: frame.len() as u16,
            data,
        })
    }

    /// The frame's bytes.
    pub fn frame(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
}

/// Frames waiting to be sent on a bond's members: control pushes, workers pop once per loop.
/// Bounded and preallocated (a lock-free ring): a full mailbox refuses, it never blocks.
pub type Mailbox = crossbeam_queue::ArrayQueue<Inject>;

/// Capacity of a bond's mailbox.
pub const MAILBOX: usize = 1024;

/// What a bond hands to control from its members: ARP frames (the ARP monitor's evidence,
/// requests for the appliance's addresses) and frames addressed to the bond's own MAC (the
/// appliance's own traffic, consumed: never forwarded across the cross-connect).
#[derive(Debug)]
pub struct Punt {
    /// Frames for control, tagged with the member they arrived on ([`Inject::member`]).
    pub queue: Mailbox,
    /// Hand neighbour discovery to control: ARP frames, and IPv6 frames to a solicited-node
    /// multicast group (NS); for the ARP/NS monitor and the bond's own addresses.
    pub arp: std::sync::atomic::AtomicBool,
    /// The bond's MAC as a 48-bit number (0: none): unicast frames to it are consumed.
    pub own_mac: std::sync::atomic::AtomicU64,
}

impl Punt {
    /// An idle punt path (nothing handed over until control sets it up).
    pub fn new() -> Self {
        Self {
            queue: Mailbox::new(MAILBOX),
            arp: std::sync::atomic::AtomicBool::new(false),
            own_mac: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether the punt path is in use (one relaxed load each; workers check per burst).
    #[inline]
    pub fn enabled(&self) -> (bool, u64) {
        (
            self.arp.load(Ordering::Relaxed),
            self.own_mac.load(Ordering::Relaxed),
        )
    }
}

impl Default for Punt {
    fn default() -> Self {
        Self::new()
    }
}

/// A MAC address as the 48-bit number [`Punt::own_mac`] holds.
pub use crate::wire::ethernet::mac_u64;

/// MAC addresses seen on the near side of a bond's cross-connect, for re-announcing them after a
/// failover. Direct-mapped and fixed in size: a new address overwrites the one in its slot
/// (the table is a best effort to cover the active hosts, like a switch's CAM under pressure).
/// Each entry is two words: the key (the MAC in the low 48 bits, its VLAN id + 1 above, 0 for
/// untagged: a host is learned per VLAN, as a switch's forwarding table keys on (VLAN, MAC)),
/// and the second it was last seen (modulo 2^16). Workers write with relaxed stores, only when
/// an entry changes; a reader may pair a new key with its predecessor's time for an instant,
/// which at worst announces a host once more or once less.
#[derive(Debug)]
pub struct SeenMacs {
    entries: Box<[(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU16)]>,
    /// 64 − log2(entries): the hash keeps the product's top bits.
    shift: u32,
    epoch: std::time::Instant,
}

impl SeenMacs {
    /// A table of `slots` entries (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        let n = slots.max(1).next_power_of_two();
        Self {
            entries: (0..n)
                .map(|_| {
                    (
                        std::sync::atomic::AtomicU64::new(0),
                        std::sync::atomic::AtomicU16::new(0),
                    )
                })
                .collect(),
            shift: 64 - n.trailing_zeros(),
            epoch: std::time::Instant::now(),
        }
    }

    /// The table's clock: seconds since it was made, modulo 2^16. Workers read it once per
    /// burst, control when it ages entries.
    #[inline]
    pub fn now_s(&self) -> u16 {
        self.epoch.elapsed().as_secs() as u16
    }

    /// Records host `src` on VLAN `vid` (0: untagged; an 802.1Q tag's id, from the frame's
    /// verdict) seen at second `now_s`. Multicast and zero sources are ignored.
    #[inline]
    pub fn learn(&self, src: &Mac, vid: u16, now_s: u16) {
        if ethernet::is_multicast(src) {
            return;
        }
        let m = mac_u64(src);
        if m == 0 {
            return;
        }
        let vid = u64::from(vid & 0x0fff);
        let key = m | (vid + 1) << 48;
        // Fibonacci hashing of the key onto the table: the product's top bits depend on every
        // bit of the key (a 1-entry table shifts by 64: checked_shr gives 0).
        let slot = key
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .checked_shr(self.shift)
            .unwrap_or(0) as usize;
        let (k, t) = &self.entries[slot];
        if k.load(Ordering::Relaxed) != key {
            k.store(key, Ordering::Relaxed);
        }
        if t.load(Ordering::Relaxed) != now_s {
            t.store(now_s, Ordering::Relaxed);
        }
    }

    /// The hosts seen within `max_age_s` seconds of `now_s`: MAC and VLAN (`None`: untagged).
    pub fn recent(&self, now_s: u16, max_age_s: u16) -> Vec<([u8; 6], Option<u16>)> {
        self.entries
            .iter()
            .filter_map(|(k, t)| {
                let key = k.load(Ordering::Relaxed);
                let seen = t.load(Ordering::Relaxed);
                (key != 0 && now_s.wrapping_sub(seen) <= max_age_s).then(|| {
                    let b = key.to_be_bytes();
                    let vid = (key >> 48) as u16;
                    (
                        [b[2], b[3], b[4], b[5], b[6], b[7]],
                        vid.checked_sub(1).filter(|&v| v != 0),
                    )
                })
            })
            .collect()
    }

    /// Table size.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_round_trips_and_gates_rx() {
        let v = BondView::new(Some(1), None, false);
        assert_eq!(v.active(), Some(1));
        assert_eq!(v.draining(), None);
        assert!(v.accepts_rx(1) && !v.accepts_rx(0) && !v.accepts_rx(2));

        let v = BondView::new(Some(0), Some(1), false);
        assert!(v.accepts_rx(0) && v.accepts_rx(1) && !v.accepts_rx(2));
        assert_eq!(v.draining(), Some(1));

        let v = BondView::new(None, None, false);
        assert_eq!(v.active(), None);
        assert!(!v.accepts_rx(0));

        let v = BondView::new(None, None, true);
        assert!(v.accepts_rx(0) && v.accepts_rx(7) && v.all_members_active());
    }

    #[test]
    fn seen_macs_learn_age_and_skip_multicast() {
        let t = SeenMacs::new(200);
        assert_eq!(t.capacity(), 256);
        let a = [2, 0, 0, 0, 0, 1];
        let frame = |src: [u8; 6], vid: Option<u16>| {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&src);
            if let Some(v) = vid {
                f.extend_from_slice(&[0x81, 0x00]);
                f.extend_from_slice(&v.to_be_bytes());
            }
            f.extend_from_slice(&[0x08, 0x00]);
            f.resize(60, 0);
            f
        };
        // What the worker does: parse once, learn from the verdict's source and VLAN.
        let learn = |t: &SeenMacs, f: Vec<u8>, now: u16| {
            let h = crate::wire::parse(&f);
            t.learn(&h.src, h.dot1q_vid(), now);
        };
        learn(&t, frame(a, None), 10);
        learn(&t, frame([1, 0, 0x5e, 0, 0, 1], None), 10); // multicast: ignored
        learn(&t, frame([0; 6], None), 10);
        assert_eq!(t.recent(10, 5), vec![(a, None)]);
        assert_eq!(t.recent(20, 5), Vec::new(), "aged out");
        learn(&t, frame(a, None), 19);
        assert_eq!(t.recent(20, 5), vec![(a, None)]);
        // The same host on VLAN 100 is a second entry; a priority tag (VLAN 0) is untagged.
        learn(&t, frame(a, Some(100)), 19);
        let mut r = t.recent(20, 5);
        r.sort();
        assert_eq!(r, vec![(a, None), (a, Some(100))]);
        let t2 = SeenMacs::new(8);
        learn(&t2, frame(a, Some(0)), 1);
        assert_eq!(t2.recent(1, 5), vec![(a, None)]);
        // Time wraps at 2^16 seconds.
        learn(&t, frame(a, None), u16::MAX);
        assert_eq!(t.recent(2, 5), vec![(a, None)]);
    }

    #[test]
    fn inject_refuses_oversized_frames() {
        assert!(Inject::new(0, &[0; INJECT_MAX + 1]).is_none());
        assert!(Inject::new(MAX_MEMBERS, &[0; 10]).is_none());
        assert_eq!(Inject::new(1, &[7; 60]).unwrap().frame(), &[7; 60]);
    }

    #[test]
    fn shared_state_publishes() {
        let b = BondShared::new();
        assert_eq!(b.view().active(), None);
        b.set(BondView::new(Some(3), Some(2), false));
        assert_eq!(b.view(), BondView::new(Some(3), Some(2), false));
    }
}
