//! The incremental election agrees with the election from nothing after any sequence of
//! changes, reports exactly the addresses whose decision changed, and does only the work a
//! change calls for.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use model::ServiceKey;
use proptest::prelude::*;
use speaker_core::decide::{
    Advertisement, Decision, Elector, Facts, NodeFacts, ServiceFacts, decide,
};
use speaker_core::election::NodeName;

const NODES: [&str; 5] = ["a", "b", "c", "d", "e"];

fn address(i: u8) -> IpAddr {
    if i < 4 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, i))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)))
    }
}

fn node_set(mask: u8) -> BTreeSet<NodeName> {
    NODES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| NodeName::from(*n))
        .collect()
}

fn key(i: u8) -> ServiceKey {
    ServiceKey::new("default", format!("svc-{i}"), format!("uid-{i}"))
}

#[derive(Debug, Clone)]
enum Op {
    Service {
        index: u8,
        addresses: Vec<u8>,
        local: bool,
        endpoints: u8,
    },
    RemoveService(u8),
    Advertisements {
        address: u8,
        variant: u8,
    },
    Node {
        index: u8,
        excluded: bool,
        cordoned: bool,
    },
    RemoveNode(u8),
    Live(u8),
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, prop::collection::vec(0u8..8, 1..3), any::<bool>(), any::<u8>()).prop_map(
            |(index, addresses, local, endpoints)| Op::Service { index, addresses, local, endpoints }
        ),
        1 => (0u8..6).prop_map(Op::RemoveService),
        2 => (0u8..8, 0u8..5).prop_map(|(address, variant)| Op::Advertisements { address, variant }),
        1 => (0u8..5, any::<bool>(), any::<bool>())
            .prop_map(|(index, excluded, cordoned)| Op::Node { index, excluded, cordoned }),
        1 => (0u8..5).prop_map(Op::RemoveNode),
        3 => any::<u8>().prop_map(Op::Live),
        2 => Just(Op::Settle),
    ]
}

fn advertisements(variant: u8) -> Vec<Advertisement> {
    let ad = |name: &str, nodes: Option<u8>, interfaces: Option<&[&str]>| Advertisement {
        name: name.into(),
        nodes: nodes.map(node_set),
        interfaces: interfaces.map(|i| i.iter().map(|s| s.to_string()).collect()),
    };
    match variant {
        0 => vec![],
        1 => vec![ad("all", None, None)],
        2 => vec![ad("ab", Some(0b00011), Some(&["eth0"]))],
        3 => vec![
            ad("cde", Some(0b11100), Some(&["eth1"])),
            ad("a", Some(0b00001), None),
        ],
        _ => vec![ad("all-eth0", None, Some(&["eth0"]))],
    }
}

/// The facts as the changes left them, for the election from nothing.
#[derive(Default)]
struct Model {
    nodes: BTreeMap<NodeName, NodeFacts>,
    services: BTreeMap<u8, ServiceFacts>,
    advertisements: BTreeMap<IpAddr, Vec<Advertisement>>,
    live: BTreeSet<NodeName>,
}

impl Model {
    fn facts(&self) -> Facts {
        Facts {
            nodes: self.nodes.clone(),
            services: self.services.values().cloned().collect(),
            advertisements: self.advertisements.clone(),
        }
    }

    /// The elector keeps an address's advertisements while a Service holds it.
    fn forget_unheld(&mut self) {
        let held: BTreeSet<IpAddr> = self
            .services
            .values()
            .flat_map(|s| s.addresses.iter().copied())
            .collect();
        self.advertisements
            .retain(|address, _| held.contains(address));
    }
}

fn apply(elector: &mut Elector, model: &mut Model, op: &Op) {
    match op {
        Op::Service {
            index,
            addresses,
            local,
            endpoints,
        } => {
            let mut list: Vec<IpAddr> = addresses.iter().map(|a| address(*a)).collect();
            list.dedup();
            let facts = ServiceFacts {
                service: key(*index),
                addresses: list,
                local: *local,
                endpoint_nodes: node_set(*endpoints),
                conflict_reported: false,
            };
            elector.set_service(&key(*index), Some(facts.clone()));
            model.services.insert(*index, facts);
        }
        Op::RemoveService(index) => {
            elector.set_service(&key(*index), None);
            model.services.remove(index);
        }
        Op::Advertisements {
            address: a,
            variant,
        } => {
            elector.set_advertisements(address(*a), advertisements(*variant));
            model
                .advertisements
                .insert(address(*a), advertisements(*variant));
        }
        Op::Node {
            index,
            excluded,
            cordoned,
        } => {
            let facts = NodeFacts {
                excluded: *excluded,
                cordoned: *cordoned,
            };
            let name = NodeName::from(NODES[usize::from(*index)]);
            elector.set_node(&name, Some(facts.clone()));
            model.nodes.insert(name, facts);
        }
        Op::RemoveNode(index) => {
            let name = NodeName::from(NODES[usize::from(*index)]);
            elector.set_node(&name, None);
            model.nodes.remove(&name);
        }
        Op::Live(mask) => {
            elector.set_live(node_set(*mask));
            model.live = node_set(*mask);
        }
        Op::Settle => settle_and_check(elector, model),
    }
}

fn decisions(elector: &Elector) -> BTreeMap<IpAddr, Decision> {
    elector
        .decisions()
        .map(|(address, decision)| (*address, decision.clone()))
        .collect()
}

fn settle_and_check(elector: &mut Elector, model: &mut Model) {
    let before = decisions(elector);
    let changed = elector.settle();
    model.forget_unheld();
    let expected = decide(&model.facts(), &model.live);
    assert_eq!(decisions(elector), expected);
    let differs: BTreeSet<IpAddr> = before
        .keys()
        .chain(expected.keys())
        .filter(|a| before.get(*a) != expected.get(*a))
        .copied()
        .collect();
    assert_eq!(
        changed.keys().copied().collect::<BTreeSet<_>>(),
        differs,
        "the changes settle reports"
    );
    for (address, was) in &changed {
        assert_eq!(was.as_ref(), before.get(address), "the decision before");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn incremental_election_matches_the_election_from_nothing(
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut elector = Elector::new();
        let mut model = Model::default();
        for op in &ops {
            apply(&mut elector, &mut model, op);
        }
        settle_and_check(&mut elector, &mut model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The successor is who the election picks once the owner is gone (cordons, selectors,
    /// exclusions and Local endpoints included), or nobody when no node would be left.
    #[test]
    fn the_successor_owns_what_the_owner_leaves(ops in prop::collection::vec(op(), 1..40)) {
        let mut elector = Elector::new();
        let mut model = Model::default();
        for op in &ops {
            apply(&mut elector, &mut model, op);
        }
        elector.settle();
        model.forget_unheld();
        let facts = model.facts();
        for (address, decision) in elector.decisions() {
            let Ok(owner) = &decision.owner else {
                prop_assert_eq!(&decision.successor, &None);
                continue;
            };
            let mut rest = model.live.clone();
            rest.remove(owner);
            let next = decide(&facts, &rest)[address].owner.clone().ok();
            prop_assert_eq!(&decision.successor, &next, "{}", address);
        }
    }
}

fn many(services: u32, nodes: u32) -> (Elector, Vec<NodeName>) {
    let mut elector = Elector::new();
    let names: Vec<NodeName> = (0..nodes)
        .map(|i| NodeName::new(format!("node-{i}")))
        .collect();
    for i in 0..services {
        let ip = IpAddr::V4(Ipv4Addr::from(0xc633_0000 + i));
        let key = ServiceKey::new("default", format!("svc-{i}"), format!("uid-{i}"));
        elector.set_service(
            &key,
            Some(ServiceFacts {
                service: key.clone(),
                addresses: vec![ip],
                local: false,
                endpoint_nodes: BTreeSet::new(),
                conflict_reported: false,
            }),
        );
        elector.set_advertisements(ip, advertisements(1));
    }
    elector.set_live(names.iter().cloned().collect());
    elector.settle();
    (elector, names)
}

/// The work a change costs: groups elected, out of 1,000. Before the elector, the speaker
/// elected every address on every change.
#[test]
fn a_change_elects_only_what_it_can_move() {
    let (mut elector, names) = many(1000, 10);
    let work = |elector: &mut Elector, change: &dyn Fn(&mut Elector)| {
        let before = elector.elected();
        change(elector);
        elector.settle();
        elector.elected() - before
    };

    // One Service changes: its address alone.
    let key = ServiceKey::new("default", "svc-7", "uid-7");
    let mut facts = elector
        .decisions()
        .map(|(_, d)| d)
        .find(|d| *d.services == [key.clone()])
        .map(|d| d.key.address())
        .map(|ip| ServiceFacts {
            service: key.clone(),
            addresses: vec![ip],
            local: true,
            endpoint_nodes: [names[3].clone()].into(),
            conflict_reported: false,
        })
        .unwrap();
    assert_eq!(
        work(&mut elector, &|e| e.set_service(&key, Some(facts.clone()))),
        1
    );
    facts.endpoint_nodes.clear();
    assert_eq!(
        work(&mut elector, &|e| e.set_service(&key, Some(facts.clone()))),
        1
    );
    // The same facts again: nothing.
    assert_eq!(
        work(&mut elector, &|e| e.set_service(&key, Some(facts.clone()))),
        0
    );

    // A member leaves: its share (about a tenth), the addresses it was the successor of
    // (another tenth) and the one address nobody owns.
    let owned_by = |elector: &Elector, node: &NodeName| {
        elector
            .decisions()
            .map(|(_, d)| d)
            .filter(|d| d.owner.as_ref().ok() == Some(node))
            .count() as u64
    };
    let succeeded_by = |elector: &Elector, node: &NodeName| {
        elector
            .decisions()
            .map(|(_, d)| d)
            .filter(|d| d.successor.as_ref() == Some(node))
            .count() as u64
    };
    let share = owned_by(&elector, &names[0]);
    let succeeded = succeeded_by(&elector, &names[0]);
    assert!(share > 50 && succeeded > 50, "{share} {succeeded}");
    let rest: BTreeSet<NodeName> = names[1..].iter().cloned().collect();
    assert_eq!(
        work(&mut elector, &|e| e.set_live(rest.clone())),
        share + succeeded + 1
    );
    // It comes back: what it takes back, and the unowned one, are elected again.
    let all: BTreeSet<NodeName> = names.iter().cloned().collect();
    assert_eq!(
        work(&mut elector, &|e| e.set_live(all.clone())),
        share + succeeded + 1
    );
    assert_eq!(owned_by(&elector, &names[0]), share);
    assert_eq!(succeeded_by(&elector, &names[0]), succeeded);
}
