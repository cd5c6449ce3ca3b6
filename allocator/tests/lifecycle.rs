//! Pools changing under live Services (overlap, removal, shrink), restarts, and usage counts.

mod support;

use allocator::{Error, Orphan, Overlap, Protocol::*, Usage};
use model::address::parse_block;
use support::*;

#[test]
fn overlaps_are_reported_and_never_allocated_from() {
    let mut a = with_pools(vec![]);
    let overlaps = a
        .set_pools(vec![
            pool("c", &["198.51.100.100/30"]),
            pool("b", &["198.51.100.4-198.51.100.11", "2001:db8::/126"]),
            pool("a", &["198.51.100.0/29", "2001:db8::2-2001:db8::9"]),
        ])
        .unwrap();
    assert_eq!(
        overlaps,
        [Overlap {
            pools: ["a".into(), "b".into()],
            ranges: vec![
                parse_block("198.51.100.4-198.51.100.7").unwrap(),
                parse_block("2001:db8::2-2001:db8::3").unwrap(),
            ],
        }]
    );
    assert_eq!(
        overlaps[0].to_string(),
        "pools a and b both contain 198.51.100.4-198.51.100.7, 2001:db8::2-2001:db8::3"
    );
    assert_eq!(a.overlaps(), overlaps.as_slice());
    let v4_usage = |a: &allocator::Allocator, p| a.usage(p).unwrap().ipv4.unwrap();
    assert_eq!(v4_usage(&a, "a").capacity, 4);
    assert_eq!(v4_usage(&a, "b").capacity, 4);
    let mut got = Vec::new();
    for i in 0..5 {
        if let Ok(assignment) = a.allocate(&v4(&format!("s{i}")).with_pool("a")) {
            got.extend(ips(&assignment));
        }
    }
    assert_eq!(
        got,
        [
            "198.51.100.0",
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.3"
        ]
    );
    assert_eq!(
        take(&mut a, &v4("t").with_pool("b")),
        ["198.51.100.8"],
        "b starts after the overlap"
    );
}

#[test]
fn a_holder_inside_a_new_overlap_keeps_its_address_until_it_is_fixed() {
    let mut a = with_pools(vec![pool("a", &["198.51.100.0/30"])]);
    take(&mut a, &v4("s"));
    a.set_pools(vec![
        pool("a", &["198.51.100.0/30"]),
        pool("b", &["198.51.100.0/29"]),
    ])
    .unwrap();
    assert_eq!(
        placed(&a.assignment(&key("s")).unwrap()),
        ["198.51.100.0@a"]
    );
    assert_eq!(take(&mut a, &v4("s")), ["198.51.100.0"]);
    // Only b's part outside the overlap is handed out.
    assert_eq!(take(&mut a, &v4("t")), ["198.51.100.4"]);
    assert_eq!(
        a.usage("a").unwrap().ipv4.unwrap(),
        Usage {
            capacity: 0,
            assigned: 1,
            available: 0
        }
    );
    // Fixed: a's addresses are allocatable again, around the holder.
    a.set_pools(vec![
        pool("a", &["198.51.100.0/30"]),
        pool("b", &["198.51.100.4/30"]),
    ])
    .unwrap();
    assert!(a.overlaps().is_empty());
    assert_eq!(take(&mut a, &v4("u")), ["198.51.100.1"]);
}

#[test]
fn duplicate_pool_names_are_refused_and_change_nothing() {
    let mut a = with_pools(vec![pool("a", &["198.51.100.0/30"])]);
    assert_eq!(
        a.set_pools(vec![
            pool("b", &["192.0.2.0/30"]),
            pool("b", &["203.0.113.0/30"])
        ]),
        Err(Error::DuplicatePool { pool: "b".into() })
    );
    assert!(a.pool("a").is_some() && a.pool("b").is_none());
}

#[test]
fn removed_or_shrunk_pools_leave_orphans_that_nobody_else_gets() {
    let mut a = with_pools(vec![
        pool("keep", &["198.51.100.0/30"]),
        pool("gone", &["198.51.100.8/30"]),
        pool("shrinks", &["198.51.100.16/30"]),
    ]);
    take(&mut a, &v4("k").with_pool("keep"));
    take(&mut a, &v4("g").with_pool("gone"));
    take(&mut a, &v4("s1").with_pool("shrinks"));
    take(&mut a, &v4("s2").with_pool("shrinks"));
    a.set_pools(vec![
        pool("keep", &["198.51.100.0/30"]),
        pool("shrinks", &["198.51.100.17-198.51.100.19"]),
    ])
    .unwrap();
    assert_eq!(
        a.orphans(),
        [
            Orphan {
                service: key("g"),
                ip: ip("198.51.100.8")
            },
            Orphan {
                service: key("s1"),
                ip: ip("198.51.100.16")
            },
        ]
    );
    assert_eq!(
        placed(&a.assignment(&key("g")).unwrap()),
        ["198.51.100.8@-"]
    );
    // Nothing is taken away: reallocating keeps it.
    assert_eq!(take(&mut a, &v4("g")), ["198.51.100.8"]);
    // A pool reappearing around the orphan does not hand it to someone else.
    a.set_pools(vec![
        pool("keep", &["198.51.100.0/30"]),
        pool("back", &["198.51.100.8/30"]),
        pool("shrinks", &["198.51.100.17-198.51.100.19"]),
    ])
    .unwrap();
    assert_eq!(
        placed(&a.assignment(&key("g")).unwrap()),
        ["198.51.100.8@back"]
    );
    assert_eq!(a.orphans().len(), 1);
    assert_eq!(take(&mut a, &v4("new").with_pool("back")), ["198.51.100.9"]);
    assert_eq!(
        a.allocate(&v4("thief").requesting(ip("198.51.100.8"))),
        Err(Error::AddressTaken {
            ip: ip("198.51.100.8"),
            by: key("g")
        })
    );
    // Releasing an orphan forgets it.
    a.release(&key("s1"));
    assert!(a.orphans().is_empty());
}

#[test]
fn a_service_that_names_a_deleted_pool_keeps_its_address_and_hears_why() {
    let mut a = with_pools(vec![
        pool("p", &["198.51.100.0/30"]),
        pool("q", &["192.0.2.0/30"]),
    ]);
    take(&mut a, &v4("s").with_pool("p"));
    a.set_pools(vec![pool("q", &["192.0.2.0/30"])]).unwrap();
    assert_eq!(
        a.allocate(&v4("s").with_pool("p")),
        Err(Error::UnknownPool { pool: "p".into() })
    );
    assert_eq!(ips(&a.assignment(&key("s")).unwrap()), ["198.51.100.0"]);
}

#[test]
fn restore_reloads_assignments_before_new_allocations() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/29", "2001:db8::/125"])]);
    let restored = a
        .restore(&prefer_dual("old"), &[ip("198.51.100.0"), ip("2001:db8::")])
        .unwrap();
    assert_eq!(placed(&restored), ["198.51.100.0@p", "2001:db8::@p"]);
    a.restore(&v4("outside"), &[ip("192.0.2.7")]).unwrap();
    assert_eq!(
        a.orphans().len(),
        1,
        "restored outside every pool: an orphan"
    );
    assert_eq!(take(&mut a, &v4("new")), ["198.51.100.1"]);
    assert_eq!(
        take(&mut a, &prefer_dual("old")),
        ["198.51.100.0", "2001:db8::"],
        "a restored Service keeps its addresses"
    );
    let usage = a.usage("p").unwrap();
    assert_eq!(usage.ipv4.unwrap().assigned, 2);
    assert_eq!(usage.ipv6.unwrap().assigned, 1);
}

#[test]
fn restore_names_the_holder_so_the_caller_can_move_the_younger() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/29"])]);
    // Restored in the wrong order: the younger first.
    a.restore(&v4("young"), &[ip("198.51.100.3")]).unwrap();
    assert_eq!(
        a.restore(&v4("old"), &[ip("198.51.100.3")]),
        Err(Error::AddressTaken {
            ip: ip("198.51.100.3"),
            by: key("young")
        })
    );
    assert!(
        a.assignment(&key("old")).is_none(),
        "a refused restore changes nothing"
    );
    // The caller knows "old" is older: the younger gives way and is reallocated.
    a.release(&key("young"));
    a.restore(&v4("old"), &[ip("198.51.100.3")]).unwrap();
    assert_eq!(take(&mut a, &v4("young")), ["198.51.100.0"]);
    // Compatible sharers restore onto one address; a clash is refused with the reason.
    a.restore(
        &v4("a").sharing("k", None, &[(Tcp, 80)]),
        &[ip("198.51.100.5")],
    )
    .unwrap();
    a.restore(
        &v4("b").sharing("k", None, &[(Tcp, 443)]),
        &[ip("198.51.100.5")],
    )
    .unwrap();
    assert!(matches!(
        a.restore(
            &v4("c").sharing("k", None, &[(Tcp, 443)]),
            &[ip("198.51.100.5")]
        ),
        Err(Error::SharingRefused { .. })
    ));
    assert_eq!(
        a.restore(&v4("d"), &[ip("198.51.100.6"), ip("198.51.100.7")]),
        Err(Error::TooManyAddresses {
            family: model::address::Family::V4,
            ips: [ip("198.51.100.6"), ip("198.51.100.7")]
        })
    );
}

#[test]
fn restore_before_pools_then_pools_arrive() {
    let mut a = allocator::Allocator::new();
    a.restore(&v4("s"), &[ip("198.51.100.2")]).unwrap();
    assert_eq!(a.orphans().len(), 1);
    a.set_pools(vec![pool("p", &["198.51.100.0/30"])]).unwrap();
    assert!(a.orphans().is_empty());
    assert_eq!(
        placed(&a.assignment(&key("s")).unwrap()),
        ["198.51.100.2@p"]
    );
    assert_eq!(
        a.usage("p").unwrap().ipv4.unwrap(),
        Usage {
            capacity: 4,
            assigned: 1,
            available: 3
        }
    );
    let got: Vec<_> = ["a", "b", "c"]
        .iter()
        .flat_map(|n| take(&mut a, &v4(n)))
        .collect();
    assert_eq!(got, ["198.51.100.0", "198.51.100.1", "198.51.100.3"]);
}

#[test]
fn usage_counts_per_family() {
    let mut a = with_pools(vec![
        avoiding_buggy(pool("p", &["198.51.100.0/24", "2001:db8::/64"])),
        pool("v6", &["2001:db8:1::/120"]),
    ]);
    for i in 0..3 {
        take(&mut a, &require_dual(&format!("s{i}")));
    }
    let usage = a.usage("p").unwrap();
    assert_eq!(
        usage.ipv4,
        Some(Usage {
            capacity: 254,
            assigned: 3,
            available: 251
        })
    );
    assert_eq!(
        usage.ipv6,
        Some(Usage {
            capacity: 1 << 64,
            assigned: 3,
            available: (1 << 64) - 3
        })
    );
    assert_eq!(a.usage("v6").unwrap().ipv4, None);
    assert_eq!(a.usage("nope"), None);
    assert_eq!(a.service_count(), 3);
}
