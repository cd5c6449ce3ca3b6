//! Choosing addresses for a Service: which held addresses still fit, which pools to try in which
//! order, and which address of a pool to take. Reads the allocator's state, never changes it.

use std::net::IpAddr;

use model::address::{Family, ip_value};

use crate::allocator::{Allocator, FAMILIES};
use crate::error::{Error, Result};
use crate::sharing::SharingTerms;
use model::service::{FamilyPolicy, ServiceRequest};

/// An address and the index of the pool it belongs to.
pub(crate) type Choice = (IpAddr, Option<usize>);

impl Allocator {
    /// Whether a held address agrees with what the Service asks for now. Pool changes, label
    /// changes and overlaps do not count: a live Service keeps its address through them.
    pub(crate) fn fits_request(&self, service: &ServiceRequest, ip: IpAddr) -> bool {
        service.families.allows(Family::of(ip))
            && (service.requested.is_empty() || service.requested.contains(&ip))
            && service.pool.as_deref().is_none_or(|name| {
                self.pool_index(name).is_some_and(|p| {
                    self.pools[p]
                        .space(Family::of(ip))
                        .ranges()
                        .contains(ip_value(ip))
                })
            })
    }

    /// The Service's answer built from the addresses it keeps, adding a missing second family
    /// from the same pool when the policy wants both; `None` when a fresh pick is needed.
    pub(crate) fn complete(
        &self,
        service: &ServiceRequest,
        terms: Option<&SharingTerms>,
        kept: &[Choice],
    ) -> Option<Vec<Choice>> {
        if kept.is_empty() {
            return None;
        }
        if !service.requested.is_empty() {
            // `kept` holds only requested addresses; the request is met when it holds them all.
            return (kept.len() == service.requested.len())
                .then(|| in_family_order(service.families, kept.to_vec()));
        }
        let first = service.families.first();
        let of_family = |family| kept.iter().find(|(ip, _)| Family::of(*ip) == family);
        let completed = match service.families {
            FamilyPolicy::SingleStack(family) => vec![*of_family(family)?],
            FamilyPolicy::PreferDualStack(_) | FamilyPolicy::RequireDualStack(_) => {
                match (of_family(first), of_family(other(first))) {
                    (Some(a), Some(b)) => vec![*a, *b],
                    (Some(&one), None) | (None, Some(&one)) => {
                        match self.second_family(service, terms, one) {
                            Some(second) => vec![one, second],
                            None if matches!(
                                service.families,
                                FamilyPolicy::PreferDualStack(_)
                            ) =>
                            {
                                vec![one]
                            }
                            None => return None,
                        }
                    }
                    (None, None) => return None,
                }
            }
        };
        Some(in_family_order(service.families, completed))
    }

    /// An address of the other family from the pool of `held`, if the Service may take new
    /// addresses from that pool.
    fn second_family(
        &self,
        service: &ServiceRequest,
        terms: Option<&SharingTerms>,
        (ip, pool): Choice,
    ) -> Option<Choice> {
        let pool = pool?;
        let state = &self.pools[pool].pool;
        let may_pick = state.admits(service)
            && match &service.pool {
                Some(name) => *name == state.name,
                None => state.auto_assign,
            };
        if !may_pick {
            return None;
        }
        let family = other(Family::of(ip));
        self.shared_or_free(pool, family, service, terms)
            .map(|ip| (ip, Some(pool)))
    }

    /// A fresh answer, ignoring what the Service holds.
    pub(crate) fn pick(
        &self,
        service: &ServiceRequest,
        terms: Option<&SharingTerms>,
    ) -> Result<Vec<Choice>> {
        if !service.requested.is_empty() {
            return self.pick_requested(service, terms);
        }
        let mut pools = self.candidate_pools(service)?;
        let first = service.families.first();
        if let Some(terms) = terms {
            // Pools where the Service can join a holder of its sharing key come first.
            pools.sort_by_key(|&p| self.shared_candidate(p, first, service, terms).is_none());
        }
        let one = || {
            self.pick_one(service, &pools, first, terms)
                .map(|choice| vec![choice])
        };
        match service.families {
            FamilyPolicy::SingleStack(_) => one(),
            FamilyPolicy::PreferDualStack(_) => match self.pick_pair(service, &pools, terms) {
                Some(pair) => Ok(pair),
                None => one(),
            },
            FamilyPolicy::RequireDualStack(_) => {
                self.pick_pair(service, &pools, terms)
                    .ok_or_else(|| Error::DualStackUnavailable {
                        pools: pools
                            .iter()
                            .filter(|&&p| FAMILIES.iter().all(|&f| self.has_family(p, f)))
                            .map(|&p| self.pools[p].pool.name.clone())
                            .collect(),
                    })
            }
        }
    }

    /// The pools a Service may get a new address from, best first: the named pool alone, or the
    /// auto-assigned pools it matches.
    fn candidate_pools(&self, service: &ServiceRequest) -> Result<Vec<usize>> {
        if let Some(name) = &service.pool {
            let p = self
                .pool_index(name)
                .ok_or_else(|| Error::UnknownPool { pool: name.clone() })?;
            if !self.pools[p].pool.admits(service) {
                return Err(Error::PoolNotAllowed { pool: name.clone() });
            }
            return Ok(vec![p]);
        }
        let mut pools: Vec<usize> = (0..self.pools.len())
            .filter(|&p| {
                let pool = &self.pools[p].pool;
                pool.auto_assign && pool.admits(service)
            })
            .collect();
        pools.sort_by(|&a, &b| self.pools[a].pool.auto_order(&self.pools[b].pool));
        Ok(pools)
    }

    fn pick_one(
        &self,
        service: &ServiceRequest,
        pools: &[usize],
        family: Family,
        terms: Option<&SharingTerms>,
    ) -> Result<Choice> {
        if let Some(choice) = pools.iter().find_map(|&p| {
            self.shared_or_free(p, family, service, terms)
                .map(|ip| (ip, Some(p)))
        }) {
            return Ok(choice);
        }
        let with_family: Vec<String> = pools
            .iter()
            .filter(|&&p| self.has_family(p, family))
            .map(|&p| self.pools[p].pool.name.clone())
            .collect();
        Err(match (with_family.as_slice(), &service.pool) {
            ([], Some(pool)) => Error::FamilyNotInPool {
                pool: pool.clone(),
                family,
            },
            ([], None) => Error::NoPoolAvailable { family },
            ([pool], _) => match self.overlapped_by(pool, family) {
                Some(others) => Error::PoolOverlapped {
                    pool: pool.clone(),
                    family,
                    others,
                },
                None => Error::PoolExhausted {
                    pool: pool.clone(),
                    family,
                },
            },
            _ => Error::PoolsExhausted {
                pools: with_family,
                family,
            },
        })
    }

    /// One address of each family from the first pool that has both free.
    fn pick_pair(
        &self,
        service: &ServiceRequest,
        pools: &[usize],
        terms: Option<&SharingTerms>,
    ) -> Option<Vec<Choice>> {
        let first = service.families.first();
        pools.iter().find_map(|&p| {
            let a = self.shared_or_free(p, first, service, terms)?;
            let b = self.shared_or_free(p, other(first), service, terms)?;
            Some(vec![(a, Some(p)), (b, Some(p))])
        })
    }

    /// Exactly the requested addresses, or why not.
    fn pick_requested(
        &self,
        service: &ServiceRequest,
        terms: Option<&SharingTerms>,
    ) -> Result<Vec<Choice>> {
        let named = match &service.pool {
            Some(name) => Some(
                self.pool_index(name)
                    .ok_or_else(|| Error::UnknownPool { pool: name.clone() })?,
            ),
            None => None,
        };
        let mut choices = Vec::with_capacity(service.requested.len());
        for &ip in &service.requested {
            let (family, value) = (Family::of(ip), ip_value(ip));
            let containing: Vec<usize> = (0..self.pools.len())
                .filter(|&p| self.pools[p].space(family).ranges().contains(value))
                .collect();
            if let Some(named) = named
                && !containing.contains(&named)
            {
                return Err(Error::NotInPool {
                    ip,
                    pool: self.pools[named].pool.name.clone(),
                });
            }
            let p = match containing.as_slice() {
                [] => return Err(Error::NotInAnyPool { ip }),
                [p] => *p,
                [a, b, ..] => {
                    return Err(Error::InOverlap {
                        ip,
                        pools: [
                            self.pools[*a].pool.name.clone(),
                            self.pools[*b].pool.name.clone(),
                        ],
                    });
                }
            };
            let pool = &self.pools[p].pool;
            if !pool.admits(service) {
                return Err(Error::PoolNotAllowed {
                    pool: pool.name.clone(),
                });
            }
            if pool.avoids(family, value) {
                return Err(Error::AvoidedAddress {
                    ip,
                    pool: pool.name.clone(),
                });
            }
            self.check_holders(ip, &service.key, terms)?;
            choices.push((ip, Some(p)));
        }
        // Both addresses of a dual-stack Service are announced by one node, chosen among the
        // nodes both pools' advertisements select; from two pools that set could be empty.
        if let [(a, Some(pa)), (b, Some(pb))] = choices[..]
            && pa != pb
        {
            return Err(Error::RequestedFromTwoPools {
                ips: [a, b],
                pools: [
                    self.pools[pa].pool.name.clone(),
                    self.pools[pb].pool.name.clone(),
                ],
            });
        }
        Ok(in_family_order(service.families, choices))
    }

    /// The address of `family` a Service would get from pool `p`: one it can share under its
    /// sharing key, else the lowest free one.
    fn shared_or_free(
        &self,
        p: usize,
        family: Family,
        service: &ServiceRequest,
        terms: Option<&SharingTerms>,
    ) -> Option<IpAddr> {
        terms
            .and_then(|terms| self.shared_candidate(p, family, service, terms))
            .or_else(|| {
                self.pools[p]
                    .space(family)
                    .lowest_free()
                    .map(|value| family.addr(value))
            })
    }

    /// The lowest address of `family` in pool `p`'s allocatable part held under the Service's
    /// sharing key whose holders all accept it. Looks only at the addresses of that key.
    fn shared_candidate(
        &self,
        p: usize,
        family: Family,
        service: &ServiceRequest,
        terms: &SharingTerms,
    ) -> Option<IpAddr> {
        let space = self.pools[p].space(family);
        let top = match family {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        };
        self.shared
            .get(&terms.key)?
            .range(family.addr(0)..=family.addr(top))
            .copied()
            .find(|&ip| {
                space.usable(ip_value(ip))
                    && self.check_holders(ip, &service.key, Some(terms)).is_ok()
            })
    }

    /// When every `family` address of the pool lies in an overlap (so it has none to give at
    /// all), the pools it overlaps, by name.
    fn overlapped_by(&self, pool: &str, family: Family) -> Option<Vec<String>> {
        let p = self.pool_index(pool)?;
        if self.pools[p].space(family).usage().capacity > 0 {
            return None;
        }
        let others: Vec<String> = self
            .overlaps()
            .iter()
            .filter(|o| o.ranges.iter().any(|r| r.family() == family))
            .filter_map(|o| match &o.pools {
                [a, b] if a == pool => Some(b.clone()),
                [a, b] if b == pool => Some(a.clone()),
                _ => None,
            })
            .collect();
        (!others.is_empty()).then_some(others)
    }

    fn has_family(&self, p: usize, family: Family) -> bool {
        self.pools[p].space(family).has_addresses()
    }
}

fn other(family: Family) -> Family {
    match family {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    }
}

/// The policy's first family first.
fn in_family_order(policy: FamilyPolicy, mut choices: Vec<Choice>) -> Vec<Choice> {
    choices.sort_by_key(|(ip, _)| Family::of(*ip) != policy.first());
    choices
}
