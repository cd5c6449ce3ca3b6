//! Short constructors shared by the integration tests.
#![allow(dead_code)] // Each test crate uses a different part.

use std::net::IpAddr;

use allocator::{
    Allocator, Assignment, FamilyPolicy, Pool, ServiceAllocation, ServiceKey, ServiceRequest,
};
use model::address::{Family, parse_block};

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A pool of the given CIDRs, ranges or addresses.
pub fn pool(name: &str, blocks: &[&str]) -> Pool {
    Pool::new(
        name,
        blocks
            .iter()
            .map(|block| parse_block(block).unwrap())
            .collect(),
    )
}

pub fn manual(pool: Pool) -> Pool {
    Pool {
        auto_assign: false,
        ..pool
    }
}

pub fn avoiding_buggy(pool: Pool) -> Pool {
    Pool {
        avoid_buggy_ips: true,
        ..pool
    }
}

pub fn allocated_to(pool: Pool, allocation: ServiceAllocation) -> Pool {
    Pool {
        allocation: Some(allocation),
        ..pool
    }
}

pub fn priority(priority: i32) -> ServiceAllocation {
    ServiceAllocation {
        priority: Some(priority),
        ..Default::default()
    }
}

pub fn with_pools(pools: Vec<Pool>) -> Allocator {
    let mut allocator = Allocator::new();
    allocator.set_pools(pools).unwrap();
    allocator
}

/// `ns/name` as a key.
pub fn key(name: &str) -> ServiceKey {
    let (namespace, name) = name.split_once('/').unwrap_or(("default", name));
    ServiceKey::new(namespace, name, "uid")
}

pub fn service(name: &str, families: FamilyPolicy) -> ServiceRequest {
    ServiceRequest::new(key(name), families)
}

pub fn v4(name: &str) -> ServiceRequest {
    service(name, FamilyPolicy::SingleStack(Family::V4))
}

pub fn v6(name: &str) -> ServiceRequest {
    service(name, FamilyPolicy::SingleStack(Family::V6))
}

pub fn require_dual(name: &str) -> ServiceRequest {
    service(name, FamilyPolicy::RequireDualStack(Family::V4))
}

pub fn prefer_dual(name: &str) -> ServiceRequest {
    service(name, FamilyPolicy::PreferDualStack(Family::V4))
}

/// The addresses as text, for short assertions.
pub fn ips(assignment: &Assignment) -> Vec<String> {
    assignment
        .addresses
        .iter()
        .map(|a| a.ip.to_string())
        .collect()
}

/// The address and its pool as `ip@pool` (`ip@-` for an orphan).
pub fn placed(assignment: &Assignment) -> Vec<String> {
    assignment
        .addresses
        .iter()
        .map(|a| format!("{}@{}", a.ip, a.pool.as_deref().unwrap_or("-")))
        .collect()
}

/// Allocates and returns the addresses as text; panics on error.
pub fn take(allocator: &mut Allocator, request: &ServiceRequest) -> Vec<String> {
    match allocator.allocate(request) {
        Ok(assignment) => ips(&assignment),
        Err(error) => panic!("{}: {error}", request.key),
    }
}
