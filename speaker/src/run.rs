//! The speaker's loop: changes from the watches and live members from the gossip go into the
//! election; what this node owns goes to the announcer; what users should know goes to the
//! reports. One task owns all the state, so an election never races another.
//!
//! Work follows changes: a watch event re-reads the one object it names, and the
//! [`Elector`] elects only what that can move; only a pool, an advertisement, a relist or a
//! Node's labels re-read every Service (and elect again only those whose facts differ).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use speaker_core::election::NodeName;
use speaker_core::mac::MacAddr;
use tokio::sync::mpsc;

use crate::announce::{self, Announcer, Desired, Link};
use crate::membership::{Membership, View};
use crate::report::{Notice, Reports, Wanted};
use crate::view::{Change, Context, NodeRecord, Stores};
use model::ServiceKey;
use model::announcement::Announcement;
use speaker_core::decide::{Decision, Elector, NoOwner};

/// How often the loops' heartbeats and the contested addresses are checked. (Links are not
/// polled: `Speaker::links` changes when the kernel says they do.)
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A peer still answering for an address this node still owns this long after it was first
/// heard is a second owner, not a handover in progress.
const CONTEST_GRACE: Duration = Duration::from_secs(1);
/// How often an address with a second owner is audited (probed), and how long without an
/// answer from the other owner ends the contest.
const CONTEST_AUDIT: Duration = Duration::from_secs(5);

/// A loop that has not beaten for this long is stuck: the speaker steps aside (its heartbeat
/// comes every 100 ms; peers declare a silent member down in well under a second). For the
/// announcer, time its thread spent waiting for a CPU does not count: on a saturated node that
/// is starvation, and stepping aside for it only moves the load to the peers.
const STUCK_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// One of [`OWNERSHIP_CHANGES`].
    pub change: String,
}

const ACQUIRED: &str = "acquired";
const RELEASED: &str = "released";
const OWNERSHIP_CHANGES: [&str; 2] = [ACQUIRED, RELEASED];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddressLabels {
    pub address: String,
}

/// How long this speaker's election of an address must stand before a Service condition that
/// names another announcing node counts as a disagreement (the new owner writes it a moment
/// after taking over).
const DISAGREEMENT_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Metrics {
    /// Addresses this node took over or gave up.
    pub ownership_changes: Family<ChangeLabels, Counter>,
    /// Addresses this node answers for that another speaker answers for too.
    pub contested_addresses: Gauge,
    /// Times another speaker was found answering for an address this node owns.
    pub contests: Counter,
    /// From the owner's loss, as this node's gossip saw it, to this node's first announcement
    /// of the address.
    pub takeover_seconds: Histogram,
    /// The addresses this node owns, one series each (removed when it stops owning one).
    pub owned: Family<AddressLabels, Gauge>,
    /// Addresses whose Service condition names an announcing node other than the owner this
    /// speaker elects, after the grace: speakers that disagree.
    pub disagreements: Gauge,
    /// Groups of addresses elected: the election's work, which follows what changes.
    pub elected: Counter,
    /// Owned addresses not taken over because the previous owner still announces them.
    pub fenced_addresses: Gauge,
    /// Services read from the watch cache into the election: what the watch events cost.
    pub service_reads: Counter,
    /// Events dropped because more waited for the API server than the queue holds.
    pub events_dropped: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            ownership_changes: Family::default(),
            owned: Family::default(),
            disagreements: Gauge::default(),
            elected: Counter::default(),
            fenced_addresses: Gauge::default(),
            service_reads: Counter::default(),
            events_dropped: Counter::default(),
            contested_addresses: Gauge::default(),
            contests: Counter::default(),
            takeover_seconds: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        };
        let r = registry.sub_registry_with_prefix("ferrolb");
        r.register(
            "speaker_ownership_changes",
            "Addresses this node became the owner of, or stopped owning",
            m.ownership_changes.clone(),
        );
        r.register(
            "speaker_contested_addresses",
            "Addresses this node answers for that another speaker answers for too (two owners: their gossip does not reach each other)",
            m.contested_addresses.clone(),
        );
        r.register(
            "speaker_contests",
            "Times another speaker was found answering for an address this node owns",
            m.contests.clone(),
        );
        r.register(
            "speaker_takeover_seconds",
            "From the owner's loss as this node's gossip saw it to this node's first announcement of the address",
            m.takeover_seconds.clone(),
        );
        r.register(
            "speaker_owned_address",
            "1 for each address this node owns",
            m.owned.clone(),
        );
        r.register(
            "speaker_elected_groups",
            "Groups of addresses (a Service's, or those sharing one) this speaker elected an owner for: it elects again only what a change can move",
            m.elected.clone(),
        );
        r.register(
            "speaker_fenced_addresses",
            "Addresses this node elects itself for but does not take over, because the owner the gossip declared down still announces them (a gossip partition)",
            m.fenced_addresses.clone(),
        );
        r.register(
            "speaker_service_reads",
            "Services read from the watch cache into the election: a change reads the Services it can move; a relist, or a change of a pool's or advertisement's spec, all of them",
            m.service_reads.clone(),
        );
        r.register(
            "speaker_events_dropped",
            "Events about Services dropped because more waited for the API server than the queue holds (each is in the speaker's log)",
            m.events_dropped.clone(),
        );
        r.register(
            "speaker_election_disagreements",
            "Addresses whose Service condition names an announcing node other than the owner this speaker elects (after 2 s)",
            m.disagreements.clone(),
        );
        // Both series from the start: a node that never owned an address exports 0, not nothing.
        for change in OWNERSHIP_CHANGES {
            m.count(change, 0);
        }
        m
    }

    fn count(&self, change: &str, n: usize) {
        self.ownership_changes
            .get_or_create(&ChangeLabels {
                change: change.into(),
            })
            .inc_by(n as u64);
    }
}

pub struct Speaker {
    pub me: NodeName,
    pub stores: Stores,
    /// What the watches saw change.
    pub changes: mpsc::UnboundedReceiver<Change>,
    pub membership: Membership,
    pub members: tokio::sync::watch::Receiver<View>,
    pub announcer: Announcer,
    pub announcer_events: tokio::sync::mpsc::UnboundedReceiver<announce::Event>,
    /// The node's interfaces, from [`announce::watch_links`]: a gossip interface that goes
    /// down makes the speaker leave, and a changed interface set is announced on at once.
    pub links: tokio::sync::watch::Receiver<Vec<Link>>,
    pub reports: Reports,
    pub metrics: Metrics,
    /// The `--interfaces` flag: interfaces the speaker may ever use (empty: any).
    pub allowed_interfaces: Vec<String>,
    /// The address other speakers reach this one at; the interface holding it is the one whose
    /// loss makes this speaker leave.
    pub gossip_addr: SocketAddr,
    pub gossip_port: u16,
    /// This loop's heartbeat, and the two loops it watches.
    pub heartbeat: common::health::Heartbeat,
    pub membership_heartbeat: common::health::Heartbeat,
    pub announcer_heartbeat: common::health::Heartbeat,
    /// The lines of `/election`: this speaker's owner (or reason for none) per address.
    pub election: Arc<std::sync::Mutex<ElectionPage>>,
    /// The failover's fast path: told which owners this node succeeds (`None`: off), and which
    /// of them answer no echo request; this node elects without those.
    pub reach: Option<crate::reach::Watcher>,
    pub unreachable: tokio::sync::watch::Receiver<BTreeSet<NodeName>>,
    /// Who advertises each address over BGP (BGP mode's task works it out): named in the
    /// Services' conditions.
    pub bgp_advertised: tokio::sync::watch::Receiver<crate::bgp_mode::Advertised>,
}

/// Each address's owner, or why it has none, as this speaker elected it: written out only
/// when `/election` is read (a line per address kept as text would be most of the page's
/// memory).
pub type ElectionPage = BTreeMap<IpAddr, Result<NodeName, NoOwner>>;

/// The `/election` page: one line per address, its owner or `-` and the reason for none.
pub fn render_election(page: &ElectionPage) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    for (ip, owner) in page {
        let _ = match owner {
            Ok(owner) => writeln!(text, "{ip} {}", owner.as_str()),
            Err(why) => writeln!(text, "{ip} - {}", why.reason()),
        };
    }
    text
}

/// What the loop remembers between elections.
#[derive(Default)]
struct Memory {
    links: Vec<Link>,
    /// Left the membership because the gossip interface went down.
    left_for_link: bool,
    /// The membership task stopped beating: the peers will declare this node down, so it
    /// owns nothing until the task turns again.
    membership_stuck: bool,
    /// The announcer stopped beating: it is muted and this node has left the membership, so
    /// the peers take its addresses over.
    announcer_stuck: bool,
    /// What the loop keeps of each address the election decides, one entry each (three maps
    /// cost an IpAddr key and a tree node apiece, per address).
    addresses: BTreeMap<IpAddr, Remembered>,
    /// The facts, and every address's decision at the last election.
    elector: Elector,
    /// The addresses this node owns.
    owned: BTreeSet<IpAddr>,
    /// The Nodes as last read, to tell which of their changes matter.
    nodes: BTreeMap<String, Arc<NodeRecord>>,
    /// The Services whose wanted condition must be worked out again (all of them with
    /// `report_all`).
    to_report: BTreeSet<ServiceKey>,
    report_all: bool,
    /// [`Speaker::bgp_advertised`] as last reported on.
    bgp_advertised: crate::bgp_mode::Advertised,
    /// When disagreements with the Services' conditions were last counted.
    last_disagreement_count: Option<tokio::time::Instant>,
    /// The pools and advertisements the Services were last read against.
    advertising: Option<crate::view::Advertising>,
    /// Addresses a foreign host answers for, with who.
    conflicts: BTreeMap<IpAddr, (String, MacAddr)>,
    /// Interfaces each owned address is announced on, from the announcer.
    announced: BTreeMap<IpAddr, Vec<String>>,
    /// Owned addresses another speaker answers for too.
    contests: BTreeMap<IpAddr, Contest>,
    /// When the contested addresses were last audited.
    last_audit: Option<tokio::time::Instant>,
    /// Addresses this node took over because their owner left the membership, since when:
    /// the takeover's duration ends with the first announcement.
    taking_over: BTreeMap<IpAddr, tokio::time::Instant>,
    /// Addresses this node is the successor of, with their owner: the nodes the fast path
    /// watches.
    succeeding: BTreeMap<IpAddr, NodeName>,
    /// What the fast path was last told to watch.
    watched: BTreeMap<NodeName, IpAddr>,
    /// Owned addresses not taken over because their previous owner, declared down by the
    /// gossip alone, still announces them (its node, if known, and MAC).
    fenced: BTreeMap<IpAddr, (Option<String>, MacAddr)>,
    /// What the announcer was last told to announce, the links and silent members it was
    /// worked out with (when they change, every entry is worked out again), and the
    /// addresses whose entry must be worked out again at the next election.
    desired: BTreeMap<IpAddr, Desired>,
    desired_from: Option<(Vec<Link>, BTreeSet<NodeName>)>,
    dirty: BTreeSet<IpAddr>,
    /// The peers' MACs the announcer was last told.
    peer_macs: BTreeSet<MacAddr>,
}

/// What the loop remembers of an address while the election decides it.
struct Remembered {
    /// Since when it has had its current owner (or reason for none).
    decided_at: tokio::time::Instant,
    /// Its last owner other than this node: whom a takeover is from.
    other_owner: Option<NodeName>,
    /// Some speaker owned it since this one joined: taking it over is a failover or a
    /// handover, not a first announcement, so it skips the probe.
    known: bool,
}

/// Another speaker answering for an address this node owns.
struct Contest {
    mac: MacAddr,
    /// Its node, from the speakers' MAC records.
    node: Option<String>,
    first: tokio::time::Instant,
    last: tokio::time::Instant,
    /// Past the grace, and told.
    reported: bool,
}

impl Speaker {
    /// Runs until `shutdown` resolves, then hands over: leaves the membership first, and keeps
    /// answering until successors have announced (or a bound passes).
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut memory = Memory {
            links: self.links.borrow().clone(),
            ..Memory::default()
        };
        // The reflectors' first lists have queued AllNodes and AllServices: the first turns
        // read everything from them, once.
        // The first turn looks at the links as they are, as every change does: a gossip
        // interface already down is left at once.
        self.links.mark_changed();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut checks = tokio::time::interval(CHECK_INTERVAL);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                // The failover path: a member died or left, or fell silent.
                Ok(()) = self.members.changed() => {}
                Ok(()) = self.unreachable.changed() => {}
                Some(event) = self.announcer_events.recv() => self.on_announcer_event(&mut memory, event),
                Some(change) = self.changes.recv() => {
                    // Everything queued so far, each object read once.
                    let mut batch = BTreeSet::from([change]);
                    while let Ok(change) = self.changes.try_recv() {
                        batch.insert(change);
                    }
                    self.apply_changes(&mut memory, batch);
                }
                Ok(()) = self.bgp_advertised.changed() => {
                    let now = self.bgp_advertised.borrow_and_update().clone();
                    let before = std::mem::replace(&mut memory.bgp_advertised, now.clone());
                    let moved: BTreeSet<IpAddr> = before
                        .iter()
                        .filter(|(ip, was)| now.get(ip) != Some(was))
                        .map(|(ip, _)| *ip)
                        .chain(now.keys().filter(|ip| !before.contains_key(ip)).copied())
                        .collect();
                    for ip in moved {
                        memory.report_address(ip);
                    }
                }
                Ok(()) = self.links.changed() => {
                    let links = self.links.borrow_and_update().clone();
                    self.on_links(&mut memory, links).await;
                }
                _ = checks.tick() => {
                    self.check_loops(&mut memory).await;
                    self.check_contests(&mut memory);
                    self.count_disagreements(&mut memory);
                }
            }
            self.heartbeat.beat();
            self.elect(&mut memory);
        }
        tracing::info!("shutting down: leaving the membership and handing over");
        self.membership.leave().await;
        self.elect(&mut memory);
        self.announcer.release_all(Duration::from_secs(5)).await;
        tracing::info!("handed over");
    }

    /// Steps aside while a loop the node cannot work without is stuck (a panic ends the
    /// process instead), and comes back when it turns again. Its `/healthz` fails meanwhile,
    /// so the kubelet restarts it.
    async fn check_loops(&self, memory: &mut Memory) {
        let membership_stuck = self.membership_heartbeat.age() > STUCK_AFTER;
        if membership_stuck != memory.membership_stuck {
            if membership_stuck {
                tracing::error!(age = ?self.membership_heartbeat.age(), "the membership task is stuck: owning nothing until it turns again");
            } else {
                tracing::warn!("the membership task turns again");
            }
            memory.membership_stuck = membership_stuck;
        }
        // One reading of the thread's clocks: the verdict and the log line agree.
        let since = self.announcer_heartbeat.since_beat();
        let announcer_age = since.map_or_else(|| self.announcer_heartbeat.age(), |t| t.own_age());
        let announcer_stuck = announcer_age > STUCK_AFTER;
        if announcer_stuck != memory.announcer_stuck {
            memory.announcer_stuck = announcer_stuck;
            self.announcer.mute(announcer_stuck);
            if announcer_stuck {
                // What its thread did meanwhile tells a spin from a block from starvation.
                tracing::error!(
                    own_age = ?announcer_age,
                    age = ?self.announcer_heartbeat.age(),
                    on_cpu = ?since.map(|t| t.on_cpu),
                    waiting_for_cpu = ?since.map(|t| t.waiting),
                    blocked = ?since.map(|t| t.blocked()),
                    runnable = ?since.map(|t| t.runnable),
                    "the announcer is stuck: muted, and leaving the membership so that peers take over"
                );
                self.membership.leave().await;
            } else {
                tracing::warn!("the announcer turns again: rejoining");
                if !memory.left_for_link {
                    self.membership.rejoin().await;
                }
            }
        }
    }

    /// Tells two owners from a handover, reports them, and audits the contested addresses
    /// until the other owner stops answering. Two nodes answering for one address (their
    /// gossip cannot reach each other) are reported within [`CONTEST_GRACE`] of this node
    /// hearing the other's announcement.
    fn check_contests(&self, memory: &mut Memory) {
        let now = tokio::time::Instant::now();
        let me = &self.me;
        let owned = |ip: &IpAddr| {
            memory
                .elector
                .decision(ip)
                .is_some_and(|d| d.owner.as_ref().ok() == Some(me))
        };
        let mut over = vec![];
        for (ip, contest) in &mut memory.contests {
            let gone = now.duration_since(contest.last) > 2 * CONTEST_AUDIT;
            if !owned(ip) || gone {
                over.push(*ip);
                continue;
            }
            if !contest.reported && now.duration_since(contest.first) >= CONTEST_GRACE {
                contest.reported = true;
                self.metrics.contests.inc();
                let other = contest.node.as_deref().unwrap_or("an unknown speaker");
                let note = format!(
                    "{ip} is answered by node {} and also by node {other} ({}): the two speakers' gossip does not reach each other, so both own it; check the gossip port between them",
                    me.as_str(),
                    contest.mac
                );
                tracing::error!(%ip, other, mac = %contest.mac, "two owners");
                let services = memory
                    .elector
                    .decision(ip)
                    .map(|d| d.services.clone())
                    .unwrap_or_default();
                memory.to_report.extend(services.iter().cloned());
                for service in services.iter().cloned() {
                    self.reports.notice(Notice {
                        service,
                        warning: true,
                        reason: "TwoOwners",
                        note: note.clone(),
                    });
                }
            }
        }
        for ip in over {
            if let Some(contest) = memory.contests.remove(&ip)
                && contest.reported
            {
                // The end of an error already reported: news, not a warning.
                tracing::info!(%ip, "no longer answered by two nodes");
                memory.report_address(ip);
            }
        }
        self.metrics.contested_addresses.set(
            i64::try_from(memory.contests.values().filter(|c| c.reported).count())
                .unwrap_or(i64::MAX),
        );
        let audit_due = memory
            .last_audit
            .is_none_or(|at| now.duration_since(at) >= CONTEST_AUDIT);
        if audit_due && !memory.contests.is_empty() {
            memory.last_audit = Some(now);
            self.announcer
                .audit(memory.contests.keys().copied().collect());
        }
    }

    async fn on_links(&self, memory: &mut Memory, links: Vec<Link>) {
        let gossip_up = links
            .iter()
            .find(|l| l.addrs.iter().any(|a| a.ip() == self.gossip_addr.ip()))
            .is_some_and(|l| l.up);
        if !gossip_up && !memory.left_for_link {
            tracing::warn!(
                "the interface of {} is down: leaving the membership",
                self.gossip_addr.ip()
            );
            self.membership.leave().await;
            memory.left_for_link = true;
        } else if gossip_up && memory.left_for_link && !memory.announcer_stuck {
            tracing::info!(
                "the interface of {} is up: rejoining",
                self.gossip_addr.ip()
            );
            self.membership.rejoin().await;
            memory.left_for_link = false;
        }
        memory.links = links;
    }

    fn on_announcer_event(&self, memory: &mut Memory, event: announce::Event) {
        let services = |ip: &IpAddr| -> Arc<[ServiceKey]> {
            memory
                .elector
                .decision(ip)
                .map(|d| d.services.clone())
                .unwrap_or_default()
        };
        let ip = match &event {
            announce::Event::Announced { ip, .. }
            | announce::Event::Conflict { ip, .. }
            | announce::Event::Released { ip, .. }
            | announce::Event::PeerAnswers { ip, .. }
            | announce::Event::Fenced { ip, .. } => *ip,
        };
        memory.to_report.extend(services(&ip).iter().cloned());
        match event {
            announce::Event::Announced { ip, interfaces } => {
                memory.conflicts.remove(&ip);
                memory.fenced.remove(&ip);
                if let Some(since) = memory.taking_over.remove(&ip) {
                    self.metrics
                        .takeover_seconds
                        .observe(since.elapsed().as_secs_f64());
                }
                let before = memory
                    .addresses
                    .get(&ip)
                    .and_then(|a| a.other_owner.as_ref());
                let note = format!(
                    "{ip} is announced from node {} on {}{}",
                    self.me.as_str(),
                    interfaces.join(", "),
                    before.map_or(String::new(), |b| format!(
                        ", taking over from {}",
                        b.as_str()
                    ))
                );
                for service in services(&ip).iter().cloned() {
                    self.reports.notice(Notice {
                        service,
                        warning: false,
                        reason: "Announcing",
                        note: note.clone(),
                    });
                }
                memory.announced.insert(ip, interfaces);
            }
            announce::Event::Conflict { ip, interface, mac } => {
                // Overheard while answering, the claim is defended and the address still
                // answered: an Event says who else answers (the announcer spaces them), the
                // condition still says announced. Before answering, the address is not
                // announced until the host is gone.
                let answering = memory.announced.contains_key(&ip);
                let note = if answering {
                    format!(
                        "{ip} is also answered on {interface} by {mac}, a host that is not a ferrolb speaker; node {} goes on answering and defends it",
                        self.me.as_str()
                    )
                } else {
                    format!(
                        "{ip} is already answered on {interface} by {mac}, a host that is not a ferrolb speaker; node {} does not announce it and checks again later",
                        self.me.as_str()
                    )
                };
                if answering || memory.conflicts.insert(ip, (interface, mac)).is_none() {
                    for service in services(&ip).iter().cloned() {
                        self.reports.notice(Notice {
                            service,
                            warning: true,
                            reason: model::service::CONFLICT_REASON,
                            note: note.clone(),
                        });
                    }
                }
            }
            announce::Event::Fenced { ip, mac, .. } => {
                let node = self.members.borrow().peer_macs.get(&mac.0).cloned();
                if memory.fenced.insert(ip, (node.clone(), mac)).is_none() {
                    let other = node.as_deref().unwrap_or("an unknown speaker");
                    let note = format!(
                        "node {} does not take {ip} over from node {other} ({mac}): the gossip says that node is down, but its speaker still announces the address, so the gossip between the two fails; check UDP port {} between them",
                        self.me.as_str(),
                        self.gossip_port
                    );
                    tracing::warn!(%ip, other, %mac, "fenced: the previous owner still announces it");
                    for service in services(&ip).iter().cloned() {
                        self.reports.notice(Notice {
                            service,
                            warning: true,
                            reason: "GossipPartitioned",
                            note: note.clone(),
                        });
                    }
                }
                self.metrics
                    .fenced_addresses
                    .set(i64::try_from(memory.fenced.len()).unwrap_or(i64::MAX));
            }
            announce::Event::Released { ip, successor } => {
                memory.announced.remove(&ip);
                memory.contests.remove(&ip);
                tracing::info!(%ip, ?successor, "released");
            }
            announce::Event::PeerAnswers { ip, mac, .. } => {
                let now = tokio::time::Instant::now();
                let node = self.members.borrow().peer_macs.get(&mac.0).cloned();
                let contest = memory.contests.entry(ip).or_insert(Contest {
                    mac,
                    node: None,
                    first: now,
                    last: now,
                    reported: false,
                });
                contest.mac = mac;
                contest.node = node.or(contest.node.take());
                contest.last = now;
            }
        }
    }

    /// Reads again what a batch of watch changes names, into the elector.
    fn apply_changes(&self, memory: &mut Memory, changes: BTreeSet<Change>) {
        let context = self.stores.context();
        let mut services: BTreeSet<(String, String)> = BTreeSet::new();
        let (mut all_services, mut advertising_event) = (false, false);
        let mut nodes: BTreeSet<String> = BTreeSet::new();
        for change in changes {
            match change {
                Change::Service { namespace, name } => {
                    services.insert((namespace, name));
                }
                Change::Endpoints { namespace, service } => {
                    services.insert((namespace, service));
                }
                Change::Node(name) => {
                    nodes.insert(name);
                }
                Change::Advertising => advertising_event = true,
                Change::AllServices => all_services = true,
                Change::AllNodes => {
                    nodes.extend(memory.nodes.keys().cloned());
                    nodes.extend(self.stores.node_names());
                }
                // BGP mode's own task follows these.
                Change::Bgp => {}
            }
        }
        let (mut labels_changed, mut seeds_changed) = (false, false);
        for name in nodes {
            let seen = self.stores.node(&name);
            let before = memory.nodes.get(&name);
            labels_changed |= before.map(|b| &b.labels) != seen.as_ref().map(|s| &s.labels);
            seeds_changed |= before.map(|b| b.gossip_ip) != seen.as_ref().map(|s| s.gossip_ip);
            memory.elector.set_node(
                &NodeName::new(name.as_str()),
                seen.as_ref().map(|s| s.facts.clone()),
            );
            match seen {
                Some(seen) => memory.nodes.insert(name, seen),
                None => memory.nodes.remove(&name),
            };
        }
        // Which nodes an advertisement selects changes with the Nodes' labels (and with Nodes
        // coming and going), which only matters when an advertisement selects nodes at all.
        all_services |= labels_changed && context.selects_nodes();
        // The controller rewrites a pool's status after allocations; only a new spec matters.
        if advertising_event || memory.advertising.is_none() {
            let now = context.advertising();
            if memory.advertising.as_ref() != Some(&now) {
                all_services = true;
                memory.advertising = Some(now);
            }
        }
        if all_services {
            let present: BTreeSet<(String, String)> =
                self.stores.service_names().into_iter().collect();
            services.extend(
                memory
                    .elector
                    .services()
                    .map(|key| (key.namespace.clone(), key.name.clone())),
            );
            services.extend(present);
        }
        for (namespace, name) in services {
            self.read_service(memory, namespace, name, &context);
        }
        if seeds_changed {
            self.membership
                .set_seeds(self.stores.gossip_seeds(self.gossip_port));
        }
    }

    /// One Service into the elector (or out of it, when it is gone or holds none of our
    /// addresses).
    fn read_service(
        &self,
        memory: &mut Memory,
        namespace: String,
        name: String,
        context: &Context,
    ) {
        self.metrics.service_reads.inc();
        let input = self.stores.service_input(&namespace, &name, context);
        let key = input.as_ref().map(|i| &i.facts.service);
        // What the elector holds under this name: a deleted Service, or one re-created since
        // under a new UID, goes.
        let stale: Vec<ServiceKey> = memory
            .elector
            .services_named(&namespace, &name)
            .filter(|old| Some(*old) != key)
            .cloned()
            .collect();
        for old in stale {
            memory.elector.set_service(&old, None);
        }
        if let Some(input) = input {
            // Its facts (a reported conflict) may change how its addresses are announced.
            memory.dirty.extend(input.facts.addresses.iter().copied());
            for (ip, advertisements) in input.advertisements {
                memory.elector.set_advertisements(ip, advertisements);
            }
            let key = input.facts.service.clone();
            // Its condition as the API server has it may no longer be the one wanted.
            self.reports.recheck(&key);
            memory.elector.set_service(&key, Some(input.facts));
        }
    }

    /// Elects what changed, hands this node's addresses to the announcer and reports.
    fn elect(&self, memory: &mut Memory) {
        let view = self.members.borrow().clone();
        if !view.joined || memory.membership_stuck {
            // Until the membership is known this speaker could think itself alone and answer
            // for every address; it announces nothing instead. A stuck membership task is as
            // good as unknown: the peers are declaring this node down.
            let gone = std::mem::take(&mut memory.desired);
            self.announcer
                .update(gone.into_keys().map(|ip| (ip, None)).collect());
            memory.desired_from = None;
            return;
        }
        // Members the fast path finds silent are elected without at once: the membership
        // says the same a moment later, or they answer again and are back.
        let unreachable = self.unreachable.borrow().clone();
        let live: BTreeSet<NodeName> = view
            .members
            .keys()
            .map(NodeName::new)
            .filter(|node| !unreachable.contains(node))
            .collect();
        if live != *memory.elector.live() {
            // Who reports the addresses nobody owns is the first live node.
            memory.report_all = true;
        }
        memory.elector.set_live(live.clone());
        let work = memory.elector.elected();
        let changed = memory.elector.settle();
        self.metrics.elected.inc_by(memory.elector.elected() - work);
        self.after_election(memory, &changed, &live);
        self.watch_owners(memory, &changed, &view, &unreachable);

        // Only the addresses whose entry may have moved are worked out again, and the
        // announcer is told only of a change: with a thousand owned addresses, redoing them
        // all on every watch event was most of a busy speaker's time.
        let inputs = (memory.links.clone(), unreachable.clone());
        let ips: BTreeSet<IpAddr> = if memory.desired_from.as_ref() != Some(&inputs) {
            memory.desired_from = Some(inputs);
            memory.dirty.clear();
            memory
                .owned
                .iter()
                .chain(memory.desired.keys())
                .copied()
                .collect()
        } else {
            let mut ips = std::mem::take(&mut memory.dirty);
            ips.extend(changed.keys());
            ips
        };
        let mut moves = BTreeMap::new();
        for ip in ips {
            match self.desired(memory, ip, &unreachable, changed.contains_key(&ip)) {
                Some(now) if memory.desired.get(&ip) != Some(&now) => {
                    memory.desired.insert(ip, now.clone());
                    moves.insert(ip, Some(now));
                }
                Some(_) => {}
                None => {
                    if memory.desired.remove(&ip).is_some() {
                        moves.insert(ip, None);
                    }
                }
            }
        }
        self.announcer.update(moves);
        // Known from now on: the next owner takes it over without a probe (after the
        // desired set above, or a first announcement would skip its probe).
        for ip in changed.keys() {
            let owned = memory.elector.decision(ip).is_some_and(|d| d.owner.is_ok());
            if owned
                && let Some(remembered) = memory.addresses.get_mut(ip)
                && !std::mem::replace(&mut remembered.known, true)
            {
                memory.dirty.insert(*ip);
            }
        }
        let peer_macs: BTreeSet<MacAddr> = view.peer_macs.keys().map(|mac| MacAddr(*mac)).collect();
        if peer_macs != memory.peer_macs {
            memory.peer_macs = peer_macs.clone();
            self.announcer.set_peer_macs(peer_macs);
        }
        self.report(memory, &changed, &live);
    }

    /// How this node announces `ip`: `None` unless it owns it and has an interface for it.
    fn desired(
        &self,
        memory: &Memory,
        ip: IpAddr,
        unreachable: &BTreeSet<NodeName>,
        changed: bool,
    ) -> Option<Desired> {
        if !memory.owned.contains(&ip) {
            return None;
        }
        let decision = memory.elector.decision(&ip)?;
        let interfaces = announce::choose_interfaces(
            ip,
            decision.interfaces.as_deref(),
            &self.allowed_interfaces,
            &memory.links,
        );
        if interfaces.is_empty() {
            if changed {
                tracing::warn!(%ip, "owned, but no interface to announce it on");
            }
            return None;
        }
        // A takeover from a ferrolb node skips the probe; a first announcement, or one
        // after a reported conflict, does not.
        let conflict_reported = decision.services.iter().any(|key| {
            memory
                .elector
                .service(key)
                .is_some_and(|s| s.conflict_reported)
        });
        let remembered = memory.addresses.get(&ip);
        let known = remembered.is_some_and(|a| a.known);
        // A takeover from an owner the fast path did not find silent (the gossip alone
        // declared it down, or it is handing over) is fenced: it goes ahead only if that
        // owner does not defend the address, so a gossip partition between two live nodes
        // leaves one of them answering.
        let fence = known
            && remembered
                .and_then(|a| a.other_owner.as_ref())
                .is_some_and(|before| !unreachable.contains(before));
        Some(Desired {
            interfaces,
            probe: !known || conflict_reported,
            fence,
        })
    }

    /// What follows from the addresses whose decision changed: this node's share, takeovers
    /// timed, metrics, the `/election` page, and the Services to report on.
    fn after_election(
        &self,
        memory: &mut Memory,
        changed: &BTreeMap<IpAddr, Option<Decision>>,
        live: &BTreeSet<NodeName>,
    ) {
        let now = tokio::time::Instant::now();
        let mine =
            |d: Option<&Decision>| d.is_some_and(|d| d.owner.as_ref().ok() == Some(&self.me));
        let (mut acquired, mut released) = (0, 0);
        let mut page = self.election.lock().expect("not poisoned");
        for (ip, before) in changed {
            let decision = memory.elector.decision(ip);
            let (was, is) = (mine(before.as_ref()), mine(decision));
            let labels = AddressLabels {
                address: ip.to_string(),
            };
            if is && !was {
                acquired += 1;
                memory.owned.insert(*ip);
                // Only what this node owns, one series each: the metric stays as small as
                // the node's share.
                self.metrics.owned.get_or_create(&labels).set(1);
                // A takeover from an owner the membership lost: timed until the first
                // announcement.
                if before
                    .as_ref()
                    .and_then(|d| d.owner.as_ref().ok())
                    .is_some_and(|b| *b != self.me && !live.contains(b))
                {
                    memory.taking_over.entry(*ip).or_insert(now);
                }
            } else if was && !is {
                released += 1;
                memory.owned.remove(ip);
                self.metrics.owned.remove(&labels);
                memory.taking_over.remove(ip);
                memory.conflicts.remove(ip);
                memory.fenced.remove(ip);
            }
            let owner_changed = before.as_ref().map(|d| &d.owner) != decision.map(|d| &d.owner);
            for service in before
                .iter()
                .chain(decision)
                .flat_map(|d| d.services.iter())
            {
                memory.to_report.insert(service.clone());
            }
            match decision {
                Some(decision) => {
                    let remembered = memory.addresses.entry(*ip).or_insert(Remembered {
                        decided_at: now,
                        other_owner: None,
                        known: false,
                    });
                    if owner_changed {
                        remembered.decided_at = now;
                    }
                    match &decision.owner {
                        Ok(owner) => {
                            if *owner != self.me {
                                remembered.other_owner = Some(owner.clone());
                            }
                            page.insert(*ip, Ok(owner.clone()));
                        }
                        Err(why) => {
                            page.insert(*ip, Err(*why));
                        }
                    }
                }
                // The address left the election (its Service went): a later Service given
                // it announces it for the first time.
                None => {
                    memory.addresses.remove(ip);
                    page.remove(ip);
                }
            }
        }
        self.metrics
            .fenced_addresses
            .set(i64::try_from(memory.fenced.len()).unwrap_or(i64::MAX));
        if acquired > 0 {
            self.metrics.count(ACQUIRED, acquired);
        }
        if released > 0 {
            self.metrics.count(RELEASED, released);
        }
    }

    /// Tells the fast path which nodes to watch: the owners of the addresses this node
    /// succeeds, and those found silent (which own nothing in this node's election while they
    /// are, but must be watched to be seen answering again).
    fn watch_owners(
        &self,
        memory: &mut Memory,
        changed: &BTreeMap<IpAddr, Option<Decision>>,
        view: &View,
        unreachable: &BTreeSet<NodeName>,
    ) {
        let Some(reach) = &self.reach else { return };
        for ip in changed.keys() {
            let decision = memory.elector.decision(ip);
            match decision.and_then(|d| Some((d.owner.as_ref().ok()?, d.successor.as_ref()?))) {
                Some((owner, successor)) if *successor == self.me && *owner != self.me => {
                    memory.succeeding.insert(*ip, owner.clone());
                }
                _ => {
                    memory.succeeding.remove(ip);
                }
            }
        }
        let watched: BTreeMap<NodeName, IpAddr> = memory
            .succeeding
            .values()
            .chain(unreachable)
            .filter_map(|node| Some((node.clone(), view.members.get(node.as_str())?.addr.ip())))
            .collect();
        if watched != memory.watched {
            reach.watch(watched.clone());
            memory.watched = watched;
        }
    }

    /// Counts the addresses whose Service condition names an announcing node other than
    /// the owner this speaker elects (past the grace): every [`DISAGREEMENT_GRACE`], not on
    /// every change, since it reads every address.
    fn count_disagreements(&self, memory: &mut Memory) {
        let now = tokio::time::Instant::now();
        if memory
            .last_disagreement_count
            .is_some_and(|at| now.duration_since(at) < DISAGREEMENT_GRACE)
        {
            return;
        }
        memory.last_disagreement_count = Some(now);
        let disagreements = memory
            .elector
            .decisions()
            .filter(|(ip, _)| {
                memory
                    .addresses
                    .get(*ip)
                    .is_some_and(|a| now.duration_since(a.decided_at) >= DISAGREEMENT_GRACE)
            })
            .filter(|(_, d)| {
                let Ok(owner) = &d.owner else { return false };
                d.services.iter().any(|key| {
                    self.stores
                        .service(key)
                        .is_some_and(|svc| svc.announced_by().is_some_and(|w| w != owner.as_str()))
                })
            })
            .count();
        self.metrics
            .disagreements
            .set(i64::try_from(disagreements).unwrap_or(i64::MAX));
    }

    /// The conditions of the Services this speaker reports on (those whose addresses, or
    /// what is known of them, changed), and an Event when an address becomes unannounced.
    fn report(
        &self,
        memory: &mut Memory,
        changed: &BTreeMap<IpAddr, Option<Decision>>,
        live: &BTreeSet<NodeName>,
    ) {
        let services: Vec<ServiceKey> = if std::mem::take(&mut memory.report_all) {
            memory.to_report.clear();
            memory.elector.services().cloned().collect()
        } else {
            std::mem::take(&mut memory.to_report).into_iter().collect()
        };
        if services.is_empty() {
            return;
        }
        let reporter_for_unowned = live.first() == Some(&self.me);
        for service in services {
            let addresses: Vec<(IpAddr, &Decision)> = memory
                .elector
                .service(&service)
                .map(|s| s.addresses.as_slice())
                .unwrap_or_default()
                .iter()
                .filter_map(|ip| memory.elector.decision(ip).map(|d| (*ip, d)))
                .collect();
            // A fenced address is announced by its previous owner, who reports it.
            let owned_by_me = addresses.iter().any(|(ip, d)| {
                d.owner.as_ref().ok() == Some(&self.me) && !memory.fenced.contains_key(ip)
            });
            let unowned: Vec<(IpAddr, NoOwner)> = addresses
                .iter()
                .filter_map(|(ip, d)| d.owner.as_ref().err().map(|e| (*ip, *e)))
                .collect();
            let bgp: Vec<(IpAddr, &Result<BTreeSet<NodeName>, NoOwner>)> = addresses
                .iter()
                .filter_map(|(ip, _)| memory.bgp_advertised.get(ip).map(|a| (*ip, a)))
                .collect();
            let l2_silent = !addresses.is_empty()
                && unowned.len() == addresses.len()
                && unowned
                    .iter()
                    .all(|(_, why)| *why == NoOwner::NotAdvertised);
            if l2_silent && !bgp.is_empty() {
                // BGP mode only: the first advertising node reports (the first live node
                // when none advertises).
                let reporter = bgp
                    .iter()
                    .filter_map(|(_, a)| a.as_ref().ok())
                    .flatten()
                    .min()
                    .or(live.first());
                let want = (reporter == Some(&self.me)).then(|| {
                    match bgp
                        .iter()
                        .find_map(|(ip, a)| a.as_ref().err().map(|w| (*ip, *w)))
                    {
                        Some((ip, why)) => Wanted::unadvertised(ip, why, &self.me),
                        None => Wanted::advertised(
                            &Announcement {
                                over_bgp: over_bgp(&bgp),
                                on_link: vec![],
                            },
                            &self.me,
                        ),
                    }
                });
                self.reports.want(&service, want);
                continue;
            }
            if !(owned_by_me || (reporter_for_unowned && !unowned.is_empty())) {
                self.reports.want(&service, None);
                continue;
            }
            let want = if let Some((ip, (interface, mac))) = addresses
                .iter()
                .find_map(|(ip, _)| memory.conflicts.get(ip).map(|c| (ip, c)))
            {
                Wanted::conflict(*ip, interface, mac, &self.me)
            } else if let Some((ip, contest)) = addresses.iter().find_map(|(ip, _)| {
                memory
                    .contests
                    .get(ip)
                    .filter(|c| c.reported)
                    .map(|c| (ip, c))
            }) {
                Wanted::two_owners(*ip, contest.node.as_deref(), &contest.mac, &self.me)
            } else if let Some((ip, why)) = unowned.first() {
                if *why == NoOwner::NotAdvertised {
                    // The controller reports this one, on the Service and the pool.
                    self.reports.want(&service, None);
                    continue;
                }
                // Once per cause: when the address loses its owner, or the reason changes.
                let told = changed
                    .get(ip)
                    .is_none_or(|before| before.as_ref().map(|d| &d.owner) == Some(&Err(*why)));
                if !told {
                    self.reports.notice(Notice {
                        service: service.clone(),
                        warning: true,
                        reason: "NotAnnounced",
                        note: format!("{ip} is not announced: {}", why.explain()),
                    });
                }
                Wanted::unowned(*ip, *why, &self.me)
            } else {
                let on_link = addresses
                    .iter()
                    .map(|(ip, _)| (*ip, memory.announced.get(ip).cloned().unwrap_or_default()))
                    .collect();
                let announcement = Announcement {
                    over_bgp: over_bgp(&bgp),
                    on_link,
                };
                Wanted::announced(&announcement, &self.me)
            };
            self.reports.want(&service, Some(want));
        }
    }
}

/// The addresses some node advertises over BGP, each with those nodes.
fn over_bgp(
    advertised: &[(IpAddr, &Result<BTreeSet<NodeName>, NoOwner>)],
) -> Vec<(IpAddr, Vec<String>)> {
    advertised
        .iter()
        .filter_map(|(ip, a)| a.as_ref().ok().map(|nodes| (*ip, nodes)))
        .map(|(ip, nodes)| (ip, nodes.iter().map(|n| n.as_str().to_string()).collect()))
        .collect()
}

impl Memory {
    /// The Services holding `ip` are reported on again.
    fn report_address(&mut self, ip: IpAddr) {
        if let Some(decision) = self.elector.decision(&ip) {
            self.to_report.extend(decision.services.iter().cloned());
        }
    }
}

/// The address peers gossip with this speaker at: its Node's InternalIP.
pub fn gossip_addr(stores: &Stores, node: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let node_object = stores
        .node(node)
        .with_context(|| format!("no Node named {node:?}; --node-name must be this node's name"))?;
    let ip = node_object
        .gossip_ip
        .with_context(|| format!("Node {node} has no InternalIP address to gossip on"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::Metrics;

    #[test]
    fn ownership_series_exist_before_any_change() {
        let mut registry = Registry::default();
        let _metrics = Metrics::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "ferrolb_speaker_ownership_changes_total{change=\"acquired\"} 0",
            "ferrolb_speaker_ownership_changes_total{change=\"released\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
