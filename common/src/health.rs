//! Liveness: the loops a process cannot work without beat a heartbeat, and `/healthz` fails
//! when one has not beaten for longer than it may. A stuck loop then fails the liveness probe
//! and the kubelet restarts the process, instead of a node that looks healthy and does
//! nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The heartbeats of one process.
#[derive(Clone, Debug)]
pub struct Liveness {
    started: Instant,
    beats: Arc<Mutex<Vec<Heartbeat>>>,
}

/// One loop's heartbeat; clones beat the same heart.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    name: &'static str,
    max_age: Duration,
    started: Instant,
    /// Milliseconds from `started` to the last beat.
    last: Arc<AtomicU64>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            beats: Arc::default(),
        }
    }
}

impl Liveness {
    /// A heartbeat that must beat at least every `max_age`; it counts as beaten now.
    pub fn register(&self, name: &'static str, max_age: Duration) -> Heartbeat {
        let beat = Heartbeat {
            name,
            max_age,
            started: self.started,
            last: Arc::default(),
        };
        beat.beat();
        self.beats.lock().expect("not poisoned").push(beat.clone());
        beat
    }

    /// The loops that have not beaten in time, with how long ago they last did.
    pub fn stale(&self) -> Vec<(&'static str, Duration)> {
        self.beats
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|b| {
                let age = b.age();
                (age > b.max_age).then_some((b.name, age))
            })
            .collect()
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long ago it last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Makes any panic end the process (after the usual message), as `panic = "abort"` would: a
/// panicking task must not leave a half-working process behind, answering ARP while its
/// gossip is dead, or looking healthy while its announcer is gone.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heart_that_stops_is_stale_and_one_that_beats_is_not() {
        let liveness = Liveness::default();
        let steady = liveness.register("steady", Duration::from_millis(40));
        let stuck = liveness.register("stuck", Duration::from_millis(40));
        assert!(liveness.stale().is_empty());
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(10));
            steady.beat();
        }
        let stale = liveness.stale();
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0].0, "stuck");
        assert!(stale[0].1 >= Duration::from_millis(40));
        assert!(steady.age() < Duration::from_millis(40));
        assert!(stuck.age() >= Duration::from_millis(40));
    }
}
