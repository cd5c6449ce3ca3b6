//! Where a Service's address comes from: existing, requested, named pool, auto-assigned pools by
//! `serviceAllocation`, families, and the lowest free address inside a pool.

mod support;

use allocator::{
    Error, FamilyPolicy, LabelSelector, Pool, ServiceAllocation, ServiceRequest, Usage,
};
use model::address::Family;
use support::*;

/// A named request and the addresses (or the error) it must get.
type Case = (
    &'static str,
    ServiceRequest,
    Result<Vec<&'static str>, Error>,
);

#[test]
fn lowest_free_address_first_and_released_ones_come_back() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/30"])]);
    for (name, expected) in [
        ("a", "198.51.100.0"),
        ("b", "198.51.100.1"),
        ("c", "198.51.100.2"),
    ] {
        assert_eq!(take(&mut a, &v4(name)), [expected]);
    }
    assert_eq!(a.release(&key("b")), [ip("198.51.100.1")]);
    assert_eq!(take(&mut a, &v4("d")), ["198.51.100.1"]);
    assert_eq!(take(&mut a, &v4("e")), ["198.51.100.3"]);
    assert_eq!(
        a.allocate(&v4("f")),
        Err(Error::PoolExhausted {
            pool: "p".into(),
            family: Family::V4
        })
    );
    assert!(a.assignment(&key("f")).is_none(), "a failure holds nothing");
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut a = with_pools(vec![avoiding_buggy(pool(
        "p",
        &["198.51.100.254-198.51.101.1"],
    ))]);
    assert_eq!(take(&mut a, &v4("a")), ["198.51.100.254"]);
    assert_eq!(take(&mut a, &v4("b")), ["198.51.101.1"]);
    assert!(matches!(
        a.allocate(&v4("c")),
        Err(Error::PoolExhausted { .. })
    ));
    // Without the flag the same range hands out .255 and .0.
    let mut a = with_pools(vec![pool("p", &["198.51.100.254-198.51.101.1"])]);
    let all: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .flat_map(|n| take(&mut a, &v4(n)))
        .collect();
    assert_eq!(
        all,
        [
            "198.51.100.254",
            "198.51.100.255",
            "198.51.101.0",
            "198.51.101.1"
        ]
    );
}

#[test]
fn a_service_keeps_its_address_across_calls() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/29"])]);
    assert_eq!(take(&mut a, &v4("a")), ["198.51.100.0"]);
    assert_eq!(take(&mut a, &v4("b")), ["198.51.100.1"]);
    a.release(&key("a"));
    // b is not moved to the now lower free address.
    assert_eq!(take(&mut a, &v4("b")), ["198.51.100.1"]);
}

#[test]
fn requested_addresses_are_given_exactly_or_refused_with_the_reason() {
    let pools = || {
        vec![
            pool("main", &["198.51.100.0/28", "2001:db8::/120"]),
            manual(pool("manual", &["198.51.100.16/28"])),
            avoiding_buggy(pool("edge", &["198.51.101.0/24"])),
            allocated_to(
                pool("team-a", &["198.51.102.0/28"]),
                ServiceAllocation {
                    namespaces: vec!["a".into()],
                    ..Default::default()
                },
            ),
            pool("left", &["203.0.113.0/28"]),
            pool("right", &["203.0.113.8/29"]),
        ]
    };
    let holder = v4("x/holder").requesting(ip("198.51.100.9"));
    type Case = (
        &'static str,
        ServiceRequest,
        Result<Vec<&'static str>, Error>,
    );
    let cases: Vec<Case> = vec![
        (
            "free address",
            v4("s").requesting(ip("198.51.100.5")),
            Ok(vec!["198.51.100.5"]),
        ),
        (
            "address of an autoAssign=false pool",
            v4("s").requesting(ip("198.51.100.20")),
            Ok(vec!["198.51.100.20"]),
        ),
        (
            "one per family, first family first",
            prefer_dual("s")
                .requesting(ip("2001:db8::7"))
                .requesting(ip("198.51.100.7")),
            Ok(vec!["198.51.100.7", "2001:db8::7"]),
        ),
        (
            "taken",
            v4("s").requesting(ip("198.51.100.9")),
            Err(Error::AddressTaken {
                ip: ip("198.51.100.9"),
                by: key("x/holder"),
            }),
        ),
        (
            "outside every pool",
            v4("s").requesting(ip("192.0.2.1")),
            Err(Error::NotInAnyPool {
                ip: ip("192.0.2.1"),
            }),
        ),
        (
            "outside the named pool",
            v4("s").requesting(ip("198.51.100.20")).with_pool("main"),
            Err(Error::NotInPool {
                ip: ip("198.51.100.20"),
                pool: "main".into(),
            }),
        ),
        (
            "inside the named pool",
            v4("s").requesting(ip("198.51.100.20")).with_pool("manual"),
            Ok(vec!["198.51.100.20"]),
        ),
        (
            "unknown named pool",
            v4("s").requesting(ip("198.51.100.5")).with_pool("nope"),
            Err(Error::UnknownPool {
                pool: "nope".into(),
            }),
        ),
        (
            "in an overlap",
            v4("s").requesting(ip("203.0.113.9")),
            Err(Error::InOverlap {
                ip: ip("203.0.113.9"),
                pools: ["left".into(), "right".into()],
            }),
        ),
        (
            "avoided .0",
            v4("s").requesting(ip("198.51.101.0")),
            Err(Error::AvoidedAddress {
                ip: ip("198.51.101.0"),
                pool: "edge".into(),
            }),
        ),
        (
            "pool reserved for another namespace",
            v4("b/s").requesting(ip("198.51.102.1")),
            Err(Error::PoolNotAllowed {
                pool: "team-a".into(),
            }),
        ),
        (
            "pool reserved for this namespace",
            v4("a/s").requesting(ip("198.51.102.1")),
            Ok(vec!["198.51.102.1"]),
        ),
        (
            "two of one family",
            prefer_dual("s")
                .requesting(ip("198.51.100.1"))
                .requesting(ip("198.51.100.2")),
            Err(Error::TooManyAddresses {
                family: Family::V4,
                ips: [ip("198.51.100.1"), ip("198.51.100.2")],
            }),
        ),
        (
            "family the Service does not have",
            v4("s").requesting(ip("2001:db8::1")),
            Err(Error::FamilyMismatch {
                ip: ip("2001:db8::1"),
                policy: FamilyPolicy::SingleStack(Family::V4),
            }),
        ),
        (
            "dual-stack required, one family requested",
            require_dual("s").requesting(ip("198.51.100.1")),
            Err(Error::RequestMissingFamily {
                missing: Family::V6,
            }),
        ),
    ];
    for (name, request, expected) in cases {
        let mut a = with_pools(pools());
        take(&mut a, &holder);
        let got = a.allocate(&request).map(|assignment| ips(&assignment));
        let expected = expected.map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(got, expected, "{name}");
        if got.is_err() {
            assert!(
                a.assignment(&request.key).is_none(),
                "{name}: holds nothing"
            );
        }
    }
}

#[test]
fn named_pool_rules() {
    let pools = || {
        vec![
            pool("auto", &["198.51.100.0/28"]),
            manual(pool("manual", &["198.51.100.16/31"])),
            pool("v6only", &["2001:db8::/120"]),
            allocated_to(
                pool("team-a", &["198.51.102.0/28"]),
                ServiceAllocation {
                    namespaces: vec!["a".into()],
                    ..Default::default()
                },
            ),
        ]
    };
    let cases: Vec<Case> = vec![
        (
            "autoAssign=false pool when named",
            v4("s").with_pool("manual"),
            Ok(vec!["198.51.100.16"]),
        ),
        (
            "unknown",
            v4("s").with_pool("nope"),
            Err(Error::UnknownPool {
                pool: "nope".into(),
            }),
        ),
        (
            "serviceAllocation does not match",
            v4("b/s").with_pool("team-a"),
            Err(Error::PoolNotAllowed {
                pool: "team-a".into(),
            }),
        ),
        (
            "serviceAllocation matches",
            v4("a/s").with_pool("team-a"),
            Ok(vec!["198.51.102.0"]),
        ),
        (
            "family the pool lacks",
            v4("s").with_pool("v6only"),
            Err(Error::FamilyNotInPool {
                pool: "v6only".into(),
                family: Family::V4,
            }),
        ),
    ];
    for (name, request, expected) in cases {
        let mut a = with_pools(pools());
        let got = a.allocate(&request).map(|assignment| ips(&assignment));
        let expected = expected.map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(got, expected, "{name}");
    }
    // A named pool that runs out does not spill into other pools.
    let mut a = with_pools(pools());
    take(&mut a, &v4("x").with_pool("manual"));
    take(&mut a, &v4("y").with_pool("manual"));
    assert_eq!(
        a.allocate(&v4("z").with_pool("manual")),
        Err(Error::PoolExhausted {
            pool: "manual".into(),
            family: Family::V4
        })
    );
}

#[test]
fn auto_assigned_pools_by_service_allocation_priority_then_name() {
    let selecting = |labels: &[(&'static str, &'static str)]| ServiceAllocation {
        service_selectors: vec![LabelSelector::labels(labels.iter().copied())],
        ..Default::default()
    };
    let with_priority = |allocation: ServiceAllocation, p| ServiceAllocation {
        priority: Some(p),
        ..allocation
    };
    let web = || v4("s").with_labels([("app", "web")]);
    let db = || v4("s").with_labels([("app", "db")]);
    type Case = (&'static str, Vec<Pool>, ServiceRequest, &'static str);
    let cases: Vec<Case> = vec![
        (
            "plain pools by name",
            vec![pool("b", &["198.51.100.2"]), pool("a", &["198.51.100.1"])],
            web(),
            "a",
        ),
        (
            "matching serviceAllocation before plain",
            vec![
                pool("a", &["198.51.100.1"]),
                allocated_to(pool("z", &["198.51.100.26"]), selecting(&[("app", "web")])),
            ],
            web(),
            "z",
        ),
        (
            "non-matching serviceAllocation never used",
            vec![
                pool("a", &["198.51.100.1"]),
                allocated_to(pool("z", &["198.51.100.26"]), selecting(&[("app", "web")])),
            ],
            db(),
            "a",
        ),
        (
            "lower priority number first",
            vec![
                allocated_to(pool("a", &["198.51.100.1"]), priority(20)),
                allocated_to(pool("b", &["198.51.100.2"]), priority(10)),
            ],
            web(),
            "b",
        ),
        (
            "with a priority before without",
            vec![
                allocated_to(pool("a", &["198.51.100.1"]), ServiceAllocation::default()),
                allocated_to(pool("b", &["198.51.100.2"]), priority(50)),
            ],
            web(),
            "b",
        ),
        (
            "equal priority by name",
            vec![
                allocated_to(pool("d", &["198.51.100.4"]), priority(1)),
                allocated_to(pool("c", &["198.51.100.3"]), priority(1)),
            ],
            web(),
            "c",
        ),
        (
            "a better pool that does not match is skipped",
            vec![
                allocated_to(
                    pool("a", &["198.51.100.1"]),
                    with_priority(selecting(&[("app", "db")]), 0),
                ),
                allocated_to(
                    pool("b", &["198.51.100.2"]),
                    with_priority(selecting(&[("app", "web")]), 5),
                ),
            ],
            web(),
            "b",
        ),
        (
            "autoAssign=false never picked unasked",
            vec![
                manual(allocated_to(pool("a", &["198.51.100.1"]), priority(0))),
                pool("b", &["198.51.100.2"]),
            ],
            web(),
            "b",
        ),
        (
            "namespace selector",
            vec![
                allocated_to(
                    pool("a", &["198.51.100.1"]),
                    ServiceAllocation {
                        namespace_selectors: vec![LabelSelector::labels([("tier", "prod")])],
                        ..priority(0)
                    },
                ),
                pool("b", &["198.51.100.2"]),
            ],
            web().with_namespace_labels([("tier", "prod")]),
            "a",
        ),
    ];
    for (name, pools, request, expected) in cases {
        // The order pools arrive in must not matter.
        for reversed in [false, true] {
            let mut pools = pools.clone();
            if reversed {
                pools.reverse();
            }
            let mut a = with_pools(pools);
            let got = a.allocate(&request).unwrap();
            assert_eq!(
                got.addresses[0].pool.as_deref(),
                Some(expected),
                "{name} (reversed: {reversed})"
            );
        }
    }
}

#[test]
fn a_full_pool_falls_through_to_the_next_and_errors_name_the_pools() {
    let mut a = with_pools(vec![
        allocated_to(pool("first", &["198.51.100.1"]), priority(0)),
        pool("second", &["198.51.100.2"]),
        pool("v6", &["2001:db8::1"]),
    ]);
    assert_eq!(take(&mut a, &v4("a")), ["198.51.100.1"]);
    assert_eq!(take(&mut a, &v4("b")), ["198.51.100.2"]);
    assert_eq!(
        a.allocate(&v4("c")),
        Err(Error::PoolsExhausted {
            pools: vec!["first".into(), "second".into()],
            family: Family::V4
        })
    );
    let mut a = with_pools(vec![pool("v6", &["2001:db8::1"])]);
    assert_eq!(
        a.allocate(&v4("c")),
        Err(Error::NoPoolAvailable { family: Family::V4 })
    );
    let mut a = with_pools(vec![]);
    assert_eq!(
        a.allocate(&v6("c")),
        Err(Error::NoPoolAvailable { family: Family::V6 })
    );
}

#[test]
fn dual_stack_policies() {
    let pools = || {
        vec![
            allocated_to(pool("a-v4", &["198.51.100.0/30"]), priority(0)),
            allocated_to(pool("b-v6", &["2001:db8:1::/126"]), priority(1)),
            pool("dual", &["198.51.100.16/30", "2001:db8:2::/126"]),
        ]
    };
    let cases: Vec<Case> = vec![
        ("single IPv4", v4("s"), Ok(vec!["198.51.100.0@a-v4"])),
        ("single IPv6", v6("s"), Ok(vec!["2001:db8:1::@b-v6"])),
        (
            "require: both from one pool",
            require_dual("s"),
            Ok(vec!["198.51.100.16@dual", "2001:db8:2::@dual"]),
        ),
        (
            "require, IPv6 first",
            service("s", FamilyPolicy::RequireDualStack(Family::V6)),
            Ok(vec!["2001:db8:2::@dual", "198.51.100.16@dual"]),
        ),
        (
            "prefer: both when one pool has both",
            prefer_dual("s"),
            Ok(vec!["198.51.100.16@dual", "2001:db8:2::@dual"]),
        ),
    ];
    for (name, request, expected) in cases {
        let mut a = with_pools(pools());
        let got = a.allocate(&request).map(|assignment| placed(&assignment));
        let expected = expected.map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(got, expected, "{name}");
    }

    // No pool with both families.
    let single_family = || {
        vec![
            pool("a-v4", &["198.51.100.0/30"]),
            pool("b-v6", &["2001:db8:1::/126"]),
        ]
    };
    let mut a = with_pools(single_family());
    assert_eq!(
        a.allocate(&require_dual("s")),
        Err(Error::DualStackUnavailable { pools: vec![] })
    );
    assert_eq!(
        placed(&a.allocate(&prefer_dual("s")).unwrap()),
        ["198.51.100.0@a-v4"],
        "prefer falls back to the first family"
    );

    // The dual pool's IPv6 half is full.
    let mut a = with_pools(vec![pool(
        "dual",
        &["198.51.100.16/30", "2001:db8:2::/128"],
    )]);
    take(&mut a, &v6("full"));
    assert_eq!(
        a.allocate(&require_dual("s")),
        Err(Error::DualStackUnavailable {
            pools: vec!["dual".into()]
        })
    );
    assert_eq!(take(&mut a, &prefer_dual("s")), ["198.51.100.16"]);
}

#[test]
fn prefer_dual_stack_gains_the_second_family_when_its_pool_grows_one() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/30"])]);
    assert_eq!(take(&mut a, &prefer_dual("s")), ["198.51.100.0"]);
    a.set_pools(vec![pool("p", &["198.51.100.0/30", "2001:db8::/126"])])
        .unwrap();
    assert_eq!(
        take(&mut a, &prefer_dual("s")),
        ["198.51.100.0", "2001:db8::"]
    );
}

#[test]
fn family_policy_changes_keep_what_still_fits() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/30", "2001:db8::/126"])]);
    take(&mut a, &require_dual("s"));
    // Down to single-stack: the IPv4 address stays, the IPv6 one is freed.
    assert_eq!(take(&mut a, &v4("s")), ["198.51.100.0"]);
    assert!(a.holders(ip("2001:db8::")).is_empty());
    // Back up: the IPv4 address stays and an IPv6 one is added from the same pool.
    assert_eq!(
        take(&mut a, &require_dual("s")),
        ["198.51.100.0", "2001:db8::"]
    );
    // Switch to IPv6 only.
    assert_eq!(take(&mut a, &v6("s")), ["2001:db8::"]);
}

#[test]
fn a_changed_request_moves_the_service_and_a_refused_one_keeps_its_address() {
    let mut a = with_pools(vec![
        pool("a", &["198.51.100.0/30"]),
        manual(pool("b", &["198.51.100.8/30"])),
    ]);
    assert_eq!(take(&mut a, &v4("s")), ["198.51.100.0"]);
    assert_eq!(take(&mut a, &v4("s").with_pool("b")), ["198.51.100.8"]);
    assert!(
        a.holders(ip("198.51.100.0")).is_empty(),
        "old address freed"
    );
    assert_eq!(
        take(&mut a, &v4("s").requesting(ip("198.51.100.10"))),
        ["198.51.100.10"]
    );
    take(&mut a, &v4("other").requesting(ip("198.51.100.2")));
    let refused = a.allocate(&v4("s").requesting(ip("198.51.100.2")));
    assert_eq!(
        refused,
        Err(Error::AddressTaken {
            ip: ip("198.51.100.2"),
            by: key("other")
        })
    );
    assert_eq!(ips(&a.assignment(&key("s")).unwrap()), ["198.51.100.10"]);
    // Dropping the annotations does not move it: nothing asks for something else.
    assert_eq!(take(&mut a, &v4("s")), ["198.51.100.10"]);
}

#[test]
fn label_changes_do_not_take_an_address_away() {
    let mut a = with_pools(vec![
        allocated_to(
            pool("web", &["198.51.100.0/30"]),
            ServiceAllocation {
                service_selectors: vec![LabelSelector::labels([("app", "web")])],
                ..priority(0)
            },
        ),
        pool("rest", &["198.51.100.8/30"]),
    ]);
    assert_eq!(
        take(&mut a, &v4("s").with_labels([("app", "web")])),
        ["198.51.100.0"]
    );
    assert_eq!(
        take(&mut a, &v4("s").with_labels([("app", "db")])),
        ["198.51.100.0"]
    );
    // A new Service with the new labels goes elsewhere.
    assert_eq!(
        take(&mut a, &v4("t").with_labels([("app", "db")])),
        ["198.51.100.8"]
    );
}

#[test]
fn huge_pools_cost_nothing_special() {
    let mut a = with_pools(vec![
        // The largest IPv4 CIDR that holds no never-announced address.
        avoiding_buggy(pool("all-v4", &["192.0.0.0/3"])),
        pool("slash64", &["2001:db8::/64"]),
    ]);
    let v4_capacity = (1 << 29) - 2 * (1 << 21);
    assert_eq!(
        a.usage("all-v4").unwrap().ipv4,
        Some(Usage {
            capacity: v4_capacity,
            assigned: 0,
            available: v4_capacity
        })
    );
    assert_eq!(a.usage("slash64").unwrap().ipv6.unwrap().capacity, 1 << 64);
    assert_eq!(take(&mut a, &v4("a")), ["192.0.0.1"]);
    assert_eq!(take(&mut a, &v6("b")), ["2001:db8::"]);
    let last = "2001:db8::ffff:ffff:ffff:ffff";
    assert_eq!(take(&mut a, &v6("c").requesting(ip(last))), [last]);
    assert_eq!(
        a.usage("slash64").unwrap().ipv6.unwrap(),
        Usage {
            capacity: 1 << 64,
            assigned: 2,
            available: (1 << 64) - 2
        }
    );

    // 2000::/3 (all global unicast) swallows the /64: only what lies outside it is allocatable.
    let mut a = with_pools(vec![
        pool("all-v6", &["2000::/3"]),
        pool("slash64", &["2001:db8::/64"]),
    ]);
    let overlaps = a.overlaps().to_vec();
    assert_eq!(overlaps.len(), 1);
    assert_eq!(
        overlaps[0].pools,
        ["all-v6".to_string(), "slash64".to_string()]
    );
    assert_eq!(
        a.usage("all-v6").unwrap().ipv6.unwrap().capacity,
        (1 << 125) - (1 << 64)
    );
    assert_eq!(a.usage("slash64").unwrap().ipv6.unwrap().capacity, 0);
    assert_eq!(take(&mut a, &v6("b")), ["2000::"]);
    assert_eq!(
        a.allocate(&v6("c").requesting(ip(last))),
        Err(Error::InOverlap {
            ip: ip(last),
            pools: ["all-v6".into(), "slash64".into()]
        })
    );
}

/// A pool whose every address lies in another pool has nothing to give because of the overlap,
/// and says so, rather than "exhausted" (which MetalLB's users would read as "too small").
#[test]
fn a_pool_entirely_inside_another_names_the_overlap() {
    let mut a = with_pools(vec![
        pool("wide", &["198.51.100.0/24"]),
        pool("inner", &["198.51.100.8/30"]),
    ]);
    let err = a.allocate(&v4("s").with_pool("inner")).unwrap_err();
    assert_eq!(
        err,
        Error::PoolOverlapped {
            pool: "inner".into(),
            family: Family::V4,
            others: vec!["wide".into()],
        }
    );
    assert_eq!(err.reason(), "PoolOverlapped");
    assert!(err.to_string().contains("make the pools disjoint"), "{err}");
    // A pool that is merely full is still exhausted.
    let mut a = with_pools(vec![pool("one", &["198.51.100.1"])]);
    take(&mut a, &v4("first"));
    assert!(matches!(
        a.allocate(&v4("second").with_pool("one")),
        Err(Error::PoolExhausted { .. })
    ));
}

/// A dual-stack Service's two addresses are announced together by one node; requested from two
/// pools, whose advertisements may select different nodes, they are refused with both named.
#[test]
fn requested_dual_stack_addresses_must_come_from_one_pool() {
    let mut a = with_pools(vec![
        pool("v4", &["198.51.100.0/30"]),
        pool("v6", &["2001:db8::/126"]),
        pool("both", &["198.51.100.8/30", "2001:db8::10/126"]),
    ]);
    let err = a
        .allocate(
            &require_dual("s")
                .requesting(ip("198.51.100.1"))
                .requesting(ip("2001:db8::1")),
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::RequestedFromTwoPools {
            ips: [ip("198.51.100.1"), ip("2001:db8::1")],
            pools: ["v4".into(), "v6".into()],
        }
    );
    assert!(a.assignment(&key("s")).is_none());
    assert_eq!(
        take(
            &mut a,
            &require_dual("s")
                .requesting(ip("198.51.100.9"))
                .requesting(ip("2001:db8::11"))
        ),
        ["198.51.100.9", "2001:db8::11"]
    );
}
