//! The controller's Prometheus metrics, with MetalLB-like names under `ferrolb_`.

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

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Addresses a pool can hand out (saturating at i64::MAX).
    pub addresses_total: Family<PoolLabels, Gauge>,
    /// Addresses of a pool held by Services.
    pub addresses_in_use: Family<PoolLabels, Gauge>,
    pub allocation_failures: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub is_leader: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            addresses_total: Family::default(),
            addresses_in_use: Family::default(),
            allocation_failures: Family::default(),
            reconcile_duration: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            is_leader: Gauge::default(),
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
        m
    }
}
