//! foca's timer events, held until due. foca must get every event it scheduled, in deadline
//! order (an indirect probe before the next probe round), even while the socket is quiet.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use foca::Timer;
use tokio::time::Instant;

use super::identity::MemberId;

#[derive(Default)]
pub(crate) struct TimerQueue {
    /// Earliest deadline first; events due at the same instant in foca's own order.
    queue: BinaryHeap<Reverse<(Instant, Timer<MemberId>)>>,
}

impl TimerQueue {
    pub(crate) fn schedule(&mut self, now: Instant, after: Duration, event: Timer<MemberId>) {
        self.queue.push(Reverse((now + after, event)));
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((deadline, _))| *deadline)
    }

    /// The next event due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer<MemberId>> {
        if self.next_deadline()? <= now {
            self.queue.pop().map(|Reverse((_, event))| event)
        } else {
            None
        }
    }

    /// Forgets every event: they belong to a foca instance (or identity) that is gone.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_events_come_out_in_deadline_order() {
        let t0 = Instant::now();
        let mut timers = TimerQueue::default();
        let ms = Duration::from_millis;
        timers.schedule(t0, ms(100), Timer::ProbeRandomMember(1));
        timers.schedule(t0, ms(40), Timer::PeriodicGossip(1));
        timers.schedule(t0, ms(300), Timer::PeriodicAnnounce(1));
        assert_eq!(timers.next_deadline(), Some(t0 + ms(40)));
        assert_eq!(timers.pop_due(t0 + ms(39)), None);
        let due = t0 + ms(100);
        assert_eq!(timers.pop_due(due), Some(Timer::PeriodicGossip(1)));
        assert_eq!(timers.pop_due(due), Some(Timer::ProbeRandomMember(1)));
        assert_eq!(timers.pop_due(due), None);
        timers.clear();
        assert_eq!(timers.next_deadline(), None);
    }
}
