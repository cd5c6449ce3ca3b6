//! BGP mode on a node: a session to each BGPPeer that selects this node, a BFD session beside
//! it for peers with a profile, and the routes `speaker_core::decide::bgp::plan` gives each
//! peer, kept current as the cluster and the membership change.
//!
//! It runs beside layer 2 mode from the same watches; a cluster with no BGPPeer costs a
//! lookup per batch of changes. On stop the plan turns to [`Phase::Stopping`]: what other
//! live nodes serve is withdrawn, the rest marked GRACEFUL_SHUTDOWN, and only after
//! `stop_wait` do the sessions close, so the routers have moved new connections first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crds::BGPPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};

use common::events::{EventType, Note, Recorder};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use model::bgp::{BfdProfile, BgpPeer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use speaker_core::bgp::rib::Routes;
use speaker_core::bgp::{Families, PeerConfig};
use speaker_core::decide::NoOwner;
use speaker_core::decide::bgp::{Phase, plan};
use speaker_core::election::NodeName;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::bfd::Bfd;
use crate::bgp::{self, Peer, Status};
use crate::membership::View;
use crate::run::AddressLabels;
use crate::view::{Change, Stores};

/// The key of a password Secret that holds the TCP MD5 key (a `kubernetes.io/basic-auth`
/// Secret's, as MetalLB reads it).
pub const PASSWORD_KEY: &str = "password";

/// How often the sessions are reconciled without a change: a password Secret that was
/// missing is looked for again.
const RETRY: Duration = Duration::from_secs(30);
/// How often a password Secret that kept a session from starting is read again.
const SECRET_RETRY: Duration = Duration::from_secs(5);
/// Changes arriving this close together are taken in one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long closing sessions may take to send their Cease.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub struct Config {
    pub me: NodeName,
    /// Where the password Secrets are: ferrolb's namespace.
    pub namespace: String,
    pub client: Client,
    pub stores: Stores,
    pub members: watch::Receiver<View>,
    /// Pokes on every watch change (see [`tee`]).
    pub wake: watch::Receiver<()>,
    /// Turns true on SIGTERM.
    pub stop: watch::Receiver<bool>,
    /// Between withdrawing for the stop and closing the sessions.
    pub stop_wait: Duration,
    pub metrics: Metrics,
    /// Who advertises each address a BGPAdvertisement covers, for the Services' conditions
    /// (written by layer 2 mode's loop, which reports on every Service).
    pub advertised: watch::Sender<Advertised>,
}

/// [`speaker_core::decide::bgp::advertised`], as last worked out.
pub type Advertised = Arc<BTreeMap<IpAddr, Result<BTreeSet<NodeName>, NoOwner>>>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// BGP mode's metrics, one series per BGPPeer this node has a session to.
#[derive(Clone, Default)]
pub struct Metrics {
    pub session_up: Family<PeerLabels, Gauge>,
    pub prefixes_advertised: Family<PeerLabels, Gauge>,
    pub updates_sent: Family<PeerLabels, Counter>,
    pub sessions_established: Family<PeerLabels, Counter>,
    pub sessions_down: Family<PeerLabels, Counter>,
    pub bfd_up: Family<PeerLabels, Gauge>,
    pub bfd_downs: Family<PeerLabels, Counter>,
    /// 1 for each address this node advertises while it has a session: what alerts join with
    /// the Services' addresses (held by a peer only while its session is Established).
    advertised_addresses: Family<AddressLabels, Gauge>,
    advertised_shown: Arc<std::sync::Mutex<BTreeSet<IpAddr>>>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("ferrolb_speaker");
        r.register(
            "bgp_session_up",
            "1 while the BGP session to the peer is Established",
            m.session_up.clone(),
        );
        r.register(
            "bgp_prefixes_advertised",
            "Prefixes the peer holds from this node",
            m.prefixes_advertised.clone(),
        );
        r.register(
            "bgp_updates_sent",
            "UPDATE messages sent to the peer",
            m.updates_sent.clone(),
        );
        r.register(
            "bgp_sessions_established",
            "Times the session to the peer reached Established",
            m.sessions_established.clone(),
        );
        r.register(
            "bgp_sessions_down",
            "Times the session to the peer went down after it had opened",
            m.sessions_down.clone(),
        );
        r.register(
            "bfd_up",
            "1 while the BFD session to the peer is Up (peers with a BFD profile)",
            m.bfd_up.clone(),
        );
        r.register(
            "bfd_downs",
            "Times the BFD session to the peer left Up (each takes the BGP session down)",
            m.bfd_downs.clone(),
        );
        r.register(
            "bgp_advertised_address",
            "1 for each address this node advertises to its BGP peers",
            m.advertised_addresses.clone(),
        );
        m
    }

    /// Sets the series of `advertised_address` to `now`, removing those no longer advertised.
    fn advertising(&self, now: BTreeSet<IpAddr>) {
        let mut shown = self.advertised_shown.lock().expect("not poisoned");
        let labels = |ip: &IpAddr| AddressLabels {
            address: ip.to_string(),
        };
        for gone in shown.difference(&now) {
            self.advertised_addresses.remove(&labels(gone));
        }
        for ip in &now {
            self.advertised_addresses.get_or_create(&labels(ip)).set(1);
        }
        *shown = now;
    }

    fn forget(&self, labels: &PeerLabels) {
        self.session_up.remove(labels);
        self.prefixes_advertised.remove(labels);
        self.updates_sent.remove(labels);
        self.sessions_established.remove(labels);
        self.sessions_down.remove(labels);
        self.bfd_up.remove(labels);
        self.bfd_downs.remove(labels);
    }
}

/// Passes every change on to layer 2 mode's loop and pokes BGP mode.
pub fn tee(
    mut changes: mpsc::UnboundedReceiver<Change>,
) -> (mpsc::UnboundedReceiver<Change>, watch::Receiver<()>) {
    let (forward, forwarded) = mpsc::unbounded_channel();
    let (poke, wake) = watch::channel(());
    tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            poke.send_replace(());
            if forward.send(change).is_err() {
                return;
            }
        }
    });
    (forwarded, wake)
}

/// What a session was started with: a change of any of it restarts the session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    peer: BgpPeer,
    password: Option<Vec<u8>>,
    bfd: Option<BfdProfile>,
    router_id: Ipv4Addr,
}

struct Running {
    wanted: Wanted,
    /// Set when the peer no longer selects this node: its status entry goes with the session.
    forget: Arc<AtomicBool>,
    /// Set when a new session to the same peer takes its place (a changed password or
    /// setting): from then on the new session's reporter alone writes the entry and metrics.
    replaced: Arc<AtomicBool>,
    routes: watch::Sender<Routes>,
    stop: watch::Sender<bool>,
    status: watch::Receiver<Status>,
    task: JoinHandle<()>,
}

/// What the task keeps between reconciles.
#[derive(Default)]
struct Memory {
    sessions: BTreeMap<String, Running>,
    /// Sessions told to close, until they have sent their Cease.
    closing: Vec<JoinHandle<()>>,
    bfd: Option<Bfd>,
    /// Password Secrets as last read, and when.
    secrets: BTreeMap<String, (Instant, Result<Vec<u8>, String>)>,
    /// Why a peer has no session, as last written to its status.
    no_session: BTreeMap<String, String>,
}

/// Runs until `config.stop` turns true, then stops gracefully and returns.
pub async fn run(mut config: Config) {
    let mut memory = Memory::default();
    let mut live = BTreeSet::new();
    loop {
        let stopping = *config.stop.borrow_and_update();
        let phase = if stopping {
            Phase::Stopping
        } else {
            Phase::Serving
        };
        // The stop is decided against the membership as it was before it: layer 2 mode
        // leaves the gossip on the same signal, which empties the view.
        if !stopping {
            live = config
                .members
                .borrow_and_update()
                .members
                .keys()
                .map(|n| NodeName::new(n.as_str()))
                .chain([config.me.clone()])
                .collect();
        }
        reconcile(&config, phase, &live, &mut memory).await;
        if stopping {
            break;
        }
        tokio::select! {
            _ = config.wake.changed() => {}
            _ = config.members.changed() => {}
            _ = config.stop.changed() => {}
            _ = tokio::time::sleep(RETRY) => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
    let Memory {
        mut sessions,
        mut closing,
        ..
    } = memory;
    let established = sessions
        .values()
        .any(|s| s.status.borrow().state == speaker_core::bgp::State::Established);
    if established {
        tracing::info!(wait = ?config.stop_wait, "BGP: withdrawn what other nodes serve; waiting for the routers before closing");
        tokio::time::sleep(config.stop_wait).await;
    }
    for (_, session) in std::mem::take(&mut sessions) {
        session.stop.send_replace(true);
        closing.push(session.task);
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, futures::future::join_all(closing)).await;
}

async fn reconcile(config: &Config, phase: Phase, live: &BTreeSet<NodeName>, memory: &mut Memory) {
    let Memory {
        sessions,
        closing,
        bfd,
        secrets,
        no_session,
    } = memory;
    let peers = config.stores.bgp_peers_of(config.me.as_str());
    if peers.is_empty() && sessions.is_empty() {
        return;
    }
    let router_id = router_id(&config.stores, &config.me);
    let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
    for peer in &peers {
        let password = match &peer.password_secret {
            None => None,
            Some(secret) => {
                // Read again at most every RETRY (a changed password restarts the session
                // within that), every few seconds while it keeps the session from starting.
                let max_age = if sessions.contains_key(&peer.name) {
                    RETRY
                } else {
                    SECRET_RETRY
                };
                let fresh = secrets
                    .get(secret)
                    .is_some_and(|(at, _)| at.elapsed() < max_age);
                if !fresh {
                    secrets.insert(
                        secret.clone(),
                        (Instant::now(), password(config, secret).await),
                    );
                }
                match &secrets[secret].1 {
                    Ok(password) => Some(password.clone()),
                    Err(e) => {
                        if no_session.get(&peer.name) != Some(e) {
                            tracing::warn!(peer = peer.name, "BGP: no session: {e}");
                            let entry = serde_json::json!({
                                "node": config.me.as_str(),
                                "state": "Idle",
                                "since": Time(k8s_openapi::jiff::Timestamp::now()),
                                "message": e,
                            });
                            apply_sessions(
                                &Api::all(config.client.clone()),
                                &peer.name,
                                &manager(&config.me),
                                vec![entry],
                            )
                            .await;
                            no_session.insert(peer.name.clone(), e.clone());
                        }
                        continue;
                    }
                }
            }
        };
        no_session.remove(&peer.name);
        let bfd = peer.bfd_profile.as_ref().and_then(|name| {
            let profile = config.stores.bfd_profile(name);
            if profile.is_none() && !sessions.contains_key(&peer.name) {
                tracing::warn!(
                    peer = peer.name,
                    profile = name,
                    "BGP: the BFD profile does not exist; the session runs without BFD"
                );
            }
            profile.map(|p| BfdProfile::clone(&p))
        });
        wanted.insert(
            peer.name.clone(),
            Wanted {
                peer: BgpPeer::clone(peer),
                password,
                bfd,
                router_id,
            },
        );
    }
    // Sessions no longer wanted as they are close (with a Cease); changed ones start anew.
    let stale: Vec<String> = sessions
        .iter()
        .filter(|(name, running)| wanted.get(*name) != Some(&running.wanted))
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        let running = sessions.remove(&name).expect("listed");
        tracing::info!(peer = name, "BGP: closing the session");
        // Not selected any more: its entry goes. (A peer whose password cannot be read keeps
        // the entry that says so.)
        if !peers.iter().any(|p| p.name == name) {
            running.forget.store(true, Ordering::Relaxed);
        }
        if wanted.contains_key(&name) {
            running.replaced.store(true, Ordering::Relaxed);
        }
        running.stop.send_replace(true);
        if let (Some(bfd), Some(_)) = (bfd.as_ref(), &running.wanted.bfd) {
            bfd.remove(running.wanted.peer.address);
        }
        closing.push(running.task);
    }
    closing.retain(|task| !task.is_finished());
    for (name, wanted) in wanted {
        if sessions.contains_key(&name) {
            continue;
        }
        let bfd_state = match &wanted.bfd {
            None => None,
            Some(profile) => {
                if bfd.is_none() {
                    match Bfd::start().await {
                        Ok(started) => *bfd = Some(started),
                        Err(e) => tracing::warn!("BFD: cannot listen on its port: {e}"),
                    }
                }
                bfd.as_ref()
                    .map(|bfd| bfd.add(wanted.peer.address, wanted.peer.source, profile.into()))
            }
        };
        sessions.insert(name, start(config, &wanted, bfd_state));
    }
    let context = config.stores.context();
    let facts = config.stores.bgp_facts(&context);
    let advertised = speaker_core::decide::bgp::advertised(&facts, live);
    config.metrics.advertising(if sessions.is_empty() {
        BTreeSet::new()
    } else {
        advertised
            .iter()
            .filter(|(_, nodes)| nodes.as_ref().is_ok_and(|n| n.contains(&config.me)))
            .map(|(ip, _)| *ip)
            .collect()
    });
    config.advertised.send_if_modified(|before| {
        let changed = **before != advertised;
        if changed {
            *before = Arc::new(advertised);
        }
        changed
    });
    if sessions.is_empty() {
        return;
    }
    let names: Vec<String> = sessions.keys().cloned().collect();
    let mut plan = plan(&facts, &config.me, &names, live, phase);
    for conflict in &plan.conflicts {
        tracing::warn!(peer = conflict.peer, prefix = %conflict.prefix, local_prefs = ?conflict.local_prefs, "BGP: advertisements disagree on localPref; the highest is sent");
    }
    for (name, session) in sessions.iter() {
        let routes = plan.routes.remove(name).unwrap_or_default();
        session.routes.send_if_modified(|sent| {
            let changed = *sent != routes;
            if changed {
                *sent = routes;
            }
            changed
        });
    }
}

fn start(
    config: &Config,
    wanted: &Wanted,
    bfd: Option<watch::Receiver<speaker_core::bfd::State>>,
) -> Running {
    let peer = &wanted.peer;
    let (routes, routes_rx) = watch::channel(Routes::new());
    let (status_tx, status) = watch::channel(Status::default());
    let (stop, stop_rx) = watch::channel(false);
    let session = Peer {
        name: peer.name.clone(),
        address: SocketAddr::new(peer.address, peer.port),
        source: peer.source,
        password: wanted.password.clone(),
        ttl: peer.ttl(),
        config: PeerConfig {
            local_asn: peer.local_asn,
            peer_asn: peer.peer_asn,
            router_id: wanted.router_id,
            hold_time: peer.hold_time,
            keepalive_time: peer.keepalive_time,
            connect_retry: peer.connect_time,
            families: Families::default(),
        },
    };
    tracing::info!(peer = peer.name, address = %session.address, asn = peer.peer_asn, bfd = wanted.bfd.is_some(), "BGP: starting a session");
    let address = session.address;
    let task = tokio::spawn(bgp::run(session, routes_rx, status_tx, stop_rx, bfd));
    let forget = Arc::new(AtomicBool::new(false));
    let replaced = Arc::new(AtomicBool::new(false));
    tokio::spawn(report(
        Reporter {
            peer: peer.name.clone(),
            address,
            me: config.me.clone(),
            client: config.client.clone(),
            metrics: config.metrics.clone(),
        },
        status.clone(),
        forget.clone(),
        replaced.clone(),
    ));
    Running {
        wanted: wanted.clone(),
        forget,
        replaced,
        routes,
        stop,
        status,
        task,
    }
}

/// Where a session's reports go.
struct Reporter {
    peer: String,
    address: SocketAddr,
    me: NodeName,
    client: Client,
    metrics: Metrics,
}

/// Logs each change of a session, keeps its metrics, publishes an Event when it opens or goes
/// down, and writes this node's entry of the BGPPeer's `status.sessions` (server-side apply
/// with a field manager per node: each node owns its own entry). When the session ends with
/// `forget` set, the entry and the metrics go; once `replaced` is set it writes nothing more (its
/// last state, written late, would overwrite the new session's: seen as a status stuck at
/// "Idle (stopped)" under load).
async fn report(
    to: Reporter,
    mut status: watch::Receiver<Status>,
    forget: Arc<AtomicBool>,
    replaced: Arc<AtomicBool>,
) {
    let Reporter {
        peer,
        address,
        me,
        client,
        metrics,
    } = to;
    let api: Api<BGPPeer> = Api::all(client.clone());
    let recorder = Recorder::new(client, "ferrolb-speaker", me.as_str());
    let regarding = ObjectReference {
        api_version: Some("ferrolb.io/v1alpha1".into()),
        kind: Some("BGPPeer".into()),
        name: Some(peer.clone()),
        ..ObjectReference::default()
    };
    let labels = PeerLabels { peer: peer.clone() };
    let manager = manager(&me);
    let mut written: Option<serde_json::Value> = None;
    let mut state = None;
    let mut since = Time(k8s_openapi::jiff::Timestamp::now());
    let mut seen = Status::default();
    loop {
        if replaced.load(Ordering::Relaxed) {
            break;
        }
        let now = status.borrow_and_update().clone();
        if state != Some(now.state) {
            if let Some(from) = state {
                tracing::info!(peer, ?from, to = ?now.state, reason = now.last_down.as_deref().unwrap_or(""), advertised = now.advertised, "BGP session");
            }
            state = Some(now.state);
            since = Time(k8s_openapi::jiff::Timestamp::now());
        }
        let up = now.state == speaker_core::bgp::State::Established;
        metrics.session_up.get_or_create(&labels).set(i64::from(up));
        metrics
            .prefixes_advertised
            .get_or_create(&labels)
            .set(i64::try_from(now.advertised).unwrap_or(i64::MAX));
        metrics
            .bfd_up
            .get_or_create(&labels)
            .set(i64::from(now.bfd == Some(speaker_core::bfd::State::Up)));
        for (family, before, after) in [
            (&metrics.updates_sent, seen.updates_sent, now.updates_sent),
            (
                &metrics.sessions_established,
                seen.established,
                now.established,
            ),
            (&metrics.sessions_down, seen.downs, now.downs),
            (&metrics.bfd_downs, seen.bfd_downs, now.bfd_downs),
        ] {
            family
                .get_or_create(&labels)
                .inc_by(after.saturating_sub(before));
        }
        let mut notes = Vec::new();
        if now.downs > seen.downs {
            notes.push(Note {
                type_: EventType::Warning,
                reason: "BGPSessionDown".into(),
                action: "Peer".into(),
                note: format!(
                    "node {}: the session to {address} went down: {}",
                    me.as_str(),
                    now.last_down.as_deref().unwrap_or("no reason given")
                ),
            });
        }
        if now.established > seen.established && up {
            notes.push(Note {
                type_: EventType::Normal,
                reason: "BGPSessionEstablished".into(),
                action: "Peer".into(),
                note: format!(
                    "node {}: the session to {address} is Established (hold time {}s)",
                    me.as_str(),
                    now.hold_time.map_or(0, |h| h.as_secs())
                ),
            });
        }
        for note in notes {
            match tokio::time::timeout(Duration::from_secs(5), recorder.publish(&note, &regarding))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(peer, "cannot publish event {}: {e}", note.reason),
                Err(_) => tracing::warn!(peer, "cannot publish event {}: timed out", note.reason),
            }
        }
        seen = now.clone();
        let entry = session_entry(me.as_str(), &now, &since);
        if written.as_ref() != Some(&entry) {
            apply_sessions(&api, &peer, &manager, vec![entry.clone()]).await;
            written = Some(entry);
        }
        if status.changed().await.is_err() {
            break;
        }
        // A flapping session writes at most twice a second.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if forget.load(Ordering::Relaxed) {
        metrics.forget(&labels);
        apply_sessions(&api, &peer, &manager, vec![]).await;
    }
}

/// The field manager of this node's entries: one per node, so each owns its own.
fn manager(me: &NodeName) -> String {
    format!("ferrolb-speaker/{}", me.as_str())
        .chars()
        .take(128)
        .collect()
}

/// One node's entry of `BGPPeer.status.sessions`.
fn session_entry(node: &str, status: &Status, since: &Time) -> serde_json::Value {
    let established = status.state == speaker_core::bgp::State::Established;
    let mut entry = serde_json::json!({
        "node": node,
        "state": format!("{:?}", status.state),
        "since": since,
    });
    if let Some(hold) = status.hold_time.filter(|_| established) {
        entry["holdTimeSeconds"] = hold.as_secs().into();
    }
    if let Some(bfd) = status.bfd {
        entry["bfd"] = format!("{bfd:?}").into();
    }
    if let Some(why) = status.last_down.as_ref().filter(|_| !established) {
        entry["message"] = why.clone().into();
    }
    entry
}

async fn apply_sessions(
    api: &Api<BGPPeer>,
    peer: &str,
    manager: &str,
    sessions: Vec<serde_json::Value>,
) {
    let patch = serde_json::json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": "BGPPeer",
        "status": { "sessions": sessions },
    });
    if let Err(e) = api
        .patch_status(
            peer,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        tracing::warn!(peer, "BGP: cannot write the session's status: {e}");
    }
}

/// The TCP MD5 key from the Secret's `password`.
async fn password(config: &Config, secret: &str) -> Result<Vec<u8>, String> {
    let api: Api<Secret> = Api::namespaced(config.client.clone(), &config.namespace);
    let found = api
        .get_opt(secret)
        .await
        .map_err(|e| format!("cannot read Secret {}/{secret}: {e}", config.namespace))?
        .ok_or_else(|| format!("Secret {}/{secret} does not exist", config.namespace))?;
    found
        .data
        .as_ref()
        .and_then(|data| data.get(PASSWORD_KEY))
        .map(|value| value.0.clone())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| {
            format!(
                "Secret {}/{secret} has no '{PASSWORD_KEY}'",
                config.namespace
            )
        })
}

/// The BGP identifier (RFC 4271 §4.2, an IPv4 address unique among the peer's neighbours):
/// the node's IPv4 InternalIP, or on an IPv6-only node four bytes of a hash of its name.
fn router_id(stores: &Stores, me: &NodeName) -> Ipv4Addr {
    if let Some(IpAddr::V4(ip)) = stores.node(me.as_str()).and_then(|n| n.gossip_ip) {
        return ip;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(me.as_str().as_bytes());
    Ipv4Addr::new(hash[0], hash[1], hash[2], hash[3])
}
