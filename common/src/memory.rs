//! Freed heap handed back to the system.
//!
//! glibc's malloc keeps what a process frees for its next allocations, and gives pages back
//! only from the top of its main heap. A speaker's first state (a list or stream of every
//! Service of the cluster, decoded from JSON) leaves megabytes freed in the middle of its
//! heaps, which would stay resident for the life of the process. [`keep_trimmed`] returns the
//! free pages of every arena to the system now and then ([`heap_trim::trim`]).

use std::time::{Duration, Instant};

/// Often enough that a burst's garbage does not stay resident for long; a trim costs a walk
/// of the free lists.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Below this, a trim is not worth a log line.
const WORTH_TELLING_KIB: u64 = 1024;

/// Trims the heap every minute, for the life of the process.
pub fn keep_trimmed() {
    tokio::spawn(trim_every(TRIM_EVERY));
}

/// Trims the heap every `period`, forever; logs each trim that gave back a MiB or more.
async fn trim_every(period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let before = heap_trim::anonymous_resident_kib();
        let started = Instant::now();
        heap_trim::trim();
        let took = started.elapsed();
        let after = heap_trim::anonymous_resident_kib();
        let returned = before.zip(after).map(|(b, a)| b.saturating_sub(a));
        if returned.is_some_and(|kib| kib >= WORTH_TELLING_KIB) {
            tracing::info!(
                returned_kib = returned,
                anonymous_resident_kib = after,
                ?took,
                "returned freed heap to the system"
            );
        } else {
            tracing::debug!(returned_kib = returned, ?took, "heap trimmed");
        }
    }
}
