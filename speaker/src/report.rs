//! What the speaker tells users: the Service condition `ferrolb.io/Announced` and Events.
//!
//! One speaker reports on each Service: its addresses' owner, or, when nobody owns them, the live
//! speaker whose node name sorts first. Writes go through a task of their own so that an API
//! server that is slow or gone never delays an election or a takeover. A condition is checked
//! against the Service when it is wanted anew and whenever the Service changes, and rewritten
//! when it differs; a failed write is retried every few seconds, so it comes back right after
//! an outage.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::events::{EventType, Note, Queue, Recorder};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use tokio::sync::Notify;

use crate::view::{Announced, Stores};
use model::ServiceKey;
use model::announcement::Announcement;
use speaker_core::decide::NoOwner;
use speaker_core::election::NodeName;
use speaker_core::mac::MacAddr;

/// The Service condition the speaker keeps current.
pub const CONDITION: &str = model::service::ANNOUNCED_CONDITION;
/// The server-side apply field manager of that condition.
pub const MANAGER: &str = "ferrolb-speaker";

/// The condition this speaker wants a Service to carry.
///
/// Its message always ends with `node <this node>`: the admission policy in
/// `deploy/base/admission-speaker.yaml` lets a speaker write the condition only in the name of
/// the node its token is bound to, and reads that name there ([`names_writer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub announced: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Wanted {
    /// `node` announces the Service's addresses, in the wording `kubectl ferrolb` reads back.
    pub fn announced(announcement: &Announcement, node: &NodeName) -> Wanted {
        Wanted {
            announced: true,
            reason: model::announcement::ANNOUNCED,
            message: announcement.announced_by(node.as_str()),
        }
    }

    /// `node` found a host that is not a speaker answering for `ip`.
    pub fn conflict(ip: IpAddr, interface: &str, mac: &MacAddr, node: &NodeName) -> Wanted {
        Wanted {
            announced: false,
            reason: model::service::CONFLICT_REASON,
            message: format!(
                "{ip} is answered on {interface} by {mac}, a host that is not a ferrolb speaker, as seen from node {}",
                node.as_str()
            ),
        }
    }

    /// `node` owns `ip`, and another speaker (`other`, by its MAC record, and `mac`) answers
    /// for it too.
    pub fn two_owners(ip: IpAddr, other: Option<&str>, mac: &MacAddr, node: &NodeName) -> Wanted {
        Wanted {
            announced: true,
            reason: "TwoOwners",
            message: format!(
                "{ip} is also answered by node {} ({mac}): their gossip does not reach each other; announced from node {}",
                other.unwrap_or("unknown"),
                node.as_str()
            ),
        }
    }

    /// Nodes advertise the Service's addresses over BGP; `node`, the first of them, reports it.
    pub fn advertised(announcement: &Announcement, node: &NodeName) -> Wanted {
        Wanted {
            announced: true,
            reason: model::announcement::ADVERTISED,
            message: announcement.advertised_by(node.as_str()),
        }
    }

    /// No node advertises `ip` over BGP; `node` reports why.
    pub fn unadvertised(ip: IpAddr, why: NoOwner, node: &NodeName) -> Wanted {
        let explain = match why {
            NoOwner::NoSelectedNode => {
                "the BGPAdvertisements' nodeSelectors select no node with a running speaker"
            }
            other => other.explain(),
        };
        Wanted {
            announced: false,
            reason: why.reason(),
            message: format!(
                "{ip} is advertised over BGP by no node: {explain}; reported by node {}",
                node.as_str()
            ),
        }
    }

    /// No node may announce `ip`; `node` reports why.
    pub fn unowned(ip: IpAddr, why: NoOwner, node: &NodeName) -> Wanted {
        Wanted {
            announced: false,
            reason: why.reason(),
            message: format!(
                "{ip}: {}; reported by node {}",
                why.explain(),
                node.as_str()
            ),
        }
    }
}

/// Whether a condition message is written in `node`'s name: the admission policy's rule
/// (`message.endsWith(' node ' + node)`). Node names hold no spaces, so the last word is the
/// whole name.
pub fn names_writer(message: &str, node: &str) -> bool {
    model::announcement::writer(message) == Some(node)
}

/// An Event about a Service.
#[derive(Debug, Clone)]
pub struct Notice {
    pub service: ServiceKey,
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// Handles to the reporting tasks.
#[derive(Clone)]
pub struct Reports {
    wants: Arc<Mutex<Wants>>,
    wake: Arc<Notify>,
    events: Queue,
    /// Events dropped because the queue was full.
    dropped: Counter,
}

/// Events waiting to be published beyond which new ones are dropped (their text is in the log
/// anyway). The first of 100 speakers starting into 10,000 Services, answering for thousands
/// of addresses while alone, queued 7,900 Events on a starved API server (263 of its
/// publishes timed out at 5 s): what was published was minutes stale, and the queue had no
/// bound.
const EVENTS_WAITING: usize = 1000;

/// The conditions wanted, shared by the loop and the writer: one copy, however many Services.
#[derive(Default)]
struct Wants {
    wanted: BTreeMap<ServiceKey, Wanted>,
    /// Services to check against the API server's (the watch cache's) copy.
    check: BTreeSet<ServiceKey>,
}

impl Reports {
    /// Starts the writers; `dropped` counts the Events dropped because too many waited.
    pub fn start(client: Client, stores: Stores, node: &str, dropped: Counter) -> Reports {
        let reports = Reports {
            wants: Arc::default(),
            wake: Arc::default(),
            events: Queue::start(
                Recorder::new(client.clone(), MANAGER, node),
                EVENTS_WAITING,
                || true,
            ),
            dropped,
        };
        tokio::spawn(write_conditions(
            client,
            stores,
            reports.wants.clone(),
            reports.wake.clone(),
        ));
        reports
    }

    /// The condition this speaker wants on a Service (`None`: it leaves the Service's
    /// condition to another speaker).
    pub fn want(&self, service: &ServiceKey, want: Option<Wanted>) {
        let mut wants = self.wants.lock().expect("not poisoned");
        let Some(want) = want else {
            // Nothing to write: the condition is left to whoever reports on the Service now.
            wants.wanted.remove(service);
            return;
        };
        if wants.wanted.get(service) != Some(&want) {
            wants.wanted.insert(service.clone(), want);
            wants.check.insert(service.clone());
            drop(wants);
            self.wake.notify_one();
        }
    }

    /// The Service changed (someone may have overwritten the condition): checked again if
    /// this speaker wants a condition on it.
    pub fn recheck(&self, service: &ServiceKey) {
        let mut wants = self.wants.lock().expect("not poisoned");
        if wants.wanted.contains_key(service) && wants.check.insert(service.clone()) {
            drop(wants);
            self.wake.notify_one();
        }
    }

    /// Logs `notice` and queues its Event; never waits (the loop calling it elects and
    /// announces).
    pub fn notice(&self, notice: Notice) {
        tracing::info!(service = %notice.service, reason = notice.reason, "{}", notice.note);
        let (note, regarding) = event_of(notice);
        if !self.events.offer(note, regarding) {
            let dropped = self.dropped.inc() + 1;
            if dropped == 1 || dropped.is_multiple_of(1000) {
                tracing::warn!(
                    dropped,
                    "Events dropped: they come faster than the API server takes them (each is in this log)"
                );
            }
        }
    }
}

/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Every wanted condition is checked again this often, whatever the events said.
const SWEEP: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

async fn write_conditions(
    client: Client,
    stores: Stores,
    wants: Arc<Mutex<Wants>>,
    wake: Arc<Notify>,
) {
    let mut failed: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut next_sweep = tokio::time::Instant::now() + SWEEP;
    loop {
        let batch: Vec<(ServiceKey, Wanted)> = {
            let mut wants = wants.lock().expect("not poisoned");
            let check = std::mem::take(&mut wants.check);
            check
                .into_iter()
                .filter_map(|key| wants.wanted.get(&key).map(|w| (key, w.clone())))
                .collect()
        };
        for (service, want) in batch {
            if !write_condition(&client, &stores, &service, &want).await {
                failed.insert(service);
            }
        }
        let wait = if failed.is_empty() {
            next_sweep.saturating_duration_since(tokio::time::Instant::now())
        } else {
            RETRY
        };
        if tokio::time::timeout(wait, wake.notified()).await.is_err() {
            let mut wants = wants.lock().expect("not poisoned");
            let mut again = std::mem::take(&mut failed);
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep = tokio::time::Instant::now() + SWEEP;
                again.extend(wants.wanted.keys().cloned());
            }
            wants.check.extend(again);
        }
    }
}

/// Writes the condition if the Service's differs; whether it is as wanted now (a Service not
/// in the cache yet is checked again when it arrives).
async fn write_condition(
    client: &Client,
    stores: &Stores,
    service: &ServiceKey,
    want: &Wanted,
) -> bool {
    let Some(svc) = stores.service(service) else {
        return true;
    };
    let existing = svc.announced.as_ref();
    if existing.is_some_and(|c| same(c, want)) {
        return true;
    }
    let transition = match existing {
        Some(c) if c.status == want.announced => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let patch = condition_patch(service, want, transition, svc.generation);
    let api = Api::<Service>::namespaced(client.clone(), &service.namespace);
    let params = PatchParams::apply(MANAGER).force();
    match tokio::time::timeout(
        WRITE_TIMEOUT,
        api.patch_status(&service.name, &params, &Patch::Apply(&patch)),
    )
    .await
    {
        Ok(Ok(_)) => {
            tracing::debug!(%service, "condition written");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(%service, "cannot write the condition: {e}");
            false
        }
        Err(_) => {
            tracing::warn!(%service, "cannot write the condition: timed out");
            false
        }
    }
}

/// The server-side apply patch (field manager [`MANAGER`], forced) that sets a Service's
/// condition: the condition and nothing else, which is all the admission policy lets the
/// speaker change.
pub fn condition_patch(
    service: &ServiceKey,
    want: &Wanted,
    transition: Time,
    generation: Option<i64>,
) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service.name, "namespace": service.namespace},
        "status": {"conditions": [{
            "type": CONDITION,
            "status": if want.announced { "True" } else { "False" },
            "reason": want.reason,
            "message": want.message,
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }]},
    })
}

fn same(existing: &Announced, want: &Wanted) -> bool {
    existing.status == want.announced
        && existing.digest == Announced::digest(want.reason, &want.message)
}

/// The Event a notice is published as.
fn event_of(notice: Notice) -> (Note, ObjectReference) {
    // The UID ties the Event to this Service, not a later one of the same name.
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some(notice.service.name.clone()),
        namespace: Some(notice.service.namespace.clone()),
        uid: (!notice.service.uid.is_empty()).then(|| notice.service.uid.clone()),
        ..ObjectReference::default()
    };
    let note = Note {
        type_: if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: notice.reason.into(),
        action: "Announce".into(),
        note: notice.note,
    };
    (note, regarding)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Service as the API server has it after `want` was written with its patch.
    fn written(want: &Wanted) -> crate::view::ServiceRecord {
        let key = ServiceKey::new("shop", "web", "u1");
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut patch = condition_patch(&key, want, now, Some(1));
        patch["metadata"]["uid"] = json!("u1");
        patch["spec"] = json!({"type": "LoadBalancer"});
        let svc: Service = serde_json::from_value(patch).unwrap();
        let classes = model::ClassPolicy {
            handle_unclassed: true,
        };
        crate::view::ServiceRecord::of(&svc, classes, &crate::view::Names::default()).expect("ours")
    }

    /// 198.51.100.200 answered on `link`.
    fn on(link: &str) -> Announcement {
        Announcement {
            over_bgp: vec![],
            on_link: vec![("198.51.100.200".parse().unwrap(), vec![link.to_string()])],
        }
    }

    #[test]
    fn a_written_condition_reads_back_as_the_same_and_any_change_as_different() {
        let me = NodeName::new("node-2");
        let want = Wanted::announced(&on("eth0"), &me);
        let record = written(&want);
        let existing = record.announced.as_ref().unwrap();
        assert!(same(existing, &want));
        assert_eq!(record.announced_by(), Some("node-2"));

        let elsewhere = Wanted::announced(&on("eth1"), &me);
        assert!(!same(existing, &elsewhere), "another message");
        let other_reason = Wanted {
            reason: "TwoOwners",
            ..want.clone()
        };
        assert!(!same(existing, &other_reason), "another reason");
        let unannounced = Wanted {
            announced: false,
            ..want.clone()
        };
        assert!(!same(existing, &unannounced), "another status");

        let ip: IpAddr = "198.51.100.200".parse().unwrap();
        let unowned = written(&Wanted::unowned(ip, NoOwner::NoLiveSpeaker, &me));
        assert!(same(
            unowned.announced.as_ref().unwrap(),
            &Wanted::unowned(ip, NoOwner::NoLiveSpeaker, &me)
        ));
        assert_eq!(
            unowned.announced_by(),
            None,
            "a False condition names no announcer"
        );
    }

    #[test]
    fn every_condition_message_names_its_writer_as_the_admission_policy_reads_it() {
        let me = NodeName::new("node-2");
        let ip: IpAddr = "198.51.100.200".parse().unwrap();
        let mac: MacAddr = "02:00:5e:10:ab:ff".parse().unwrap();
        let mut wanted = vec![
            Wanted::announced(&on("eth0"), &me),
            Wanted::conflict(ip, "eth0", &mac, &me),
            Wanted::two_owners(ip, Some("node-1"), &mac, &me),
            Wanted::two_owners(ip, None, &mac, &me),
        ];
        let over_bgp = Announcement {
            over_bgp: vec![(ip, vec!["node-1".to_string()])],
            on_link: vec![],
        };
        wanted.push(Wanted::advertised(&over_bgp, &me));
        for why in [
            NoOwner::NoLiveSpeaker,
            NoOwner::NoSelectedNode,
            NoOwner::AllExcluded,
            NoOwner::NoReadyEndpoint,
        ] {
            wanted.push(Wanted::unowned(ip, why, &me));
            wanted.push(Wanted::unadvertised(ip, why, &me));
        }
        for w in &wanted {
            assert!(names_writer(&w.message, "node-2"), "{w:?}");
            assert!(!names_writer(&w.message, "node-3"), "{w:?}");
            // A name that ends the same way is another node.
            assert!(!names_writer(&w.message, "2"), "{w:?}");
            assert!(!names_writer(&w.message, "de-2"), "{w:?}");
        }
        assert_eq!(
            wanted[0].message,
            "198.51.100.200 on eth0 announced from node node-2"
        );
    }

    #[test]
    fn names_writer_is_the_last_word_after_node() {
        assert!(names_writer("x announced from node a.b-c", "a.b-c"));
        assert!(!names_writer("x announced from node a.b-c", "b-c"));
        assert!(!names_writer("x announced from nodea", "a"));
        assert!(
            !names_writer("node a", "a"),
            "the policy wants a space before `node`"
        );
        assert!(!names_writer("", ""));
    }
}
