//! `L2Advertisement`s: which pools are announced, from which nodes, on which interfaces.

use crate::selector::{LabelSelector, Labels, SelectorError};

/// An advertisement as every decision reads it. Selectors that cannot be read match nothing
/// (and are listed in `invalid_selectors`), so a typo narrows an advertisement, never widens it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    pub name: String,
    /// `ipAddressPools`.
    pub pools: Vec<String>,
    /// `ipAddressPoolSelectors`, those that could be read.
    pub pool_selectors: Vec<LabelSelector>,
    /// `nodeSelectors`, those that could be read.
    pub node_selectors: Vec<LabelSelector>,
    /// Whether `nodeSelectors` was set at all (all of them unreadable selects no node).
    pub selects_some_nodes: bool,
    /// Whether `ipAddressPoolSelectors` was set at all.
    pub selects_some_pools: bool,
    /// `interfaces`; empty: the speaker chooses.
    pub interfaces: Vec<String>,
    pub invalid_selectors: Vec<SelectorError>,
}

impl Advertisement {
    /// Whether this advertisement covers the pool: named in `ipAddressPools`, matched by one of
    /// `ipAddressPoolSelectors`, or, with neither set, every pool.
    pub fn covers_pool(&self, pool: &str, pool_labels: &Labels) -> bool {
        if self.pools.is_empty() && !self.selects_some_pools {
            return true;
        }
        self.pools.iter().any(|p| p == pool)
            || self.pool_selectors.iter().any(|s| s.matches(pool_labels))
    }

    /// Whether a node with these labels may announce for this advertisement: it matches one of
    /// `nodeSelectors`, or there are none.
    pub fn selects_node(&self, node_labels: &Labels) -> bool {
        !self.selects_some_nodes || self.node_selectors.iter().any(|s| s.matches(node_labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::labels_of;

    #[test]
    fn covers_pools_by_name_label_or_all() {
        let zone_a = labels_of([("zone", "a")]);
        let none = Labels::new();
        assert!(Advertisement::default().covers_pool("lan", &none));
        let named = Advertisement {
            pools: vec!["lan".into()],
            ..Default::default()
        };
        assert!(named.covers_pool("lan", &none));
        assert!(!named.covers_pool("other", &none));
        let by_label = Advertisement {
            pool_selectors: vec![LabelSelector::labels([("zone", "a")])],
            selects_some_pools: true,
            ..Default::default()
        };
        assert!(by_label.covers_pool("lan", &zone_a));
        assert!(!by_label.covers_pool("lan", &none));
        // Every pool selector unreadable: covers nothing, not everything.
        let unreadable = Advertisement {
            selects_some_pools: true,
            invalid_selectors: vec![SelectorError("Near".into())],
            ..Default::default()
        };
        assert!(!unreadable.covers_pool("lan", &zone_a));
    }

    #[test]
    fn selects_nodes_by_any_selector_or_all() {
        let rack1 = labels_of([("rack", "1")]);
        let rack2 = labels_of([("rack", "2")]);
        assert!(Advertisement::default().selects_node(&rack1));
        let one = Advertisement {
            node_selectors: vec![LabelSelector::labels([("rack", "1")])],
            selects_some_nodes: true,
            ..Default::default()
        };
        assert!(one.selects_node(&rack1));
        assert!(!one.selects_node(&rack2));
        let unreadable = Advertisement {
            selects_some_nodes: true,
            ..Default::default()
        };
        assert!(!unreadable.selects_node(&rack1));
    }
}
