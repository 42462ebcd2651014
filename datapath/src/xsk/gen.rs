//! The clock of TX timestamps for traffic generation. `isopath-bench`'s AF_XDP source writes
//! new frames into free UMEM frames with [`Rings::tx_from_pool`](super::Rings::tx_from_pool)
//! (as the worker does for the frames control hands it); they go to the TX ring like forwarded
//! ones, so [`Rings::reap`](super::Rings::reap) returns them to the pool and the audit stays
//! exact.

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`, so that a receiver can
/// subtract a TX timestamp written by an XDP program (std's `Instant` reads the same clock but
/// does not expose its value).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; CLOCK_MONOTONIC is always available on Linux,
    // so the call only writes `ts` and cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
