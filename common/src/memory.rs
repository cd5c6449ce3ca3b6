//! Freed heap handed back to the system.
//!
//! glibc's malloc keeps what a process frees for its next allocations, and gives pages back
//! only from the top of its main heap. A speaker's first state (a list or stream of every
//! Service of the cluster, decoded from JSON) leaves megabytes freed in the middle of its
//! heaps, which would stay resident for the life of the process. [`keep_trimmed`] returns the
//! free pages of every arena to the system now and then ([`heap_trim::trim`]).

use std::time::{Duration, Instant};

/// Often enough that a burst's garbage (a storm of condition writes, a relist) is not what an
/// operator's memory limit must fit; a trim costs a walk of the free lists (p50 0.3 ms, p90
/// 1.2 ms in a speaker at 10,000 Services, `bench/RESULTS.md`). Both binaries.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Below this, a trim is not worth a log line.
const WORTH_TELLING_KIB: u64 = 1024;

/// Large blocks (a page of a list, a table that grew) get a mapping of their own from this
/// size on, whatever was freed before: glibc's default, fixed (see
/// [`heap_trim::fix_mmap_threshold`]). Fixing it also keeps the heap's top trimmed from glibc's
/// default 128 KiB on (glibc stops raising either threshold once one is set), which is all that
/// `MALLOC_TRIM_THRESHOLD_` in a speaker's environment once did.
const MMAP_FROM_BYTES: u32 = 128 * 1024;

/// A multi-threaded runtime of `workers` threads whose threads share `arenas` malloc arenas
/// (see [`heap_trim::limit_arenas`]) and map large blocks apart; call it first in `main`,
/// before any thread starts.
pub fn runtime(workers: usize, arenas: u16) -> std::io::Result<tokio::runtime::Runtime> {
    // Off glibc there is nothing to set, and nothing to report it to yet: logging starts
    // inside the runtime.
    heap_trim::limit_arenas(arenas);
    heap_trim::fix_mmap_threshold(MMAP_FROM_BYTES);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// Trims the heap every [`TRIM_EVERY`], for the life of the process.
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
            let heap = heap_trim::usage();
            tracing::info!(
                returned_kib = returned,
                anonymous_resident_kib = after,
                heap_in_use_kib = heap.map(|heap| heap.in_use / 1024),
                heap_free_kib = heap.map(|heap| heap.free / 1024),
                ?took,
                "returned freed heap to the system"
            );
        } else {
            tracing::debug!(returned_kib = returned, ?took, "heap trimmed");
        }
    }
}
