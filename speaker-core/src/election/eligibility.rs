//! Which nodes may announce: the intersection DESIGN §4 names, as a value the caller fills in.

use std::collections::BTreeSet;

use super::NodeName;

/// The sets the speaker's watches and membership provide, for one group of addresses.
///
/// `eligible = live ∩ selected ∩ with_local_endpoints − excluded`, where a `None` set does not
/// restrict. Node Ready is deliberately absent: membership liveness is the faster, API-server
/// independent signal of the same thing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eligibility {
    /// Members the gossip layer currently sees alive.
    pub live: BTreeSet<NodeName>,
    /// Nodes the advertisement's node selectors pick; `None` when it selects every node.
    pub selected: Option<BTreeSet<NodeName>>,
    /// Nodes that must not announce: labelled `node.kubernetes.io/exclude-from-external-load-balancers`,
    /// cordoned, or handing over.
    pub excluded: BTreeSet<NodeName>,
    /// Nodes with a ready endpoint, for `externalTrafficPolicy: Local`; `None` for `Cluster`.
    pub with_local_endpoints: Option<BTreeSet<NodeName>>,
}

impl Eligibility {
    pub fn is_eligible(&self, node: &NodeName) -> bool {
        self.live.contains(node)
            && self.selected.as_ref().is_none_or(|s| s.contains(node))
            && self
                .with_local_endpoints
                .as_ref()
                .is_none_or(|s| s.contains(node))
            && !self.excluded.contains(node)
    }

    /// The nodes allowed to announce, ready for [`super::owner`] or [`super::ranked`].
    pub fn eligible(&self) -> BTreeSet<&NodeName> {
        self.live.iter().filter(|n| self.is_eligible(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<NodeName> {
        list.iter().map(|n| NodeName::from(*n)).collect()
    }

    fn eligible(e: &Eligibility) -> Vec<&str> {
        e.eligible().into_iter().map(NodeName::as_str).collect()
    }

    #[test]
    fn unrestricted_means_every_live_node() {
        let e = Eligibility {
            live: names(&["a", "b", "c"]),
            ..Eligibility::default()
        };
        assert_eq!(eligible(&e), ["a", "b", "c"]);
    }

    #[test]
    fn every_set_restricts() {
        let e = Eligibility {
            live: names(&["a", "b", "c", "d", "e"]),
            selected: Some(names(&["a", "b", "c", "d", "x"])),
            excluded: names(&["b"]),
            with_local_endpoints: Some(names(&["a", "b", "d", "e", "y"])),
        };
        assert_eq!(eligible(&e), ["a", "d"]);
        assert!(
            !e.is_eligible(&NodeName::from("x")),
            "selected but not live"
        );
    }

    #[test]
    fn local_policy_without_endpoints_elects_nobody() {
        let e = Eligibility {
            live: names(&["a", "b"]),
            with_local_endpoints: Some(BTreeSet::new()),
            ..Eligibility::default()
        };
        assert!(e.eligible().is_empty());
    }
}
