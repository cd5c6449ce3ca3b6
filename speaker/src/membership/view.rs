//! What the rest of the speaker sees of the membership: live members by node name, and
//! whether we have any right to believe that list is complete. Pure: the task passes in
//! the members foca reports and the current instant.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::identity::MemberId;

/// The membership as this speaker sees it now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Live members (alive or suspect) by node name, ourselves included; empty after
    /// `leave()`. When a node has two live identities (it restarted before its old self
    /// was declared down) the higher generation is kept; our own node is always us.
    pub members: BTreeMap<String, MemberId>,
    /// Whether `members` can be trusted to be the cluster: we heard from another member
    /// since (re)start, or the seeds were set and none of them (other than us) answered
    /// within `Timing::alone_after`, or there are no other seeds. A speaker that is not
    /// joined must not conclude it is alone.
    pub joined: bool,
    /// The MACs other speakers answer with, and their nodes, from their records (members
    /// that went down included: a previous owner still answering is a peer, not a foreign
    /// host).
    pub peer_macs: BTreeMap<[u8; 6], String>,
}

/// Live members keyed by node name: `me` for our own node, else the highest generation.
pub(crate) fn members_by_node<'a>(
    me: &MemberId,
    others: impl IntoIterator<Item = &'a MemberId>,
) -> BTreeMap<String, MemberId> {
    let mut members = BTreeMap::new();
    for other in others {
        if other.node == me.node {
            continue;
        }
        members
            .entry(other.node.clone())
            .and_modify(|kept: &mut MemberId| {
                if (other.generation, other.addr) > (kept.generation, kept.addr) {
                    *kept = other.clone();
                }
            })
            .or_insert_with(|| other.clone());
    }
    members.insert(me.node.clone(), me.clone());
    members
}

/// When a starting (or rejoining) speaker may believe its view of the membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Joining {
    heard_from_peer: bool,
    /// From when on being alone counts as the truth, once seeds were set.
    alone_from: Option<Instant>,
}

impl Joining {
    /// `set_seeds` was called; `no_other_seeds` if the list holds nobody but us.
    pub(crate) fn seeds_set(&mut self, now: Instant, no_other_seeds: bool, alone_after: Duration) {
        let alone_from = if no_other_seeds {
            now
        } else {
            now + alone_after
        };
        // The first call starts the wait; later calls can only shorten it (to "now", when
        // the other seeds are gone).
        self.alone_from = Some(self.alone_from.map_or(alone_from, |t| t.min(alone_from)));
    }

    /// Another member is (or was) alive: we are part of a cluster.
    pub(crate) fn peer_seen(&mut self) {
        self.heard_from_peer = true;
    }

    pub(crate) fn joined(&self, now: Instant) -> bool {
        self.heard_from_peer || self.alone_from.is_some_and(|t| now >= t)
    }

    /// When the view must be published again for `joined` to turn true there by itself; none
    /// once the published view (`shown`) says joined. Due until then, not only until `joined`
    /// turns true here: a loop that wakes for something else just after `alone_from` would
    /// otherwise find nothing due and leave `joined` false for good.
    pub(crate) fn deadline(&self, shown: bool) -> Option<Instant> {
        if shown || self.heard_from_peer {
            None
        } else {
            self.alone_from
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node: &str, port: u16, generation: u64) -> MemberId {
        MemberId {
            node: node.into(),
            addr: ([127, 0, 0, 1], port).into(),
            generation,
        }
    }

    #[test]
    fn view_keeps_the_newest_identity_of_each_node_and_always_us() {
        let me = id("a", 1, 5);
        let others = [
            id("b", 2, 10),
            id("b", 3, 20),
            id("b", 4, 15),
            id("c", 5, 1),
            // a stale or misconfigured identity claiming our node
            id("a", 6, 99),
        ];
        let members = members_by_node(&me, &others);
        assert_eq!(members.len(), 3);
        assert_eq!(members["a"], me);
        assert_eq!(members["b"], id("b", 3, 20));
        assert_eq!(members["c"], id("c", 5, 1));
    }

    #[test]
    fn joined_rules() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(3);
        let later = |ms| t0 + Duration::from_millis(ms);

        // Nothing known, no seeds: never joined by waiting.
        let fresh = Joining::default();
        assert!(!fresh.joined(later(1_000_000)));
        assert_eq!(fresh.deadline(false), None);

        // Seeds set: joined after the wait, not before.
        let mut waiting = Joining::default();
        waiting.seeds_set(t0, false, wait);
        assert!(!waiting.joined(later(2_999)));
        assert_eq!(waiting.deadline(false), Some(later(3_000)));
        assert!(waiting.joined(later(3_000)));
        // Past the wait, still due until a published view says joined (a loop woken just
        // after it by something else once found nothing due and never published it).
        assert_eq!(waiting.deadline(false), Some(later(3_000)));
        assert_eq!(waiting.deadline(true), None);

        // A new seed list does not restart the wait.
        waiting.seeds_set(later(2_000), false, wait);
        assert!(waiting.joined(later(3_000)));

        // A peer answering joins at once.
        let mut answered = waiting.clone();
        answered.peer_seen();
        assert!(answered.joined(t0));
        assert_eq!(answered.deadline(false), None);

        // No seed but ourselves: alone by choice, at once; also when the others go away.
        let mut alone = Joining::default();
        alone.seeds_set(t0, true, wait);
        assert!(alone.joined(t0));
        let mut shrunk = Joining::default();
        shrunk.seeds_set(t0, false, wait);
        shrunk.seeds_set(later(10), true, wait);
        assert!(shrunk.joined(later(10)));
    }
}
