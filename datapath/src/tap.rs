//! Capture taps: copies of the frames that cross a port or a bond, for pcap writers in control.
//!
//! Every port and every bond has a tap from start-up; it costs one relaxed load per burst while
//! no capture runs. While one runs, the worker copies each frame (up to [`SNAPLEN`] bytes) with
//! its direction and a timestamp into a bounded lock-free ring; control drains the ring into a
//! pcap file. A full ring drops the record and counts it: a slow writer never stalls a worker.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

/// Bytes of each frame kept (the rest is cut, and the pcap record says so).
pub const SNAPLEN: usize = 256;
/// Received on the port or bond.
pub const DIR_IN: u8 = 1;
/// Sent on the port or bond.
pub const DIR_OUT: u8 = 2;
/// Records a tap holds before it drops.
pub const TAP_RING: usize = 8192;

/// One captured frame.
#[derive(Clone, Copy)]
pub struct TapRecord {
    /// Wall clock, ns since the Unix epoch (one reading per burst).
    pub unix_ns: u64,
    /// The frame's length.
    pub len: u32,
    /// Bytes kept.
    pub caplen: u16,
    /// [`DIR_IN`] or [`DIR_OUT`].
    pub dir: u8,
    data: [u8; SNAPLEN],
}

impl TapRecord {
    /// The bytes kept.
    pub fn data(&self) -> &[u8] {
        &self.data[..self.caplen as usize]
    }
}

impl std::fmt::Debug for TapRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapRecord")
            .field("len", &self.len)
            .field("dir", &self.dir)
            .finish()
    }
}

/// A tap on one port or bond.
#[derive(Debug)]
pub struct Tap {
    dirs: CachePadded<AtomicU8>,
    ring: ArrayQueue<TapRecord>,
    captured: AtomicU64,
    dropped: AtomicU64,
}

impl Default for Tap {
    fn default() -> Self {
        Self::new(TAP_RING)
    }
}

impl Tap {
    /// A tap whose ring holds `capacity` records (allocated now, never later).
    pub fn new(capacity: usize) -> Self {
        Self {
            dirs: CachePadded::new(AtomicU8::new(0)),
            ring: ArrayQueue::new(capacity.max(1)),
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether a capture wants frames of direction `dir`. Workers call this once per burst.
    #[inline]
    pub fn wants(&self, dir: u8) -> bool {
        self.dirs.load(Relaxed) & dir != 0
    }

    /// Records `frame` (worker side).
    #[inline]
    pub fn record(&self, frame: &[u8], dir: u8, unix_ns: u64) {
        let caplen = frame.len().min(SNAPLEN);
        let mut r = TapRecord {
            unix_ns,
            len: frame.len() as u32,
            caplen: caplen as u16,
            dir,
            data: [0; SNAPLEN],
        };
        r.data[..caplen].copy_from_slice(&frame[..caplen]);
        if self.ring.push(r).is_ok() {
            self.captured.fetch_add(1, Relaxed);
        } else {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Starts capturing directions `dirs` ([`DIR_IN`] | [`DIR_OUT`]); resets the counters.
    pub fn start(&self, dirs: u8) {
        while self.ring.pop().is_some() {}
        self.captured.store(0, Relaxed);
        self.dropped.store(0, Relaxed);
        self.dirs.store(dirs & (DIR_IN | DIR_OUT), Relaxed);
    }

    /// Stops capturing (records already queued stay until drained).
    pub fn stop(&self) {
        self.dirs.store(0, Relaxed);
    }

    /// Whether a capture runs.
    pub fn active(&self) -> bool {
        self.dirs.load(Relaxed) != 0
    }

    /// Takes the next queued record.
    pub fn pop(&self) -> Option<TapRecord> {
        self.ring.pop()
    }

    /// Records queued since the capture started.
    pub fn captured(&self) -> u64 {
        self.captured.load(Relaxed)
    }

    /// Records dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_direction_truncate_and_count_drops() {
        let t = Tap::new(2);
        assert!(!t.wants(DIR_IN));
        t.start(DIR_IN);
        assert!(t.wants(DIR_IN) && !t.wants(DIR_OUT));
        t.record(&[1; 60], DIR_IN, 5);
        t.record(&[2; 1514], DIR_IN, 6);
        t.record(&[3; 60], DIR_IN, 7); // ring full
        assert_eq!((t.captured(), t.dropped()), (2, 1));
        let a = t.pop().unwrap();
        assert_eq!((a.len, a.caplen, a.dir, a.unix_ns), (60, 60, DIR_IN, 5));
        let b = t.pop().unwrap();
        assert_eq!((b.len, b.caplen as usize), (1514, SNAPLEN));
        assert!(b.data().iter().all(|&x| x == 2));
        assert!(t.pop().is_none());
        t.stop();
        assert!(!t.active());
    }
}
