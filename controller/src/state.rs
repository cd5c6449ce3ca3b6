//! The controller's memory: the allocator, the pools as last read, and what each pool's status
//! should say. No I/O: the runtime feeds it objects and writes what it answers.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use allocator::{Allocator, Assignment, Overlap, ServiceKey, ServiceRequest, Usage};
use crds::{FamilyUsage, IPAddressPool, IPAddressPoolStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use model::Pool;

/// One pool as last read.
#[derive(Debug, Clone)]
struct PoolEntry {
    generation: Option<i64>,
    /// The model's reading: its good entries allocate, its problems go on `Ready`.
    read: Pool,
}

#[derive(Debug, Default)]
pub struct State {
    allocator: Allocator,
    pools: BTreeMap<String, PoolEntry>,
    overlaps: Vec<Overlap>,
    /// Services whose last allocation failed: a release or a pool change may serve them now.
    pending: BTreeSet<ServiceKey>,
}

impl State {
    /// Re-reads the pools when they changed since the last reading: a spec (generation), a
    /// deletion or labels. A status write changes none of them. Returns the new overlaps when
    /// the pools were re-read.
    pub fn sync_pools(&mut self, pools: &[Arc<IPAddressPool>]) -> Option<Vec<Overlap>> {
        let unchanged = pools.len() == self.pools.len()
            && pools.iter().all(|p| {
                self.pools
                    .get(p.metadata.name.as_deref().unwrap_or_default())
                    .is_some_and(|e| {
                        e.generation == p.metadata.generation
                            && e.read.deleting == p.metadata.deletion_timestamp.is_some()
                            && e.read.labels == p.metadata.labels.clone().unwrap_or_default()
                    })
            });
        if unchanged {
            return None;
        }
        let pools: Vec<IPAddressPool> = pools.iter().map(|p| (**p).clone()).collect();
        Some(self.set_pools(&pools))
    }

    /// The pool as last read.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name).map(|e| &e.read)
    }

    pub fn overlaps(&self) -> &[Overlap] {
        &self.overlaps
    }

    /// Replaces the pools. A bad entry costs only itself: the pool allocates from its other
    /// entries. Pools being deleted are left out of the allocator; Services keep what they hold
    /// either way. Returns the overlaps, which the caller reports.
    pub fn set_pools(&mut self, pools: &[IPAddressPool]) -> Vec<Overlap> {
        let mut usable = vec![];
        self.pools.clear();
        for pool in pools {
            let read = crds::read::pool(pool);
            if !read.deleting {
                usable.push(read.clone());
            }
            self.pools.insert(
                read.name.clone(),
                PoolEntry {
                    generation: pool.metadata.generation,
                    read,
                },
            );
        }
        // Names are unique in the API, so this cannot fail on them.
        self.overlaps = self.allocator.set_pools(usable).unwrap_or_default();
        self.overlaps.clone()
    }

    // The allocator's error carries the names of a conflict for its Event, and is built once
    // per refused request: boxing it would buy nothing.
    #[allow(clippy::result_large_err)]
    pub fn restore(
        &mut self,
        request: &ServiceRequest,
        ips: &[IpAddr],
    ) -> allocator::Result<Assignment> {
        self.allocator.restore(request, ips)
    }

    /// Allocates, and remembers a Service left without an address as pending.
    #[allow(clippy::result_large_err)]
    pub fn allocate(&mut self, request: &ServiceRequest) -> allocator::Result<Assignment> {
        let outcome = self.allocator.allocate(request);
        if outcome.is_ok() {
            self.pending.remove(&request.key);
        } else {
            self.pending.insert(request.key.clone());
        }
        outcome
    }

    /// Frees what the Service holds; it is no longer pending either.
    pub fn release(&mut self, key: &ServiceKey) -> Vec<IpAddr> {
        self.pending.remove(key);
        self.allocator.release(key)
    }

    /// Services whose last allocation failed.
    pub fn pending(&self) -> impl Iterator<Item = &ServiceKey> {
        self.pending.iter()
    }

    pub fn assignment(&self, key: &ServiceKey) -> Option<Assignment> {
        self.allocator.assignment(key)
    }

    pub fn holders(&self, ip: IpAddr) -> Vec<ServiceKey> {
        self.allocator.holders(ip).into_iter().cloned().collect()
    }

    /// Services holding addresses, or pending, that are not in `present`.
    pub fn known_not_in(&self, present: &HashSet<ServiceKey>) -> Vec<ServiceKey> {
        self.allocator
            .assignments()
            .map(|(k, _)| k)
            .chain(self.pending.iter())
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Services holding addresses of `pool`.
    pub fn users_of(&self, pool: &str) -> Vec<ServiceKey> {
        self.allocator
            .assignments()
            .filter(|(_, a)| a.addresses.iter().any(|x| x.pool.as_deref() == Some(pool)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// How many Services hold an address inside `ranges` (a pool's addresses, whether or not
    /// the pool is still in the allocator).
    pub fn users_within(&self, ranges: &[model::AddressRange]) -> usize {
        self.allocator
            .assignments()
            .filter(|(_, a)| {
                a.addresses
                    .iter()
                    .any(|x| ranges.iter().any(|r| r.contains(x.ip)))
            })
            .count()
    }

    /// Services holding addresses that no pool contains any more.
    pub fn orphans(&self) -> Vec<allocator::Orphan> {
        self.allocator.orphans()
    }

    pub fn usage(&self, pool: &str) -> Option<allocator::PoolUsage> {
        self.allocator.usage(pool)
    }

    /// What the pool's status should say. `previous` keeps the transition times of conditions
    /// that did not change; `users` counts Services holding its addresses, even when the pool is
    /// out of the allocator (being deleted).
    pub fn pool_status(
        &self,
        name: &str,
        users: usize,
        previous: Option<&IPAddressPoolStatus>,
        now: Time,
    ) -> Option<IPAddressPoolStatus> {
        let entry = self.pools.get(name)?;
        let usage = self.allocator.usage(name).unwrap_or_default();
        let mut conditions = vec![];
        let pool = &entry.read;
        let problems = pool.problems();
        let ready = if pool.deleting {
            cond(
                "Ready",
                false,
                "Deleting",
                format!(
                    "the pool is being deleted; it hands out nothing new and is kept until the {users} Service(s) holding its addresses are moved or deleted"
                ),
            )
        } else if !problems.is_empty() {
            let reason = if pool.invalid.is_empty() {
                "InvalidSelector"
            } else {
                "InvalidAddresses"
            };
            let rest = if pool.ranges.is_empty() {
                "the pool has no valid entry and hands out nothing"
            } else {
                "its other entries hand out addresses and stay announced"
            };
            cond(
                "Ready",
                false,
                reason,
                format!("{}; {rest}", problems.join("; ")),
            )
        } else {
            cond(
                "Ready",
                true,
                "Allocating",
                "the pool hands out addresses".into(),
            )
        };
        conditions.push(ready);
        let mine: Vec<&Overlap> = self
            .overlaps
            .iter()
            .filter(|o| o.pools.iter().any(|p| p == name))
            .collect();
        conditions.push(if mine.is_empty() {
            cond(
                "Overlap",
                false,
                "NoOverlap",
                "no other pool shares addresses with this one".into(),
            )
        } else {
            let text: Vec<String> = mine.iter().map(|o| o.to_string()).collect();
            cond(
                "Overlap",
                true,
                "Overlap",
                format!(
                    "{}; no address of an overlap is handed out until it is fixed",
                    text.join("; ")
                ),
            )
        });
        conditions.push(if users == 0 {
            cond(
                "InUse",
                false,
                "Unused",
                "no Service holds an address of this pool".into(),
            )
        } else {
            cond(
                "InUse",
                true,
                "InUse",
                format!("{users} Service(s) hold addresses of this pool"),
            )
        });
        for c in &mut conditions {
            c.observed_generation = entry.generation;
            let before = previous.and_then(|p| p.conditions.iter().find(|o| o.type_ == c.type_));
            c.last_transition_time = match before {
                Some(b) if b.status == c.status => b.last_transition_time.clone(),
                _ => now.clone(),
            };
        }
        Some(IPAddressPoolStatus {
            ipv4: usage.ipv4.map(family_usage),
            ipv6: usage.ipv6.map(family_usage),
            conditions,
            observed_generation: entry.generation,
        })
    }
}

/// A condition of `type_`; its generation and transition time are the caller's to set.
pub(crate) fn cond(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: None,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

fn saturate(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn family_usage(u: Usage) -> FamilyUsage {
    FamilyUsage {
        capacity: saturate(u.capacity),
        assigned: saturate(u.assigned),
        available: saturate(u.available),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator::FamilyPolicy;
    use model::Family;
    use serde_json::json;

    fn pool(name: &str, addresses: &[&str]) -> IPAddressPool {
        serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": name, "generation": 1}, "spec": {"addresses": addresses},
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }

    fn condition<'a>(s: &'a IPAddressPoolStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn pool_status_counts_and_conditions() {
        let mut state = State::default();
        let overlaps = state.set_pools(&[
            pool("a", &["198.51.100.0/30"]),
            pool("b", &["198.51.100.2-198.51.100.9", "2001:db8::/126"]),
        ]);
        assert_eq!(overlaps.len(), 1);
        let svc = ServiceRequest::new(
            ServiceKey::new("ns", "web", "uid"),
            FamilyPolicy::SingleStack(Family::V4),
        );
        let got = state.allocate(&svc).unwrap();
        assert_eq!(got.ips(), vec!["198.51.100.0".parse::<IpAddr>().unwrap()]);

        let a = state
            .pool_status("a", state.users_of("a").len(), None, now())
            .unwrap();
        assert_eq!(
            a.ipv4,
            Some(FamilyUsage {
                capacity: 2,
                assigned: 1,
                available: 1
            })
        );
        assert_eq!(a.ipv6, None);
        assert_eq!(condition(&a, "Ready").status, "True");
        assert_eq!(condition(&a, "Overlap").status, "True");
        assert!(
            condition(&a, "Overlap")
                .message
                .contains("pools a and b both contain 198.51.100.2-198.51.100.3"),
            "{:?}",
            condition(&a, "Overlap")
        );
        assert_eq!(
            condition(&a, "InUse").message,
            "1 Service(s) hold addresses of this pool"
        );
        let b = state.pool_status("b", 0, None, now()).unwrap();
        assert_eq!(
            b.ipv6,
            Some(FamilyUsage {
                capacity: 4,
                assigned: 0,
                available: 4
            })
        );
        assert_eq!(condition(&b, "InUse").status, "False");
        assert!(state.pool_status("nope", 0, None, now()).is_none());
    }

    /// The interleaving that name keys got wrong: the re-created Service is reconciled before
    /// its predecessor's deletion is processed. It must neither inherit the predecessor's
    /// address nor lose its own when the late deletion is released.
    #[test]
    fn a_recreated_service_is_another_service() {
        let mut state = State::default();
        state.set_pools(&[pool("lan", &["198.51.100.0/30"])]);
        let v4 = FamilyPolicy::SingleStack(Family::V4);
        let old = ServiceRequest::new(ServiceKey::new("ns", "web", "uid-1"), v4);
        let new = ServiceRequest::new(ServiceKey::new("ns", "web", "uid-2"), v4);
        let other = ServiceRequest::new(ServiceKey::new("ns", "other", "uid-3"), v4);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            state.allocate(&old).unwrap().ips(),
            vec![ip("198.51.100.0")]
        );
        assert_eq!(
            state.allocate(&new).unwrap().ips(),
            vec![ip("198.51.100.1")]
        );
        assert_eq!(state.release(&old.key), vec![ip("198.51.100.0")]);
        assert_eq!(
            state.assignment(&new.key).unwrap().ips(),
            vec![ip("198.51.100.1")]
        );
        assert_eq!(
            state.allocate(&other).unwrap().ips(),
            vec![ip("198.51.100.0")]
        );
    }

    #[test]
    fn a_bad_entry_is_named_and_the_rest_of_the_pool_allocates() {
        let mut state = State::default();
        state.set_pools(&[pool(
            "lan",
            &["198.51.100.200-198.51.100.201", "2001:db8::20-2001:db8::10"],
        )]);
        let svc = ServiceRequest::new(
            ServiceKey::new("ns", "web", "uid"),
            FamilyPolicy::SingleStack(Family::V4),
        );
        assert_eq!(
            state.allocate(&svc).unwrap().ips(),
            vec!["198.51.100.200".parse::<IpAddr>().unwrap()]
        );
        let status = state.pool_status("lan", 1, None, now()).unwrap();
        let ready = condition(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidAddresses")
        );
        assert!(
            ready
                .message
                .contains("\"2001:db8::20-2001:db8::10\" is ignored")
                && ready.message.contains("other entries hand out addresses"),
            "{}",
            ready.message
        );
        assert_eq!(status.ipv4.unwrap().capacity, 2);
    }

    #[test]
    fn a_bad_pool_says_why_and_transition_times_stay() {
        let mut state = State::default();
        state.set_pools(&[pool("v6", &["2001:db8::20-2001:db8::10"])]);
        let first = state.pool_status("v6", 0, None, now()).unwrap();
        let ready = condition(&first, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidAddresses")
        );
        assert!(ready.message.contains("reversed"), "{}", ready.message);
        let later = Time(
            k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(60),
        );
        let second = state.pool_status("v6", 0, Some(&first), later).unwrap();
        assert_eq!(
            condition(&second, "Ready").last_transition_time,
            ready.last_transition_time
        );
    }

    /// The pools are re-read when what allocates changed (spec, deletion, labels), not when
    /// only their status did, which the controller writes itself on every allocation.
    #[test]
    fn pools_are_read_again_only_when_they_change() {
        let mut state = State::default();
        let mut lan = pool("lan", &["198.51.100.0/30"]);
        assert!(state.sync_pools(&[Arc::new(lan.clone())]).is_some());
        lan.status = Some(IPAddressPoolStatus::default());
        lan.metadata.resource_version = Some("2".into());
        assert!(state.sync_pools(&[Arc::new(lan.clone())]).is_none());

        lan.spec.addresses = vec!["198.51.100.0/29".into()];
        lan.metadata.generation = Some(2);
        assert!(state.sync_pools(&[Arc::new(lan.clone())]).is_some());
        assert_eq!(state.pool("lan").unwrap().ranges.len(), 1);
        assert!(state.usage("lan").unwrap().ipv4.unwrap().capacity == 8);

        lan.metadata.labels = Some([("tier".into(), "web".into())].into());
        assert!(state.sync_pools(&[Arc::new(lan.clone())]).is_some());
        lan.metadata.deletion_timestamp = Some(now());
        assert!(state.sync_pools(&[Arc::new(lan.clone())]).is_some());
        assert!(state.pool("lan").unwrap().deleting);
        let other = pool("other", &["203.0.113.0/30"]);
        let overlaps = state.sync_pools(&[Arc::new(lan), Arc::new(other)]);
        assert_eq!(overlaps, Some(vec![]));
        assert!(state.sync_pools(&[]).is_some());
        assert!(state.pool("lan").is_none());
    }

    /// A failed allocation leaves the Service pending until it gets an address or goes; the
    /// sweep forgets pending Services that are gone like holders that are gone.
    #[test]
    fn pending_services_are_remembered_until_served_or_gone() {
        let mut state = State::default();
        state.set_pools(&[pool("lan", &["198.51.100.0/32"])]);
        let v4 = FamilyPolicy::SingleStack(Family::V4);
        let first = ServiceRequest::new(ServiceKey::new("ns", "a", "uid-a"), v4);
        let second = ServiceRequest::new(ServiceKey::new("ns", "b", "uid-b"), v4);
        state.allocate(&first).unwrap();
        assert!(state.allocate(&second).is_err());
        assert_eq!(state.pending().collect::<Vec<_>>(), vec![&second.key]);

        let present: HashSet<ServiceKey> = [first.key.clone()].into();
        assert_eq!(state.known_not_in(&present), vec![second.key.clone()]);
        let present: HashSet<ServiceKey> = [second.key.clone()].into();
        assert_eq!(state.known_not_in(&present), vec![first.key.clone()]);

        state.release(&first.key);
        state.allocate(&second).unwrap();
        assert_eq!(state.pending().count(), 0);
        assert!(state.allocate(&first).is_err());
        state.release(&first.key);
        assert_eq!(state.pending().count(), 0);
    }
}
