//! The worker loop allocates nothing per packet: a real worker on real AF_XDP sockets forwards
//! live traffic under a counting global allocator, and the count does not move after warm-up.
//!
//! The outer test builds the lab and re-runs this test binary inside the appliance namespace
//! (`ip netns exec`), where the inner part builds ports and a worker in-process and polls it on
//! this thread, while the outer part sends traffic through it.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use isopath_datapath::{
    params::{Burst, RingParams, RingSize, XdpMode, ZeroCopy},
    stats::LinkState,
    worker::WorkerBuilder,
    xsk::{if_index, xdp::XdpProgram},
};
use isopath_tests::{ChildGuard, Lab, require_privileges};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const INNER: &str = "ISOPATH_ALLOC_INNER";

#[test]
fn worker_loop_allocates_nothing_after_warm_up() {
    if std::env::var_os(INNER).is_some() {
        return inner();
    }
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("alloc");
    let exe = std::env::current_exe().unwrap();
    let mut child = ChildGuard::new(
        std::process::Command::new("ip")
            .args(["netns", "exec", lab.ns_app()])
            .arg(&exe)
            .args([
                "--exact",
                "worker_loop_allocates_nothing_after_warm_up",
                "--nocapture",
            ])
            .env(INNER, "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
    .with_label("inner worker");
    assert!(
        child.wait_stderr_contains("inner: polling", Duration::from_secs(15)),
        "inner part did not start: {}",
        child.stderr_so_far()
    );
    lab.udp_send(
        lab.ns_traffic(),
        0,
        &format!("{}:9000", Lab::FAR_IP),
        100,
        60_000,
        30_000,
    );
    let out = child.wait_output(Duration::from_secs(20));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inner part failed:\n{log}");
    assert!(log.contains("inner: allocations after warm-up 0"), "{log}");
}

/// Runs inside the appliance namespace: up0 ⇄ m0 on this thread.
fn inner() {
    let rings = RingParams {
        rx: RingSize::new("rx", 512).unwrap(),
        tx: RingSize::new("tx", 512).unwrap(),
        fill: RingSize::new("fill", 512).unwrap(),
        comp: RingSize::new("comp", 512).unwrap(),
        ..RingParams::default()
    };
    let mut progs = Vec::new();
    let mut b = WorkerBuilder::new(rings, rings.frames_needed(4)).expect("umem");
    let mut slots = Vec::new();
    for name in ["up0", "m0"] {
        let prog = XdpProgram::load(name, if_index(name).unwrap(), false).expect("load");
        let link = Arc::new(LinkState::new(true));
        for q in 0..2 {
            let (slot, xq) = b
                .add_queue(name, q, ZeroCopy::Auto, 0, link.clone(), Arc::default())
                .expect("bind");
            prog.register(q, xq.fd()).expect("xskmap");
            slots.push(slot);
        }
        progs.push(prog);
    }
    b.connect(slots[0], slots[2]);
    b.connect(slots[1], slots[3]);
    b.connect(slots[2], slots[0]);
    b.connect(slots[3], slots[1]);
    for p in &mut progs {
        p.attach(XdpMode::Native).expect("attach");
    }
    let (mut worker, handle) = b.build(None, Burst::DEFAULT, 0);
    // Warm-up: the first loops may touch lazily allocated state (none is expected, but the
    // assertion is about the steady state).
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        worker.poll_once();
    }
    eprintln!("inner: polling");
    let before = ALLOCS.load(Relaxed);
    let start = Instant::now();
    let mut moved = 0;
    while start.elapsed() < Duration::from_secs(4) {
        moved += worker.poll_once();
    }
    let allocs = ALLOCS.load(Relaxed) - before;
    eprintln!("inner: allocations after warm-up {allocs}, frames moved {moved}");
    let rx: u64 = handle
        .queues()
        .iter()
        .map(|q| q.counters.rx_packets.get())
        .sum();
    assert!(
        moved >= 50_000 && rx >= 50_000,
        "too little traffic to prove anything: {moved}"
    );
    assert_eq!(allocs, 0, "the worker loop allocated");
}
