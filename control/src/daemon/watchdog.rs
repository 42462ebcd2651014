//! The service manager's watchdog (`WatchdogSec=`): `WATCHDOG=1` only while every worker is
//! alive.
//!
//! systemd passes `WATCHDOG_USEC` (and `WATCHDOG_PID`, the process meant) and restarts the unit
//! when no `WATCHDOG=1` arrives within that time. The control loop beats every half of it, and
//! only when every worker's loop counter moved within the last beat period: a worker stuck in a
//! loop iteration (or a control loop that stopped turning) stops the beats, and systemd restarts
//! the appliance. The state machine takes `now` and the workers' last-moved instants and does
//! no I/O; the daemon sends the beat and logs the stall it reports.

use std::time::{Duration, Instant};

/// What the daemon should do this turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing (not due yet).
    Wait,
    /// Send `WATCHDOG=1`.
    Send,
    /// Withhold the beat: these workers (by index) have not moved for a beat period. Reported
    /// once per stall (the first withheld beat); later withheld beats are `Withhold(vec![])`.
    Withhold(Vec<usize>),
}

/// The watchdog's state.
#[derive(Debug, Clone)]
pub(crate) struct Watchdog {
    /// `WATCHDOG_USEC`: systemd's timeout.
    timeout: Duration,
    next: Instant,
    /// Per worker: whether its current stall was reported.
    reported: Vec<bool>,
    /// Beats sent.
    pub(crate) beats: u64,
    /// Beats withheld.
    pub(crate) withheld: u64,
}

impl Watchdog {
    /// From the environment systemd sets: `WATCHDOG_USEC` (a positive number) and, when set,
    /// `WATCHDOG_PID` equal to this process. `None`: no watchdog.
    pub(crate) fn from_env(now: Instant) -> Option<Self> {
        let usec = std::env::var("WATCHDOG_USEC").ok()?;
        let pid_ok = std::env::var("WATCHDOG_PID")
            .map_or(true, |p| p.trim() == std::process::id().to_string());
        Self::parse(&usec, pid_ok, now)
    }

    fn parse(usec: &str, pid_ok: bool, now: Instant) -> Option<Self> {
        let usec: u64 = usec.trim().parse().ok().filter(|&u| u > 0)?;
        pid_ok.then(|| Self::new(Duration::from_micros(usec), now))
    }

    pub(crate) fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            next: now,
            reported: Vec::new(),
            beats: 0,
            withheld: 0,
        }
    }

    /// The beat period: half of systemd's timeout.
    pub(crate) fn period(&self) -> Duration {
        self.timeout / 2
    }

    /// systemd's timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One turn: `moved[i]` is when worker i's loop counter last moved.
    pub(crate) fn tick(&mut self, now: Instant, moved: &[Instant]) -> Beat {
        if now < self.next {
            return Beat::Wait;
        }
        self.next = now + self.period();
        self.reported.resize(moved.len(), false);
        let period = self.period();
        let stalled: Vec<usize> = moved
            .iter()
            .enumerate()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= period)
            .map(|(i, _)| i)
            .collect();
        for (i, r) in self.reported.iter_mut().enumerate() {
            if !stalled.contains(&i) {
                *r = false;
            }
        }
        if stalled.is_empty() {
            self.beats += 1;
            return Beat::Send;
        }
        self.withheld += 1;
        let new: Vec<usize> = stalled
            .into_iter()
            .filter(|&i| !std::mem::replace(&mut self.reported[i], true))
            .collect();
        Beat::Withhold(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn beats_every_half_timeout_while_every_worker_moves() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(400 * MS, t0);
        assert_eq!(w.period(), 200 * MS);
        assert_eq!(w.tick(t0, &[t0, t0]), Beat::Send);
        assert_eq!(w.tick(t0 + 100 * MS, &[t0, t0]), Beat::Wait);
        let t = t0 + 200 * MS;
        assert_eq!(w.tick(t, &[t - MS, t - 5 * MS]), Beat::Send);
        assert_eq!(w.beats, 2);
    }

    #[test]
    fn a_stalled_worker_withholds_the_beat_is_reported_once_and_recovers() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(400 * MS, t0);
        assert_eq!(w.tick(t0, &[t0, t0]), Beat::Send);
        // Worker 1 last moved at t0: at t0 + 200 ms it has not moved for a period.
        let t = t0 + 200 * MS;
        assert_eq!(w.tick(t, &[t, t0]), Beat::Withhold(vec![1]));
        let t = t0 + 400 * MS;
        assert_eq!(w.tick(t, &[t, t0]), Beat::Withhold(vec![]));
        // It moves again: beats resume, and a later stall is reported again.
        let t = t0 + 600 * MS;
        assert_eq!(w.tick(t, &[t, t - MS]), Beat::Send);
        let t = t0 + 800 * MS;
        assert_eq!(w.tick(t, &[t - 300 * MS, t]), Beat::Withhold(vec![0]));
        assert_eq!((w.beats, w.withheld), (2, 3));
    }

    #[test]
    fn the_environment_is_read_as_systemd_sets_it() {
        let now = Instant::now();
        assert_eq!(
            Watchdog::parse("10000000", true, now).map(|w| w.timeout()),
            Some(Duration::from_secs(10))
        );
        assert!(Watchdog::parse("0", true, now).is_none());
        assert!(Watchdog::parse("ten", true, now).is_none());
        // WATCHDOG_PID names another process: not ours to feed.
        assert!(Watchdog::parse("10000000", false, now).is_none());
    }
}
