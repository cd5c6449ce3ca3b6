//! `L2Advertisement`: which pools are announced on the LAN, from which nodes and interfaces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{InterfaceName, PoolName};
use crate::selector::Labels;

/// Announce the addresses of some pools with ARP and NDP. An address is announced only if at
/// least one L2Advertisement covers its pool; several that cover one pool add up.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "L2Advertisement",
    doc = "Announces the addresses of some pools on the LAN with ARP and NDP.",
    plural = "l2advertisements",
    shortname = "l2adv",
    category = "ferrolb",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Pool Selectors","type":"string","jsonPath":".spec.ipAddressPoolSelectors","priority":1}"#,
    printcolumn = r#"{"name":"Node Selectors","type":"string","jsonPath":".spec.nodeSelectors","priority":1}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools announced by name. With neither this nor `ipAddressPoolSelectors`, every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ip_address_pools: Vec<PoolName>,

    /// Pools announced by label; added to `ipAddressPools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// Nodes that may announce, matching any one selector. None: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub node_selectors: Vec<LabelSelector>,

    /// Interfaces to announce on. None: those with an address in the announced address's subnet,
    /// else every up, broadcast-capable interface that is not a bridge or bond member, a veth,
    /// a CNI or container bridge, or loopback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub interfaces: Vec<InterfaceName>,
}

impl L2AdvertisementSpec {
    /// Whether this advertisement covers the pool: named in `ipAddressPools`, matched by one of
    /// `ipAddressPoolSelectors`, or, with neither set, every pool. A selector that cannot be read
    /// matches nothing.
    pub fn covers_pool(&self, pool: &str, pool_labels: &Labels) -> bool {
        if self.ip_address_pools.is_empty() && self.ip_address_pool_selectors.is_empty() {
            return true;
        }
        self.ip_address_pools.iter().any(|p| p.0 == pool)
            || self
                .ip_address_pool_selectors
                .iter()
                .any(|s| crate::LabelSelector::read(s).is_ok_and(|s| s.matches(pool_labels)))
    }

    /// Whether a node with these labels may announce for this advertisement: it matches one of
    /// `nodeSelectors`, or there are none. A selector that cannot be read matches nothing.
    pub fn selects_node(&self, node_labels: &Labels) -> bool {
        self.node_selectors.is_empty()
            || self
                .node_selectors
                .iter()
                .any(|s| crate::LabelSelector::read(s).is_ok_and(|s| s.matches(node_labels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::labels;
    use serde_json::json;

    fn ad(v: serde_json::Value) -> L2AdvertisementSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn covers_pools_by_name_label_or_all() {
        let zone_a = labels(&[("zone", "a")]);
        let none = Labels::new();
        assert!(ad(json!({})).covers_pool("lan", &none));
        assert!(ad(json!({"ipAddressPools": ["lan"]})).covers_pool("lan", &none));
        assert!(!ad(json!({"ipAddressPools": ["other"]})).covers_pool("lan", &none));
        let by_label = ad(json!({"ipAddressPoolSelectors": [{"matchLabels": {"zone": "a"}}]}));
        assert!(by_label.covers_pool("lan", &zone_a));
        assert!(!by_label.covers_pool("lan", &none));
        let unreadable = ad(json!({"ipAddressPoolSelectors":
            [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]}));
        assert!(!unreadable.covers_pool("lan", &zone_a));
    }

    #[test]
    fn selects_nodes_by_any_selector_or_all() {
        let rack1 = labels(&[("rack", "1")]);
        let rack2 = labels(&[("rack", "2")]);
        assert!(ad(json!({})).selects_node(&rack1));
        let two = ad(json!({"nodeSelectors": [
            {"matchLabels": {"rack": "1"}},
            {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["3"]}]},
        ]}));
        assert!(two.selects_node(&rack1));
        assert!(!two.selects_node(&rack2));
        let unreadable = ad(
            json!({"nodeSelectors": [{"matchExpressions": [{"key": "rack", "operator": "Near"}]}]}),
        );
        assert!(!unreadable.selects_node(&rack1));
    }
}
