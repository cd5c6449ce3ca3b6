//! Allocations per second: filling an IPv4 /15 and an IPv6 /64 with 10k and 100k Services, with
//! and without sharing, and one release plus one allocation in a pool holding 100k Services
//! whose free space is fragmented.
//!
//! Run with `cargo bench -p allocator --bench allocate`; criterion prints the time per batch and
//! the throughput in Services per second.

mod support;

use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use model::address::Family;
use support::*;

fn fill(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate");
    // Every iteration is a whole batch of Services; equal iteration counts per sample keep a
    // 100k batch within the measurement time.
    group.sampling_mode(SamplingMode::Flat);
    for family in [Family::V4, Family::V6] {
        for count in [10_000, 100_000] {
            group.throughput(Throughput::Elements(count as u64));
            let requests = services(count, family);
            group.bench_function(format!("{family}/{count}"), |b| {
                b.iter_batched(
                    || allocator_with(family),
                    |mut allocator| {
                        allocate_all(&mut allocator, &requests);
                        allocator
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    let count = 10_000;
    group.throughput(Throughput::Elements(count as u64));
    let requests = sharing_services(count, Family::V4);
    group.bench_function(format!("IPv4-shared-by-4/{count}"), |b| {
        b.iter_batched(
            || allocator_with(Family::V4),
            |mut allocator| {
                allocate_all(&mut allocator, &requests);
                allocator
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn");
    group.throughput(Throughput::Elements(1));
    for family in [Family::V4, Family::V6] {
        let count = 100_000;
        let requests = services(count, family);
        let mut allocator = allocator_with(family);
        allocate_all(&mut allocator, &requests);
        // Free every third address so the free set has tens of thousands of runs.
        for i in (0..count).step_by(3) {
            allocator.release(&requests[i].key);
        }
        let mut order = scattered(count).cycle();
        group.bench_function(format!("{family}/release+allocate-at-100000"), |b| {
            b.iter(|| {
                let request = &requests[order.next().unwrap()];
                allocator.release(&request.key);
                allocator.allocate(request).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Few samples: a 100k batch takes a fraction of a second, and the figures are for orders of
    // magnitude, not for asserting.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = fill, churn
}
criterion_main!(benches);
