//! Who announces a Service's addresses, as the `ferrolb.io/Announced` condition says it.
//!
//! The speaker writes the condition's message and `kubectl ferrolb` reads it back; both go
//! through this one format, so a change of wording cannot leave the reader behind:
//! - reason `Announced`: `[<over BGP>; ]<on the link> announced from node <node>`,
//! - reason `Advertised`: `<over BGP>; reported by node <node>`,
//!
//! where `<on the link>` is `198.51.100.1 on eth0, eth1 and 2001:db8::1` (an address without
//! interfaces: not known yet) and `<over BGP>` is `198.51.100.5 over BGP from node-1, node-2
//! and …`. The message ends with the writer's node name: the admission policy that lets a
//! speaker write the condition only in its own node's name reads it there. Node names (DNS
//! subdomains) hold no spaces or commas, so the separators cannot occur inside one.

use std::net::IpAddr;

/// The condition's reason when a node answers for the addresses on its links.
pub const ANNOUNCED: &str = "Announced";
/// The condition's reason when the addresses are advertised over BGP only.
pub const ADVERTISED: &str = "Advertised";

const WRITER: &str = " node ";
const ANNOUNCED_FROM: &str = " announced from node ";
const REPORTED_BY: &str = "; reported by node ";
const OVER_BGP_FROM: &str = " over BGP from ";
const ON: &str = " on ";
const PARTS: &str = "; ";
const ITEMS: &str = " and ";
const NAMES: &str = ", ";

/// The node a condition message is written in the name of: every message a speaker writes
/// ends with `node <name>`, where the admission policy reads it (`endsWith(' node ' + name)`).
pub fn writer(message: &str) -> Option<&str> {
    message
        .rsplit_once(WRITER)
        .map(|(_, node)| node)
        .filter(|node| !node.is_empty() && !node.contains(' '))
}

/// The addresses of one Service and where each is announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// Each address advertised over BGP, with the nodes that advertise it.
    pub over_bgp: Vec<(IpAddr, Vec<String>)>,
    /// Each address answered on the announcing node's links, with those links (empty when
    /// not known yet).
    pub on_link: Vec<(IpAddr, Vec<String>)>,
}

impl Announcement {
    /// The message of an `Announced` condition written by `node`, which answers on its links.
    pub fn announced_by(&self, node: &str) -> String {
        let on_link = self
            .on_link
            .iter()
            .map(|(ip, links)| {
                if links.is_empty() {
                    ip.to_string()
                } else {
                    format!("{ip}{ON}{}", links.join(NAMES))
                }
            })
            .collect::<Vec<_>>()
            .join(ITEMS);
        match self.over_bgp() {
            bgp if bgp.is_empty() => format!("{on_link}{ANNOUNCED_FROM}{node}"),
            bgp => format!("{bgp}{PARTS}{on_link}{ANNOUNCED_FROM}{node}"),
        }
    }

    /// The message of an `Advertised` condition reported by `node`.
    pub fn advertised_by(&self, node: &str) -> String {
        format!("{}{REPORTED_BY}{node}", self.over_bgp())
    }

    /// `<over BGP>` alone; empty when no address is advertised.
    fn over_bgp(&self) -> String {
        self.over_bgp
            .iter()
            .map(|(ip, nodes)| format!("{ip}{OVER_BGP_FROM}{}", nodes.join(NAMES)))
            .collect::<Vec<_>>()
            .join(ITEMS)
    }

    /// The announcement and its writer's node, read back from a condition's reason and
    /// message; `None` for other reasons and for messages not in this format.
    pub fn read(reason: &str, message: &str) -> Option<(Announcement, String)> {
        let (body, node) = match reason {
            ANNOUNCED => message.rsplit_once(ANNOUNCED_FROM)?,
            ADVERTISED => message.rsplit_once(REPORTED_BY)?,
            _ => return None,
        };
        let names = |s: &str| s.split(NAMES).map(str::to_string).collect::<Vec<_>>();
        let mut read = Announcement::default();
        for item in body.split(PARTS).flat_map(|part| part.split(ITEMS)) {
            if let Some((ip, nodes)) = item.split_once(OVER_BGP_FROM) {
                read.over_bgp.push((ip.parse().ok()?, names(nodes)));
            } else if reason == ADVERTISED {
                return None;
            } else if let Some((ip, links)) = item.split_once(ON) {
                read.on_link.push((ip.parse().ok()?, names(links)));
            } else {
                read.on_link.push((item.parse().ok()?, vec![]));
            }
        }
        Some((read, node.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(s: &[&str]) -> Vec<String> {
        s.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_messages_read_as_users_see_them() {
        let both = Announcement {
            over_bgp: vec![(ip("198.51.100.1"), names(&["node-1", "node-3"]))],
            on_link: vec![
                (ip("198.51.100.1"), names(&["eth0", "eth1"])),
                (ip("2001:db8::1"), vec![]),
            ],
        };
        assert_eq!(
            both.announced_by("node-2"),
            "198.51.100.1 over BGP from node-1, node-3; 198.51.100.1 on eth0, eth1 and \
             2001:db8::1 announced from node node-2"
        );
        let bgp = Announcement {
            on_link: vec![],
            ..both
        };
        assert_eq!(
            bgp.advertised_by("node-1"),
            "198.51.100.1 over BGP from node-1, node-3; reported by node node-1"
        );
    }

    #[test]
    fn the_writer_is_the_name_after_the_last_node() {
        assert_eq!(writer("x announced from node a.b-c"), Some("a.b-c"));
        assert_eq!(
            writer("x is also answered by node n1 (02:00:5e:10:ab:ff): …; announced from node n2"),
            Some("n2")
        );
        assert_eq!(writer("x announced from nodea"), None);
        assert_eq!(
            writer("node a"),
            None,
            "the policy wants a space before `node`"
        );
        assert_eq!(writer("x from node "), None);
        assert_eq!(writer(""), None);
    }

    #[test]
    fn other_reasons_and_other_words_are_not_read() {
        for (reason, message) in [
            (
                "NoReadyEndpoint",
                "198.51.100.1: no node has a ready endpoint; reported by node node-1",
            ),
            (ANNOUNCED, "198.51.100.1 on eth0"),
            (ANNOUNCED, "somewhere announced from node node-1"),
            (ADVERTISED, "198.51.100.1 on eth0; reported by node node-1"),
        ] {
            assert_eq!(Announcement::read(reason, message), None, "{message}");
        }
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?"
    }

    fn entries() -> impl Strategy<Value = Vec<(IpAddr, Vec<String>)>> {
        prop::collection::vec((any::<IpAddr>(), prop::collection::vec(name(), 0..3)), 0..3)
    }

    proptest! {
        #[test]
        fn what_the_speaker_writes_reads_back(
            over_bgp in entries(),
            on_link in entries(),
            node in name(),
        ) {
            // BGP names at least one node; an announcing node lists at least one address.
            let over_bgp: Vec<_> = over_bgp.into_iter().filter(|(_, n)| !n.is_empty()).collect();
            prop_assume!(!on_link.is_empty());
            let a = Announcement { over_bgp, on_link };
            let message = a.announced_by(&node);
            prop_assert_eq!(writer(&message), Some(node.as_str()));
            prop_assert_eq!(
                Announcement::read(ANNOUNCED, &message),
                Some((a.clone(), node.clone()))
            );
            prop_assume!(!a.over_bgp.is_empty());
            let bgp = Announcement { on_link: vec![], ..a };
            prop_assert_eq!(
                Announcement::read(ADVERTISED, &bgp.advertised_by(&node)),
                Some((bgp.clone(), node))
            );
        }
    }
}
