//! IPAddressPools as the allocator sees them: parsed at the edge, with the reason a pool cannot
//! allocate when it cannot.

use allocator::{LabelSelector, Pool, ServiceAllocation};
use crds::IPAddressPool;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use kube::ResourceExt;

/// Why a pool is left out of allocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolProblem {
    #[error("{0}")]
    InvalidAddresses(String),
    #[error("{0}")]
    InvalidSelector(String),
    #[error("the pool is being deleted")]
    Deleting,
}

impl PoolProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            PoolProblem::InvalidAddresses(_) => "InvalidAddresses",
            PoolProblem::InvalidSelector(_) => "InvalidSelector",
            PoolProblem::Deleting => "Deleting",
        }
    }
}

/// The pool for the allocator, or why it has none.
pub fn read(pool: &IPAddressPool) -> Result<Pool, PoolProblem> {
    if pool.metadata.deletion_timestamp.is_some() {
        return Err(PoolProblem::Deleting);
    }
    let spec = &pool.spec;
    let ranges = crds::address::parse_blocks(spec.addresses.iter().map(|a| a.0.as_str()))
        .map_err(|e| PoolProblem::InvalidAddresses(e.to_string()))?;
    let allocation = match &spec.service_allocation {
        None => None,
        Some(a) => Some(ServiceAllocation {
            priority: a.priority,
            namespaces: a.namespaces.iter().map(|n| n.0.clone()).collect(),
            namespace_selectors: selectors(&a.namespace_selectors)?,
            service_selectors: selectors(&a.service_selectors)?,
        }),
    };
    Ok(Pool {
        name: pool.name_any(),
        ranges,
        auto_assign: spec.auto_assign,
        avoid_buggy_ips: spec.avoid_buggy_ips,
        allocation,
    })
}

/// Kubernetes label selectors in the allocator's terms.
pub fn selectors(list: &[meta::LabelSelector]) -> Result<Vec<LabelSelector>, PoolProblem> {
    LabelSelector::read_all(list).map_err(|e| PoolProblem::InvalidSelector(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(spec: serde_json::Value) -> IPAddressPool {
        serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "lan"}, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn reads_a_pool_with_allocation_rules() {
        let p = read(&pool(json!({
            "addresses": ["198.51.100.0/30", "2001:db8::1"],
            "avoidBuggyIPs": true,
            "serviceAllocation": {"priority": 5, "namespaces": ["shop"],
                "serviceSelectors": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}]},
        })))
        .unwrap();
        assert_eq!(p.name, "lan");
        assert_eq!(p.ranges.len(), 2);
        assert!(p.auto_assign && p.avoid_buggy_ips);
        let a = p.allocation.unwrap();
        assert_eq!(
            (a.priority, a.namespaces),
            (Some(5), vec!["shop".to_string()])
        );
        assert_eq!(
            a.service_selectors[0].match_expressions[0].operator,
            allocator::Operator::In
        );
    }

    #[test]
    fn problems_are_reported_not_hidden() {
        let bad = read(&pool(json!({"addresses": ["2001:db8::20-2001:db8::10"]}))).unwrap_err();
        assert_eq!(bad.reason(), "InvalidAddresses");
        assert!(bad.to_string().contains("reversed"), "{bad}");
        let bad = read(&pool(
            json!({"addresses": ["198.51.100.1"], "serviceAllocation":
            {"serviceSelectors": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]}}),
        ))
        .unwrap_err();
        assert_eq!(bad.reason(), "InvalidSelector");
        let mut deleting = pool(json!({"addresses": ["198.51.100.1"]}));
        deleting.metadata.deletion_timestamp =
            Some(meta::Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(read(&deleting), Err(PoolProblem::Deleting));
    }
}
