//! What one router has been sent (the session's Adj-RIB-Out, RFC 4271 §3.2) and the UPDATEs
//! that take it to what the plan wants: only the differences, so that a Service added among
//! thousands costs one UPDATE, not a full table.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use model::bgp::Community;

use super::wire;
use crate::decide::bgp::Attributes;

/// The routes of one session: prefix → attributes.
pub type Routes = BTreeMap<IpNet, Attributes>;

/// The differences between what was sent and what is wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Sent, no longer wanted.
    pub withdraw: Vec<IpNet>,
    /// New or with other attributes, grouped by attributes (one UPDATE carries many prefixes
    /// sharing them).
    pub announce: BTreeMap<Attributes, Vec<IpNet>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.withdraw.is_empty() && self.announce.is_empty()
    }
}

/// What turns `sent` into `wanted`. A prefix whose attributes changed is announced again
/// (the new path replaces the old, RFC 4271 §3.1), not withdrawn first.
pub fn changes(sent: &Routes, wanted: &Routes) -> Changes {
    let mut changes = Changes::default();
    for prefix in sent.keys() {
        if !wanted.contains_key(prefix) {
            changes.withdraw.push(*prefix);
        }
    }
    for (prefix, attributes) in wanted {
        if sent.get(prefix) != Some(attributes) {
            changes
                .announce
                .entry(attributes.clone())
                .or_default()
                .push(*prefix);
        }
    }
    changes
}

/// The routes a session carries: those of the families it negotiated.
pub fn of_families(routes: &Routes, ipv4: bool, ipv6: bool) -> Routes {
    routes
        .iter()
        .filter(|(prefix, _)| match prefix.addr() {
            IpAddr::V4(_) => ipv4,
            IpAddr::V6(_) => ipv6,
        })
        .map(|(prefix, attributes)| (*prefix, attributes.clone()))
        .collect()
}

/// The wire's form of the attributes.
pub fn wire_attributes(attributes: &Attributes) -> wire::Attributes {
    let mut out = wire::Attributes {
        local_pref: attributes.local_pref,
        ..Default::default()
    };
    for community in &attributes.communities {
        match *community {
            Community::Standard(value) => out.communities.push(value),
            Community::Large(global, first, second) => {
                out.large_communities.push((global, first, second))
            }
        }
    }
    out
}

/// The wire's form of prefixes.
pub fn wire_prefixes(prefixes: &[IpNet]) -> Vec<wire::Prefix> {
    prefixes
        .iter()
        .map(|p| (p.addr(), p.prefix_len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn with_pref(pref: u32) -> Attributes {
        Attributes {
            local_pref: Some(pref),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_changes_when_sent_is_wanted() {
        let routes: Routes = [(net("192.0.2.1/32"), with_pref(100))].into();
        assert!(changes(&routes, &routes).is_empty());
    }

    #[test]
    fn withdraws_what_went_and_announces_what_came_or_changed() {
        let sent: Routes = [
            (net("192.0.2.1/32"), with_pref(100)),
            (net("192.0.2.2/32"), with_pref(100)),
            (net("192.0.2.3/32"), with_pref(100)),
        ]
        .into();
        let wanted: Routes = [
            (net("192.0.2.2/32"), with_pref(100)),
            (net("192.0.2.3/32"), with_pref(200)),
            (net("192.0.2.4/32"), with_pref(200)),
            (net("2001:db8::4/128"), Attributes::default()),
        ]
        .into();
        let changes = changes(&sent, &wanted);
        assert_eq!(changes.withdraw, [net("192.0.2.1/32")]);
        assert_eq!(
            changes.announce,
            [
                (Attributes::default(), vec![net("2001:db8::4/128")]),
                (
                    with_pref(200),
                    vec![net("192.0.2.3/32"), net("192.0.2.4/32")]
                ),
            ]
            .into()
        );
    }

    #[test]
    fn a_session_carries_the_families_it_negotiated() {
        let routes: Routes = [
            (net("192.0.2.1/32"), Attributes::default()),
            (net("2001:db8::1/128"), Attributes::default()),
        ]
        .into();
        assert_eq!(
            of_families(&routes, true, false).keys().collect::<Vec<_>>(),
            [&net("192.0.2.1/32")]
        );
        assert_eq!(of_families(&routes, false, true).len(), 1);
        assert_eq!(of_families(&routes, true, true), routes);
    }

    #[test]
    fn standard_and_large_communities_go_to_their_attributes() {
        let attributes = Attributes {
            local_pref: Some(7),
            communities: [Community::Standard(1), Community::Large(2, 3, 4)].into(),
        };
        assert_eq!(
            wire_attributes(&attributes),
            wire::Attributes {
                communities: vec![1],
                large_communities: vec![(2, 3, 4)],
                local_pref: Some(7),
            }
        );
    }
}
