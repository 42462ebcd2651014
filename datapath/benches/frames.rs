//! Per-burst bookkeeping cost: what the worker pays in frame accounting for each burst, without
//! the kernel. Run: `cargo bench -p isopath-datapath --bench frames`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use isopath_datapath::xsk::{FrameLedger, FramePool};

/// One burst's life: RX returns `burst` frames from the fill ring, half go to TX and come back
/// as completions, the other half are dropped, then the fill ring is topped up.
fn burst_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_accounting");
    for burst in [32usize, 64] {
        g.throughput(Throughput::Elements(burst as u64));
        g.bench_function(format!("burst_{burst}"), |b| {
            let mut pool = FramePool::new((0..4096u64).map(|i| i * 2048).collect());
            let mut ledger = FrameLedger::default();
            let mut fill = Vec::with_capacity(4096);
            let mut tx = Vec::with_capacity(4096);
            let mut rx = vec![0u64; burst];
            let give = pool.peek_top(2048).to_vec();
            fill.extend_from_slice(&give);
            pool.take(give.len());
            ledger.lend_fill(give.len());
            b.iter(|| {
                for (slot, f) in rx.iter_mut().zip(fill.drain(fill.len() - burst..)) {
                    *slot = f;
                }
                ledger.return_rx(burst);
                let (fwd, drop) = rx.split_at(burst / 2);
                tx.extend_from_slice(fwd);
                ledger.lend_tx(fwd.len());
                pool.put(drop);
                ledger.return_comp(tx.len());
                pool.put(&tx);
                tx.clear();
                let top = pool.peek_top(burst);
                fill.extend_from_slice(top);
                pool.take(burst);
                ledger.lend_fill(burst);
                black_box(&ledger);
            });
        });
    }
    g.finish();
}

criterion_group!(benches, burst_cycle);
criterion_main!(benches);
