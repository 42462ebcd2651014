//! A log-linear latency histogram in the spirit of HdrHistogram: exact below 64 ns, then 32
//! sub-buckets per power of two (relative error under 3.2%), up to 2^40 ns. Fixed size, no
//! allocation when recording, mergeable, serialised sparse.

use serde::{Deserialize, Serialize};

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const LINEAR: u64 = 64;
const MAX_EXP: u32 = 40;
const BUCKETS: usize = LINEAR as usize + (MAX_EXP as usize - 6 + 1) * SUB;

/// Counts of values (ns) in log-linear buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = (63 - v.leading_zeros()).min(MAX_EXP);
    let v = v.min((1u64 << (MAX_EXP + 1)) - 1);
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    LINEAR as usize + (exp as usize - 6) * SUB + sub
}

/// The lowest value of bucket `i`.
fn low(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let exp = (k / SUB) as u32 + 6;
    let sub = (k % SUB) as u64;
    (1u64 << exp) | (sub << (exp - SUB_BITS))
}

/// A bucket's representative value: its midpoint.
fn mid(i: usize) -> u64 {
    let lo = low(i);
    let hi = if i + 1 < BUCKETS { low(i + 1) } else { lo + 1 };
    lo + (hi - lo) / 2
}

/// Percentiles and extremes, in ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LatencySummary {
    pub(crate) count: u64,
    pub(crate) min_ns: u64,
    pub(crate) mean_ns: f64,
    pub(crate) p50_ns: u64,
    pub(crate) p90_ns: u64,
    pub(crate) p99_ns: u64,
    pub(crate) p999_ns: u64,
    pub(crate) max_ns: u64,
}

/// The serialised form: the summary and the non-empty buckets as `[low_ns, count]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct HistogramDump {
    pub(crate) summary: LatencySummary,
    pub(crate) buckets: Vec<(u64, u64)>,
}

impl Histogram {
    #[inline]
    pub(crate) fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The value below which `q` (0..=1) of the recorded values fall (bucket midpoint, clamped
    /// to the observed min and max). 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return mid(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    #[cfg(test)]
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        if self.total == 0 {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.total,
            min_ns: self.min,
            mean_ns: self.sum as f64 / self.total as f64,
            p50_ns: self.quantile(0.50),
            p90_ns: self.quantile(0.90),
            p99_ns: self.quantile(0.99),
            p999_ns: self.quantile(0.999),
            max_ns: self.max,
        }
    }

    pub(crate) fn dump(&self) -> HistogramDump {
        HistogramDump {
            summary: self.summary(),
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(i, &c)| (low(i), c))
                .collect(),
        }
    }
}

impl HistogramDump {
    /// Cumulative distribution: `(value_ns, fraction <= value)` per non-empty bucket.
    pub(crate) fn cdf(&self) -> Vec<(f64, f64)> {
        let total: u64 = self.buckets.iter().map(|b| b.1).sum();
        let mut seen = 0;
        self.buckets
            .iter()
            .map(|&(v, c)| {
                seen += c;
                (v as f64, seen as f64 / total.max(1) as f64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for i in 1..BUCKETS {
            assert!(low(i) > last, "bucket {i}");
            last = low(i);
            assert_eq!(index(low(i)), i);
        }
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1000,
            12_345,
            1 << 20,
            987_654_321,
            1 << 40,
        ] {
            let i = index(v);
            assert!(low(i) <= v, "{v}");
            if i + 1 < BUCKETS {
                assert!(v < low(i + 1), "{v}");
                if v >= LINEAR {
                    assert!((low(i + 1) - low(i)) as f64 / v as f64 <= 1.0 / 32.0, "{v}");
                }
            }
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        let s = h.summary();
        assert_eq!(s.count, 100_000);
        assert_eq!(s.min_ns, 10);
        assert_eq!(s.max_ns, 1_000_000);
        for (q, got) in [(0.5, s.p50_ns), (0.9, s.p90_ns), (0.99, s.p99_ns)] {
            let want = q * 1_000_000.0;
            assert!(
                ((got as f64) - want).abs() / want < 0.035,
                "q{q}: {got} vs {want}"
            );
        }
        let mut m = Histogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count(), 200_000);
        assert_eq!(m.quantile(0.5), h.quantile(0.5));
        let cdf = h.dump().cdf();
        assert!((cdf.last().unwrap().1 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn empty_histogram() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        assert_eq!(h.summary(), LatencySummary::default());
    }
}
