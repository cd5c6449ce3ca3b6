use super::*;
use model::ServiceKey;
use proptest::prelude::*;

use crate::decide::tests::{ip, names as nodes, service};
use model::Advertisement;

fn node(name: &str) -> NodeName {
    NodeName::from(name)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn peers(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| p.to_string()).collect()
}

fn local(name: &str, addresses: &[&str], endpoints: &[&str]) -> ServiceFacts {
    ServiceFacts {
        local: true,
        endpoint_nodes: nodes(endpoints),
        ..service(name, addresses)
    }
}

/// An advertisement's spec: every pool and node, every peer, /32 and /128, no attributes.
fn spec(name: &str) -> model::bgp::BgpAdvertisement {
    model::bgp::BgpAdvertisement {
        scope: Advertisement {
            name: name.into(),
            ..Default::default()
        },
        aggregation_length: 32,
        aggregation_length_v6: 128,
        local_pref: None,
        communities: vec![],
        peers: vec![],
    }
}

fn ad(spec: model::bgp::BgpAdvertisement) -> BgpAdvertisement {
    BgpAdvertisement {
        spec: Arc::new(spec),
        nodes: None,
    }
}

fn everywhere(name: &str) -> BgpAdvertisement {
    ad(spec(name))
}

/// Three nodes a, b, c; each address of `services` covered by `ads`.
fn facts(services: Vec<ServiceFacts>, ads: Vec<BgpAdvertisement>) -> Facts {
    let advertisements = services
        .iter()
        .flat_map(|s| s.addresses.iter().map(|a| (*a, ads.clone())))
        .collect();
    Facts {
        nodes: ["a", "b", "c"]
            .iter()
            .map(|n| (node(n), NodeFacts::default()))
            .collect(),
        services,
        advertisements,
    }
}

fn prefixes(plan: &Plan, peer: &str) -> Vec<String> {
    plan.routes
        .get(peer)
        .map(|routes| routes.keys().map(|p| p.to_string()).collect())
        .unwrap_or_default()
}

fn serving(facts: &Facts, me: &str, my_peers: &[&str]) -> Plan {
    plan(
        facts,
        &node(me),
        &peers(my_peers),
        &nodes(&["a", "b", "c"]),
        Phase::Serving,
    )
}

#[test]
fn with_cluster_policy_every_node_advertises_every_address_to_every_peer() {
    let facts = facts(
        vec![service("web", &["192.0.2.10", "2001:db8::10"])],
        vec![everywhere("all")],
    );
    for me in ["a", "b", "c"] {
        let plan = serving(&facts, me, &["tor1", "tor2"]);
        for peer in ["tor1", "tor2"] {
            assert_eq!(
                prefixes(&plan, peer),
                ["192.0.2.10/32", "2001:db8::10/128"],
                "{me} to {peer}"
            );
        }
        assert!(plan.not_advertised.is_empty());
        assert!(plan.conflicts.is_empty());
    }
    assert_eq!(
        advertisers(&facts, ip("192.0.2.10"), &nodes(&["a", "b", "c"])),
        nodes(&["a", "b", "c"])
    );
}

#[test]
fn with_local_policy_only_nodes_with_a_ready_endpoint_advertise() {
    let facts = facts(
        vec![local("web", &["192.0.2.10"], &["b"])],
        vec![everywhere("all")],
    );
    assert_eq!(
        prefixes(&serving(&facts, "b", &["tor"]), "tor"),
        ["192.0.2.10/32"]
    );
    let plan = serving(&facts, "a", &["tor"]);
    assert_eq!(prefixes(&plan, "tor"), Vec::<String>::new());
    assert_eq!(
        plan.not_advertised[&ip("192.0.2.10")],
        NotAdvertised::Stage(NoOwner::NoReadyEndpoint)
    );
    assert_eq!(
        advertisers(&facts, ip("192.0.2.10"), &nodes(&["a", "b", "c"])),
        nodes(&["b"])
    );
    let vip = ip("192.0.2.10");
    assert_eq!(
        advertised(&facts, &nodes(&["a", "b", "c"]))[&vip],
        Ok(nodes(&["b"]))
    );
    // The node with the endpoint is gone: the condition says why nobody advertises.
    assert_eq!(
        advertised(&facts, &nodes(&["a", "c"]))[&vip],
        Err(NoOwner::NoReadyEndpoint)
    );
    assert_eq!(
        advertised(&facts, &BTreeSet::new())[&vip],
        Err(NoOwner::NoLiveSpeaker)
    );
}

#[test]
fn a_cluster_service_sharing_the_address_with_a_local_one_does_not_widen_it() {
    // kube-proxy drops the Local Service's traffic on a node without its endpoint, whatever
    // the other Service on the address allows.
    let facts = facts(
        vec![
            service("dns-tcp", &["192.0.2.53"]),
            local("dns-udp", &["192.0.2.53"], &["c"]),
        ],
        vec![everywhere("all")],
    );
    assert_eq!(
        advertisers(&facts, ip("192.0.2.53"), &nodes(&["a", "b", "c"])),
        nodes(&["c"])
    );
}

#[test]
fn node_selectors_and_the_exclusion_label_keep_nodes_out() {
    let mut facts = facts(
        vec![service("web", &["192.0.2.10"])],
        vec![BgpAdvertisement {
            nodes: Some(nodes(&["a", "b"])),
            ..everywhere("rack1")
        }],
    );
    facts.nodes.get_mut(&node("b")).unwrap().excluded = true;
    assert_eq!(
        prefixes(&serving(&facts, "a", &["tor"]), "tor"),
        ["192.0.2.10/32"]
    );
    for (me, why) in [("b", NoOwner::AllExcluded), ("c", NoOwner::NoSelectedNode)] {
        let plan = serving(&facts, me, &["tor"]);
        assert!(plan.routes.is_empty(), "{me}");
        assert_eq!(
            plan.not_advertised[&ip("192.0.2.10")],
            NotAdvertised::Stage(why),
            "{me}"
        );
    }
}

#[test]
fn an_address_no_advertisement_covers_is_advertised_by_nobody() {
    let mut facts = facts(vec![service("web", &["192.0.2.10"])], vec![]);
    facts.advertisements.clear();
    let plan = serving(&facts, "a", &["tor"]);
    assert!(plan.routes.is_empty());
    assert_eq!(
        plan.not_advertised[&ip("192.0.2.10")],
        NotAdvertised::Stage(NoOwner::NotAdvertised)
    );
}

#[test]
fn a_cordoned_node_withdraws_while_another_live_node_advertises() {
    let mut facts = facts(
        vec![service("web", &["192.0.2.10"])],
        vec![everywhere("all")],
    );
    facts.nodes.get_mut(&node("a")).unwrap().cordoned = true;
    let all = nodes(&["a", "b", "c"]);
    let plan_a = plan(&facts, &node("a"), &peers(&["tor"]), &all, Phase::Serving);
    assert!(plan_a.routes.is_empty());
    assert_eq!(
        plan_a.not_advertised[&ip("192.0.2.10")],
        NotAdvertised::Leaving
    );
    assert_eq!(
        advertisers(&facts, ip("192.0.2.10"), &all),
        nodes(&["b", "c"])
    );

    // b and c dead: a is the last one left and keeps serving.
    let alone = nodes(&["a"]);
    let plan_alone = plan(&facts, &node("a"), &peers(&["tor"]), &alone, Phase::Serving);
    assert_eq!(prefixes(&plan_alone, "tor"), ["192.0.2.10/32"]);
    // Every node cordoned: all keep serving.
    for n in ["b", "c"] {
        facts.nodes.get_mut(&node(n)).unwrap().cordoned = true;
    }
    assert_eq!(advertisers(&facts, ip("192.0.2.10"), &all), all);
}

#[test]
fn a_cordoned_node_keeps_a_local_address_whose_only_endpoint_is_on_it() {
    let mut facts = facts(
        vec![local("web", &["192.0.2.10"], &["a"])],
        vec![everywhere("all")],
    );
    facts.nodes.get_mut(&node("a")).unwrap().cordoned = true;
    assert_eq!(
        prefixes(&serving(&facts, "a", &["tor"]), "tor"),
        ["192.0.2.10/32"]
    );
}

#[test]
fn an_advertisement_naming_peers_goes_to_those_peers_only() {
    let facts = facts(
        vec![service("web", &["192.0.2.10"])],
        vec![ad(model::bgp::BgpAdvertisement {
            peers: peers(&["tor2", "elsewhere"]),
            ..spec("to-tor2")
        })],
    );
    let plan = serving(&facts, "a", &["tor1", "tor2"]);
    assert_eq!(prefixes(&plan, "tor1"), Vec::<String>::new());
    assert_eq!(prefixes(&plan, "tor2"), ["192.0.2.10/32"]);
    // A node with no session to a named peer advertises it to nobody, and says so.
    let lonely = serving(&facts, "a", &["tor1"]);
    assert!(lonely.routes.is_empty());
    assert_eq!(
        lonely.not_advertised[&ip("192.0.2.10")],
        NotAdvertised::NoPeer
    );
}

#[test]
fn aggregation_rolls_addresses_up_into_one_prefix() {
    let facts = facts(
        vec![
            service("web", &["198.51.100.10", "2001:db8::1:5"]),
            service("api", &["198.51.100.200", "2001:db8::1:f"]),
            service("far", &["203.0.113.7"]),
        ],
        vec![ad(model::bgp::BgpAdvertisement {
            aggregation_length: 24,
            aggregation_length_v6: 124,
            ..spec("rollup")
        })],
    );
    assert_eq!(
        prefixes(&serving(&facts, "a", &["tor"]), "tor"),
        ["198.51.100.0/24", "203.0.113.0/24", "2001:db8::1:0/124"]
    );
}

#[test]
fn metallbs_documented_pair_a_local_32_and_an_upstream_24() {
    // MetalLB's "advanced BGP configuration" example: each address as a /32 with localPref
    // 100 and no-advertise inside, and the /24 to everyone.
    let no_advertise = Community::parse("no-advertise").unwrap();
    let facts = facts(
        vec![service("web", &["198.51.100.10"])],
        vec![
            ad(model::bgp::BgpAdvertisement {
                local_pref: Some(100),
                communities: vec![no_advertise],
                ..spec("local")
            }),
            ad(model::bgp::BgpAdvertisement {
                aggregation_length: 24,
                ..spec("external")
            }),
        ],
    );
    let plan = serving(&facts, "b", &["tor"]);
    let routes = &plan.routes["tor"];
    assert_eq!(
        routes[&net("198.51.100.10/32")],
        Attributes {
            local_pref: Some(100),
            communities: [no_advertise].into(),
        }
    );
    assert_eq!(routes[&net("198.51.100.0/24")], Attributes::default());
    assert!(plan.conflicts.is_empty());
}

#[test]
fn advertisements_giving_one_prefix_merge_communities_and_report_differing_local_prefs() {
    let standard = Community::parse("64512:1").unwrap();
    let large = Community::parse("large:64512:2:3").unwrap();
    let facts = facts(
        vec![service("web", &["192.0.2.10"])],
        vec![
            ad(model::bgp::BgpAdvertisement {
                local_pref: Some(50),
                communities: vec![standard],
                ..spec("low")
            }),
            ad(model::bgp::BgpAdvertisement {
                local_pref: Some(200),
                communities: vec![large],
                ..spec("high")
            }),
        ],
    );
    let plan = serving(&facts, "a", &["tor"]);
    assert_eq!(
        plan.routes["tor"][&net("192.0.2.10/32")],
        Attributes {
            local_pref: Some(200),
            communities: [standard, large].into(),
        }
    );
    assert_eq!(
        plan.conflicts,
        [LocalPrefConflict {
            peer: "tor".into(),
            prefix: net("192.0.2.10/32"),
            local_prefs: [("high".to_string(), 200), ("low".to_string(), 50)].into(),
        }]
    );
}

#[test]
fn equal_local_prefs_from_two_advertisements_are_no_conflict() {
    let facts = facts(
        vec![service("web", &["192.0.2.10"])],
        vec![
            ad(model::bgp::BgpAdvertisement {
                local_pref: Some(100),
                ..spec("one")
            }),
            ad(model::bgp::BgpAdvertisement {
                local_pref: Some(100),
                ..spec("two")
            }),
        ],
    );
    assert!(serving(&facts, "a", &["tor"]).conflicts.is_empty());
}

#[test]
fn stopping_marks_every_route_graceful_shutdown() {
    let community = Community::parse("64512:1").unwrap();
    let facts = facts(
        vec![service("web", &["192.0.2.10", "2001:db8::10"])],
        vec![ad(model::bgp::BgpAdvertisement {
            communities: vec![community],
            ..spec("all")
        })],
    );
    // The last live node: it keeps its routes, marked, until its session closes.
    let plan = plan(
        &facts,
        &node("a"),
        &peers(&["tor"]),
        &nodes(&["a"]),
        Phase::Stopping,
    );
    assert_eq!(plan.routes["tor"].len(), 2);
    for attributes in plan.routes["tor"].values() {
        assert_eq!(
            attributes.communities,
            [community, GRACEFUL_SHUTDOWN].into()
        );
    }
}

#[test]
fn a_stopping_node_withdraws_what_another_live_node_advertises() {
    let facts = facts(
        vec![
            service("web", &["192.0.2.10"]),
            local("db", &["192.0.2.20"], &["a"]),
        ],
        vec![everywhere("all")],
    );
    let plan = plan(
        &facts,
        &node("a"),
        &peers(&["tor"]),
        &nodes(&["a", "b", "c"]),
        Phase::Stopping,
    );
    // b and c serve web: a withdraws it, and the router moves new connections before a's
    // session closes. db's only endpoint is on a: kept, marked GRACEFUL_SHUTDOWN.
    assert_eq!(prefixes(&plan, "tor"), ["192.0.2.20/32"]);
    assert_eq!(
        plan.not_advertised[&ip("192.0.2.10")],
        NotAdvertised::Leaving
    );
    assert!(
        plan.routes["tor"][&net("192.0.2.20/32")]
            .communities
            .contains(&GRACEFUL_SHUTDOWN)
    );
}

fn arb_facts() -> impl Strategy<Value = Facts> {
    let node_names = ["a", "b", "c", "d"];
    let node_facts = proptest::collection::vec((any::<bool>(), any::<bool>()), 4);
    let services = proptest::collection::vec(
        (
            0u8..8,
            any::<bool>(),
            proptest::collection::btree_set(0usize..4, 0..4),
        ),
        0..6,
    );
    let ads = proptest::collection::vec(
        (
            proptest::option::of(proptest::collection::btree_set(0usize..4, 0..4)),
            prop_oneof![Just(32u8), Just(30u8), Just(24u8)],
            proptest::option::of(0u32..3),
        ),
        0..3,
    );
    (node_facts, services, ads).prop_map(move |(node_facts, services, ads)| {
        let name = |i: &usize| node(node_names[*i]);
        let ads: Vec<BgpAdvertisement> = ads
            .into_iter()
            .enumerate()
            .map(|(i, (selected, length, pref))| BgpAdvertisement {
                nodes: selected.map(|s| s.iter().map(name).collect()),
                ..ad(model::bgp::BgpAdvertisement {
                    aggregation_length: length,
                    local_pref: pref,
                    ..spec(&format!("ad{i}"))
                })
            })
            .collect();
        let services: Vec<ServiceFacts> = services
            .into_iter()
            .enumerate()
            .map(|(i, (host, is_local, endpoints))| ServiceFacts {
                service: ServiceKey::new("default", format!("s{i}"), format!("u{i}")),
                addresses: vec![IpAddr::from([192, 0, 2, host])],
                local: is_local,
                endpoint_nodes: endpoints.iter().map(name).collect(),
                conflict_reported: false,
            })
            .collect();
        let advertisements = services
            .iter()
            .flat_map(|s| s.addresses.iter().map(|a| (*a, ads.clone())))
            .collect();
        Facts {
            nodes: node_facts
                .into_iter()
                .enumerate()
                .map(|(i, (excluded, cordoned))| (name(&i), NodeFacts { excluded, cordoned }))
                .collect(),
            services,
            advertisements,
        }
    })
}

/// The nodes [`advertised`] names for `address` (none when it says why nobody does).
fn advertisers(facts: &Facts, address: IpAddr, live: &BTreeSet<NodeName>) -> BTreeSet<NodeName> {
    match advertised(facts, live).remove(&address) {
        Some(Ok(nodes)) => nodes,
        _ => BTreeSet::new(),
    }
}

proptest! {
    /// A node's plan and `advertised` agree: a node advertises an address (the prefix of
    /// some covering advertisement) exactly when `advertised` names it, every held address is
    /// either advertised or explained, and every prefix covers a held address.
    #[test]
    fn plans_and_advertisers_agree(facts in arb_facts(), live_mask in 1u8..16) {
        let live: BTreeSet<NodeName> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .filter(|(i, _)| live_mask & (1 << i) != 0)
            .map(|(_, n)| node(n))
            .collect();
        let held: BTreeSet<IpAddr> =
            facts.services.iter().flat_map(|s| s.addresses.iter().copied()).collect();
        for me in &live {
            let plan = plan(&facts, me, &peers(&["tor"]), &live, Phase::Serving);
            let routes = plan.routes.get("tor").cloned().unwrap_or_default();
            for prefix in routes.keys() {
                prop_assert!(held.iter().any(|a| prefix.contains(a)), "{prefix} covers nothing held");
            }
            let index = advertised(&facts, &live);
            for address in &held {
                let covered = facts.advertisements.get(address).is_some_and(|a| !a.is_empty());
                match index.get(address) {
                    Some(Ok(nodes)) => prop_assert!(!nodes.is_empty()),
                    Some(Err(why)) => {
                        // The reason is a stage some node failed, or nobody is live.
                        let failed = live.iter().any(|n| {
                            super::plan(&facts, n, &peers(&["tor"]), &live, Phase::Serving)
                                .not_advertised
                                .get(address)
                                == Some(&NotAdvertised::Stage(*why))
                        });
                        prop_assert!(failed, "{:?} for {}", why, address);
                    }
                    None => prop_assert!(!covered, "{} covered but not indexed", address),
                }
                let advertises = matches!(index.get(address), Some(Ok(nodes)) if nodes.contains(me));
                let explained = plan.not_advertised.contains_key(address);
                prop_assert_ne!(advertises, explained, "{} for {}", me.as_str(), address);
                if advertises {
                    let in_routes = facts.advertisements[address]
                        .iter()
                        .any(|ad| routes.contains_key(&ad.prefix(*address)));
                    prop_assert!(in_routes);
                }
            }
        }
    }
}
