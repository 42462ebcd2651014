//! The reader stress test: a reader dumps the slab continuously while the worker inserts,
//! updates and expires at full speed; every record the reader keeps is validated. With the
//! test-only switch that reuses slots at once and skips the sequence protocol on reuse, the
//! same test must catch torn records.
//!
//! Each flow `i` has a key that carries its own checksum (source address = i, source port =
//! a hash of i, destination port = another), every packet adds 100 bytes in one direction,
//! and the writer publishes, per slot, which flow (and generation) it holds.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::*},
    },
    time::{Duration, Instant},
};

use super::{tests::*, *};

fn h16(i: u32, salt: u32) -> u16 {
    let x = (i ^ salt).wrapping_mul(0x9e37_79b1);
    (x >> 16) as u16
}

fn flow(i: u32) -> FlowPacket {
    pkt(
        0x0a00_0000 | (i & 0xff_ffff),
        h16(i, 1),
        0xc612_0002,
        h16(i, 2),
        17,
        0,
    )
}

/// Flows one run may create (the writer publishes where each went).
const FLOWS: usize = if cfg!(miri) { 4096 } else { 1 << 22 };

/// Whether a record the reader kept is whole: its key's checksum, its counters, and the
/// slot and generation the writer published for that flow when it made it (the writer
/// publishes right after the insert returns, so a reader may see the record first and waits
/// for it).
fn valid(s: &FlowSnapshot, made: &[AtomicU64], stop: &AtomicBool) -> Result<(), String> {
    let a = s.key.addr_a();
    let b = s.key.addr_b();
    // Endpoint a is the flow's source (10.x.x.x < 198.18.0.2).
    let i = u32::from_be_bytes([0, a[1], a[2], a[3]]);
    if a[0] != 10 || b[..4] != [198, 18, 0, 2] {
        return Err(format!("addresses {a:?} {b:?}"));
    }
    if s.key.port_a() != h16(i, 1) || s.key.port_b() != h16(i, 2) {
        return Err(format!("flow {i}: ports do not match the key's checksum"));
    }
    for d in 0..2 {
        if s.bytes[d] != 100 * s.packets[d] {
            return Err(format!(
                "flow {i}: {} bytes for {} packets",
                s.bytes[d], s.packets[d]
            ));
        }
    }
    let me = u64::from(s.slot) << 8 | u64::from(s.generation) | 1 << 63;
    let m = &made[i as usize];
    // The writer publishes right after the insert returns: wait for it (while it runs).
    let mut w = m.load(Acquire);
    while w == 0 && !stop.load(Acquire) {
        std::thread::yield_now();
        w = m.load(Acquire);
    }
    if w == 0 {
        w = m.load(Acquire);
    }
    if w == me {
        return Ok(());
    }
    Err(format!(
        "flow {i} in slot {} gen {}: the writer made it as {w:x}",
        s.slot, s.generation
    ))
}

/// Runs the writer and one reader for `dur` (or `ops` writer steps); returns (records the
/// reader validated, invalid ones, first error).
fn run(cap: u32, unprotected: bool, dur: Duration, ops: u64) -> (u64, u64, Option<String>) {
    let p = FlowParams::new(
        cap.into(),
        Timeouts {
            udp_s: 1,
            ..Timeouts::default()
        },
        0,
        16,
    )
    .unwrap();
    let mut t = FlowTable::with_seed(&p, 0, 42).unwrap();
    t.reuse_unprotected = unprotected;
    let reader = t.reader();
    let made: Arc<Vec<AtomicU64>> = Arc::new((0..FLOWS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let r = {
        let (made, stop) = (made.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut bad, mut first) = (0u64, 0u64, None);
            while !stop.load(Relaxed) {
                for slot in 0..reader.capacity() {
                    let Ok(s) = reader.read(slot) else { continue };
                    match valid(&s, &made, &stop) {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            bad += 1;
                            first.get_or_insert(e);
                        }
                    }
                }
            }
            (ok, bad, first)
        })
    };
    let start = Instant::now();
    let mut now = S;
    let mut i = 0u32;
    let mut steps = 0u64;
    while steps < ops && (i as usize) < FLOWS && start.elapsed() < dur {
        steps += 1;
        // A new flow, a packet on a recent one, and time moving 20 ms: flows live about a
        // second (udp_s = 1), so slots are freed and reused all the time.
        if let Ok(id) = t.track(&flow(i), now) {
            let g = t.get(id).map_or(0, |s| s.generation);
            made[i as usize].store(u64::from(id.0) << 8 | u64::from(g) | 1 << 63, Release);
        }
        if i > 3 {
            // An update only: re-creating an evicted flow would give it a second slot.
            let p = flow(i - 3);
            if let Some(id) = t.lookup(&p.key) {
                t.update(id, &p, now);
            }
        }
        i += 1;
        if i.is_multiple_of(8) {
            now += 20_000_000;
            t.expire(now, 64);
        }
    }
    stop.store(true, Release);
    let (ok, bad, first) = r.join().unwrap();
    (ok, bad, first)
}

#[test]
fn readers_never_keep_a_torn_or_reused_record() {
    let (cap, dur, ops) = if cfg!(miri) {
        (64, Duration::from_secs(3600), 300)
    } else {
        (256, Duration::from_secs(2), u64::MAX)
    };
    let (ok, bad, first) = run(cap, false, dur, ops);
    assert_eq!(bad, 0, "{first:?}");
    assert!(ok > 0, "the reader validated records");
}

#[test]
#[cfg_attr(miri, ignore = "needs real parallelism to hit the race")]
fn the_stress_test_catches_immediate_unprotected_reuse() {
    // Retried in rounds of 1 s for up to 20 s: the race needs both threads on a core at once.
    let start = Instant::now();
    let mut ok_total = 0;
    while start.elapsed() < Duration::from_secs(20) {
        let (ok, bad, _) = run(64, true, Duration::from_secs(1), u64::MAX);
        ok_total += ok;
        if bad > 0 {
            return;
        }
    }
    panic!("no torn record seen in 20 s ({ok_total} read): the test cannot catch reuse");
}
