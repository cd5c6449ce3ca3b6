//! Properties every speaker relies on to agree without talking: order independence, minimal
//! movement, dual-stack pairs together, one owner per shared address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use speaker_core::election::{ElectionKey, NodeName, ServiceAddresses, election_keys, owner};

fn node_names() -> impl Strategy<Value = Vec<NodeName>> {
    prop::collection::btree_set("[a-z][a-z0-9-]{0,12}", 1..12)
        .prop_map(|names| names.into_iter().map(NodeName::from).collect())
}

fn any_key() -> impl Strategy<Value = ElectionKey> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
    .prop_map(ElectionKey::new)
}

/// Services drawn from 6 IPv4 and 6 IPv6 addresses, so that sharing, and sharing with
/// different partners, happens often.
fn services() -> impl Strategy<Value = Vec<ServiceAddresses>> {
    let v4 = (0u8..6).prop_map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)));
    let v6 = (0u16..6).prop_map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)));
    let service = (prop::option::of(v4), prop::option::of(v6), any::<bool>())
        .prop_filter("a Service has an address", |(a, b, _)| {
            a.is_some() || b.is_some()
        })
        .prop_map(|(a, b, v6_first)| {
            let mut addresses: Vec<IpAddr> = a.into_iter().chain(b).collect();
            if v6_first {
                addresses.reverse();
            }
            ServiceAddresses { addresses }
        });
    prop::collection::vec(service, 1..10)
}

proptest! {
    #[test]
    fn owner_ignores_order_and_duplicates(
        nodes in node_names(),
        key in any_key(),
        seed in any::<u64>(),
    ) {
        let mut scrambled: Vec<&NodeName> = nodes.iter().chain(nodes.iter()).collect();
        shuffle(&mut scrambled, seed);
        prop_assert_eq!(owner(&key, &nodes), owner(&key, scrambled.iter().copied()));
    }

    #[test]
    fn membership_changes_move_only_what_they_must(
        nodes in node_names(),
        newcomer in "[A-Z]{1,8}",
        keys in prop::collection::vec(any_key(), 1..60),
        leaving in any::<prop::sample::Index>(),
    ) {
        let gone = leaving.get(&nodes);
        let rest: Vec<&NodeName> = nodes.iter().filter(|n| *n != gone).collect();
        let newcomer = NodeName::new(newcomer);
        let grown: Vec<&NodeName> = nodes.iter().chain([&newcomer]).collect();
        for key in &keys {
            let before = owner(key, &nodes).unwrap();
            let after_leave = owner(key, rest.iter().copied());
            if before != gone {
                prop_assert_eq!(after_leave, Some(before));
            }
            let after_join = owner(key, grown.iter().copied()).unwrap();
            prop_assert!(after_join == before || after_join == &newcomer);
        }
    }

    #[test]
    fn keys_do_not_depend_on_service_order(services in services(), seed in any::<u64>()) {
        let mut scrambled = services.clone();
        shuffle(&mut scrambled, seed);
        for s in &mut scrambled {
            s.addresses.reverse();
        }
        prop_assert_eq!(election_keys(&services), election_keys(&scrambled));
    }

    #[test]
    fn every_service_is_elected_under_one_key_its_smallest_connected_address(
        services in services(),
    ) {
        let keys = election_keys(&services);
        let held: BTreeSet<IpAddr> =
            services.iter().flat_map(|s| s.addresses.iter().copied()).collect();
        prop_assert_eq!(keys.keys().copied().collect::<BTreeSet<_>>(), held);
        for service in &services {
            let of_service: BTreeSet<ElectionKey> =
                service.addresses.iter().map(|a| keys[a]).collect();
            prop_assert_eq!(of_service.len(), 1, "{:?} split over {:?}", service, of_service);
        }
        prop_assert_eq!(keys, smallest_connected_address(&services));
    }

    /// Several speakers, each seeing the Services and the members in its own order, decide
    /// independently whether to announce; exactly one does for every address, and a Service's
    /// addresses are all announced by that one.
    #[test]
    fn every_address_has_exactly_one_announcer(
        services in services(),
        nodes in node_names(),
        seeds in prop::collection::vec(any::<u64>(), 1..6),
    ) {
        let views: Vec<BTreeMap<IpAddr, ElectionKey>> = seeds
            .iter()
            .map(|&seed| {
                let mut view = services.clone();
                shuffle(&mut view, seed);
                election_keys(&view)
            })
            .collect();
        let mut announcers: BTreeMap<IpAddr, BTreeSet<&NodeName>> = BTreeMap::new();
        for (i, me) in nodes.iter().enumerate() {
            let keys = &views[i % views.len()];
            let mut members: Vec<&NodeName> = nodes.iter().collect();
            shuffle(&mut members, seeds[i % seeds.len()].rotate_left(7));
            for (address, key) in keys {
                if owner(key, members.iter().copied()) == Some(me) {
                    announcers.entry(*address).or_default().insert(me);
                }
            }
        }
        for (address, by) in &announcers {
            prop_assert_eq!(by.len(), 1, "{} announced by {:?}", address, by);
        }
        prop_assert_eq!(announcers.len(), views[0].len());
        for service in &services {
            let by: BTreeSet<&&NodeName> =
                service.addresses.iter().flat_map(|a| &announcers[a]).collect();
            prop_assert_eq!(by.len(), 1, "{:?} announced from {:?}", service, by);
        }
    }
}

/// An independent oracle for the keys: label propagation until nothing changes, every address
/// taking the smallest label among the Services that hold it.
fn smallest_connected_address(services: &[ServiceAddresses]) -> BTreeMap<IpAddr, ElectionKey> {
    let mut label: BTreeMap<IpAddr, IpAddr> = services
        .iter()
        .flat_map(|s| s.addresses.iter().map(|a| (*a, *a)))
        .collect();
    loop {
        let mut changed = false;
        for service in services {
            let smallest = service.addresses.iter().map(|a| label[a]).min().unwrap();
            for address in &service.addresses {
                if label[address] != smallest {
                    label.insert(*address, smallest);
                    changed = true;
                }
            }
        }
        if !changed {
            return label
                .into_iter()
                .map(|(a, l)| (a, ElectionKey::new(l)))
                .collect();
        }
    }
}

/// Deterministic Fisher-Yates driven by a SplitMix64 stream, so proptest shrinks the seed.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}
