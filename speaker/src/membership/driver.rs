//! The membership task: it alone owns the foca instance, the UDP socket and the timer queue,
//! and reacts to three things — datagrams, due timers, and commands from the handle — then
//! publishes the resulting [`View`].

use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Codec, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer,
};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use super::envelope::{Envelope, Kind, MAX_DATAGRAM, Rejected};
use super::health::LocalHealth;
use super::identity::MemberId;
use super::key::GossipKey;
use super::macs::{MacRecord, PeerMacs};
use super::metrics::{Change, Direction, Metrics};
use super::seeds::Seeds;
use super::timers::TimerQueue;
use super::timing::Timing;
use super::view::{Joining, View, members_by_node};

type Swim = Foca<MemberId, PostcardCodec, StdRng, NoCustomBroadcast>;

/// What the handle asks of the task.
pub(crate) enum Command {
    SetSeeds(Vec<SocketAddr>),
    Leave(oneshot::Sender<()>),
    Rejoin(oneshot::Sender<()>),
}

/// Room for more than any datagram we send: anything larger than `MAX_DATAGRAM` is dropped
/// unread, whether or not the kernel had to cut it.
const RECV_BUFFER: usize = 2048;

/// While we know no live peer (starting, rejoining, isolated) seeds are tried this many
/// times as often.
const EAGER_ANNOUNCE_FACTOR: u32 = 4;

/// Datagrams handled in a row before due timers get their turn.
const DATAGRAM_BUDGET: u32 = 64;

/// Quiet period between two debug lines about the same kind of trouble.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Our MAC record goes to every member this often, besides once when each comes up, so that
/// one lost datagram is made good.
const MAC_REFRESH: Duration = Duration::from_secs(15);

pub(crate) struct Driver {
    socket: UdpSocket,
    local: SocketAddr,
    envelope: Envelope,
    timing: Timing,
    foca_config: foca::Config,
    foca: Swim,
    /// The MACs we answer with, sent to each member (the record follows our generation).
    macs: Vec<[u8; 6]>,
    peer_macs: PeerMacs,
    runtime: AccumulatingRuntime<MemberId>,
    timers: TimerQueue,
    health: LocalHealth,
    /// Our incarnation in the last datagram we sent: it rises only when we refute a suspicion
    /// about us (foca has no getter and no notification for it).
    incarnation: Option<foca::Incarnation>,
    /// Whom to announce ourselves to, and when; empty until the first `set_seeds`.
    seeds: Seeds,
    joining: Joining,
    /// Between `leave()` and `rejoin()`: no timers, no announces, incoming gossip ignored.
    left: bool,
    /// foca has at least one live peer and runs its probe cycle.
    connected: bool,
    commands: mpsc::UnboundedReceiver<Command>,
    view: watch::Sender<View>,
    metrics: Metrics,
    auth_log: LogLimit,
    net_log: LogLimit,
    swim_log: LogLimit,
    heartbeat: common::health::Heartbeat,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: MemberId,
        macs: Vec<[u8; 6]>,
        socket: UdpSocket,
        key: &GossipKey,
        timing: Timing,
        commands: mpsc::UnboundedReceiver<Command>,
        view: watch::Sender<View>,
        metrics: Metrics,
        heartbeat: common::health::Heartbeat,
    ) -> anyhow::Result<Driver> {
        let foca_config = timing.foca_config()?;
        let local = socket.local_addr()?;
        let foca = new_swim(me, &foca_config);
        // A timer half a round trip late: we were starved, not merely scheduled.
        let health = LocalHealth::new(
            timing.max_health_multiplier,
            timing.probe_rtt / 2,
            timing.probe_period,
        );
        let driver = Driver {
            socket,
            local,
            envelope: Envelope::new(key),
            timing,
            foca_config,
            foca,
            macs,
            peer_macs: PeerMacs::default(),
            runtime: AccumulatingRuntime::new(),
            timers: TimerQueue::default(),
            health,
            incarnation: None,
            seeds: Seeds::default(),
            joining: Joining::default(),
            left: false,
            connected: false,
            commands,
            view,
            metrics,
            auth_log: LogLimit::default(),
            net_log: LogLimit::default(),
            swim_log: LogLimit::default(),
            heartbeat,
        };
        driver.publish_view();
        Ok(driver)
    }

    /// Runs until every handle is dropped; then stops at once, without leaving (as a crash
    /// would).
    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut next_announce = Instant::now() + self.seed_tick();
        let mut next_macs = Instant::now() + MAC_REFRESH;
        let mut datagram_streak = 0;
        let mut pulse = tokio::time::interval(super::HEARTBEAT);
        pulse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.heartbeat.beat();
            match crate::fault::due(crate::fault::Loop::Membership) {
                Some(crate::fault::Action::Panic) => {
                    panic!("test fault: the membership task panics")
                }
                Some(crate::fault::Action::Stall) => std::future::pending::<()>().await,
                None => {}
            }
            let now = Instant::now();
            // Datagrams go before due timers (below), so that after a stall the acks and
            // refutations that did arrive in time are read before foca judges a probe or a
            // suspicion; but a flood gets only so many in a row before due timers run.
            let timer_due = self.timers.next_deadline();
            let join_due = if self.left {
                None
            } else {
                self.joining.deadline(self.view.borrow().joined)
            };
            let announce_due = (!self.left && self.seeds.is_set()).then_some(next_announce);
            if datagram_streak >= DATAGRAM_BUDGET {
                datagram_streak = 0;
                let due = |deadline: Option<Instant>| deadline.is_some_and(|t| t <= now);
                if due(timer_due) {
                    self.fire_timers().await;
                }
                if due(join_due) {
                    self.publish_view();
                }
                if due(announce_due) {
                    self.announce_to_due_seeds().await;
                    next_announce = Instant::now() + self.seed_tick();
                }
                continue;
            }
            tokio::select! {
                biased;
                // A leave must not wait behind anything.
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command).await,
                    None => break,
                },
                received = self.socket.recv_from(&mut buf) => {
                    datagram_streak += 1;
                    match received {
                        Ok((len, from)) => self.handle_datagram(&buf[..len], from).await,
                        Err(error) => {
                            if let Some(suppressed) = self.net_log.allow() {
                                debug!(%error, suppressed, "gossip receive failed");
                            }
                        }
                    }
                    continue;
                }
                () = sleep_until_some(timer_due) => self.fire_timers().await,
                () = sleep_until_some(join_due) => self.publish_view(),
                () = sleep_until_some(announce_due) => {
                    self.announce_to_due_seeds().await;
                    next_announce = Instant::now() + self.seed_tick();
                }
                () = sleep_until(next_macs) => {
                    self.send_macs_to_members().await;
                    next_macs = Instant::now() + MAC_REFRESH;
                }
                _ = pulse.tick() => {}
            }
            datagram_streak = 0;
        }
        debug!("membership handle dropped; gossip stopped");
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::SetSeeds(seeds) => {
                let me = self.foca.identity().addr;
                let now = Instant::now();
                let base = self.announce_period();
                // The same list again (every watch event of the Nodes brings one) is nothing
                // to do; a new seed is announced to at once, the others on their schedule.
                let Some(new) = self.seeds.set(seeds, me, now, base) else {
                    return;
                };
                debug!(?new, "gossip seeds changed");
                if self.left {
                    return;
                }
                self.joining
                    .seeds_set(now, self.seeds.only_me(), self.timing.alone_after);
                self.publish_view();
                self.announce_to(new).await;
            }
            Command::Leave(done) => {
                self.leave().await;
                let _ = done.send(());
            }
            Command::Rejoin(done) => {
                self.rejoin().await;
                let _ = done.send(());
            }
        }
    }

    async fn leave(&mut self) {
        if self.left {
            return;
        }
        info!(
            generation = self.foca.identity().generation,
            "leaving the gossip cluster"
        );
        self.left = true;
        let result = self.foca.leave_cluster(&mut self.runtime);
        self.after_swim(result).await;
        // leave_cluster tells three random members; tell a few more so one lost datagram
        // does not leave the others to detect our absence by probing.
        for _ in 0..2 {
            let result = self.foca.gossip(&mut self.runtime);
            self.after_swim(result).await;
        }
        self.timers.clear();
        self.connected = false;
        self.publish_view();
    }

    async fn rejoin(&mut self) {
        if !self.left {
            debug!("rejoin without leave: nothing to do");
            return;
        }
        let me = self.foca.identity().renew();
        info!(generation = me.generation, "rejoining the gossip cluster");
        self.foca = new_swim(me, &self.foca_config);
        self.runtime = AccumulatingRuntime::new();
        self.timers.clear();
        self.health.reset();
        self.metrics.health_score.set(0);
        self.incarnation = None;
        self.left = false;
        self.connected = false;
        self.joining = Joining::default();
        let now = Instant::now();
        if self.seeds.is_set() {
            self.joining
                .seeds_set(now, self.seeds.only_me(), self.timing.alone_after);
        }
        self.publish_view();
        self.seeds.restart(now, self.announce_period());
        self.announce_to_due_seeds().await;
        // Our record follows our generation: the members learn the new one.
        self.send_macs_to_members().await;
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(due) = self.timers.pop_due(now) {
            if self.health.woke(now, due.late) {
                self.health_worse(true);
            }
            let verdict = matches!(
                due.event,
                Timer::ProbeRandomMember(_) | Timer::ChangeSuspectToDown { .. }
            );
            if verdict && !due.deferred && self.health.is_late(due.late) {
                // We were starved, and so perhaps were our peers: the ack or refutation that
                // would spare one may not have been sent yet. Listen for one more round trip,
                // from when we woke, before judging.
                self.metrics.deferred_verdicts.inc();
                self.timers
                    .defer(due, Instant::now() + self.timing.probe_rtt);
                continue;
            }
            let probe_round = matches!(due.event, Timer::ProbeRandomMember(_));
            let result = self.foca.handle_timer(due.event, &mut self.runtime);
            let probe_failed = self.after_swim(result).await;
            if probe_round && self.connected && !probe_failed {
                self.health.probe_succeeded();
                self.metrics.health_score.set(self.health.score().into());
            }
        }
    }

    /// The score rose. `ours` says the evidence is about our own time (a late wake-up, a
    /// suspicion of us): then the suspicions already pending are stretched too. A failed probe
    /// is not such evidence (the peer may well be dead), so it slows later rounds only and
    /// a real death is still declared at the base timing.
    fn health_worse(&mut self, ours: bool) {
        self.metrics.health_score.set(self.health.score().into());
        if ours {
            self.timers.stretch_suspicions(self.health.multiplier());
        }
    }

    async fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        self.metrics.packet(Direction::In, datagram.len());
        let (kind, payload) = match self.envelope.open(datagram) {
            Ok(opened) => opened,
            Err(reason) => {
                self.metrics.auth_failures.inc();
                if let Some(suppressed) = self.auth_log.allow() {
                    let reason = match reason {
                        Rejected::TooShort => "too short",
                        Rejected::TooLong => "too long",
                        Rejected::NotAuthentic => "not sealed with our gossip key",
                    };
                    debug!(%from, len = datagram.len(), reason, suppressed, "dropped gossip datagram");
                }
                return;
            }
        };
        if self.left {
            return;
        }
        match kind {
            Kind::Gossip => {
                let result = self.foca.handle_data(&payload, &mut self.runtime);
                self.after_swim(result).await;
            }
            Kind::Macs => match MacRecord::decode(&payload) {
                Ok(record) => {
                    if self.peer_macs.learn(record) {
                        self.publish_view();
                    }
                }
                Err(error) => {
                    if let Some(suppressed) = self.swim_log.allow() {
                        debug!(%from, %error, suppressed, "dropped MAC record");
                    }
                }
            },
        }
    }

    fn mac_record(&self) -> MacRecord {
        let me = self.foca.identity();
        MacRecord::new(&me.node, me.generation, self.macs.iter().copied())
    }

    async fn send_macs(&mut self, to: SocketAddr) {
        let record = self.mac_record().encode();
        self.send(Kind::Macs, to, &record).await;
    }

    async fn send_macs_to_members(&mut self) {
        if self.left {
            return;
        }
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for to in members {
            self.send_macs(to).await;
        }
    }

    /// Announces us to the seeds that are due and not live members (all that are due while
    /// we know no live peer: foca may still list members from before it was declared down).
    async fn announce_to_due_seeds(&mut self) {
        if self.left {
            return;
        }
        let members: Vec<SocketAddr> = if self.connected {
            self.foca.iter_members().map(|m| m.id().addr).collect()
        } else {
            vec![]
        };
        let due = self
            .seeds
            .due(Instant::now(), self.announce_period(), |seed| {
                members.contains(seed)
            });
        self.announce_to(due).await;
    }

    async fn announce_to(&mut self, seeds: Vec<SocketAddr>) {
        for seed in seeds {
            let result = self
                .foca
                .announce(MemberId::placeholder(seed), &mut self.runtime);
            self.after_swim(result).await;
        }
    }

    /// How often the seeds' schedule is looked at.
    fn seed_tick(&self) -> Duration {
        self.timing.announce_interval / EAGER_ANNOUNCE_FACTOR
    }

    /// The first wait of a seed's backoff: shorter while we know no live peer.
    fn announce_period(&self) -> Duration {
        if self.connected {
            self.timing.announce_interval
        } else {
            self.timing.announce_interval / EAGER_ANNOUNCE_FACTOR
        }
    }

    /// Carries out what foca asked for during one interaction: datagrams, timers,
    /// notifications.
    /// Returns whether foca raised a suspicion, i.e. a probe of ours failed.
    async fn after_swim(&mut self, result: Result<(), foca::Error>) -> bool {
        if let Err(error) = result
            && let Some(suppressed) = self.swim_log.allow()
        {
            // Routine for a gossip protocol (stale or misdirected messages, a probe cycle
            // cut short by a busy machine); foca recovers by itself.
            debug!(%error, suppressed, "gossip message not handled");
        }
        while let Some((to, payload)) = self.runtime.to_send() {
            if let Ok(header) = Codec::<MemberId>::decode_header(&mut PostcardCodec, &payload[..]) {
                self.note_incarnation(header.src_incarnation);
                if header.message == foca::Message::TurnUndead
                    && self.foca.iter_members().any(|m| m.id() == &header.dst)
                {
                    // foca 2.0.0 tells a suspect "you are down" when the suspicion's timer
                    // fires even if the suspect refuted meanwhile and stays a live member;
                    // the suspect would rejoin as a new generation, a flap of every address
                    // it owns for a suspicion nobody upheld. A member we hold alive is never
                    // told it is down.
                    self.metrics.turn_undead_withheld.inc();
                    continue;
                }
            }
            self.send(Kind::Gossip, to.addr, &payload).await;
        }
        let now = Instant::now();
        let mut probe_failed = false;
        while let Some((after, event)) = self.runtime.to_schedule() {
            if self.left {
                continue;
            }
            match event {
                Timer::ProbeRandomMember(_) => {
                    self.timers.schedule(now, self.health.scale(after), event);
                }
                // foca raises a suspicion only when a probe of ours failed.
                Timer::ChangeSuspectToDown { .. } => {
                    probe_failed = true;
                    let multiplier = self.health.multiplier();
                    self.timers
                        .schedule_suspicion(now, after, multiplier, event);
                }
                _ => self.timers.schedule(now, after, event),
            }
        }
        if probe_failed && self.health.probe_failed() {
            self.health_worse(false);
        }
        let mut changed = false;
        let mut new_peers = vec![];
        while let Some(notification) = self.runtime.to_notify() {
            if let OwnedNotification::MemberUp(id) | OwnedNotification::Rename(_, id) =
                &notification
            {
                new_peers.push(id.addr);
            }
            changed |= self.notified(notification);
        }
        if changed {
            self.publish_view();
        }
        for to in new_peers {
            self.send_macs(to).await;
        }
        probe_failed
    }

    /// Our incarnation in a datagram foca made: a rise means we refuted a suspicion.
    fn note_incarnation(&mut self, incarnation: foca::Incarnation) {
        let refuted = self.incarnation.is_some_and(|before| incarnation > before);
        self.incarnation = Some(incarnation);
        if refuted {
            self.metrics.refutations.inc();
            debug!(incarnation, "refuted a suspicion about this speaker");
            if self.health.refuted() {
                self.health_worse(true);
            }
        }
    }

    async fn send(&mut self, kind: Kind, to: SocketAddr, payload: &[u8]) {
        let Some(datagram) = self.envelope.seal(kind, payload) else {
            return;
        };
        debug_assert!(datagram.len() <= MAX_DATAGRAM);
        let Some(dest) = reachable_from(self.local, to) else {
            if let Some(suppressed) = self.net_log.allow() {
                debug!(%to, local = %self.local, suppressed, "gossip peer of another address family");
            }
            return;
        };
        match self.socket.send_to(&datagram, dest).await {
            Ok(sent) => self.metrics.packet(Direction::Out, sent),
            Err(error) => {
                if let Some(suppressed) = self.net_log.allow() {
                    debug!(%to, %error, suppressed, "gossip send failed");
                }
            }
        }
    }

    /// Logs and counts one notification; returns whether the view may have changed.
    fn notified(&mut self, notification: OwnedNotification<MemberId>) -> bool {
        match notification {
            OwnedNotification::MemberUp(id) => {
                info!(peer = %id.node, addr = %id.addr, generation = id.generation, "gossip member up");
                self.metrics.changed(Change::Up);
                self.joining.peer_seen();
                true
            }
            OwnedNotification::MemberDown(id) => {
                info!(peer = %id.node, addr = %id.addr, generation = id.generation, "gossip member down");
                self.metrics.changed(Change::Down);
                true
            }
            OwnedNotification::Rename(old, new) => {
                info!(
                    peer = %new.node,
                    addr = %new.addr,
                    old_generation = old.generation,
                    generation = new.generation,
                    "gossip member restarted"
                );
                self.metrics.changed(Change::Restarted);
                true
            }
            OwnedNotification::Active => {
                debug!("gossip active: a peer knows us");
                self.connected = true;
                false
            }
            OwnedNotification::Idle => {
                info!("no other gossip member is alive");
                self.connected = false;
                self.seeds.restart(Instant::now(), self.announce_period());
                false
            }
            OwnedNotification::Defunct => {
                self.connected = false;
                if !self.left {
                    warn!("the gossip cluster declared this speaker down");
                }
                false
            }
            OwnedNotification::Rejoin(id) => {
                warn!(
                    generation = id.generation,
                    "the gossip cluster declared this speaker down; rejoined as a new generation"
                );
                self.metrics.changed(Change::Rejoined);
                // foca keeps its old roster but waits for a peer to talk to us again; seeds
                // are announced to eagerly until then.
                self.connected = false;
                self.seeds.restart(Instant::now(), self.announce_period());
                true
            }
        }
    }

    fn publish_view(&self) {
        let view = if self.left {
            View::default()
        } else {
            View {
                members: members_by_node(
                    self.foca.identity(),
                    self.foca.iter_members().map(|m| m.id()),
                ),
                joined: self.joining.joined(Instant::now()),
                peer_macs: self.peer_macs.all_but(&self.foca.identity().node).collect(),
            }
        };
        self.metrics
            .members
            .set(i64::try_from(view.members.len()).unwrap_or(i64::MAX));
        self.view.send_if_modified(|current| {
            if *current == view {
                false
            } else {
                *current = view;
                true
            }
        });
    }
}

fn new_swim(me: MemberId, config: &foca::Config) -> Swim {
    Foca::new(me, config.clone(), rand::make_rng(), PostcardCodec)
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `to` as the socket bound to `local` can send to it: IPv4 peers through an IPv6 socket as
/// v4-mapped addresses; `None` for an IPv6 peer of an IPv4 socket.
fn reachable_from(local: SocketAddr, to: SocketAddr) -> Option<SocketAddr> {
    match (local, to) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => Some(SocketAddr::V6(SocketAddrV6::new(
            v4.ip().to_ipv6_mapped(),
            v4.port(),
            0,
            0,
        ))),
        (SocketAddr::V4(_), SocketAddr::V6(v6)) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::from((ip, v6.port()))),
        _ => Some(to),
    }
}

/// At most one log line per [`LOG_EVERY`] for one kind of trouble, with a count of the
/// ones left out.
#[derive(Default)]
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(suppressed since the last line)` when a line may be logged now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            self.suppressed += 1;
            None
        } else {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_families() {
        let v4: SocketAddr = "10.0.0.1:9652".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:9652".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:9652".parse().unwrap();
        let any4: SocketAddr = "0.0.0.0:9652".parse().unwrap();
        let any6: SocketAddr = "[::]:9652".parse().unwrap();
        assert_eq!(reachable_from(any4, v4), Some(v4));
        assert_eq!(reachable_from(any6, v6), Some(v6));
        assert_eq!(reachable_from(any6, v4), Some(mapped));
        assert_eq!(reachable_from(any4, mapped), Some(v4));
        assert_eq!(reachable_from(any4, v6), None);
    }
}
