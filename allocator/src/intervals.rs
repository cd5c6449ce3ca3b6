//! Sets of `u128` values stored as sorted, disjoint runs.
//!
//! Every address set in the allocator (a pool's ranges, the part it may allocate from, its free
//! addresses) is an [`IntervalSet`], so its cost grows with the number of runs, never with the
//! number of addresses: a `/64` is one run, like a `/30`.

use std::collections::BTreeMap;
use std::ops::Bound;

/// A set of `u128` values as inclusive runs `first..=last`, kept disjoint and non-adjacent
/// (touching runs are merged), so the representation of a set is unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntervalSet {
    /// `first -> last` of each run.
    runs: BTreeMap<u128, u128>,
}

impl IntervalSet {
    pub fn new() -> IntervalSet {
        IntervalSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The number of runs (not of values).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The runs in ascending order, as inclusive `(first, last)` pairs.
    pub fn runs(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.runs.iter().map(|(&first, &last)| (first, last))
    }

    /// The number of values, saturating at `u128::MAX`.
    pub fn len(&self) -> u128 {
        self.runs().fold(0u128, |sum, (first, last)| {
            sum.saturating_add((last - first).saturating_add(1))
        })
    }

    /// The lowest value.
    pub fn first(&self) -> Option<u128> {
        self.runs.keys().next().copied()
    }

    pub fn contains(&self, value: u128) -> bool {
        self.run_containing(value).is_some()
    }

    /// The run that holds `value`, if any.
    pub fn run_containing(&self, value: u128) -> Option<(u128, u128)> {
        let (&first, &last) = self.runs.range(..=value).next_back()?;
        (last >= value).then_some((first, last))
    }

    /// The last run that ends below `value`.
    pub fn run_before(&self, value: u128) -> Option<(u128, u128)> {
        let (&first, &last) = self.runs.range(..value).next_back()?;
        if last < value {
            return Some((first, last));
        }
        self.runs
            .range(..first)
            .next_back()
            .map(|(&first, &last)| (first, last))
    }

    /// The first run that starts above `value`.
    pub fn run_after(&self, value: u128) -> Option<(u128, u128)> {
        self.runs
            .range((Bound::Excluded(value), Bound::Unbounded))
            .next()
            .map(|(&first, &last)| (first, last))
    }

    /// Adds `first..=last`, merging with the runs it overlaps or touches.
    pub fn insert(&mut self, first: u128, last: u128) {
        debug_assert!(first <= last);
        let (mut first, mut last) = (first, last);
        if let Some((&before_first, &before_last)) = self.runs.range(..=first).next_back()
            && before_last.checked_add(1).is_none_or(|next| next >= first)
        {
            if before_last >= last {
                return;
            }
            self.runs.remove(&before_first);
            first = before_first;
        }
        // Runs starting inside or right after the new run are absorbed; they are contiguous in
        // the map, so this visits only runs that disappear plus one.
        while let Some((&next_first, &next_last)) = self
            .runs
            .range((Bound::Excluded(first), Bound::Unbounded))
            .next()
        {
            if last.checked_add(1).is_some_and(|after| next_first > after) {
                break;
            }
            self.runs.remove(&next_first);
            last = last.max(next_last);
        }
        self.runs.insert(first, last);
    }

    /// Removes `first..=last`, splitting the runs it cuts.
    pub fn remove(&mut self, first: u128, last: u128) {
        debug_assert!(first <= last);
        // Walk down from the last run that starts at or below `last`; runs are sorted and
        // disjoint, so the affected ones are contiguous and the walk stops at the first run that
        // ends below `first`.
        while let Some((&run_first, &run_last)) = self.runs.range(..=last).next_back() {
            if run_last < first {
                break;
            }
            self.runs.remove(&run_first);
            if run_last > last {
                self.runs.insert(last + 1, run_last);
            }
            if run_first < first {
                self.runs.insert(run_first, first - 1);
                break;
            }
        }
    }

    /// The values in both sets.
    pub fn intersection(&self, other: &IntervalSet) -> IntervalSet {
        let mut out = IntervalSet::new();
        let mut ours = self.runs().peekable();
        let mut theirs = other.runs().peekable();
        while let (Some(&(a_first, a_last)), Some(&(b_first, b_last))) =
            (ours.peek(), theirs.peek())
        {
            let (first, last) = (a_first.max(b_first), a_last.min(b_last));
            if first <= last {
                out.runs.insert(first, last);
            }
            if a_last < b_last {
                ours.next();
            } else {
                theirs.next();
            }
        }
        out
    }

    /// The values of `self` that are not in `other`.
    pub fn difference(&self, other: &IntervalSet) -> IntervalSet {
        let mut out = self.clone();
        for (first, last) in other.runs() {
            out.remove(first, last);
        }
        out
    }
}

impl FromIterator<(u128, u128)> for IntervalSet {
    fn from_iter<I: IntoIterator<Item = (u128, u128)>>(iter: I) -> IntervalSet {
        let mut set = IntervalSet::new();
        for (first, last) in iter {
            set.insert(first, last);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    type Runs = &'static [(u128, u128)];

    fn set(runs: &[(u128, u128)]) -> IntervalSet {
        runs.iter().copied().collect()
    }

    fn runs(set: &IntervalSet) -> Vec<(u128, u128)> {
        set.runs().collect()
    }

    #[test]
    fn insert_merges_overlapping_and_touching_runs() {
        let cases: &[(Runs, Runs)] = &[
            (&[(1, 3), (5, 7)], &[(1, 3), (5, 7)]),
            (&[(1, 3), (4, 7)], &[(1, 7)]),
            (&[(5, 7), (1, 4)], &[(1, 7)]),
            (&[(1, 10), (3, 4)], &[(1, 10)]),
            (&[(3, 4), (1, 10)], &[(1, 10)]),
            (&[(1, 2), (4, 5), (7, 8), (0, 9)], &[(0, 9)]),
            (&[(1, 2), (4, 5), (7, 8), (3, 3)], &[(1, 5), (7, 8)]),
            (
                &[(0, 0), (u128::MAX, u128::MAX)],
                &[(0, 0), (u128::MAX, u128::MAX)],
            ),
            (&[(0, u128::MAX), (5, 6)], &[(0, u128::MAX)]),
            (&[(5, 6), (0, u128::MAX)], &[(0, u128::MAX)]),
            (
                &[(u128::MAX - 1, u128::MAX), (0, u128::MAX - 2)],
                &[(0, u128::MAX)],
            ),
        ];
        for (inserted, expected) in cases {
            assert_eq!(runs(&set(inserted)), *expected, "inserting {inserted:?}");
        }
    }

    #[test]
    fn remove_splits_and_drops_runs() {
        let cases: &[(Runs, (u128, u128), Runs)] = &[
            (&[(1, 10)], (4, 6), &[(1, 3), (7, 10)]),
            (&[(1, 10)], (1, 10), &[]),
            (&[(1, 10)], (0, 1), &[(2, 10)]),
            (&[(1, 10)], (10, 20), &[(1, 9)]),
            (&[(1, 2), (4, 5), (7, 8)], (2, 7), &[(1, 1), (8, 8)]),
            (&[(1, 2), (4, 5), (7, 8)], (3, 3), &[(1, 2), (4, 5), (7, 8)]),
            (
                &[(0, u128::MAX)],
                (u128::MAX, u128::MAX),
                &[(0, u128::MAX - 1)],
            ),
            (&[(0, u128::MAX)], (0, 0), &[(1, u128::MAX)]),
        ];
        for (start, (first, last), expected) in cases {
            let mut s = set(start);
            s.remove(*first, *last);
            assert_eq!(runs(&s), *expected, "{start:?} minus {first}..={last}");
        }
    }

    #[test]
    fn a_slash_64_is_one_run() {
        let mut s = set(&[(1 << 64, (2 << 64) - 1)]);
        assert_eq!(s.len(), 1 << 64);
        s.remove((1 << 64) + 5, (1 << 64) + 5);
        assert_eq!(s.run_count(), 2);
        assert_eq!(s.len(), (1 << 64) - 1);
        assert_eq!(set(&[(0, u128::MAX)]).len(), u128::MAX);
    }

    #[test]
    fn neighbours_of_a_value() {
        let s = set(&[(1, 2), (5, 6), (9, 9)]);
        assert_eq!(s.run_containing(5), Some((5, 6)));
        assert_eq!(s.run_containing(4), None);
        assert_eq!(s.run_before(5), Some((1, 2)));
        assert_eq!(s.run_before(6), Some((1, 2)));
        assert_eq!(s.run_before(1), None);
        assert_eq!(s.run_after(5), Some((9, 9)));
        assert_eq!(s.run_after(9), None);
        assert_eq!(s.first(), Some(1));
    }

    fn model(runs: &[(u8, u8)]) -> BTreeSet<u128> {
        runs.iter()
            .flat_map(|&(a, b)| u128::from(a.min(b))..=u128::from(a.max(b)))
            .collect()
    }

    fn from_model(values: &BTreeSet<u128>) -> IntervalSet {
        values.iter().map(|&v| (v, v)).collect()
    }

    fn ordered(runs: &[(u8, u8)]) -> impl Iterator<Item = (u128, u128)> + '_ {
        runs.iter()
            .map(|&(a, b)| (u128::from(a.min(b)), u128::from(a.max(b))))
    }

    proptest! {
        /// Against a plain set of values: the representation is canonical (equal sets compare
        /// equal however they were built) and every operation agrees with the model.
        #[test]
        fn agrees_with_a_set_of_values(
            added in proptest::collection::vec((0u8..64, 0u8..64), 0..8),
            removed in proptest::collection::vec((0u8..64, 0u8..64), 0..8),
            other in proptest::collection::vec((0u8..64, 0u8..64), 0..8),
        ) {
            let mut s: IntervalSet = ordered(&added).collect();
            let mut expected = model(&added);
            for (first, last) in ordered(&removed) {
                s.remove(first, last);
                for v in first..=last {
                    expected.remove(&v);
                }
            }
            prop_assert_eq!(&s, &from_model(&expected));
            prop_assert_eq!(s.len(), expected.len() as u128);
            prop_assert_eq!(s.first(), expected.first().copied());
            for v in 0..70u128 {
                prop_assert_eq!(s.contains(v), expected.contains(&v));
            }
            let o: IntervalSet = ordered(&other).collect();
            let o_model = model(&other);
            prop_assert_eq!(
                s.intersection(&o),
                from_model(&expected.intersection(&o_model).copied().collect())
            );
            prop_assert_eq!(
                s.difference(&o),
                from_model(&expected.difference(&o_model).copied().collect())
            );
        }
    }
}
