//! The controller at work: the watches, start-up, and the two kube-runtime controllers.
//!
//! Start-up ([`crate::restore`]) reads every pool and every Service's current addresses into
//! the allocator before anything new is assigned, so a restart never moves or duplicates an
//! address. Then one `Controller` reconciles Services ([`crate::services`]), requeued by the
//! runtime when a namespace, an advertisement or a pool they depend on changes, and another
//! reconciles pools ([`crate::pools`]): their status, metrics and finalizer; a third, BGPPeers'
//! status ([`crate::peers`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use allocator::ServiceKey;
use common::events::Recorder;
use crds::{BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use model::ClassPolicy;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, MutexGuard, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::lease::{Fence, Fenced};
use crate::metrics::Metrics;
use crate::peers;
use crate::pools::{self, Reported};
use crate::services;
use crate::state::State;

/// The field manager of everything the controller writes.
pub const MANAGER: &str = "ferrolb-controller";
/// Services reconciled at once.
const RECONCILE_CONCURRENCY: u16 = 16;
/// A burst of allocations rewrites a pool's status once.
const POOL_DEBOUNCE: Duration = Duration::from_millis(100);

/// Keeps a pool whose addresses Services still hold.
pub const POOL_FINALIZER: &str = "ferrolb.io/pool-protection";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("watch: {0}")]
    Watch(#[from] watcher::Error),
    #[error(transparent)]
    Fenced(#[from] Fenced),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Watch(_) => "watch",
            Error::Fenced(_) => "fenced",
        }
    }
}

pub struct Config {
    pub handle_unclassed: bool,
    pub identity: Option<String>,
    /// The right to write: every write checks it first.
    pub fence: Fence,
}

/// What every reconcile sees.
pub struct Context {
    pub(crate) client: Client,
    state: Mutex<State>,
    pub(crate) namespaces: Store<Namespace>,
    pub(crate) pools: Store<IPAddressPool>,
    pub(crate) advertisements: Store<L2Advertisement>,
    pub(crate) bgp_advertisements: Store<BGPAdvertisement>,
    /// Which nodes a BGPPeer selects.
    pub(crate) nodes: Store<Node>,
    pub(crate) services: Store<Service>,
    /// Events go out in order from a queue, off the reconcilers' path.
    pub(crate) events: common::events::Queue,
    pub(crate) metrics: Metrics,
    pub(crate) classes: ClassPolicy,
    pub(crate) fence: Fence,
    /// Services to reconcile again: pending ones after a release.
    requeue_services: mpsc::UnboundedSender<ObjectRef<Service>>,
    /// Pools whose status may have changed: usage after an allocation, overlaps after an edit.
    requeue_pools: mpsc::UnboundedSender<ObjectRef<IPAddressPool>>,
    /// Services already told about their MetalLB annotations.
    pub(crate) told_about_metallb: std::sync::Mutex<HashSet<ServiceKey>>,
    /// What each pool's Events last said, so an unchanged problem is not repeated.
    pub(crate) reported: std::sync::Mutex<BTreeMap<String, Reported>>,
}

impl Context {
    /// The controller's memory, with the pools as the watch has them now: whoever locks it
    /// first after a pool edit re-reads the pools, so a Service is never allocated from a pool
    /// the allocator has not seen yet. A re-reading requeues every pool (overlaps are
    /// between pools).
    pub(crate) async fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().await;
        if state.sync_pools(&self.pools.state()).is_some() {
            self.pools_changed();
        }
        state
    }

    /// Every pool's status is rewritten if it changed (usage after an allocation or release).
    pub(crate) fn pools_changed(&self) {
        for pool in self.pools.state() {
            let _ = self.requeue_pools.send(ObjectRef::from_obj(&*pool));
        }
    }

    /// Reconciles the pending Services again: something was freed.
    pub(crate) fn requeue_pending(&self, state: &State) {
        for key in state.pending() {
            let _ = self
                .requeue_services
                .send(ObjectRef::new(&key.name).within(&key.namespace));
        }
    }
}

/// Watches `api` into a store that is kept current from now on, and passes every object
/// applied or deleted on to `subscribers` streams (for the controllers' triggers, which start
/// later).
fn reflect<K>(
    api: Api<K>,
    subscribers: usize,
    slim: fn(&mut K),
) -> (
    Store<K>,
    tokio::task::JoinHandle<()>,
    Vec<impl Stream<Item = Result<K, watcher::Error>> + Send + 'static>,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..subscribers).map(|_| mpsc::unbounded_channel()).unzip();
    let task = tokio::spawn(
        reflector::reflector(
            writer,
            common::watch(api, watcher::Config::default()).modify(slim),
        )
        // Deletions too: an advertisement deleted changes what is announced.
        .touched_objects()
        .for_each(move |object| {
            if let Ok(object) = object {
                for tx in &senders {
                    let _ = tx.send(object.clone());
                }
            }
            async {}
        }),
    );
    let streams = receivers
        .into_iter()
        .map(|rx| UnboundedReceiverStream::new(rx).map(Ok))
        .collect();
    (store, task, streams)
}

/// Objects the controller keeps as they come (small, and read whole).
fn whole<K>(_: &mut K) {}

/// What the controller reads of a Node: its name and labels (a BGPPeer's node selectors). A
/// Node's status (its images, conditions, addresses) is kilobytes a node.
fn name_and_labels(node: &mut Node) {
    let meta = std::mem::take(&mut node.metadata);
    *node = Node {
        metadata: ObjectMeta {
            name: meta.name,
            uid: meta.uid,
            resource_version: meta.resource_version,
            labels: meta.labels,
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
}

/// Events waiting to be published beyond which a reconcile waits for room (a reconcile can
/// wait; the count bounds the memory a flood takes).
const EVENTS_WAITING: usize = 4096;

/// Runs the controller until `shutdown` (letting the reconciles under way finish) or an error
/// it cannot recover from. `ready` is called once the start-up is done.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Metrics,
    shutdown: common::Shutdown,
    ready: impl FnOnce(),
) -> Result<(), Error> {
    let (ns_store, ns_task, mut ns_events) =
        reflect(Api::<Namespace>::all(client.clone()), 1, whole);
    let (pool_store, pool_task, mut pool_events) =
        reflect(Api::<IPAddressPool>::all(client.clone()), 3, whole);
    let (peer_store, peer_task, mut peer_events) =
        reflect(Api::<BGPPeer>::all(client.clone()), 2, whole);
    let (ad_store, ad_task, mut ad_events) =
        reflect(Api::<L2Advertisement>::all(client.clone()), 1, whole);
    let (bgp_ad_store, bgp_ad_task, mut bgp_ad_events) =
        reflect(Api::<BGPAdvertisement>::all(client.clone()), 1, whole);
    let (node_store, node_task, mut node_events) =
        reflect(Api::<Node>::all(client.clone()), 1, name_and_labels);

    let services: Api<Service> = Api::all(client.clone());
    // The Controller reconciles applied Services only; deletions are taken from the same watch
    // before it, to free what the deleted Service held.
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (deleted_tx, deleted_rx) = mpsc::unbounded_channel::<ServiceKey>();
    let svc_watch = reflector::reflector(
        svc_writer,
        common::watch(services.clone(), watcher::Config::default())
            .modify(crds::read::slim_service),
    )
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(svc)) = event {
            let _ = deleted_tx.send(crds::read::service_key(svc));
        }
    })
    .applied_objects();
    let (requeue_services, requeue_services_rx) = mpsc::unbounded_channel();
    let (requeue_pools, requeue_pools_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        client: client.clone(),
        state: Mutex::new(State::default()),
        namespaces: ns_store.clone(),
        pools: pool_store.clone(),
        advertisements: ad_store.clone(),
        bgp_advertisements: bgp_ad_store.clone(),
        nodes: node_store.clone(),
        services: svc_store.clone(),
        events: common::events::Queue::start(
            Recorder::new(
                client.clone(),
                MANAGER,
                config.identity.as_deref().unwrap_or(MANAGER),
            ),
            EVENTS_WAITING,
            {
                let fence = config.fence.clone();
                move || fence.check().is_ok()
            },
        ),
        metrics,
        classes: ClassPolicy {
            handle_unclassed: config.handle_unclassed,
        },
        fence: config.fence.clone(),
        requeue_services,
        requeue_pools,
        told_about_metallb: Default::default(),
        reported: Default::default(),
    });
    // A bounded number of reconciles at once, as client-go controllers run a fixed set of
    // workers: a burst of Services must not queue the Lease renewal behind hundreds of writes.
    let service_controller = Controller::for_stream(svc_watch, svc_store)
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .watches_stream(ns_events.remove(0), services::namespace_mapper(&ctx))
        .watches_stream(ad_events.remove(0), services::advertisement_mapper(&ctx))
        .watches_stream(
            bgp_ad_events.remove(0),
            services::advertisement_mapper(&ctx),
        )
        .watches_stream(pool_events.remove(0), services::pool_mapper(&ctx))
        .reconcile_on(UnboundedReceiverStream::new(requeue_services_rx));
    let pool_controller = Controller::for_stream(pool_events.remove(0), pool_store.clone())
        .with_config(controller::Config::default().debounce(POOL_DEBOUNCE))
        .reconcile_on(UnboundedReceiverStream::new(requeue_pools_rx));

    // A BGPPeer's status follows its own edits, the speakers' session entries, and the Nodes.
    let peers_store = peer_store.clone();
    let peer_controller = Controller::for_stream(peer_events.remove(0), peer_store.clone())
        .watches_stream(node_events.remove(0), move |_| {
            peers_store
                .state()
                .iter()
                .map(|peer| ObjectRef::from_obj(peer.as_ref()))
                .collect::<Vec<_>>()
        });
    let readiness_task = tokio::spawn(export_readiness(
        ctx.metrics.clone(),
        pool_store.clone(),
        peer_store.clone(),
        futures::stream::select(
            pool_events.remove(0).map(|_| ()),
            peer_events.remove(0).map(|_| ()),
        ),
    ));

    // Stopped while starting, it has written nothing that needs finishing.
    let start = async {
        ns_store.wait_until_ready().await.ok();
        node_store.wait_until_ready().await.ok();
        ad_store.wait_until_ready().await.ok();
        bgp_ad_store.wait_until_ready().await.ok();
        pool_store.wait_until_ready().await.ok();
        crate::restore::restore(&ctx, &services).await
    };
    tokio::select! {
        started = start => started?,
        () = shutdown.requested() => return Ok(()),
    }
    ready();

    let release_task = tokio::spawn(services::release_deleted(ctx.clone(), deleted_rx));
    let sweep_task = tokio::spawn(services::collect_vanished(ctx.clone()));
    let pools_run = pool_controller
        .graceful_shutdown_on(shutdown.requested())
        .run(pools::reconcile, pools::error_policy, ctx.clone())
        .for_each(|_| async {});
    let services_run = service_controller
        .graceful_shutdown_on(shutdown.requested())
        .run(services::reconcile, services::error_policy, ctx.clone())
        .for_each(|_| async {});
    let peers_run = peer_controller
        .graceful_shutdown_on(shutdown.requested())
        .run(peers::reconcile, peers::error_policy, ctx.clone())
        .for_each(|_| async {});
    futures::future::join3(services_run, pools_run, peers_run).await;
    for task in [
        ns_task,
        pool_task,
        ad_task,
        bgp_ad_task,
        node_task,
        peer_task,
        readiness_task,
        release_task,
        sweep_task,
    ] {
        task.abort();
    }
    Ok(())
}

/// Keeps `ferrolb_object_ready` equal to the `Ready` conditions the stores hold, after every
/// change of a pool or peer (deletions included).
async fn export_readiness(
    metrics: Metrics,
    pools: Store<IPAddressPool>,
    peers: Store<BGPPeer>,
    changes: impl Stream<Item = ()>,
) {
    /// Each object's name and whether its `Ready` condition is True.
    fn readiness<K>(
        store: &Store<K>,
        conditions: impl Fn(&K) -> Option<&Vec<Condition>>,
    ) -> Vec<(String, bool)>
    where
        K: kube::Resource<DynamicType = ()> + Clone,
    {
        store
            .state()
            .iter()
            .map(|object| {
                let ready = conditions(object)
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (object.name_any(), ready)
            })
            .collect()
    }
    let mut changes = std::pin::pin!(changes);
    while changes.next().await.is_some() {
        let of_pools = readiness(&pools, |p| p.status.as_ref().map(|s| &s.conditions));
        metrics.readiness("IPAddressPool", &of_pools);
        let of_peers = readiness(&peers, |p| p.status.as_ref().map(|s| &s.conditions));
        metrics.readiness("BGPPeer", &of_peers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    /// The BGPPeers' node selectors read a Node's name and labels; the cached Node keeps
    /// those (and what names this version of it) and drops the kilobytes of the rest.
    #[test]
    fn a_cached_node_keeps_its_name_and_labels_and_nothing_else() {
        let labels = BTreeMap::from([("rack".to_string(), "r1".to_string())]);
        let mut node = Node {
            metadata: ObjectMeta {
                name: Some("node-1".into()),
                uid: Some("u-1".into()),
                resource_version: Some("42".into()),
                labels: Some(labels.clone()),
                annotations: Some(BTreeMap::from([("a".into(), "b".repeat(4096))])),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some("192.0.2.0/26".into()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    address: "192.0.2.1".into(),
                    type_: "InternalIP".into(),
                }]),
                ..NodeStatus::default()
            }),
        };
        name_and_labels(&mut node);
        let expected = Node {
            metadata: ObjectMeta {
                name: Some("node-1".into()),
                uid: Some("u-1".into()),
                resource_version: Some("42".into()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        assert_eq!(node, expected);
    }
}
