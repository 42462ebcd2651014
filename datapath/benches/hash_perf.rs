//! The flow table's side of `bench/scripts/hash-vs-rte.sh`: the same experiment as DPDK's
//! `hash_perf_autotest` (a table of 2^19 entries filled to 75 % with random keys, then random
//! lookups of keys that are in it, one at a time and in bulks of 16, the hash computed in the
//! lookup), timed in TSC cycles per lookup. Keys: 13 bytes is an IPv4 5-tuple, 37 an IPv6
//! one (our key also carries zone and VLANs: 44 bytes either way).
//!
//! Run: `cargo bench -p isopath-datapath --bench hash_perf` (pin it: `taskset -c 1`). Prints
//! one JSON line per case: `{"key_bytes":13,"mode":"single","isopath_cycles":..}`.

use std::hint::black_box;

use isopath_datapath::flow::{FlowId, FlowKey, FlowParams, FlowTable, Timeouts, tsc};

const ENTRIES: u64 = 1 << 19;
const LOOKUPS: usize = 1 << 22;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn key(r: &mut Rng, v6: bool) -> FlowKey {
    let mut a = [0u8; 16];
    let mut b = [0u8; 16];
    let n = if v6 { 16 } else { 4 };
    for i in (0..n).step_by(8) {
        let x = r.next().to_le_bytes();
        let y = r.next().to_le_bytes();
        let m = (n - i).min(8);
        a[i..i + m].copy_from_slice(&x[..m]);
        b[i..i + m].copy_from_slice(&y[..m]);
    }
    let p = r.next();
    FlowKey::new(&a, &b, p as u16, (p >> 16) as u16, 17, v6, [0, 0], 0).0
}

fn main() {
    // cargo bench passes --bench; a filter, if any, names the key size.
    let only: Option<u32> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let t = Timeouts::default();
    for (bytes, v6) in [(13u32, false), (37, true)] {
        if only.is_some_and(|o| o != bytes) {
            continue;
        }
        let p = FlowParams::new(ENTRIES, t, 0, 16).unwrap();
        let mut table = FlowTable::with_seed(&p, 0, u64::from(bytes)).unwrap();
        let mut r = Rng(u64::from(bytes));
        let fill = (ENTRIES * 3 / 4) as usize;
        let mut keys = Vec::with_capacity(fill);
        while keys.len() < fill {
            let k = key(&mut r, v6);
            if let isopath_datapath::flow::Lookup::Inserted(_) = table.lookup_or_insert(&k, 0) {
                keys.push(k);
            }
        }
        let ev = table.events();
        while ev.pop().is_some() {}
        let order: Vec<FlowKey> = (0..LOOKUPS)
            .map(|_| keys[(r.next() % fill as u64) as usize])
            .collect();
        let c0 = tsc();
        let mut found = 0usize;
        for k in &order {
            found += usize::from(table.lookup(black_box(k)).is_some());
        }
        let single = (tsc() - c0) as f64 / LOOKUPS as f64;
        assert_eq!(found, LOOKUPS);
        let mut out = [None::<FlowId>; 16];
        let c0 = tsc();
        let mut found = 0usize;
        for chunk in order.chunks(16) {
            table.lookup_bulk(black_box(chunk), &mut out);
            found += out.iter().filter(|o| o.is_some()).count();
        }
        let bulk = (tsc() - c0) as f64 / LOOKUPS as f64;
        assert_eq!(found, LOOKUPS);
        println!("{{\"key_bytes\":{bytes},\"mode\":\"single\",\"isopath_cycles\":{single:.1}}}");
        println!("{{\"key_bytes\":{bytes},\"mode\":\"bulk16\",\"isopath_cycles\":{bulk:.1}}}");
    }
}
