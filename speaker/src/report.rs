//! What the speaker tells users: the Service condition `ferrolb.io/Announced` and Events.
//!
//! One speaker reports on each Service: its addresses' owner, or, when nobody owns them, the live
//! speaker whose node name sorts first. Writes go through a task of their own so that an API
//! server that is slow or gone never delays an election or a takeover; the condition is
//! re-checked against the Service every few seconds and rewritten when it differs, so it comes
//! back right after an outage.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use common::events::{EventType, Note, Recorder};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::view::Stores;
use model::ServiceKey;
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
    pub reason: String,
    pub message: String,
}

impl Wanted {
    /// `node` announces the Service's addresses (`addresses`: "198.51.100.200 on eth0 and …").
    pub fn announced(addresses: &str, node: &NodeName) -> Wanted {
        Wanted {
            announced: true,
            reason: "Announced".into(),
            message: format!("{addresses} announced from node {}", node.as_str()),
        }
    }

    /// `node` found a host that is not a speaker answering for `ip`.
    pub fn conflict(ip: IpAddr, interface: &str, mac: &MacAddr, node: &NodeName) -> Wanted {
        Wanted {
            announced: false,
            reason: model::service::CONFLICT_REASON.into(),
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
            reason: "TwoOwners".into(),
            message: format!(
                "{ip} is also answered by node {} ({mac}): their gossip does not reach each other; announced from node {}",
                other.unwrap_or("unknown"),
                node.as_str()
            ),
        }
    }

    /// No node may announce `ip`; `node` reports why.
    pub fn unowned(ip: IpAddr, why: NoOwner, node: &NodeName) -> Wanted {
        Wanted {
            announced: false,
            reason: why.reason().into(),
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
    message
        .strip_suffix(node)
        .is_some_and(|rest| rest.ends_with(" node "))
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
    conditions: watch::Sender<BTreeMap<ServiceKey, Wanted>>,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Reports {
    pub fn start(client: Client, stores: Stores, node: &str) -> Reports {
        let (conditions, wanted) = watch::channel(BTreeMap::new());
        let (notices, notice_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_conditions(client.clone(), stores.clone(), wanted));
        tokio::spawn(publish_notices(
            Recorder::new(client, MANAGER, node),
            notice_rx,
        ));
        Reports {
            conditions,
            notices,
        }
    }

    /// The conditions of every Service this speaker reports on (the others are left alone).
    pub fn set_conditions(&self, wanted: BTreeMap<ServiceKey, Wanted>) {
        self.conditions.send_if_modified(|current| {
            let changed = *current != wanted;
            *current = wanted;
            changed
        });
    }

    pub fn notice(&self, notice: Notice) {
        tracing::info!(service = %notice.service, reason = notice.reason, "{}", notice.note);
        let _ = self.notices.send(notice);
    }
}

const RESYNC: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

async fn write_conditions(
    client: Client,
    stores: Stores,
    mut wanted: watch::Receiver<BTreeMap<ServiceKey, Wanted>>,
) {
    loop {
        let current = wanted.borrow_and_update().clone();
        for (service, want) in &current {
            let Some(svc) = stores.service(service) else {
                continue;
            };
            let existing = svc.announced.clone();
            if existing.as_ref().is_some_and(|c| same(c, want)) {
                continue;
            }
            let transition = match &existing {
                Some(c) if (c.status == "True") == want.announced => c.last_transition_time.clone(),
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
                Ok(Ok(_)) => tracing::debug!(%service, "condition written"),
                Ok(Err(e)) => tracing::warn!(%service, "cannot write the condition: {e}"),
                Err(_) => tracing::warn!(%service, "cannot write the condition: timed out"),
            }
        }
        // On a change at once; otherwise re-check, so what failed or was overwritten is mended.
        if let Ok(Err(_)) = tokio::time::timeout(RESYNC, wanted.changed()).await {
            return;
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

fn same(existing: &Condition, want: &Wanted) -> bool {
    (existing.status == "True") == want.announced
        && existing.reason == want.reason
        && existing.message == want.message
}

async fn publish_notices(recorder: Recorder, mut notices: mpsc::UnboundedReceiver<Notice>) {
    while let Some(notice) = notices.recv().await {
        // The UID ties the Event to this Service, not a later one of the same name.
        let reference = ObjectReference {
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
        match tokio::time::timeout(WRITE_TIMEOUT, recorder.publish(&note, &reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot publish event {}: {e}", notice.reason),
            Err(_) => tracing::warn!("cannot publish event {}: timed out", notice.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_condition_message_names_its_writer_as_the_admission_policy_reads_it() {
        let me = NodeName::new("node-2");
        let ip: IpAddr = "198.51.100.200".parse().unwrap();
        let mac: MacAddr = "02:00:5e:10:ab:ff".parse().unwrap();
        let mut wanted = vec![
            Wanted::announced("198.51.100.200 on eth0", &me),
            Wanted::conflict(ip, "eth0", &mac, &me),
            Wanted::two_owners(ip, Some("node-1"), &mac, &me),
            Wanted::two_owners(ip, None, &mac, &me),
        ];
        for why in [
            NoOwner::NoLiveSpeaker,
            NoOwner::NoSelectedNode,
            NoOwner::AllExcluded,
            NoOwner::NoReadyEndpoint,
        ] {
            wanted.push(Wanted::unowned(ip, why, &me));
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
