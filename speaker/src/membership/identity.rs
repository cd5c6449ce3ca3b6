//! Who a speaker is on the gossip network: its node, the address peers reach it at, and a
//! generation that makes every start (and every rejoin) a new identity. Nothing else: foca
//! repeats identities in every datagram, so one must stay small whatever the node runs (its
//! MACs travel in records of their own, see [`super::macs`]).

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// One speaker process, as the cluster knows it.
///
/// foca keys members by [`MemberId::addr`]: one live identity per gossip address. When two
/// identities share an address (a restart, a rejoin) the higher `generation` wins, so a
/// restarted speaker replaces its previous self instead of waiting for it to be declared
/// down.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MemberId {
    /// The Kubernetes Node this speaker runs on.
    pub node: String,
    /// Where peers send gossip to: the node's address and the gossip port.
    pub addr: SocketAddr,
    /// Unix time in nanoseconds when this identity was made; bumped by [`MemberId::renew`].
    pub generation: u64,
}

impl MemberId {
    /// A fresh identity whose generation is the current time, so it wins over any identity
    /// this node had before (clocks permitting; a rejoin uses [`MemberId::renew`] instead).
    pub fn new(node: impl Into<String>, addr: SocketAddr) -> MemberId {
        MemberId {
            node: node.into(),
            addr,
            generation: unix_nanos(),
        }
    }

    /// The same speaker as a new identity: a generation above both this one and the clock,
    /// so it wins the address conflict even if the clock stepped back.
    pub fn renew(&self) -> MemberId {
        MemberId {
            generation: unix_nanos().max(self.generation.saturating_add(1)),
            ..self.clone()
        }
    }

    /// A stand-in for whoever listens at `addr`, to announce ourselves to a seed whose
    /// identity we do not know yet (foca accepts an announce addressed to any identity with
    /// the receiver's address).
    pub(crate) fn placeholder(addr: SocketAddr) -> MemberId {
        MemberId {
            node: String::new(),
            addr,
            generation: 0,
        }
    }
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    /// foca calls this when the cluster declared us down (a false suspicion, a partition):
    /// we come back at once as a newer identity instead of staying out.
    fn renew(&self) -> Option<Self> {
        Some(MemberId::renew(self))
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

fn unix_nanos() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn renewed_identity_wins_the_address() {
        let old = MemberId::new("n1", "127.0.0.1:9652".parse().unwrap());
        let new = MemberId::renew(&old);
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn renew_bumps_even_when_the_clock_is_behind() {
        let mut old = MemberId::new("n1", "127.0.0.1:9652".parse().unwrap());
        old.generation = u64::MAX - 1;
        assert_eq!(MemberId::renew(&old).generation, u64::MAX);
    }

    /// However busy the node, an identity stays a few hundred bytes: three of the longest
    /// (foca's most per datagram) and 300 bytes of message fit a datagram.
    #[test]
    fn an_identity_is_small_whatever_the_node_runs() {
        let longest = MemberId {
            node: "n".repeat(super::super::macs::MAX_NODE_NAME),
            addr: "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap(),
            generation: u64::MAX,
        };
        let encoded = postcard::to_allocvec(&longest).unwrap();
        assert!(encoded.len() <= 300, "{} bytes", encoded.len());
        let room = super::super::envelope::MAX_DATAGRAM - super::super::envelope::OVERHEAD;
        assert!(3 * encoded.len() + 300 <= room, "{} bytes", encoded.len());
    }
}
