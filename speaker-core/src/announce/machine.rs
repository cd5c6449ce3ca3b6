//! The announcer's decisions without I/O: for each address, whether to probe, answer, defend or
//! release it, and what to send when. The shell feeds it the desired set, the claims its sockets
//! overhear and the time; it answers with packets to send and events to report, and says which
//! addresses to answer for on which interface. Tests drive it with plain values and instants.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::MacAddr;

use super::{Config, Desired, Event};

/// Gap between the two probes sent before an address is first announced.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const PROBES: u8 = 2;

/// A frame the shell builds for one address with the interface's MAC, ARP or NDP by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// RFC 5227 ARP probe or DAD Neighbor Solicitation.
    Probe,
    /// Gratuitous ARP in request and reply form, or an unsolicited Neighbor Advertisement.
    Gratuitous,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub interface: String,
    pub ip: IpAddr,
    pub packet: Packet,
}

/// How a host overheard on the link stated that `ip` is at its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// An ARP request sent from `ip`: the sender uses the address.
    ArpRequest,
    ArpReply,
    /// Gratuitous ARP, either form.
    Gratuitous,
    /// Neighbor Advertisement for `ip`, solicited or not.
    Advertisement,
}

impl ClaimKind {
    /// Whether this is an answer or an announcement, which a successor sends once it owns the
    /// address; a request only shows that someone uses it as a source.
    fn announces(self) -> bool {
        !matches!(self, ClaimKind::ArpRequest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub interface: String,
    pub ip: IpAddr,
    pub mac: MacAddr,
    pub kind: ClaimKind,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub sends: Vec<Send>,
    pub events: Vec<Event>,
}

#[derive(Debug)]
struct Entry {
    interfaces: BTreeSet<String>,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Asking whether anyone holds the address; not answering yet. `fence`: a peer's answer
    /// stops it too.
    Probing {
        sent: u8,
        next_probe: Instant,
        until: Instant,
        fence: bool,
    },
    /// A peer speaker defended the address during a fence; asked again at `retry_at`.
    Fenced { retry_at: Instant },
    /// A host this node does not know as a peer (`by`) answered the probe; asked again at
    /// `retry_at` while still desired.
    Conflicted { retry_at: Instant, by: MacAddr },
    Answering {
        burst_start: Instant,
        /// Index into the gratuitous schedule of the next step to send.
        next_step: usize,
        announced: bool,
        next_refresh: Option<Instant>,
        last_conflict: Option<Instant>,
        /// A peer's last announcement of the address on each interface: a peer that announced
        /// before this node lets go is its successor already (watches reach speakers at
        /// slightly different times), so waiting for its next announcement would only leave
        /// two nodes answering.
        peer_announced: BTreeMap<String, (MacAddr, Instant)>,
    },
    /// No longer desired, still answered on `pending` until a successor announces there or
    /// `until` passes.
    Releasing {
        until: Instant,
        pending: BTreeSet<String>,
        successor: Option<MacAddr>,
    },
}

/// What the shell reads of a machine to set its sockets up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Views {
    /// Addresses answered for now, including those being released.
    pub answering: BTreeSet<IpAddr>,
    /// Per interface, the addresses to answer requests for there.
    pub answered_on: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Per interface, the addresses whose probes (RFC 5227 probes, DAD solicitations) are
    /// answered there: those announced, not those being handed over, so that a successor's
    /// fence tells a live owner from one letting go.
    pub defended_on: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Per interface, the addresses whose claims matter there: every address in any phase.
    /// Its keys are the interfaces that need a socket.
    pub watched_on: BTreeMap<String, BTreeSet<IpAddr>>,
}

#[derive(Debug)]
pub struct Machine {
    config: Config,
    /// MACs of this node's interfaces: what it hears of itself is never a claim.
    own: BTreeSet<MacAddr>,
    peers: BTreeSet<MacAddr>,
    addrs: BTreeMap<IpAddr, Entry>,
    /// What is answered, defended or watched where may have changed since
    /// [`Machine::take_views_changed`]: set on every change of an entry's phase or interfaces,
    /// so that the shell works the views out only then, not on every tick and overheard claim.
    views_changed: bool,
}

impl Machine {
    pub fn new(config: Config) -> Machine {
        Machine {
            config,
            own: BTreeSet::new(),
            peers: BTreeSet::new(),
            addrs: BTreeMap::new(),
            views_changed: false,
        }
    }

    pub fn set_own_macs(&mut self, own: BTreeSet<MacAddr>) {
        self.own = own;
    }

    /// The MACs of the other speakers. A probe answered by a MAC that turns out to be a peer's
    /// (a restarted speaker probes before gossip has told it every peer) was the previous
    /// owner answering, not a foreign host: the address is taken over at once, as a takeover
    /// from a ferrolb node is, instead of waiting out the conflict retry while that owner
    /// releases it and nobody answers.
    pub fn set_peer_macs(&mut self, now: Instant, peers: BTreeSet<MacAddr>) -> Output {
        let mut out = Output::default();
        for entry in self.addrs.values_mut() {
            if let Phase::Conflicted { by, .. } = entry.phase
                && peers.contains(&by)
            {
                entry.phase = answering(now);
                self.views_changed = true;
            }
        }
        self.peers = peers;
        self.advance(now, &mut out);
        out
    }

    /// The complete set of addresses to own now: [`Machine::update`] with every address this
    /// machine holds and is not given as absent.
    pub fn set_desired(&mut self, now: Instant, desired: &BTreeMap<IpAddr, Desired>) -> Output {
        let mut changes: BTreeMap<IpAddr, Option<&Desired>> =
            self.addrs.keys().map(|ip| (*ip, None)).collect();
        changes.extend(desired.iter().map(|(ip, want)| (*ip, Some(want))));
        self.update(now, changes)
    }

    /// What changed in the set of addresses to own: `Some` to own an address so, `None` to
    /// own it no longer. An address with no interface is as good as absent: there is nowhere
    /// to announce it. An announced address whose interfaces change is announced anew on its
    /// new set and stops being answered at once where it left: a per-interface release would
    /// need a successor on a LAN we no longer serve. The work is that of the changes, however
    /// many addresses are held.
    pub fn update<'a>(
        &mut self,
        now: Instant,
        changes: impl IntoIterator<Item = (IpAddr, Option<&'a Desired>)>,
    ) -> Output {
        let mut out = Output::default();
        for (ip, want) in changes {
            match want.filter(|want| !want.interfaces.is_empty()) {
                Some(want) => self.want(now, ip, want),
                None => self.unwant(now, ip),
            }
        }
        self.advance(now, &mut out);
        out
    }

    fn want(&mut self, now: Instant, ip: IpAddr, want: &Desired) {
        let interfaces: BTreeSet<String> = want.interfaces.iter().cloned().collect();
        self.views_changed = true;
        let Some(entry) = self.addrs.get_mut(&ip) else {
            let phase = if want.fence {
                probing(now, self.config.fence_wait, true)
            } else if want.probe {
                probing(now, self.config.probe_wait, false)
            } else {
                answering(now)
            };
            self.addrs.insert(ip, Entry { interfaces, phase });
            return;
        };
        let moved = entry.interfaces != interfaces;
        entry.interfaces = interfaces;
        match entry.phase {
            // Back before a successor took over: answer again and tell the LAN anew.
            Phase::Releasing { .. } => entry.phase = answering(now),
            Phase::Answering { .. } if moved => entry.phase = answering(now),
            Phase::Probing { fence, .. } if moved => {
                let wait = if fence {
                    self.config.fence_wait
                } else {
                    self.config.probe_wait
                };
                entry.phase = probing(now, wait, fence);
            }
            // The owner that defended it is no longer to be waited for (it went silent).
            Phase::Fenced { .. } | Phase::Probing { fence: true, .. } if !want.fence => {
                entry.phase = answering(now);
            }
            _ => {}
        }
    }

    fn unwant(&mut self, now: Instant, ip: IpAddr) {
        let Some(entry) = self.addrs.get_mut(&ip) else {
            return;
        };
        let grace = self.config.release_grace;
        match entry.phase {
            Phase::Probing { .. } | Phase::Conflicted { .. } | Phase::Fenced { .. } => {
                self.addrs.remove(&ip);
            }
            Phase::Answering {
                ref peer_announced, ..
            } => {
                let mut pending = entry.interfaces.clone();
                let mut successor = None;
                for (interface, (mac, at)) in peer_announced {
                    if now.saturating_duration_since(*at) <= grace && pending.remove(interface) {
                        successor = successor.or(Some(*mac));
                    }
                }
                entry.phase = Phase::Releasing {
                    until: now + grace,
                    pending,
                    successor,
                };
            }
            Phase::Releasing { .. } => return,
        }
        self.views_changed = true;
    }

    /// Someone stated on `claim.interface` that `claim.ip` is at `claim.mac`.
    pub fn claim(&mut self, now: Instant, claim: &Claim) -> Output {
        let mut out = Output::default();
        if self.own.contains(&claim.mac) {
            return out;
        }
        let foreign = !self.peers.contains(&claim.mac);
        let Some(entry) = self.addrs.get_mut(&claim.ip) else {
            return out;
        };
        if !entry.interfaces.contains(&claim.interface) {
            return out;
        }
        let conflict = Event::Conflict {
            ip: claim.ip,
            interface: claim.interface.clone(),
            mac: claim.mac,
        };
        match &mut entry.phase {
            Phase::Probing { .. } if foreign => {
                entry.phase = Phase::Conflicted {
                    retry_at: now + self.config.conflict_retry,
                    by: claim.mac,
                };
                self.views_changed = true;
                out.events.push(conflict);
            }
            Phase::Probing { fence: true, .. } if claim.kind.announces() => {
                entry.phase = Phase::Fenced {
                    retry_at: now + self.config.fence_retry,
                };
                self.views_changed = true;
                out.events.push(Event::Fenced {
                    ip: claim.ip,
                    interface: claim.interface.clone(),
                    mac: claim.mac,
                });
            }
            Phase::Answering { last_conflict, .. } if foreign => {
                let quiet = last_conflict.is_none_or(|t| now >= t + self.config.conflict_retry);
                if quiet {
                    *last_conflict = Some(now);
                    out.events.push(conflict);
                    // RFC 5227 §2.4 (b): defend once, restoring the caches the claim poisoned.
                    out.sends.push(Send {
                        interface: claim.interface.clone(),
                        ip: claim.ip,
                        packet: Packet::Gratuitous,
                    });
                }
            }
            Phase::Answering { peer_announced, .. } if claim.kind.announces() => {
                peer_announced.insert(claim.interface.clone(), (claim.mac, now));
                out.events.push(Event::PeerAnswers {
                    ip: claim.ip,
                    interface: claim.interface.clone(),
                    mac: claim.mac,
                });
            }
            Phase::Releasing {
                pending, successor, ..
            } if claim.kind.announces() => {
                let first_here = pending.remove(&claim.interface);
                *successor = successor.or(first_here.then_some(claim.mac));
                self.views_changed |= first_here;
            }
            _ => {}
        }
        self.advance(now, &mut out);
        out
    }

    /// Asks the LAN who answers for `ip` (a probe on each of its interfaces), if this node
    /// answers for it: every other answer comes back as a claim. How the shell checks whether
    /// a second owner is still there.
    pub fn audit(&mut self, ip: IpAddr) -> Output {
        let mut out = Output::default();
        if let Some(entry) = self.addrs.get(&ip)
            && matches!(entry.phase, Phase::Answering { .. })
        {
            for interface in &entry.interfaces {
                out.sends.push(Send {
                    interface: interface.clone(),
                    ip,
                    packet: Packet::Probe,
                });
            }
        }
        out
    }

    /// Does whatever is due at `now`.
    pub fn tick(&mut self, now: Instant) -> Output {
        let mut out = Output::default();
        self.advance(now, &mut out);
        out
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let schedule = &self.config.garp_schedule;
        self.addrs
            .values()
            .filter_map(|entry| match &entry.phase {
                Phase::Probing {
                    sent,
                    next_probe,
                    until,
                    ..
                } => Some(if *sent < PROBES { *next_probe } else { *until }),
                Phase::Conflicted { retry_at, .. } | Phase::Fenced { retry_at, .. } => {
                    Some(*retry_at)
                }
                Phase::Answering {
                    burst_start,
                    next_step,
                    announced,
                    next_refresh,
                    ..
                } => match schedule.get(*next_step) {
                    Some(offset) => Some(*burst_start + *offset),
                    None if !announced => Some(*burst_start),
                    None => *next_refresh,
                },
                Phase::Releasing { until, .. } => Some(*until),
            })
            .min()
    }

    /// Whether the [`Views`] may have changed since the last call.
    pub fn take_views_changed(&mut self) -> bool {
        std::mem::take(&mut self.views_changed)
    }

    /// What the shell sets its sockets up from, in one pass over the addresses (each view
    /// a pass of its own, with an interface name copied per address, was most of a
    /// speaker's CPU while 10,000 addresses came in).
    pub fn views(&self) -> Views {
        let mut answering = vec![];
        let mut answered: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
        let mut defended: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
        let mut watched: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
        // Addresses come in order, so every list is sorted and the sets below are built
        // in bulk.
        for (&ip, entry) in &self.addrs {
            let answered_here = match &entry.phase {
                Phase::Answering { .. } => Some(&entry.interfaces),
                Phase::Releasing { pending, .. } => Some(pending),
                Phase::Probing { .. } | Phase::Conflicted { .. } | Phase::Fenced { .. } => None,
            };
            if let Some(interfaces) = answered_here {
                answering.push(ip);
                for interface in interfaces {
                    answered.entry(interface).or_default().push(ip);
                }
            }
            let defends = matches!(entry.phase, Phase::Answering { .. });
            for interface in &entry.interfaces {
                watched.entry(interface).or_default().push(ip);
                if defends {
                    defended.entry(interface).or_default().push(ip);
                }
            }
        }
        let owned = |on: BTreeMap<&str, Vec<IpAddr>>| {
            on.into_iter()
                .map(|(interface, ips)| (interface.to_string(), ips.into_iter().collect()))
                .collect()
        };
        Views {
            answering: answering.into_iter().collect(),
            answered_on: owned(answered),
            defended_on: owned(defended),
            watched_on: owned(watched),
        }
    }

    fn advance(&mut self, now: Instant, out: &mut Output) {
        let config = &self.config;
        let views_changed = &mut self.views_changed;
        let mut finished = Vec::new();
        for (&ip, entry) in &mut self.addrs {
            let send_all = |out: &mut Output, packet| {
                for interface in &entry.interfaces {
                    out.sends.push(Send {
                        interface: interface.clone(),
                        ip,
                        packet,
                    });
                }
            };
            // Phases in the order they follow each other, so that one step can go from a
            // retry to a probe, or from a finished probe to the first announcement.
            if let Phase::Conflicted { retry_at, .. } = entry.phase
                && now >= retry_at
            {
                entry.phase = probing(now, config.probe_wait, false);
                *views_changed = true;
            }
            if let Phase::Fenced { retry_at, .. } = entry.phase
                && now >= retry_at
            {
                entry.phase = probing(now, config.fence_wait, true);
                *views_changed = true;
            }
            if let Phase::Probing {
                sent,
                next_probe,
                until,
                ..
            } = &mut entry.phase
            {
                while *sent < PROBES && now >= *next_probe {
                    send_all(out, Packet::Probe);
                    *sent += 1;
                    *next_probe += PROBE_INTERVAL;
                }
                if *sent >= PROBES && now >= *until {
                    entry.phase = answering(now);
                    *views_changed = true;
                }
            }
            if let Phase::Releasing {
                until,
                pending,
                successor,
            } = &entry.phase
                && (pending.is_empty() || now >= *until)
            {
                finished.push((ip, *successor));
            }
            if let Phase::Answering {
                burst_start,
                next_step,
                announced,
                next_refresh,
                ..
            } = &mut entry.phase
            {
                let schedule = &config.garp_schedule;
                let mut due = false;
                // Steps that came due together (a late tick) go out as one.
                while *next_step < schedule.len() && now >= *burst_start + schedule[*next_step] {
                    *next_step += 1;
                    due = true;
                }
                if *next_step == schedule.len() && next_refresh.is_none() {
                    let last = schedule.last().copied().unwrap_or_default();
                    *next_refresh = config.refresh.map(|r| *burst_start + last + r);
                } else if let Some(at) = next_refresh
                    && now >= *at
                {
                    due = true;
                    *at = now + config.refresh.unwrap_or_default();
                }
                if due {
                    send_all(out, Packet::Gratuitous);
                }
                if !*announced && (due || schedule.is_empty()) {
                    *announced = true;
                    out.events.push(Event::Announced {
                        ip,
                        interfaces: entry.interfaces.iter().cloned().collect(),
                    });
                }
            }
        }
        for (ip, successor) in finished {
            self.addrs.remove(&ip);
            self.views_changed = true;
            out.events.push(Event::Released { ip, successor });
        }
    }
}

fn probing(now: Instant, wait: Duration, fence: bool) -> Phase {
    Phase::Probing {
        sent: 0,
        next_probe: now,
        until: now + PROBE_INTERVAL * u32::from(PROBES - 1) + wait,
        fence,
    }
}

fn answering(now: Instant) -> Phase {
    Phase::Answering {
        burst_start: now,
        next_step: 0,
        announced: false,
        next_refresh: None,
        last_conflict: None,
        peer_announced: BTreeMap::new(),
    }
}
