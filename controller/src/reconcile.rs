//! The controller at work: watches, start-up, reconciling Services, and reporting on pools.
//!
//! Start-up reads every pool and every Service's current addresses into the allocator before
//! anything new is assigned, oldest Service first, so a restart never moves or duplicates an
//! address. Then a kube-runtime `Controller` reconciles Services; a pool task re-reads the pools
//! when they change and requeues exactly the Services they affect; a status task keeps each
//! pool's status and finalizer current.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocator::{Labels, ServiceKey};
use crds::{IPAddressPool, L2Advertisement};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use model::ClassPolicy;
use model::service::ANNOTATION_ALLOCATED_FROM;
use serde_json::json;
use tokio::sync::{Mutex, Notify, mpsc};
use tracing::Instrument;

use crate::lease::{Fence, Fenced};
use crate::metrics::{Metrics, PoolLabels, ReasonLabels};
use crate::state::State;

/// The field manager of everything the controller writes.
pub const MANAGER: &str = "ferrolb-controller";
/// Services reconciled at once.
const RECONCILE_CONCURRENCY: u16 = 16;

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
    client: Client,
    state: Mutex<State>,
    namespaces: Store<Namespace>,
    pools: Store<IPAddressPool>,
    advertisements: Store<L2Advertisement>,
    services: Store<Service>,
    recorder: Recorder,
    metrics: Metrics,
    classes: ClassPolicy,
    fence: Fence,
    /// Services to reconcile again (pending ones after a release, those a pool change affects).
    requeue: mpsc::UnboundedSender<ObjectRef<Service>>,
    /// Pool statuses need rewriting.
    pools_changed: Notify,
    /// Services already told about their MetalLB annotations.
    told_about_metallb: std::sync::Mutex<HashSet<ServiceKey>>,
}

/// Runs the controller until an error it cannot recover from. `ready` is called once the
/// start-up is done.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Metrics,
    ready: impl FnOnce(),
) -> Result<(), Error> {
    let (ns_store, ns_writer) = reflector::store::<Namespace>();
    let ns_watch = reflector::reflector(
        ns_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    );
    let (pool_store, pool_writer) = reflector::store::<IPAddressPool>();
    let pool_watch = reflector::reflector(
        pool_writer,
        watcher(
            Api::<IPAddressPool>::all(client.clone()),
            watcher::Config::default(),
        ),
    );

    let (ad_store, ad_writer) = reflector::store::<L2Advertisement>();
    let ad_watch = reflector::reflector(
        ad_writer,
        watcher(
            Api::<L2Advertisement>::all(client.clone()),
            watcher::Config::default(),
        ),
    );

    let services: Api<Service> = Api::all(client.clone());
    let (requeue, requeue_rx) = mpsc::unbounded_channel();
    // The Controller reconciles applied Services only; deletions are taken from the same watch
    // before it, to free what the deleted Service held.
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (deleted_tx, mut deleted_rx) = mpsc::unbounded_channel::<ServiceKey>();
    let svc_watch = reflector::reflector(
        svc_writer,
        watcher(services.clone(), watcher::Config::default()),
    )
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(svc)) = event {
            let _ = deleted_tx.send(crds::read::service_key(svc));
        }
    })
    .applied_objects();
    // A bounded number of reconciles at once, as client-go controllers run a fixed set of
    // workers: a burst of Services must not queue the Lease renewal behind hundreds of writes.
    let controller = Controller::for_stream(svc_watch, svc_store).with_config(
        kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
    );
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: config.identity.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        state: Mutex::new(State::default()),
        namespaces: ns_store.clone(),
        pools: pool_store.clone(),
        advertisements: ad_store.clone(),
        services: controller.store(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        classes: ClassPolicy {
            handle_unclassed: config.handle_unclassed,
        },
        fence: config.fence.clone(),
        requeue,
        pools_changed: Notify::new(),
        told_about_metallb: Default::default(),
    });

    // Namespace label changes requeue the Services of that namespace.
    let ns_task = tokio::spawn({
        let ctx = ctx.clone();
        ns_watch.applied_objects().for_each(move |ns| {
            let ctx = ctx.clone();
            async move {
                if let Ok(ns) = ns {
                    let name = ns.name_any();
                    for svc in ctx.services.state() {
                        if svc.namespace().as_deref() == Some(name.as_str()) {
                            let _ = ctx.requeue.send(ObjectRef::from_obj(&*svc));
                        }
                    }
                }
            }
        })
    });
    let pool_events = tokio::spawn(pool_watch.touched_objects().for_each({
        let ctx = ctx.clone();
        move |_| {
            let ctx = ctx.clone();
            async move { ctx.pools_changed.notify_one() }
        }
    }));

    // Advertisements decide whether an address will be announced: requeue the Services holding
    // addresses, so each says whether it is.
    let ad_task = tokio::spawn(ad_watch.touched_objects().for_each({
        let ctx = ctx.clone();
        move |_| {
            let ctx = ctx.clone();
            async move {
                let state = ctx.state.lock().await;
                for svc in ctx.services.state() {
                    if state.assignment(&crds::read::service_key(&svc)).is_some() {
                        let _ = ctx.requeue.send(ObjectRef::from_obj(&*svc));
                    }
                }
            }
        }
    }));

    ns_store.wait_until_ready().await.ok();
    ad_store.wait_until_ready().await.ok();
    pool_store.wait_until_ready().await.ok();
    restore(&ctx, &services).await?;
    ready();

    let status_task = tokio::spawn(pool_status_loop(ctx.clone()));
    let release_task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            while let Some(key) = deleted_rx.recv().await {
                release_deleted(&ctx, &key).await;
            }
        }
    });
    let gc_task = tokio::spawn(collect_vanished(ctx.clone()));
    let result = controller
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(
            requeue_rx,
        ))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {})
        .await;
    release_task.abort();
    ad_task.abort();
    gc_task.abort();
    ns_task.abort();
    pool_events.abort();
    status_task.abort();
    Ok(result)
}

/// Loads pools and every Service's current addresses, oldest Service first, before the first
/// new assignment. A Service whose address an older one holds is left to the reconcile, which
/// gives it a new address and an Event.
async fn restore(ctx: &Context, services: &Api<Service>) -> Result<(), Error> {
    let started = Instant::now();
    let pools: Vec<IPAddressPool> = ctx.pools.state().iter().map(|p| (**p).clone()).collect();
    let mut state = ctx.state.lock().await;
    state.set_pools(&pools);
    let mut all = services.list(&ListParams::default()).await?.items;
    all.sort_by(|a, b| {
        let age = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        age(a)
            .cmp(&age(b))
            .then_with(|| (a.namespace(), a.name_any()).cmp(&(b.namespace(), b.name_any())))
    });
    let (mut restored, mut disputed) = (0, 0);
    for svc in &all {
        let view = crds::read::service(svc);
        if !view.is_ours(ctx.classes) || view.ingress.is_empty() {
            continue;
        }
        let request = match view.request(namespace_labels(ctx, &view.key.namespace)) {
            Ok(r) => r,
            // Keep what it holds under the plainest terms; its reconcile reports the problem.
            Err(_) => allocator::ServiceRequest::new(view.key.clone(), view.families),
        };
        match state.restore(&request, &view.ingress) {
            Ok(_) => restored += 1,
            Err(e) => {
                disputed += 1;
                tracing::warn!(service = %view.key, "at start-up: {e}");
            }
        }
    }
    tracing::info!(restored, disputed, services = all.len(), elapsed = ?started.elapsed(), "allocations restored from Service status");
    ctx.pools_changed.notify_one();
    Ok(())
}

/// Whether some L2Advertisement covers the pool.
fn advertised(ctx: &Context, pool: &str) -> bool {
    let labels = ctx
        .pools
        .get(&ObjectRef::new(pool))
        .and_then(|p| p.metadata.labels.clone())
        .unwrap_or_default();
    ctx.advertisements
        .state()
        .iter()
        .any(|ad| crds::read::advertisement(ad).covers_pool(pool, &labels))
}

fn namespace_labels(ctx: &Context, namespace: &str) -> Labels {
    ctx.namespaces
        .get(&ObjectRef::new(namespace))
        .and_then(|ns| ns.metadata.labels.clone())
        .unwrap_or_default()
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any()));
    reconcile_service(svc, ctx).instrument(span).await
}

async fn reconcile_service(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let view = crds::read::service(&svc);
    let key = view.key.clone();
    let reference = svc.object_ref(&());
    let action = if view.is_ours(ctx.classes) {
        assign(&ctx, &svc, &view, &reference).await?
    } else {
        let released = ctx.state.lock().await.release(&key);
        if !released.is_empty() {
            write_ingress(&ctx, &view, &[]).await?;
            write_pool_annotation(&ctx, &view, None).await?;
            let text = join(&released);
            publish(
                &ctx,
                &reference,
                EventType::Normal,
                "IPReleased",
                format!("Released {text}: the Service no longer asks ferrolb for an address"),
            )
            .await;
            requeue_pending(&ctx).await;
            ctx.pools_changed.notify_one();
        }
        Action::await_change()
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(action)
}

async fn assign(
    ctx: &Context,
    svc: &Service,
    view: &model::Service,
    reference: &ObjectReference,
) -> Result<Action, Error> {
    tell_about_metallb(ctx, view, reference).await;
    let request = match view.request(namespace_labels(ctx, &view.key.namespace)) {
        Ok(r) => r,
        Err(e) => {
            fail(ctx, reference, "InvalidRequest", e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let outcome = {
        let mut state = ctx.state.lock().await;
        // A Service met for the first time that already shows addresses (created while no
        // controller ran, or missed by a restart) keeps them when no one else holds them: adopt
        // before allocating anything new. A refusal leaves it to allocate, which names the holder.
        if state.assignment(&request.key).is_none()
            && !view.ingress.is_empty()
            && let Err(e) = state.restore(&request, &view.ingress)
        {
            tracing::info!("cannot adopt {}: {e}", join(&view.ingress));
        }
        let outcome = state.allocate(&request);
        // On a dispute at start-up the older Service kept the address; name it.
        let taken_from = view
            .ingress
            .iter()
            .filter(|ip| outcome.as_ref().is_ok_and(|a| !a.ips().contains(ip)))
            .filter_map(|ip| {
                state
                    .holders(*ip)
                    .into_iter()
                    .find(|h| *h != request.key)
                    .map(|h| (*ip, h))
            })
            .collect::<Vec<_>>();
        (outcome, taken_from)
    };
    match outcome {
        (Ok(assignment), taken_from) => {
            let ips = assignment.ips();
            let pool = assignment.addresses.iter().find_map(|a| a.pool.clone());
            // The pool annotation first, so that whoever sees the address sees its pool too.
            if svc.annotations().get(ANNOTATION_ALLOCATED_FROM) != pool.as_ref() {
                write_pool_annotation(ctx, view, pool.as_deref()).await?;
            }
            if ips != view.ingress {
                write_ingress(ctx, view, &ips).await?;
                let from = pool
                    .as_deref()
                    .map(|p| format!(" from pool {p}"))
                    .unwrap_or_default();
                publish(
                    ctx,
                    reference,
                    EventType::Normal,
                    "IPAllocated",
                    format!("Assigned {}{from}", join(&ips)),
                )
                .await;
                for (ip, holder) in taken_from {
                    publish(ctx, reference, EventType::Warning, "AddressTaken", format!("{ip} is held by the older Service {holder}, which may not share it; this Service got {} instead", join(&ips))).await;
                }
                ctx.pools_changed.notify_one();
            }
            if let Some(pool) = &pool
                && !advertised(ctx, pool)
            {
                publish(ctx, reference, EventType::Warning, "NotAdvertised", format!("pool {pool} is covered by no L2Advertisement, so no node announces {}; create one that selects the pool", join(&ips))).await;
            }
            if let Some(orphan) = assignment.addresses.iter().find(|a| a.pool.is_none()) {
                publish(ctx, reference, EventType::Warning, "AddressOutsidePools", format!("{} is no longer in any pool; the Service keeps it until it is deleted or asks for another address", orphan.ip)).await;
            }
            Ok(Action::await_change())
        }
        (Err(e), _) => {
            fail(ctx, reference, e.reason(), e.to_string()).await;
            // Pool changes and releases requeue pending Services; this is a safety net.
            Ok(Action::requeue(Duration::from_secs(60)))
        }
    }
}

async fn fail(ctx: &Context, reference: &ObjectReference, reason: &str, message: String) {
    tracing::info!(reason, "allocation failed: {message}");
    ctx.metrics
        .allocation_failures
        .get_or_create(&ReasonLabels {
            reason: reason.into(),
        })
        .inc();
    publish_as(
        ctx,
        reference,
        EventType::Warning,
        "AllocationFailed",
        reason,
        format!("{reason}: {message}"),
    )
    .await;
}

async fn tell_about_metallb(ctx: &Context, view: &model::Service, reference: &ObjectReference) {
    if view.foreign_annotations.is_empty()
        || !ctx
            .told_about_metallb
            .lock()
            .expect("not poisoned")
            .insert(view.key.clone())
    {
        return;
    }
    let text: Vec<String> = view
        .foreign_annotations
        .iter()
        .map(|f| format!("{} (ferrolb reads it as {})", f.found, f.ours))
        .collect();
    publish(
        ctx,
        reference,
        EventType::Normal,
        "MetalLBAnnotation",
        format!(
            "Using MetalLB annotations {}; consider renaming them",
            text.join(", ")
        ),
    )
    .await;
}

async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_as(ctx, reference, type_, reason, "Allocate", note).await;
}

/// [`publish`] under an `action` of the caller's. kube's recorder folds Events of one object,
/// reason and action into one series and keeps the first note, so failures of different kinds
/// need different actions, or the operator reads a stale reason.
async fn publish_as(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if ctx.fence.check().is_err() {
        return;
    }
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!("cannot publish event {reason}: {e}");
    }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `status.loadBalancer.ingress` (server-side apply; an empty list removes ours).
async fn write_ingress(ctx: &Context, view: &model::Service, ips: &[IpAddr]) -> Result<(), Error> {
    ctx.fence.check()?;
    let ingress: Vec<_> = ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    let patch = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": view.key.name, "namespace": view.key.namespace},
        "status": {"loadBalancer": {"ingress": ingress}},
    });
    Api::<Service>::namespaced(ctx.client.clone(), &view.key.namespace)
        .patch_status(
            &view.key.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

async fn write_pool_annotation(
    ctx: &Context,
    view: &model::Service,
    pool: Option<&str>,
) -> Result<(), Error> {
    ctx.fence.check()?;
    let annotations = match pool {
        Some(p) => json!({ANNOTATION_ALLOCATED_FROM: p}),
        None => json!({}),
    };
    let patch = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": view.key.name, "namespace": view.key.namespace, "annotations": annotations},
    });
    Api::<Service>::namespaced(ctx.client.clone(), &view.key.namespace)
        .patch(
            &view.key.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

fn error_policy(_svc: Arc<Service>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = error.metric_label(), "reconcile failed: {error}");
    Action::requeue(Duration::from_secs(5))
}

/// Frees what a deleted Service held.
async fn release_deleted(ctx: &Context, key: &ServiceKey) {
    let released = ctx.state.lock().await.release(key);
    if !released.is_empty() {
        tracing::info!(service = %key, released = %join(&released), "Service deleted; addresses released");
        requeue_pending(ctx).await;
        ctx.pools_changed.notify_one();
    }
}

/// A watch that had to start over does not report what was deleted meanwhile: now and then,
/// free what Services that are no longer there held. Only once the Service store has had its
/// first complete list: an empty store before that would look like every Service gone. (A
/// re-list swaps the store whole, so it never looks empty later.)
async fn collect_vanished(ctx: Arc<Context>) {
    if ctx.services.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let present: HashSet<ServiceKey> = ctx
            .services
            .state()
            .iter()
            .map(|s| crds::read::service_key(s))
            .collect();
        let vanished = ctx.state.lock().await.holders_not_in(&present);
        for key in vanished {
            release_deleted(&ctx, &key).await;
        }
    }
}

/// Requeues Services that want an address and hold none: something was freed or added.
async fn requeue_pending(ctx: &Context) {
    let state = ctx.state.lock().await;
    for svc in ctx.services.state() {
        let view = crds::read::service(&svc);
        if view.is_ours(ctx.classes) && state.assignment(&view.key).is_none() {
            let _ = ctx.requeue.send(ObjectRef::from_obj(&*svc));
        }
    }
}

/// Keeps pools current: on every pool change (or allocation), re-reads the pools into the
/// allocator, requeues the Services that are affected, and writes statuses and finalizers that
/// changed.
async fn pool_status_loop(ctx: Arc<Context>) {
    let mut last: BTreeMap<String, IPAddressPool> = BTreeMap::new();
    let mut reported: Vec<allocator::Overlap> = vec![];
    let mut reported_problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        ctx.pools_changed.notified().await;
        // Let a burst of changes settle into one pass.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pools: Vec<IPAddressPool> = ctx.pools.state().iter().map(|p| (**p).clone()).collect();
        let specs_changed = pools.len() != last.len()
            || pools.iter().any(|p| {
                last.get(&p.name_any()).is_none_or(|old| {
                    old.spec != p.spec
                        || old.metadata.deletion_timestamp != p.metadata.deletion_timestamp
                })
            });
        if specs_changed {
            let overlaps = ctx.state.lock().await.set_pools(&pools);
            for o in overlaps.iter().filter(|o| !reported.contains(*o)) {
                tracing::warn!("{o}");
                for name in &o.pools {
                    if let Some(pool) = pools.iter().find(|p| p.name_any() == *name) {
                        let note = format!(
                            "{o}; no address of the overlap is handed out until it is fixed"
                        );
                        publish(
                            &ctx,
                            &pool.object_ref(&()),
                            EventType::Warning,
                            "PoolOverlap",
                            note,
                        )
                        .await;
                    }
                }
            }
            reported = overlaps;
            reported_problems = report_problems(&ctx, &pools, reported_problems).await;
            requeue_affected(&ctx, &pools, &last).await;
        }
        for pool in &pools {
            if let Err(e) = write_pool(&ctx, pool).await {
                tracing::warn!(pool = %pool.name_any(), "cannot update pool: {e}");
                ctx.pools_changed.notify_one();
            }
        }
        last = pools.into_iter().map(|p| (p.name_any(), p)).collect();
    }
}

/// A Warning Event on each pool whose problems (entries or selectors left out) are new since
/// the last report; returns what is reported now.
async fn report_problems(
    ctx: &Context,
    pools: &[IPAddressPool],
    before: BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut now = BTreeMap::new();
    for pool in pools {
        let problems = crds::read::pool(pool).problems();
        if problems.is_empty() {
            continue;
        }
        if before.get(&pool.name_any()) != Some(&problems) {
            tracing::warn!(pool = %pool.name_any(), "{}", problems.join("; "));
            let note = format!(
                "{}; the pool's other entries go on working",
                problems.join("; ")
            );
            publish(
                ctx,
                &pool.object_ref(&()),
                EventType::Warning,
                "InvalidPoolEntry",
                note,
            )
            .await;
        }
        now.insert(pool.name_any(), problems);
    }
    now
}

/// Services a pool change can change: those without an address, those naming a pool, and those
/// holding an address of a pool that changed or went away.
async fn requeue_affected(
    ctx: &Context,
    pools: &[IPAddressPool],
    before: &BTreeMap<String, IPAddressPool>,
) {
    let now: BTreeMap<String, &IPAddressPool> = pools.iter().map(|p| (p.name_any(), p)).collect();
    let changed: BTreeSet<String> = before
        .keys()
        .chain(now.keys())
        .filter(|name| match (before.get(*name), now.get(*name)) {
            (Some(a), Some(b)) => {
                a.spec != b.spec || a.metadata.deletion_timestamp != b.metadata.deletion_timestamp
            }
            _ => true,
        })
        .cloned()
        .collect();
    let state = ctx.state.lock().await;
    for svc in ctx.services.state() {
        let view = crds::read::service(&svc);
        if !view.is_ours(ctx.classes) {
            continue;
        }
        let affected = match state.assignment(&view.key) {
            None => true,
            Some(a) => {
                view.pool.is_some()
                    || a.addresses
                        .iter()
                        .any(|x| x.pool.as_ref().is_none_or(|p| changed.contains(p)))
            }
        };
        if affected {
            let _ = ctx.requeue.send(ObjectRef::from_obj(&*svc));
        }
    }
}

/// Writes one pool's status, metrics and finalizer if they changed.
async fn write_pool(ctx: &Context, pool: &IPAddressPool) -> Result<(), Error> {
    let name = pool.name_any();
    let api: Api<IPAddressPool> = Api::all(ctx.client.clone());
    let (status, users) = {
        let state = ctx.state.lock().await;
        let users = state.users_within(&crds::read::pool(pool).ranges);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        (
            state.pool_status(&name, users, pool.status.as_ref(), now),
            users,
        )
    };
    let Some(status) = status else { return Ok(()) };
    for (family, usage) in [("ipv4", status.ipv4), ("ipv6", status.ipv6)] {
        let labels = PoolLabels {
            pool: name.clone(),
            family: family.into(),
        };
        let u = usage.unwrap_or_default();
        ctx.metrics
            .addresses_total
            .get_or_create(&labels)
            .set(u.capacity);
        ctx.metrics
            .addresses_in_use
            .get_or_create(&labels)
            .set(u.assigned);
    }
    if pool.status.as_ref() != Some(&status) {
        ctx.fence.check()?;
        let patch = json!({"apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool", "metadata": {"name": name}, "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    let deleting = pool.metadata.deletion_timestamp.is_some();
    let has = pool.finalizers().iter().any(|f| f == POOL_FINALIZER);
    let want = !deleting || users > 0;
    if has != want {
        ctx.fence.check()?;
        let finalizers: Vec<&str> = if want { vec![POOL_FINALIZER] } else { vec![] };
        let patch = json!({"apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool", "metadata": {"name": name, "finalizers": finalizers}});
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        if deleting && !want {
            for family in ["ipv4", "ipv6"] {
                let labels = PoolLabels {
                    pool: name.clone(),
                    family: family.into(),
                };
                ctx.metrics.addresses_total.remove(&labels);
                ctx.metrics.addresses_in_use.remove(&labels);
            }
        }
    }
    Ok(())
}
