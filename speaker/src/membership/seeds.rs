//! When to announce ourselves to each seed: a new seed at once, a seed that is a live member
//! never, and one that does not answer less and less often. Pure: the task passes in the
//! instant and who is a member.
//!
//! A seed that never answers is a node without a running speaker (being installed, drained,
//! dead). Announcing to it on every change of the seed list, as the speaker once did, sent a
//! burst to every such node on every watch event; a fixed period keeps hammering a node that
//! is gone for good. Backing off to [`MAX_BACKOFF_FACTOR`] times the announce interval still
//! heals a partition within that bound: both sides announce, so the sooner of the two wins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

/// The longest wait between two announces to one silent seed, in announce intervals.
pub(crate) const MAX_BACKOFF_FACTOR: u32 = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Backoff {
    next: Instant,
    interval: Duration,
}

/// The seed list and each seed's next announce.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seeds {
    /// Sorted, without duplicates; ours excluded.
    list: Vec<SocketAddr>,
    backoff: BTreeMap<SocketAddr, Backoff>,
    /// Whether a list was ever set (an empty one included).
    set: bool,
}

impl Seeds {
    /// Takes a new list (ours may be in it: it is left out). Returns `None` when it is the
    /// list we already have, else the seeds new to it, which are due at once.
    pub(crate) fn set(
        &mut self,
        mut seeds: Vec<SocketAddr>,
        me: SocketAddr,
        now: Instant,
        base: Duration,
    ) -> Option<Vec<SocketAddr>> {
        seeds.retain(|seed| *seed != me);
        seeds.sort_unstable();
        seeds.dedup();
        if self.set && seeds == self.list {
            return None;
        }
        self.set = true;
        let new: Vec<SocketAddr> = seeds
            .iter()
            .copied()
            .filter(|seed| !self.backoff.contains_key(seed))
            .collect();
        self.backoff.retain(|seed, _| seeds.contains(seed));
        for seed in &new {
            self.backoff.insert(
                *seed,
                Backoff {
                    next: now + base,
                    interval: base,
                },
            );
        }
        self.list = seeds;
        Some(new)
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set
    }

    /// Whether the list holds nobody but us.
    pub(crate) fn only_me(&self) -> bool {
        self.list.is_empty()
    }

    /// Makes every seed due at once and starts the backoff over: after a rejoin, or when
    /// no live peer is left, all are worth a try now.
    pub(crate) fn restart(&mut self, now: Instant, base: Duration) {
        for backoff in self.backoff.values_mut() {
            *backoff = Backoff {
                next: now,
                interval: base,
            };
        }
    }

    /// The seeds due now that are not live members; each waits twice as long for the next
    /// announce, up to [`MAX_BACKOFF_FACTOR`] times `base`. A member starts over at `base`
    /// once it stops being one (a node that just died may be back soon).
    pub(crate) fn due(
        &mut self,
        now: Instant,
        base: Duration,
        is_member: impl Fn(&SocketAddr) -> bool,
    ) -> Vec<SocketAddr> {
        let mut due = vec![];
        for (seed, backoff) in &mut self.backoff {
            if is_member(seed) {
                *backoff = Backoff {
                    next: now + base,
                    interval: base,
                };
            } else if backoff.next <= now {
                due.push(*seed);
                backoff.interval = (backoff.interval * 2).min(base * MAX_BACKOFF_FACTOR);
                backoff.next = now + backoff.interval;
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        ([192, 0, 2, 1], port).into()
    }

    const BASE: Duration = Duration::from_secs(2);

    #[test]
    fn an_unchanged_list_announces_nothing_and_a_new_seed_at_once() {
        let t0 = Instant::now();
        let mut seeds = Seeds::default();
        assert!(!seeds.is_set());
        let first = seeds.set(vec![addr(2), addr(1), addr(9), addr(2)], addr(9), t0, BASE);
        assert_eq!(first, Some(vec![addr(1), addr(2)]), "ours left out, sorted");
        assert!(seeds.is_set());
        assert_eq!(seeds.set(vec![addr(1), addr(2)], addr(9), t0, BASE), None);
        assert_eq!(
            seeds.set(vec![addr(2), addr(1), addr(9)], addr(9), t0, BASE),
            None,
            "order, duplicates and ours do not make a new list"
        );
        assert_eq!(
            seeds.set(vec![addr(1), addr(2), addr(3)], addr(9), t0, BASE),
            Some(vec![addr(3)])
        );
        assert_eq!(
            seeds.set(vec![addr(3)], addr(9), t0, BASE),
            Some(vec![]),
            "a shorter list is a change, with nobody new"
        );
        assert!(seeds.due(t0 + BASE * 100, BASE, |_| false) == vec![addr(3)]);
    }

    #[test]
    fn a_silent_seed_is_tried_less_and_less_often_up_to_the_bound() {
        let t0 = Instant::now();
        let mut seeds = Seeds::default();
        seeds.set(vec![addr(1)], addr(9), t0, BASE);
        // Tick every 100 ms for a minute and record when the seed was due.
        let mut times = vec![];
        let mut now = t0;
        while now < t0 + Duration::from_secs(60) {
            if !seeds.due(now, BASE, |_| false).is_empty() {
                times.push(now.duration_since(t0).as_secs());
            }
            now += Duration::from_millis(100);
        }
        // Announced at once by `set`'s caller; then 2, 4, 8, 8, ... seconds apart.
        assert_eq!(&times[..5], &[2, 6, 14, 22, 30]);
        let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= 8), "{gaps:?}");
    }

    #[test]
    fn a_member_is_never_due_and_starts_over_when_it_goes() {
        let t0 = Instant::now();
        let mut seeds = Seeds::default();
        seeds.set(vec![addr(1), addr(2)], addr(9), t0, BASE);
        let member = |seed: &SocketAddr| *seed == addr(1);
        // Long silence of seed 2 backs it off; seed 1 answers all along.
        let mut now = t0;
        for _ in 0..600 {
            let due = seeds.due(now, BASE, member);
            assert!(!due.contains(&addr(1)));
            now += Duration::from_millis(100);
        }
        // Seed 1 dies: it is tried one base interval later, not after a long backoff.
        let gone = now;
        let mut first = None;
        while now < gone + BASE * 3 {
            if seeds.due(now, BASE, |_| false).contains(&addr(1)) {
                first.get_or_insert(now.duration_since(gone));
            }
            now += Duration::from_millis(100);
        }
        assert!(first.is_some_and(|after| after <= BASE), "{first:?}");
        // A rejoin tries everyone at once and starts the backoff over.
        seeds.restart(now, BASE);
        assert_eq!(seeds.due(now, BASE, |_| false), vec![addr(1), addr(2)]);
        assert!(seeds.due(now + BASE / 2, BASE, |_| false).is_empty());
        assert_eq!(seeds.due(now + BASE * 2, BASE, |_| false).len(), 2);
    }
}
