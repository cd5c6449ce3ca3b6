//! The announcer's pure part: its configuration, what the speaker asks of it, what it reports,
//! and the state machine deciding, per address, whether to probe, answer, defend or release
//! (`machine`). The `speaker` binary owns the sockets, the thread and the clock around it.

use std::net::IpAddr;
use std::time::Duration;

use crate::MacAddr;

pub mod machine;
#[cfg(test)]
mod machine_tests;

/// Timing of probes, announcements and releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Offsets from the start of a takeover at which gratuitous ARPs / unsolicited NAs go out.
    /// The later ones fall past Linux's 1 s ARP locktime, within which a neighbour ignores a
    /// second change of an entry.
    pub garp_schedule: Vec<Duration>,
    /// Once the burst is over, announce again this often (`None`: never).
    pub refresh: Option<Duration>,
    /// How long to listen for an answer after the second probe.
    pub probe_wait: Duration,
    /// How long a released address is still answered when no successor announces it.
    pub release_grace: Duration,
    /// After a conflict: when to probe again, and how often a conflict on an announced
    /// address is reported (and defended).
    pub conflict_retry: Duration,
    /// How long a fence (see [`Desired::fence`]) listens after its second probe: a live
    /// speaker answers from its receive thread at once.
    pub fence_wait: Duration,
    /// After a peer defended a fenced address: when to ask again.
    pub fence_retry: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            garp_schedule: [0, 250, 1100, 2200, 4400]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            refresh: None,
            probe_wait: Duration::from_millis(200),
            release_grace: Duration::from_secs(3),
            conflict_retry: Duration::from_secs(30),
            fence_wait: Duration::from_millis(50),
            fence_retry: Duration::from_millis(500),
        }
    }
}

/// How one owned address is announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Interfaces to answer and announce on (see [`choose_interfaces`]). Empty: the address is
    /// treated as not desired, there being nowhere to announce it.
    pub interfaces: Vec<String>,
    /// Probe the LAN before announcing a new address, and refuse it if a foreign host answers.
    pub probe: bool,
    /// Take the address over only if no peer speaker defends it: its owner was declared down
    /// by the gossip alone, and may be alive beyond a gossip partition. A fence is a short
    /// probe (answered only by a speaker that announces the address, not by one handing it
    /// over), repeated while a peer defends it. Implies a probe.
    pub fence: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first gratuitous ARP / unsolicited NA of a takeover went out; the address is
    /// answered on `interfaces`.
    Announced { ip: IpAddr, interfaces: Vec<String> },
    /// A host that is neither this node nor a peer speaker claims `ip`: while probing, the
    /// address is not taken (and probed again later); while announcing, it is defended.
    Conflict {
        ip: IpAddr,
        interface: String,
        mac: MacAddr,
    },
    /// A peer speaker (`mac`) defended an address this node was to take over from an owner the
    /// gossip declared down: that owner is alive and announces it, so this node does not, and
    /// asks again later.
    Fenced {
        ip: IpAddr,
        interface: String,
        mac: MacAddr,
    },
    /// No longer answered. `successor`: the MAC whose announcement was seen, if any.
    Released {
        ip: IpAddr,
        successor: Option<MacAddr>,
    },
    /// A peer speaker (`mac`) announced or answered for `ip` while this node answers for it
    /// too. Part of every handover (the successor may announce a moment before this node lets
    /// go); when this node still owns the address a moment later, two nodes answer for it.
    PeerAnswers {
        ip: IpAddr,
        interface: String,
        mac: MacAddr,
    },
}
