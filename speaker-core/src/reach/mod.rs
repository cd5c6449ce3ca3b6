//! Whether the nodes this one would take addresses over from still answer at the IP layer: the
//! failover's fast path.
//!
//! The membership (SWIM) needs a probe period, a suspicion and a round of gossip to call a node
//! down: 250-400 ms. An address's successor (the node that owns it next) does not wait for that
//! alone: it sends the owner's node address an ICMP echo request every `interval`, and a node
//! that answered before and then answers none of them for `silence` is unreachable. The
//! successor then elects without it and announces at once; the membership's verdict follows
//! and everyone agrees.
//!
//! Why the kernel's echo and not a heartbeat from the owner's speaker: the owner's kernel
//! answers in softirq context, so an owner whose CPUs are saturated by other processes, or whose
//! speaker is paused for a moment, still answers and is not failed over (a heartbeat sent by a
//! user-space task would fall silent). What it cannot see, a dead speaker on a live node, is left
//! to the membership, as before.
//!
//! What keeps this from moving addresses falsely:
//! - a node is judged only after it answered once, so a network that filters echo leaves it to
//!   the membership;
//! - the silence must span `min_lost` requests older than `answer_within`, so a prober that was
//!   paused (and sent nothing) judges nobody, and a few lost packets are not a death;
//! - the caller reads every queued reply before asking for the verdict;
//! - a verdict holds at most `hold`: by then the membership has declared a dead node down, so a
//!   node still unreachable and still a member answers gossip but not echo (a firewall changed),
//!   and is not judged again until it answers.
//!
//! Pure: the caller owns the sockets and the clock.

pub mod echo;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The fast path's timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often each watched node is sent an echo request.
    pub interval: Duration,
    /// How long a request may take before it counts as lost (a LAN answers in well under 1 ms;
    /// a machine under load in a few).
    pub answer_within: Duration,
    /// How long a node must have answered none of its requests to be unreachable.
    pub silence: Duration,
    /// How many lost requests that silence must hold.
    pub min_lost: u32,
    /// How long an unreachable verdict is believed.
    pub hold: Duration,
    /// At most this many requests a second in all. Watching more nodes than `interval` allows
    /// within it stretches `interval` and `silence` alike (the judgement still needs
    /// `min_lost` requests), so a node that succeeds owners all over a big cluster costs the
    /// network a bounded rate, and its verdicts come later: at worst as late as the
    /// membership's.
    pub max_requests_per_second: u32,
}

impl Default for Config {
    /// A dead node is judged 100-110 ms after it fell silent. With 10% of the round trips
    /// lost at random, eight in a row (10^-8, a hundred tries a second) are lost about once in
    /// twelve days per watched node.
    fn default() -> Config {
        Config {
            interval: Duration::from_millis(10),
            answer_within: Duration::from_millis(30),
            silence: Duration::from_millis(100),
            min_lost: 8,
            hold: Duration::from_secs(2),
            // Ten watched nodes at full speed.
            max_requests_per_second: 1000,
        }
    }
}

impl Config {
    /// How much `interval` and `silence` stretch for `watched` nodes: 1 while they fit the
    /// request budget.
    pub fn stretch(&self, watched: usize) -> f64 {
        let wanted = watched as f64 / self.interval.as_secs_f64();
        (wanted / f64::from(self.max_requests_per_second.max(1))).max(1.0)
    }
}

/// An echo request to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub addr: IpAddr,
    pub sequence: u16,
}

#[derive(Debug)]
struct Peer {
    addr: IpAddr,
    /// Answered since it was first watched.
    answered: bool,
    /// Requests sent since its last reply, and when the first of them went.
    unanswered: u32,
    first_unanswered: Option<Instant>,
    /// Send times of the unanswered requests not yet `answer_within` old.
    recent: VecDeque<Instant>,
    next_send: Instant,
    unreachable_since: Option<Instant>,
    /// Its verdict outlived `hold`: not judged again until it answers.
    distrusted: bool,
}

impl Peer {
    fn new(addr: IpAddr, now: Instant) -> Peer {
        Peer {
            addr,
            answered: false,
            unanswered: 0,
            first_unanswered: None,
            recent: VecDeque::new(),
            next_send: now,
            unreachable_since: None,
            distrusted: false,
        }
    }

    fn silent(&mut self, config: &Config, silence: Duration, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|sent| now.saturating_duration_since(*sent) >= config.answer_within)
        {
            self.recent.pop_front();
        }
        let lost = self.unanswered - self.recent.len() as u32;
        lost >= config.min_lost
            && self
                .first_unanswered
                .is_some_and(|first| now.saturating_duration_since(first) >= silence)
    }
}

/// The watched nodes (keyed by `K`, a node name) and what their echo replies say.
#[derive(Debug)]
pub struct Reach<K> {
    config: Config,
    peers: BTreeMap<K, Peer>,
    sequence: u16,
    /// `config.interval` and `config.silence`, stretched to the budget for the watched nodes.
    interval: Duration,
    silence: Duration,
}

impl<K: Ord + Clone> Reach<K> {
    pub fn new(config: Config) -> Reach<K> {
        Reach {
            peers: BTreeMap::new(),
            sequence: 0,
            interval: config.interval,
            silence: config.silence,
            config,
        }
    }

    /// The nodes to watch, with their addresses. A node kept at the same address keeps what is
    /// known of it; a new node, or one at a new address, starts over (it must answer once
    /// before it is judged).
    pub fn watch(&mut self, now: Instant, nodes: BTreeMap<K, IpAddr>) {
        self.peers
            .retain(|node, peer| nodes.get(node) == Some(&peer.addr));
        for (node, addr) in nodes {
            self.peers
                .entry(node)
                .or_insert_with(|| Peer::new(addr, now));
        }
        let stretch = self.config.stretch(self.peers.len());
        self.interval = self.config.interval.mul_f64(stretch);
        self.silence = self.config.silence.mul_f64(stretch);
    }

    /// How often each watched node is sent a request now, and how long it must be silent.
    pub fn timing(&self) -> (Duration, Duration) {
        (self.interval, self.silence)
    }

    pub fn watched(&self) -> impl Iterator<Item = (&K, IpAddr)> {
        self.peers.iter().map(|(node, peer)| (node, peer.addr))
    }

    /// The requests due at `now`. A caller that was held up gets one request per node, not
    /// the ones it missed.
    pub fn poll(&mut self, now: Instant) -> Vec<Probe> {
        let mut due = vec![];
        for peer in self.peers.values_mut() {
            if peer.next_send > now {
                continue;
            }
            self.sequence = self.sequence.wrapping_add(1);
            due.push(Probe {
                addr: peer.addr,
                sequence: self.sequence,
            });
            peer.unanswered += 1;
            peer.first_unanswered.get_or_insert(now);
            peer.recent.push_back(now);
            peer.next_send = now + self.interval;
        }
        due
    }

    /// When the next request is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.peers.values().map(|peer| peer.next_send).min()
    }

    /// An echo reply from `from`: whatever request it answers, the node is alive.
    pub fn on_reply(&mut self, from: IpAddr) {
        for peer in self.peers.values_mut().filter(|peer| peer.addr == from) {
            peer.answered = true;
            peer.unanswered = 0;
            peer.first_unanswered = None;
            peer.recent.clear();
            peer.unreachable_since = None;
            peer.distrusted = false;
        }
    }

    /// The watched nodes unreachable at `now`. Read every queued reply first.
    pub fn unreachable(&mut self, now: Instant) -> BTreeSet<K> {
        let (config, silence) = (&self.config, self.silence);
        let mut out = BTreeSet::new();
        for (node, peer) in &mut self.peers {
            if !peer.answered || peer.distrusted || !peer.silent(config, silence, now) {
                peer.unreachable_since = None;
                continue;
            }
            let since = *peer.unreachable_since.get_or_insert(now);
            if now.saturating_duration_since(since) > config.hold {
                peer.distrusted = true;
                peer.unreachable_since = None;
                continue;
            }
            out.insert(node.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests;
