//! The index that finds a flow's slot: a bucketised cuckoo hash of 64-byte buckets.
//!
//! # Design
//! A bucket is one cache line: 15 entries of 32 bits (a tag from the key's hash and the
//! slot number) and a counter of the keys whose first-choice bucket this is but which live
//! in their second. A lookup reads the first bucket, compares the tags (one SIMD compare),
//! and reads the record of a matching tag: one bucket line and one record. Only when the
//! counter is non-zero does it read the second bucket. Entries move between buckets (cuckoo
//! displacement, breadth-first to depth 2); records never move.
//!
//! The bucket count is not a power of two (buckets = capacity ÷ (15 × 85 %), mapped with a
//! multiply-shift), so the index costs about 5 bytes per flow. The second bucket of an entry
//! is `(g(tag) − b) mod n` from the bucket `b` it is in: an involution, so an entry moves
//! without its key being read. Entry bit 31 says the entry sits in its second bucket; the tag
//! is never 0, so 0 is an empty entry and zeroed memory is an empty index.

use super::mem::{Region, match16, prefetch};

/// Entries per bucket.
pub(crate) const WAYS: usize = 15;
/// Target load of the index at full capacity, percent.
const LOAD_PCT: u64 = 85;
const ALT: u32 = 1 << 31;

/// One cache line of the index.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Bucket {
    /// The entries, then (word [`WAYS`]) the number of keys whose first bucket is this one
    /// but which live in their second.
    w: [u32; WAYS + 1],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

impl Bucket {
    /// The line as 16 words: the entries, then the spill counter.
    #[inline(always)]
    fn words(&self) -> &[u32; WAYS + 1] {
        &self.w
    }
}

/// Where a key goes: its first bucket and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) bucket: u32,
    pub(crate) tag: u32,
}

#[derive(Debug)]
pub(crate) struct Index {
    b: Region<Bucket>,
    n: u32,
    slot_bits: u32,
    slot_mask: u32,
    tag_mask: u32,
}

impl Index {
    pub(crate) fn new(capacity: u32) -> std::io::Result<Self> {
        let n = (u64::from(capacity) * 100)
            .div_ceil(WAYS as u64 * LOAD_PCT)
            .max(2) as u32;
        let slot_bits = 32 - (capacity - 1).leading_zeros();
        Ok(Self {
            b: Region::new(n as usize)?,
            n,
            slot_bits,
            slot_mask: (1 << slot_bits) - 1,
            tag_mask: (1 << (31 - slot_bits)) - 1,
        })
    }

    pub(crate) fn bytes(&self) -> usize {
        self.b.bytes()
    }

    /// The first bucket and tag of a hash.
    #[inline(always)]
    pub(crate) fn place(&self, h: u64) -> Place {
        let bucket = (((h & 0xffff_ffff) * u64::from(self.n)) >> 32) as u32;
        let tag = ((h >> 40) as u32 & self.tag_mask).max(1);
        Place { bucket, tag }
    }

    /// Starts loading a key's first bucket.
    #[inline(always)]
    pub(crate) fn prefetch(&self, p: Place) {
        prefetch(self.b.addr(p.bucket as usize));
    }

    /// The other bucket of an entry with `tag` in bucket `b`.
    #[inline(always)]
    fn other(&self, b: u32, tag: u32) -> u32 {
        let g = ((u64::from(tag.wrapping_mul(0x9e37_79b1)) * u64::from(self.n)) >> 32) as u32;
        // (g - b) mod n
        if g >= b { g - b } else { g + self.n - b }
    }

    #[inline(always)]
    fn tag_of(&self, e: u32) -> u32 {
        (e >> self.slot_bits) & self.tag_mask
    }

    /// Bitmask of the entries of bucket `b` with tag `tag` (bit `i`: entry `i`): one SIMD
    /// compare over the whole line, the spill counter's bit masked off after.
    #[inline(always)]
    fn matches(&self, b: u32, tag: u32) -> u32 {
        let want = tag << self.slot_bits;
        let mask = self.tag_mask << self.slot_bits;
        match16(self.b[b as usize].words(), mask, want) & ((1 << WAYS) - 1)
    }

    /// The first candidate slot of a key in its first bucket (for the burst's prefetch).
    #[inline(always)]
    pub(crate) fn first_candidate(&self, p: Place) -> Option<u32> {
        let m = self.matches(p.bucket, p.tag);
        if m == 0 {
            None
        } else {
            Some(self.b[p.bucket as usize].w[m.trailing_zeros() as usize] & self.slot_mask)
        }
    }

    /// The slot of the key placed at `p` for which `is` says yes.
    #[inline]
    pub(crate) fn find(&self, p: Place, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut m = self.matches(p.bucket, p.tag);
        while m != 0 {
            let s = self.b[p.bucket as usize].w[m.trailing_zeros() as usize] & self.slot_mask;
            if is(s) {
                return Some(s);
            }
            m &= m - 1;
        }
        if self.b[p.bucket as usize].w[WAYS] == 0 {
            return None;
        }
        let a = self.other(p.bucket, p.tag);
        let mut m = self.matches(a, p.tag);
        while m != 0 {
            let e = self.b[a as usize].w[m.trailing_zeros() as usize];
            if e & ALT != 0 && is(e & self.slot_mask) {
                return Some(e & self.slot_mask);
            }
            m &= m - 1;
        }
        None
    }

    #[inline]
    fn free_in(&self, b: u32) -> Option<usize> {
        self.b[b as usize].w[..WAYS].iter().position(|&e| e == 0)
    }

    /// Moves the entry at (`b`, `i`) to its other bucket's free entry `j`.
    fn shift(&mut self, b: u32, i: usize, j: usize) {
        let e = self.b[b as usize].w[i];
        let o = self.other(b, self.tag_of(e));
        let moved = if e & ALT == 0 {
            self.b[b as usize].w[WAYS] += 1;
            e | ALT
        } else {
            self.b[o as usize].w[WAYS] -= 1;
            e & !ALT
        };
        self.b[o as usize].w[j] = moved;
        self.b[b as usize].w[i] = 0;
    }

    /// Adds `slot` for the key placed at `p`. `false`: no room within two displacements.
    pub(crate) fn insert(&mut self, p: Place, slot: u32) -> bool {
        let e = p.tag << self.slot_bits | slot;
        let a = self.other(p.bucket, p.tag);
        let put = |ix: &mut Self, b: u32, i: usize| {
            if b == p.bucket {
                ix.b[b as usize].w[i] = e;
            } else {
                ix.b[b as usize].w[i] = e | ALT;
                ix.b[p.bucket as usize].w[WAYS] += 1;
            }
        };
        for b in [p.bucket, a] {
            if let Some(i) = self.free_in(b) {
                put(self, b, i);
                return true;
            }
        }
        // One displacement: an entry of either bucket whose other bucket has room.
        for b in [p.bucket, a] {
            for i in 0..WAYS {
                let o = self.other(b, self.tag_of(self.b[b as usize].w[i]));
                if o == b {
                    continue;
                }
                if let Some(j) = self.free_in(o) {
                    self.shift(b, i, j);
                    put(self, b, i);
                    return true;
                }
            }
        }
        // Two displacements.
        for b in [p.bucket, a] {
            for i in 0..WAYS {
                let o = self.other(b, self.tag_of(self.b[b as usize].w[i]));
                if o == b {
                    continue;
                }
                for k in 0..WAYS {
                    let o2 = self.other(o, self.tag_of(self.b[o as usize].w[k]));
                    if o2 == o || o2 == b {
                        continue;
                    }
                    if let Some(j) = self.free_in(o2) {
                        self.shift(o, k, j);
                        self.shift(b, i, k);
                        put(self, b, i);
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Removes `slot` of the key placed at `p`. `false`: it was not there.
    pub(crate) fn remove(&mut self, p: Place, slot: u32) -> bool {
        let e = p.tag << self.slot_bits | slot;
        if let Some(i) = self.b[p.bucket as usize].w[..WAYS]
            .iter()
            .position(|&x| x == e)
        {
            self.b[p.bucket as usize].w[i] = 0;
            return true;
        }
        let a = self.other(p.bucket, p.tag);
        if let Some(i) = self.b[a as usize].w[..WAYS]
            .iter()
            .position(|&x| x == e | ALT)
        {
            self.b[a as usize].w[i] = 0;
            self.b[p.bucket as usize].w[WAYS] -= 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "too big for Miri")]
    fn fills_to_capacity_and_finds_everything() {
        let cap = 50_000u32;
        let mut ix = Index::new(cap).unwrap();
        let h = |i: u32| {
            let mut z = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z ^= z >> 29;
            z.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        };
        for s in 0..cap {
            assert!(ix.insert(ix.place(h(s)), s), "slot {s}");
        }
        for s in 0..cap {
            assert_eq!(ix.find(ix.place(h(s)), |x| x == s), Some(s));
        }
        for s in (0..cap).step_by(2) {
            assert!(ix.remove(ix.place(h(s)), s));
        }
        for s in 0..cap {
            let found = ix.find(ix.place(h(s)), |x| x == s);
            assert_eq!(found.is_some(), s % 2 == 1, "slot {s}");
        }
        let spilled: u64 = ix.b.iter().map(|b| u64::from(b.w[WAYS])).sum();
        let alts =
            ix.b.iter()
                .flat_map(|b| b.w[..WAYS].iter())
                .filter(|&&e| e & ALT != 0)
                .count();
        assert_eq!(spilled, alts as u64, "spill counters match the entries");
    }
}
