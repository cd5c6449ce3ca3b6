//! One pool's addresses of one family: where it may allocate, which of those are free, and the
//! counts its status reports. Everything is kept as runs, so no operation looks at addresses one
//! by one.

use model::address::Family;

use crate::intervals::IntervalSet;
use model::pool::{buggy_count, is_buggy};

/// Address counts of one family of one pool, as `u128` (a `/64` has more than `i64` holds; the
/// caller saturates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Addresses the pool can hand out: its addresses minus the parts another pool also has,
    /// minus `.0`/`.255` under `avoidBuggyIPs`.
    pub capacity: u128,
    /// Addresses of the pool held by Services, whether or not the pool could hand them out
    /// today (an address in a part that later overlapped another pool still counts).
    pub assigned: u128,
    /// Addresses the pool can still hand out.
    pub available: u128,
}

#[derive(Debug, Clone)]
pub(crate) struct FamilySpace {
    /// `avoidBuggyIPs` on an IPv4 space.
    avoid_buggy: bool,
    /// The union of the pool's ranges of this family.
    ranges: IntervalSet,
    /// `ranges` minus every part another pool also has: the only place new addresses come from.
    allocatable: IntervalSet,
    /// Allocatable addresses nobody holds. Under `avoid_buggy` it may still hold `.0`/`.255`
    /// addresses (removing them all up front would cost two runs per /24), but no run consists of
    /// such addresses only, so the lowest usable free address is at most two steps into the
    /// first run.
    free: IntervalSet,
    capacity: u128,
    /// Held addresses that belong to this pool.
    assigned: u128,
    /// Held addresses counted in `capacity`.
    assigned_usable: u128,
}

impl FamilySpace {
    /// A space with nothing held. `overlapped` is the part of `ranges` other pools also have.
    pub fn new(
        family: Family,
        avoid_buggy_ips: bool,
        ranges: IntervalSet,
        overlapped: &IntervalSet,
    ) -> FamilySpace {
        let avoid_buggy = avoid_buggy_ips && family == Family::V4;
        let allocatable = ranges.difference(overlapped);
        let capacity = allocatable.runs().fold(0u128, |sum, (first, last)| {
            let avoided = if avoid_buggy {
                buggy_count(first, last)
            } else {
                0
            };
            sum.saturating_add((last - first).saturating_add(1) - avoided)
        });
        let mut free = allocatable.clone();
        if avoid_buggy {
            let useless: Vec<(u128, u128)> = allocatable
                .runs()
                .filter(|&(first, last)| only_buggy(first, last))
                .collect();
            for (first, last) in useless {
                free.remove(first, last);
            }
        }
        FamilySpace {
            avoid_buggy,
            ranges,
            allocatable,
            free,
            capacity,
            assigned: 0,
            assigned_usable: 0,
        }
    }

    pub fn has_addresses(&self) -> bool {
        !self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &IntervalSet {
        &self.ranges
    }

    /// Whether `value` could be handed out by this pool if nobody held it.
    pub fn usable(&self, value: u128) -> bool {
        self.allocatable.contains(value) && !self.avoids(value)
    }

    pub fn avoids(&self, value: u128) -> bool {
        self.avoid_buggy && is_buggy(value)
    }

    /// The lowest address this pool can hand out now.
    pub fn lowest_free(&self) -> Option<u128> {
        self.free.runs().find_map(|(first, last)| {
            (first..=last.min(first.saturating_add(2))).find(|&v| !self.avoids(v))
        })
    }

    /// Records that `value`, an address of this pool, is now held.
    pub fn take(&mut self, value: u128) {
        self.assigned += 1;
        if !self.usable(value) {
            return;
        }
        self.assigned_usable += 1;
        self.free.remove(value, value);
        // Only the two runs the removal split can have become `.0`/`.255`-only.
        if self.avoid_buggy {
            for (first, last) in [self.free.run_before(value), self.free.run_after(value)]
                .into_iter()
                .flatten()
            {
                if only_buggy(first, last) {
                    self.free.remove(first, last);
                }
            }
        }
    }

    /// Records that nobody holds `value`, an address of this pool, any more.
    pub fn give_back(&mut self, value: u128) {
        self.assigned -= 1;
        if !self.usable(value) {
            return;
        }
        self.assigned_usable -= 1;
        self.free.insert(value, value);
    }

    pub fn usage(&self) -> Usage {
        Usage {
            capacity: self.capacity,
            assigned: self.assigned,
            available: self.capacity - self.assigned_usable,
        }
    }
}

fn only_buggy(first: u128, last: u128) -> bool {
    buggy_count(first, last) == last - first + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u128 = 0xc633_6400; // 198.51.100.0

    fn space(avoid: bool, runs: &[(u128, u128)], overlapped: &[(u128, u128)]) -> FamilySpace {
        FamilySpace::new(
            Family::V4,
            avoid,
            runs.iter().copied().collect(),
            &overlapped.iter().copied().collect(),
        )
    }

    #[test]
    fn lowest_free_walks_up_and_comes_back() {
        let mut s = space(false, &[(BASE, BASE + 3)], &[]);
        for expected in BASE..=BASE + 3 {
            assert_eq!(s.lowest_free(), Some(expected));
            s.take(expected);
        }
        assert_eq!(s.lowest_free(), None);
        s.give_back(BASE + 2);
        assert_eq!(s.lowest_free(), Some(BASE + 2));
        assert_eq!(
            s.usage(),
            Usage {
                capacity: 4,
                assigned: 3,
                available: 1
            }
        );
    }

    #[test]
    fn avoided_addresses_are_skipped_and_not_counted() {
        // 198.51.100.254 - 198.51.101.2: .255 and .0 are avoided.
        let mut s = space(true, &[(BASE + 254, BASE + 258)], &[]);
        assert_eq!(s.usage().capacity, 3);
        let mut handed = Vec::new();
        // Bounded, so that a broken skip fails instead of spinning.
        for _ in 0..5 {
            let Some(v) = s.lowest_free() else { break };
            s.take(v);
            handed.push(v - BASE);
        }
        assert_eq!(handed, [254, 257, 258]);
        assert_eq!(s.usage().available, 0);
        // A pool of only avoided addresses has nothing to give.
        let s = space(true, &[(BASE + 255, BASE + 256)], &[]);
        assert_eq!((s.usage().capacity, s.lowest_free()), (0, None));
    }

    #[test]
    fn filling_many_blocks_keeps_the_free_runs_few() {
        // Fill eight /24s of a /16: the free set must not keep a `.255`/`.0` run per block.
        let mut s = space(true, &[(BASE, BASE + 0xffff)], &[]);
        for _ in 0..(8 * 254) {
            let v = s.lowest_free().unwrap();
            assert!(!is_buggy(v));
            s.take(v);
        }
        assert_eq!(s.lowest_free(), Some(BASE + 8 * 256 + 1));
        assert_eq!(s.free.run_count(), 1);
    }

    #[test]
    fn overlapped_parts_are_neither_free_nor_counted() {
        let mut s = space(false, &[(BASE, BASE + 9)], &[(BASE, BASE + 4)]);
        assert_eq!(s.usage().capacity, 5);
        assert_eq!(s.lowest_free(), Some(BASE + 5));
        assert!(!s.usable(BASE + 1));
        // A holder kept in the overlap counts as assigned but not against capacity.
        s.take(BASE + 1);
        assert_eq!(
            s.usage(),
            Usage {
                capacity: 5,
                assigned: 1,
                available: 5
            }
        );
    }

    #[test]
    fn ipv6_never_avoids() {
        let s = FamilySpace::new(
            Family::V6,
            true,
            [(0x2001_0db8 << 96, (0x2001_0db8 << 96) + 0xff)]
                .into_iter()
                .collect(),
            &IntervalSet::new(),
        );
        assert_eq!(s.usage().capacity, 256);
        assert_eq!(s.lowest_free(), Some(0x2001_0db8 << 96));
    }
}
