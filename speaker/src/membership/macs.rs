//! The MAC addresses a speaker may answer ARP and NDP with, sent to each peer in a record of
//! its own rather than inside the gossip identity.
//!
//! The announcer tells a peer's answer (a previous owner still answering) from a foreign
//! host's by these MACs. They used to travel in the identity, which foca repeats two or three
//! times in every datagram: on a node with a hundred pod veths the identities outgrew the
//! datagram, probes stopped fitting, and a dead node was never declared down. A record goes
//! to a peer when it comes up and again every refresh, holds only the MACs of interfaces the
//! speaker may announce on, and is bounded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// MACs in one record at most: the interfaces a node may announce on are a few NICs, bonds
/// and VLANs, not its pods.
pub const MAX_MACS: usize = 16;
/// Kubernetes Node names are DNS subdomains: at most 253 characters.
pub const MAX_NODE_NAME: usize = 253;

/// One speaker's MACs, for one of its generations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacRecord {
    pub node: String,
    pub generation: u64,
    pub macs: Vec<[u8; 6]>,
}

/// Why a received record was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    #[error("not a MAC record")]
    Malformed,
    #[error("{0} MACs, more than {MAX_MACS}")]
    TooManyMacs(usize),
    #[error("a node name of {0} bytes")]
    NodeName(usize),
}

impl MacRecord {
    /// The record for `macs`, sorted, deduplicated and cut to [`MAX_MACS`].
    pub fn new(node: &str, generation: u64, macs: impl IntoIterator<Item = [u8; 6]>) -> MacRecord {
        let mut macs: Vec<[u8; 6]> = macs.into_iter().collect();
        macs.sort_unstable();
        macs.dedup();
        macs.truncate(MAX_MACS);
        MacRecord {
            node: node.to_string(),
            generation,
            macs,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a record always encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<MacRecord, BadRecord> {
        let record: MacRecord = postcard::from_bytes(bytes).map_err(|_| BadRecord::Malformed)?;
        if record.macs.len() > MAX_MACS {
            return Err(BadRecord::TooManyMacs(record.macs.len()));
        }
        if record.node.is_empty() || record.node.len() > MAX_NODE_NAME {
            return Err(BadRecord::NodeName(record.node.len()));
        }
        Ok(record)
    }
}

/// The newest record of each node heard from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMacs(BTreeMap<String, MacRecord>);

impl PeerMacs {
    /// Keeps `record` unless a newer generation of its node is known; returns whether
    /// anything changed.
    pub fn learn(&mut self, record: MacRecord) -> bool {
        match self.0.get(&record.node) {
            Some(known) if known.generation > record.generation || *known == record => false,
            _ => {
                self.0.insert(record.node.clone(), record);
                true
            }
        }
    }

    /// Every MAC of every node but `me`, with its node.
    pub fn all_but(&self, me: &str) -> impl Iterator<Item = ([u8; 6], String)> + '_ {
        let me = me.to_string();
        self.0
            .values()
            .filter(move |r| r.node != me)
            .flat_map(|r| r.macs.iter().map(|mac| (*mac, r.node.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, i]
    }

    #[test]
    fn a_record_is_bounded_sorted_and_round_trips() {
        let record = MacRecord::new("n1", 7, (0..100).rev().map(mac));
        assert_eq!(record.macs.len(), MAX_MACS);
        assert_eq!(record.macs[0], mac(0));
        assert_eq!(MacRecord::decode(&record.encode()), Ok(record));
        let dup = MacRecord::new("n1", 7, [mac(3), mac(3), mac(1)]);
        assert_eq!(dup.macs, vec![mac(1), mac(3)]);
    }

    #[test]
    fn oversized_or_malformed_records_are_refused() {
        let mut big = MacRecord::new("n1", 1, []);
        big.macs = (0..=MAX_MACS as u8).map(mac).collect();
        assert_eq!(
            MacRecord::decode(&big.encode()),
            Err(BadRecord::TooManyMacs(MAX_MACS + 1))
        );
        let nameless = MacRecord::new("", 1, [mac(1)]);
        assert_eq!(
            MacRecord::decode(&nameless.encode()),
            Err(BadRecord::NodeName(0))
        );
        assert_eq!(MacRecord::decode(b"\xff\xff"), Err(BadRecord::Malformed));
    }

    #[test]
    fn the_newest_generation_of_a_node_wins() {
        let mut peers = PeerMacs::default();
        assert!(peers.learn(MacRecord::new("b", 2, [mac(2)])));
        assert!(!peers.learn(MacRecord::new("b", 1, [mac(9)])));
        assert!(!peers.learn(MacRecord::new("b", 2, [mac(2)])));
        assert!(peers.learn(MacRecord::new("b", 3, [mac(3)])));
        assert!(peers.learn(MacRecord::new("a", 1, [mac(1)])));
        assert_eq!(
            peers.all_but("a").collect::<Vec<_>>(),
            vec![(mac(3), "b".to_string())]
        );
    }
}
