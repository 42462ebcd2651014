//! The worker with flow tracking on allocates nothing on its thread, lab-free: a worker over
//! in-memory rings (`MemUmem`, the fake rings of the worker's unit tests) forwards a few
//! million frames under a counting global allocator while its table inserts, counts, fills
//! up (`flow_table_full`), expires flows, flushes and meets malformed frames. Only the
//! worker's own calls (`poll_once`) are counted; feeding and draining the fake rings happen
//! between them.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use isopath_datapath::{
    flow::{FlowParams, Flush, Timeouts},
    params::{Burst, ZeroCopy},
    stats::LinkState,
    wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet},
    worker::{Worker, WorkerBuilder, WorkerHandle},
    xsk::mem::MemUmem,
};

struct Counting;

static MEASURE: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MEASURE.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if MEASURE.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Flows the table holds: small, so that it fills up.
const CAPACITY: u32 = 4096;
/// Frames per delivery (the fake rings' size).
const RING: usize = 64;

/// A 60-byte (or longer) IPv4 frame: TCP with `flags`, or UDP, between 198.18.x.y hosts.
fn frame(tcp: Option<u8>, src: u32, sport: u16, dport: u16) -> Vec<u8> {
    let l4 = if tcp.is_some() { 20 } else { 8 };
    let mut f = vec![0u8; (14 + 20 + l4).max(60)];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst([2, 0, 0, 0, 0, 2]);
    e.set_src([2, 0, 0, 0, 0, 1]);
    e.set_ethertype(EtherType::Ipv4);
    Ipv4Packet::new_unchecked(&mut f[14..]).fill(
        Ipv4Addr::from(0xc612_0000 | (src & 0xffff)),
        Ipv4Addr::new(198, 18, 255, 254),
        if tcp.is_some() {
            IpProtocol::Tcp
        } else {
            IpProtocol::Udp
        },
        l4,
        64,
        true,
    );
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    match tcp {
        Some(flags) => {
            f[46] = 5 << 4;
            f[47] = flags;
        }
        None => f[38..40].copy_from_slice(&8u16.to_be_bytes()),
    }
    f
}

struct Rig {
    w: Worker<MemUmem>,
    h: WorkerHandle<MemUmem>,
    frames: u64,
    polls: u64,
}

impl Rig {
    fn new() -> Self {
        let t = Timeouts {
            udp_s: 1,
            udp_stream_s: 1,
            icmp_s: 1,
            ..Timeouts::default()
        };
        let params = FlowParams::new(u64::from(CAPACITY), t, 0, 64).unwrap();
        let mut b = WorkerBuilder::with_rings(MemUmem::new(1024, 2048, RING))
            .flows(&params)
            .unwrap();
        for p in ["up0", "m0"] {
            b.add_queue(
                p,
                0,
                ZeroCopy::Auto,
                0,
                std::sync::Arc::new(LinkState::new(true)),
                Default::default(),
            )
            .unwrap();
        }
        b.connect(0, 1);
        b.connect(1, 0);
        b.set_flow_port(0, 1);
        b.set_flow_port(1, 2);
        let (mut w, h) = b.build(None, Burst::new("burst", 64).unwrap(), 0);
        w.poll_once();
        Rig {
            w,
            h,
            frames: 0,
            polls: 0,
        }
    }

    /// Delivers `frames` on up0 a ring at a time, polling the worker after each (measured),
    /// draining m0's TX (not measured).
    fn push(&mut self, frames: impl Iterator<Item = Vec<u8>>) {
        let mut n = 0;
        let mut it = frames.peekable();
        while it.peek().is_some() {
            for f in it.by_ref().take(RING) {
                assert!(self.w.rings_mut().deliver("up0", 0, &f), "no room on up0");
                n += 1;
            }
            self.poll();
            self.w.rings_mut().complete("m0", 0);
        }
        self.frames += n;
    }

    fn poll(&mut self) {
        MEASURE.store(true, Relaxed);
        self.w.poll_once();
        MEASURE.store(false, Relaxed);
        self.polls += 1;
    }

    fn flows(&self) -> &isopath_datapath::flow::FlowCounters {
        self.h.flow_reader().expect("tracking is on").counters()
    }

    /// Polls until `done` holds (expiry, flush), at most `secs`.
    fn poll_until(&mut self, secs: u64, done: impl Fn(&Self) -> bool) {
        let t = Instant::now();
        while !done(self) {
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "not done after {secs} s"
            );
            self.poll();
        }
    }
}

/// `n` frames over `flows` flows starting at flow `base`: TCP ACKs (established on pickup) or
/// UDP, with every 97th frame malformed (an IPv4 header length of 4 bytes).
fn traffic(base: u32, flows: u32, n: u64, tcp: bool) -> impl Iterator<Item = Vec<u8>> {
    (0..n).map(move |k| {
        let f = base + (k % u64::from(flows)) as u32;
        let mut fr = frame(tcp.then_some(0x10), f >> 8, 10000 + (f & 0xff) as u16, 80);
        if k % 97 == 96 {
            fr[14] = 0x41;
        }
        fr
    })
}

#[test]
fn tracking_allocates_nothing_on_the_worker_thread() {
    let mut r = Rig::new();
    // Warm-up: every path once (the fake rings' queues reach their size), then count.
    r.push(traffic(0, 16, 4 * RING as u64, false));
    assert!(r.h.flush_flows(Flush::All));
    r.poll_until(10, |r| r.flows().in_use.get() == 0);
    ALLOCS.store(0, Relaxed);

    let mut rounds = 0;
    while r.frames < 2_000_000 {
        rounds += 1;
        // The table fills with established TCP flows (never evicted), then new flows find
        // it full: forwarded, counted as flow_table_full.
        let full0 = r.flows().full.get();
        r.push(traffic(0, CAPACITY, 2 * u64::from(CAPACITY), true));
        assert_eq!(r.flows().in_use.get(), u64::from(CAPACITY));
        r.push(traffic(CAPACITY, 2048, 200_000, true));
        assert!(r.flows().full.get() > full0, "round {rounds}: no full");
        // Flushed, a slice per loop.
        let flushed0 = r.flows().flushed.get();
        assert!(r.h.flush_flows(Flush::Port(1)));
        r.poll_until(10, |r| r.flows().in_use.get() == 0);
        assert_eq!(
            r.flows().flushed.get() - flushed0,
            u64::from(CAPACITY),
            "round {rounds}"
        );
        // UDP flows churn: inserted, counted, then expired by the wheel after 1 s idle.
        let exp0 = r.flows().expiries.get();
        r.push(traffic(0, 3000, 400_000, false));
        let live = r.flows().in_use.get();
        assert!(live >= 3000, "{live}");
        std::thread::sleep(Duration::from_millis(1100));
        r.poll_until(20, |r| r.flows().in_use.get() == 0);
        assert_eq!(r.flows().expiries.get() - exp0, live, "round {rounds}");
    }
    let allocs = ALLOCS.load(Relaxed);
    let c = r.flows();
    assert_eq!(
        allocs, 0,
        "{allocs} allocations on the worker thread over {} frames, {} polls",
        r.frames, r.polls
    );
    assert!(c.inserts.get() > 0 && c.skipped.iter().any(|s| s.get() > 0));
    eprintln!(
        "{} frames, {} polls, {} rounds: inserts {}, full {}, expiries {}, flushed {}, skipped {:?}",
        r.frames,
        r.polls,
        rounds,
        c.inserts.get(),
        c.full.get(),
        c.expiries.get(),
        c.flushed.get(),
        c.skipped.iter().map(|s| s.get()).collect::<Vec<_>>()
    );
}
