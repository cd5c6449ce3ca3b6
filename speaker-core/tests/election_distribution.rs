//! How the election spreads addresses over nodes, and how few it moves when membership changes.
//! Run with `--nocapture` to see the measured shares.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use speaker_core::election::{ElectionKey, NodeName, owner};

const ADDRESSES: u32 = 30_000;

/// Half IPv4 (10.0.0.0 upwards), half IPv6 (2001:db8::/64 upwards): a pool-like, sequential
/// spread, the worst case for a weak hash.
fn addresses() -> Vec<ElectionKey> {
    (0..ADDRESSES)
        .map(|i| {
            let ip = if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
            } else {
                IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(i)))
            };
            ElectionKey::new(ip)
        })
        .collect()
}

fn nodes(n: usize) -> Vec<NodeName> {
    (0..n)
        .map(|i| NodeName::new(format!("worker-{i}")))
        .collect()
}

fn owners<'a>(keys: &[ElectionKey], nodes: &'a [NodeName]) -> Vec<&'a NodeName> {
    keys.iter()
        .map(|k| owner(k, nodes).expect("nodes are eligible"))
        .collect()
}

fn counts<'a>(owners: &[&'a NodeName]) -> BTreeMap<&'a NodeName, usize> {
    let mut counts = BTreeMap::new();
    for node in owners {
        *counts.entry(*node).or_default() += 1;
    }
    counts
}

/// Largest relative deviation of any node's count from `expected`.
fn worst_deviation<'a>(counts: impl IntoIterator<Item = &'a usize>, expected: f64) -> f64 {
    counts
        .into_iter()
        .map(|&c| (c as f64 - expected).abs() / expected)
        .fold(0.0, f64::max)
}

#[test]
fn every_node_gets_its_share_within_five_percent() {
    let keys = addresses();
    for n in [3, 5, 10] {
        let nodes = nodes(n);
        let counts = counts(&owners(&keys, &nodes));
        assert_eq!(counts.len(), n, "a node owns nothing with {n} nodes");
        let expected = f64::from(ADDRESSES) / n as f64;
        let worst = worst_deviation(counts.values(), expected);
        eprintln!(
            "{n} nodes: expected {expected:.0} each, got {counts:?}, worst {:.2}%",
            worst * 100.0
        );
        assert!(
            worst < 0.05,
            "{n} nodes: worst share is {:.2}% off",
            worst * 100.0
        );
    }
}

#[test]
fn removing_a_node_moves_only_its_addresses_and_spreads_them() {
    let keys = addresses();
    for n in [3, 5, 10] {
        let all = nodes(n);
        let gone = all[n / 2].clone();
        let rest: Vec<NodeName> = all.iter().filter(|x| **x != gone).cloned().collect();
        let before = owners(&keys, &all);
        let after = owners(&keys, &rest);

        let mut inherited: BTreeMap<&NodeName, usize> = BTreeMap::new();
        for (old, new) in before.iter().zip(&after) {
            if **old == gone {
                *inherited.entry(*new).or_default() += 1;
            } else {
                assert_eq!(old, new, "an address of a surviving node moved");
            }
        }
        let orphaned = before.iter().filter(|o| ***o == gone).count();
        let expected = orphaned as f64 / (n - 1) as f64;
        let worst = worst_deviation(inherited.values(), expected);
        eprintln!(
            "{n} -> {} nodes: {orphaned} addresses moved, inherited {inherited:?}, worst {:.2}%",
            n - 1,
            worst * 100.0
        );
        assert_eq!(inherited.len(), n - 1, "a survivor inherited nothing");
        assert!(worst < 0.15, "inheritance {:.2}% uneven", worst * 100.0);
    }
}

#[test]
fn adding_a_node_moves_only_addresses_to_it_about_one_in_n_plus_one() {
    let keys = addresses();
    for n in [3, 5, 10] {
        let before_nodes = nodes(n);
        let after_nodes = nodes(n + 1);
        let newcomer = &after_nodes[n];
        let before = owners(&keys, &before_nodes);
        let after = owners(&keys, &after_nodes);

        let mut moved = 0usize;
        for (old, new) in before.iter().zip(&after) {
            if old != new {
                assert_eq!(*new, newcomer, "an address moved between old nodes");
                moved += 1;
            }
        }
        let expected = f64::from(ADDRESSES) / (n + 1) as f64;
        let off = (moved as f64 - expected).abs() / expected;
        eprintln!(
            "{n} -> {} nodes: {moved} moved ({:.2}%), expected {expected:.0}, off {:.2}%",
            n + 1,
            100.0 * moved as f64 / f64::from(ADDRESSES),
            off * 100.0
        );
        assert!(off < 0.05, "{moved} moved, expected about {expected:.0}");
    }
}
