//! The flow table allocates nothing after start: millions of frames through the classify
//! pass and the table (new flows, updates, replies, malformed and non-IP frames, expiries, a
//! full table, evictions, flushes, an overflowing event ring) under a counting global
//! allocator that counts this thread's allocations only.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use isopath_datapath::{
    flow::{FlowBurst, FlowParams, FlowTable, Flush, Timeouts},
    wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket, tcp},
    worker::classify::{Policy, Verdicts},
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNT: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNT.with(Cell::get) {
        ALLOCS.fetch_add(1, Relaxed);
    }
}

// SAFETY: defers to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Writes frame `k` of burst `n` into `f` (60 bytes, rewritten in place).
fn write_frame(f: &mut [u8], n: u64, k: usize) {
    f.fill(0);
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst([2, 0, 0, 0, 0, 2]);
    e.set_src([2, 0, 0, 0, 0, 1]);
    if k == 63 {
        e.set_ethertype(EtherType::Arp);
        return;
    }
    e.set_ethertype(EtherType::Ipv4);
    let i = ((n % 4096) * 64 + k as u64) as u32;
    let (src, dst) = (
        std::net::Ipv4Addr::from(0x0a00_0000 | (i & 0xff_ffff)),
        std::net::Ipv4Addr::new(198, 18, 0, 2),
    );
    // Mostly UDP; TCP connections now and then, and for a stretch of every 10,000 bursts only
    // TCP, which fills the table with live established flows (none evictable: full).
    let tcp = k.is_multiple_of(16) || (5_000..5_600).contains(&(n % 10_000));
    let proto = if tcp {
        IpProtocol::Tcp
    } else {
        IpProtocol::Udp
    };
    let l4 = if tcp { 20 } else { 8 };
    Ipv4Packet::new_unchecked(&mut f[14..34]).fill(src, dst, proto, l4, 64, true);
    if tcp {
        // Established connections by mid-stream pickup: not evictable while live.
        TcpPacket::new_unchecked(&mut f[34..54]).fill(4000, 80, 1, 1, tcp::ACK, 1000);
    } else {
        UdpPacket::new_unchecked(&mut f[34..42]).fill(5000, 53, 0);
    }
    if k == 62 {
        f[24] ^= 0xff; // bad IPv4 checksum
    }
}

#[test]
fn millions_of_frames_allocate_nothing() {
    let timeouts = Timeouts {
        udp_s: 1,
        tcp_established_s: 10,
        ..Timeouts::default()
    };
    let p = FlowParams::new(8192, timeouts, 1, 64).unwrap();
    let mut t = FlowTable::with_seed(&p, 0, 1).unwrap();
    let mut vs = Verdicts::new();
    let mut burst = FlowBurst::new();
    let mut frames = vec![[0u8; 60]; 64];
    let bursts: u64 = if cfg!(debug_assertions) {
        50_000
    } else {
        200_000
    };
    let mut now = 1_000_000_000u64;
    COUNT.with(|c| c.set(true));
    for n in 0..bursts {
        for (k, f) in frames.iter_mut().enumerate() {
            write_frame(f, n, k);
        }
        vs.classify(frames.iter().map(|f| &f[..]), Policy::default());
        burst.clear();
        for (f, v) in frames.iter().zip(vs.as_slice()) {
            burst.push(f, v, 1, 0);
        }
        t.track_burst(&burst, now);
        t.expire(now, 256);
        if n % 10_000 == 9_999 {
            let mut from = Some(0);
            while let Some(f) = from {
                from = t.flush(&Flush::All, f, 512, now).next;
            }
        }
        now += 20_000_000;
    }
    COUNT.with(|c| c.set(false));
    let c = t.counters();
    let frames_total = bursts * 64;
    assert!(frames_total >= 3_000_000);
    assert_eq!(ALLOCS.load(Relaxed), 0, "allocations on the worker thread");
    assert!(c.inserts.get() > 100_000, "inserts {}", c.inserts.get());
    assert!(c.expiries.get() > 1_000, "expiries {}", c.expiries.get());
    assert!(c.full.get() > 0, "the table was full");
    assert!(c.evictions.get() > 0, "evictions");
    assert!(c.flushed.get() > 0, "flushes");
    assert!(c.events_dropped.get() > 0, "the event ring overflowed");
    use isopath_datapath::flow::Skip;
    assert_eq!(c.skipped[Skip::NotIp as usize].get(), bursts);
    assert_eq!(c.skipped[Skip::ParseError as usize].get(), bursts);
}
