//! A watch cache that keeps of each object only what the speaker reads from it.
//!
//! kube's reflector keeps whole objects: at 10,000 Services most of a speaker's memory was
//! Service specs, annotations and statuses it never reads. A [`Cache`] keeps the projection of
//! each object instead, and tells the election about an event only when the projection
//! changed: a status write or a label the speaker ignores moves nothing.
//!
//! Like the reflector, it keeps its last state while the API server is away: the speaker goes
//! on electing, and failing over, from it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};

/// An object's namespace (empty for a cluster-scoped one) and name, as `namespace/name`: one
/// allocation per object instead of two (neither part can hold a `/`).
type Key = Box<str>;

fn key_of(namespace: &str, name: &str) -> Key {
    format!("{namespace}/{name}").into_boxed_str()
}

/// Calls `f` with `namespace/name` built on the stack: a lookup allocates nothing (the
/// speaker looks every address's Services up every few seconds). A namespace is at most 63
/// bytes and a name 253, so the buffer holds any valid key.
fn with_key<R>(namespace: &str, name: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 320];
    let len = namespace.len() + 1 + name.len();
    if len > buf.len() {
        return f(&key_of(namespace, name));
    }
    buf[..namespace.len()].copy_from_slice(namespace.as_bytes());
    buf[namespace.len()] = b'/';
    buf[namespace.len() + 1..len].copy_from_slice(name.as_bytes());
    f(std::str::from_utf8(&buf[..len]).expect("two strings and an ASCII byte"))
}

/// Projections of the objects of one kind, by namespace and name.
pub struct Cache<T> {
    objects: Arc<RwLock<HashMap<Key, Arc<T>>>>,
    ready: watch::Receiver<bool>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// What is kept of an object of kind `K`.
pub type Project<K, T> = Box<dyn Fn(&K) -> Option<T> + Send>;

/// How a kind is watched into a [`Cache`]: what is kept of an object (`None`: nothing, it is
/// none of the speaker's business), and the change to report when a projection changes or
/// the kind was listed anew.
pub struct Watch<K, T, C> {
    pub project: Project<K, T>,
    pub changed: fn(&K) -> C,
    pub relisted: C,
    /// What a new projection takes over from the one it replaces (shared parts, so that the
    /// old one's holders and the new one's keep one copy).
    pub carry: Option<fn(new: &mut T, old: &T)>,
}

impl<T: PartialEq + Send + Sync + 'static> Cache<T> {
    /// Watches `api` into a new cache; reports go to `changes`.
    pub fn start<K, C>(
        api: Api<K>,
        config: watcher::Config,
        how: Watch<K, T, C>,
        changes: mpsc::UnboundedSender<C>,
    ) -> Cache<T>
    where
        K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
        C: Clone + Send + 'static,
    {
        let (mut feed, cache) = Feed::new(how);
        let kind = K::kind(&K::DynamicType::default()).to_string();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(common::watch(api, config));
            let mut failing = false;
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(kind, "watch failing, working from the last state: {e}");
                        }
                        continue;
                    }
                };
                if std::mem::take(&mut failing) {
                    tracing::info!(kind, "watch is back");
                }
                if let Some(change) = feed.apply(event)
                    && changes.send(change).is_err()
                {
                    return;
                }
            }
        });
        cache
    }
}

/// The writing side of a [`Cache`]: applies watch events, in order, and says what changed.
pub struct Feed<K, T, C> {
    cache: Cache<T>,
    ready: watch::Sender<bool>,
    how: Watch<K, T, C>,
    /// A list under way: it replaces the cache when complete, so objects deleted while the
    /// watch was broken go.
    relisting: Option<HashMap<Key, Arc<T>>>,
}

impl<K: Resource, T: PartialEq, C: Clone> Feed<K, T, C> {
    pub fn new(how: Watch<K, T, C>) -> (Feed<K, T, C>, Cache<T>) {
        let (ready, ready_rx) = watch::channel(false);
        let cache = Cache {
            objects: Arc::new(RwLock::new(HashMap::new())),
            ready: ready_rx,
        };
        let feed = Feed {
            cache: cache.clone(),
            ready,
            how,
            relisting: None,
        };
        (feed, cache)
    }

    /// Applies one event; the change to report, if the election's input moved.
    pub fn apply(&mut self, event: watcher::Event<K>) -> Option<C> {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
                None
            }
            watcher::Event::InitApply(object) => {
                if let (Some(list), Some(mut kept)) =
                    (&mut self.relisting, (self.how.project)(&object))
                {
                    let key = key(&object);
                    if let (Some(carry), Some(old)) = (self.how.carry, self.cache.read().get(&key))
                    {
                        carry(&mut kept, old);
                    }
                    list.insert(key, Arc::new(kept));
                }
                None
            }
            watcher::Event::InitDone => {
                if let Some(list) = self.relisting.take() {
                    *self.cache.write() = list;
                }
                self.ready.send_replace(true);
                Some(self.how.relisted.clone())
            }
            watcher::Event::Apply(object) => {
                let kept = (self.how.project)(&object);
                self.replace(key(&object), kept)
                    .then(|| (self.how.changed)(&object))
            }
            watcher::Event::Delete(object) => self
                .replace(key(&object), None)
                .then(|| (self.how.changed)(&object)),
        }
    }

    /// Sets (or removes) one object's projection; whether that changed it.
    fn replace(&self, key: Key, kept: Option<T>) -> bool {
        let mut objects = self.cache.write();
        match kept {
            Some(mut kept) => match objects.get(&key) {
                Some(old) if **old == kept => false,
                old => {
                    if let (Some(carry), Some(old)) = (self.how.carry, old) {
                        carry(&mut kept, old);
                    }
                    objects.insert(key, Arc::new(kept));
                    true
                }
            },
            None => objects.remove(&key).is_some(),
        }
    }
}

impl<T> Cache<T> {
    /// Waits for the first complete list.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        with_key(namespace, name, |key| self.read().get(key).cloned())
    }

    /// Every object kept, in no particular order.
    pub fn all(&self) -> Vec<Arc<T>> {
        self.read().values().cloned().collect()
    }

    /// Every object's namespace and name.
    pub fn keys(&self) -> Vec<(String, String)> {
        self.read()
            .keys()
            .map(|key| {
                let (namespace, name) = key.split_once('/').unwrap_or(("", key));
                (namespace.to_string(), name.to_string())
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Arc<T>>> {
        // A panic elsewhere while holding the lock leaves the map whole: use it.
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Arc<T>>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn key<K: Resource>(object: &K) -> Key {
    key_of(
        object.meta().namespace.as_deref().unwrap_or_default(),
        &object.name_any(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use watcher::Event;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        One(String),
        All,
    }

    /// A Service of `type_`; the projection below keeps LoadBalancer Services' ClusterIPs.
    fn svc(name: &str, type_: &str, cluster_ip: &str) -> Service {
        let mut svc = Service::default();
        svc.metadata.name = Some(name.into());
        svc.metadata.namespace = Some("ns".into());
        svc.spec = Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: Some(cluster_ip.into()),
            ..ServiceSpec::default()
        });
        svc
    }

    fn feed() -> (Feed<Service, String, Seen>, Cache<String>) {
        Feed::new(Watch {
            project: Box::new(|svc: &Service| {
                let spec = svc.spec.as_ref()?;
                (spec.type_.as_deref() == Some("LoadBalancer"))
                    .then(|| spec.cluster_ip.clone().unwrap_or_default())
            }),
            changed: |svc: &Service| Seen::One(svc.name_any()),
            relisted: Seen::All,
            carry: None,
        })
    }

    /// A projection whose name part is shared, as a Service record's key is.
    #[derive(Debug, PartialEq)]
    struct Named {
        name: Arc<String>,
        ip: String,
    }

    #[test]
    fn a_new_projection_carries_the_shared_part_of_the_one_it_replaces() {
        let (mut feed, cache) = Feed::new(Watch {
            project: Box::new(|svc: &Service| {
                Some(Named {
                    name: Arc::new(svc.name_any()),
                    ip: svc.spec.as_ref()?.cluster_ip.clone()?,
                })
            }),
            changed: |svc: &Service| Seen::One(svc.name_any()),
            relisted: Seen::All,
            carry: Some(|new: &mut Named, old: &Named| {
                if new.name == old.name {
                    new.name = old.name.clone();
                }
            }),
        });
        feed.apply(Event::Init);
        feed.apply(Event::InitApply(svc("a", "LoadBalancer", "10.0.0.1")));
        feed.apply(Event::InitDone);
        let first = cache.get("ns", "a").unwrap();

        feed.apply(Event::Apply(svc("a", "LoadBalancer", "10.0.0.2")));
        let updated = cache.get("ns", "a").unwrap();
        assert_eq!(updated.ip, "10.0.0.2");
        assert!(Arc::ptr_eq(&updated.name, &first.name), "one name for both");

        feed.apply(Event::Init);
        feed.apply(Event::InitApply(svc("a", "LoadBalancer", "10.0.0.3")));
        feed.apply(Event::InitDone);
        let relisted = cache.get("ns", "a").unwrap();
        assert_eq!(relisted.ip, "10.0.0.3");
        assert!(
            Arc::ptr_eq(&relisted.name, &first.name),
            "kept over a relist"
        );
    }

    /// Lookups build their key on the stack when it fits and on the heap when it does not:
    /// either way they find what the watch stored, and only that.
    #[test]
    fn a_lookup_finds_what_the_watch_keyed_however_long_the_name() {
        let (mut feed, cache) = feed();
        let names = ["a".to_string(), "b".repeat(253), "c".repeat(400)];
        feed.apply(Event::Init);
        for (i, name) in names.iter().enumerate() {
            feed.apply(Event::InitApply(svc(
                name,
                "LoadBalancer",
                &format!("10.0.0.{i}"),
            )));
        }
        feed.apply(Event::InitDone);
        for (i, name) in names.iter().enumerate() {
            let kept = cache.get("ns", name).map(|ip| (*ip).clone());
            assert_eq!(kept, Some(format!("10.0.0.{i}")), "{}", name.len());
            assert_eq!(cache.get("other", name), None);
        }
        assert_eq!(cache.get("ns", &"b".repeat(252)), None);
    }

    fn contents(cache: &Cache<String>) -> Vec<(String, String)> {
        let mut all: Vec<_> = cache
            .keys()
            .into_iter()
            .map(|(ns, name)| {
                let kept = cache.get(&ns, &name).expect("listed keys are kept");
                (name, (*kept).clone())
            })
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_list_keeps_only_projected_objects_and_is_ready_when_done() {
        let (mut feed, cache) = feed();
        assert_eq!(feed.apply(Event::Init), None);
        assert_eq!(
            feed.apply(Event::InitApply(svc("a", "LoadBalancer", "10.0.0.1"))),
            None
        );
        assert_eq!(
            feed.apply(Event::InitApply(svc("b", "ClusterIP", "10.0.0.2"))),
            None
        );
        assert!(
            !*cache.ready.borrow(),
            "not ready before the list is complete"
        );
        assert!(contents(&cache).is_empty(), "a list shows when complete");
        assert_eq!(feed.apply(Event::InitDone), Some(Seen::All));
        assert!(*cache.ready.borrow());
        assert_eq!(contents(&cache), [("a".into(), "10.0.0.1".into())]);
    }

    #[test]
    fn a_relist_drops_what_was_deleted_meanwhile_and_serves_the_old_state_until_done() {
        let (mut feed, cache) = feed();
        feed.apply(Event::Init);
        feed.apply(Event::InitApply(svc("a", "LoadBalancer", "10.0.0.1")));
        feed.apply(Event::InitApply(svc("b", "LoadBalancer", "10.0.0.2")));
        feed.apply(Event::InitDone);

        feed.apply(Event::Init);
        feed.apply(Event::InitApply(svc("b", "LoadBalancer", "10.0.0.3")));
        assert_eq!(
            contents(&cache).len(),
            2,
            "the old state until the list is done"
        );
        assert_eq!(feed.apply(Event::InitDone), Some(Seen::All));
        assert_eq!(contents(&cache), [("b".into(), "10.0.0.3".into())]);
    }

    #[test]
    fn an_event_is_reported_only_when_the_projection_changes() {
        let (mut feed, cache) = feed();
        feed.apply(Event::Init);
        feed.apply(Event::InitDone);

        let mut a = svc("a", "LoadBalancer", "10.0.0.1");
        assert_eq!(
            feed.apply(Event::Apply(a.clone())),
            Some(Seen::One("a".into()))
        );
        // What the projection does not keep (here: labels) moves nothing.
        a.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        assert_eq!(feed.apply(Event::Apply(a.clone())), None);
        a.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.9".into());
        assert_eq!(
            feed.apply(Event::Apply(a.clone())),
            Some(Seen::One("a".into()))
        );
        assert_eq!(contents(&cache), [("a".into(), "10.0.0.9".into())]);

        // An object nobody keeps comes and goes unreported...
        let b = svc("b", "ClusterIP", "10.0.0.2");
        assert_eq!(feed.apply(Event::Apply(b.clone())), None);
        assert_eq!(feed.apply(Event::Delete(b)), None);
        // ...one that stops being kept is reported, and gone.
        a.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert_eq!(
            feed.apply(Event::Apply(a.clone())),
            Some(Seen::One("a".into()))
        );
        assert!(contents(&cache).is_empty());
        assert_eq!(feed.apply(Event::Delete(a)), None);
    }

    #[test]
    fn keys_come_back_as_namespace_and_name_for_namespaced_and_cluster_scoped_objects() {
        let (mut feed, cache) = feed();
        feed.apply(Event::Init);
        feed.apply(Event::InitApply(svc("a", "LoadBalancer", "10.0.0.1")));
        let mut cluster_scoped = svc("b", "LoadBalancer", "10.0.0.2");
        cluster_scoped.metadata.namespace = None;
        feed.apply(Event::InitApply(cluster_scoped));
        feed.apply(Event::InitDone);
        let mut keys = cache.keys();
        keys.sort();
        assert_eq!(
            keys,
            [
                (String::new(), "b".to_string()),
                ("ns".to_string(), "a".to_string())
            ]
        );
        assert_eq!(cache.get("", "b").as_deref(), Some(&"10.0.0.2".to_string()));
        assert_eq!(cache.get("ns", "b"), None);
        assert_eq!(cache.get("", "a"), None);
    }

    #[test]
    fn a_deletion_of_a_kept_object_is_reported() {
        let (mut feed, cache) = feed();
        feed.apply(Event::Init);
        let a = svc("a", "LoadBalancer", "10.0.0.1");
        feed.apply(Event::InitApply(a.clone()));
        feed.apply(Event::InitDone);
        assert_eq!(feed.apply(Event::Delete(a)), Some(Seen::One("a".into())));
        assert!(contents(&cache).is_empty());
        assert_eq!(cache.get("ns", "a"), None);
    }
}
