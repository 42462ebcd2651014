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
    fn shared_state_publishes() {
        let b = BondShared::new();
        assert_eq!(b.view().active(), None);
        b.set(BondView::new(Some(3), Some(2), false));
        assert_eq!(b.view(), BondView::new(Some(3), Some(2), false));
    }
}
