//! Pools as the allocator sees them, and the rules deciding which Services may use a pool and in
//! which order pools are tried.

use std::cmp::Ordering;

use crds::address::{AddressRange, Family};

use crate::selector::LabelSelector;
use crate::service::ServiceRequest;

/// An `IPAddressPool` with its addresses already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    /// May overlap each other and mix families; the pool is their union.
    pub ranges: Vec<AddressRange>,
    /// When false, only Services naming the pool or requesting one of its addresses use it.
    pub auto_assign: bool,
    /// Never hand out IPv4 addresses ending in `.0` or `.255`.
    pub avoid_buggy_ips: bool,
    /// Which Services may use the pool; `None`: every Service.
    pub allocation: Option<ServiceAllocation>,
}

/// `spec.serviceAllocation`: a Service may use the pool only when it passes every non-empty list
/// (its namespace is listed, its namespace matches one of the namespace selectors, it matches one
/// of the Service selectors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAllocation {
    /// Lower first; pools with a priority come before pools without one.
    pub priority: Option<i32>,
    pub namespaces: Vec<String>,
    pub namespace_selectors: Vec<LabelSelector>,
    pub service_selectors: Vec<LabelSelector>,
}

impl Pool {
    /// An auto-assigned pool without `avoidBuggyIPs` or `serviceAllocation`.
    pub fn new(name: &str, ranges: Vec<AddressRange>) -> Pool {
        Pool {
            name: name.to_string(),
            ranges,
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        }
    }

    /// Whether the pool's `serviceAllocation` lets the Service use it. Says nothing about
    /// `autoAssign`, which only decides whether the pool is picked without being asked for.
    pub fn admits(&self, service: &ServiceRequest) -> bool {
        self.allocation
            .as_ref()
            .is_none_or(|allocation| allocation.admits(service))
    }

    /// Whether the pool skips `value` of `family` because of `avoidBuggyIPs`.
    pub fn avoids(&self, family: Family, value: u128) -> bool {
        self.avoid_buggy_ips && family == Family::V4 && is_buggy(value)
    }

    /// Order among the auto-assigned pools a Service matches: pools with `serviceAllocation` by
    /// priority (those without a number after those with one), then pools without
    /// `serviceAllocation`; ties by name, so the order never depends on map order.
    pub fn auto_order(&self, other: &Pool) -> Ordering {
        let rank = |pool: &Pool| match &pool.allocation {
            Some(ServiceAllocation {
                priority: Some(p), ..
            }) => (0, *p),
            Some(_) => (1, 0),
            None => (2, 0),
        };
        rank(self)
            .cmp(&rank(other))
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl ServiceAllocation {
    pub fn admits(&self, service: &ServiceRequest) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(&service.key.namespace))
            && (self.namespace_selectors.is_empty()
                || self
                    .namespace_selectors
                    .iter()
                    .any(|s| s.matches(&service.namespace_labels)))
            && (self.service_selectors.is_empty()
                || self
                    .service_selectors
                    .iter()
                    .any(|s| s.matches(&service.labels)))
    }
}

/// IPv4 addresses some old firmware mistakes for network or broadcast addresses.
pub fn is_buggy(value: u128) -> bool {
    matches!(value & 0xff, 0 | 0xff)
}

/// How many values in `first..=last` end in `.0` or `.255`, computed, not counted.
pub fn buggy_count(first: u128, last: u128) -> u128 {
    // Values `v <= x` with `v % 256 == residue`.
    let upto = |x: u128, residue: u128| {
        if x < residue {
            0
        } else {
            (x - residue) / 256 + 1
        }
    };
    let below = |residue| first.checked_sub(1).map_or(0, |x| upto(x, residue));
    [0u128, 255]
        .into_iter()
        .map(|residue| upto(last, residue) - below(residue))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;
    use crate::service::{FamilyPolicy, ServiceKey};

    #[test]
    fn buggy_count_matches_counting() {
        for (first, last) in [(0, 0), (0, 255), (1, 254), (255, 256), (250, 1030), (3, 3)] {
            let counted = (first..=last).filter(|&v| is_buggy(v)).count() as u128;
            assert_eq!(buggy_count(first, last), counted, "{first}..={last}");
        }
        // A /8 without enumerating it: 65536 blocks of 256, two buggy addresses each.
        assert_eq!(buggy_count(10 << 24, (11 << 24) - 1), 2 * 65536);
    }

    fn request(namespace: &str, labels: &[(&str, &str)]) -> ServiceRequest {
        ServiceRequest::new(
            ServiceKey::new(namespace, "svc"),
            FamilyPolicy::SingleStack(Family::V4),
        )
        .with_labels(labels.iter().copied())
        .with_namespace_labels([("team", namespace)])
    }

    #[test]
    fn service_allocation_requires_every_nonempty_list() {
        let only = |allocation: ServiceAllocation| Pool {
            allocation: Some(allocation),
            ..Pool::new("p", Vec::new())
        };
        let web_in_a = request("a", &[("app", "web")]);
        let db_in_b = request("b", &[("app", "db")]);
        let cases = [
            (
                "no serviceAllocation",
                Pool::new("p", Vec::new()),
                true,
                true,
            ),
            (
                "empty serviceAllocation",
                only(ServiceAllocation::default()),
                true,
                true,
            ),
            (
                "namespaces",
                only(ServiceAllocation {
                    namespaces: vec!["a".into()],
                    ..Default::default()
                }),
                true,
                false,
            ),
            (
                "namespace selector",
                only(ServiceAllocation {
                    namespace_selectors: vec![LabelSelector::labels([("team", "b")])],
                    ..Default::default()
                }),
                false,
                true,
            ),
            (
                "any of the service selectors",
                only(ServiceAllocation {
                    service_selectors: vec![
                        LabelSelector::labels([("app", "db")]),
                        LabelSelector::labels([("app", "cache")]),
                    ],
                    ..Default::default()
                }),
                false,
                true,
            ),
            (
                "all lists at once",
                only(ServiceAllocation {
                    namespaces: vec!["a".into(), "b".into()],
                    namespace_selectors: vec![LabelSelector::labels([("team", "a")])],
                    service_selectors: vec![LabelSelector::labels([("app", "db")])],
                    ..Default::default()
                }),
                false,
                false,
            ),
        ];
        for (name, pool, web_expected, db_expected) in cases {
            assert_eq!(pool.admits(&web_in_a), web_expected, "{name}: web in a");
            assert_eq!(pool.admits(&db_in_b), db_expected, "{name}: db in b");
        }
    }

    #[test]
    fn auto_order_by_priority_then_without_then_name() {
        let with = |name: &str, priority: Option<i32>| Pool {
            allocation: Some(ServiceAllocation {
                priority,
                ..Default::default()
            }),
            ..Pool::new(name, Vec::new())
        };
        let mut pools = [
            Pool::new("a-plain", Vec::new()),
            with("z-unranked", None),
            with("b-ten", Some(10)),
            with("c-zero", Some(0)),
            with("a-ten", Some(10)),
            with("a-unranked", None),
        ];
        pools.sort_by(Pool::auto_order);
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "c-zero",
                "a-ten",
                "b-ten",
                "a-unranked",
                "z-unranked",
                "a-plain"
            ]
        );
    }

    #[test]
    fn only_ipv4_addresses_are_avoided() {
        let pool = Pool {
            avoid_buggy_ips: true,
            ..Pool::new("p", Vec::new())
        };
        assert!(pool.avoids(Family::V4, 0xc633_6400));
        assert!(pool.avoids(Family::V4, 0xc633_64ff));
        assert!(!pool.avoids(Family::V4, 0xc633_6401));
        assert!(!pool.avoids(Family::V6, 0x2001_0db8 << 96));
        assert!(!Pool::new("p", Vec::new()).avoids(Family::V4, 0xc633_6400));
    }
}
