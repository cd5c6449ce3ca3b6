//! The controller's Prometheus metrics, with MetalLB-like names under `ferrolb_`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use allocator::{AssignedAddress, ServiceKey};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// One address a Service holds. `service_*`, not `namespace`/`service`: Prometheus Operator's
/// target labels take those names.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceAddressLabels {
    pub service_namespace: String,
    pub service_name: String,
    /// Empty for an address outside every pool (kept until the Service lets it go).
    pub pool: String,
    pub address: String,
    pub family: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Addresses a pool can hand out (saturating at i64::MAX).
    pub addresses_total: Family<PoolLabels, Gauge>,
    /// Addresses of a pool held by Services.
    pub addresses_in_use: Family<PoolLabels, Gauge>,
    pub allocation_failures: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub is_leader: Gauge,
    /// 1 for each address a Service holds: what alerts join with the speakers' announcements.
    service_addresses: Family<ServiceAddressLabels, Gauge>,
    /// The series of `service_addresses` each Service has, to remove them when it changes.
    held: Arc<Mutex<HashMap<ServiceKey, Vec<ServiceAddressLabels>>>>,
    /// 1 while an object's `Ready` condition is True, 0 otherwise.
    object_ready: Family<ObjectLabels, Gauge>,
    /// The names `object_ready` has a series for, by kind.
    ready_shown: Arc<Mutex<HashMap<String, BTreeSet<String>>>>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            addresses_total: Family::default(),
            addresses_in_use: Family::default(),
            allocation_failures: Family::default(),
            reconcile_duration: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            is_leader: Gauge::default(),
            service_addresses: Family::default(),
            held: Arc::default(),
            object_ready: Family::default(),
            ready_shown: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix("ferrolb");
        r.register(
            "allocator_addresses",
            "Addresses a pool can hand out",
            m.addresses_total.clone(),
        );
        r.register(
            "allocator_addresses_in_use",
            "Addresses of a pool held by Services",
            m.addresses_in_use.clone(),
        );
        r.register(
            "allocation_failures",
            "Allocations that failed, by reason",
            m.allocation_failures.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time to reconcile one Service",
            m.reconcile_duration.clone(),
        );
        r.register(
            "controller_leader",
            "1 when this replica holds the leader Lease",
            m.is_leader.clone(),
        );
        r.register(
            "service_address",
            "1 for each address a Service holds",
            m.service_addresses.clone(),
        );
        r.register(
            "object_ready",
            "1 while the object's Ready condition is True (IPAddressPool, BGPPeer), else 0",
            m.object_ready.clone(),
        );
        m
    }

    /// Replaces the series of the addresses `key` holds with `addresses` (none: it holds none).
    /// Called under the state lock, so that the series follow the allocations in order.
    pub fn service_holds(&self, key: &ServiceKey, addresses: &[AssignedAddress]) {
        let mut held = self.held.lock().expect("not poisoned");
        for labels in held.remove(key).unwrap_or_default() {
            self.service_addresses.remove(&labels);
        }
        let labels: Vec<ServiceAddressLabels> = addresses
            .iter()
            .map(|a| ServiceAddressLabels {
                service_namespace: key.namespace.clone(),
                service_name: key.name.clone(),
                pool: a.pool.clone().unwrap_or_default(),
                address: a.ip.to_string(),
                family: if a.ip.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
            })
            .collect();
        for l in &labels {
            self.service_addresses.get_or_create(l).set(1);
        }
        if !labels.is_empty() {
            held.insert(key.clone(), labels);
        }
    }

    /// Sets the series of every object of `kind` to `ready` (name, Ready is True), removing
    /// those of objects no longer there.
    pub fn readiness(&self, kind: &str, ready: &[(String, bool)]) {
        let mut shown = self.ready_shown.lock().expect("not poisoned");
        let names = shown.entry(kind.to_string()).or_default();
        let now: BTreeSet<String> = ready.iter().map(|(name, _)| name.clone()).collect();
        for gone in names.difference(&now) {
            self.object_ready.remove(&ObjectLabels {
                kind: kind.into(),
                name: gone.clone(),
            });
        }
        for (name, ready) in ready {
            let labels = ObjectLabels {
                kind: kind.into(),
                name: name.clone(),
            };
            self.object_ready
                .get_or_create(&labels)
                .set(i64::from(*ready));
        }
        *names = now;
    }
}
