//! Who announces each address: the speaker's election over the facts its watches and its
//! membership provide. Pure: no client, no socket, no clock; every speaker that sees the same
//! facts and the same live members decides the same owners.
//!
//! Eligible nodes for an address, narrowed stage by stage so that an address nobody announces
//! says which stage emptied it:
//! 1. live speakers (membership, not the API server);
//! 2. selected by an L2Advertisement covering the address's pool (`nodeSelectors`);
//! 3. not labelled `node.kubernetes.io/exclude-from-external-load-balancers`, `NetworkUnavailable`
//!    not True;
//! 4. for `externalTrafficPolicy: Local`, with a ready or serving endpoint of the Service;
//! 5. cordoned nodes only if no other node is left: a drain hands the address over, but a cluster
//!    whose every candidate is cordoned still serves.
//!
//! Addresses elected together (a dual-stack Service's two, see `speaker_core::election`) get the
//! intersection of their eligible sets, so they land on one node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

pub mod bgp;
mod elector;

pub use elector::Elector;

use crate::election::{ElectionKey, NodeName};
use model::ServiceKey;

/// The label that keeps a node out of external load balancing (also honoured by kube-proxy and
/// cloud providers).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// What the speaker needs to know of a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Labelled with [`EXCLUDE_LABEL`], or its `NetworkUnavailable` condition is True.
    pub excluded: bool,
    /// `spec.unschedulable`: cordoned, usually being drained.
    pub cordoned: bool,
}

/// The election's projection of a `model::Service` that holds addresses of ferrolb's pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    pub service: ServiceKey,
    pub addresses: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local`: only nodes in `endpoint_nodes` may announce.
    pub local: bool,
    /// Nodes with a ready (or serving) endpoint of the Service.
    pub endpoint_nodes: BTreeSet<NodeName>,
    /// Its owner reported that a foreign host answers for one of its addresses: whoever owns
    /// them next probes again instead of taking them over as a ferrolb node's.
    pub conflict_reported: bool,
}

/// One L2Advertisement that covers an address's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub name: String,
    /// Nodes its `nodeSelectors` select; `None`: every node.
    pub nodes: Option<BTreeSet<NodeName>>,
    /// Its `interfaces`; `None`: the speaker chooses.
    pub interfaces: Option<Vec<String>>,
}

/// Everything the election reads, as the watches last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub nodes: BTreeMap<NodeName, NodeFacts>,
    pub services: Vec<ServiceFacts>,
    /// The advertisements covering each address's pool; an address in no pool, or in a pool no
    /// advertisement covers, has none.
    pub advertisements: BTreeMap<IpAddr, Vec<Advertisement>>,
}

/// Why nobody announces an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoOwner {
    /// No L2Advertisement covers the address's pool (the controller reports this one).
    NotAdvertised,
    /// No live speaker at all.
    NoLiveSpeaker,
    /// The advertisements' node selectors select no live speaker's node.
    NoSelectedNode,
    /// Every selected node is excluded by label or has `NetworkUnavailable`.
    AllExcluded,
    /// `externalTrafficPolicy: Local` and no live, selected node has a ready endpoint.
    NoReadyEndpoint,
}

impl NoOwner {
    /// The condition and Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            NoOwner::NotAdvertised => "NotAdvertised",
            NoOwner::NoLiveSpeaker => "NoLiveSpeaker",
            NoOwner::NoSelectedNode => "NoSelectedNode",
            NoOwner::AllExcluded => "AllNodesExcluded",
            NoOwner::NoReadyEndpoint => "NoReadyEndpoint",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            NoOwner::NotAdvertised => "no L2Advertisement covers its pool",
            NoOwner::NoLiveSpeaker => "no speaker is running",
            NoOwner::NoSelectedNode => {
                "the L2Advertisements' nodeSelectors select no node with a running speaker"
            }
            NoOwner::AllExcluded => {
                "every selected node is labelled node.kubernetes.io/exclude-from-external-load-balancers or has NetworkUnavailable"
            }
            NoOwner::NoReadyEndpoint => {
                "externalTrafficPolicy is Local and no eligible node has a ready endpoint"
            }
        }
    }
}

/// The election's result for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key: ElectionKey,
    pub owner: Result<NodeName, NoOwner>,
    /// Who owns it should the owner go (the same stages and rank without the owner): the node
    /// that watches the owner for the failover's fast path.
    pub successor: Option<NodeName>,
    /// The interfaces the owner announces on: the union of the `interfaces` of the advertisements
    /// that cover the address and select the owner; `None` when one of them leaves it open.
    /// (Shared among the decisions with the same union.)
    pub interfaces: Option<Arc<[String]>>,
    /// The Services holding the address (shared with the elector's own list).
    pub services: Arc<[ServiceKey]>,
}

/// Stage 2 for one node and one advertisement: its `nodeSelectors` select the node.
pub(crate) fn selects(ad_nodes: Option<&BTreeSet<NodeName>>, node: &NodeName) -> bool {
    ad_nodes.is_none_or(|nodes| nodes.contains(node))
}

/// Stage 3: excluded by label or `NetworkUnavailable`. A node the watch has not seen (yet) is
/// not excluded: its speaker is live, and the label is the exception.
pub(crate) fn excluded(nodes: &BTreeMap<NodeName, NodeFacts>, node: &NodeName) -> bool {
    nodes.get(node).is_some_and(|n| n.excluded)
}

/// Stage 4: with `local`, the `externalTrafficPolicy: Local` Services holding an address, the
/// node must have an endpoint of one of them, or kube-proxy drops the traffic it attracts.
pub(crate) fn serves_local(local: &[&ServiceFacts], node: &NodeName) -> bool {
    local.is_empty() || local.iter().any(|s| s.endpoint_nodes.contains(node))
}

/// Stage 5's test.
pub(crate) fn cordoned(nodes: &BTreeMap<NodeName, NodeFacts>, node: &NodeName) -> bool {
    nodes.get(node).is_some_and(|n| n.cordoned)
}

/// Elects an owner for every address of every Service in `facts`: an [`Elector`] run from
/// nothing.
pub fn decide(facts: &Facts, live: &BTreeSet<NodeName>) -> BTreeMap<IpAddr, Decision> {
    let mut elector = Elector::with_facts(facts);
    elector.set_live(live.clone());
    elector.settle();
    elector
        .decisions()
        .map(|(address, decision)| (*address, decision.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election;

    pub(crate) fn names(list: &[&str]) -> BTreeSet<NodeName> {
        list.iter().map(|n| NodeName::from(*n)).collect()
    }

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) fn service(name: &str, addresses: &[&str]) -> ServiceFacts {
        ServiceFacts {
            service: ServiceKey::new("default", name, name),
            addresses: addresses.iter().map(|a| ip(a)).collect(),
            local: false,
            endpoint_nodes: BTreeSet::new(),
            conflict_reported: false,
        }
    }

    fn everywhere() -> Vec<Advertisement> {
        vec![Advertisement {
            name: "all".into(),
            nodes: None,
            interfaces: None,
        }]
    }

    fn facts(services: Vec<ServiceFacts>) -> Facts {
        let advertisements = services
            .iter()
            .flat_map(|s| s.addresses.iter().map(|a| (*a, everywhere())))
            .collect();
        Facts {
            nodes: ["a", "b", "c"]
                .iter()
                .map(|n| (NodeName::from(*n), NodeFacts::default()))
                .collect(),
            services,
            advertisements,
        }
    }

    fn owner(decisions: &BTreeMap<IpAddr, Decision>, address: &str) -> Result<String, NoOwner> {
        decisions[&ip(address)]
            .owner
            .clone()
            .map(|n| n.as_str().to_string())
    }

    #[test]
    fn services_named_finds_every_uid_of_one_name_and_no_other_name() {
        let mut elector = Elector::new();
        let held = [
            ("shop", "web", "u1"),
            ("shop", "web", "u2"),
            ("shop", "web-2", "u3"),
            ("shop", "wea", "u4"),
            ("shopping", "web", "u5"),
        ];
        for (n, (namespace, name, uid)) in held.iter().enumerate() {
            let key = ServiceKey::new(*namespace, *name, *uid);
            let mut facts = service(name, &[&format!("192.0.2.{}", n + 1)]);
            facts.service = key.clone();
            elector.set_service(&key, Some(facts));
        }
        let uids = |namespace: &str, name: &str| -> Vec<String> {
            elector
                .services_named(namespace, name)
                .map(|key| key.uid.clone())
                .collect()
        };
        assert_eq!(uids("shop", "web"), ["u1", "u2"]);
        assert_eq!(uids("shop", "web-2"), ["u3"]);
        assert_eq!(uids("shopping", "web"), ["u5"]);
        assert!(uids("shop", "we").is_empty());
        assert_eq!(elector.services().count(), held.len());
    }

    #[test]
    fn every_address_gets_the_rendezvous_owner_among_live_nodes() {
        let f = facts(vec![service("web", &["192.0.2.10"])]);
        let live = names(&["a", "b", "c"]);
        let d = decide(&f, &live);
        let expected = election::owner(&ElectionKey::new(ip("192.0.2.10")), &live).unwrap();
        assert_eq!(owner(&d, "192.0.2.10").unwrap(), expected.as_str());
        // Without that node the next-ranked one owns it, and nobody owns it with no one alive.
        let rest: BTreeSet<NodeName> = live.iter().filter(|n| *n != expected).cloned().collect();
        let next = election::owner(&ElectionKey::new(ip("192.0.2.10")), &rest).unwrap();
        assert_eq!(
            owner(&decide(&f, &rest), "192.0.2.10").unwrap(),
            next.as_str()
        );
        assert_eq!(
            owner(&decide(&f, &BTreeSet::new()), "192.0.2.10"),
            Err(NoOwner::NoLiveSpeaker)
        );
    }

    #[test]
    fn dual_stack_and_shared_addresses_stay_on_one_node() {
        let f = facts(vec![
            service("v4v6", &["2001:db8::10", "192.0.2.10"]),
            service("shares-v4", &["192.0.2.10"]),
            service("other", &["192.0.2.11", "2001:db8::11"]),
        ]);
        for live in [names(&["a", "b", "c"]), names(&["a", "b"]), names(&["c"])] {
            let d = decide(&f, &live);
            assert_eq!(owner(&d, "192.0.2.10"), owner(&d, "2001:db8::10"));
            assert_eq!(owner(&d, "192.0.2.11"), owner(&d, "2001:db8::11"));
            assert_eq!(d[&ip("192.0.2.10")].services.len(), 2);
        }
    }

    #[test]
    fn each_stage_that_empties_the_candidates_is_named() {
        let mut f = facts(vec![service("web", &["192.0.2.10"])]);
        let live = names(&["a", "b"]);
        f.advertisements.clear();
        assert_eq!(
            owner(&decide(&f, &live), "192.0.2.10"),
            Err(NoOwner::NotAdvertised)
        );
        f.advertisements.insert(
            ip("192.0.2.10"),
            vec![Advertisement {
                name: "rack-c".into(),
                nodes: Some(names(&["c"])),
                interfaces: None,
            }],
        );
        assert_eq!(
            owner(&decide(&f, &live), "192.0.2.10"),
            Err(NoOwner::NoSelectedNode)
        );
        f.advertisements.insert(ip("192.0.2.10"), everywhere());
        for node in ["a", "b"] {
            f.nodes.get_mut(&NodeName::from(node)).unwrap().excluded = true;
        }
        assert_eq!(
            owner(&decide(&f, &live), "192.0.2.10"),
            Err(NoOwner::AllExcluded)
        );
        f.nodes.get_mut(&NodeName::from("b")).unwrap().excluded = false;
        assert_eq!(owner(&decide(&f, &live), "192.0.2.10").unwrap(), "b");
        f.services[0].local = true;
        assert_eq!(
            owner(&decide(&f, &live), "192.0.2.10"),
            Err(NoOwner::NoReadyEndpoint)
        );
    }

    #[test]
    fn local_services_follow_their_endpoints() {
        let mut f = facts(vec![service("web", &["192.0.2.10"])]);
        f.services[0].local = true;
        let live = names(&["a", "b", "c"]);
        for holder in ["a", "b", "c"] {
            f.services[0].endpoint_nodes = names(&[holder]);
            assert_eq!(owner(&decide(&f, &live), "192.0.2.10").unwrap(), holder);
        }
    }

    #[test]
    fn cordoned_nodes_announce_only_when_nobody_else_can() {
        let mut f = facts(vec![service("web", &["192.0.2.10"])]);
        let live = names(&["a", "b", "c"]);
        let first = owner(&decide(&f, &live), "192.0.2.10").unwrap();
        f.nodes
            .get_mut(&NodeName::from(first.as_str()))
            .unwrap()
            .cordoned = true;
        let second = owner(&decide(&f, &live), "192.0.2.10").unwrap();
        assert_ne!(first, second);
        for node in f.nodes.values_mut() {
            node.cordoned = true;
        }
        assert_eq!(owner(&decide(&f, &live), "192.0.2.10").unwrap(), first);
    }

    #[test]
    fn interfaces_are_those_of_the_advertisements_selecting_the_owner() {
        let mut f = facts(vec![service("web", &["192.0.2.10"])]);
        let ad = |name: &str, nodes: &[&str], ifs: Option<&[&str]>| Advertisement {
            name: name.into(),
            nodes: Some(names(nodes)),
            interfaces: ifs.map(|i| i.iter().map(|s| s.to_string()).collect()),
        };
        f.advertisements.insert(
            ip("192.0.2.10"),
            vec![
                ad("lan", &["a"], Some(&["eth0"])),
                ad("storage", &["a", "b"], Some(&["eth1"])),
                ad("open", &["b"], None),
            ],
        );
        let d = decide(&f, &names(&["a"]));
        assert_eq!(
            d[&ip("192.0.2.10")].interfaces.as_deref(),
            Some(&["eth0".to_string(), "eth1".to_string()][..])
        );
        let d = decide(&f, &names(&["b"]));
        assert_eq!(d[&ip("192.0.2.10")].interfaces, None);
    }
}
