//! `allow-shared-ip`: who may hold one address together, and which address a sharer gets.

mod support;

use allocator::{Error, Protocol::*, ServiceRequest, SharingConflict};
use support::*;

fn sharer(
    name: &str,
    key: &str,
    backend: Option<&str>,
    ports: &[(allocator::Protocol, u16)],
) -> ServiceRequest {
    v4(name).sharing(key, backend, ports)
}

#[test]
fn compatible_services_share_and_others_get_their_own_address() {
    // Each case: the first Service takes 198.51.100.0, then the second one allocates.
    let cases: Vec<(&str, ServiceRequest, ServiceRequest, &str)> = vec![
        (
            "same key, TCP and UDP on port 53",
            sharer("dns-tcp", "dns", None, &[(Tcp, 53)]),
            sharer("dns-udp", "dns", None, &[(Udp, 53)]),
            "198.51.100.0",
        ),
        (
            "same key, same port",
            sharer("a", "k", None, &[(Tcp, 80)]),
            sharer("b", "k", None, &[(Tcp, 80)]),
            "198.51.100.1",
        ),
        (
            "different keys",
            sharer("a", "k1", None, &[(Tcp, 80)]),
            sharer("b", "k2", None, &[(Tcp, 443)]),
            "198.51.100.1",
        ),
        (
            "Cluster and Local",
            sharer("a", "k", None, &[(Tcp, 80)]),
            sharer("b", "k", Some("app=web"), &[(Tcp, 443)]),
            "198.51.100.1",
        ),
        (
            "Local selecting the same pods",
            sharer("a", "k", Some("app=web"), &[(Tcp, 80)]),
            sharer("b", "k", Some("app=web"), &[(Tcp, 443)]),
            "198.51.100.0",
        ),
        (
            "Local selecting other pods",
            sharer("a", "k", Some("app=web"), &[(Tcp, 80)]),
            sharer("b", "k", Some("app=db"), &[(Tcp, 443)]),
            "198.51.100.1",
        ),
        (
            "the first does not share",
            v4("a"),
            sharer("b", "k", None, &[(Tcp, 443)]),
            "198.51.100.1",
        ),
        (
            "the second does not share",
            sharer("a", "k", None, &[(Tcp, 80)]),
            v4("b"),
            "198.51.100.1",
        ),
        (
            "an empty key is no key",
            sharer("a", "", None, &[(Tcp, 80)]),
            sharer("b", "", None, &[(Tcp, 443)]),
            "198.51.100.1",
        ),
    ];
    for (name, first, second, expected) in cases {
        let mut a = with_pools(vec![pool("p", &["198.51.100.0/29"])]);
        assert_eq!(take(&mut a, &first), ["198.51.100.0"], "{name}");
        assert_eq!(take(&mut a, &second), [expected], "{name}");
    }
}

#[test]
fn requesting_a_held_address_says_why_it_cannot_be_shared() {
    let held = ip("198.51.100.0");
    let cases: Vec<(&str, ServiceRequest, ServiceRequest, Result<(), Error>)> = vec![
        (
            "port clash",
            sharer("x/a", "k", None, &[(Tcp, 80), (Udp, 53)]),
            sharer("x/b", "k", None, &[(Udp, 53)]),
            Err(Error::SharingRefused {
                ip: held,
                with: Box::new(key("x/a")),
                reason: SharingConflict::PortClash {
                    protocol: Udp,
                    port: 53,
                },
            }),
        ),
        (
            "other key",
            sharer("x/a", "k1", None, &[]),
            sharer("x/b", "k2", None, &[]),
            Err(Error::SharingRefused {
                ip: held,
                with: Box::new(key("x/a")),
                reason: SharingConflict::KeyDiffers {
                    ours: "k2".into(),
                    theirs: "k1".into(),
                },
            }),
        ),
        (
            "Local joining Cluster",
            sharer("x/a", "k", None, &[]),
            sharer("x/b", "k", Some("app=web"), &[]),
            Err(Error::SharingRefused {
                ip: held,
                with: Box::new(key("x/a")),
                reason: SharingConflict::BackendDiffers {
                    ours: Some("app=web".into()),
                    theirs: None,
                },
            }),
        ),
        (
            "holder does not share",
            v4("x/a"),
            sharer("x/b", "k", None, &[]),
            Err(Error::AddressTaken {
                ip: held,
                by: key("x/a"),
            }),
        ),
        (
            "requester does not share",
            sharer("x/a", "k", None, &[]),
            v4("x/b"),
            Err(Error::AddressTaken {
                ip: held,
                by: key("x/a"),
            }),
        ),
        (
            "compatible",
            sharer("x/a", "k", None, &[(Tcp, 80)]),
            sharer("x/b", "k", None, &[(Tcp, 443)]),
            Ok(()),
        ),
    ];
    for (name, first, second, expected) in cases {
        let mut a = with_pools(vec![pool("p", &["198.51.100.0/29"])]);
        take(&mut a, &first);
        let got = a.allocate(&second.requesting(held)).map(|_| ());
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn a_sharer_prefers_an_address_already_held_under_its_key() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/29"])]);
    take(&mut a, &v4("plain"));
    assert_eq!(
        take(&mut a, &sharer("a", "k", None, &[(Tcp, 80)])),
        ["198.51.100.1"]
    );
    a.release(&key("plain"));
    // .0 is free and lower, but b joins a.
    assert_eq!(
        take(&mut a, &sharer("b", "k", None, &[(Tcp, 443)])),
        ["198.51.100.1"]
    );
    // c clashes with a and b on 443, so it gets the lowest free address.
    assert_eq!(
        take(&mut a, &sharer("c", "k", None, &[(Tcp, 443)])),
        ["198.51.100.0"]
    );
    // d fits with c but not with a and b: it joins c.
    assert_eq!(
        take(&mut a, &sharer("d", "k", None, &[(Tcp, 80)])),
        ["198.51.100.0"]
    );
}

#[test]
fn a_sharer_follows_its_key_into_a_lower_ranked_pool() {
    let mut a = with_pools(vec![
        pool("a-first", &["198.51.100.0/30"]),
        manual(pool("b-manual", &["198.51.100.8/30"])),
        pool("c-last", &["198.51.100.16/30"]),
    ]);
    take(
        &mut a,
        &sharer("x", "k", None, &[(Tcp, 80)]).with_pool("c-last"),
    );
    // The manual pool is never used unasked, even to share.
    take(
        &mut a,
        &sharer("m", "k", None, &[(Tcp, 80)]).with_pool("b-manual"),
    );
    assert_eq!(
        placed(&a.allocate(&sharer("y", "k", None, &[(Tcp, 443)])).unwrap()),
        ["198.51.100.16@c-last"]
    );
}

#[test]
fn dual_stack_sharers_share_both_addresses() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/30", "2001:db8::/126"])]);
    let first = take(&mut a, &require_dual("a").sharing("k", None, &[(Tcp, 80)]));
    let second = take(&mut a, &require_dual("b").sharing("k", None, &[(Tcp, 443)]));
    assert_eq!(first, ["198.51.100.0", "2001:db8::"]);
    assert_eq!(first, second);
}

#[test]
fn releasing_one_sharer_leaves_the_address_with_the_other() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/30"])]);
    take(&mut a, &sharer("a", "k", None, &[(Tcp, 80)]));
    take(&mut a, &sharer("b", "k", None, &[(Tcp, 443)]));
    let usage = |a: &allocator::Allocator| a.usage("p").unwrap().ipv4.unwrap();
    assert_eq!((usage(&a).assigned, usage(&a).available), (1, 3));
    assert_eq!(a.release(&key("a")), [ip("198.51.100.0")]);
    assert_eq!(a.holders(ip("198.51.100.0")), [&key("b")]);
    assert_eq!(
        take(&mut a, &v4("c")),
        ["198.51.100.1"],
        "not handed out while b holds it"
    );
    a.release(&key("b"));
    assert!(a.holders(ip("198.51.100.0")).is_empty());
    assert_eq!(take(&mut a, &v4("d")), ["198.51.100.0"]);
}

/// A change of sharing terms the other holder cannot accept is refused, as MetalLB refuses it:
/// the Service keeps its address under its previous terms and the error says why, instead of
/// the address moving (or vanishing) over one edited annotation.
#[test]
fn a_refused_change_of_sharing_terms_keeps_the_address_and_says_why() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/30"])]);
    let shared = ip("198.51.100.0");
    take(&mut a, &sharer("a", "k", None, &[(Tcp, 80)]));
    take(&mut a, &sharer("b", "k", None, &[(Tcp, 443)]));
    let refused = |reason| {
        Err(Error::SharingChangeRefused {
            ip: shared,
            with: Box::new(key("a")),
            reason,
        })
    };
    let cases = [
        (
            sharer("b", "k", None, &[(Tcp, 80)]),
            SharingConflict::PortClash {
                protocol: Tcp,
                port: 80,
            },
        ),
        (
            sharer("b", "k2", None, &[(Tcp, 443)]),
            SharingConflict::KeyDiffers {
                ours: "k2".into(),
                theirs: "k".into(),
            },
        ),
        (v4("b"), SharingConflict::NoLongerShared),
    ];
    for (change, reason) in cases {
        assert_eq!(a.allocate(&change), refused(reason));
        assert_eq!(ips(&a.assignment(&key("b")).unwrap()), ["198.51.100.0"]);
        assert_eq!(a.holders(shared), [&key("a"), &key("b")]);
    }
    let text = a.allocate(&v4("b")).unwrap_err().to_string();
    assert!(
        text.contains("keeps 198.51.100.0 under its previous terms"),
        "{text}"
    );
    // Under its previous terms it still shares, so a third sharer joins it.
    assert_eq!(
        take(&mut a, &sharer("c", "k", None, &[(Udp, 53)])),
        ["198.51.100.0"]
    );
    // Asking for another address is a move, not a refused change.
    assert_eq!(
        take(&mut a, &v4("b").requesting(ip("198.51.100.2"))),
        ["198.51.100.2"]
    );
    assert_eq!(a.holders(shared), [&key("a"), &key("c")]);
}

#[test]
fn a_sole_holder_may_change_its_key() {
    let mut a = with_pools(vec![pool("p", &["198.51.100.0/30"])]);
    take(&mut a, &sharer("a", "old", None, &[(Tcp, 80)]));
    assert_eq!(
        take(&mut a, &sharer("a", "new", None, &[(Tcp, 80)])),
        ["198.51.100.0"]
    );
    // The address is now found under the new key only.
    assert_eq!(
        take(&mut a, &sharer("b", "new", None, &[(Tcp, 443)])),
        ["198.51.100.0"]
    );
    assert_eq!(
        take(&mut a, &sharer("c", "old", None, &[(Tcp, 443)])),
        ["198.51.100.1"]
    );
}
