//! What the speaker tells users: the Service condition `ferrolb.io/Announced` and Events.
//!
//! One speaker reports on each Service: its addresses' owner, or, when nobody owns them, the live
//! speaker whose node name sorts first. Writes go through a task of their own so that an API
//! server that is slow or gone never delays an election or a takeover; the condition is
//! re-checked against the Service every few seconds and rewritten when it differs, so it comes
//! back right after an outage.

use std::collections::BTreeMap;
use std::time::Duration;

use common::events::{EventType, Note, Recorder};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::view::Stores;
use model::ServiceKey;

/// The Service condition the speaker keeps current.
pub const CONDITION: &str = model::service::ANNOUNCED_CONDITION;
/// The server-side apply field manager of that condition.
pub const MANAGER: &str = "ferrolb-speaker";

/// The condition this speaker wants a Service to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub announced: bool,
    pub reason: String,
    pub message: String,
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
            stores,
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
            let existing = existing_condition(&svc);
            if existing.as_ref().is_some_and(|c| same(c, want)) {
                continue;
            }
            let transition = match &existing {
                Some(c) if (c.status == "True") == want.announced => c.last_transition_time.clone(),
                _ => Time(k8s_openapi::jiff::Timestamp::now()),
            };
            let patch = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service.name, "namespace": service.namespace},
                "status": {"conditions": [{
                    "type": CONDITION,
                    "status": if want.announced { "True" } else { "False" },
                    "reason": want.reason,
                    "message": want.message,
                    "lastTransitionTime": transition,
                    "observedGeneration": svc.metadata.generation,
                }]},
            });
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

fn existing_condition(svc: &Service) -> Option<Condition> {
    svc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == CONDITION)
        .cloned()
}

fn same(existing: &Condition, want: &Wanted) -> bool {
    (existing.status == "True") == want.announced
        && existing.reason == want.reason
        && existing.message == want.message
}

async fn publish_notices(
    recorder: Recorder,
    stores: Stores,
    mut notices: mpsc::UnboundedReceiver<Notice>,
) {
    while let Some(notice) = notices.recv().await {
        let reference = match stores.service(&notice.service) {
            Some(svc) => svc.object_ref(&()),
            None => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(notice.service.name.clone()),
                namespace: Some(notice.service.namespace.clone()),
                ..ObjectReference::default()
            },
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
