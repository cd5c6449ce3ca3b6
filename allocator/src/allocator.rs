//! The allocator's state and its public operations: pools in, Services in and out, reports.
//!
//! Choosing addresses lives in [`crate::pick`]; this module owns who holds what and keeps the
//! pools' free sets and counts in step with it.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use model::address::{AddressRange, Family, ip_value};

use crate::error::{Error, Result};
use crate::intervals::IntervalSet;
use crate::report::{Orphan, Overlap, PoolUsage};
use crate::service::{AssignedAddress, Assignment, check_one_per_family};
use crate::sharing::{Holders, Refusal, SharingConflict, SharingTerms, may_share};
use crate::space::FamilySpace;
use model::pool::Pool;
use model::service::{ServiceKey, ServiceRequest};

/// Hands out addresses of pools to Services. Pure and deterministic: the same calls in the same
/// order give the same results.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    /// Sorted by name; indexes into it are valid until the next [`Allocator::set_pools`].
    pub(crate) pools: Vec<PoolState>,
    overlaps: Vec<Overlap>,
    pub(crate) services: BTreeMap<Arc<ServiceKey>, ServiceState>,
    pub(crate) addresses: BTreeMap<IpAddr, AddressState>,
    /// Sharing key -> the addresses held under it, to find an address to share without looking
    /// at every held address.
    pub(crate) shared: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Held addresses that no pool contains any more.
    orphaned: BTreeSet<IpAddr>,
}

#[derive(Debug, Clone)]
pub(crate) struct PoolState {
    pub pool: Pool,
    v4: FamilySpace,
    v6: FamilySpace,
}

impl PoolState {
    pub fn space(&self, family: Family) -> &FamilySpace {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn space_mut(&mut self, family: Family) -> &mut FamilySpace {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceState {
    /// At most one per family, the family asked for first coming first.
    pub ips: Vec<IpAddr>,
    pub terms: Option<Box<SharingTerms>>,
}

#[derive(Debug, Clone)]
pub(crate) struct AddressState {
    /// Index of the pool the address belongs to; `None` for an orphan.
    pub pool: Option<usize>,
    pub holders: Holders,
}

impl Allocator {
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// Replaces the pools. Services keep what they hold: an address a pool no longer contains
    /// becomes an orphan, and an address in a part two pools now share stays with its holder.
    /// Returns the overlaps between pools, sorted by pool names; nothing is handed out of an
    /// overlap. Fails, changing nothing, when two pools have one name.
    pub fn set_pools(&mut self, pools: Vec<Pool>) -> Result<Vec<Overlap>> {
        let mut pools = pools;
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = pools.windows(2).find(|pair| pair[0].name == pair[1].name) {
            return Err(Error::DuplicatePool {
                pool: pair[0].name.clone(),
            });
        }
        let ranges: Vec<[IntervalSet; 2]> = pools
            .iter()
            .map(|pool| FAMILIES.map(|family| family_ranges(pool, family)))
            .collect();
        let mut overlapped: Vec<[IntervalSet; 2]> = vec![Default::default(); pools.len()];
        let mut overlaps = Vec::new();
        // Pairwise: pools are few (tens), their ranges fewer than their addresses by far.
        for i in 0..pools.len() {
            for j in i + 1..pools.len() {
                let mut shared = Vec::new();
                for (f, family) in FAMILIES.into_iter().enumerate() {
                    let both = ranges[i][f].intersection(&ranges[j][f]);
                    for (first, last) in both.runs() {
                        overlapped[i][f].insert(first, last);
                        overlapped[j][f].insert(first, last);
                        shared.push(range_of(family, first, last));
                    }
                }
                if !shared.is_empty() {
                    overlaps.push(Overlap {
                        pools: [pools[i].name.clone(), pools[j].name.clone()],
                        ranges: shared,
                    });
                }
            }
        }
        let new_pools: Vec<PoolState> = pools
            .into_iter()
            .zip(ranges)
            .zip(overlapped)
            .map(|((pool, [v4, v6]), [v4_overlap, v6_overlap])| PoolState {
                v4: FamilySpace::new(Family::V4, pool.avoid_buggy_ips, v4, &v4_overlap),
                v6: FamilySpace::new(Family::V6, pool.avoid_buggy_ips, v6, &v6_overlap),
                pool,
            })
            .collect();

        let old_pools = std::mem::replace(&mut self.pools, new_pools);
        self.overlaps = overlaps;
        self.orphaned.clear();
        // Every held address stays in its pool if that pool still contains it, else moves to the
        // first pool that does, else becomes an orphan.
        let mut tags = Vec::with_capacity(self.addresses.len());
        for (&ip, state) in &self.addresses {
            let previous = state.pool.map(|p| old_pools[p].pool.name.as_str());
            let home = model::home_pool(&self.pools, ip, previous)
                .and_then(|home| self.pool_index(&home.pool.name));
            tags.push((ip, home));
        }
        for (ip, tag) in tags {
            self.addresses.get_mut(&ip).expect("held").pool = tag;
            match tag {
                Some(p) => self.pools[p].space_mut(Family::of(ip)).take(ip_value(ip)),
                None => {
                    self.orphaned.insert(ip);
                }
            }
        }
        Ok(self.overlaps.clone())
    }

    /// The overlaps found by the last [`Allocator::set_pools`].
    pub fn overlaps(&self) -> &[Overlap] {
        &self.overlaps
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pool_index(name).map(|p| &self.pools[p].pool)
    }

    /// Gives the Service its addresses, in this order of preference:
    /// 1. what it holds, as long as the request does not contradict it (another requested
    ///    address, another named pool, another family, or a sharing the new ports or keys break);
    ///    a missing second family is added from the same pool when the policy wants it;
    /// 2. the requested addresses, exactly;
    /// 3. the named pool;
    /// 4. the auto-assigned pools whose `serviceAllocation` matches, by priority then name,
    ///    then the auto-assigned pools without `serviceAllocation`, by name.
    ///
    /// With a sharing key and no requested address, an address already held under the same key
    /// that the Service may share is preferred to a fresh one (pools holding one are tried
    /// first). Inside a pool the lowest free address is taken.
    ///
    /// On error the Service keeps what it held, except addresses its new sharing terms can no
    /// longer share with their other holders, which are released.
    pub fn allocate(&mut self, service: &ServiceRequest) -> Result<Assignment> {
        let terms = SharingTerms::of(service);
        let held: Vec<(IpAddr, Option<usize>)> = self
            .services
            .get(&service.key)
            .map(|state| {
                state
                    .ips
                    .iter()
                    .map(|ip| (*ip, self.addresses[ip].pool))
                    .collect()
            })
            .unwrap_or_default();
        // New sharing terms that another holder of a held address cannot accept are refused
        // while the Service asks for nothing else: it keeps what it holds under its previous
        // terms (as MetalLB does) rather than moving or losing its address over a typo.
        if held.iter().all(|(ip, _)| self.fits_request(service, *ip)) {
            for (ip, _) in &held {
                match self.check_holders(*ip, &service.key, terms.as_ref()) {
                    Ok(()) => {}
                    Err(Error::SharingRefused { ip, with, reason }) => {
                        return Err(Error::SharingChangeRefused { ip, with, reason });
                    }
                    Err(Error::AddressTaken { ip, by }) => {
                        return Err(Error::SharingChangeRefused {
                            ip,
                            with: Box::new(by),
                            reason: SharingConflict::NoLongerShared,
                        });
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        let shareable: Vec<(IpAddr, Option<usize>)> = held
            .into_iter()
            .filter(|(ip, _)| {
                self.check_holders(*ip, &service.key, terms.as_ref())
                    .is_ok()
            })
            .collect();
        let outcome = crate::service::check_request(service).and_then(|()| {
            let kept: Vec<(IpAddr, Option<usize>)> = shareable
                .iter()
                .copied()
                .filter(|(ip, _)| self.fits_request(service, *ip))
                .collect();
            match self.complete(service, terms.as_ref(), &kept) {
                Some(addresses) => Ok(addresses),
                None => self.pick(service, terms.as_ref()),
            }
        });
        match outcome {
            Ok(addresses) => {
                self.commit(&service.key, terms, addresses);
                Ok(self.assignment(&service.key).unwrap_or_default())
            }
            Err(error) => {
                self.commit(&service.key, terms, shareable);
                Err(error)
            }
        }
    }

    /// Records addresses a Service already holds (read from its status at start-up), before
    /// anything new is allocated. Pools are not consulted: an address outside every pool is kept
    /// as an orphan. Replaces what the Service held before.
    ///
    /// Fails, changing nothing, when another Service holds one of the addresses and the two may
    /// not share it; the error names that holder. Restoring Services oldest first makes the
    /// holder the older one, so the caller gives the younger an Event and a new address; restored
    /// in another order, the caller can [`Allocator::release`] the younger holder and retry.
    pub fn restore(&mut self, service: &ServiceRequest, ips: &[IpAddr]) -> Result<Assignment> {
        check_one_per_family(ips)?;
        let terms = SharingTerms::of(service);
        let mut addresses = Vec::with_capacity(ips.len());
        for &ip in ips {
            self.check_holders(ip, &service.key, terms.as_ref())?;
            let pool = match self.addresses.get(&ip) {
                Some(state) => state.pool,
                None => model::home_pool(&self.pools, ip, None)
                    .and_then(|home| self.pool_index(&home.pool.name)),
            };
            addresses.push((ip, pool));
        }
        self.commit(&service.key, terms, addresses);
        Ok(self.assignment(&service.key).unwrap_or_default())
    }

    /// Frees what the Service held; returns those addresses. An address other Services share
    /// stays theirs.
    pub fn release(&mut self, key: &ServiceKey) -> Vec<IpAddr> {
        let ips = self.held_by(key);
        self.commit(key, None, Vec::new());
        ips
    }

    /// The addresses the Service holds, or `None` when it holds none.
    pub fn assignment(&self, key: &ServiceKey) -> Option<Assignment> {
        self.services
            .get(key)
            .map(|state| self.assignment_of(state))
    }

    /// Every Service holding addresses, in key order.
    pub fn assignments(&self) -> impl Iterator<Item = (&ServiceKey, Assignment)> + '_ {
        self.services
            .iter()
            .map(|(key, state)| (&**key, self.assignment_of(state)))
    }

    /// The Services holding `ip`, in key order.
    pub fn holders(&self, ip: IpAddr) -> Vec<&ServiceKey> {
        self.addresses
            .get(&ip)
            .map(|state| state.holders.iter().map(|k| &**k).collect())
            .unwrap_or_default()
    }

    /// Services holding addresses no pool contains, in address then Service order.
    pub fn orphans(&self) -> Vec<Orphan> {
        self.orphaned
            .iter()
            .flat_map(|ip| {
                self.holders(*ip).into_iter().map(|service| Orphan {
                    service: service.clone(),
                    ip: *ip,
                })
            })
            .collect()
    }

    /// A pool's capacity, assigned and available counts per family.
    pub fn usage(&self, pool: &str) -> Option<PoolUsage> {
        let state = &self.pools[self.pool_index(pool)?];
        let usage = |family| {
            let space = state.space(family);
            space.has_addresses().then(|| space.usage())
        };
        Some(PoolUsage {
            ipv4: usage(Family::V4),
            ipv6: usage(Family::V6),
        })
    }

    /// How many Services hold addresses.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub(crate) fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools
            .binary_search_by(|state| state.pool.name.as_str().cmp(name))
            .ok()
    }

    fn held_by(&self, key: &ServiceKey) -> Vec<IpAddr> {
        self.services
            .get(key)
            .map(|state| state.ips.clone())
            .unwrap_or_default()
    }

    fn assignment_of(&self, state: &ServiceState) -> Assignment {
        Assignment {
            addresses: state
                .ips
                .iter()
                .map(|ip| AssignedAddress {
                    ip: *ip,
                    pool: self.addresses[ip]
                        .pool
                        .map(|p| self.pools[p].pool.name.clone()),
                })
                .collect(),
        }
    }

    /// Whether the Service (with sharing terms `terms`) may hold `ip` alongside its current
    /// holders; the error names the first holder in key order that refuses.
    pub(crate) fn check_holders(
        &self,
        ip: IpAddr,
        key: &ServiceKey,
        terms: Option<&SharingTerms>,
    ) -> Result<()> {
        let Some(state) = self.addresses.get(&ip) else {
            return Ok(());
        };
        for holder in state.holders.iter().filter(|holder| ***holder != *key) {
            let theirs = self.services[holder].terms.as_deref();
            match may_share(terms, theirs) {
                Ok(()) => {}
                Err(Refusal::Exclusive) => {
                    return Err(Error::AddressTaken {
                        ip,
                        by: (**holder).clone(),
                    });
                }
                Err(Refusal::Conflict(reason)) => {
                    return Err(Error::SharingRefused {
                        ip,
                        with: Box::new((**holder).clone()),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Makes `addresses` (with the pool each belongs to) exactly what the Service holds, and
    /// `terms` its sharing terms; an empty list forgets the Service.
    fn commit(
        &mut self,
        key: &ServiceKey,
        terms: Option<SharingTerms>,
        addresses: Vec<(IpAddr, Option<usize>)>,
    ) {
        let (arc_key, old) = match self.services.remove_entry(key) {
            Some((arc_key, old)) => (arc_key, Some(old)),
            None => (Arc::new(key.clone()), None),
        };
        let old_ips = old.as_ref().map(|o| o.ips.clone()).unwrap_or_default();
        let old_sharing_key = old
            .as_ref()
            .and_then(|o| o.terms.as_ref())
            .map(|t| t.key.clone());
        let new_sharing_key = terms.as_ref().map(|t| t.key.clone());
        for ip in &old_ips {
            if !addresses.iter().any(|(new, _)| new == ip) {
                self.unhold(*ip, key, old_sharing_key.as_deref());
            } else if old_sharing_key != new_sharing_key {
                // Only a sole holder can change its key and keep the address (others would no
                // longer share it), so the address moves between keys.
                self.unindex_shared(*ip, old_sharing_key.as_deref());
                self.index_shared(*ip, new_sharing_key.as_deref());
            }
        }
        if addresses.is_empty() {
            return;
        }
        for &(ip, pool) in &addresses {
            if !old_ips.contains(&ip) {
                self.hold(ip, &arc_key, pool, new_sharing_key.as_deref());
            }
        }
        self.services.insert(
            arc_key,
            ServiceState {
                ips: addresses.into_iter().map(|(ip, _)| ip).collect(),
                terms: terms.map(Box::new),
            },
        );
    }

    fn hold(
        &mut self,
        ip: IpAddr,
        key: &Arc<ServiceKey>,
        pool: Option<usize>,
        sharing_key: Option<&str>,
    ) {
        match self.addresses.entry(ip) {
            Entry::Occupied(mut held) => held.get_mut().holders.add(key.clone()),
            Entry::Vacant(free) => {
                free.insert(AddressState {
                    pool,
                    holders: Holders::One(key.clone()),
                });
                match pool {
                    Some(p) => self.pools[p].space_mut(Family::of(ip)).take(ip_value(ip)),
                    None => {
                        self.orphaned.insert(ip);
                    }
                }
                self.index_shared(ip, sharing_key);
            }
        }
    }

    fn unhold(&mut self, ip: IpAddr, key: &ServiceKey, sharing_key: Option<&str>) {
        let Some(state) = self.addresses.get_mut(&ip) else {
            return;
        };
        if !state.holders.remove(key) {
            return;
        }
        let state = self.addresses.remove(&ip).expect("held");
        match state.pool {
            Some(p) => self.pools[p]
                .space_mut(Family::of(ip))
                .give_back(ip_value(ip)),
            None => {
                self.orphaned.remove(&ip);
            }
        }
        self.unindex_shared(ip, sharing_key);
    }

    fn index_shared(&mut self, ip: IpAddr, sharing_key: Option<&str>) {
        if let Some(sharing_key) = sharing_key {
            self.shared
                .entry(sharing_key.to_string())
                .or_default()
                .insert(ip);
        }
    }

    fn unindex_shared(&mut self, ip: IpAddr, sharing_key: Option<&str>) {
        if let Some(sharing_key) = sharing_key
            && let Some(ips) = self.shared.get_mut(sharing_key)
        {
            ips.remove(&ip);
            if ips.is_empty() {
                self.shared.remove(sharing_key);
            }
        }
    }
}

pub(crate) const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

fn family_ranges(pool: &Pool, family: Family) -> IntervalSet {
    pool.ranges
        .iter()
        .filter(|range| range.family() == family)
        .map(|range| (range.first(), range.last()))
        .collect()
}

fn range_of(family: Family, first: u128, last: u128) -> AddressRange {
    AddressRange::new(family.addr(first), family.addr(last)).expect("first <= last, one family")
}

/// The model's rule for an address's pool reads the pool inside its state.
impl std::borrow::Borrow<Pool> for PoolState {
    fn borrow(&self) -> &Pool {
        &self.pool
    }
}
