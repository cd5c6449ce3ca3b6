//! foca's timer events, held until due. foca must get every event it scheduled, in deadline
//! order (an indirect probe before the next probe round), even while the socket is quiet.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

use foca::Timer;
use tokio::time::Instant;

use super::identity::MemberId;

#[derive(Default)]
pub(crate) struct TimerQueue {
    /// Earliest deadline first; events due at the same instant in foca's own order.
    queue: BinaryHeap<Reverse<Entry>>,
}

/// An event that came due.
#[derive(Debug, PartialEq)]
pub(crate) struct Due {
    pub(crate) event: Timer<MemberId>,
    /// How long after its deadline it was popped: a starved task wakes late.
    pub(crate) late: Duration,
    /// It was put back once already ([`TimerQueue::defer`]); it is not put back twice.
    pub(crate) deferred: bool,
    deadline: Instant,
    suspicion: Option<Suspicion>,
}

/// When a suspicion was raised and the delay foca asked for, so that a later, larger
/// multiplier can stretch it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Suspicion {
    raised_at: Instant,
    base: Duration,
}

#[derive(Debug)]
struct Entry {
    deadline: Instant,
    event: Timer<MemberId>,
    deferred: bool,
    suspicion: Option<Suspicion>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline, &self.event).cmp(&(other.deadline, &other.event))
    }
}

impl TimerQueue {
    pub(crate) fn schedule(&mut self, now: Instant, after: Duration, event: Timer<MemberId>) {
        self.push(now + after, event, false, None);
    }

    /// A suspicion foca asked to judge after `base`, judged after `base * multiplier`; a later
    /// [`TimerQueue::stretch_suspicions`] may push it further.
    pub(crate) fn schedule_suspicion(
        &mut self,
        now: Instant,
        base: Duration,
        multiplier: u32,
        event: Timer<MemberId>,
    ) {
        let suspicion = Suspicion {
            raised_at: now,
            base,
        };
        self.push(now + base * multiplier, event, false, Some(suspicion));
    }

    /// Puts a due event back until `until`, marked so that it is not deferred again.
    pub(crate) fn defer(&mut self, due: Due, until: Instant) {
        self.push(until.max(due.deadline), due.event, true, due.suspicion);
    }

    /// Every pending suspicion is judged no earlier than `base * multiplier` after it was
    /// raised: a speaker whose health got worse gives its suspects longer, never shorter.
    pub(crate) fn stretch_suspicions(&mut self, multiplier: u32) {
        let entries = std::mem::take(&mut self.queue).into_vec();
        self.queue = entries
            .into_iter()
            .map(|Reverse(mut entry)| {
                if let Some(s) = entry.suspicion {
                    entry.deadline = entry.deadline.max(s.raised_at + s.base * multiplier);
                }
                Reverse(entry)
            })
            .collect();
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(entry)| entry.deadline)
    }

    /// The next event due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Due> {
        if self.next_deadline()? > now {
            return None;
        }
        let Reverse(entry) = self.queue.pop()?;
        Some(Due {
            late: now.saturating_duration_since(entry.deadline),
            event: entry.event,
            deferred: entry.deferred,
            deadline: entry.deadline,
            suspicion: entry.suspicion,
        })
    }

    /// Forgets every event: they belong to a foca instance (or identity) that is gone.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    fn push(
        &mut self,
        deadline: Instant,
        event: Timer<MemberId>,
        deferred: bool,
        suspicion: Option<Suspicion>,
    ) {
        self.queue.push(Reverse(Entry {
            deadline,
            event,
            deferred,
            suspicion,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn suspect(member: &MemberId, token: u8) -> Timer<MemberId> {
        Timer::ChangeSuspectToDown {
            member_id: member.clone(),
            incarnation: 0,
            token,
        }
    }

    #[test]
    fn due_events_come_out_in_deadline_order() {
        let t0 = Instant::now();
        let mut timers = TimerQueue::default();
        timers.schedule(t0, 100 * MS, Timer::ProbeRandomMember(1));
        timers.schedule(t0, 40 * MS, Timer::PeriodicGossip(1));
        timers.schedule(t0, 300 * MS, Timer::PeriodicAnnounce(1));
        assert_eq!(timers.next_deadline(), Some(t0 + 40 * MS));
        assert_eq!(timers.pop_due(t0 + 39 * MS), None);
        let due = t0 + 100 * MS;
        let first = timers.pop_due(due).unwrap();
        assert_eq!(first.event, Timer::PeriodicGossip(1));
        assert_eq!(first.late, 60 * MS, "due at 40 ms, popped at 100 ms");
        let second = timers.pop_due(due).unwrap();
        assert_eq!(second.event, Timer::ProbeRandomMember(1));
        assert_eq!(second.late, Duration::ZERO);
        assert!(timers.pop_due(due).is_none());
        timers.clear();
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn a_deferred_event_comes_back_once_marked() {
        let t0 = Instant::now();
        let mut timers = TimerQueue::default();
        timers.schedule(t0, 100 * MS, Timer::ProbeRandomMember(1));
        let late = timers.pop_due(t0 + 300 * MS).unwrap();
        assert!(!late.deferred);
        timers.defer(late, t0 + 340 * MS);
        assert!(timers.pop_due(t0 + 339 * MS).is_none());
        let back = timers.pop_due(t0 + 340 * MS).unwrap();
        assert_eq!(back.event, Timer::ProbeRandomMember(1));
        assert!(back.deferred, "marked, so the driver judges it this time");
    }

    #[test]
    fn stretching_suspicions_never_shortens_one() {
        let t0 = Instant::now();
        let member = MemberId::new("n", "127.0.0.1:1".parse().unwrap());
        let suspect = |token| suspect(&member, token);
        let mut timers = TimerQueue::default();
        timers.schedule_suspicion(t0, 150 * MS, 1, suspect(1));
        timers.schedule_suspicion(t0 + 100 * MS, 150 * MS, 4, suspect(2));
        timers.schedule(t0, 200 * MS, Timer::ProbeRandomMember(1));
        timers.stretch_suspicions(3);
        // suspect(1): raised at 0, 150 × 3 = 450 ms; suspect(2) keeps its 100 + 600 ms;
        // the probe round is not a suspicion and stays at 200 ms.
        let order: Vec<(Duration, Timer<MemberId>)> =
            std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_secs(1)))
                .map(|due| (due.deadline - t0, due.event))
                .collect();
        assert_eq!(
            order,
            vec![
                (200 * MS, Timer::ProbeRandomMember(1)),
                (450 * MS, suspect(1)),
                (700 * MS, suspect(2)),
            ]
        );
    }
}
