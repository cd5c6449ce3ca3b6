//! Local health (Lifeguard, SWIM's answer to slow members): how much this speaker distrusts
//! its own view of time. A speaker starved of CPU wakes late for its timers, misses acks that
//! did arrive, and would declare live peers down; when the whole cluster is starved, every
//! speaker does so at once. The score counts the evidence that the fault may be ours, and the
//! driver stretches its probe period and its suspicions by `score + 1`: a slow speaker probes
//! less (which also sheds load) and waits longer before a verdict, while a healthy one keeps the
//! base timing, so a real death is still noticed at full speed.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct LocalHealth {
    score: u32,
    /// The largest multiplier (memberlist's `AwarenessMaxMultiplier`); 1 turns this off.
    max_multiplier: u32,
    /// A timer that fires this late means we were starved.
    late_after: Duration,
    /// One stall costs one point, not one per timer it delayed.
    late_counted_until: Option<Instant>,
    late_window: Duration,
}

impl LocalHealth {
    /// `late_window`: at most one point for lateness per window (the base probe period).
    pub(crate) fn new(max_multiplier: u32, late_after: Duration, late_window: Duration) -> Self {
        LocalHealth {
            score: 0,
            max_multiplier: max_multiplier.max(1),
            late_after,
            late_counted_until: None,
            late_window,
        }
    }

    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// What timeouts are multiplied by: 1 when healthy.
    pub(crate) fn multiplier(&self) -> u32 {
        self.score + 1
    }

    pub(crate) fn scale(&self, base: Duration) -> Duration {
        base * self.multiplier()
    }

    /// Whether a timer that fired `late` after its deadline counts as a starved wake-up.
    pub(crate) fn is_late(&self, late: Duration) -> bool {
        self.max_multiplier > 1 && late >= self.late_after
    }

    /// A probe we sent failed: the target may be dead, or we too slow to hear it. Returns
    /// whether the score rose.
    pub(crate) fn probe_failed(&mut self) -> bool {
        self.worse()
    }

    /// The cluster suspected us and we refuted: others did not hear from us in time.
    pub(crate) fn refuted(&mut self) -> bool {
        self.worse()
    }

    /// A timer fired late by `late` at `now`: a point per window the stall lasted (at least
    /// one), as Lifeguard counts a point per nack a stall made us miss. Returns whether the
    /// score rose.
    pub(crate) fn woke(&mut self, now: Instant, late: Duration) -> bool {
        if !self.is_late(late) || self.late_counted_until.is_some_and(|until| now < until) {
            return false;
        }
        self.late_counted_until = Some(now + self.late_window);
        let windows = late.as_nanos() / self.late_window.as_nanos().max(1);
        let points = u32::try_from(windows).unwrap_or(u32::MAX).max(1);
        self.add(points)
    }

    /// A probe round went well.
    pub(crate) fn probe_succeeded(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    pub(crate) fn reset(&mut self) {
        self.score = 0;
        self.late_counted_until = None;
    }

    fn worse(&mut self) -> bool {
        self.add(1)
    }

    /// Raises the score by `points`, clamped; whether it rose.
    fn add(&mut self, points: u32) -> bool {
        let before = self.score;
        self.score = self
            .score
            .saturating_add(points)
            .min(self.max_multiplier - 1);
        self.score > before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_score_is_clamped_and_scales_timeouts() {
        let mut health = LocalHealth::new(4, 20 * MS, 100 * MS);
        assert_eq!(health.scale(100 * MS), 100 * MS);
        assert!(health.probe_failed());
        assert!(health.refuted());
        assert!(health.probe_failed());
        assert!(
            !health.probe_failed(),
            "3 is the most a multiplier of 4 allows"
        );
        assert_eq!(health.multiplier(), 4);
        assert_eq!(health.scale(150 * MS), 600 * MS);
        for _ in 0..5 {
            health.probe_succeeded();
        }
        assert_eq!(health.score(), 0, "never below zero");
        health.probe_failed();
        health.reset();
        assert_eq!(health.multiplier(), 1);
    }

    #[test]
    fn one_stall_costs_one_point_and_punctual_timers_none() {
        let t0 = Instant::now();
        let mut health = LocalHealth::new(8, 20 * MS, 100 * MS);
        assert!(!health.woke(t0, 19 * MS), "on time");
        assert!(health.woke(t0, 250 * MS));
        assert!(
            !health.woke(t0 + 99 * MS, 250 * MS),
            "the same stall delayed this timer too"
        );
        assert_eq!(
            health.score(),
            2,
            "a stall of two and a half windows: two points"
        );
        assert!(health.woke(t0 + 100 * MS, 30 * MS), "a later, short stall");
        assert_eq!(health.score(), 3);
        assert!(health.woke(t0 + 200 * MS, Duration::from_secs(60)));
        assert_eq!(health.score(), 7, "clamped");
    }

    #[test]
    fn a_multiplier_of_one_turns_it_off() {
        let mut health = LocalHealth::new(1, 20 * MS, 100 * MS);
        assert!(!health.probe_failed());
        assert!(!health.woke(Instant::now(), Duration::from_secs(1)));
        assert!(!health.is_late(Duration::from_secs(1)));
        assert_eq!(health.scale(100 * MS), 100 * MS);
    }
}
