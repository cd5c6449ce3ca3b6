//! The announcer's control thread: feeds the [`Machine`] its inputs and the time, opens and
//! closes one [`Port`] per interface in use, sends what the machine decides, and reports its
//! events.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

use speaker_core::MacAddr;
use speaker_core::arp::{self, ArpOp};
use speaker_core::ndp;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::links::Link;
use super::metrics::{ARP, NDP};
use super::port::Port;
use super::{Config, Desired, Event, Metrics};
use speaker_core::announce::machine::{Claim, Machine, Output, Packet, Send, Views};

pub(crate) enum Input {
    Desired(Wanted),
    Peers(BTreeSet<MacAddr>),
    Claim(Claim),
    /// Ask the LAN who else answers for these owned addresses.
    Audit(Vec<IpAddr>),
    /// Desire nothing, and say when nothing is answered any more.
    ReleaseAll(oneshot::Sender<()>),
    /// Every handle is gone: stop answering and close everything.
    Shutdown,
}

/// What to own: the complete set, or what changed in it (`None`: no longer).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    All(BTreeMap<IpAddr, Desired>),
    Changes(BTreeMap<IpAddr, Option<Desired>>),
}

impl Wanted {
    /// `self`, then `newer`, as one.
    fn then(self, newer: Wanted) -> Wanted {
        match (self, newer) {
            (_, Wanted::All(newer)) => Wanted::All(newer),
            (Wanted::All(mut all), Wanted::Changes(changes)) => {
                for (ip, want) in changes {
                    match want {
                        Some(want) => all.insert(ip, want),
                        None => all.remove(&ip),
                    };
                }
                Wanted::All(all)
            }
            (Wanted::Changes(mut older), Wanted::Changes(changes)) => {
                older.extend(changes);
                Wanted::Changes(older)
            }
        }
    }
}

/// How often the links are read again and unopenable interfaces retried without a change of
/// the link watch (what the speaker loop's turns used to drive).
const RESCAN_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) struct Control {
    machine: Machine,
    metrics: Metrics,
    /// Given to each port to report the claims it overhears.
    input: Sender<Input>,
    events: mpsc::UnboundedSender<Event>,
    answering: watch::Sender<BTreeSet<IpAddr>>,
    /// The interfaces as the link watch last saw them, and the watch.
    links: Vec<Link>,
    link_watch: watch::Receiver<Vec<Link>>,
    ports: BTreeMap<String, Port>,
    /// Interfaces that could not be opened since the last scan: retried after the next one,
    /// not on every tick.
    unopenable: BTreeSet<String>,
    /// When the links are next read again even if the link watch saw no change.
    next_rescan: Instant,
    /// The ports must be set up again (the links were read again) even if the machine's views
    /// did not change.
    ports_stale: bool,
    release_waiters: Vec<oneshot::Sender<()>>,
    /// Shared with every port: when set, they answer nothing.
    muted: Arc<AtomicBool>,
    heartbeat: common::health::Heartbeat,
}

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        metrics: Metrics,
        input: Sender<Input>,
        events: mpsc::UnboundedSender<Event>,
        answering: watch::Sender<BTreeSet<IpAddr>>,
        muted: Arc<AtomicBool>,
        heartbeat: common::health::Heartbeat,
        link_watch: watch::Receiver<Vec<Link>>,
    ) -> Control {
        Control {
            machine: Machine::new(config),
            metrics,
            input,
            events,
            answering,
            links: Vec::new(),
            link_watch,
            ports: BTreeMap::new(),
            unopenable: BTreeSet::new(),
            next_rescan: Instant::now(),
            ports_stale: true,
            release_waiters: Vec::new(),
            muted,
            heartbeat,
        }
    }

    pub fn run(mut self, inputs: Receiver<Input>) {
        // An input read while looking for newer desired sets, handled next.
        let mut pending = None;
        loop {
            self.heartbeat.beat();
            match crate::fault::due(crate::fault::Loop::Announcer) {
                Some(crate::fault::Action::Panic) => panic!("test fault: the announcer panics"),
                Some(crate::fault::Action::Stall) => loop {
                    std::thread::park();
                },
                None => {}
            }
            // Wakes at least every heartbeat: an idle announcer must still look alive.
            let wait = self.machine.next_deadline().map_or(super::HEARTBEAT, |at| {
                at.saturating_duration_since(Instant::now())
                    .min(super::HEARTBEAT)
            });
            let received = match pending.take() {
                Some(input) => Ok(input),
                None => inputs.recv_timeout(wait),
            };
            let now = Instant::now();
            // The announcer's own schedule, not the speaker loop's: the loop sends a desired
            // set only when it changed, and a re-created interface or one that could not be
            // opened must be looked at again all the same.
            if self.link_watch.has_changed().unwrap_or(false) || now >= self.next_rescan {
                self.rescan();
            }
            let out = match received {
                Ok(Input::Desired(wanted)) => match newest_desired(wanted, &inputs, &mut pending) {
                    Wanted::All(all) => self.machine.set_desired(now, &all),
                    Wanted::Changes(changes) => self
                        .machine
                        .update(now, changes.iter().map(|(ip, want)| (*ip, want.as_ref()))),
                },
                Ok(Input::Peers(peers)) => self.machine.set_peer_macs(now, peers),
                Ok(Input::Claim(claim)) => self.machine.claim(now, &claim),
                Ok(Input::Audit(ips)) => {
                    let mut out = Output::default();
                    for ip in ips {
                        out.sends.extend(self.machine.audit(ip).sends);
                    }
                    out
                }
                Ok(Input::ReleaseAll(done)) => {
                    self.release_waiters.push(done);
                    self.machine.set_desired(now, &BTreeMap::new())
                }
                Err(RecvTimeoutError::Timeout) => self.machine.tick(now),
                Ok(Input::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            };
            self.apply(out);
        }
        for (_, port) in std::mem::take(&mut self.ports) {
            port.close();
        }
        self.answering.send_replace(BTreeSet::new());
        self.metrics.announced_addresses.set(0);
        debug!("announcer stopped");
    }

    /// Takes the interfaces as the link watch last saw them (on a change of the link watch, and
    /// every [`RESCAN_EVERY`]), and closes ports whose interface went away or changed (a
    /// re-created interface has a new index): they are reopened if still needed.
    fn rescan(&mut self) {
        self.next_rescan = Instant::now() + RESCAN_EVERY;
        let links = self.link_watch.borrow_and_update().clone();
        let links_changed = links != self.links;
        self.links = links;
        let own = self
            .links
            .iter()
            .map(|l| l.mac)
            .filter(|mac| *mac != MacAddr::ZERO)
            .collect();
        self.machine.set_own_macs(own);
        let links = &self.links;
        let open = self.ports.len();
        self.ports.retain(|name, port| {
            links
                .iter()
                .any(|l| &l.name == name && l.index == port.index && l.mac == port.mac())
        });
        // The ports are set up again only if this scan can change them: setting them up is a
        // pass over every owned address, and the scan runs twice a second.
        self.ports_stale |=
            links_changed || self.ports.len() != open || !self.unopenable.is_empty();
        self.unopenable.clear();
    }

    fn apply(&mut self, out: Output) {
        // Only when something moved: working the views out is a pass over every address, and
        // most inputs (ticks, claims overheard) move none.
        let mut views = (self.machine.take_views_changed()
            || std::mem::take(&mut self.ports_stale))
        .then(|| self.machine.views());
        if let Some(views) = &mut views {
            // Answer before announcing: a GARP makes neighbours ask.
            self.sync_ports(views);
        }
        for (i, send) in out.sends.iter().enumerate() {
            // A takeover of a thousand addresses is thousands of frames, which on a loaded
            // node take longer than the stuck-loop limit: sending is progress, not a hang.
            if i % 64 == 63 {
                self.heartbeat.beat();
            }
            self.send(send);
        }
        // State first, so that whoever reacts to an event sees it in `answering()`.
        if let Some(views) = views {
            let answering = views.answering;
            self.metrics
                .announced_addresses
                .set(i64::try_from(answering.len()).unwrap_or(i64::MAX));
            self.answering.send_if_modified(|current| {
                let changed = *current != answering;
                *current = answering;
                changed
            });
        }
        let released = self.answering.borrow().is_empty();

        for event in out.events {
            match &event {
                Event::Announced { ip, interfaces } => info!(%ip, ?interfaces, "announcing"),
                Event::Conflict { ip, interface, mac } => {
                    self.metrics.conflicts.inc();
                    warn!(%ip, %interface, %mac, "another host answers for this address");
                }
                Event::Released { ip, successor } => match successor {
                    Some(mac) => info!(%ip, successor = %mac, "released to a successor"),
                    None => info!(%ip, "released, no successor seen"),
                },
                Event::PeerAnswers { ip, interface, mac } => {
                    debug!(%ip, %interface, %mac, "a peer answers for this address too");
                }
                Event::Fenced { ip, interface, mac } => {
                    warn!(%ip, %interface, %mac, "a peer the gossip calls down still announces this address: not taking it over");
                }
            }
            // Nobody listening is fine: the events are also logged and counted.
            let _ = self.events.send(event);
        }
        if released {
            for done in self.release_waiters.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Opens a port for every interface the machine uses and closes the others; tells each
    /// what to answer and watch.
    /// Takes the per-interface views out of `views`.
    fn sync_ports(&mut self, views: &mut Views) {
        let unused: Vec<String> = self
            .ports
            .keys()
            .filter(|name| !views.watched_on.contains_key(*name))
            .cloned()
            .collect();
        for name in unused {
            debug!(interface = %name, "closing");
            self.ports.remove(&name);
        }
        for (name, watch) in std::mem::take(&mut views.watched_on) {
            if !self.ports.contains_key(&name) && !self.unopenable.contains(&name) {
                self.open(&name);
            }
            if let Some(port) = self.ports.get_mut(&name) {
                port.set(
                    views.answered_on.remove(&name).unwrap_or_default(),
                    views.defended_on.remove(&name).unwrap_or_default(),
                    watch,
                );
            }
        }
    }

    fn open(&mut self, name: &str) {
        let Some(link) = self.links.iter().find(|l| l.name == name) else {
            warn!(interface = %name, "no such interface");
            self.unopenable.insert(name.to_string());
            return;
        };
        let input = self.input.clone();
        let report = Box::new(move |claim| {
            let _ = input.send(Input::Claim(claim));
        });
        match Port::open(link, self.metrics.clone(), report, self.muted.clone()) {
            Ok(port) => {
                debug!(interface = %name, index = link.index, mac = %link.mac, "opened");
                self.ports.insert(name.to_string(), port);
            }
            Err(error) => {
                warn!(interface = %name, %error, "cannot open a packet socket");
                self.unopenable.insert(name.to_string());
            }
        }
    }

    fn send(&self, send: &Send) {
        let Some(port) = self.ports.get(&send.interface) else {
            return;
        };
        let mac = port.mac();
        let (frames, protocol) = match (send.ip, send.packet) {
            (IpAddr::V4(ip), Packet::Probe) => (vec![arp::build_probe(mac, ip)], None),
            (IpAddr::V4(ip), Packet::Gratuitous) => (
                vec![
                    arp::build_gratuitous(mac, ip, ArpOp::Request),
                    arp::build_gratuitous(mac, ip, ArpOp::Reply),
                ],
                Some(&ARP),
            ),
            (IpAddr::V6(ip), Packet::Probe) => (vec![ndp::build_dad_solicitation(mac, ip)], None),
            (IpAddr::V6(ip), Packet::Gratuitous) => (
                vec![ndp::build_unsolicited_advertisement(
                    mac,
                    port.ndp_source(ip),
                    ip,
                )],
                Some(&NDP),
            ),
        };
        for frame in frames {
            match port.send(&frame) {
                Ok(()) => {
                    if let Some(labels) = protocol {
                        self.metrics.gratuitous_sent.get_or_create(labels).inc();
                    }
                    debug!(interface = %send.interface, ip = %send.ip, packet = ?send.packet, "sent");
                }
                Err(error) => {
                    warn!(interface = %send.interface, ip = %send.ip, %error, "cannot send");
                }
            }
        }
    }
}

/// A run of desired sets and changes queued one after another, as one: while the announcer
/// is busy (sending a takeover's announcements, say), an address changed twice is worked on
/// once, as it is now. The first other input ends the run and is handed back in `pending`, so
/// nothing else is reordered.
fn newest_desired(
    mut desired: Wanted,
    inputs: &Receiver<Input>,
    pending: &mut Option<Input>,
) -> Wanted {
    while let Ok(input) = inputs.try_recv() {
        match input {
            Input::Desired(newer) => desired = desired.then(newer),
            other => {
                *pending = Some(other);
                break;
            }
        }
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Desired {
        Desired {
            interfaces: vec!["eth0".into()],
            probe: false,
            fence: false,
        }
    }

    fn all(ip: &str) -> Wanted {
        Wanted::All(BTreeMap::from([(ip.parse().unwrap(), want())]))
    }

    fn change(ip: &str, owned: bool) -> Wanted {
        Wanted::Changes(BTreeMap::from([(ip.parse().unwrap(), owned.then(want))]))
    }

    #[test]
    fn a_run_of_desired_sets_is_read_as_its_newest_and_the_next_input_waits() {
        let (tx, rx) = std::sync::mpsc::channel();
        for ip in ["192.0.2.2", "192.0.2.3"] {
            tx.send(Input::Desired(all(ip))).unwrap();
        }
        tx.send(Input::Audit(vec!["192.0.2.9".parse().unwrap()]))
            .unwrap();
        tx.send(Input::Desired(all("192.0.2.4"))).unwrap();

        let mut pending = None;
        let newest = newest_desired(all("192.0.2.1"), &rx, &mut pending);
        assert_eq!(newest, all("192.0.2.3"));
        assert!(
            matches!(&pending, Some(Input::Audit(ips)) if ips.len() == 1),
            "the audit is kept, not skipped"
        );
        // The set sent after the audit is read after it, not folded into the run before it.
        assert!(matches!(rx.try_recv(), Ok(Input::Desired(d)) if d == all("192.0.2.4")));
    }

    #[test]
    fn a_run_of_changes_is_read_as_one_with_the_newest_of_each_address() {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(Input::Desired(change("192.0.2.2", false))).unwrap();
        tx.send(Input::Desired(change("192.0.2.3", true))).unwrap();
        tx.send(Input::Desired(change("192.0.2.1", false))).unwrap();
        let mut pending = None;
        let run = newest_desired(change("192.0.2.1", true), &rx, &mut pending);
        let expected: BTreeMap<IpAddr, Option<Desired>> = BTreeMap::from([
            ("192.0.2.1".parse().unwrap(), None),
            ("192.0.2.2".parse().unwrap(), None),
            ("192.0.2.3".parse().unwrap(), Some(want())),
        ]);
        assert_eq!(run, Wanted::Changes(expected));

        // Changes after a complete set are applied to it; a complete set replaces everything.
        tx.send(Input::Desired(change("192.0.2.1", false))).unwrap();
        tx.send(Input::Desired(change("192.0.2.5", true))).unwrap();
        let run = newest_desired(all("192.0.2.1"), &rx, &mut pending);
        assert_eq!(run, all("192.0.2.5"));
        tx.send(Input::Desired(all("192.0.2.6"))).unwrap();
        assert_eq!(
            newest_desired(change("192.0.2.7", true), &rx, &mut pending),
            all("192.0.2.6")
        );
        assert!(pending.is_none());
    }
}
