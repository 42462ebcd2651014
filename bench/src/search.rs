//! RFC 2544 §26.1 throughput search: the highest offered rate at which the device loses no
//! frame (or at most a stated fraction), found by binary search over trials. Pure: the trial is
//! a closure, so the search is tested against a synthetic device.

use serde::{Deserialize, Serialize};

/// One trial's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Trial {
    /// Rate asked of the source (pps).
    pub(crate) target_pps: u64,
    /// Frames the source sent.
    pub(crate) sent: u64,
    /// Frames that arrived.
    pub(crate) received: u64,
    /// Measured offered rate (pps).
    pub(crate) offered_pps: f64,
    /// Measured arrival rate (pps).
    pub(crate) received_pps: f64,
    /// The forward direction's share of `sent` and `received` (t0 → far).
    #[serde(default)]
    pub(crate) forward: DirCount,
    /// The reverse direction's share (far → t0), in runs both ways.
    #[serde(default)]
    pub(crate) reverse: Option<DirCount>,
}

/// What one direction of a trial sent and what arrived at its far end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirCount {
    /// Frames this direction's source sent.
    pub(crate) sent: u64,
    /// Frames counted where this direction arrives.
    pub(crate) received: u64,
}

impl Trial {
    /// A trial that could not run (interrupted, or its tools failed): a failure at `rate`.
    pub(crate) fn failed(rate: u64) -> Self {
        Self {
            target_pps: rate,
            sent: 1,
            received: 0,
            offered_pps: 0.0,
            received_pps: 0.0,
            forward: DirCount {
                sent: 1,
                received: 0,
            },
            reverse: None,
        }
    }

    /// Fraction of the sent frames that did not arrive (negative counts as 0).
    pub(crate) fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.sent.saturating_sub(self.received) as f64 / self.sent as f64
    }
}

/// Search bounds and stopping rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct SearchParams {
    /// Highest rate tried (the first trial).
    pub(crate) max_pps: u64,
    /// Stop once the pass/fail interval is narrower than this.
    pub(crate) resolution_pps: u64,
    /// Loss fraction still counted as a pass (0 = RFC 2544's zero loss).
    pub(crate) loss_tolerance: f64,
    /// At most this many trials.
    pub(crate) max_trials: u32,
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SearchResult {
    /// Highest passing target rate (0 if none passed).
    pub(crate) throughput_pps: u64,
    /// The passing trial at that rate, if any.
    pub(crate) best: Option<Trial>,
    /// Every trial, in order.
    pub(crate) trials: Vec<Trial>,
}

/// Binary search: the first trial runs at `max_pps`; if it passes, that is the answer.
/// Otherwise the interval (highest pass, lowest fail) is halved until it is narrower than the
/// resolution or the trial budget is spent.
pub(crate) fn search(p: SearchParams, mut trial: impl FnMut(u64) -> Trial) -> SearchResult {
    let mut trials = Vec::new();
    let pass = |t: &Trial| t.loss() <= p.loss_tolerance;
    let (mut lo, mut hi) = (0u64, p.max_pps);
    let mut best = None;
    let mut rate = p.max_pps;
    while (trials.len() as u32) < p.max_trials.max(1) {
        let t = trial(rate);
        trials.push(t);
        if pass(&t) {
            lo = rate;
            best = Some(t);
        } else {
            hi = rate;
        }
        if hi <= lo || hi - lo <= p.resolution_pps.max(1) {
            break;
        }
        rate = lo + (hi - lo) / 2;
    }
    SearchResult {
        throughput_pps: best.map_or(0, |b: Trial| b.target_pps),
        best,
        trials,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A device that forwards everything up to `limit` pps and drops the excess.
    pub(crate) fn synthetic(limit: u64, secs: u64) -> impl FnMut(u64) -> Trial {
        move |rate| {
            let sent = rate * secs;
            let received = rate.min(limit) * secs;
            Trial {
                target_pps: rate,
                sent,
                received,
                offered_pps: rate as f64,
                received_pps: rate.min(limit) as f64,
                forward: DirCount { sent, received },
                reverse: None,
            }
        }
    }

    #[test]
    fn converges_on_a_synthetic_limit() {
        for limit in [1u64, 12_345, 777_777, 999_000, 3_000_000] {
            let p = SearchParams {
                max_pps: 4_000_000,
                resolution_pps: 1000,
                loss_tolerance: 0.0,
                max_trials: 40,
            };
            let r = search(p, synthetic(limit, 2));
            assert!(r.throughput_pps <= limit, "{limit}: {r:?}");
            assert!(
                limit - r.throughput_pps <= 1000 || limit < 1000,
                "{limit}: {}",
                r.throughput_pps
            );
            assert!(r.trials.len() <= 13, "{limit}: {} trials", r.trials.len());
        }
    }

    #[test]
    fn first_trial_passing_ends_the_search() {
        let p = SearchParams {
            max_pps: 500_000,
            resolution_pps: 1000,
            loss_tolerance: 0.0,
            max_trials: 20,
        };
        let r = search(p, synthetic(1_000_000, 1));
        assert_eq!(r.throughput_pps, 500_000);
        assert_eq!(r.trials.len(), 1);
    }

    #[test]
    fn loss_tolerance_raises_the_answer() {
        // 1% tolerance: up to limit / 0.99.
        let p = SearchParams {
            max_pps: 2_000_000,
            resolution_pps: 500,
            loss_tolerance: 0.01,
            max_trials: 40,
        };
        let r = search(p, synthetic(1_000_000, 1));
        let want = (1_000_000.0 / 0.99) as u64;
        assert!(
            r.throughput_pps <= want && want - r.throughput_pps <= 500,
            "{}",
            r.throughput_pps
        );
    }

    #[test]
    fn nothing_passes() {
        let p = SearchParams {
            max_pps: 1000,
            resolution_pps: 10,
            loss_tolerance: 0.0,
            max_trials: 30,
        };
        let r = search(p, |rate| Trial {
            sent: rate + 1,
            ..Trial::failed(rate)
        });
        assert_eq!(r.throughput_pps, 0);
        assert!(r.best.is_none());
    }
}
