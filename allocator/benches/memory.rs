//! Heap bytes the allocator holds for 10k and 100k Services, counted by a wrapper around the
//! system allocator (requested bytes, without malloc's own overhead). The requests themselves
//! are built before counting starts, so only the allocator's state is measured.
//!
//! Run with `cargo bench -p allocator --bench memory`.

mod support;

use std::alloc::System;

use allocator::{Allocator, ServiceRequest};
use model::address::Family;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use support::*;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed while `build` ran, and what it built.
fn held_by<T>(build: impl FnOnce() -> T) -> (T, isize) {
    let region = Region::new(GLOBAL);
    let built = build();
    let change = region.change();
    let net = change.bytes_allocated as isize - change.bytes_deallocated as isize
        + change.bytes_reallocated;
    (built, net)
}

fn report(scenario: &str, count: usize, bytes: isize) {
    println!(
        "{scenario:<34} {count:>7} Services  {:>8.2} MiB  {:>5} bytes/Service",
        bytes as f64 / (1024.0 * 1024.0),
        bytes / count as isize
    );
}

fn filled(family: Family, requests: &[ServiceRequest]) -> Allocator {
    let mut allocator = allocator_with(family);
    allocate_all(&mut allocator, requests);
    allocator
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    println!("heap held by the allocator (bytes requested from the system allocator)");
    for family in [Family::V4, Family::V6] {
        for count in [10_000, 100_000] {
            let requests = services(count, family);
            let (allocator, bytes) = held_by(|| filled(family, &requests));
            report(&format!("{family} single-stack"), count, bytes);
            // Releasing every third Service leaves a free run per released address.
            let (_, freed) = held_by(|| {
                let mut allocator = allocator;
                for i in (0..count).step_by(3) {
                    allocator.release(&requests[i].key);
                }
                allocator
            });
            let remaining = count - count.div_ceil(3);
            report(
                &format!("{family} after releasing every third"),
                remaining,
                bytes + freed,
            );
        }
    }
    for count in [10_000, 100_000] {
        let requests = sharing_services(count, Family::V4);
        let (_allocator, bytes) = held_by(|| filled(Family::V4, &requests));
        report("IPv4 shared by 4 (allow-shared-ip)", count, bytes);
    }
}
