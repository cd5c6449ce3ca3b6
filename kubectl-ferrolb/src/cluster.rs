//! `status`, `services` and `explain`: what the cluster's objects say about ferrolb, worked out
//! from a [`Snapshot`] read beforehand, so that each answer is tested without a cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crds::{BGPPeer, IPAddressPool};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use model::announcement::Announcement;
use model::service::{ANNOUNCED_CONDITION, CONFLICT_REASON, LOAD_BALANCER_CLASS};
use serde::Serialize;

/// Used share of a pool's family above which `status` lists it as a problem (the warning
/// alert's threshold too).
const POOL_WARN_PERCENT: i64 = 80;

/// Everything the commands read, fetched once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub now: Option<Timestamp>,
    /// The namespace ferrolb runs in.
    pub namespace: String,
    pub lease: Option<Lease>,
    pub daemonset: Option<DaemonSet>,
    pub speaker_pods: Vec<Pod>,
    /// Live gossip members each speaker reports (`ferrolb_speaker_members`), by pod name; absent
    /// when its metrics could not be read.
    pub members: BTreeMap<String, u64>,
    pub pools: Vec<IPAddressPool>,
    pub peers: Vec<BGPPeer>,
    pub services: Vec<Service>,
    /// Events about the Services (and pools), any order.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    /// What needs attention, most urgent first; empty when all is well.
    pub problems: Vec<String>,
    pub controller: ControllerStatus,
    pub speakers: SpeakersStatus,
    pub pools: Vec<PoolStatus>,
    pub peers: Vec<PeerStatus>,
    pub services: ServiceCounts,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ControllerStatus {
    /// The Lease's holder while its renewal is recent.
    pub leader: Option<String>,
    /// Seconds since the Lease was last renewed.
    pub renewed_seconds_ago: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpeakersStatus {
    /// Nodes the DaemonSet should run a speaker on.
    pub expected: i32,
    pub ready: i32,
    pub nodes: Vec<SpeakerNode>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpeakerNode {
    pub node: String,
    pub pod: String,
    pub ready: bool,
    /// The gossip members this speaker sees live, itself included.
    pub members: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolStatus {
    pub name: String,
    pub ipv4: Option<Usage>,
    pub ipv6: Option<Usage>,
    pub ready: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Usage {
    pub capacity: i64,
    pub assigned: i64,
}

impl Usage {
    fn percent(self) -> Option<i64> {
        (self.capacity > 0).then(|| self.assigned * 100 / self.capacity)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerStatus {
    pub name: String,
    pub ready: String,
    pub established: i32,
    pub selected: i32,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceCounts {
    pub total: usize,
    pub pending: usize,
    pub not_announced: usize,
}

/// One LoadBalancer Service, as `services` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceRow {
    pub namespace: String,
    pub name: String,
    pub addresses: Vec<String>,
    pub pool: Option<String>,
    /// `Pending`, the condition's reason (`Announced`, `Advertised`, `NoReadyEndpoint`, …), or
    /// `NotOurs` for a Service of another load balancer class.
    pub state: String,
    /// Nodes answering ARP/NDP for its addresses or advertising them over BGP.
    pub announced_by: Vec<String>,
    pub interfaces: Vec<String>,
    /// When the condition last changed.
    pub since: Option<String>,
    pub last_takeover: Option<Takeover>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Takeover {
    pub at: String,
    pub message: String,
}

/// `explain`'s answer: plain sentences, the verdict first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Explanation {
    pub service: String,
    /// It has its addresses and a node announces them.
    pub served: bool,
    pub verdict: String,
    pub details: Vec<String>,
    pub fixes: Vec<String>,
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn service_conditions(svc: &Service) -> &[Condition] {
    svc.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

/// Whether ferrolb serves this LoadBalancer Service (no class, or ferrolb's).
fn ours(view: &model::Service) -> bool {
    view.load_balancer
        && view
            .class
            .as_deref()
            .is_none_or(|c| c == LOAD_BALANCER_CLASS)
}

/// Nodes and interfaces named by an `ferrolb.io/Announced` condition: the layer-2 announcer
/// and the BGP advertisers, and the announcer's interfaces, each sorted once.
pub fn announcers(reason: &str, message: &str) -> (Vec<String>, Vec<String>) {
    let Some((read, writer)) = Announcement::read(reason, message) else {
        return Default::default();
    };
    let mut nodes: Vec<String> = read.over_bgp.into_iter().flat_map(|(_, n)| n).collect();
    if reason == model::announcement::ANNOUNCED {
        nodes.push(writer);
    }
    let mut interfaces: Vec<String> = read.on_link.into_iter().flat_map(|(_, i)| i).collect();
    for names in [&mut nodes, &mut interfaces] {
        names.sort();
        names.dedup();
    }
    (nodes, interfaces)
}

fn about<'a>(events: &'a [Event], kind: &str, namespace: &str, name: &str) -> Vec<&'a Event> {
    let mut of: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
                && (kind != "Service" || e.involved_object.namespace.as_deref() == Some(namespace))
        })
        .collect();
    of.sort_by_key(|e| event_time(e));
    of
}

/// When the Event last happened.
fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The takeover an `Announcing` Event reports, if it reports one.
fn takeover(e: &Event) -> Option<Takeover> {
    let message = e.message.as_deref()?;
    (e.reason.as_deref() == Some("Announcing") && message.contains("taking over")).then(|| {
        Takeover {
            at: event_time(e).map(|t| t.to_string()).unwrap_or_default(),
            message: message.to_string(),
        }
    })
}

pub fn services(snapshot: &Snapshot, namespace: Option<&str>) -> Vec<ServiceRow> {
    // The last takeover of each Service, in one pass over the Events (not one per Service).
    let mut takeovers: BTreeMap<(&str, &str), (Option<Timestamp>, Takeover)> = BTreeMap::new();
    for e in &snapshot.events {
        let object = &e.involved_object;
        let (Some("Service"), Some(ns), Some(name)) = (
            object.kind.as_deref(),
            object.namespace.as_deref(),
            object.name.as_deref(),
        ) else {
            continue;
        };
        if let Some(t) = takeover(e) {
            let at = event_time(e);
            let newer = takeovers
                .get(&(ns, name))
                .is_none_or(|(seen, _)| at >= *seen);
            if newer {
                takeovers.insert((ns, name), (at, t));
            }
        }
    }
    let mut rows: Vec<ServiceRow> = snapshot
        .services
        .iter()
        .filter(|svc| namespace.is_none_or(|ns| svc.metadata.namespace.as_deref() == Some(ns)))
        .map(|svc| (svc, crds::read::service(svc)))
        .filter(|(_, view)| view.load_balancer)
        .map(|(svc, view)| {
            let key = &view.key;
            let announced = condition(service_conditions(svc), ANNOUNCED_CONDITION);
            let (announced_by, interfaces) = announced
                .map(|c| announcers(&c.reason, &c.message))
                .unwrap_or_default();
            let state = if !ours(&view) {
                "NotOurs".to_string()
            } else if view.ingress.is_empty() {
                "Pending".to_string()
            } else {
                announced.map_or("Unreported".to_string(), |c| c.reason.clone())
            };
            ServiceRow {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                addresses: view.ingress.iter().map(ToString::to_string).collect(),
                pool: view.allocated_from.clone(),
                state,
                announced_by,
                interfaces,
                since: announced.map(|c| c.last_transition_time.0.to_string()),
                last_takeover: takeovers
                    .get(&(key.namespace.as_str(), key.name.as_str()))
                    .map(|(_, t)| t.clone()),
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

fn usage(u: Option<&crds::pool::FamilyUsage>) -> Option<Usage> {
    u.map(|u| Usage {
        capacity: u.capacity,
        assigned: u.assigned,
    })
}

pub fn status(snapshot: &Snapshot) -> Status {
    let now = snapshot.now.unwrap_or_else(Timestamp::now);
    let mut problems = vec![];

    let lease = snapshot.lease.as_ref().and_then(|l| l.spec.as_ref());
    let renewed_seconds_ago = lease
        .and_then(|l| l.renew_time.as_ref())
        .map(|t| now.as_second() - t.0.as_second());
    let duration = lease
        .and_then(|l| l.lease_duration_seconds)
        .map_or(15, i64::from);
    let leader = lease
        .and_then(|l| l.holder_identity.clone())
        .filter(|h| !h.is_empty())
        .filter(|_| renewed_seconds_ago.is_some_and(|ago| ago <= duration));
    if leader.is_none() {
        problems.push(match renewed_seconds_ago {
            Some(ago) => format!(
                "no controller leads: the Lease {}/ferrolb-controller was last renewed {ago} s ago (it lasts {duration} s); no Service gets an address",
                snapshot.namespace
            ),
            None => format!(
                "no controller leads: no Lease {}/ferrolb-controller; is the controller running?",
                snapshot.namespace
            ),
        });
    }

    let ds_status = snapshot.daemonset.as_ref().and_then(|d| d.status.as_ref());
    let expected = ds_status.map_or(0, |s| s.desired_number_scheduled);
    let ready = ds_status.map_or(0, |s| s.number_ready);
    let mut nodes: Vec<SpeakerNode> = snapshot
        .speaker_pods
        .iter()
        .map(|pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            SpeakerNode {
                node: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
                members: snapshot.members.get(&name).copied(),
                pod: name,
                ready,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    if snapshot.daemonset.is_none() {
        problems.push(format!(
            "no speaker DaemonSet in namespace {}: no address is announced",
            snapshot.namespace
        ));
    } else if ready < expected {
        let down: Vec<&str> = nodes
            .iter()
            .filter(|n| !n.ready)
            .map(|n| n.node.as_str())
            .collect();
        problems.push(format!(
            "{ready} of {expected} speakers are ready{}",
            if down.is_empty() {
                String::new()
            } else {
                format!("; not ready on {}", down.join(", "))
            }
        ));
    }
    let live = nodes.iter().filter(|n| n.ready).count() as u64;
    for n in nodes.iter().filter(|n| n.ready) {
        if let Some(m) = n.members.filter(|m| *m < live) {
            problems.push(format!(
                "the speaker on {} sees {m} live members of {live} ready speakers: its gossip does not reach the others (port 9652/UDP between nodes?)",
                n.node
            ));
        }
    }

    let mut pools: Vec<PoolStatus> = snapshot
        .pools
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let ready = condition(&status.conditions, "Ready");
            PoolStatus {
                name: p.metadata.name.clone().unwrap_or_default(),
                ipv4: usage(status.ipv4.as_ref()),
                ipv6: usage(status.ipv6.as_ref()),
                ready: ready.map_or("Unknown".into(), |c| c.status.clone()),
                reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
                message: ready.map(|c| c.message.clone()).unwrap_or_default(),
            }
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    for p in &pools {
        if p.ready != "True" {
            problems.push(format!("pool {} is not Ready: {}", p.name, p.message));
        }
        for (family, u) in [("IPv4", p.ipv4), ("IPv6", p.ipv6)] {
            if let Some(u) = u
                && let Some(percent) = u.percent().filter(|pc| *pc >= POOL_WARN_PERCENT)
            {
                problems.push(format!(
                    "pool {} has {percent} % of its {family} addresses in use ({} of {})",
                    p.name, u.assigned, u.capacity
                ));
            }
        }
    }

    let mut peers: Vec<PeerStatus> = snapshot
        .peers
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let ready = condition(&status.conditions, "Ready");
            PeerStatus {
                name: p.metadata.name.clone().unwrap_or_default(),
                ready: ready.map_or("Unknown".into(), |c| c.status.clone()),
                established: status.established.unwrap_or(0),
                selected: status.selected.unwrap_or(0),
                message: ready.map(|c| c.message.clone()).unwrap_or_default(),
            }
        })
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    for p in peers.iter().filter(|p| p.ready != "True") {
        problems.push(format!("BGP peer {} is not Ready: {}", p.name, p.message));
    }

    let rows = services(snapshot, None);
    let ours: Vec<&ServiceRow> = rows.iter().filter(|r| r.state != "NotOurs").collect();
    let pending: Vec<String> = ours
        .iter()
        .filter(|r| r.state == "Pending")
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect();
    let not_announced: Vec<String> = ours
        .iter()
        .filter(|r| !matches!(r.state.as_str(), "Pending" | "Announced" | "Advertised"))
        .map(|r| format!("{}/{} ({})", r.namespace, r.name, r.state))
        .collect();
    if !pending.is_empty() {
        problems.push(format!(
            "{} Service(s) have no address: {} (kubectl ferrolb explain svc/NAME -n NAMESPACE)",
            pending.len(),
            shorten(&pending)
        ));
    }
    if !not_announced.is_empty() {
        problems.push(format!(
            "{} Service(s) have an address no node announces: {}",
            not_announced.len(),
            shorten(&not_announced)
        ));
    }
    Status {
        problems,
        controller: ControllerStatus {
            leader,
            renewed_seconds_ago,
        },
        speakers: SpeakersStatus {
            expected,
            ready,
            nodes,
        },
        pools,
        peers,
        services: ServiceCounts {
            total: ours.len(),
            pending: pending.len(),
            not_announced: not_announced.len(),
        },
    }
}

/// The first few of a list, and how many more.
fn shorten(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        let _ = write!(text, " and {} more", items.len() - SHOWN);
    }
    text
}

/// Why `namespace/name` has no address or is not announced; `None` when there is no such
/// Service in the snapshot.
pub fn explain(snapshot: &Snapshot, namespace: &str, name: &str) -> Option<Explanation> {
    let svc = snapshot.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata.name.as_deref() == Some(name)
    })?;
    let view = crds::read::service(svc);
    let events = about(&snapshot.events, "Service", namespace, name);
    let mut details = vec![];
    let mut fixes = vec![];
    let latest = |reason: &str| {
        events
            .iter()
            .rev()
            .find(|e| e.reason.as_deref() == Some(reason))
            .and_then(|e| e.message.clone())
    };
    let service = format!("{namespace}/{name}");
    if !view.load_balancer {
        return Some(Explanation {
            service,
            served: false,
            verdict: "it is not of type LoadBalancer, so ferrolb leaves it alone".into(),
            details,
            fixes: vec!["set spec.type: LoadBalancer".into()],
        });
    }
    if !ours(&view) {
        return Some(Explanation {
            service,
            served: false,
            verdict: format!(
                "its loadBalancerClass is {}, not {LOAD_BALANCER_CLASS}: another load balancer serves it",
                view.class.as_deref().unwrap_or_default()
            ),
            details,
            fixes: vec![format!(
                "to have ferrolb serve it, create it with spec.loadBalancerClass: {LOAD_BALANCER_CLASS} (the field cannot be changed)"
            )],
        });
    }
    match &view.requested {
        Ok(ips) if !ips.is_empty() => details.push(format!(
            "it asks for {}",
            ips.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(_) => {}
        Err(e) => {
            details.push(format!("its address request cannot be read: {e}"));
            fixes.push("correct the annotation ferrolb.io/load-balancer-ips".into());
        }
    }
    if let Some(pool) = &view.pool {
        details.push(format!("it asks for pool {pool}"));
        if !snapshot
            .pools
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(pool.as_str()))
        {
            details.push(format!("there is no IPAddressPool named {pool}"));
            fixes.push(format!(
                "create pool {pool}, or name an existing one in ferrolb.io/address-pool"
            ));
        }
    }
    for f in &view.foreign_annotations {
        details.push(format!("it uses MetalLB's {}, read as {}", f.found, f.ours));
    }

    let verdict;
    let mut served = false;
    if view.ingress.is_empty() {
        let overview = status(snapshot);
        match latest("AllocationFailed") {
            Some(why) => {
                verdict = format!("it has no address: {why}");
                let reason = why.split(':').next().unwrap_or_default();
                fixes.extend(allocation_fixes(reason));
            }
            None => {
                verdict =
                    "it has no address yet, and the controller has said nothing about it".into();
                if overview.controller.leader.is_none() {
                    details.push("no controller leads right now".into());
                    fixes.push(format!(
                        "check the controller: kubectl -n {} logs deploy/ferrolb-controller",
                        snapshot.namespace
                    ));
                }
            }
        }
        if snapshot.pools.is_empty() {
            details.push("there is no IPAddressPool at all".into());
            fixes.push("create an IPAddressPool (see deploy/examples/pool.yaml)".into());
        }
        for p in &overview.pools {
            let used: Vec<String> = [("IPv4", p.ipv4), ("IPv6", p.ipv6)]
                .into_iter()
                .filter_map(|(f, u)| u.map(|u| format!("{f} {}/{}", u.assigned, u.capacity)))
                .collect();
            details.push(format!(
                "pool {}: {}, Ready {}{}",
                p.name,
                if used.is_empty() {
                    "no addresses".to_string()
                } else {
                    used.join(", ")
                },
                p.ready,
                if p.ready == "True" {
                    String::new()
                } else {
                    format!(" ({})", p.message)
                }
            ));
        }
    } else {
        let addresses = view
            .ingress
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let from = view
            .allocated_from
            .as_deref()
            .map(|p| format!(" from pool {p}"))
            .unwrap_or_default();
        match condition(service_conditions(svc), ANNOUNCED_CONDITION) {
            None => {
                verdict =
                    format!("it has {addresses}{from}, and no speaker has reported on it yet");
                if let Some(why) = latest("NotAdvertised") {
                    details.push(why);
                    fixes.push(
                        "create an L2Advertisement or BGPAdvertisement that selects the pool"
                            .into(),
                    );
                }
            }
            Some(c) if c.status == "True" => {
                served = true;
                verdict = format!("it has {addresses}{from}, and {}", c.message);
                if c.reason == "TwoOwners" {
                    fixes.push("two speakers answer for one address: check that the gossip port (9652/UDP) is open between these nodes".into());
                }
            }
            Some(c) => {
                verdict = format!(
                    "it has {addresses}{from}, but it is not announced: {}",
                    c.message
                );
                fixes.extend(announce_fixes(&c.reason));
            }
        }
        if let Some(t) = events.iter().rev().find_map(|e| takeover(e)) {
            details.push(format!("last takeover at {}: {}", t.at, t.message));
        }
    }
    for e in events
        .iter()
        .rev()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .take(3)
    {
        details.push(format!(
            "Warning {}: {}",
            e.reason.as_deref().unwrap_or_default(),
            e.message.as_deref().unwrap_or_default()
        ));
    }
    details.dedup();
    fixes.dedup();
    Some(Explanation {
        service,
        served,
        verdict,
        details,
        fixes,
    })
}

/// What to do about an allocation failure, by its reason (allocator's `Error::reason`).
fn allocation_fixes(reason: &str) -> Vec<String> {
    let fix = match reason {
        "PoolExhausted" | "PoolsExhausted" => {
            "add addresses to the pool (a new entry in spec.addresses), or free some by deleting Services"
        }
        "NoPoolAvailable" => {
            "create a pool whose serviceAllocation selects this Service's namespace and labels, or name one in ferrolb.io/address-pool"
        }
        "NotInAnyPool" | "NotInPool" => "ask for an address inside a pool, or add it to one",
        "AddressTaken" | "SharingRefused" => {
            "ask for another address, or give both Services the same ferrolb.io/allow-shared-ip key (and compatible ports)"
        }
        "FamilyNotInPool" | "DualStackUnavailable" => {
            "add addresses of the missing family to the pool, or change ipFamilyPolicy"
        }
        "PoolOverlapped" => "make the pools' addresses disjoint",
        "InvalidRequest" => "correct the Service's ferrolb.io annotations",
        _ => return vec![],
    };
    vec![fix.to_string()]
}

/// What to do when an address is not announced, by the condition's reason.
fn announce_fixes(reason: &str) -> Vec<String> {
    let fix = match reason {
        "NoReadyEndpoint" => {
            "externalTrafficPolicy: Local announces only from nodes with a ready endpoint: check the pods (kubectl get endpointslices)"
        }
        "AllNodesExcluded" | "NoSelectedNode" => {
            "the advertisements' nodeSelectors, node exclusions (node.kubernetes.io/exclude-from-external-load-balancers) or cordons leave no node: check them"
        }
        "NoLiveSpeaker" => "no speaker is running on an eligible node: kubectl ferrolb status",
        CONFLICT_REASON => {
            "another host on the LAN answers for this address: remove it from that host, or take the address out of the pool"
        }
        "NotAdvertised" => "create an L2Advertisement or BGPAdvertisement that selects the pool",
        _ => return vec![],
    };
    vec![fix.to_string()]
}

/// `status` as the table kubectl users expect: problems first.
pub fn render_status(s: &Status) -> String {
    let mut out = String::new();
    if s.problems.is_empty() {
        out.push_str("No problems found.\n");
    } else {
        out.push_str("PROBLEMS\n");
        for p in &s.problems {
            let _ = writeln!(out, "  ! {p}");
        }
    }
    let _ = writeln!(
        out,
        "\nCONTROLLER  leader: {}{}",
        s.controller.leader.as_deref().unwrap_or("none"),
        s.controller
            .renewed_seconds_ago
            .map(|a| format!(" (renewed {a} s ago)"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "\nSPEAKERS  {} of {} ready",
        s.speakers.ready, s.speakers.expected
    );
    let mut table = vec![vec![
        "NODE".to_string(),
        "POD".into(),
        "READY".into(),
        "MEMBERS".into(),
    ]];
    for n in &s.speakers.nodes {
        table.push(vec![
            n.node.clone(),
            n.pod.clone(),
            n.ready.to_string(),
            n.members.map_or("?".into(), |m| m.to_string()),
        ]);
    }
    out.push_str(&columns(&table));
    let _ = writeln!(out, "\nPOOLS");
    let mut table = vec![vec![
        "NAME".to_string(),
        "IPV4 USED".into(),
        "IPV6 USED".into(),
        "READY".into(),
        "REASON".into(),
    ]];
    let used = |u: Option<Usage>| {
        u.map_or("-".to_string(), |u| {
            format!(
                "{}/{}{}",
                u.assigned,
                u.capacity,
                u.percent().map(|p| format!(" ({p}%)")).unwrap_or_default()
            )
        })
    };
    for p in &s.pools {
        table.push(vec![
            p.name.clone(),
            used(p.ipv4),
            used(p.ipv6),
            p.ready.clone(),
            p.reason.clone(),
        ]);
    }
    out.push_str(&columns(&table));
    if !s.peers.is_empty() {
        let _ = writeln!(out, "\nBGP PEERS");
        let mut table = vec![vec![
            "NAME".to_string(),
            "ESTABLISHED".into(),
            "READY".into(),
        ]];
        for p in &s.peers {
            table.push(vec![
                p.name.clone(),
                format!("{}/{}", p.established, p.selected),
                p.ready.clone(),
            ]);
        }
        out.push_str(&columns(&table));
    }
    let _ = writeln!(
        out,
        "\nSERVICES  {} LoadBalancer, {} without an address, {} not announced",
        s.services.total, s.services.pending, s.services.not_announced
    );
    out
}

pub fn render_services(rows: &[ServiceRow], all_namespaces: bool, now: Timestamp) -> String {
    let mut header = vec![];
    if all_namespaces {
        header.push("NAMESPACE".to_string());
    }
    header.extend(
        [
            "NAME",
            "ADDRESSES",
            "POOL",
            "STATE",
            "ANNOUNCED BY",
            "INTERFACE",
            "SINCE",
            "LAST TAKEOVER",
        ]
        .map(String::from),
    );
    let mut table = vec![header];
    let dash = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    for r in rows {
        let mut row = vec![];
        if all_namespaces {
            row.push(r.namespace.clone());
        }
        row.extend([
            r.name.clone(),
            dash(&r.addresses),
            r.pool.clone().unwrap_or_else(|| "-".into()),
            r.state.clone(),
            dash(&r.announced_by),
            dash(&r.interfaces),
            r.since.as_deref().map_or("-".into(), |t| age(t, now)),
            r.last_takeover
                .as_ref()
                .map_or("-".into(), |t| format!("{} ago", age(&t.at, now))),
        ]);
        table.push(row);
    }
    columns(&table)
}

pub fn render_explanation(e: &Explanation) -> String {
    let mut out = format!("Service {}: {}.\n", e.service, e.verdict);
    for d in &e.details {
        let _ = writeln!(out, "  - {d}");
    }
    for f in &e.fixes {
        let _ = writeln!(out, "Fix: {f}.");
    }
    out
}

/// kubectl's age format: 45s, 12m, 5h, 3d.
fn age(rfc3339: &str, now: Timestamp) -> String {
    let Ok(then) = rfc3339.parse::<Timestamp>() else {
        return "?".into();
    };
    let s = (now.as_second() - then.as_second()).max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Left-aligned columns, three spaces apart, as kubectl prints them.
fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ObjectReference, ServiceSpec, ServiceStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn service(name: &str, ingress: &[&str], announced: Option<(&str, &str, &str)>) -> Service {
        use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus};
        Service {
            metadata: ObjectMeta {
                namespace: Some("web".into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                annotations: Some(
                    [(
                        "ferrolb.io/ip-allocated-from-pool".to_string(),
                        "lan".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ingress
                            .iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                conditions: announced.map(|(status, reason, message)| {
                    vec![Condition {
                        type_: ANNOUNCED_CONDITION.into(),
                        status: status.into(),
                        reason: reason.into(),
                        message: message.into(),
                        last_transition_time: Time(at("2026-12-02T10:00:00Z")),
                        observed_generation: None,
                    }]
                }),
            }),
        }
    }

    fn event(name: &str, type_: &str, reason: &str, message: &str, time: &str) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{reason}")),
                namespace: Some("web".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Service".into()),
                namespace: Some("web".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_timestamp: Some(Time(at(time))),
            ..Default::default()
        }
    }

    fn pool(name: &str, capacity: i64, assigned: i64, ready: bool) -> IPAddressPool {
        let mut p = IPAddressPool::new(
            name,
            crds::IPAddressPoolSpec {
                addresses: vec![],
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        p.status = Some(crds::IPAddressPoolStatus {
            ipv4: Some(crds::pool::FamilyUsage {
                capacity,
                assigned,
                available: capacity - assigned,
            }),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: if ready {
                    "Allocating"
                } else {
                    "InvalidAddresses"
                }
                .into(),
                message: if ready {
                    "the pool hands out addresses"
                } else {
                    "entry 198.51.100.0/33 is not an address range"
                }
                .into(),
                last_transition_time: Time(at("2026-12-02T09:00:00Z")),
                observed_generation: None,
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn announcers_are_read_from_each_message_the_speaker_writes() {
        // The formats of speaker::report::Wanted::{announced, advertised}.
        let cases = [
            (
                "Announced",
                "198.51.100.1 on eth0 announced from node node-2",
                vec!["node-2"],
                vec!["eth0"],
            ),
            (
                "Announced",
                "198.51.100.1 on eth0, eth1 and 2001:db8::1 on eth1 announced from node node-2",
                vec!["node-2"],
                vec!["eth0", "eth1"],
            ),
            (
                "Announced",
                "198.51.100.1 over BGP from node-1, node-3; 198.51.100.1 on eth0 announced from node node-2",
                vec!["node-1", "node-2", "node-3"],
                vec!["eth0"],
            ),
            (
                "Advertised",
                "198.51.100.1 over BGP from node-1, node-3 and 2001:db8::1 over BGP from node-1; reported by node node-1",
                vec!["node-1", "node-3"],
                vec![],
            ),
            (
                "NoReadyEndpoint",
                "198.51.100.1: no node has a ready endpoint; reported by node node-1",
                vec![],
                vec![],
            ),
        ];
        for (reason, message, nodes, interfaces) in cases {
            assert_eq!(
                announcers(reason, message),
                (
                    nodes.into_iter().map(String::from).collect(),
                    interfaces.into_iter().map(String::from).collect()
                ),
                "{message}"
            );
        }
    }

    #[test]
    fn services_show_owner_state_and_last_takeover() {
        let snapshot = Snapshot {
            services: vec![
                service(
                    "shop",
                    &["198.51.100.1"],
                    Some((
                        "True",
                        "Announced",
                        "198.51.100.1 on eth0 announced from node node-2",
                    )),
                ),
                service("queued", &[], None),
            ],
            events: vec![
                event(
                    "shop",
                    "Normal",
                    "Announcing",
                    "198.51.100.1 is announced from node node-1 on eth0",
                    "2026-12-02T10:00:00Z",
                ),
                event(
                    "shop",
                    "Normal",
                    "Announcing",
                    "198.51.100.1 is announced from node node-2 on eth0, taking over from node-1",
                    "2026-12-02T11:00:00Z",
                ),
            ],
            ..Default::default()
        };
        let rows = services(&snapshot, Some("web"));
        assert_eq!(rows.len(), 2);
        let (queued, shop) = (&rows[0], &rows[1]);
        assert_eq!(queued.state, "Pending");
        assert_eq!(shop.state, "Announced");
        assert_eq!(shop.announced_by, vec!["node-2"]);
        assert_eq!(shop.pool.as_deref(), Some("lan"));
        let takeover = shop.last_takeover.as_ref().unwrap();
        assert!(
            takeover.message.ends_with("taking over from node-1"),
            "{takeover:?}"
        );
        assert!(services(&snapshot, Some("other")).is_empty());
        let table = render_services(&rows, false, at("2026-12-02T11:05:00Z"));
        let line = table.lines().find(|l| l.starts_with("shop")).unwrap();
        for cell in [
            "198.51.100.1",
            "lan",
            "Announced",
            "node-2",
            "eth0",
            "65m",
            "5m ago",
        ] {
            assert!(line.contains(cell), "{cell} in {line}");
        }
    }

    #[test]
    fn status_lists_problems_first() {
        let healthy = Snapshot {
            now: Some(at("2026-12-02T11:00:00Z")),
            namespace: "ferrolb-system".into(),
            lease: Some(Lease {
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some("controller-abc".into()),
                    renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                        at("2026-12-02T10:59:58Z"),
                    )),
                    lease_duration_seconds: Some(15),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            daemonset: Some(DaemonSet {
                status: Some(k8s_openapi::api::apps::v1::DaemonSetStatus {
                    desired_number_scheduled: 2,
                    number_ready: 2,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            pools: vec![pool("lan", 10, 2, true)],
            ..Default::default()
        };
        let s = status(&healthy);
        assert_eq!(s.problems, Vec::<String>::new());
        assert_eq!(s.controller.leader.as_deref(), Some("controller-abc"));
        assert!(render_status(&s).starts_with("No problems found."));

        let mut sick = healthy.clone();
        sick.now = Some(at("2026-12-02T11:01:00Z"));
        sick.daemonset
            .as_mut()
            .unwrap()
            .status
            .as_mut()
            .unwrap()
            .number_ready = 1;
        sick.pools = vec![pool("lan", 10, 9, true), pool("typo", 0, 0, false)];
        sick.services = vec![service("queued", &[], None)];
        let s = status(&sick);
        assert_eq!(s.controller.leader, None);
        let text = s.problems.join("\n");
        for needle in [
            "no controller leads: the Lease ferrolb-system/ferrolb-controller was last renewed 62 s ago",
            "1 of 2 speakers are ready",
            "pool lan has 90 % of its IPv4 addresses in use (9 of 10)",
            "pool typo is not Ready: entry 198.51.100.0/33",
            "1 Service(s) have no address: web/queued",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        assert!(render_status(&s).starts_with("PROBLEMS\n  ! no controller leads"));
    }

    #[test]
    fn explain_names_the_cause_and_the_fix() {
        let mut pending = service("queued", &[], None);
        pending.metadata.annotations =
            Some([("ferrolb.io/address-pool".to_string(), "lan".to_string())].into());
        let snapshot = Snapshot {
            services: vec![
                pending,
                service(
                    "dark",
                    &["198.51.100.3"],
                    Some((
                        "False",
                        "NoReadyEndpoint",
                        "198.51.100.3: no node with a ready endpoint may announce it; reported by node node-1",
                    )),
                ),
            ],
            pools: vec![pool("lan", 10, 10, true)],
            events: vec![event(
                "queued",
                "Warning",
                "AllocationFailed",
                "PoolExhausted: pool lan has no free IPv4 address",
                "2026-12-02T10:00:00Z",
            )],
            ..Default::default()
        };
        let e = explain(&snapshot, "web", "queued").unwrap();
        assert!(!e.served);
        assert_eq!(
            e.verdict,
            "it has no address: PoolExhausted: pool lan has no free IPv4 address"
        );
        assert!(
            e.details.contains(&"it asks for pool lan".to_string()),
            "{e:?}"
        );
        assert!(
            e.details
                .contains(&"pool lan: IPv4 10/10, Ready True".to_string()),
            "{e:?}"
        );
        assert!(e.fixes[0].starts_with("add addresses to the pool"), "{e:?}");

        let e = explain(&snapshot, "web", "dark").unwrap();
        assert!(!e.served);
        assert!(
            e.verdict.starts_with(
                "it has 198.51.100.3 from pool lan, but it is not announced: 198.51.100.3: no node"
            ),
            "{e:?}"
        );
        assert!(e.fixes[0].contains("externalTrafficPolicy: Local"), "{e:?}");
        assert!(render_explanation(&e).contains("\nFix: externalTrafficPolicy"));
        assert_eq!(explain(&snapshot, "web", "missing"), None);
    }
}
