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

/// How long one Event may take to publish before it is given up (and logged as such): a
/// slow API server holds up the Events behind it, not for a request's whole read timeout.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

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

/// How often expired folds are dropped: not on every publish (a pass over every fold, which
/// in a storm of 10,000 Events made publishing quadratic).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The Events published within the fold window, by a digest of what they are about and say.
///
/// A digest, not the strings: a storm of 10,000 allocations or announcements keeps 10,000
/// folds for six minutes, and the object's reference and the note's text cost half a
/// kilobyte each (megabytes, and the table kept its size after they expired). Two different
/// notes with one 64-bit digest would share a series: not expected within a window's few
/// thousand, and not craftable from Service names, the hasher's keys being random per process.
#[derive(Debug)]
struct Folds {
    by_digest: HashMap<u64, Published>,
    hasher: std::hash::RandomState,
    swept: Instant,
}

#[derive(Debug)]
struct Published {
    /// The Event's name, to count the next repeat on it.
    name: Box<str>,
    count: i32,
    last: Instant,
}

impl Published {
    /// Whether a repeat at `now` still counts on this Event.
    fn folds_at(&self, now: Instant) -> bool {
        now.duration_since(self.last) < FOLD_WINDOW
    }
}

impl Folds {
    fn new(now: Instant) -> Folds {
        Folds {
            by_digest: HashMap::new(),
            hasher: std::hash::RandomState::new(),
            swept: now,
        }
    }

    fn digest(&self, note: &Note, regarding: &ObjectReference) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((
            &regarding.kind,
            &regarding.namespace,
            &regarding.name,
            &regarding.uid,
            note,
        ))
    }

    /// The Event to count a repeat on, with the count it reaches, if one is within the window.
    fn repeat(&mut self, digest: u64, now: Instant) -> Option<(String, i32)> {
        self.sweep(now);
        self.by_digest
            .get(&digest)
            .filter(|p| p.folds_at(now))
            .map(|p| (p.name.to_string(), p.count + 1))
    }

    fn counted(&mut self, digest: u64, count: i32, now: Instant) {
        if let Some(p) = self.by_digest.get_mut(&digest) {
            p.count = p.count.max(count);
            p.last = now;
        }
    }

    fn published(&mut self, digest: u64, name: String, now: Instant) {
        let name = name.into_boxed_str();
        self.by_digest.insert(
            digest,
            Published {
                name,
                count: 1,
                last: now,
            },
        );
    }

    /// Drops the folds past the window (at most every [`SWEEP_EVERY`]), and gives the table's
    /// room back once most of it is empty: a storm's table would otherwise stay its size.
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.by_digest.retain(|_, p| p.folds_at(now));
        if self.by_digest.capacity() > 64 && self.by_digest.len() < self.by_digest.capacity() / 4 {
            self.by_digest.shrink_to_fit();
        }
    }
}

pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    folds: Mutex<Folds>,
}

impl Recorder {
    /// Events reported by `controller` (for instance `ferrolb-speaker`) from `instance` (a
    /// node or a pod).
    pub fn new(client: Client, controller: &str, instance: &str) -> Recorder {
        Recorder {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            folds: Mutex::new(Folds::new(Instant::now())),
        }
    }

    /// Publishes `note` about `regarding`: a new Event, or the next count of the same note's
    /// series within the fold window.
    pub async fn publish(
        &self,
        note: &Note,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let digest = self.folds().digest(note, regarding);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let now = k8s_openapi::jiff::Timestamp::now();
        let repeat = self.folds().repeat(digest, Instant::now());
        // The lock is not held across a request: a slow API server must not make every
        // publisher wait for every other.
        if let Some((name, count)) = repeat {
            let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            self.folds().counted(digest, count, Instant::now());
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
        self.folds().published(digest, name, Instant::now());
        Ok(())
    }

    /// Waits for `next` (a publisher's next note), dropping the folds past the window on
    /// every tick of `sweep` meanwhile: a publisher gone quiet after a storm would otherwise
    /// keep them until its next Event.
    async fn sweeping<T>(
        &self,
        sweep: &mut tokio::time::Interval,
        next: impl std::future::Future<Output = Option<T>>,
    ) -> Option<T> {
        let mut next = std::pin::pin!(next);
        loop {
            tokio::select! {
                item = &mut next => return item,
                _ = sweep.tick() => self.folds().sweep(Instant::now()),
            }
        }
    }

    fn folds(&self) -> std::sync::MutexGuard<'_, Folds> {
        self.folds.lock().expect("not poisoned")
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
    /// Starts the publishing task, with room for `capacity` Events waiting: memory stays
    /// bounded under a flood. An Event goes out only if `allowed()` holds when its turn comes
    /// (the controller's fence: a replica that lost its lease meanwhile stays silent).
    pub fn start(
        recorder: Recorder,
        capacity: usize,
        allowed: impl Fn() -> bool + Send + 'static,
    ) -> Queue {
        let (tx, mut rx) = mpsc::channel::<(Note, ObjectReference)>(capacity);
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            while let Some((note, regarding)) = recorder.sweeping(&mut sweep, rx.recv()).await {
                if !allowed() {
                    continue;
                }
                match tokio::time::timeout(PUBLISH_TIMEOUT, recorder.publish(&note, &regarding))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("cannot publish event {}: {e}", note.reason),
                    Err(_) => tracing::warn!("cannot publish event {}: timed out", note.reason),
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

    /// Queues `note` about `regarding` if there is room, without waiting; whether it was
    /// queued. For a caller that must not wait on the API server (the speaker's loop): a
    /// full queue drops the Event, as client-go's broadcaster does.
    pub fn offer(&self, note: Note, regarding: ObjectReference) -> bool {
        self.tx.try_send((note, regarding)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("Service".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn note(text: &str) -> Note {
        Note {
            type_: EventType::Normal,
            reason: "IPAllocated".into(),
            action: "Allocate".into(),
            note: text.into(),
        }
    }

    /// The speaker's loop offers Events without waiting: past the queue's room they are
    /// dropped, and room made by publishing takes the next.
    #[tokio::test]
    async fn an_offer_to_a_full_queue_is_dropped_without_waiting() {
        let (tx, mut rx) = mpsc::channel(2);
        let queue = Queue { tx };
        let offered: Vec<bool> = (0..3)
            .map(|i| queue.offer(note(&format!("198.51.100.{i}")), about("web")))
            .collect();
        assert_eq!(offered, [true, true, false]);
        assert_eq!(rx.recv().await.unwrap().0.note, "198.51.100.0");
        assert!(queue.offer(note("198.51.100.3"), about("web")));
        assert_eq!(rx.recv().await.unwrap().0.note, "198.51.100.1");
        assert_eq!(rx.recv().await.unwrap().0.note, "198.51.100.3");
    }

    #[test]
    fn a_repeat_within_the_window_counts_on_its_event_and_another_note_does_not() {
        let t0 = Instant::now();
        let mut folds = Folds::new(t0);
        let web = folds.digest(&note("198.51.100.5"), &about("web"));
        assert_eq!(web, folds.digest(&note("198.51.100.5"), &about("web")));
        assert_ne!(web, folds.digest(&note("198.51.100.6"), &about("web")));
        assert_ne!(web, folds.digest(&note("198.51.100.5"), &about("api")));
        assert_eq!(folds.repeat(web, t0), None);
        folds.published(web, "web.1".into(), t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(folds.repeat(web, later), Some(("web.1".into(), 2)));
        folds.counted(web, 2, later);
        assert_eq!(
            folds.repeat(web, later + Duration::from_secs(1)),
            Some(("web.1".into(), 3))
        );
        // Past the window from the last count: a new Event.
        assert_eq!(folds.repeat(web, later + FOLD_WINDOW), None);
    }

    #[test]
    fn a_storm_of_folds_goes_with_its_room_once_past_the_window() {
        let t0 = Instant::now();
        let mut folds = Folds::new(t0);
        for i in 0..10_000 {
            let digest = folds.digest(&note("allocated"), &about(&format!("s{i}")));
            folds.published(digest, format!("s{i}.1"), t0);
        }
        assert_eq!(folds.by_digest.len(), 10_000);
        let storm_room = folds.by_digest.capacity();
        // Within the window, and between sweeps, all stay.
        folds.sweep(t0 + SWEEP_EVERY / 2);
        assert_eq!(folds.by_digest.len(), 10_000);
        let last = folds.digest(&note("late"), &about("late"));
        folds.published(last, "late.1".into(), t0 + FOLD_WINDOW);
        folds.sweep(t0 + FOLD_WINDOW + SWEEP_EVERY);
        assert_eq!(
            folds.by_digest.len(),
            1,
            "only the late one is in its window"
        );
        assert!(
            folds.by_digest.capacity() < storm_room / 100,
            "room kept: {} of {storm_room}",
            folds.by_digest.capacity()
        );
    }
}
