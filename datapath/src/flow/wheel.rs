//! The timer wheel that ages flows, and the free list, over one array of links.
//!
//! # Design
//! 4096 slots of 128 ms (a turn of 524 s). A flow sits in the slot of its deadline (its last
//! packet plus the timeout of its state, or its next active-timeout update if sooner);
//! packets do not move it (an update touches only the record). When its slot comes up the
//! worker reads the record: a flow idle past its deadline is expired, any other is put back at
//! its new deadline. So expiry costs O(flows due) plus one revisit per flow per timeout, never
//! a scan of the table, and the worker does it in slices of at most N flows per loop. A state
//! change to a shorter timeout (a FIN, a RST) moves the flow at once. A deadline beyond one
//! turn waits in the last slot of the turn and is revisited.
//!
//! Lists are circular and doubly linked through 6-byte links (24-bit node numbers): nodes
//! `0..capacity` are the slots of the slab, then one head per wheel slot, then the head of
//! the free list (a FIFO, so a freed slot is reused last).

use super::mem::Region;

/// Slots in the wheel.
pub(crate) const SLOTS: u32 = 4096;
/// Milliseconds per slot, as a shift (128 ms).
pub(crate) const TICK_SHIFT: u32 = 7;

/// Two 24-bit node numbers: prev, next.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Link([u16; 3]);

impl Link {
    #[inline(always)]
    fn prev(&self) -> u32 {
        u32::from(self.0[0]) | u32::from(self.0[1] & 0xff) << 16
    }

    #[inline(always)]
    fn next(&self) -> u32 {
        u32::from(self.0[1] >> 8) | u32::from(self.0[2]) << 8
    }

    #[inline(always)]
    fn set_prev(&mut self, p: u32) {
        self.0[0] = p as u16;
        self.0[1] = (self.0[1] & 0xff00) | ((p >> 16) as u16 & 0xff);
    }

    #[inline(always)]
    fn set_next(&mut self, n: u32) {
        self.0[1] = (self.0[1] & 0x00ff) | ((n as u16 & 0xff) << 8);
        self.0[2] = (n >> 8) as u16;
    }
}

#[derive(Debug)]
pub(crate) struct Wheel {
    l: Region<Link>,
    cap: u32,
    /// The next tick to process (absolute, in 128 ms units since the table's start).
    cur: u64,
}

impl Wheel {
    /// A wheel for `cap` slots, every one of them on the free list.
    pub(crate) fn new(cap: u32) -> std::io::Result<Self> {
        let mut w = Self {
            l: Region::new((cap + SLOTS + 1) as usize)?,
            cap,
            cur: 0,
        };
        for h in cap..cap + SLOTS + 1 {
            w.l[h as usize].set_prev(h);
            w.l[h as usize].set_next(h);
        }
        for s in 0..cap {
            w.push_back(w.free_head(), s);
        }
        Ok(w)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.l.bytes()
    }

    #[inline(always)]
    fn free_head(&self) -> u32 {
        self.cap + SLOTS
    }

    #[inline(always)]
    fn head(&self, tick: u64) -> u32 {
        self.cap + (tick % u64::from(SLOTS)) as u32
    }

    #[inline]
    fn push_back(&mut self, head: u32, x: u32) {
        let last = self.l[head as usize].prev();
        self.l[x as usize].set_prev(last);
        self.l[x as usize].set_next(head);
        self.l[last as usize].set_next(x);
        self.l[head as usize].set_prev(x);
    }

    #[inline]
    pub(crate) fn unlink(&mut self, x: u32) {
        let (p, n) = (self.l[x as usize].prev(), self.l[x as usize].next());
        self.l[p as usize].set_next(n);
        self.l[n as usize].set_prev(p);
        self.l[x as usize].set_prev(x);
        self.l[x as usize].set_next(x);
    }

    /// Takes a slot from the free list (the one freed longest ago).
    #[inline]
    pub(crate) fn alloc(&mut self) -> Option<u32> {
        let h = self.free_head();
        let x = self.l[h as usize].next();
        if x == h {
            return None;
        }
        self.unlink(x);
        Some(x)
    }

    /// Puts a slot (already unlinked) on the free list: at the back, or at the front for the
    /// stress test's immediate-reuse switch.
    #[inline]
    pub(crate) fn free(&mut self, x: u32, front: bool) {
        let h = self.free_head();
        if front {
            let first = self.l[h as usize].next();
            self.l[x as usize].set_prev(h);
            self.l[x as usize].set_next(first);
            self.l[first as usize].set_prev(x);
            self.l[h as usize].set_next(x);
        } else {
            self.push_back(h, x);
        }
    }

    /// Puts slot `x` (unlinked) in the wheel at `deadline_ms`.
    #[inline]
    pub(crate) fn arm(&mut self, x: u32, deadline_ms: u64) {
        let tick = deadline_ms
            .div_ceil(1 << TICK_SHIFT)
            .clamp(self.cur + 1, self.cur + u64::from(SLOTS) - 1);
        self.push_back(self.head(tick), x);
    }

    /// Moves slot `x` (in the wheel) to `deadline_ms`.
    #[inline]
    pub(crate) fn rearm(&mut self, x: u32, deadline_ms: u64) {
        self.unlink(x);
        self.arm(x, deadline_ms);
    }

    /// The next flow due by `now_ms`, unlinked, or `None` when nothing is due. `slots` bounds
    /// how many empty wheel slots it may pass.
    #[inline]
    pub(crate) fn pop_due(&mut self, now_ms: u64, slots: &mut u32) -> Option<u32> {
        let now_tick = now_ms >> TICK_SHIFT;
        while self.cur <= now_tick {
            let h = self.head(self.cur);
            let x = self.l[h as usize].next();
            if x != h {
                self.unlink(x);
                return Some(x);
            }
            if *slots == 0 {
                return None;
            }
            *slots -= 1;
            self.cur += 1;
        }
        None
    }

    /// The first flow in the wheel at or after tick `*t` (which it advances past empty
    /// slots), without unlinking it; `*t` starts at 0 for "from the current slot".
    pub(crate) fn first_from(&self, t: &mut u64) -> Option<u32> {
        *t = (*t).max(self.cur);
        while *t < self.cur + u64::from(SLOTS) {
            let h = self.head(*t);
            let x = self.l[h as usize].next();
            if x != h {
                return Some(x);
            }
            *t += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_hold_24_bits() {
        let mut l = Link([0; 3]);
        l.set_prev(0xab_cdef);
        l.set_next(0x12_3456);
        assert_eq!((l.prev(), l.next()), (0xab_cdef, 0x12_3456));
        l.set_next(0xff_ffff);
        assert_eq!((l.prev(), l.next()), (0xab_cdef, 0xff_ffff));
    }

    #[test]
    fn free_list_is_fifo_and_the_wheel_pops_in_deadline_order() {
        let mut w = Wheel::new(8).unwrap();
        let a: Vec<u32> = (0..8).map(|_| w.alloc().unwrap()).collect();
        assert_eq!(a, (0..8).collect::<Vec<_>>());
        assert_eq!(w.alloc(), None);
        w.free(3, false);
        w.free(5, false);
        assert_eq!(w.alloc(), Some(3));
        w.arm(3, 1000);
        w.arm(0, 300);
        w.arm(1, 70_000);
        let mut s = SLOTS;
        assert_eq!(w.pop_due(200, &mut s), None);
        assert_eq!(w.pop_due(400, &mut s), Some(0));
        assert_eq!(w.pop_due(900, &mut s), None);
        assert_eq!(w.pop_due(1100, &mut s), Some(3));
        let mut t = 0;
        assert_eq!(w.first_from(&mut t), Some(1));
        assert_eq!(t, 70_000u64.div_ceil(128));
        assert_eq!(w.pop_due(70_100, &mut s), Some(1));
    }
}
