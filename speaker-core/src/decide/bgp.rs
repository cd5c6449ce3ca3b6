//! BGP mode: which prefixes a node advertises to each of its peers, and with which attributes.
//! Pure, like the election.
//!
//! In layer 2 mode one node answers for an address; in BGP mode every eligible node advertises
//! it with itself as next hop, and the routers spread connections over them (ECMP). A node is
//! eligible under one BGPAdvertisement covering the address's pool by the election's node
//! stages (see [`super`]): selected by the advertisement's `nodeSelectors`, not excluded, and
//! for `externalTrafficPolicy: Local` with a ready endpoint. A cordoned or stopping node
//! withdraws while another live node is eligible under the same advertisement, so a drain or
//! a rolling restart moves traffic away first; a cluster whose every candidate is cordoned
//! still serves.
//!
//! With `aggregationLength` shorter than the address, the node advertises the aggregate
//! covering it when it is eligible for any held address inside (the aggregate is the coarse
//! route for routers that take nothing longer; pair it with a /32 advertisement for
//! `Local` Services, as MetalLB's documentation does). Where several advertisements give one
//! prefix to one peer, communities are merged, and of differing `localPref`s the highest is
//! sent and the disagreement reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use model::bgp::Community;

use super::{NoOwner, NodeFacts, ServiceFacts, cordoned, excluded, selects, serves_local};
use crate::election::NodeName;

/// RFC 8326: "this path is about to go"; receivers lower its preference, so traffic moves to
/// the other nodes before the session closes.
pub const GRACEFUL_SHUTDOWN: Community = Community::Standard(0xFFFF_0000);

/// One BGPAdvertisement covering an address's pool, its node selectors resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpAdvertisement {
    pub spec: Arc<model::bgp::BgpAdvertisement>,
    /// Nodes its `nodeSelectors` select; `None`: every node.
    pub nodes: Option<BTreeSet<NodeName>>,
}

impl BgpAdvertisement {
    /// The prefix this advertisement gives `address`: itself, or the aggregate covering it.
    pub fn prefix(&self, address: IpAddr) -> IpNet {
        let (length, max) = match address {
            IpAddr::V4(_) => (self.spec.aggregation_length, 32),
            IpAddr::V6(_) => (self.spec.aggregation_length_v6, 128),
        };
        IpNet::new(address, length.min(max))
            .expect("a length no longer than the address")
            .trunc()
    }
}

/// What BGP mode reads, as the watches last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub nodes: BTreeMap<NodeName, NodeFacts>,
    pub services: Vec<ServiceFacts>,
    /// The BGPAdvertisements covering each address's pool.
    pub advertisements: BTreeMap<IpAddr, Vec<BgpAdvertisement>>,
}

/// The path attributes ferrolb chooses for one route (the rest, next hop and AS path, come
/// from the session).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attributes {
    /// Sent to iBGP peers only (RFC 4271 §5.1.5).
    pub local_pref: Option<u32>,
    pub communities: BTreeSet<Community>,
}

/// Whether the speaker is serving or on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// SIGTERM: what another live node serves is withdrawn, the rest is marked
    /// [`GRACEFUL_SHUTDOWN`] until the session closes.
    Stopping,
}

/// Why this node advertises an address to nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotAdvertised {
    /// The furthest election stage that left this node out, over the covering advertisements.
    Stage(NoOwner),
    /// Cordoned or stopping, and another live node advertises it.
    Leaving,
    /// Eligible, but the advertisements name none of this node's peers.
    NoPeer,
}

/// Two advertisements give one prefix to one peer with different `localPref`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPrefConflict {
    pub peer: String,
    pub prefix: IpNet,
    /// The values given, by advertisement name; the highest is sent.
    pub local_prefs: BTreeMap<String, u32>,
}

/// What a node advertises.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per peer name, the prefixes and their attributes.
    pub routes: BTreeMap<String, BTreeMap<IpNet, Attributes>>,
    /// Held addresses this node advertises to no peer, and why.
    pub not_advertised: BTreeMap<IpAddr, NotAdvertised>,
    pub conflicts: Vec<LocalPrefConflict>,
}

/// The routes `me` advertises to each of `peers` (the BGPPeers selected for it), with `live`
/// the speakers the membership holds alive.
pub fn plan(
    facts: &Facts,
    me: &NodeName,
    peers: &[String],
    live: &BTreeSet<NodeName>,
    phase: Phase,
) -> Plan {
    let mut plan = Plan::default();
    // Which advertisement gave which localPref, per (peer, prefix).
    let mut local_prefs: BTreeMap<(String, IpNet), BTreeMap<String, u32>> = BTreeMap::new();
    // A cordoned or stopping node withdraws what another live node serves, so the router
    // moves new connections away while this node can still take them.
    let leaving = phase == Phase::Stopping || cordoned(&facts.nodes, me);
    for (address, holders) in holders(facts) {
        let local = local_holders(&holders);
        let ads = facts
            .advertisements
            .get(&address)
            .map_or(&[][..], Vec::as_slice);
        let mut why = NotAdvertised::Stage(NoOwner::NotAdvertised);
        let mut advertised = false;
        for ad in ads {
            if let Err(stage) = eligible(facts, ad, me, &local) {
                why = why.max(NotAdvertised::Stage(stage));
                continue;
            }
            if leaving && served_elsewhere(facts, ad, me, live, &local) {
                why = why.max(NotAdvertised::Leaving);
                continue;
            }
            let prefix = ad.prefix(address);
            for peer in peers.iter().filter(|peer| ad.spec.to_peer(peer)) {
                advertised = true;
                let attributes = plan
                    .routes
                    .entry(peer.clone())
                    .or_default()
                    .entry(prefix)
                    .or_default();
                attributes
                    .communities
                    .extend(ad.spec.communities.iter().copied());
                if phase == Phase::Stopping {
                    attributes.communities.insert(GRACEFUL_SHUTDOWN);
                }
                if let Some(pref) = ad.spec.local_pref {
                    attributes.local_pref =
                        Some(attributes.local_pref.map_or(pref, |p| p.max(pref)));
                    local_prefs
                        .entry((peer.clone(), prefix))
                        .or_default()
                        .insert(ad.spec.scope.name.clone(), pref);
                }
            }
            if !advertised {
                why = why.max(NotAdvertised::NoPeer);
            }
        }
        if !advertised {
            plan.not_advertised.insert(address, why);
        }
    }
    plan.conflicts = local_prefs
        .into_iter()
        .filter(|(_, given)| given.values().collect::<BTreeSet<_>>().len() > 1)
        .map(|((peer, prefix), local_prefs)| LocalPrefConflict {
            peer,
            prefix,
            local_prefs,
        })
        .collect();
    plan
}

/// For every held address a BGPAdvertisement covers, the live nodes advertising it or, when
/// none does, the furthest election stage that left every live node out: what the Services'
/// conditions say. One pass over the Services.
pub fn advertised(
    facts: &Facts,
    live: &BTreeSet<NodeName>,
) -> BTreeMap<IpAddr, Result<BTreeSet<NodeName>, NoOwner>> {
    holders(facts)
        .into_iter()
        .filter(|(address, _)| {
            facts
                .advertisements
                .get(address)
                .is_some_and(|a| !a.is_empty())
        })
        .map(|(address, holders)| {
            let local = local_holders(&holders);
            let nodes = advertising_nodes(facts, address, &local, live);
            if !nodes.is_empty() {
                return (address, Ok(nodes));
            }
            // Nobody: every live node failed a stage under every advertisement (a cordoned
            // node that is left out has an eligible node elsewhere, which would be here).
            let ads = &facts.advertisements[&address];
            let why = live
                .iter()
                .flat_map(|node| {
                    ads.iter()
                        .filter_map(|ad| eligible(facts, ad, node, &local).err())
                })
                .max()
                .unwrap_or(NoOwner::NoLiveSpeaker);
            (address, Err(why))
        })
        .collect()
}

/// The live nodes that advertise `address` under some advertisement (to whichever of their
/// peers).
fn advertising_nodes(
    facts: &Facts,
    address: IpAddr,
    local: &[&ServiceFacts],
    live: &BTreeSet<NodeName>,
) -> BTreeSet<NodeName> {
    let ads = facts
        .advertisements
        .get(&address)
        .map_or(&[][..], Vec::as_slice);
    live.iter()
        .filter(|node| {
            ads.iter().any(|ad| {
                eligible(facts, ad, node, local).is_ok()
                    && !(cordoned(&facts.nodes, node)
                        && served_elsewhere(facts, ad, node, live, local))
            })
        })
        .cloned()
        .collect()
}

/// Every held address with the Services holding it.
fn holders(facts: &Facts) -> BTreeMap<IpAddr, Vec<&ServiceFacts>> {
    let mut holders: BTreeMap<IpAddr, Vec<&ServiceFacts>> = BTreeMap::new();
    for service in &facts.services {
        for address in &service.addresses {
            holders.entry(*address).or_default().push(service);
        }
    }
    holders
}

fn local_holders<'a>(holders: &[&'a ServiceFacts]) -> Vec<&'a ServiceFacts> {
    holders.iter().copied().filter(|s| s.local).collect()
}

/// The election's node stages for one node under one advertisement.
fn eligible(
    facts: &Facts,
    ad: &BgpAdvertisement,
    node: &NodeName,
    local: &[&ServiceFacts],
) -> Result<(), NoOwner> {
    if !selects(ad.nodes.as_ref(), node) {
        return Err(NoOwner::NoSelectedNode);
    }
    if excluded(&facts.nodes, node) {
        return Err(NoOwner::AllExcluded);
    }
    if !serves_local(local, node) {
        return Err(NoOwner::NoReadyEndpoint);
    }
    Ok(())
}

/// Whether a live node other than `me`, not cordoned, is eligible under `ad`.
fn served_elsewhere(
    facts: &Facts,
    ad: &BgpAdvertisement,
    me: &NodeName,
    live: &BTreeSet<NodeName>,
    local: &[&ServiceFacts],
) -> bool {
    live.iter().any(|node| {
        node != me && !cordoned(&facts.nodes, node) && eligible(facts, ad, node, local).is_ok()
    })
}

#[cfg(test)]
mod tests;
