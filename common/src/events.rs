//! Events (`events.k8s.io/v1`) as an operator reads them: a repeat of the same note folds into
//! one Event's series; a different note is a new Event.
//!
//! kube's `Recorder` folds Events by object, reason and action alone and keeps the first
//! note, so "not announced: no eligible node" followed within minutes by "not announced: no
//! ready endpoint" showed the first cause twice. This one keys by the note too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

/// Events waiting beyond this many make publishers wait: memory stays bounded under a flood.
const QUEUE: usize = 4096;

/// How long a published Event is remembered for folding repeats (kube's recorder: 6 min).
const FOLD_WINDOW: Duration = Duration::from_secs(6 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

/// What an Event says about an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Note {
    pub type_: EventType,
    pub reason: String,
    pub action: String,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    note: Note,
}

#[derive(Debug)]
struct Published {
    name: String,
    count: i32,
    last: Instant,
}

pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    published: Mutex<HashMap<Key, Published>>,
}

impl Recorder {
    /// Events reported by `controller` (for instance `ferrolb-speaker`) from `instance` (a
    /// node or a pod).
    pub fn new(client: Client, controller: &str, instance: &str) -> Recorder {
        Recorder {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            published: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `note` about `regarding`: a new Event, or the next count of the same note's
    /// series within the fold window.
    pub async fn publish(
        &self,
        note: &Note,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = Key {
            regarding: (
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            note: note.clone(),
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let now = k8s_openapi::jiff::Timestamp::now();
        let repeat = {
            let mut published = self.published.lock().expect("not poisoned");
            published.retain(|_, p| p.last.elapsed() < FOLD_WINDOW);
            published.get(&key).map(|p| (p.name.clone(), p.count + 1))
        };
        // The lock is not held across a request: a slow API server must not make every
        // publisher wait for every other.
        if let Some((name, count)) = repeat {
            let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            if let Some(p) = self.published.lock().expect("not poisoned").get_mut(&key) {
                p.count = p.count.max(count);
                p.last = Instant::now();
            }
            return Ok(());
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(
                match note.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            reason: Some(note.reason.clone()),
            action: Some(note.action.clone()),
            note: Some(note.note.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.published.lock().expect("not poisoned").insert(
            key,
            Published {
                name,
                count: 1,
                last: Instant::now(),
            },
        );
        Ok(())
    }
}

/// Events published in order by one task, off the callers' path: a reconcile that has written
/// an address does not wait for the Event about it (an API write of its own, which once made
/// every allocation three sequential writes instead of two).
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<(Note, ObjectReference)>,
}

impl Queue {
    /// Starts the publishing task. An Event goes out only if `allowed()` holds when its turn
    /// comes (the controller's fence: a replica that lost its lease meanwhile stays silent).
    pub fn start(recorder: Recorder, allowed: impl Fn() -> bool + Send + 'static) -> Queue {
        let (tx, mut rx) = mpsc::channel::<(Note, ObjectReference)>(QUEUE);
        tokio::spawn(async move {
            while let Some((note, regarding)) = rx.recv().await {
                if !allowed() {
                    continue;
                }
                if let Err(e) = recorder.publish(&note, &regarding).await {
                    tracing::warn!("cannot publish event {}: {e}", note.reason);
                }
            }
        });
        Queue { tx }
    }

    /// Queues `note` about `regarding`; waits only while the queue is full.
    pub async fn publish(&self, note: Note, regarding: ObjectReference) {
        // Closed only when the task is gone, which ends with the process.
        let _ = self.tx.send((note, regarding)).await;
    }
}
