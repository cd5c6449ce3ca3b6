//! Pools: their addresses parsed entry by entry, the rules deciding which Services may use a
//! pool and in which order pools are tried, and which pool an address belongs to.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::net::IpAddr;

use crate::address::{AddressError, AddressRange, Family, parse_block};
use crate::selector::{LabelSelector, Labels, SelectorError};
use crate::service::ServiceRequest;

/// An `IPAddressPool` as every decision reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub labels: Labels,
    /// The entries that parsed. May overlap each other and mix families; the pool is their
    /// union.
    pub ranges: Vec<AddressRange>,
    /// The entries that did not, with why. They are left out; the rest of the pool works.
    pub invalid: Vec<InvalidEntry>,
    /// `serviceAllocation` selectors that cannot be read; they match no Service.
    pub invalid_selectors: Vec<SelectorError>,
    /// Being deleted: nothing new is allocated from it, but Services keep what they hold and
    /// speakers go on announcing it.
    pub deleting: bool,
    /// When false, only Services naming the pool or requesting one of its addresses use it.
    pub auto_assign: bool,
    /// Never hand out IPv4 addresses ending in `.0` or `.255`.
    pub avoid_buggy_ips: bool,
    /// Which Services may use the pool; `None`: every Service.
    pub allocation: Option<ServiceAllocation>,
    /// A label or annotation key of MetalLB's (`metallb.io/…`) the pool carries: it was
    /// moved from MetalLB, and its owner should hear once what reads differently here.
    pub from_metallb: Option<String>,
}

/// The key prefix of MetalLB's labels and annotations.
pub const METALLB_PREFIX: &str = "metallb.io/";

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
            labels: Labels::new(),
            ranges,
            invalid: Vec::new(),
            invalid_selectors: Vec::new(),
            deleting: false,
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
            from_metallb: None,
        }
    }

    /// For a pool moved from MetalLB, what ferrolb reads differently in it (one Event's note);
    /// `None` for other pools.
    pub fn metallb_differences(&self) -> Option<String> {
        let key = self.from_metallb.as_ref()?;
        let priority = self.allocation.as_ref().and_then(|a| a.priority);
        let consequence = match priority {
            Some(0) => "this pool sets priority 0, so ferrolb tries it before every pool with a higher number; MetalLB tried it after them. Give it its number in order, or drop the field".to_string(),
            Some(p) => format!("this pool's priority {p} keeps its place, as pools without a priority come after it in both"),
            None => "this pool sets no priority, which reads the same in both".to_string(),
        };
        Some(format!(
            "The pool carries MetalLB's {key}: ferrolb reads serviceAllocation.priority 0 as the highest priority, MetalLB as no priority; {consequence}"
        ))
    }

    /// Whether the pool's `serviceAllocation` lets the Service use it. Says nothing about
    /// `autoAssign`, which only decides whether the pool is picked without being asked for.
    /// A pool with a `serviceAllocation` selector that cannot be read admits no Service: the
    /// typo narrows who may use it, never widens it.
    pub fn admits(&self, service: &ServiceRequest) -> bool {
        self.invalid_selectors.is_empty()
            && self
                .allocation
                .as_ref()
                .is_none_or(|allocation| allocation.admits(service))
    }

    /// A pool of `entries` as written in `spec.addresses`, each parsed on its own.
    pub fn parse<'a>(name: &str, entries: impl IntoIterator<Item = &'a str>) -> Pool {
        let (ranges, invalid) = parse_entries(entries);
        Pool {
            invalid,
            ..Pool::new(name, ranges)
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// What is wrong with the pool, one sentence per problem, for its `Ready` condition and
    /// Events; empty when nothing is.
    pub fn problems(&self) -> Vec<String> {
        let entries = self
            .invalid
            .iter()
            .map(|bad| format!("entry {:?} is ignored: {}", bad.entry, bad.error));
        let selectors = self
            .invalid_selectors
            .iter()
            .map(|e| format!("serviceAllocation: {e}; it matches no Service"));
        entries.chain(selectors).collect()
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

/// An entry of `spec.addresses` that is left out of its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEntry {
    pub entry: String,
    pub error: AddressError,
}

/// Parses each entry on its own: one bad entry costs only itself.
pub fn parse_entries<'a>(
    entries: impl IntoIterator<Item = &'a str>,
) -> (Vec<AddressRange>, Vec<InvalidEntry>) {
    let mut ranges = Vec::new();
    let mut invalid = Vec::new();
    for entry in entries {
        match parse_block(entry) {
            Ok(range) => ranges.push(range),
            Err(error) => invalid.push(InvalidEntry {
                entry: entry.to_string(),
                error,
            }),
        }
    }
    (ranges, invalid)
}

/// The pool an address belongs to, the same answer in the controller and every speaker: the
/// pool the controller recorded for the Service (`ip-allocated-from-pool`) when it contains the
/// address, else the first pool by name that contains it (the allocator's own rule for an
/// address two pools share).
pub fn home_pool<'a, P: Borrow<Pool> + 'a>(
    pools: impl IntoIterator<Item = &'a P> + Clone,
    ip: IpAddr,
    recorded: Option<&str>,
) -> Option<&'a P> {
    let pool = |p: &'a P| -> &'a Pool { p.borrow() };
    recorded
        .and_then(|name| {
            pools
                .clone()
                .into_iter()
                .find(|&p| pool(p).name == name && pool(p).contains(ip))
        })
        .or_else(|| {
            pools
                .into_iter()
                .filter(|&p| pool(p).contains(ip))
                .min_by(|&a, &b| pool(a).name.cmp(&pool(b).name))
        })
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
            ServiceKey::new(namespace, "svc", "uid"),
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
    fn one_bad_entry_costs_only_itself() {
        let pool = Pool::parse(
            "lan",
            [
                "198.51.100.200-198.51.100.210",
                "2001:db8::20-2001:db8::10",
                "2001:db8::5",
            ],
        );
        assert_eq!(pool.ranges.len(), 2);
        assert!(pool.contains("198.51.100.205".parse().unwrap()));
        assert!(pool.contains("2001:db8::5".parse().unwrap()));
        assert_eq!(pool.invalid.len(), 1);
        assert_eq!(pool.invalid[0].entry, "2001:db8::20-2001:db8::10");
        let problems = pool.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("\"2001:db8::20-2001:db8::10\" is ignored")
                && problems[0].contains("reversed"),
            "{problems:?}"
        );
        assert!(Pool::parse("ok", ["198.51.100.1"]).problems().is_empty());
    }

    #[test]
    fn home_pool_is_the_recorded_one_else_the_first_by_name() {
        let pools = [
            Pool::parse("zeta", ["198.51.100.0/24"]),
            Pool::parse("alpha", ["198.51.100.128/25"]),
            Pool::parse("other", ["203.0.113.0/24"]),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let name = |p: Option<&Pool>| p.map(|p| p.name.clone());
        // Shared address: the recorded pool wins, else the first name, whatever the list order.
        assert_eq!(
            name(home_pool(&pools, ip("198.51.100.200"), Some("zeta"))),
            Some("zeta".into())
        );
        assert_eq!(
            name(home_pool(&pools, ip("198.51.100.200"), None)),
            Some("alpha".into())
        );
        // A recorded pool that does not contain the address (edited since) does not count.
        assert_eq!(
            name(home_pool(&pools, ip("198.51.100.200"), Some("other"))),
            Some("alpha".into())
        );
        assert_eq!(
            name(home_pool(&pools, ip("198.51.100.1"), Some("alpha"))),
            Some("zeta".into())
        );
        assert_eq!(name(home_pool(&pools, ip("192.0.2.1"), None)), None);
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

    #[test]
    fn a_pool_from_metallb_hears_what_reads_differently() {
        let mut pool = Pool::new("lan", vec![]);
        assert_eq!(pool.metallb_differences(), None);
        pool.from_metallb = Some("metallb.io/address-pool".into());
        let plain = pool.metallb_differences().unwrap();
        assert!(
            plain.contains("MetalLB's metallb.io/address-pool"),
            "{plain}"
        );
        assert!(plain.contains("sets no priority"), "{plain}");
        pool.allocation = Some(ServiceAllocation {
            priority: Some(0),
            ..ServiceAllocation::default()
        });
        let zero = pool.metallb_differences().unwrap();
        assert!(
            zero.contains("before every pool with a higher number"),
            "{zero}"
        );
        pool.allocation = Some(ServiceAllocation {
            priority: Some(5),
            ..ServiceAllocation::default()
        });
        assert!(
            pool.metallb_differences()
                .unwrap()
                .contains("priority 5 keeps its place")
        );
    }
}
