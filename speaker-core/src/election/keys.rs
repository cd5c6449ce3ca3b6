//! Which addresses are elected together, and under which key.
//!
//! Two addresses are joined when one Service holds both; joined addresses form groups (the
//! connected components of "held by the same Service"). Every address of a group is elected
//! under one key: the smallest address of the group in `IpAddr` order, where every IPv4 address
//! comes before every IPv6 address. So:
//!
//! - a single-stack address is elected by itself;
//! - a dual-stack Service's two addresses are elected by its IPv4 address, whichever family the
//!   Service lists first, and so land on one node;
//! - an address shared by Services with different partners, e.g. A = {10.0.0.1, 2001:db8::1}
//!   and B = {10.0.0.2, 2001:db8::1}, merges their groups: all three addresses are elected by
//!   10.0.0.1. One address has one owner, so the alternative (keying `2001:db8::1` by one
//!   partner only) would split the other Service across two nodes; merging keeps every Service
//!   whole. The cost is that a merged group sits on one node, and that creating or removing
//!   such a sharing re-keys, and may move, the merged addresses.
//!
//! The keys depend only on the set of Services, never on the order they are listed in, so every
//! speaker derives the same keys from the same view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// The address whose hash elects a group of addresses (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ElectionKey(IpAddr);

impl ElectionKey {
    /// The key of an address elected on its own. Use [`election_keys`] to key the addresses of
    /// real Services, which may have to be elected together.
    pub fn new(address: IpAddr) -> Self {
        Self(address)
    }

    pub fn address(&self) -> IpAddr {
        self.0
    }

    /// The address, borrowed: lets a one-address group be read as a slice of its key.
    pub(crate) fn address_ref(&self) -> &IpAddr {
        &self.0
    }
}

impl fmt::Display for ElectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The ingress addresses of one Service: all of them must be announced from one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceAddresses {
    pub addresses: Vec<IpAddr>,
}

impl ServiceAddresses {
    pub fn new(addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            addresses: addresses.into_iter().collect(),
        }
    }
}

/// The election key of every address any of `services` holds.
pub fn election_keys(services: &[ServiceAddresses]) -> BTreeMap<IpAddr, ElectionKey> {
    let mut groups = Groups::default();
    for service in services {
        let mut addresses = service.addresses.iter().copied();
        let Some(first) = addresses.next() else {
            continue;
        };
        groups.insert(first);
        for other in addresses {
            groups.insert(other);
            groups.join(first, other);
        }
    }
    groups.into_keys()
}

/// The addresses elected under each key: the groups a caller must give one eligible set each,
/// or the addresses of one group could be elected over different nodes.
pub fn group_by_key(
    keys: &BTreeMap<IpAddr, ElectionKey>,
) -> BTreeMap<ElectionKey, BTreeSet<IpAddr>> {
    let mut groups: BTreeMap<ElectionKey, BTreeSet<IpAddr>> = BTreeMap::new();
    for (&address, &key) in keys {
        groups.entry(key).or_default().insert(address);
    }
    groups
}

/// Union-find over addresses whose root is always the smallest address of its group, because
/// a join hangs the larger root under the smaller.
#[derive(Default)]
struct Groups {
    parent: BTreeMap<IpAddr, IpAddr>,
}

impl Groups {
    fn insert(&mut self, address: IpAddr) {
        self.parent.entry(address).or_insert(address);
    }

    fn root(&mut self, address: IpAddr) -> IpAddr {
        let mut root = address;
        while self.parent[&root] != root {
            root = self.parent[&root];
        }
        // Path compression keeps long chains of sharings from making this quadratic.
        let mut current = address;
        while current != root {
            let next = self.parent[&current];
            self.parent.insert(current, root);
            current = next;
        }
        root
    }

    fn join(&mut self, a: IpAddr, b: IpAddr) {
        let (root_a, root_b) = (self.root(a), self.root(b));
        if root_a != root_b {
            self.parent.insert(root_a.max(root_b), root_a.min(root_b));
        }
    }

    fn into_keys(mut self) -> BTreeMap<IpAddr, ElectionKey> {
        let addresses: Vec<IpAddr> = self.parent.keys().copied().collect();
        addresses
            .into_iter()
            .map(|address| (address, ElectionKey(self.root(address))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn service(addresses: &[&str]) -> ServiceAddresses {
        ServiceAddresses::new(addresses.iter().map(|a| ip(a)))
    }

    fn key_of(keys: &BTreeMap<IpAddr, ElectionKey>, address: &str) -> IpAddr {
        keys[&ip(address)].address()
    }

    #[test]
    fn single_stack_address_is_its_own_key() {
        let keys = election_keys(&[service(&["10.0.0.1"]), service(&["2001:db8::1"])]);
        assert_eq!(key_of(&keys, "10.0.0.1"), ip("10.0.0.1"));
        assert_eq!(key_of(&keys, "2001:db8::1"), ip("2001:db8::1"));
    }

    #[test]
    fn dual_stack_pair_is_keyed_by_its_ipv4_in_either_family_order() {
        for pair in [["10.0.0.9", "2001:db8::1"], ["2001:db8::1", "10.0.0.9"]] {
            let keys = election_keys(&[service(&pair)]);
            assert_eq!(key_of(&keys, "2001:db8::1"), ip("10.0.0.9"));
            assert_eq!(key_of(&keys, "10.0.0.9"), ip("10.0.0.9"));
        }
    }

    #[test]
    fn address_shared_by_different_partners_merges_the_groups() {
        let keys = election_keys(&[
            service(&["10.0.0.2", "2001:db8::1"]),
            service(&["10.0.0.1", "2001:db8::1"]),
            service(&["10.0.0.3"]),
        ]);
        for address in ["10.0.0.1", "10.0.0.2", "2001:db8::1"] {
            assert_eq!(key_of(&keys, address), ip("10.0.0.1"), "{address}");
        }
        assert_eq!(key_of(&keys, "10.0.0.3"), ip("10.0.0.3"));
    }

    #[test]
    fn chains_of_sharings_collapse_to_the_smallest_address() {
        // 10.0.0.4 - ::4 - 10.0.0.3 - ::3 - 10.0.0.2 - ::2 - 10.0.0.1, listed from the far end.
        let keys = election_keys(&[
            service(&["10.0.0.4", "2001:db8::4"]),
            service(&["10.0.0.3", "2001:db8::4"]),
            service(&["10.0.0.3", "2001:db8::3"]),
            service(&["10.0.0.2", "2001:db8::3"]),
            service(&["10.0.0.2", "2001:db8::2"]),
            service(&["10.0.0.1", "2001:db8::2"]),
        ]);
        assert_eq!(keys.len(), 7);
        assert!(keys.values().all(|k| k.address() == ip("10.0.0.1")));
    }

    #[test]
    fn ipv6_only_pair_is_keyed_by_the_smaller_address() {
        let keys = election_keys(&[service(&["2001:db8::9", "2001:db8::5"])]);
        assert_eq!(key_of(&keys, "2001:db8::9"), ip("2001:db8::5"));
    }

    #[test]
    fn a_service_without_addresses_contributes_nothing() {
        assert!(election_keys(&[service(&[])]).is_empty());
    }

    #[test]
    fn groups_list_each_address_under_its_key() {
        let keys = election_keys(&[
            service(&["10.0.0.1", "2001:db8::1"]),
            service(&["10.0.0.2"]),
        ]);
        let groups = group_by_key(&keys);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[&ElectionKey::new(ip("10.0.0.1"))],
            BTreeSet::from([ip("10.0.0.1"), ip("2001:db8::1")])
        );
    }
}
