//! The election kept up to date change by change.
//!
//! A speaker sees a stream of small changes (one Service, one EndpointSlice, one member) over
//! thousands of addresses. Electing every address again on each (a SHA-256 per address and
//! live node) is what the speaker once did, twice a second besides. The [`Elector`] holds the
//! facts and the decisions, and [`Elector::settle`] elects again only:
//!
//! - the groups holding an address whose Service or advertisements changed (regrouped first:
//!   a change of Service may join or split groups);
//! - on a member leaving, the groups it owned, and those nobody owns (their reason may change);
//! - on a member joining, the groups where it is eligible and outranks the owner (one hash per
//!   group), and those nobody owns;
//! - everything when a node's facts change (labels, cordon: rare).
//!
//! Every node stage of the election is a test of that node alone, so whether a joining node
//! takes a group over is decided by electing among it and the current owner only.
//! [`super::decide`] is this same code run from nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use model::ServiceKey;

use super::{
    Advertisement, Decision, Facts, NoOwner, NodeFacts, ServiceFacts, cordoned, excluded, selects,
    serves_local,
};
use crate::election::{self, ElectionKey, NodeName, ServiceAddresses};

/// The facts, the live members and the decisions, and what changed since the last settle.
#[derive(Debug, Default)]
pub struct Elector {
    nodes: BTreeMap<NodeName, NodeFacts>,
    services: BTreeMap<ServiceKey, ServiceFacts>,
    /// What is held of each address, in one map: one tree entry an address instead of one
    /// in each of three maps (holders, advertisements, decisions).
    addresses: BTreeMap<IpAddr, Held>,
    /// Each distinct list of covering advertisements, once: the thousands of addresses of a
    /// pool share one list instead of holding a copy each.
    coverings: Vec<Arc<[Advertisement]>>,
    /// Each distinct union of interfaces, once, for the same reason.
    interface_lists: Vec<Arc<[String]>>,
    live: BTreeSet<NodeName>,
    /// The addresses elected under each key; empty for the key's own address alone, as
    /// nearly every group is (a one-address list would be an allocation per address).
    groups: BTreeMap<ElectionKey, Vec<IpAddr>>,
    /// Addresses whose Services or advertisements changed since the last settle.
    touched: BTreeSet<IpAddr>,
    /// A node's facts changed: every group is elected again.
    everything: bool,
    departed: BTreeSet<NodeName>,
    joined: BTreeSet<NodeName>,
    /// Groups elected so far (a measure of the work done, for tests and metrics).
    elected: u64,
}

/// What the elector holds of one address.
#[derive(Debug, Default)]
struct Held {
    /// The Services holding it, sorted; shared with its decision (a slice, not a set: nearly
    /// every address has one Service, and a one-element set costs a whole tree node). Empty:
    /// none does any more, and the entry goes at the next settle.
    services: Arc<[ServiceKey]>,
    /// The advertisements covering its pool, once set.
    advertisements: Option<Arc<[Advertisement]>>,
    /// As of the last settle.
    decision: Option<Decision>,
}

impl Held {
    fn is_held(&self) -> bool {
        !self.services.is_empty()
    }
}

impl Elector {
    pub fn new() -> Elector {
        Elector::default()
    }

    /// An elector holding `facts`, with nothing settled yet.
    pub fn with_facts(facts: &Facts) -> Elector {
        let mut elector = Elector::new();
        for (node, node_facts) in &facts.nodes {
            elector.set_node(node, Some(node_facts.clone()));
        }
        for (address, advertisements) in &facts.advertisements {
            elector.set_advertisements(*address, advertisements.clone());
        }
        for service in &facts.services {
            elector.set_service(&service.service, Some(service.clone()));
        }
        elector
    }

    /// A Service's facts (`None`: it is gone or holds none of our addresses).
    pub fn set_service(&mut self, key: &ServiceKey, facts: Option<ServiceFacts>) {
        let old = self.services.get(key);
        if old == facts.as_ref() {
            return;
        }
        if let Some(old) = self.services.remove(key) {
            for address in &old.addresses {
                self.touched.insert(*address);
                if let Some(held) = self.addresses.get_mut(address)
                    && let Ok(at) = held.services.binary_search(key)
                {
                    let mut left = held.services.to_vec();
                    left.remove(at);
                    held.services = left.into();
                }
            }
        }
        if let Some(facts) = facts {
            for address in &facts.addresses {
                self.touched.insert(*address);
                let held = self.addresses.entry(*address).or_default();
                if let Err(at) = held.services.binary_search(key) {
                    let mut more = held.services.to_vec();
                    more.insert(at, key.clone());
                    held.services = more.into();
                }
            }
            self.services.insert(key.clone(), facts);
        }
    }

    /// The advertisements covering an address's pool (empty: none). Kept while a Service
    /// holds the address.
    pub fn set_advertisements(&mut self, address: IpAddr, advertisements: Vec<Advertisement>) {
        if self
            .addresses
            .get(&address)
            .and_then(|held| held.advertisements.as_deref())
            .is_some_and(|held| *held == *advertisements)
        {
            return;
        }
        self.touched.insert(address);
        let shared = share(&mut self.coverings, advertisements);
        self.addresses.entry(address).or_default().advertisements = Some(shared);
    }

    /// A node's facts (`None`: the Node is gone).
    pub fn set_node(&mut self, node: &NodeName, facts: Option<NodeFacts>) {
        let changed = match facts {
            Some(facts) => self.nodes.insert(node.clone(), facts.clone()) != Some(facts),
            None => self.nodes.remove(node).is_some(),
        };
        self.everything |= changed;
    }

    /// The live members, from the gossip.
    pub fn set_live(&mut self, live: BTreeSet<NodeName>) {
        for gone in self.live.difference(&live) {
            if !self.joined.remove(gone) {
                self.departed.insert(gone.clone());
            }
        }
        for new in live.difference(&self.live) {
            if !self.departed.remove(new) {
                self.joined.insert(new.clone());
            }
        }
        self.live = live;
    }

    pub fn live(&self) -> &BTreeSet<NodeName> {
        &self.live
    }

    /// Every address's decision as of the last settle, in address order.
    pub fn decisions(&self) -> impl Iterator<Item = (&IpAddr, &Decision)> {
        self.addresses
            .iter()
            .filter_map(|(address, held)| Some((address, held.decision.as_ref()?)))
    }

    /// An address's decision as of the last settle.
    pub fn decision(&self, address: &IpAddr) -> Option<&Decision> {
        self.addresses.get(address)?.decision.as_ref()
    }

    /// Groups elected since this elector was made.
    pub fn elected(&self) -> u64 {
        self.elected
    }

    /// A Service's facts as last set.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceFacts> {
        self.services.get(key)
    }

    /// The Services held.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// The Services held under a namespace and name, whatever their UIDs (keys sort by
    /// namespace, name, then UID): what a caller that knows only the name must let go.
    pub fn services_named<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a ServiceKey> {
        self.services
            .range(ServiceKey::new(namespace, name, "")..)
            .map(|(key, _)| key)
            .take_while(move |key| key.namespace == namespace && key.name == name)
    }

    /// Elects what the changes since the last settle may have changed. Returns the addresses
    /// whose decision changed, appeared or went away, each with its decision before.
    pub fn settle(&mut self) -> BTreeMap<IpAddr, Option<Decision>> {
        let touched = std::mem::take(&mut self.touched);
        let regrouped = self.regroup(&touched);
        // Addresses no Service holds any more go, and their decisions with them.
        let mut changed: BTreeMap<IpAddr, Option<Decision>> = BTreeMap::new();
        for address in &touched {
            if self
                .addresses
                .get(address)
                .is_some_and(|held| !held.is_held())
                && let Some(gone) = self.addresses.remove(address)
                && let Some(decision) = gone.decision
            {
                changed.insert(*address, Some(decision));
            }
        }
        let mut elect: BTreeSet<ElectionKey> = regrouped;
        let departed = std::mem::take(&mut self.departed);
        let joined = std::mem::take(&mut self.joined);
        if std::mem::take(&mut self.everything) {
            elect.extend(self.groups.keys().copied());
        } else if !departed.is_empty() || !joined.is_empty() {
            for (key, group) in &self.groups {
                if elect.contains(key) {
                    continue;
                }
                let Some(decision) = self.decision(&members(key, group)[0]) else {
                    elect.insert(*key);
                    continue;
                };
                let successor = decision.successor.as_ref();
                let again = match &decision.owner {
                    Err(_) => true,
                    Ok(owner) if departed.contains(owner) => true,
                    _ if successor.is_some_and(|s| departed.contains(s)) => true,
                    Ok(owner) => {
                        // A joining node changes nothing unless it outranks the owner or the
                        // successor: electing among those alone tells.
                        let pool = joined.iter().chain([owner]).chain(successor);
                        !joined.is_empty()
                            && self.owner(key, group, pool)
                                != Ok((owner.clone(), successor.cloned()))
                    }
                };
                if again {
                    elect.insert(*key);
                }
            }
        }

        for key in elect {
            // A copy, so that the interface lists can grow meanwhile: nothing to copy for a
            // one-address group, whose list is empty.
            let Some(group) = self.groups.get(&key).cloned() else {
                continue;
            };
            self.elected += 1;
            let (owner, successor) = match self.owner(&key, &group, self.live.iter()) {
                Ok((owner, successor)) => (Ok(owner), successor),
                Err(why) => (Err(why), None),
            };
            for address in members(&key, &group) {
                let decision = Decision {
                    key,
                    owner: owner.clone(),
                    successor: successor.clone(),
                    interfaces: match &owner {
                        Ok(node) => self.interfaces(*address, node),
                        Err(_) => None,
                    },
                    services: self.addresses[address].services.clone(),
                };
                let held = self
                    .addresses
                    .get_mut(address)
                    .expect("a grouped address is held");
                if held.decision.as_ref() != Some(&decision) {
                    let before = held.decision.replace(decision);
                    changed.insert(*address, before);
                }
            }
        }
        changed
    }

    /// Keys again the groups of the touched addresses: the Services reachable from them
    /// through shared addresses (their old groups included, which a change may have split)
    /// are grouped anew. Returns the keys of the groups that came out.
    fn regroup(&mut self, touched: &BTreeSet<IpAddr>) -> BTreeSet<ElectionKey> {
        let mut addresses: BTreeSet<IpAddr> = BTreeSet::new();
        let mut queue: Vec<IpAddr> = vec![];
        for address in touched {
            queue.push(*address);
            if let Some(decision) = self.decision(address)
                && let Some(group) = self.groups.get(&decision.key)
            {
                queue.extend(members(&decision.key, group).iter().copied());
            }
        }
        let mut services: BTreeSet<&ServiceKey> = BTreeSet::new();
        while let Some(address) = queue.pop() {
            if !addresses.insert(address) {
                continue;
            }
            let holders = self.addresses.get(&address).map(|held| &held.services[..]);
            for key in holders.unwrap_or_default() {
                if services.insert(key) {
                    queue.extend(self.services[key].addresses.iter().copied());
                }
            }
        }
        for address in &addresses {
            if let Some(key) = self.decision(address).map(|decision| decision.key) {
                self.groups.remove(&key);
            }
        }
        let held: Vec<ServiceAddresses> = services
            .iter()
            .map(|key| ServiceAddresses::new(self.services[*key].addresses.iter().copied()))
            .collect();
        let keys = election::election_keys(&held);
        let groups = election::group_by_key(&keys);
        let regrouped = groups.keys().copied().collect();
        self.groups.extend(groups.into_iter().map(|(key, group)| {
            let alone = group.len() == 1 && group.contains(&key.address());
            (
                key,
                if alone {
                    vec![]
                } else {
                    group.into_iter().collect()
                },
            )
        }));
        regrouped
    }

    /// The owner of a group among `pool` (live nodes) and its successor, or the first stage
    /// that left nobody.
    fn owner<'a>(
        &self,
        key: &ElectionKey,
        group: &[IpAddr],
        pool: impl IntoIterator<Item = &'a NodeName>,
    ) -> Result<(NodeName, Option<NodeName>), NoOwner> {
        let mut candidates: BTreeSet<&NodeName> = pool.into_iter().collect();
        for address in members(key, group) {
            let held = &self.addresses[address];
            let ads = held
                .advertisements
                .as_ref()
                .filter(|ads| !ads.is_empty())
                .ok_or(NoOwner::NotAdvertised)?;
            if candidates.is_empty() {
                return Err(NoOwner::NoLiveSpeaker);
            }
            // A node may announce when any covering advertisement selects it.
            candidates.retain(|node| ads.iter().any(|ad| selects(ad.nodes.as_ref(), node)));
            if candidates.is_empty() {
                return Err(NoOwner::NoSelectedNode);
            }
            candidates.retain(|node| !excluded(&self.nodes, node));
            if candidates.is_empty() {
                return Err(NoOwner::AllExcluded);
            }
            let local: Vec<&ServiceFacts> = held
                .services
                .iter()
                .map(|key| &self.services[key])
                .filter(|s| s.local)
                .collect();
            candidates.retain(|node| serves_local(&local, node));
            if candidates.is_empty() {
                return Err(NoOwner::NoReadyEndpoint);
            }
        }
        // Cordoned nodes only when no other is left, for the successor as for the owner.
        let mut ranked = election::ranked(key, candidates);
        let pick = |nodes: &[&NodeName]| {
            let uncordoned = nodes.iter().position(|node| !cordoned(&self.nodes, node));
            uncordoned.or((!nodes.is_empty()).then_some(0))
        };
        let owner = ranked.remove(pick(&ranked).expect("candidates is not empty"));
        let successor = pick(&ranked).map(|i| ranked[i].clone());
        Ok((owner.clone(), successor))
    }

    /// The union of the `interfaces` of the advertisements that cover `address` and select
    /// `owner`; `None` when one of them leaves it open.
    fn interfaces(&mut self, address: IpAddr, owner: &NodeName) -> Option<Arc<[String]>> {
        let mut union = BTreeSet::new();
        for ad in self
            .addresses
            .get(&address)?
            .advertisements
            .as_ref()?
            .iter()
        {
            if !selects(ad.nodes.as_ref(), owner) {
                continue;
            }
            union.extend(ad.interfaces.as_ref()?.iter().cloned());
        }
        Some(share(
            &mut self.interface_lists,
            union.into_iter().collect(),
        ))
    }
}

/// The held copy of `list` among `lists`, made if there is none. Lists nobody else holds
/// any more (a pool or an advertisement changed) are let go when a new one is made.
fn share<T: PartialEq>(lists: &mut Vec<Arc<[T]>>, list: Vec<T>) -> Arc<[T]> {
    if let Some(held) = lists.iter().find(|held| ***held == *list) {
        return held.clone();
    }
    lists.retain(|held| Arc::strong_count(held) > 1);
    let shared: Arc<[T]> = list.into();
    lists.push(shared.clone());
    shared
}

/// The addresses of a group as [`Elector::groups`] keeps it.
fn members<'a>(key: &'a ElectionKey, group: &'a [IpAddr]) -> &'a [IpAddr] {
    if group.is_empty() {
        std::slice::from_ref(key.address_ref())
    } else {
        group
    }
}
