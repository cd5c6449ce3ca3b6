//! The pools and Services both benchmarks use.
#![allow(dead_code)] // Each benchmark uses a different part.

use allocator::{Allocator, FamilyPolicy, Pool, Protocol, ServiceKey, ServiceRequest};
use model::address::{Family, parse_block};

/// The benchmarking prefix (RFC 2544), 131072 addresses, with `avoidBuggyIPs` so that the skip
/// of `.0`/`.255` is measured too: 130048 usable.
pub const V4_POOL: &str = "198.18.0.0/15";
/// A documentation /64: 2^64 addresses, one run like any other pool.
pub const V6_POOL: &str = "2001:db8::/64";

pub fn allocator_with(family: Family) -> Allocator {
    let pool = match family {
        Family::V4 => Pool {
            avoid_buggy_ips: true,
            ..Pool::new("bench-v4", vec![parse_block(V4_POOL).unwrap()])
        },
        Family::V6 => Pool::new("bench-v6", vec![parse_block(V6_POOL).unwrap()]),
    };
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![pool]).unwrap();
    allocator
}

/// `count` single-stack Services spread over 50 namespaces, as a controller would build them.
pub fn services(count: usize, family: Family) -> Vec<ServiceRequest> {
    (0..count)
        .map(|i| {
            ServiceRequest::new(
                ServiceKey::new(
                    format!("ns-{}", i % 50),
                    format!("svc-{i}"),
                    format!("uid-{i}"),
                ),
                FamilyPolicy::SingleStack(family),
            )
            .with_labels([("app", "bench")])
        })
        .collect()
}

/// Services in groups of four sharing one key, each with its own port.
pub fn sharing_services(count: usize, family: Family) -> Vec<ServiceRequest> {
    services(count, family)
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let key = format!("group-{}", i / 4);
            let port = 8000 + (i % 4) as u16;
            request.sharing(&key, None, &[(Protocol::Tcp, port)])
        })
        .collect()
}

pub fn allocate_all(allocator: &mut Allocator, requests: &[ServiceRequest]) {
    for request in requests {
        allocator
            .allocate(request)
            .expect("the pool is large enough");
    }
}

/// A fixed permutation of `0..count` (a multiplicative step coprime with `count`), so that
/// churn hits the pool all over without a random number generator.
pub fn scattered(count: usize) -> impl Iterator<Item = usize> + Clone {
    let step = (1..)
        .map(|k| count / 2 + k)
        .find(|s| gcd(*s, count) == 1)
        .unwrap();
    (0..count).map(move |i| (i * step) % count)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
