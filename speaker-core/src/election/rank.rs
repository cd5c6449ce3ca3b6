//! The hash and the ranking it induces.
//!
//! The weight of a node for a key is the first 8 bytes, read big-endian, of
//! `SHA-256(node_name + "#" + key)`, where `key` is the key's address in the canonical text form
//! of Rust's `IpAddr` Display (dotted quad for IPv4, RFC 5952 for IPv6, e.g. `2001:db8::1`).
//! This is MetalLB's `sha256(node + "#" + ip)` input, but the highest weight wins. The hash is
//! fixed on purpose: a keyed or per-process hasher would let two speakers disagree.
//!
//! Two nodes with equal weights (a 64-bit collision) are ordered by name, the smaller first, so
//! the order stays total and identical everywhere.

use std::cmp::Reverse;

use sha2::{Digest, Sha256};

use super::{ElectionKey, NodeName};

/// The node's weight for this key: higher is preferred.
pub fn weight(node: &NodeName, key: &ElectionKey) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(node.as_str().as_bytes());
    hasher.update(b"#");
    hasher.update(key.address().to_string().as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Sort key of `node` for `key`, smallest preferred: highest weight, then smallest name.
fn preference<'a>(key: &ElectionKey, node: &'a NodeName) -> (Reverse<u64>, &'a NodeName) {
    (Reverse(weight(node, key)), node)
}

/// The node that announces `key`'s addresses, or `None` when no node is eligible.
///
/// The order of `eligible` does not matter, nor do duplicates.
pub fn owner<'a>(
    key: &ElectionKey,
    eligible: impl IntoIterator<Item = &'a NodeName>,
) -> Option<&'a NodeName> {
    eligible
        .into_iter()
        .min_by_key(|node| preference(key, node))
}

/// The eligible nodes, most preferred first: the owner, then who owns `key`'s addresses when
/// the owner goes, and so on. Duplicates are kept once.
pub fn ranked<'a>(
    key: &ElectionKey,
    eligible: impl IntoIterator<Item = &'a NodeName>,
) -> Vec<&'a NodeName> {
    let mut nodes: Vec<_> = eligible
        .into_iter()
        .map(|node| (preference(key, node), node))
        .collect();
    nodes.sort_unstable();
    nodes.dedup_by(|a, b| a.1 == b.1);
    nodes.into_iter().map(|(_, node)| node).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (node, key address, weight): first 16 hex digits of `sha256sum` over `node#address`.
    const GOLDEN_WEIGHTS: &[(&str, &str, u64)] = &[
        ("node-a", "192.0.2.10", 0xd4b8_4135_501a_6622),
        ("node-b", "192.0.2.10", 0x6e9f_b809_c116_d8f2),
        ("node-c", "192.0.2.10", 0x39f2_d7a8_f240_1847),
        ("worker-1", "10.96.0.1", 0xd1e2_2baf_fa8a_5afb),
        ("node-a", "2001:db8::1", 0x3c9f_88a7_e2ef_52a1),
        ("node-b", "2001:db8::1", 0x1aee_61dd_e2bd_8a0c),
        ("node-c", "2001:db8::1", 0xbb83_3059_784d_34c0),
    ];

    /// (key address, owner among node-a, node-b, node-c), from the same independent computation.
    const GOLDEN_OWNERS: &[(&str, &str)] = &[
        ("192.0.2.10", "node-a"),
        ("192.0.2.11", "node-b"),
        ("192.0.2.12", "node-a"),
        ("198.51.100.7", "node-c"),
        ("2001:db8::1", "node-c"),
        ("2001:db8::2", "node-c"),
        ("2001:db8:0:1::a", "node-a"),
    ];

    fn key(ip: &str) -> ElectionKey {
        ElectionKey::new(ip.parse().unwrap())
    }

    /// Pinned values, computed independently with
    /// `printf 'node-a#192.0.2.10' | sha256sum | cut -c1-16`. A change here means every speaker
    /// of a mixed-version cluster would disagree on owners during an upgrade.
    #[test]
    fn weights_match_golden_vectors() {
        for (node, ip, expected) in GOLDEN_WEIGHTS {
            assert_eq!(
                weight(&NodeName::from(*node), &key(ip)),
                *expected,
                "weight({node}, {ip})"
            );
        }
    }

    #[test]
    fn owners_match_golden_vectors() {
        let nodes: Vec<NodeName> = ["node-a", "node-b", "node-c"].map(NodeName::from).into();
        for (ip, expected) in GOLDEN_OWNERS {
            assert_eq!(
                owner(&key(ip), &nodes).map(NodeName::as_str),
                Some(*expected),
                "owner of {ip}"
            );
        }
    }

    #[test]
    fn a_node_listed_twice_counts_once() {
        let (a, b) = (NodeName::from("node-a"), NodeName::from("node-b"));
        let k = key("192.0.2.10");
        assert_eq!(owner(&k, [&b, &a, &b]), Some(&a));
    }

    #[test]
    fn no_eligible_node_means_no_owner() {
        assert_eq!(owner(&key("192.0.2.10"), []), None);
    }
}
