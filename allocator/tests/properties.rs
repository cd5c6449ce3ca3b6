//! Property tests: random pools (small ranges of both families, so Services collide), random
//! Services, releases, pool changes and restarts, checked after every step against models that
//! enumerate the few addresses involved.
//!
//! Invariants:
//! - no address is held by two Services that may not share it;
//! - an address newly given to a Service lies in a pool the Service may use, outside every
//!   overlap and avoided address, and is the lowest free one of the first pool that has one
//!   (checked against an enumerating model for Services without a sharing key);
//! - an address a Service keeps never contradicts what it asks for (family, requested address,
//!   named pool) — it may only have outlived its pool (an orphan) or the pool's rules;
//! - usage counts, pool tags and orphans agree with enumeration;
//! - a fresh allocator restored from the current assignments holds exactly the same addresses;
//! - the same operations give the same results.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use allocator::{
    Allocator, Assignment, FamilyPolicy, LabelSelector, Pool, Protocol, ServiceAllocation,
    ServiceKey, ServiceRequest,
};
use model::address::{AddressRange, Family, ip_value};
use proptest::prelude::*;

/// Addresses live in 24 values per family; the IPv4 ones cross a /24 boundary so that
/// `avoidBuggyIPs` matters (198.51.100.246 - 198.51.101.13).
const SPAN: u128 = 24;
const V4_BASE: u128 = 0xc633_64f6;
const V6_BASE: u128 = 0x2001_0db8 << 96;
const POOL_NAMES: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];
const SERVICES: usize = 7;

fn addr(family: Family, offset: u128) -> IpAddr {
    match family {
        Family::V4 => family.addr(V4_BASE + offset),
        Family::V6 => family.addr(V6_BASE + offset),
    }
}

fn universe(family: Family) -> impl Iterator<Item = IpAddr> {
    (0..SPAN).map(move |offset| addr(family, offset))
}

/// Fixed per Service, so that only pool changes can make a pool stop matching it.
fn identity(index: usize) -> (ServiceKey, &'static str, &'static str) {
    (
        ServiceKey::new(
            ["a", "b"][index % 2],
            format!("s{index}"),
            format!("uid{index}"),
        ),
        ["a", "b"][index % 2],
        ["x", "y", "z"][index % 3],
    )
}

#[derive(Debug, Clone)]
enum Op {
    SetPools(Vec<Pool>),
    Allocate(Box<ServiceRequest>),
    Release(usize),
    Restart,
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::V4), Just(Family::V6)]
}

/// A range mostly in the pool's own sixth of the values, sometimes reaching into the next pool's
/// so that overlaps happen without being the rule.
fn range(slot: usize, family: Family) -> impl Strategy<Value = AddressRange> {
    (prop_oneof![3 => 0..3u128, 1 => 3..8u128], 1..5u128).prop_map(move |(jitter, len)| {
        let start = (slot as u128 * 6 + jitter).min(SPAN - 1);
        let last = (start + len - 1).min(SPAN - 1);
        AddressRange::new(addr(family, start), addr(family, last)).unwrap()
    })
}

fn allocation() -> impl Strategy<Value = Option<ServiceAllocation>> {
    proptest::option::weighted(
        0.3,
        (
            proptest::option::of(0..3i32),
            proptest::sample::subsequence(vec!["a", "b"], 0..=1),
            proptest::option::of(prop_oneof![Just("x"), Just("y"), Just("z")]),
            proptest::option::of(Just("a")),
        )
            .prop_map(|(priority, namespaces, app, team)| ServiceAllocation {
                priority,
                namespaces: namespaces.into_iter().map(String::from).collect(),
                namespace_selectors: team
                    .map(|team| vec![LabelSelector::labels([("team", team)])])
                    .unwrap_or_default(),
                service_selectors: app
                    .map(|app| vec![LabelSelector::labels([("app", app)])])
                    .unwrap_or_default(),
            }),
    )
}

/// One or two ranges, usually of both families.
fn ranges(slot: usize) -> impl Strategy<Value = Vec<AddressRange>> {
    (
        range(slot, Family::V4),
        range(slot, Family::V6),
        range(slot, Family::V4),
        0..5,
    )
        .prop_map(|(v4, v6, more_v4, shape)| match shape {
            0 => vec![v4],
            1 => vec![v6],
            2 => vec![v4, more_v4],
            _ => vec![v4, v6],
        })
}

fn pools() -> impl Strategy<Value = Vec<Pool>> {
    let pool = |slot| {
        proptest::option::weighted(
            0.8,
            (
                ranges(slot),
                proptest::bool::weighted(0.8),
                any::<bool>(),
                allocation(),
            ),
        )
    };
    (pool(0), pool(1), pool(2), pool(3)).prop_map(|(a, b, c, d)| {
        let slots = [a, b, c, d];
        slots
            .into_iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                slot.map(|(ranges, auto_assign, avoid_buggy_ips, allocation)| Pool {
                    auto_assign,
                    avoid_buggy_ips,
                    allocation,
                    ..Pool::new(POOL_NAMES[i], ranges)
                })
            })
            .collect()
    })
}

fn policy() -> impl Strategy<Value = FamilyPolicy> {
    (family(), 0..6).prop_map(|(family, kind)| match kind {
        0..=2 => FamilyPolicy::SingleStack(family),
        3 | 4 => FamilyPolicy::PreferDualStack(family),
        _ => FamilyPolicy::RequireDualStack(family),
    })
}

/// An offset near the start of a pool's sixth, where addresses are handed out first, so that
/// requested addresses are often held already.
fn busy_offset() -> impl Strategy<Value = u128> {
    (0..4u128, 0..4u128).prop_map(|(slot, step)| slot * 6 + step)
}

fn request() -> impl Strategy<Value = ServiceRequest> {
    (
        0..SERVICES,
        policy(),
        (0..6, busy_offset(), busy_offset(), family()),
        proptest::bool::weighted(0.25),
        proptest::option::weighted(0.2, prop_oneof![8 => 0..4usize, 1 => Just(4usize)]),
        proptest::option::weighted(
            0.6,
            prop_oneof![4 => Just("k1"), 1 => Just("k2"), 1 => Just("")],
        ),
        proptest::option::weighted(0.2, prop_oneof![Just("sel1"), Just("sel2")]),
        proptest::sample::subsequence(
            vec![
                (Protocol::Tcp, 80),
                (Protocol::Tcp, 443),
                (Protocol::Udp, 53),
            ],
            0..=1,
        ),
    )
        .prop_map(
            |(index, families, requested, use_requested, pool, sharing, backend, ports)| {
                let (key, namespace, app) = identity(index);
                let mut request = ServiceRequest::new(key, families)
                    .with_labels([("app", app)])
                    .with_namespace_labels([("team", namespace)]);
                if use_requested {
                    // Mostly what the policy allows, sometimes anything (refusals matter too).
                    let (kind, a, b, any_family) = requested;
                    let first = families.first();
                    let other = if first == Family::V4 {
                        Family::V6
                    } else {
                        Family::V4
                    };
                    request.requested = match kind {
                        0..=2 => vec![addr(first, a)],
                        3 | 4 if families.is_dual_stack() => {
                            vec![addr(first, a), addr(other, b)]
                        }
                        3 | 4 => vec![addr(first, a)],
                        _ => vec![addr(any_family, a), addr(any_family, b)],
                    };
                }
                request.pool = pool.map(|p| POOL_NAMES[p].to_string());
                request.sharing_key = sharing.map(String::from);
                request.backend_key = backend.map(String::from);
                request.ports = ports;
                request
            },
        )
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    (
        pools(),
        proptest::collection::vec(
            prop_oneof![
                1 => pools().prop_map(Op::SetPools),
                8 => request().prop_map(|r| Op::Allocate(Box::new(r))),
                2 => (0..SERVICES).prop_map(Op::Release),
                1 => Just(Op::Restart),
            ],
            1..40,
        ),
    )
        .prop_map(|(first, mut rest)| {
            rest.insert(0, Op::SetPools(first));
            rest
        })
}

/// The world as the tests see it, kept beside the allocator.
struct Model {
    pools: Vec<Pool>,
    /// The last request each Service made, which the allocator holds it to.
    requests: BTreeMap<ServiceKey, ServiceRequest>,
}

impl Model {
    fn containing(&self, ip: IpAddr) -> Vec<&Pool> {
        self.pools
            .iter()
            .filter(|pool| pool.ranges.iter().any(|range| range.contains(ip)))
            .collect()
    }

    fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|pool| pool.name == name)
    }

    /// Whether `pool` could hand out `ip` to anyone: it alone contains it, and does not avoid it.
    fn usable(&self, pool: &Pool, ip: IpAddr) -> bool {
        let containing = self.containing(ip);
        containing.len() == 1
            && containing[0].name == pool.name
            && !pool.avoids(Family::of(ip), ip_value(ip))
    }

    fn lowest_free(&self, pool: &Pool, family: Family, held: &BTreeSet<IpAddr>) -> Option<IpAddr> {
        universe(family).find(|ip| self.usable(pool, *ip) && !held.contains(ip))
    }

    /// The pools a fresh pick may use, best first.
    fn candidates(&self, request: &ServiceRequest) -> Option<Vec<&Pool>> {
        if let Some(name) = &request.pool {
            let pool = self.pool(name)?;
            return pool.admits(request).then(|| vec![pool]);
        }
        let rank = |pool: &Pool| match &pool.allocation {
            Some(ServiceAllocation {
                priority: Some(p), ..
            }) => (0, *p),
            Some(_) => (1, 0),
            None => (2, 0),
        };
        let mut pools: Vec<&Pool> = self
            .pools
            .iter()
            .filter(|pool| pool.auto_assign && pool.admits(request))
            .collect();
        pools.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.name.cmp(&b.name)));
        Some(pools)
    }

    /// What a fresh pick without a sharing key or requested address gives.
    fn expected_fresh(
        &self,
        request: &ServiceRequest,
        held: &BTreeSet<IpAddr>,
    ) -> Option<Vec<IpAddr>> {
        let pools = self.candidates(request)?;
        let first = request.families.first();
        let other = match first {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        };
        let single = || {
            pools
                .iter()
                .find_map(|pool| self.lowest_free(pool, first, held))
                .map(|ip| vec![ip])
        };
        let pair = || {
            pools.iter().find_map(|pool| {
                Some(vec![
                    self.lowest_free(pool, first, held)?,
                    self.lowest_free(pool, other, held)?,
                ])
            })
        };
        match request.families {
            FamilyPolicy::SingleStack(_) => single(),
            FamilyPolicy::PreferDualStack(_) => pair().or_else(single),
            FamilyPolicy::RequireDualStack(_) => pair(),
        }
    }
}

/// Our own reading of the sharing rule, to check the allocator's.
fn may_share(a: &ServiceRequest, b: &ServiceRequest) -> bool {
    let key = |r: &ServiceRequest| r.sharing_key.clone().filter(|k| !k.is_empty());
    let ports = |r: &ServiceRequest| r.ports.iter().copied().collect::<BTreeSet<_>>();
    key(a).is_some()
        && key(a) == key(b)
        && a.backend_key == b.backend_key
        && ports(a).is_disjoint(&ports(b))
}

fn held_addresses(allocator: &Allocator) -> BTreeSet<IpAddr> {
    allocator
        .assignments()
        .flat_map(|(_, assignment)| assignment.ips())
        .collect()
}

/// Checks that hold after every operation.
fn check_state(allocator: &Allocator, model: &Model) -> Result<(), TestCaseError> {
    let mut holders: BTreeMap<IpAddr, Vec<&ServiceKey>> = BTreeMap::new();
    let mut tags: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
    for (key, assignment) in allocator.assignments() {
        prop_assert!(!assignment.is_empty());
        let families: BTreeSet<Family> =
            assignment.ips().iter().map(|ip| Family::of(*ip)).collect();
        prop_assert_eq!(families.len(), assignment.addresses.len(), "one per family");
        for address in &assignment.addresses {
            holders.entry(address.ip).or_default().push(key);
            tags.insert(address.ip, address.pool.clone());
        }
    }
    for (ip, keys) in &holders {
        prop_assert_eq!(&allocator.holders(*ip), keys);
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                prop_assert!(
                    may_share(&model.requests[*a], &model.requests[*b]),
                    "{} held by {} and {} who may not share it",
                    ip,
                    a,
                    b
                );
            }
        }
    }
    // Pool tags and orphans.
    for (ip, tag) in &tags {
        let containing: Vec<&str> = model
            .containing(*ip)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        match tag {
            Some(pool) => prop_assert!(containing.contains(&pool.as_str()), "{ip} tagged {pool}"),
            None => prop_assert!(containing.is_empty(), "{ip} orphaned but in {containing:?}"),
        }
    }
    let orphans: Vec<(IpAddr, ServiceKey)> = allocator
        .orphans()
        .into_iter()
        .map(|orphan| (orphan.ip, orphan.service))
        .collect();
    let expected_orphans: Vec<(IpAddr, ServiceKey)> = holders
        .iter()
        .filter(|(ip, _)| tags[*ip].is_none())
        .flat_map(|(ip, keys)| keys.iter().map(|key| (*ip, (*key).clone())))
        .collect();
    prop_assert_eq!(orphans, expected_orphans);
    // Usage by enumeration.
    for pool in &model.pools {
        let usage = allocator.usage(&pool.name).unwrap();
        for (family, got) in [(Family::V4, usage.ipv4), (Family::V6, usage.ipv6)] {
            let has = pool.ranges.iter().any(|r| r.family() == family);
            prop_assert_eq!(got.is_some(), has);
            let Some(got) = got else { continue };
            let usable: Vec<IpAddr> = universe(family)
                .filter(|ip| model.usable(pool, *ip))
                .collect();
            let held_usable = usable.iter().filter(|ip| holders.contains_key(ip)).count() as u128;
            let assigned = tags
                .iter()
                .filter(|(ip, tag)| {
                    Family::of(**ip) == family && tag.as_deref() == Some(&pool.name)
                })
                .count() as u128;
            prop_assert_eq!(
                got.capacity,
                usable.len() as u128,
                "capacity of {}",
                pool.name
            );
            prop_assert_eq!(got.available, usable.len() as u128 - held_usable);
            prop_assert_eq!(got.assigned, assigned, "assigned of {}", pool.name);
        }
    }
    Ok(())
}

/// Checks one allocation against the state before it.
fn check_allocation(
    before: &Allocator,
    model: &Model,
    request: &ServiceRequest,
    result: &Result<Assignment, allocator::Error>,
    after: &Allocator,
) -> Result<(), TestCaseError> {
    let previous: BTreeSet<IpAddr> = before
        .assignment(&request.key)
        .map(|a| a.ips().into_iter().collect())
        .unwrap_or_default();
    let now = after.assignment(&request.key);
    let assignment = match result {
        Err(_) => {
            // A refusal never gives anything new.
            for ip in now.map(|a| a.ips()).unwrap_or_default() {
                prop_assert!(previous.contains(&ip), "{ip} gained on error");
            }
            return Ok(());
        }
        Ok(assignment) => assignment,
    };
    prop_assert_eq!(Some(assignment), now.as_ref());
    let ips = assignment.ips();
    let families: Vec<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
    if families.len() == 2 {
        prop_assert_eq!(families[0], request.families.first(), "first family first");
    }
    match request.families {
        FamilyPolicy::SingleStack(family) => prop_assert_eq!(&families, &vec![family]),
        FamilyPolicy::RequireDualStack(first) => {
            prop_assert_eq!(families.len(), 2);
            prop_assert_eq!(families[0], first);
        }
        FamilyPolicy::PreferDualStack(_) => prop_assert!(!families.is_empty()),
    }
    if !request.requested.is_empty() {
        let asked: BTreeSet<IpAddr> = request.requested.iter().copied().collect();
        let got: BTreeSet<IpAddr> = ips.iter().copied().collect();
        prop_assert_eq!(got, asked, "exactly the requested addresses");
    }
    let named = request.pool.as_deref().and_then(|name| model.pool(name));
    for address in &assignment.addresses {
        let ip = address.ip;
        if let Some(named) = named {
            prop_assert!(
                named.ranges.iter().any(|r| r.contains(ip)),
                "{ip} outside the named pool {}",
                named.name
            );
        }
        if previous.contains(&ip) {
            continue;
        }
        // New: a pool the Service may use, outside overlaps and avoided addresses.
        let pool = model.pool(address.pool.as_deref().unwrap_or("")).unwrap();
        prop_assert!(
            model.usable(pool, ip),
            "{ip} is not usable in {}",
            pool.name
        );
        prop_assert!(
            pool.admits(request),
            "{} does not admit the Service",
            pool.name
        );
        prop_assert!(
            named.is_some_and(|n| n.name == pool.name)
                || request.requested.contains(&ip)
                || (request.pool.is_none() && pool.auto_assign),
            "{ip} from {}, which the Service may not pick",
            pool.name
        );
    }
    if previous.is_empty() {
        if let FamilyPolicy::RequireDualStack(_) = request.families
            && request.requested.is_empty()
        {
            prop_assert_eq!(&assignment.addresses[0].pool, &assignment.addresses[1].pool);
        }
        if request.requested.is_empty() && request.effective_sharing_key().is_none() {
            let expected = model.expected_fresh(request, &held_addresses(before));
            prop_assert_eq!(
                Some(ips),
                expected,
                "the lowest free address of the best pool"
            );
        }
    }
    Ok(())
}

/// Rebuilds an allocator from the current assignments, as the controller does at start-up.
fn restart(allocator: &Allocator, model: &Model) -> Result<Allocator, TestCaseError> {
    let mut fresh = Allocator::new();
    fresh.set_pools(model.pools.clone()).unwrap();
    for (key, assignment) in allocator.assignments() {
        let restored = fresh.restore(&model.requests[key], &assignment.ips());
        prop_assert!(restored.is_ok(), "restoring {key}: {restored:?}");
    }
    let before: Vec<_> = allocator.assignments().collect();
    let after: Vec<_> = fresh.assignments().collect();
    prop_assert_eq!(before.len(), after.len());
    for ((key, old), (fresh_key, new)) in before.iter().zip(&after) {
        prop_assert_eq!(key, fresh_key);
        prop_assert_eq!(old.ips(), new.ips());
        for (a, b) in old.addresses.iter().zip(&new.addresses) {
            // In an overlap the first pool by name is assumed; elsewhere the pool is the same.
            if model.containing(a.ip).len() < 2 {
                prop_assert_eq!(&a.pool, &b.pool);
            }
        }
    }
    Ok(fresh)
}

/// Runs the operations, checking everything; returns a trace of every result.
fn run(ops: &[Op]) -> Result<Vec<String>, TestCaseError> {
    let mut allocator = Allocator::new();
    let mut model = Model {
        pools: Vec::new(),
        requests: BTreeMap::new(),
    };
    let mut trace = Vec::new();
    for op in ops {
        match op {
            Op::SetPools(pools) => {
                let overlaps = allocator.set_pools(pools.clone());
                prop_assert!(overlaps.is_ok());
                model.pools = pools.clone();
                for overlap in overlaps.as_ref().unwrap() {
                    for range in &overlap.ranges {
                        for ip in [range.first_addr(), range.last_addr()] {
                            let names: Vec<&str> = model
                                .containing(ip)
                                .iter()
                                .map(|p| p.name.as_str())
                                .collect();
                            prop_assert!(names.contains(&overlap.pools[0].as_str()));
                            prop_assert!(names.contains(&overlap.pools[1].as_str()));
                        }
                    }
                }
                trace.push(format!("{overlaps:?}"));
            }
            Op::Allocate(request) => {
                let before = allocator.clone();
                let result = allocator.allocate(request);
                if matches!(result, Err(allocator::Error::SharingChangeRefused { .. })) {
                    // A refused change of sharing terms leaves the Service exactly as it was,
                    // previous terms included.
                    prop_assert!(before.assignment(&request.key).is_some());
                    prop_assert_eq!(
                        before.assignment(&request.key),
                        allocator.assignment(&request.key)
                    );
                } else {
                    model
                        .requests
                        .insert(request.key.clone(), (**request).clone());
                }
                check_allocation(&before, &model, request, &result, &allocator)?;
                trace.push(format!("{result:?}"));
            }
            Op::Release(index) => {
                let key = identity(*index).0;
                let released = allocator.release(&key);
                prop_assert!(allocator.assignment(&key).is_none());
                trace.push(format!("{released:?}"));
            }
            Op::Restart => allocator = restart(&allocator, &model)?,
        }
        check_state(&allocator, &model)?;
    }
    trace.extend(
        allocator
            .assignments()
            .map(|(key, assignment)| format!("{key}: {assignment:?}")),
    );
    Ok(trace)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_and_results_are_deterministic(ops in ops()) {
        let first = run(&ops)?;
        let second = run(&ops)?;
        prop_assert_eq!(first, second);
    }
}
