//! BGP mode in the model's terms: peers, advertisements and BFD profiles with their defaults
//! applied and their strings parsed, so that the speaker decides from plain values.

use std::net::IpAddr;
use std::time::Duration;

use crate::advertisement::Advertisement;

/// AS_TRANS (RFC 6793): the 2-byte stand-in for a 4-byte ASN in OPEN, owned by nobody.
pub const AS_TRANS: u16 = 23456;

/// Defaults where a `BGPPeer` leaves a field out (README, "BGP mode").
pub const DEFAULT_PORT: u16 = 179;
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
pub const DEFAULT_CONNECT_TIME: Duration = Duration::from_secs(5);

/// A router the selected nodes open a session to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    pub name: String,
    pub local_asn: u32,
    pub peer_asn: u32,
    pub address: IpAddr,
    pub port: u16,
    pub source: Option<IpAddr>,
    pub hold_time: Duration,
    /// `None`: a third of the negotiated hold time.
    pub keepalive_time: Option<Duration>,
    pub connect_time: Duration,
    pub ebgp_multi_hop: bool,
    /// The Secret (in ferrolb's namespace) holding the TCP MD5 password.
    pub password_secret: Option<String>,
    /// Which nodes open a session: the node selectors of an advertisement-shaped scope (its
    /// pool fields unused).
    pub nodes: Advertisement,
    pub bfd_profile: Option<String>,
}

impl BgpPeer {
    pub fn ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }

    /// The IP TTL (hop limit) of the session's packets. 1 for eBGP without `ebgpMultiHop`, as
    /// routers do: a session meant for a neighbour on the link cannot come up through another
    /// router. 255 for iBGP and multi-hop eBGP.
    pub fn ttl(&self) -> u8 {
        if self.ibgp() || self.ebgp_multi_hop {
            255
        } else {
            1
        }
    }
}

/// What is advertised to which peers, and with which attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpAdvertisement {
    /// Which pools, and from which nodes: the same rules as an L2Advertisement's.
    pub scope: Advertisement,
    pub aggregation_length: u8,
    pub aggregation_length_v6: u8,
    pub local_pref: Option<u32>,
    pub communities: Vec<Community>,
    /// Peer names; empty: every peer.
    pub peers: Vec<String>,
}

impl BgpAdvertisement {
    pub fn to_peer(&self, peer: &str) -> bool {
        self.peers.is_empty() || self.peers.iter().any(|p| p == peer)
    }
}

/// BFD timers for the sessions of peers that name the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdProfile {
    pub name: String,
    pub receive_interval: Duration,
    pub transmit_interval: Duration,
    pub detect_multiplier: u8,
    pub passive: bool,
    pub minimum_ttl: u8,
}

impl BfdProfile {
    /// A profile named `name` with MetalLB's and FRR's defaults (300 ms × 3).
    pub fn defaults(name: &str) -> BfdProfile {
        BfdProfile {
            name: name.to_string(),
            receive_interval: Duration::from_millis(300),
            transmit_interval: Duration::from_millis(300),
            detect_multiplier: 3,
            passive: false,
            minimum_ttl: 254,
        }
    }
}

/// A BGP community as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Community {
    /// RFC 1997: two 16-bit halves in one 32-bit value.
    Standard(u32),
    /// RFC 8092: global administrator and two local values.
    Large(u32, u32, u32),
}

/// Well-known communities by name (RFC 1997, RFC 3765, RFC 7999).
pub const WELL_KNOWN_COMMUNITIES: [(&str, u32); 5] = [
    ("no-export", 0xFFFF_FF01),
    ("no-advertise", 0xFFFF_FF02),
    ("no-export-subconfed", 0xFFFF_FF03),
    ("no-peer", 0xFFFF_FF04),
    ("blackhole", 0xFFFF_029A),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a community: write 65535:65281, large:64512:1:2 or a well-known name")]
pub struct CommunityError(pub String);

impl Community {
    /// `65535:65281`, `large:64512:1:2` or a well-known name; the same shapes the CRD's rule
    /// admits.
    pub fn parse(s: &str) -> Result<Community, CommunityError> {
        let error = || CommunityError(s.to_string());
        if let Some((_, value)) = WELL_KNOWN_COMMUNITIES.iter().find(|(name, _)| *name == s) {
            return Ok(Community::Standard(*value));
        }
        let number = |part: &str, digits: usize| -> Option<u64> {
            (!part.is_empty() && part.len() <= digits && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse().ok())
                .flatten()
        };
        if let Some(rest) = s.strip_prefix("large:") {
            let parts: Vec<u32> = rest
                .split(':')
                .map(|p| number(p, 10).and_then(|n| u32::try_from(n).ok()))
                .collect::<Option<_>>()
                .ok_or_else(error)?;
            return match parts[..] {
                [global, first, second] => Ok(Community::Large(global, first, second)),
                _ => Err(error()),
            };
        }
        let halves: Vec<u32> = s
            .split(':')
            .map(|p| {
                number(p, 5)
                    .and_then(|n| u16::try_from(n).ok())
                    .map(u32::from)
            })
            .collect::<Option<_>>()
            .ok_or_else(error)?;
        match halves[..] {
            [high, low] => Ok(Community::Standard((high << 16) | low)),
            _ => Err(error()),
        }
    }
}

/// How a BGPPeer's sessions stand over the nodes it selects: what its status and `Ready`
/// condition say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReadiness {
    pub selected: usize,
    pub established: usize,
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

/// One node's session as its speaker reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedSession {
    pub state: String,
    pub message: Option<String>,
}

/// Nodes named per reason in a message before the rest are counted.
const NAMED_NODES: usize = 5;

/// The readiness of a peer selecting `selected` nodes, from the sessions the speakers
/// reported by node (entries of nodes not selected are ignored).
pub fn peer_readiness(
    selected: &std::collections::BTreeSet<String>,
    sessions: &std::collections::BTreeMap<String, ReportedSession>,
) -> PeerReadiness {
    // Nodes waiting for the same reason are named together.
    let mut waiting: Vec<(String, Vec<&str>)> = Vec::new();
    let mut established = 0;
    for node in selected {
        let why = match sessions.get(node) {
            Some(s) if s.state == "Established" => {
                established += 1;
                continue;
            }
            Some(s) => match &s.message {
                Some(why) => format!("{} ({why})", s.state),
                None => s.state.clone(),
            },
            None => "no session reported (is its speaker running?)".to_string(),
        };
        match waiting.iter_mut().find(|(w, _)| *w == why) {
            Some((_, nodes)) => nodes.push(node),
            None => waiting.push((why, vec![node])),
        }
    }
    let (ready, reason, message) = if selected.is_empty() {
        (
            false,
            "NoNodeSelected",
            "the nodeSelectors select no node".to_string(),
        )
    } else if waiting.is_empty() {
        (
            true,
            "Established",
            format!("every selected node ({established}) has its session Established"),
        )
    } else {
        let reasons: Vec<String> = waiting
            .iter()
            .map(|(why, nodes)| {
                let more = nodes.len().saturating_sub(NAMED_NODES);
                let mut named = nodes[..nodes.len().min(NAMED_NODES)].join(", ");
                if more > 0 {
                    named.push_str(&format!(" and {more} more"));
                }
                format!("{named}: {why}")
            })
            .collect();
        let message = format!(
            "{established} of {} selected nodes Established; {}",
            selected.len(),
            reasons.join("; ")
        );
        (false, "NotEstablished", message)
    };
    PeerReadiness {
        selected: selected.len(),
        established,
        ready,
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ebgp_on_the_link_sends_ttl_1() {
        let peer = |local_asn, peer_asn, ebgp_multi_hop| BgpPeer {
            name: "tor".into(),
            local_asn,
            peer_asn,
            address: "192.0.2.1".parse().unwrap(),
            port: 179,
            source: None,
            hold_time: Duration::from_secs(90),
            keepalive_time: None,
            connect_time: Duration::from_secs(5),
            ebgp_multi_hop,
            password_secret: None,
            nodes: Advertisement::default(),
            bfd_profile: None,
        };
        assert_eq!(peer(64513, 64512, false).ttl(), 1);
        assert_eq!(peer(64513, 64512, true).ttl(), 255);
        assert_eq!(peer(64512, 64512, false).ttl(), 255);
    }

    #[test]
    fn communities_are_read_as_the_crd_rule_admits_them() {
        for (text, expected) in [
            ("65535:65281", Some(Community::Standard(0xFFFF_FF01))),
            ("0:0", Some(Community::Standard(0))),
            ("64512:7", Some(Community::Standard((64512 << 16) | 7))),
            ("no-export", Some(Community::Standard(0xFFFF_FF01))),
            ("blackhole", Some(Community::Standard(0xFFFF_029A))),
            (
                "large:4294967295:1:2",
                Some(Community::Large(u32::MAX, 1, 2)),
            ),
            ("65536:1", None),
            ("1:65536", None),
            ("1:2:3", None),
            ("1", None),
            (":1", None),
            (" 1:2", None),
            ("-1:2", None),
            ("large:4294967296:1:2", None),
            ("large:1:2", None),
            ("large:1:2:3:4", None),
            ("NO_EXPORT", None),
            ("", None),
        ] {
            assert_eq!(Community::parse(text).ok(), expected, "{text:?}");
        }
    }

    #[test]
    fn an_advertisement_without_peers_goes_to_every_peer() {
        let ad = BgpAdvertisement {
            scope: Advertisement::default(),
            aggregation_length: 32,
            aggregation_length_v6: 128,
            local_pref: None,
            communities: vec![],
            peers: vec![],
        };
        assert!(ad.to_peer("tor-a"));
        let named = BgpAdvertisement {
            peers: vec!["tor-b".into()],
            ..ad
        };
        assert!(!named.to_peer("tor-a"));
        assert!(named.to_peer("tor-b"));
    }

    fn session(state: &str, message: Option<&str>) -> ReportedSession {
        ReportedSession {
            state: state.into(),
            message: message.map(Into::into),
        }
    }

    #[test]
    fn a_peer_is_ready_when_every_selected_node_is_established() {
        let selected: std::collections::BTreeSet<String> =
            ["a", "b"].iter().map(|s| s.to_string()).collect();
        let mut sessions: std::collections::BTreeMap<String, ReportedSession> = [
            ("a".to_string(), session("Established", None)),
            ("b".to_string(), session("Established", None)),
            // Not selected any more: ignored.
            ("z".to_string(), session("Active", Some("refused"))),
        ]
        .into();
        let r = peer_readiness(&selected, &sessions);
        assert_eq!((r.selected, r.established, r.ready), (2, 2, true));
        assert_eq!(r.reason, "Established");

        sessions.insert(
            "b".into(),
            session("Active", Some("no answer from 192.0.2.1:179")),
        );
        let r = peer_readiness(&selected, &sessions);
        assert_eq!(
            (r.established, r.ready, r.reason),
            (1, false, "NotEstablished")
        );
        assert_eq!(
            r.message,
            "1 of 2 selected nodes Established; b: Active (no answer from 192.0.2.1:179)"
        );

        sessions.remove("a");
        let r = peer_readiness(&selected, &sessions);
        assert!(
            r.message.contains("a: no session reported"),
            "{}",
            r.message
        );
        assert_eq!(r.established, 0);
    }

    #[test]
    fn a_peer_selecting_no_node_is_not_ready_and_long_lists_are_cut() {
        let none = peer_readiness(&Default::default(), &Default::default());
        assert_eq!((none.ready, none.reason), (false, "NoNodeSelected"));
        let selected: std::collections::BTreeSet<String> =
            (0..8).map(|i| format!("n{i}")).collect();
        let r = peer_readiness(&selected, &Default::default());
        assert_eq!(
            r.message,
            "0 of 8 selected nodes Established; n0, n1, n2, n3, n4 and 3 more: no session reported (is its speaker running?)"
        );
    }
}
